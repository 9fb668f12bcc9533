"""Settings of the portal, all from the environment (README, "Configuration").

Production is the default: DEBUG is off and every security setting is on unless DEBUG=1 is set,
so an operator who forgets a variable gets a refusal, not a weaker site.
"""

from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from portal.env import (
    env_bool,
    env_int,
    env_ip_and_port,
    env_list,
    env_networks,
    env_secret,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env_secret("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) must be set when DEBUG is off")
    SECRET_KEY = "insecure-demo-only-secret-key-do-not-use-in-production-0123456789"  # noqa: S105

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "portal.apps.StaffAdminConfig",  # the admin, for verified superusers only
    # Before django.contrib.auth: its createsuperuser and changepassword, audited, are ours.
    "enrolment",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_otp",
    "csp",
    "mozilla_django_oidc",
]

MIDDLEWARE = [
    "enrolment.verify_views.LeanAuthHttpReplies",
    "portal.request_id.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "portal.bad_input.RefuseNulMiddleware",  # after the language is chosen, for its 400 page
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "portal.unavailable.SeedsUnavailableMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.staff.staff_roles",
            ],
        },
    },
]

# SQLite needs no set-up and serves the demo; production and the test suite use PostgreSQL.
DATABASES = {
    "default": dj_database_url.parse(
        env_secret("DATABASE_URL", f"sqlite:///{BASE_DIR / 'var' / 'portal.sqlite3'}"),
        # Keep connections: a new connection per request costs more than the verify itself.
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 600, minimum=0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Prepared statements: psycopg prepares a statement run this many times on a connection,
    # so the verify path's few statements are planned once per connection instead of once
    # per mail login (measured: a session hit's SELECT 0.33 -> 0.16 ms, a new login's
    # members' query 0.67 -> 0.2 ms). Django turns this off by default for connection
    # poolers: set DATABASE_PREPARE_THRESHOLD=0 behind PgBouncer in transaction mode.
    threshold = env_int("DATABASE_PREPARE_THRESHOLD", 5, minimum=0)
    DATABASES["default"]["OPTIONS"] = {
        "server_side_binding": env_bool("DATABASE_SERVER_SIDE_BINDING", True),
        "prepare_threshold": threshold or None,
    }
    # Server-side cursors (the audit export's and verify_audit's .iterator()) live across
    # statements of one transaction, which PgBouncer in transaction mode may hand to another
    # server connection: turn them off there (the rows are then fetched in one go).
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = env_bool(
        "DATABASE_DISABLE_SERVER_SIDE_CURSORS", False
    )
    # No "SELECT 1" before each request's first query: it costs as much as a session hit's
    # lookup. After a database restart the first query on a dead connection fails, the
    # verifier answers with a temporary failure, and Django reconnects for the next request.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = env_bool("DATABASE_HEALTH_CHECKS", False)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # The demo's mail client opens parallel connections: writers wait for each other
    # instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE", "timeout": 20}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Argon2id first: mail passwords and staff passwords. The parameters are OWASP's minimum
# (m=19 MiB, t=2, p=1), which costs 15-35 ms here; Django's defaults cost ~270 ms per mail login.
PASSWORD_HASHERS = [
    "enrolment.hashers.ConfigurableArgon2Hasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
ARGON2_MEMORY_KIB = env_int("ARGON2_MEMORY_KIB", 19 * 1024, minimum=8)
ARGON2_TIME_COST = env_int("ARGON2_TIME_COST", 2, minimum=1)
ARGON2_PARALLELISM = env_int("ARGON2_PARALLELISM", 1, minimum=1)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# French first, English too.
LANGUAGE_CODE = "fr"
LANGUAGES = [("fr", "Français"), ("en", "English")]
FORMAT_MODULE_PATH = ["portal.formats"]  # en with French dates (portal/formats/en)
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "Europe/Paris"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "var" / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# Seeds at rest (enrolment/seeds.py). The keyring is JSON: {"active": ID, "keys": {ID: base64}}.
# SEED_KEYRING holds it, or SEED_KEYRING_FILE names a file holding it; the key commands edit
# that file. SECRET_KEY is never used for seeds.
SEED_KEYRING = env_str("SEED_KEYRING")
SEED_KEYRING_FILE = env_str("SEED_KEYRING_FILE")

# Login with Pro Santé Connect (portal/psc.py). PSC's discovery document is not at the standard
# path, and mozilla-django-oidc does no discovery: the endpoints come from a preset, each
# overridable. "standin" is the demo's and the tests' stand-in (deploy/dev-psc), refused unless
# DEBUG is on (enrolment.E003).
PSC_PRESETS = {
    "production": (
        "https://auth.esw.esante.gouv.fr/auth/realms/esante-wallet",
        "https://wallet.esw.esante.gouv.fr/auth",
    ),
    "bas": (
        "https://auth.bas.psc.esante.gouv.fr/auth/realms/esante-wallet",
        "https://wallet.bas.psc.esante.gouv.fr/auth",
    ),
}
PSC_ENVIRONMENT = env_str("PSC_ENVIRONMENT", "production")
if PSC_ENVIRONMENT in PSC_PRESETS:
    _issuer, _authorization = PSC_PRESETS[PSC_ENVIRONMENT]
    _issuer = env_str("PSC_ISSUER", _issuer)
    _keycloak = f"{_issuer}/protocol/openid-connect"
    _defaults = {
        "AUTHORIZATION": _authorization,
        "TOKEN": f"{_keycloak}/token",
        "USERINFO": f"{_keycloak}/userinfo",
        "JWKS": f"{_keycloak}/certs",
        "END_SESSION": f"{_keycloak}/logout",
    }
elif PSC_ENVIRONMENT == "standin":
    _issuer = env_str("PSC_ISSUER", "http://127.0.0.1:19220")
    _defaults = {
        "AUTHORIZATION": f"{_issuer}/auth",
        "TOKEN": f"{_issuer}/token",
        "USERINFO": f"{_issuer}/me",
        "JWKS": f"{_issuer}/jwks",
        "END_SESSION": f"{_issuer}/session/end",
    }
else:
    raise ImproperlyConfigured(
        f"PSC_ENVIRONMENT must be production, bas or standin, not {PSC_ENVIRONMENT!r}"
    )
PSC_ISSUER = _issuer
OIDC_OP_AUTHORIZATION_ENDPOINT = env_str("PSC_AUTHORIZATION_ENDPOINT", _defaults["AUTHORIZATION"])
OIDC_OP_TOKEN_ENDPOINT = env_str("PSC_TOKEN_ENDPOINT", _defaults["TOKEN"])
OIDC_OP_USER_ENDPOINT = env_str("PSC_USERINFO_ENDPOINT", _defaults["USERINFO"])
OIDC_OP_JWKS_ENDPOINT = env_str("PSC_JWKS_ENDPOINT", _defaults["JWKS"])
OIDC_OP_LOGOUT_ENDPOINT = env_str("PSC_END_SESSION_ENDPOINT", _defaults["END_SESSION"])
OIDC_RP_CLIENT_ID = env_str("PSC_CLIENT_ID")
OIDC_RP_CLIENT_SECRET = env_secret("PSC_CLIENT_SECRET")
# mTLS at the token endpoint instead of the secret, when both files are set.
PSC_CLIENT_CERT_FILE = env_str("PSC_CLIENT_CERT_FILE")
PSC_CLIENT_KEY_FILE = env_str("PSC_CLIENT_KEY_FILE")
OIDC_TOKEN_USE_BASIC_AUTH = env_bool("PSC_TOKEN_BASIC_AUTH", False)
OIDC_RP_SIGN_ALGO = env_str("PSC_SIGN_ALGO", "RS256")  # PSC has used RS256 and HS256
OIDC_RP_SCOPES = "openid scope_all"
PSC_REQUIRED_ACR = env_str("PSC_REQUIRED_ACR", "eidas1")
OIDC_USE_PKCE = True
OIDC_USE_NONCE = True
OIDC_VERIFY_SSL = True
OIDC_TIMEOUT = env_int("PSC_TIMEOUT_SECONDS", 10, minimum=1)
OIDC_OP_LOGOUT_URL_METHOD = "portal.psc.end_session_url"
OIDC_CALLBACK_CLASS = "portal.psc.PSCCallbackView"
OIDC_AUTHENTICATE_CLASS = "portal.psc.PSCLoginView"
# Enrolment, re-enrolment and password changes need a PSC login younger than this.
PSC_RECENT_LOGIN_SECONDS = env_int("PSC_RECENT_LOGIN_SECONDS", 600, minimum=30)

AUTHENTICATION_BACKENDS = [
    "portal.psc.PSCBackend",
    "django.contrib.auth.backends.ModelBackend",  # staff accounts
]
STAFF_AUTH_BACKEND = "django.contrib.auth.backends.ModelBackend"
# Destructive helpdesk actions need the staff member's code typed within this long.
STAFF_RECENT_LOGIN_SECONDS = env_int("STAFF_RECENT_LOGIN_SECONDS", 900, minimum=30)
# A staff session ends after this long without a staff page (a helpdesk PC left unlocked),
# and asks for a new code after SESSION_COOKIE_AGE whatever it does.
STAFF_IDLE_SECONDS = env_int("STAFF_IDLE_SECONDS", 1800, minimum=60)
# The longest wait after wrong staff codes: django-otp doubles it after each one.
STAFF_CODE_MAX_WAIT_SECONDS = env_int("STAFF_CODE_MAX_WAIT_SECONDS", 300, minimum=1)
# How long the one-time token for a staff account's phone enrolment stays valid.
STAFF_ENROLMENT_TOKEN_HOURS = env_int("STAFF_ENROLMENT_TOKEN_HOURS", 72, minimum=1)
# Bearer token of the Prometheus endpoint (/internal/metrics); without one it answers 404.
METRICS_TOKEN = env_secret("METRICS_TOKEN")
LOGIN_URL = "oidc_authentication_init"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

# What the professional's phone shows next to the code, and the name in the otpauth:// URI.
TOTP_ISSUER = env_str("TOTP_ISSUER", "MSSante OTP")
# A pending enrolment (a seed shown but not confirmed yet) is forgotten after this long.
ENROLMENT_PENDING_SECONDS = env_int("ENROLMENT_PENDING_SECONDS", 600, minimum=60)
# At confirmation only, codes this many steps either side of the server's clock are accepted,
# to learn how far the phone's clock is off. Later logins allow one step.
ENROLMENT_CONFIRM_WINDOW_STEPS = env_int("ENROLMENT_CONFIRM_WINDOW_STEPS", 10, minimum=1)

# The verifier (enrolment/verifier.py, DESIGN §5).
VERIFY_CODE_SEPARATOR = env_str("VERIFY_CODE_SEPARATOR", "")  # e.g. ";" for "password;123456"
# Mail sessions: a verified password+code string is reused by the same client network.
MAIL_SESSION_KEY = env_secret("MAIL_SESSION_KEY") or SECRET_KEY
# The audit trail's integrity key: a MAC on every row and on every seal (DESIGN §8). Set it
# apart from SECRET_KEY, so that rotating the session key does not break the trail, and keep
# it out of the database's backups, like the keyring.
AUDIT_MAC_KEY = env_secret("AUDIT_MAC_KEY") or SECRET_KEY
# Named keys to rotate it (enrolment/audit_keys.py): JSON {"active": ID, "keys": {ID: secret},
# "retired": {ID: "SEQ:MAC"}}.
AUDIT_MAC_KEYRING = env_secret("AUDIT_MAC_KEYRING")
AUDIT_RETENTION_DAYS = env_int("AUDIT_RETENTION_DAYS", 183, minimum=1)
# Rows younger than this are left for the next seal: a transaction still open may yet commit
# a row with a lower id than one already visible.
AUDIT_SEAL_DELAY_SECONDS = env_int("AUDIT_SEAL_DELAY_SECONDS", 60, minimum=0)
# verify_audit reports rows left unsealed for longer (seal_audit should run every minute).
AUDIT_SEAL_MAX_LAG_SECONDS = env_int("AUDIT_SEAL_MAX_LAG_SECONDS", 3600, minimum=60)
# Where seal_audit appends each newest seal, on the node, off the database's host (under
# deploy/systemd's units: in /var/lib/mss-totp): it will not seal over a chain that lost the
# last anchor, and verify_audit checks against it. Empty: anchors are only printed (the demo;
# check --deploy requires it).
AUDIT_ANCHOR_FILE = env_str("AUDIT_ANCHOR_FILE", "")
# The auditors' page exports at most this many rows: a sync worker streaming for longer than
# gunicorn's timeout is killed mid-file. Bigger periods: manage.py export_audit on a node.
AUDIT_EXPORT_MAX_ROWS = env_int("AUDIT_EXPORT_MAX_ROWS", 200_000, minimum=1)
MAIL_SESSION_LIFETIME_SECONDS = env_int("MAIL_SESSION_LIFETIME_SECONDS", 12 * 3600, minimum=60)
MAIL_SESSION_IDLE_SECONDS = env_int("MAIL_SESSION_IDLE_SECONDS", 2 * 3600, minimum=60)
# Ended sessions are kept this long (a mail client retrying an old string is recognised and
# not counted as a guess), then purge_mail_state deletes them.
MAIL_SESSION_RETENTION_DAYS = env_int("MAIL_SESSION_RETENTION_DAYS", 30, minimum=1)
MAIL_SESSION_PREFIX_V4 = env_int("MAIL_SESSION_PREFIX_V4", 32, minimum=8)
MAIL_SESSION_PREFIX_V6 = env_int("MAIL_SESSION_PREFIX_V6", 128, minimum=16)
# Per client address: a bucket of THROTTLE_ADDRESS_BURST failures, refilled at this rate.
THROTTLE_ADDRESS_BURST = env_int("THROTTLE_ADDRESS_BURST", 20, minimum=1)
THROTTLE_ADDRESS_REFILL_PER_MINUTE = env_int("THROTTLE_ADDRESS_REFILL_PER_MINUTE", 10, minimum=1)
# Per professional, after a failure where one factor was right: 1, 2, 4 … seconds, capped.
THROTTLE_PROFESSIONAL_MAX_SECONDS = env_int("THROTTLE_PROFESSIONAL_MAX_SECONDS", 900, minimum=1)
# nginx holds a refused connection this long at most before it answers (Auth-Wait).
MAIL_AUTH_WAIT_MAX_SECONDS = env_int("MAIL_AUTH_WAIT_MAX_SECONDS", 10, minimum=1)
# nginx lets one connection try again and again while refusals carry Auth-Wait, keeping every
# attempt in memory until the connection ends: from this attempt on, a refusal comes without
# it, and nginx answers and closes the connection (mail-proxy.md §7.3).
MAIL_AUTH_MAX_ATTEMPTS = env_int("MAIL_AUTH_MAX_ATTEMPTS", 10, minimum=1)
# nginx mail auth_http: who may ask, and where the mail goes once the login is accepted.
NGINX_AUTH_HEADER = env_str("NGINX_AUTH_HEADER", "X-Auth-Key")
NGINX_AUTH_SECRET = env_secret("NGINX_AUTH_SECRET")
# Addresses or networks. On a node that nginx reaches over the network (not loopback), its
# address goes here and in TRUSTED_PROXIES, or every mail login is a temporary failure.
NGINX_AUTH_ALLOWED_ADDRESSES = env_networks("NGINX_AUTH_ALLOWED_ADDRESSES", "127.0.0.1,::1")
# The web nginx in front of gunicorn (deploy/: gunicorn on loopback): a browser's address is
# then the X-Forwarded-For that nginx writes (portal/client.py). Empty: REMOTE_ADDR as is.
# A web nginx on another host that is missing here gives every browser nginx's address:
# one staff-login budget for all, and nginx's address in the trail.
TRUSTED_PROXIES = env_networks("TRUSTED_PROXIES", "127.0.0.1,::1")
MAIL_BACKEND_IMAP = env_ip_and_port("MAIL_BACKEND_IMAP", "127.0.0.1:143")
MAIL_BACKEND_SMTP = env_ip_and_port("MAIL_BACKEND_SMTP", "127.0.0.1:25")
MAIL_BACKEND_POP3 = env_ip_and_port("MAIL_BACKEND_POP3", "")  # none by default: POP3 refused
# What nginx gives the IMAP backend as password: "token", the secret MAIL_BACKEND_TOKEN that
# the backend checks (deploy/dovecot/backend.conf; the verifier never echoes a password), or
# "password", the password without the code.
MAIL_BACKEND_PASS_MODE = env_str("MAIL_BACKEND_PASS_MODE", "token")
MAIL_BACKEND_TOKEN = env_secret("MAIL_BACKEND_TOKEN")
if MAIL_BACKEND_PASS_MODE not in ("token", "password"):
    raise ImproperlyConfigured("MAIL_BACKEND_PASS_MODE must be token or password")

# What the done page tells the professional to configure in the mail software (an empty
# MAIL_SMTP_HOST leaves outgoing mail out, as in the demo, which runs no Postfix).
MAIL_IMAP_HOST = env_str("MAIL_IMAP_HOST", "imap.otp.operateur.mssante.fr")
MAIL_IMAP_PORT = env_int("MAIL_IMAP_PORT", 993, minimum=1)
MAIL_SMTP_HOST = env_str("MAIL_SMTP_HOST", "smtp.otp.operateur.mssante.fr")
MAIL_SMTP_PORT = env_int("MAIL_SMTP_PORT", 465, minimum=1)
HELPDESK_PHONE = env_str("HELPDESK_PHONE", "01 23 45 67 89")

# Transport security. Behind the operator's TLS-terminating nginx (deploy/), which sets
# X-Forwarded-Proto; off only for the plain-HTTP demo.
SECURE = not DEBUG
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", SECURE)
# nginx's mail module speaks plain HTTP to auth_http, and Dovecot's Lua client to the JSON API
# on the internal network: those two are not redirected to HTTPS.
SECURE_REDIRECT_EXEMPT = [r"^internal/", r"^api/"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if SECURE else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE
SECURE_HSTS_PRELOAD = SECURE
SESSION_COOKIE_SECURE = SECURE
CSRF_COOKIE_SECURE = SECURE
# "__Host-": the browser keeps these cookies only as this very host set them over HTTPS, never
# as a sibling subdomain sets them (which could plant a session, or a CSRF token of its own).
SESSION_COOKIE_NAME = "__Host-sessionid" if SECURE else "sessionid"
CSRF_COOKIE_NAME = "__Host-csrftoken" if SECURE else "csrftoken"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 8 * 3600, minimum=60)
X_FRAME_OPTIONS = "DENY"
CSRF_COOKIE_HTTPONLY = True  # no script of ours reads it: there is no script
CSRF_COOKIE_SAMESITE = "Lax"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# Content Security Policy (django-csp): nothing inline, nothing from elsewhere. The QR code is
# inline SVG markup (no style attribute), the stylesheet is ours. Forms may post to us, and the
# logout form's redirect goes on to PSC's end-session endpoint.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'none'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "form-action": [
            "'self'",
            _origin(OIDC_OP_LOGOUT_ENDPOINT),
            _origin(OIDC_OP_AUTHORIZATION_ENDPOINT),
        ],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
    }
}
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "no-reply@localhost")

# One JSON object a line in production (for the log collector), plain text for the demo. No
# secret is ever passed to a logger: the verifier logs reasons, never the credential.
LOG_FORMAT = env_str("LOG_FORMAT", "plain" if DEBUG else "json")
if LOG_FORMAT not in ("json", "plain"):
    raise ImproperlyConfigured("LOG_FORMAT must be json or plain")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "portal.request_id.RequestIdFilter"},
        "path_only": {"()": "portal.request_id.RequestPathOnlyFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id", "path_only"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
