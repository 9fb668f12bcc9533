"""Mail sessions (DESIGN §5.2): a verified password+code string, reused by the same client.

Mail clients open several connections at once and reconnect all day with the string they
cached, long after the code's 30 seconds. A session remembers an HMAC of the exact string, bound
to the mailbox and the client's network, for an absolute and an idle lifetime. A hit costs one
indexed SELECT and one HMAC; "last seen" is written at most once a minute.
"""

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connections
from django.utils.crypto import salted_hmac

from enrolment import clock
from enrolment.models import AddressThrottle, Device, Mailbox, MailSession, Professional

TOUCH_EVERY = timedelta(minutes=1)


def credential_digest(mailbox_address: str, secret: str) -> str:
    return salted_hmac(
        "mss-totp.mail-session",
        f"{mailbox_address}\0{secret}",
        secret=settings.MAIL_SESSION_KEY,
        algorithm="sha256",
    ).hexdigest()


def _parsed(client_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address; an IPv4 client that a dual-stack listener shows as ::ffff:a.b.c.d is the
    IPv4 address it is (else every such client would share the one /64 ::ffff:0:0/64)."""
    address = ipaddress.ip_address(client_ip.strip())
    return getattr(address, "ipv4_mapped", None) or address


def client_address(client_ip: str) -> str:
    """The address in its canonical form. ValueError if it is not an IP address."""
    return str(_parsed(client_ip))


def throttle_source(client_ip: str) -> str:
    """Whose budget a failure spends: the IPv4 address, or the IPv6 /64, since one subscriber
    holds a whole /64 and could otherwise rotate through it for fresh budgets."""
    return _source(_parsed(client_ip))


def network_and_source(client_ip: str) -> tuple[str, str]:
    """The mail session's network (the configured prefix, the exact address by default) and
    the throttle source, from one parse: every mail login asks both. ValueError if not an
    IP address."""
    address = _parsed(client_ip)
    prefix = (
        settings.MAIL_SESSION_PREFIX_V4 if address.version == 4 else settings.MAIL_SESSION_PREFIX_V6
    )
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False)), _source(address)


def _source(address) -> str:
    if address.version == 4:
        return str(address)
    return str(ipaddress.ip_network(f"{address}/64", strict=False))


@dataclass(frozen=True)
class SessionRow:
    """What the hot path needs of a session, read without building a model instance."""

    id: object
    client_network: str
    revoked_at: datetime | None
    expires_at: datetime
    last_seen_at: datetime
    national_id: str


# The session hit is the hot path of every mail connection: one hand-written SELECT by an
# index, on the sessions table alone, which also brings the client address's throttle bucket
# (refusals of a flooding address need it, in the same round trip). Through the ORM, with the
# joins, the lookup cost four times as much (benchmark: tests/bench_verify.py). The digest
# already binds the mailbox.
FIRST_LOOK_SQL = """
    SELECT b.tokens, b.updated_at, b.last_digest, b.refused_at,
           s.id, s.client_network, s.revoked_at, s.expires_at, s.last_seen_at, s.national_id
      FROM (SELECT 1 AS one) AS one
      LEFT JOIN {bucket} b ON b.address = %s
      LEFT JOIN {session} s ON s.credential_digest = %s
"""


def first_look(digest: str, source: str) -> tuple[list[SessionRow], tuple | None]:
    """Every session ever opened with this exact string for this mailbox, live or not (a
    live one is a hit, a dead one says the string is stale), and the (tokens, updated_at,
    last_digest, refused_at) of the client address's bucket, if it has one."""
    connection = connections[MailSession.objects.db]
    sql = FIRST_LOOK_SQL.format(
        bucket=AddressThrottle._meta.db_table, session=MailSession._meta.db_table
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [source, digest])
        rows = cursor.fetchall()
    bucket = rows[0][:4] if rows[0][0] is not None else None
    sessions = [_session_row(connection, row[4:]) for row in rows if row[4] is not None]
    return sessions, bucket


def sessions_for(digest: str) -> list[SessionRow]:
    return first_look(digest, "")[0]


def _session_row(connection, row) -> SessionRow:
    converted = list(row)
    if not connection.features.supports_timezones:  # SQLite hands back naive values
        for index in (2, 3, 4):
            converted[index] = _aware(converted[index])
    return SessionRow(*converted)


def _aware(value):
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def is_live(session: SessionRow, network: str) -> bool:
    now = clock.utcnow()
    return (
        session.client_network == network
        and session.revoked_at is None
        and session.expires_at > now
        and session.last_seen_at > now - timedelta(seconds=settings.MAIL_SESSION_IDLE_SECONDS)
    )


def find_live(sessions: list[SessionRow], network: str) -> SessionRow | None:
    return next((s for s in sessions if is_live(s, network)), None)


def needs_touch(session: SessionRow) -> bool:
    return clock.utcnow() - session.last_seen_at >= TOUCH_EVERY


def touch(session: SessionRow) -> None:
    MailSession.objects.filter(pk=session.id).update(last_seen_at=clock.utcnow())


def note_refused(digest: str) -> None:
    """This string was refused: if it opened a session once, that row is kept from the purge
    while a client still retries it (purge_mail_state). The same UPDATE for every refusal
    (it finds no row for a string never accepted), so that its cost tells nothing."""
    MailSession.objects.filter(credential_digest=digest).update(last_refused_at=clock.utcnow())


def new_session(
    mailbox: Mailbox,
    professional: Professional,
    device: Device,
    digest: str,
    network: str,
    protocol: str,
) -> MailSession:
    """A session, not yet written (the verifier writes it with the claim of the step)."""
    now = clock.utcnow()
    session = MailSession(
        mailbox=mailbox,
        professional=professional,
        device=device,
        credential_digest=digest,
        national_id=professional.national_id,
        client_network=network,
        protocol=protocol,
        created_at=now,
        last_seen_at=now,
        expires_at=now + timedelta(seconds=settings.MAIL_SESSION_LIFETIME_SECONDS),
    )
    return session
