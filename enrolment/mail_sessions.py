"""Mail sessions (DESIGN §5.2): a verified password+code string, reused by the same client.

Mail clients open several connections at once and reconnect all day with the string they
cached, long after the code's 30 seconds. A session remembers an HMAC of the exact string, bound
to the mailbox and the client's network, for an absolute and an idle lifetime. A hit costs one
indexed SELECT and one HMAC; "last seen" is written at most once a minute.
"""

import ipaddress
from datetime import timedelta

from django.conf import settings
from django.utils.crypto import salted_hmac

from enrolment import clock
from enrolment.models import Device, Mailbox, MailSession, Professional

TOUCH_EVERY = timedelta(minutes=1)


def credential_digest(mailbox_address: str, secret: str) -> str:
    return salted_hmac(
        "mss-totp.mail-session",
        f"{mailbox_address}\0{secret}",
        secret=settings.MAIL_SESSION_KEY,
        algorithm="sha256",
    ).hexdigest()


def client_address(client_ip: str) -> str:
    """The address in its canonical form. ValueError if it is not an IP address."""
    return str(ipaddress.ip_address(client_ip.strip()))


def client_network(client_ip: str) -> str:
    """The client's network as configured (exact address by default). ValueError if not an IP."""
    address = ipaddress.ip_address(client_ip.strip())
    prefix = (
        settings.MAIL_SESSION_PREFIX_V4 if address.version == 4 else settings.MAIL_SESSION_PREFIX_V6
    )
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def sessions_for(mailbox_address: str, digest: str) -> list[MailSession]:
    """Every session ever opened with this exact string for this mailbox, live or not:
    one indexed SELECT. A live one is a hit; a dead one says the string is stale."""
    return list(
        MailSession.objects.select_related("professional", "mailbox", "device").filter(
            credential_digest=digest, mailbox__address=mailbox_address
        )
    )


def is_live(session: MailSession, network: str) -> bool:
    now = clock.utcnow()
    return (
        session.client_network == network
        and session.revoked_at is None
        and session.expires_at > now
        and session.last_seen_at > now - timedelta(seconds=settings.MAIL_SESSION_IDLE_SECONDS)
        and session.professional.is_active
        and session.mailbox.is_active
        and session.device.confirmed
    )


def find_live(sessions: list[MailSession], network: str) -> MailSession | None:
    return next((s for s in sessions if is_live(s, network)), None)


def needs_touch(session: MailSession) -> bool:
    return clock.utcnow() - session.last_seen_at >= TOUCH_EVERY


def touch(session: MailSession) -> None:
    now = clock.utcnow()
    MailSession.objects.filter(pk=session.pk).update(last_seen_at=now)
    session.last_seen_at = now


def open_session(
    mailbox: Mailbox,
    professional: Professional,
    device: Device,
    digest: str,
    network: str,
    protocol: str,
) -> MailSession:
    now = clock.utcnow()
    return MailSession.objects.create(
        mailbox=mailbox,
        professional=professional,
        device=device,
        credential_digest=digest,
        client_network=network,
        protocol=protocol,
        created_at=now,
        last_seen_at=now,
        expires_at=now + timedelta(seconds=settings.MAIL_SESSION_LIFETIME_SECONDS),
    )
