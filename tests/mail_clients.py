"""The mail clients of the end-to-end tests: imaplib from a chosen loopback address, and
smtplib with AUTH PLAIN written by hand (non-ASCII passwords); both over TLS, implicit (IMAPS,
SMTPS: what the portal tells professionals) or after STARTTLS, or in clear to see it refused."""

import base64
import imaplib
import smtplib
import socket
import ssl
from email.message import EmailMessage

IMPLICIT, STARTTLS, CLEAR = "implicit", "starttls", "clear"  # how a client does TLS


class IMAP(imaplib.IMAP4):
    """imaplib from a chosen loopback address (each address is another client network), over
    TLS as ``tls`` says."""

    def __init__(self, port, source="127.0.0.1", tls=IMPLICIT):
        self._source, self._tls = source, tls
        super().__init__("127.0.0.1", port, timeout=30)
        self._encoding = "utf-8"  # passwords may hold non-ASCII letters
        if tls == STARTTLS:
            self.starttls(ssl_context=_trusting_any_certificate())

    def _create_socket(self, timeout):
        sock = socket.create_connection(
            (self.host, self.port), timeout, source_address=(self._source, 0)
        )
        if self._tls == IMPLICIT:
            return _trusting_any_certificate().wrap_socket(sock, server_hostname=self.host)
        return sock


def imap_login(port, user, secret, source="127.0.0.1", tls=IMPLICIT) -> str:
    """'ok' after LOGIN and SELECT INBOX, else the server's refusal text."""
    client = IMAP(port, source, tls)
    try:
        client.login(user, secret)
        status, _ = client.select("INBOX")
        assert status == "OK"
        client.logout()
        return "ok"
    except imaplib.IMAP4.error as refused:
        return str(refused)


def imap_plain_login(port, user: str, secret: bytes, tls=IMPLICIT) -> str:
    """'ok' after AUTHENTICATE PLAIN with the password's raw bytes (UTF-8 or not), else the
    server's refusal text."""
    client = IMAP(port, "127.0.0.1", tls)
    try:
        client.authenticate("PLAIN", lambda _challenge: b"\0" + user.encode() + b"\0" + secret)
        client.logout()
        return "ok"
    except imaplib.IMAP4.error as refused:
        return str(refused)


def send_mail(port, user, secret, to="confrere@autre.mssante.fr", sender=None, tls=IMPLICIT) -> str:
    """'sent', else the server's refusal ("535 ..." for the login, "553 ..." for the
    sender). ``sender``: another From than the login's."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender or user, to, "Compte rendu"
    message.set_content("Bonjour, voici le compte rendu.")
    # AUTH PLAIN by hand: smtplib's own auth() only sends ASCII, and passwords may hold "ü".
    plain = base64.b64encode(f"\0{user}\0{secret}".encode()).decode()
    if tls == IMPLICIT:
        connection = smtplib.SMTP_SSL(
            "127.0.0.1", port, timeout=30, context=_trusting_any_certificate()
        )
    else:
        connection = smtplib.SMTP("127.0.0.1", port, timeout=30)
    with connection as client:
        client.ehlo("cabinet.example.test")
        if tls == STARTTLS:
            client.starttls(context=_trusting_any_certificate())
            client.ehlo("cabinet.example.test")
        code, reply = client.docmd("AUTH", f"PLAIN {plain}")
        if code != 235:
            return f"{code} {reply.decode()}"
        try:
            client.send_message(message)
        except smtplib.SMTPSenderRefused as refused:
            return f"{refused.smtp_code} {refused.smtp_error.decode()}"
        except smtplib.SMTPRecipientsRefused as refused:
            code, reply = next(iter(refused.recipients.values()))
            return f"{code} {reply.decode()}"
    return "sent"


def _trusting_any_certificate() -> ssl.SSLContext:
    # The test stack's certificate is self-signed; what is tested is that logins need TLS.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
