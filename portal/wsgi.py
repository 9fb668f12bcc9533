"""WSGI entry point for gunicorn.

Django runs its system checks for manage.py commands but not under gunicorn; the seed keyring
checks are run here too, so that a worker never starts without a usable key.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

application = get_wsgi_application()

from enrolment.checks import refuse_to_start_without_keyring  # noqa: E402

refuse_to_start_without_keyring()
