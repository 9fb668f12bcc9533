"""deploy/dovecot/totp-passdb.lua run by a real Lua 5.4 (Dovecot 2.3 embeds 5.4 too), with
a stand-in for the `dovecot` object Dovecot gives it: what the script answers Dovecot for
each answer the verifier, or what stands in between, can give. The real Dovecot runs the
same file end to end in test_mail_stack.py."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "dovecot" / "totp-passdb.lua"

# The stand-in: an HTTP client that records the request and returns the case's response,
# then one call of auth_password_verify, whose result is printed as JSON.
HARNESS = """
local case = { status = tonumber(arg[2]), outcome = arg[3] ~= "" and arg[3] or nil }
local sent = { headers = {} }
dovecot = {
  auth = { PASSDB_RESULT_OK = "ok", PASSDB_RESULT_PASSWORD_MISMATCH = "mismatch",
           PASSDB_RESULT_INTERNAL_FAILURE = "internal_failure" },
  http = { client = function(options)
    return { request = function(self, request)
      sent.url, sent.method = request.url, request.method
      return {
        add_header = function(self, name, value) sent.headers[name] = value end,
        set_payload = function(self, body) sent.body = body end,
        submit = function(self)
          return {
            status = function(self) return case.status end,
            header = function(self, name)
              if name == "X-Verify-Outcome" then return case.outcome end
            end,
          }
        end,
      }
    end }
  end },
}
dofile(arg[1])
local req = { user = arg[4], remote_ip = "192.0.2.7", service = arg[6] }
local result, message = auth_password_verify(req, arg[5])
print(result)
print(sent.body)
"""

pytestmark = pytest.mark.skipif(not shutil.which("lua5.4"), reason="needs Debian's lua5.4")


def ask(
    status: int, outcome: str = "", user="claire@demo.mssante.fr", field="pw123456", service="imap"
):
    """What the script tells Dovecot when the verifier's side answers (status, outcome)."""
    done = subprocess.run(
        ["lua5.4", "-", str(SCRIPT), str(status), outcome, user, field, service],
        input=HARNESS,
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    result, body = done.stdout.splitlines()
    return result, json.loads(body)


@pytest.mark.parametrize(
    "status, outcome, told",
    [
        (200, "ok", "ok"),
        (200, "reject", "mismatch"),
        (400, "reject", "mismatch"),  # the API's own: a malformed credential
        (200, "", "internal_failure"),  # a 200 that is not the verifier's
        (400, "", "internal_failure"),  # a proxy's, or Django's for a Host it does not serve
        (401, "", "internal_failure"),  # the script's key revoked
        (429, "", "internal_failure"),
        (503, "tempfail", "internal_failure"),
        (9003, "", "internal_failure"),  # Dovecot's code for a connection refused
        (9008, "", "internal_failure"),  # and for a timeout
    ],
)
def test_only_the_verifiers_own_answers_decide(status, outcome, told):
    assert ask(status, outcome)[0] == told


def test_the_request_carries_every_character_as_json():
    password = 'p"a\\s\ts\x01é€' + "123456"
    _, body = ask(200, "ok", user="claire@demo.mssante.fr", field=password)
    assert body == {
        "mailbox": "claire@demo.mssante.fr",
        "secret": password,
        "client_ip": "192.0.2.7",
        "protocol": "imap",
    }


@pytest.mark.parametrize(
    "service, protocol",
    [
        ("imap", "imap"),
        ("pop3", "pop3"),
        ("smtp", "smtp"),
        ("submission", "submission"),
        ("lmtp", "imap"),
    ],
)
def test_the_service_is_named_as_the_api_knows_it(service, protocol):
    """The trail and the metrics tell POP3 and submission logins apart (all were "imap")."""
    assert ask(200, "ok", service=service)[1]["protocol"] == protocol
