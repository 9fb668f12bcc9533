"""Bad input, tried at scale (over 10,000 generated inputs): schemathesis against the JSON
API's OpenAPI document, hypothesis on the credential parser and on the nginx adapter. No
input without the valid credential gets an OK, none gets a 5xx, none is echoed back.

Argon2id runs with the smallest parameters here: what is under test is the handling of the
input, and the real cost would make 10,000 refusals take minutes."""

import hashlib
import json
import string

import pytest
import schemathesis
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from enrolment import throttle
from enrolment.credential import split_credential
from enrolment.models import ApiKey
from enrolment.verify_views import OPENAPI
from tests.mail_fixtures import NGINX_SECRET, nginx_escape

pytestmark = pytest.mark.django_db

API_TOKEN = "bad-input-api-token-" + "c" * 32
COUNTS = {}

# Everything a client can put in a header or a JSON string: controls, NUL, non-ASCII, huge.
ODD_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="latin-1"), max_size=300),
    st.text(alphabet=string.printable + "\0\x7f\u00e9\u200b\U0001f600", max_size=80),
    st.just(""),
    st.builds(lambda n: "x" * n, st.integers(1000, 9000)),
)
FAST = settings(
    max_examples=2500,  # per test, and per generation mode for the JSON API
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)


@pytest.fixture
def cheap_hashes(settings):
    settings.ARGON2_MEMORY_KIB, settings.ARGON2_TIME_COST = 8, 1


def count(name: str) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + 1


@FAST
@given(
    secret=st.one_of(
        ODD_TEXT,  # which seldom ends in six digits: half the cases do
        st.builds(str.__add__, ODD_TEXT, st.from_regex(r"[0-9]{6}", fullmatch=True)),
    )
)
def test_the_credential_parser_takes_anything(secret):
    count("credential parser")
    credential = split_credential(secret)
    well_formed = len(secret) > 6 and secret[-6:].isascii() and secret[-6:].isdigit()
    assert (credential is not None) == well_formed
    if credential is not None:
        assert credential.password + credential.code == secret
        assert secret not in repr(credential)


def test_the_nginx_adapter_under_generated_headers(claire, nginx_secret, cheap_hashes, capsys):
    valid = claire.secret()

    @settings(FAST, max_examples=5500)
    @given(
        user=st.one_of(ODD_TEXT, st.just(claire.mailbox), st.just(claire.mailbox.upper())),
        secret=st.one_of(
            ODD_TEXT,
            st.builds(lambda tail: claire.password + tail, ODD_TEXT),
            st.builds(lambda head: head + claire.code(), ODD_TEXT),
        ),
        client_ip=st.one_of(ODD_TEXT, st.ip_addresses().map(str)),
        protocol=st.one_of(ODD_TEXT, st.sampled_from(["imap", "smtp", "pop3", "IMAP"])),
        escape=st.booleans(),
    )
    def attempt(user, secret, client_ip, protocol, escape):
        if secret == valid:
            return
        count("nginx auth_http")
        headers = {
            "Auth-Method": "plain",
            "Auth-User": nginx_escape(user) if escape else latin1_safe(user),
            "Auth-Pass": nginx_escape(secret) if escape else latin1_safe(secret),
            "Auth-Protocol": latin1_safe(protocol),
            "Client-IP": latin1_safe(client_ip),
            "X-Auth-Key": NGINX_SECRET,
        }
        response = Client(REMOTE_ADDR="127.0.0.1").get("/internal/nginx-auth", headers=headers)
        assert response.status_code < 500
        assert response["Auth-Status"] != "OK"
        assert "UNAVAILABLE" not in response["Auth-Status"]  # refused, not an internal error
        assert_not_echoed(response, secret)

    attempt()
    assert_generated_at_least(capsys, 5000, "nginx auth_http")


def test_the_json_api_against_its_openapi_document(claire, cheap_hashes, capsys):
    ApiKey.objects.create(name="fuzz", token_hash=hashlib.sha256(API_TOKEN.encode()).hexdigest())
    schema = schemathesis.openapi.from_dict(json.loads(OPENAPI.read_text()))
    operation = next(
        result.ok()
        for result in schema.get_all_operations()
        if result.ok().method.upper() == "POST"
    )
    valid = claire.secret()
    client = Client()

    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        attempt_mode(operation, mode, client, valid)
        assert_generated_at_least(capsys, 2000, f"JSON API ({mode.value})")

    # And the valid credential does get in (once the back-off that the generated right
    # passwords earned is over): the refusals above are not a broken endpoint.
    throttle.clear_professional_backoff(claire.device)
    good = {"mailbox": claire.mailbox, "secret": claire.secret(), "client_ip": "192.0.2.9"}
    answer = client.post(
        "/api/v1/verify", good, "application/json", headers={"Authorization": f"Bearer {API_TOKEN}"}
    )
    assert answer.json()["outcome"] == "ok"


def attempt_mode(operation, mode, client, valid):
    @FAST
    @given(case=operation.as_strategy(generation_mode=mode))
    def attempt(case):
        body = case.body
        if isinstance(body, dict) and body.get("secret") == valid:
            return
        count(f"JSON API ({mode.value})")
        raw = json.dumps(body) if not isinstance(body, bytes | str) else body
        response = client.post(
            "/api/v1/verify",
            data=raw,
            content_type="application/json",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        )
        assert response.status_code in (200, 400), response.content[:300]
        if response.status_code == 200:
            assert response.json()["outcome"] != "ok"
        secret = body.get("secret") if isinstance(body, dict) else None
        if isinstance(secret, str) and len(secret) >= 4:
            assert_not_echoed(response, secret)

    attempt()


def assert_generated_at_least(capsys, minimum: int, name: str) -> None:
    """Each test's own count, printed in every run's output (hypothesis may stop early)."""
    with capsys.disabled():
        print(f"\ngenerated bad inputs for {name}: {COUNTS.get(name, 0)}")
    assert COUNTS.get(name, 0) >= minimum, COUNTS


def latin1_safe(value: str) -> str:
    """A header value as WSGI carries it: bytes as latin-1 text (UTF-8 for the rest)."""
    return (
        value.encode("utf-8", "surrogatepass").decode("latin-1").replace("\r", "").replace("\n", "")
    )


# Everything the verify interfaces say on their own (a generated "retry" is not an echo).
WHAT_THE_SITE_SAYS = " ".join(
    [
        '{"outcome": "reject", "retry_after": 1} {"outcome": "tempfail"}',
        "[AUTHENTICATIONFAILED] Invalid login or password 535 5.7.8",
        "[UNAVAILABLE] Temporary authentication failure, try again later 454 4.7.0",
        "request body too large, request body is not JSON, request body must be a JSON object",
        "'mailbox' 'secret' 'client_ip' must be a non-empty string",
        "'protocol' must be one of imap, pop3, sieve, smtp, submission",
        "a valid API key is required (Authorization: Bearer ...)",
    ]
)


def assert_not_echoed(response, secret: str) -> None:
    """The secret is not in what the caller reads: the body and the answer's own headers
    (nginx's Auth-*, the API's X-Verify-Outcome), not the site-wide security headers."""
    if len(secret) < 12 or secret in WHAT_THE_SITE_SAYS:
        return  # too short, or part of the site's own words: an echo cannot be told apart
    answer = [value for name, value in response.items() if name.startswith(("Auth-", "X-Verify"))]
    shown = response.content.decode("utf-8", "replace") + "\n".join(answer)
    assert secret not in shown
