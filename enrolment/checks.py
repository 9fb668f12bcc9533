"""System checks: the site refuses to start without a usable seed keyring and audit keys,
or with the demo's stand-in PSC outside DEBUG.

manage.py runs them before its commands; portal/wsgi.py runs them before gunicorn serves.
"""

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from enrolment import audit_keys, seeds


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


@checks.register("audit")
def check_audit_keys(app_configs=None, **kwargs):
    try:
        audit_keys.mac_keys()
    except ImproperlyConfigured as exc:
        return [
            checks.Error(
                f"Audit MAC keys unusable: {exc}",
                hint=f"AUDIT_MAC_KEYRING is {audit_keys.KEYRING_SHAPE}, or unset.",
                id="enrolment.E006",
            )
        ]
    return []


@checks.register()
def check_mail_backend_token(app_configs=None, **kwargs):
    """nginx configured (its secret set), token mode, and no token: every mail login would be
    checked and then fail for want of what nginx must give the IMAP backend."""
    token_mode = settings.MAIL_BACKEND_PASS_MODE == "token"  # noqa: S105 (a mode's name)
    if settings.NGINX_AUTH_SECRET and token_mode and not settings.MAIL_BACKEND_TOKEN:
        return [
            checks.Error(
                "NGINX_AUTH_SECRET is set but MAIL_BACKEND_TOKEN is not: nginx's IMAP logins "
                "would all fail.",
                hint="Set MAIL_BACKEND_TOKEN (as the IMAP backend's), or "
                "MAIL_BACKEND_PASS_MODE=password.",
                id="enrolment.E009",
            )
        ]
    return []


def refuse_to_start_misconfigured():
    """What gunicorn must not serve with (it runs no system checks of its own)."""
    errors = (
        check_seed_keyring()
        + check_audit_keys()
        + check_psc_settings()
        + check_mail_backend_token()
    )
    if errors:
        raise ImproperlyConfigured(errors[0].msg)


@checks.register(deploy=True)
def check_deployment(app_configs=None, **kwargs):
    errors = []
    if not settings.OIDC_RP_CLIENT_ID:
        errors.append(
            checks.Error(
                "PSC_CLIENT_ID is not set: professionals cannot log in.",
                hint="Set PSC_CLIENT_ID and PSC_CLIENT_SECRET (or PSC_CLIENT_CERT_FILE and "
                "PSC_CLIENT_KEY_FILE) to the values registered with Pro Santé Connect.",
                id="enrolment.E002",
            )
        )
    token_mode = settings.MAIL_BACKEND_PASS_MODE == "token"  # noqa: S105 (a mode's name)
    if token_mode and len(settings.MAIL_BACKEND_TOKEN) < 32:
        errors.append(
            checks.Error(
                "MAIL_BACKEND_TOKEN must be a random secret of 32 characters or more.",
                hint="The IMAP backend accepts it from nginx in place of the user's password "
                "(deploy/dovecot/backend.conf); without it, nginx's logins would fail.",
                id="enrolment.E005",
            )
        )
    if not settings.NGINX_AUTH_SECRET:
        errors.append(
            checks.Warning(
                "NGINX_AUTH_SECRET is not set: every nginx auth_http request is refused.",
                hint="Set it, and the same value in nginx's auth_http_header (deploy/nginx).",
                id="enrolment.W001",
            )
        )
    if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        errors.append(
            checks.Error(
                "DATABASE_URL is not set: the site runs on the demo's SQLite file.",
                hint="Set DATABASE_URL to the PostgreSQL database that every node shares: "
                "on a file of its own, each node would accept a code another node accepted.",
                id="enrolment.E007",
            )
        )
    if not settings.AUDIT_ANCHOR_FILE:
        errors.append(
            checks.Error(
                "AUDIT_ANCHOR_FILE is not set: rows deleted with every seal after them would "
                "be sealed over as gaps, and verify_audit would find the trail whole.",
                hint="Set it to a file on this host, not the database's (e.g. "
                "/var/lib/mss-totp/audit-anchors, deploy/systemd's StateDirectory).",
                id="enrolment.E008",
            )
        )
    if audit_keys.mac_keys().active == audit_keys.LEGACY and (
        settings.AUDIT_MAC_KEY == settings.SECRET_KEY
    ):
        errors.append(
            checks.Warning(
                "AUDIT_MAC_KEY is not set: the audit trail's MACs use SECRET_KEY.",
                hint="Give the trail its own key (AUDIT_MAC_KEY or AUDIT_MAC_KEY_FILE), kept "
                "out of the database's backups; rotating SECRET_KEY would then not break it.",
                id="enrolment.W002",
            )
        )
    return errors


@checks.register()
def check_psc_settings(app_configs=None, **kwargs):
    errors = []
    if settings.PSC_ENVIRONMENT == "standin" and not settings.DEBUG:
        errors.append(
            checks.Error(
                "PSC_ENVIRONMENT=standin is the demo's stand-in provider; it needs DEBUG=1.",
                hint="Use PSC_ENVIRONMENT=production (or bas for PSC's test platform).",
                id="enrolment.E003",
            )
        )
    if bool(settings.PSC_CLIENT_CERT_FILE) != bool(settings.PSC_CLIENT_KEY_FILE):
        errors.append(
            checks.Error(
                "Set both PSC_CLIENT_CERT_FILE and PSC_CLIENT_KEY_FILE, or neither.",
                id="enrolment.E004",
            )
        )
    return errors
