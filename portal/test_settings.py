"""Settings for the test suite: the production settings, with a throw-away keyring and secret,
plain HTTP for Django's test client, and the outbox for email."""

import base64
import json
import os

os.environ.setdefault("SECRET_KEY", "test-secret-key-" + "x" * 48)
os.environ.setdefault(
    "SEED_KEYRING",
    json.dumps({"active": "test1", "keys": {"test1": base64.b64encode(b"\x01" * 32).decode()}}),
)

from portal.settings import *  # noqa: F403

SECURE_SSL_REDIRECT = False
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
# The live-server tests speak plain HTTP on loopback; secure cookies would never be sent back.
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
SESSION_COOKIE_NAME = "sessionid"  # a "__Host-" cookie must be secure: browsers drop it here
CSRF_COOKIE_NAME = "csrftoken"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405  (WhiteNoise warns when it is absent)
