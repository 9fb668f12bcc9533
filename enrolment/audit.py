"""Writing the audit trail. Every caller passes what happened; nothing secret goes in details.

Each row carries a keyed MAC of its content and of a random row id (``uid``), computed here
before the INSERT, so the verify path writes a row in the same statement as everything else
and nothing serialises the writers, and the id of the key that made it (audit_keys.py).
Deleted rows are found by the seals (audit_chain.py).
"""

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
from datetime import UTC

from django.db import DatabaseError
from django.utils import timezone

from enrolment import audit_keys, clock
from enrolment.models import AuditEvent
from portal.client import client_ip

logger = logging.getLogger(__name__)

_last_sampled: dict[tuple[str, str], float] = {}


def due(source: str, reason: str) -> bool:
    """Once a minute per worker, address and reason: for the refusals an address may make us
    write thousands of times a second at no cost to it (one row and one commit each would be
    a way to flood the trail); the first of each minute is kept."""
    now = clock.now()
    last = _last_sampled.get((source, reason))
    if last is not None and now - last < 60:
        return False
    if len(_last_sampled) > 10_000:
        _last_sampled.clear()
    _last_sampled[(source, reason)] = now
    return True


def actor_of(request) -> tuple[str, str]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return AuditEvent.ActorKind.PROFESSIONAL, ""
    professional = getattr(user, "professional", None)
    if professional is not None:
        return AuditEvent.ActorKind.PROFESSIONAL, professional.national_id
    return AuditEvent.ActorKind.STAFF, user.get_username()


def logged_out(sender, request, user, **kwargs):
    """Django's user_logged_out: a professional's logout (through PSC's end-session too) or
    a staff member's, while the request still knows who. Sent before the session is ended:
    a row that cannot be written must not keep the session open."""
    if user is None:
        return
    professional = getattr(user, "professional", None)
    try:
        write(
            actor_kind=AuditEvent.ActorKind.PROFESSIONAL
            if professional
            else AuditEvent.ActorKind.STAFF,
            actor=professional.national_id if professional else user.get_username(),
            action="psc.logout" if professional else "staff.logout",
            outcome="ok",
            client_ip=client_ip(request),
        )
    except DatabaseError:
        logger.exception("logout of %s not audited", user.get_username())


def record(request, action: str, *, outcome: str = "", target: str = "", details=None):
    """An action taken through the site, by whoever the request belongs to."""
    actor_kind, actor = actor_of(request)
    return write(
        actor_kind=actor_kind,
        actor=actor,
        action=action,
        target=target,
        outcome=outcome,
        client_ip=client_ip(request) or None,
        details=details or {},
    )


def write(*, actor_kind, actor, action, target="", outcome="", client_ip=None, details=None):
    return insert(
        event(
            actor_kind=actor_kind,
            actor=actor,
            action=action,
            target=target,
            outcome=outcome,
            client_ip=client_ip,
            details=details,
        )
    )


def event(*, actor_kind, actor, action, target="", outcome="", client_ip=None, details=None):
    """An audit row with its MAC, not yet written (the verifier writes a new login's in its
    own SQL)."""
    row = AuditEvent(
        at=timezone.now(),
        uid=secrets.token_hex(16),
        actor_kind=str(actor_kind),
        actor=storable(actor),
        action=action,
        target=storable(target),
        outcome=outcome,
        client_ip=_canonical_ip(client_ip),
        details=storable(details or {}),
        mac_key=audit_keys.mac_keys().active,
    )
    row.mac = row_mac(row)
    return row


def storable(value):
    """What a client typed, as PostgreSQL can store it: text and JSON there cannot hold NUL,
    which would turn a refusal into a database error (and lose the audit row)."""
    if isinstance(value, str):
        return value.replace("\0", "\ufffd")
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable(item) for item in value]
    return value


def insert(event: AuditEvent) -> AuditEvent:
    # bulk_create: a plain INSERT (rows are only ever inserted), without save()'s machinery,
    # since every mail login writes one.
    AuditEvent.objects.bulk_create([event])
    return event


def row_mac(row: AuditEvent) -> str:
    """HMAC-SHA256 of the row's content, in a canonical form that reads back the same from
    the database (UTC microseconds, the address as the database prints it, sorted JSON),
    under the row's key. KeyError if that key is not configured."""
    # getattr: the migration that first MACed the rows (0003) has no mac_key yet.
    key_id = getattr(row, "mac_key", audit_keys.LEGACY)
    return _mac("row", canonical_content(row), key_id)


def canonical_content(row: AuditEvent) -> str:
    at = row.at.astimezone(UTC) if timezone.is_aware(row.at) else row.at
    return json.dumps(
        [
            row.uid,
            at.strftime("%Y-%m-%dT%H:%M:%S.%f"),
            row.actor_kind,
            row.actor,
            row.action,
            row.target,
            row.outcome,
            _ip_bytes(row.client_ip),
            row.details,
        ],
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )


def _ip_bytes(value) -> str:
    # The address's bytes, not its text: how Python or PostgreSQL print an address (an
    # IPv4-mapped IPv6 one, say) may change between versions; its bytes do not.
    canonical = _canonical_ip(value)
    return ipaddress.ip_address(canonical).packed.hex() if canonical else ""


def seal_mac(text: str, key_id: str) -> str:
    return _mac("seal", text, key_id)


def _mac(purpose: str, text: str, key_id: str) -> str:
    key = audit_keys.derived_key(purpose, key_id, audit_keys.mac_keys().secrets[key_id])
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def _canonical_ip(value):
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(str(value).strip()))
    except ValueError:
        return None
