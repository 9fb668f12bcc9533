"""System checks: the site refuses to start without a usable seed keyring.

manage.py runs them before its commands; portal/wsgi.py runs them before gunicorn serves.
"""

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from enrolment import seeds


@checks.register("seeds")
def check_seed_keyring(app_configs=None, **kwargs):
    try:
        seeds.load_keyring()
    except seeds.KeyringError as exc:
        return [
            checks.Error(
                f"Seed encryption keyring unusable: {exc}",
                hint="Create one with: manage.py seed_key new --file /path/keyring.json, "
                "then set SEED_KEYRING_FILE to that path.",
                id="enrolment.E001",
            )
        ]
    return []


def refuse_to_start_without_keyring():
    errors = check_seed_keyring()
    if errors:
        raise ImproperlyConfigured(errors[0].msg)
