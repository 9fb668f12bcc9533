"""Mail clients through the real mail path: imaplib and smtplib against nginx's mail proxy
(Dovecot and Postfix behind it), and against Dovecot with the Lua passdb and Postfix
submission with Dovecot SASL. The verifier is the live test server."""

import base64
import hashlib
import imaplib
import secrets
import shutil
import smtplib
import socket
import tempfile
import threading
from email.message import EmailMessage
from pathlib import Path

import pytest
from django.db import connection

from enrolment.models import ApiKey, AuditEvent, MailSession
from tests.mail_fixtures import NGINX_SECRET
from tests.mail_stack import BACKEND_TOKEN, MailStack, missing_packages

API_TOKEN = secrets.token_urlsafe(32)

# The mail path runs against PostgreSQL, the production database. SQLite's in-memory test
# database is shared between the live server's threads with table locks that do not wait,
# so parallel mail connections would fail there for reasons production never sees.
pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the mail path is tested on PostgreSQL"
)


@pytest.fixture(scope="session")
def mail_stack(live_server):
    missing = missing_packages()
    if missing:
        pytest.fail(
            "the mail tests need Debian's nginx, libnginx-mod-mail, dovecot-core, "
            f"dovecot-imapd, dovecot-auth-lua and postfix (missing: {missing})"
        )
    port = int(live_server.url.rsplit(":", 1)[1])
    # Not under pytest's own temporary folder: its parents are private to root, and Dovecot
    # and Postfix drop to their own users, which must reach their files.
    run_dir = Path(tempfile.mkdtemp(prefix="mss-totp-mail-"))
    stack = MailStack(run_dir, NGINX_SECRET, port)
    try:
        yield stack.start(API_TOKEN)
    finally:
        stack.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def mail(mail_stack, settings, transactional_db):
    """The portal wired to the stack for one test (the database is emptied between tests)."""
    settings.NGINX_AUTH_SECRET = NGINX_SECRET
    settings.MAIL_BACKEND_IMAP = f"127.0.0.1:{mail_stack.ports['backend_imap']}"
    settings.MAIL_BACKEND_SMTP = f"127.0.0.1:{mail_stack.ports['xclient']}"
    settings.MAIL_BACKEND_TOKEN = BACKEND_TOKEN
    ApiKey.objects.create(
        name="dovecot-e2e", token_hash=hashlib.sha256(API_TOKEN.encode()).hexdigest()
    )
    mail_stack.sink.messages.clear()
    return mail_stack


class IMAP(imaplib.IMAP4):
    """imaplib from a chosen loopback address: each address is another client network."""

    def __init__(self, port, source="127.0.0.1"):
        self._source = source
        super().__init__("127.0.0.1", port, timeout=30)
        self._encoding = "utf-8"  # passwords may hold non-ASCII letters

    def _create_socket(self, timeout):
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self._source, 0)
        )


def imap_login(port, user, secret, source="127.0.0.1") -> str:
    """'ok' after LOGIN and SELECT INBOX, else the server's refusal text."""
    client = IMAP(port, source)
    try:
        client.login(user, secret)
        status, _ = client.select("INBOX")
        assert status == "OK"
        client.logout()
        return "ok"
    except imaplib.IMAP4.error as refused:
        return str(refused)


def send_mail(port, user, secret, to="confrere@autre.mssante.fr") -> str:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = user, to, "Compte rendu"
    message.set_content("Bonjour, voici le compte rendu.")
    # AUTH PLAIN by hand: smtplib's own auth() only sends ASCII, and passwords may hold "ü".
    plain = base64.b64encode(f"\0{user}\0{secret}".encode()).decode()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("cabinet.example.test")
        code, reply = client.docmd("AUTH", f"PLAIN {plain}")
        if code != 235:
            return f"{code} {reply.decode()}"
        client.send_message(message)
    return "sent"


def wrong_code(user) -> str:
    return f"{(int(user.code()) + 1) % 10**6:06d}"


def test_imap_and_smtp_through_nginx_log_in_and_refuse_alike(mail, claire):
    imap, smtp = mail.ports["nginx_imap"], mail.ports["nginx_smtp"]
    assert imap_login(imap, claire.mailbox, claire.secret()) == "ok"
    assert send_mail(smtp, claire.mailbox, claire.secret()) == "sent"
    assert "Subject: Compte rendu" in mail.sink.wait_for(1)[0]

    refusals = {
        "wrong code": (claire.mailbox, claire.password + wrong_code(claire)),
        "wrong password": (claire.mailbox, "pas-le-bon" + claire.code()),
        "missing code": (claire.mailbox, claire.password),
        "unknown mailbox": ("inconnu@demo.mssante.fr", claire.secret()),
    }
    imap_answers = {case: imap_login(imap, *login) for case, login in refusals.items()}
    smtp_answers = {case: send_mail(smtp, *login) for case, login in refusals.items()}
    assert set(imap_answers.values()) == {"b'[AUTHENTICATIONFAILED] Invalid login or password'"}
    assert set(smtp_answers.values()) == {"535 5.7.8 Invalid login or password"}
    assert len(mail.sink.wait_for(2, timeout=2)) == 1


def test_parallel_connections_reconnections_other_address_and_ending(mail, claire, moved_clock):
    port, secret = mail.ports["nginx_imap"], claire.secret()
    results = []
    start = threading.Barrier(5)

    def connect():
        start.wait()
        results.append(imap_login(port, claire.mailbox, secret, source="127.0.0.2"))

    threads = [threading.Thread(target=connect) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["ok"] * 5
    assert MailSession.objects.count() == 1

    moved_clock.advance(600)  # ten minutes later the client reconnects with its cached string
    assert imap_login(port, claire.mailbox, secret, source="127.0.0.2") == "ok"
    assert imap_login(port, claire.mailbox, secret, source="127.0.0.3") != "ok"

    claire.professional.end_mail_sessions("ended_by_professional")  # "end all sessions"
    assert imap_login(port, claire.mailbox, secret, source="127.0.0.2") != "ok"


def test_two_members_of_an_organisational_mailbox_log_in_by_name(mail, nurses):
    sofia, luc = nurses
    port = mail.ports["nginx_imap"]
    assert imap_login(port, sofia.mailbox, sofia.secret(), source="127.0.0.4") == "ok"
    assert imap_login(port, luc.mailbox, luc.secret(), source="127.0.0.5") == "ok"
    named = AuditEvent.objects.filter(action="mail.login", outcome="ok")
    assert sorted(named.values_list("actor", "client_ip")) == [
        ("899700000002", "127.0.0.4"),
        ("899700000003", "127.0.0.5"),
    ]


def test_dovecot_lua_passdb_and_postfix_submission(mail, claire):
    imap, submission = mail.ports["lua_imap"], mail.ports["submission"]
    assert imap_login(imap, claire.mailbox, claire.password + wrong_code(claire)) != "ok"
    assert imap_login(imap, claire.mailbox, claire.secret()) == "ok"
    assert send_mail(submission, claire.mailbox, claire.password + wrong_code(claire)).startswith(
        "535"
    )
    assert send_mail(submission, claire.mailbox, claire.secret()) == "sent"
    assert len(mail.sink.wait_for(1)) == 1
    vias = set(AuditEvent.objects.filter(outcome="ok").values_list("details__via", flat=True))
    assert vias == {"api:dovecot-e2e"}
