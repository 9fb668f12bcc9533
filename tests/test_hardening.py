"""Production hardening as a browser or the operator sees it: security headers and cookies,
request ids on responses and log lines, JSON logs, and the health endpoints."""

import json

import pytest
from django.db import connection

from enrolment import seeds
from tests.test_settings import run_manage

pytestmark = pytest.mark.django_db


def test_pages_carry_a_strict_content_security_policy(client):
    response = client.get("/")
    policy = dict(
        part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'" and policy["base-uri"] == "'none'"
    assert "unsafe-inline" not in response["Content-Security-Policy"]
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"


def test_production_cookies_and_transport_settings():
    script = (
        "from django.conf import settings as s; import json; print(json.dumps(["
        "s.SESSION_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, s.SESSION_COOKIE_SAMESITE,"
        "s.CSRF_COOKIE_SECURE, s.CSRF_COOKIE_HTTPONLY, s.SECURE_SSL_REDIRECT,"
        "s.SECURE_HSTS_SECONDS, s.DEBUG]))"
    )
    result = run_manage("shell", "-v", "0", "-c", script)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [True, True, "Lax", True, True, True, 31536000, False]


def test_production_logs_are_json_lines_with_a_request_id():
    script = (
        "import logging; "
        "logging.getLogger('enrolment.verifier').warning('refused: %s', 'malformed')"
    )
    result = run_manage("shell", "-c", script)
    [line] = [line for line in result.stderr.splitlines() if "refused" in line]
    record = json.loads(line)
    assert record["level"] == "WARNING" and record["logger"] == "enrolment.verifier"
    assert record["message"] == "refused: malformed" and record["request_id"] == "-"


def test_a_logged_request_shows_its_path_not_its_query_string():
    """Django logs a 4xx with the request itself: its repr would put a failed PSC callback's
    authorization code in the production log."""
    script = (
        "import logging; from django.test import RequestFactory; "
        "request = RequestFactory().get('/oidc/callback/?code=AUTHZ-CODE-123&state=s'); "
        "logging.getLogger('django.request').warning("
        "'Bad Request: %s', request.path, extra={'status_code': 400, 'request': request})"
    )
    result = run_manage("shell", "-c", script)
    [line] = [line for line in result.stderr.splitlines() if "Bad Request" in line]
    record = json.loads(line)
    assert record["request"] == "/oidc/callback/"
    assert "AUTHZ-CODE-123" not in line


def test_every_response_has_a_request_id_and_keeps_nginxs(client, caplog):
    assert len(client.get("/internal/health/live")["X-Request-ID"]) == 32
    kept = client.get("/", headers={"X-Request-ID": "a1b2c3d4e5f60718"})
    assert kept["X-Request-ID"] == "a1b2c3d4e5f60718"
    forged = client.get("/", headers={"X-Request-ID": "evil\r\nSet-Cookie: x"})
    assert forged["X-Request-ID"] != "evil" and len(forged["X-Request-ID"]) == 32


def test_readiness_checks_the_database_and_the_keyring(client, make_device, user):
    assert client.get("/internal/health/ready").json() == {"ready": True}
    device = make_device(user)
    # A row sealed under a key that the keyring no longer has: not ready, and says why.
    other = seeds.Keyring.parse('{"active": "gone", "keys": {"gone": "' + "A" * 43 + '="}}', "test")
    device.set_seed(seeds.new_seed(), other)
    device.save()
    response = client.get("/internal/health/ready")
    assert response.status_code == 503
    assert response.json() == {"ready": False, "failing": ["keyring_lacks_keys_in_use"]}
    assert "gone" not in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_a_database_that_takes_no_writes_is_not_ready(client):
    """A PostgreSQL standby after a failover: SELECT 1 answers, every new login fails."""
    read_only = {
        "postgresql": (
            "SET default_transaction_read_only = on",
            "RESET default_transaction_read_only",
        ),
        "sqlite": ("PRAGMA query_only = ON", "PRAGMA query_only = OFF"),
    }[connection.vendor]
    with connection.cursor() as cursor:
        cursor.execute(read_only[0])
    try:
        response = client.get("/internal/health/ready")
    finally:
        with connection.cursor() as cursor:
            cursor.execute(read_only[1])
    assert response.status_code == 503
    assert response.json() == {"ready": False, "failing": ["database_read_only"]}
    assert client.get("/internal/health/ready").status_code == 200


def test_a_database_error_in_the_key_checks_is_a_json_503(client):
    from unittest import mock

    from django.db import DatabaseError

    with mock.patch("enrolment.models.SeedKey.differing", side_effect=DatabaseError("gone")):
        response = client.get("/internal/health/ready")
    assert response.status_code == 503
    assert response.json() == {"ready": False, "failing": ["database"]}


def test_english_dates_typed_in_a_form_are_read_day_first():
    from datetime import date

    from django import forms
    from django.utils import translation

    for language in ("fr", "en"):
        with translation.override(language):
            assert forms.DateField().clean("02/12/2026") == date(2026, 12, 2)
