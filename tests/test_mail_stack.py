"""Mail clients through the real mail path: imaplib and smtplib against nginx's mail proxy
(Dovecot and Postfix behind it), and against Dovecot with the Lua passdb and Postfix
submission with Dovecot SASL. The verifier is the live test server."""

import pwd
import socket
import ssl
import stat
import subprocess
import sys
import threading

import pytest
from django.db import connection

from enrolment.models import AuditEvent, MailSession
from tests.mail_clients import CLEAR, IMAP, STARTTLS, imap_login, imap_plain_login, send_mail

# The mail path runs against PostgreSQL, the production database. SQLite's in-memory test
# database is shared between the live server's threads with table locks that do not wait,
# so parallel mail connections would fail there for reasons production never sees.
pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the mail path is tested on PostgreSQL"
)


def wrong_code(user) -> str:
    return f"{(int(user.code()) + 1) % 10**6:06d}"


def test_imap_and_smtp_through_nginx_log_in_and_refuse_alike(mail, claire):
    imap, smtp = mail.ports["nginx_imaps"], mail.ports["nginx_smtps"]  # 993 and 465
    assert imap_login(imap, claire.mailbox, claire.secret()) == "ok"
    assert send_mail(smtp, claire.mailbox, claire.secret()) == "sent"
    assert "Subject: Compte rendu" in mail.sink.wait_for(1)[0]
    # Logged in as her mailbox, she cannot send as another one.
    other = "accueil@clinique-demo.mssante.fr"
    assert send_mail(smtp, claire.mailbox, claire.secret(), sender=other).startswith("553")

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


def test_no_login_in_clear_anywhere_a_client_can_reach(mail, claire):
    """143 and 587 refuse a login before STARTTLS without asking the verifier, and log it in
    after; the Dovecot that faces clients refuses it too (from another host: Dovecot trusts
    a connection from its own address)."""
    imap, submission = mail.ports["nginx_imap"], mail.ports["nginx_submission"]
    lua = mail.ports["lua_imap"]
    assert "LOGINDISABLED" in _capabilities(imap)
    assert imap_login(imap, claire.mailbox, claire.secret(), tls=CLEAR) != "ok"
    assert send_mail(submission, claire.mailbox, claire.secret(), tls=CLEAR).startswith("5")
    assert imap_login(lua, claire.mailbox, claire.secret(), "127.0.0.2", tls=CLEAR) != "ok"
    assert not AuditEvent.objects.filter(action="mail.login").exists()  # never asked

    assert imap_login(imap, claire.mailbox, claire.secret(), tls=STARTTLS) == "ok"
    assert send_mail(submission, claire.mailbox, claire.secret(), tls=STARTTLS) == "sent"
    assert len(mail.sink.wait_for(1)) == 1


def test_a_password_typed_as_the_user_name_reaches_no_log(mail, claire):
    """The audit trail keeps no such name (enrolment/verifier.py); nginx's and Dovecot's
    logs must not either."""
    pasted = "Motdepasse-Colle-" + claire.code()  # what a hurried user pastes
    assert imap_login(mail.ports["nginx_imaps"], pasted, claire.secret()) != "ok"
    assert imap_login(mail.ports["lua_imap"], pasted, claire.secret(), tls=STARTTLS) != "ok"
    logs = [path for path in mail.run_dir.rglob("*") if path.is_file() and "log" in path.name]
    assert logs
    for log in logs:
        assert "motdepasse-colle" not in log.read_text(errors="replace").casefold(), log


def _capabilities(port) -> str:
    client = IMAP(port, tls=CLEAR)
    try:
        return " ".join(client.capabilities)
    finally:
        client.shutdown()


def test_parallel_connections_reconnections_other_address_and_ending(mail, claire, moved_clock):
    port, secret = mail.ports["nginx_imaps"], claire.secret()
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
    port = mail.ports["nginx_imaps"]
    assert imap_login(port, sofia.mailbox, sofia.secret(), source="127.0.0.4") == "ok"
    assert imap_login(port, luc.mailbox, luc.secret(), source="127.0.0.5") == "ok"
    named = AuditEvent.objects.filter(action="mail.login", outcome="ok")
    assert sorted(named.values_list("actor", "client_ip")) == [
        ("899700000002", "127.0.0.4"),
        ("899700000003", "127.0.0.5"),
    ]


def test_dovecot_lua_passdb_and_postfix_submission(mail, claire):
    imap, submission = mail.ports["lua_imap"], mail.ports["submission"]
    wrong = claire.password + wrong_code(claire)
    assert imap_login(imap, claire.mailbox, wrong, tls=STARTTLS) != "ok"
    assert imap_login(imap, claire.mailbox, claire.secret(), tls=STARTTLS) == "ok"
    # Implicit TLS too, as the portal tells professionals: 993 and 465.
    assert imap_login(mail.ports["lua_imaps"], claire.mailbox, claire.secret()) == "ok"
    assert send_mail(mail.ports["submissions"], claire.mailbox, claire.secret()) == "sent"
    # A credential the API refuses as malformed (a password that is not UTF-8) is a plain
    # refusal, not a temporary failure that the client would retry forever.
    not_utf8 = claire.password.encode("latin-1") + claire.code().encode()
    assert "AUTHENTICATIONFAILED" in imap_plain_login(imap, claire.mailbox, not_utf8, STARTTLS)
    # Submission: no AUTH before STARTTLS (the password and code would travel in clear).
    assert send_mail(submission, claire.mailbox, claire.secret(), tls=CLEAR).startswith("5")
    assert send_mail(submission, claire.mailbox, wrong, tls=STARTTLS).startswith("535")
    assert send_mail(submission, claire.mailbox, claire.secret(), tls=STARTTLS) == "sent"
    other = "accueil@clinique-demo.mssante.fr"
    assert send_mail(
        submission, claire.mailbox, claire.secret(), sender=other, tls=STARTTLS
    ).startswith("553")
    assert len(mail.sink.wait_for(2)) == 2
    vias = set(AuditEvent.objects.filter(outcome="ok").values_list("details__via", flat=True))
    assert vias == {"api:dovecot-e2e"}


def test_only_postfix_may_ask_dovecot_for_a_login(mail):
    """Dovecot's SASL service takes the client address it is told (rip=): a local user who
    could reach it would pick any throttle budget. Its socket is Postfix's only."""
    socket_path = mail.run_dir / "postfix" / "spool" / "private" / "auth"
    status = socket_path.stat()
    assert stat.S_ISSOCK(status.st_mode) and stat.S_IMODE(status.st_mode) == 0o660
    assert pwd.getpwuid(status.st_uid).pw_name == "postfix"
    probe = (
        "import socket, sys; s = socket.socket(socket.AF_UNIX); print('ran', flush=True); "
        "s.connect(sys.argv[1]); print(s.recv(100)[:7])"
    )
    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    denied = subprocess.run(
        [*as_nobody, sys.executable, "-c", probe, str(socket_path)], capture_output=True, text=True
    )
    assert denied.stdout == "ran\n" and "PermissionError" in denied.stderr
    as_postfix = ["setpriv", "--reuid=postfix", "--regid=postfix", "--clear-groups"]
    allowed = subprocess.run(
        [*as_postfix, sys.executable, "-c", probe, str(socket_path)], capture_output=True, text=True
    )
    assert "VERSION" in allowed.stdout, allowed.stderr


@pytest.mark.parametrize("listener", ["nginx_imaps", "nginx_smtps", "lua_imaps", "submissions"])
def test_tls_1_2_without_forward_secrecy_or_aead_is_refused(mail, listener):
    """Where the password and the code travel: RSA key exchange and CBC suites are refused
    (nginx's, Dovecot's and Postfix's own defaults take them), TLS 1.3 is taken."""
    weak = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    weak.check_hostname, weak.verify_mode = False, ssl.CERT_NONE
    weak.maximum_version = ssl.TLSVersion.TLSv1_2
    weak.set_ciphers("AES256-SHA:AES128-GCM-SHA256:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA384")
    address = ("127.0.0.1", mail.ports[listener])
    with socket.create_connection(address, timeout=10) as raw, pytest.raises(ssl.SSLError):
        weak.wrap_socket(raw, server_hostname="mail.example.test")
    good = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    good.check_hostname, good.verify_mode = False, ssl.CERT_NONE
    with (
        socket.create_connection(address, timeout=10) as raw,
        good.wrap_socket(raw, server_hostname="mail.example.test") as tls,
    ):
        assert tls.version() == "TLSv1.3"
