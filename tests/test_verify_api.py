"""POST /api/v1/verify (for Dovecot's Lua passdb and other callers), checked against the
OpenAPI document the site serves."""

import json
import threading
from io import StringIO

import jsonschema
import pytest
import requests
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client

from enrolment.models import AuditEvent, Device, MailSession
from tests.servers import Gunicorn, site_environment


@pytest.fixture
def api_token(transactional_db):
    out = StringIO()
    call_command("api_key", "create", "dovecot-test", stdout=out, stderr=StringIO())
    return out.getvalue().strip()


@pytest.fixture
def openapi():
    return json.loads(Client().get("/api/v1/openapi.json").content)


def check_against(openapi, response, status):
    """The answer matches what the OpenAPI document promises for that status."""
    assert response.status_code == status
    schema = openapi["paths"]["/api/v1/verify"]["post"]["responses"][str(status)]
    for name in schema.get("headers", {}):
        assert name in response, f"the {status} answer lacks its {name} header"
    ref = schema["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    jsonschema.validate(
        response.json(),
        {**openapi["components"]["schemas"][ref], "components": openapi["components"]},
    )
    return response.json()


def api(token, path="/api/v1/verify", **body):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Client(raise_request_exception=False).post(
        path, json.dumps(body), content_type="application/json", headers=headers
    )


def test_a_good_login_is_ok_and_names_the_professional(claire, api_token, openapi):
    secret = claire.secret()

    def log_in():
        answer = api(
            api_token,
            mailbox=claire.mailbox,
            secret=secret,
            client_ip="192.0.2.10",
            protocol="imap",
        )
        return check_against(openapi, answer, 200)

    assert log_in() == {"outcome": "ok", "national_id": "899700000001"}
    assert log_in() == {"outcome": "ok", "national_id": "899700000001"}  # a session hit too
    assert AuditEvent.objects.get(action="mail.login").details["via"] == "api:dovecot-test"


def test_a_refusal_says_nothing_more(claire, api_token, openapi):
    body = check_against(
        openapi,
        api(
            api_token,
            mailbox=claire.mailbox,
            secret=claire.password + "000000",
            client_ip="192.0.2.10",
        ),
        200,
    )
    assert body["outcome"] == "reject" and body["retry_after"] >= 1
    assert set(body) == {"outcome", "retry_after"}


@pytest.mark.parametrize(
    "body",
    [
        {"secret": "x123456", "client_ip": "192.0.2.1"},
        {"mailbox": "a@b.fr", "secret": "x123456", "client_ip": "192.0.2.1", "protocol": "ftp"},
        {"mailbox": 7, "secret": "x123456", "client_ip": "192.0.2.1"},
        {"mailbox": "a@b.fr", "secret": "x123456", "client_ip": "192.0.2.1", "protocol": ["imap"]},
        [1, 2],
        {"mailbox": "a" * 255, "secret": "x123456", "client_ip": "192.0.2.1"},
        {"mailbox": "a@b.fr", "secret": "x" * 1025, "client_ip": "192.0.2.1"},
        {"mailbox": "a@b.fr", "secret": "x123456", "client_ip": "not an address"},
        {"mailbox": "a@b.fr\ud800", "secret": "x123456", "client_ip": "192.0.2.1"},
        {"mailbox": "a@b.fr", "secret": "\udfffx123456", "client_ip": "192.0.2.1"},
    ],
)
def test_a_malformed_request_is_a_clear_400(api_token, openapi, body):
    response = Client().post(
        "/api/v1/verify",
        json.dumps(body),  # a lone surrogate travels as the JSON escape \ud800
        content_type="application/json",
        headers={"Authorization": f"Bearer {api_token}"},
    )
    assert check_against(openapi, response, 400)["error"]


def test_json_nested_too_deeply_is_a_400(api_token, openapi):
    response = Client().post(
        "/api/v1/verify",
        "[" * 3000,
        content_type="application/json",
        headers={"Authorization": f"Bearer {api_token}"},
    )
    assert check_against(openapi, response, 400) == {"error": "request body is nested too deeply"}


def test_every_answer_names_its_outcome_in_a_header_as_documented(claire, api_token, openapi):
    documented = openapi["components"]["headers"]["X-Verify-Outcome"]["schema"]["enum"]
    good = api(api_token, mailbox=claire.mailbox, secret=claire.secret(), client_ip="192.0.2.10")
    bad = api(api_token, mailbox=claire.mailbox, secret="nope123456", client_ip="192.0.2.10")
    assert (good["X-Verify-Outcome"], bad["X-Verify-Outcome"]) == ("ok", "reject")
    assert {"ok", "reject"} <= set(documented)


def test_not_json_is_a_400(api_token, openapi):
    response = Client().post(
        "/api/v1/verify",
        "mailbox=x",
        content_type="text/plain",
        headers={"Authorization": f"Bearer {api_token}"},
    )
    assert check_against(openapi, response, 400) == {"error": "request body is not JSON"}


def test_no_key_a_wrong_key_or_a_revoked_key_is_a_401(claire, api_token, openapi):
    login = {"mailbox": claire.mailbox, "secret": claire.secret(), "client_ip": "192.0.2.10"}
    check_against(openapi, api("", **login), 401)
    check_against(openapi, api("not-the-token", **login), 401)
    call_command("api_key", "revoke", "dovecot-test", stdout=StringIO())
    check_against(openapi, api(api_token, **login), 401)
    assert not MailSession.objects.exists()


def test_get_is_not_allowed(api_token):
    assert Client().get("/api/v1/verify").status_code == 405


def test_a_temporary_failure_is_a_503_with_retry_after(claire, api_token, openapi, monkeypatch):
    from enrolment import mail_sessions

    def broken(*args):
        raise connection.Database.OperationalError("the database went away")

    monkeypatch.setattr(mail_sessions, "first_look", broken)
    response = api(
        api_token, mailbox=claire.mailbox, secret=claire.secret(), client_ip="192.0.2.10"
    )
    assert check_against(openapi, response, 503)["outcome"] == "tempfail"
    assert response["Retry-After"]


def test_api_keys_are_audited_by_name_never_their_token(api_token):
    call_command("api_key", "revoke", "dovecot-test", stdout=StringIO())
    trail = AuditEvent.objects.filter(action__startswith="api_key.").order_by("id")
    assert list(trail.values_list("action", "target")) == [
        ("api_key.create", "dovecot-test"),
        ("api_key.revoke", "dovecot-test"),
    ]
    assert api_token not in str(list(trail.values()))


@pytest.mark.parametrize("name", ["", "x" * 65, "tab\there"])
def test_an_api_key_needs_a_sensible_name(transactional_db, name):
    with pytest.raises(CommandError, match="1 to 64 printable characters"):
        call_command("api_key", "create", name, stdout=StringIO(), stderr=StringIO())


def test_api_keys_are_stored_hashed(api_token):
    from enrolment.models import ApiKey

    assert api_token not in json.dumps(list(ApiKey.objects.values()), default=str)


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="fifty concurrent writers need a server database (SQLite locks)",
)
def test_fifty_concurrent_first_logins_claim_the_step_once(claire, api_token, settings):
    # Four gunicorn workers of four threads each, on this test's database: the claim must be
    # atomic across processes, not only across threads.
    database = settings.DATABASES["default"]
    url = f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"
    site = Gunicorn(
        site_environment(url, settings.SEED_KEYRING, THROTTLE_ADDRESS_BURST="100"),
        workers=4,
        threads=4,
    )
    try:
        outcomes = fifty_logins_at_once(site.url, api_token, claire)
    finally:
        site.stop()

    assert None not in outcomes  # every client got an answer
    assert MailSession.objects.count() == 1  # exactly one step claim, one session
    winner = MailSession.objects.get().client_network.split("/")[0]
    assert {ip: o for ip, o in outcomes if ip == winner} == {winner: "ok"}
    assert {o for ip, o in outcomes if ip != winner} == {"reject"}
    assert [o for _, o in outcomes].count("ok") == 25
    assert Device.objects.get().last_t >= 0


def fifty_logins_at_once(site_url, api_token, claire) -> list:
    """Half from one network, half from another, released together by a barrier."""
    secret = claire.secret()
    networks = ["192.0.2.10"] * 25 + ["198.51.100.7"] * 25
    start = threading.Barrier(len(networks))
    outcomes = [None] * len(networks)

    def log_in(index, client_ip):
        start.wait()
        answer = requests.post(
            f"{site_url}/api/v1/verify",
            timeout=30,
            headers={"Authorization": f"Bearer {api_token}"},
            json={"mailbox": claire.mailbox, "secret": secret, "client_ip": client_ip},
        )
        outcomes[index] = (client_ip, answer.json()["outcome"])

    threads = [threading.Thread(target=log_in, args=(i, ip)) for i, ip in enumerate(networks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_a_request_without_a_key_is_told_how_to_authenticate(claire):
    response = api(None)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="verify"'


def test_a_body_past_djangos_upload_limit_is_the_apis_own_400(claire, api_token, openapi):
    """Django's HTML 400 is no answer the Lua passdb or a generated client reads as a refusal."""
    body = {"mailbox": claire.mailbox, "secret": "x123456", "client_ip": "192.0.2.1"}
    response = api(api_token, **body, pad="x" * 3_000_000)  # past DATA_UPLOAD_MAX_MEMORY_SIZE
    check_against(openapi, response, 400)
    assert response["X-Verify-Outcome"] == "reject"


def test_a_nul_in_the_query_gets_the_apis_own_answer(claire, api_token, openapi):
    """The API reads no query string: the site's NUL guard (an HTML 400) leaves it alone."""
    body = {"mailbox": claire.mailbox, "secret": "x123456", "client_ip": "192.0.2.1"}
    response = api(api_token, "/api/v1/verify?x=%00", **body)
    check_against(openapi, response, 200)
    assert response["X-Verify-Outcome"] == "reject"
