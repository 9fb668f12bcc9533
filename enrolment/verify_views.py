"""The verify interfaces: nginx mail auth_http, and the JSON API. Thin adapters: each
authenticates its caller, reads the request, calls verifier.verify(), and translates."""

import functools
import hashlib
import json
import logging
from pathlib import Path
from urllib.parse import unquote_to_bytes

from django.conf import settings
from django.db import connection
from django.http import Http404, HttpResponse, JsonResponse
from django.utils.crypto import constant_time_compare
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_GET, require_POST
from prometheus_client import CONTENT_TYPE_LATEST

from enrolment import audit, indicators, mail_sessions, seeds
from enrolment.models import ApiKey, Device, Mailbox, SeedKey
from enrolment.verifier import MAX_SECRET_LENGTH, Decision, Outcome, verify
from portal.client import address_among
from portal.env import split_ip_and_port

logger = logging.getLogger(__name__)

OPENAPI = Path(__file__).with_name("openapi.json")
PROTOCOLS = {"imap", "pop3", "smtp", "submission", "sieve"}
MAX_BODY = 8192


# --- nginx mail auth_http -------------------------------------------------------------------


def header(request, name: str) -> str:
    """A header as nginx sent it: %-escapes for space, % and controls, UTF-8 bytes raw, which
    WSGI hands over as latin-1."""
    raw = request.headers.get(name, "")
    return unquote_to_bytes(raw.encode("latin-1")).decode("utf-8", "replace")


def latin1(value: str) -> str:
    # Django writes header values as latin-1; nginx copies the bytes through as UTF-8.
    return value.encode("utf-8").decode("latin-1")


def nginx_caller_allowed(request) -> bool:
    peer = request.META.get("REMOTE_ADDR", "")
    if not address_among(peer, tuple(settings.NGINX_AUTH_ALLOWED_ADDRESSES)):
        return False
    presented = request.headers.get(settings.NGINX_AUTH_HEADER, "")
    expected = settings.NGINX_AUTH_SECRET
    return bool(expected) and constant_time_compare(presented, expected)


@csrf_exempt
@require_GET
@sensitive_variables("secret")
def nginx_auth(request):
    protocol = request.headers.get("Auth-Protocol", "").lower()
    if not nginx_caller_allowed(request):
        logger.warning("auth_http: refused a caller from %s", request.META.get("REMOTE_ADDR"))
        decision = Decision(Outcome.TEMPFAIL, "caller_not_allowed")
        return nginx_reply(decision, protocol, status=403)
    secret = header(request, "Auth-Pass")
    attempt = login_attempt(request)
    # What the reply to a success needs, before the login is decided (and its code spent,
    # its session opened): a setting that fails it fails it with nothing committed.
    try:
        backend = backend_for(protocol)
        backend_pass = backend_password(secret) if protocol in ("imap", "pop3") else None
    except Exception as exc:
        # A setting, the same for every request: said once a minute (anyone may send these).
        if audit.due(f"auth_http:{protocol}", "no_backend"):
            logger.error("auth_http: no backend for %s, or no password for it: %s", protocol, exc)
        return nginx_reply(Decision(Outcome.TEMPFAIL, "no_backend"), protocol, attempt)
    user = header(request, "Auth-User")
    decision = verify(user, secret, request.headers.get("Client-IP", ""), protocol, caller="nginx")
    if not decision.ok:
        return nginx_reply(decision, protocol, attempt)
    return nginx_accept(backend, Mailbox.normalise_address(user), backend_pass)


def nginx_accept(backend: tuple[str, str], checked_user: str, backend_pass: str | None):
    """The backend to proxy to, the name that was checked (not the client's spelling of it),
    and what the backend takes as password."""
    response = _auth_http_response(200)
    response["Auth-Status"] = "OK"
    response["Auth-Server"], response["Auth-Port"] = backend
    response["Auth-User"] = checked_user
    if backend_pass is not None:
        response["Auth-Pass"] = latin1(backend_pass)
    return response


@sensitive_variables("secret")
def backend_password(secret: str) -> str:
    """What nginx logs in to the IMAP backend with: by default a token that a backend
    trusting nginx's address accepts, so no password is echoed (mail-proxy.md §7.7)."""
    if settings.MAIL_BACKEND_PASS_MODE == "password":  # noqa: S105 (a mode, not a password)
        return secret[: -6 - len(settings.VERIFY_CODE_SEPARATOR)]
    if not settings.MAIL_BACKEND_TOKEN:
        raise ValueError("MAIL_BACKEND_TOKEN is not set")  # the caller answers a tempfail
    return settings.MAIL_BACKEND_TOKEN


class LeanAuthHttpReplies:
    """Middleware, outermost: nginx reads an auth_http reply into 1 KiB and only its Auth-*
    headers. The site's other headers (a 300-byte CSP, the language, framing) would take
    a third of it, and a long mailbox address with the backend's password could then no
    longer fit; nginx would answer the client with an error."""

    KEPT = {"content-type", "content-length", "x-request-id"}

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if getattr(response, "auth_http", False):
            for name in list(response.headers):
                if not name.lower().startswith("auth-") and name.lower() not in self.KEPT:
                    del response.headers[name]
        return response


def login_attempt(request) -> int:
    """Auth-Login-Attempt: the how-manieth try on this client connection (1, 2, ...)."""
    try:
        return max(1, int(request.headers.get("Auth-Login-Attempt", "1")))
    except ValueError:
        return 1


def _auth_http_response(status: int) -> HttpResponse:
    """nginx reads only the Auth-* headers (the status line is ignored), in 1 KiB at most."""
    response = HttpResponse(status=status)
    response.auth_http = True  # LeanAuthHttpReplies
    return response


def nginx_reply(
    decision: Decision, protocol: str, attempt: int = 1, status: int = 200
) -> HttpResponse:
    """A refusal or a temporary failure, as nginx reads it."""
    response = _auth_http_response(status)
    smtp = protocol == "smtp"
    # The response codes of IMAP (RFC 5530) and POP3 (RFC 3206) before the text; SMTP's in
    # Auth-Error-Code.
    temporary, refused = ("[SYS/TEMP] ", "[AUTH] ") if protocol == "pop3" else CODES
    if decision.outcome is Outcome.TEMPFAIL:
        text = "Temporary authentication failure, try again later"
        response["Auth-Status"] = text if smtp else f"{temporary}{text}"
        response["Auth-Error-Code"] = "454 4.7.0"
        response["Auth-Wait"] = "2"
    else:
        text = "Invalid login or password"
        response["Auth-Status"] = text if smtp else f"{refused}{text}"
        response["Auth-Error-Code"] = "535 5.7.8"
        # With Auth-Wait nginx holds the connection, answers, and lets the client retry.
        wait = min(max(1, decision.retry_after), settings.MAIL_AUTH_WAIT_MAX_SECONDS)
        response["Auth-Wait"] = str(wait)
    if attempt >= settings.MAIL_AUTH_MAX_ATTEMPTS:
        del response["Auth-Wait"]  # nginx answers, then closes this connection
    if not smtp:
        del response["Auth-Error-Code"]
    return response


CODES = ("[UNAVAILABLE] ", "[AUTHENTICATIONFAILED] ")  # IMAP's


def backend_for(protocol: str) -> tuple[str, str]:
    """The backend's address as nginx takes it: an IP without brackets, and a port. Raises
    ImproperlyConfigured for POP3 when MAIL_BACKEND_POP3 is not set: its logins
    went to the IMAP backend, which does not speak POP3."""
    name = {"smtp": "MAIL_BACKEND_SMTP", "pop3": "MAIL_BACKEND_POP3"}.get(
        protocol, "MAIL_BACKEND_IMAP"
    )
    return _parsed_backend(getattr(settings, name), name)


@functools.lru_cache(maxsize=8)
def _parsed_backend(value: str, name: str) -> tuple[str, str]:
    # Asked before every decision, session hits included: parsed once per value.
    host, port = split_ip_and_port(value, name)
    return host, str(port)


# --- JSON API ---------------------------------------------------------------------------------


def api_error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def api_caller(request) -> ApiKey | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    digest = hashlib.sha256(token.strip().encode()).hexdigest()
    return ApiKey.objects.filter(token_hash=digest, revoked_at__isnull=True).first()


def parse_verify_request(body: bytes) -> dict | str:
    """The request's fields, or what is wrong with it."""
    if len(body) > MAX_BODY:
        return "request body too large"
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "request body is not JSON"
    except RecursionError:
        return "request body is nested too deeply"
    if not isinstance(data, dict):
        return "request body must be a JSON object"
    for field, longest in FIELD_LENGTHS.items():
        problem = _text_problem(data.get(field), longest)
        if problem:
            return f"'{field}' {problem}"
    try:
        mail_sessions.client_address(data["client_ip"])
    except ValueError:
        return "'client_ip' must be an IPv4 or IPv6 address"
    protocol = data.get("protocol", "imap")
    if not isinstance(protocol, str) or protocol not in PROTOCOLS:
        return f"'protocol' must be one of {', '.join(sorted(PROTOCOLS))}"
    return {**data, "protocol": protocol}


# As the OpenAPI document says: a longer value is the caller's mistake, not a login attempt.
FIELD_LENGTHS = {"mailbox": 254, "secret": MAX_SECRET_LENGTH, "client_ip": 64}


def _text_problem(value, longest: int) -> str:
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if len(value) > longest:
        return f"must be at most {longest} characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\\ud800") is no text
        return "must be valid Unicode text"
    return ""


@csrf_exempt
@require_POST
@sensitive_variables("fields")
def api_verify(request):
    try:
        caller = api_caller(request)
    except Exception:
        logger.exception("api_verify: cannot check the API key; refusing")
        return api_reply(Decision(Outcome.TEMPFAIL, "internal_error"))
    if caller is None:
        response = api_error(401, "a valid API key is required (Authorization: Bearer ...)")
        response["WWW-Authenticate"] = 'Bearer realm="verify"'
        return response
    # Before request.body: past Django's upload limit, reading it answers an HTML 400 that
    # no caller of this API can tell from a proxy's.
    too_large = _declared_length(request) > MAX_BODY
    fields = "request body too large" if too_large else parse_verify_request(request.body)
    if isinstance(fields, str):
        # A refusal, marked as the API's own: a 400 from anything in between is not one.
        response = api_error(400, fields)
        response["X-Verify-Outcome"] = Outcome.REJECT.value
        return response
    decision = verify(
        fields["mailbox"],
        fields["secret"],
        fields["client_ip"],
        fields["protocol"],
        caller=f"api:{caller.name}",
    )
    return api_reply(decision)


def _declared_length(request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return MAX_BODY + 1


def api_reply(decision: Decision) -> JsonResponse:
    body = {"outcome": decision.outcome.value}
    if decision.ok:
        body["national_id"] = decision.national_id
    else:
        body["retry_after"] = max(1, decision.retry_after)
    status = 503 if decision.outcome is Outcome.TEMPFAIL else 200
    response = JsonResponse(body, status=status)
    response["X-Verify-Outcome"] = decision.outcome.value  # for clients that read headers only
    if status == 503:
        response["Retry-After"] = str(body["retry_after"])
    return response


@require_GET
def openapi_document(request):
    return HttpResponse(OPENAPI.read_bytes(), content_type="application/json")


@require_GET
def metrics(request):
    """Prometheus, with a bearer token (METRICS_TOKEN); without one configured, not there."""
    expected = settings.METRICS_TOKEN
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if not expected:
        raise Http404
    if scheme.lower() != "bearer" or not constant_time_compare(token.strip(), expected):
        response = HttpResponse("a valid bearer token is required\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(indicators.exposition(), content_type=CONTENT_TYPE_LATEST)


def live(request):
    """Liveness: the process answers. Also the benchmark's empty request."""
    return HttpResponse("ok", content_type="text/plain")


def database_read_only() -> bool:
    """Whether the database answers but takes no writes: a PostgreSQL standby after a failover,
    a read-only default. SELECT 1 passed there while every new login failed."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT current_setting('transaction_read_only')")
            return cursor.fetchone()[0] == "on"
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA query_only")
            return bool(cursor.fetchone()[0])
        cursor.execute("SELECT 1")
        return False


def keyring_problems(keyring) -> list[str]:
    """What the database says of this keyring: keys that rows need and it lacks, keys of
    other bytes than the seeds', an active key dropped (the file not copied here yet: every
    enrolment would fail)."""
    try:
        problems = []
        if seeds_without_key(keyring):
            problems.append("keyring_lacks_keys_in_use")
        if keys_unlike_the_databases(keyring):
            problems.append("keyring_keys_differ")
        if SeedKey.active_key_dropped(keyring):
            logger.error("readiness: the active key %s was dropped", keyring.active_id)
            problems.append("keyring_active_key_dropped")
        return problems
    except Exception:
        logger.exception("readiness: the database does not answer about the keys")
        return ["database"]


def keys_unlike_the_databases(keyring) -> list[str]:
    """Key ids whose bytes here are not those of the key that sealed seeds (logged)."""
    differing = SeedKey.differing(keyring)
    if differing:
        logger.error("readiness: keys unlike those of the seeds: %s", ", ".join(differing))
    return differing


def seeds_without_key(keyring) -> list[str]:
    """Key ids that devices were sealed under and the keyring lacks (logged, not returned)."""
    in_use = set(Device.objects.values_list("key_id", flat=True).distinct())
    missing = sorted(in_use - set(keyring.keys))
    if missing:
        logger.error("readiness: devices need keys the keyring lacks: %s", ", ".join(missing))
    return missing


@require_GET
def ready(request):
    """Readiness: the database answers and the keyring opens with its active key. 503 with
    what is wrong (never a key or a setting's value) takes the node out of the pool."""
    problems = []
    try:
        if database_read_only():
            logger.error("readiness: the database takes no writes (a standby?)")
            problems.append("database_read_only")
    except Exception:
        logger.exception("readiness: the database does not answer")
        problems.append("database")
    try:
        keyring = seeds.load_keyring()
        probe = b"\0" * seeds.SEED_BYTES
        if keyring.open(keyring.seal(probe, b"readiness"), b"readiness") != probe:
            raise seeds.KeyringError("the active key does not open what it sealed")
    except Exception:
        logger.exception("readiness: the seed keyring is not usable")
        problems.append("keyring")
    else:
        if "database" not in problems:
            problems += keyring_problems(keyring)
    if problems:
        return JsonResponse({"ready": False, "failing": problems}, status=503)
    return JsonResponse({"ready": True})
