"""The audit trail's MAC keys: which one signs, which ones still verify, and up to where.

AUDIT_MAC_KEY is the trail's first key, named "legacy" in the rows and seals it MACs.
AUDIT_MAC_KEYRING, JSON ``{"active": ID, "keys": {ID: secret}, "retired": {ID: "SEQ:MAC"}}``,
adds named keys; its active one MACs every new row, seal and purge mark, and every row and seal
records the id of its key.

Rotating is not enough when a key may have leaked: whoever holds it can still MAC rows and
seals that verify. ``manage.py audit_key retire ID`` checks and seals the trail and prints the
newest seal; once that is in the keyring's "retired" on every node, ``verify_audit`` accepts
the key for the seals up to that one and the rows they cover, and reports any other row, seal
or purge mark MACed with it. The retirement is kept in the nodes' settings, not in the
database that a thief of the key may write to, and the seal it names must stay in the chain,
like an anchor. A retired key stays configured, verify only: the seals it made cannot be
checked without it.
"""

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

LEGACY = "legacy"  # the id of AUDIT_MAC_KEY
KEYRING_SHAPE = '{"active": ID, "keys": {ID: secret}, "retired": {ID: "SEQ:MAC"}}'
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,15}")  # fits the mac_key columns
ANCHOR_PATTERN = re.compile(r"(\d+):([0-9a-f]{64})")
MIN_SECRET_LENGTH = 32


@dataclass(frozen=True)
class MacKeys:
    active: str
    secrets: dict[str, str] = field(repr=False)  # never in a log or a traceback
    retired: dict[str, tuple[int, str]] = field(default_factory=dict)  # id: the seal (seq, mac)


def mac_keys() -> MacKeys:
    return _parse(settings.AUDIT_MAC_KEYRING, settings.AUDIT_MAC_KEY)


def derived_key(purpose: str, key_id: str, secret: str) -> bytes:
    """The HMAC key for rows or seals. A named key's id is part of it, so that a row or seal
    relabelled with another key's id does not verify; the legacy key's is as it always was."""
    if key_id == LEGACY:
        return hashlib.sha256(f"mss-totp.audit.{purpose}\0{secret}".encode()).digest()
    return hashlib.sha256(f"mss-totp.audit.{purpose}\0{key_id}\0{secret}".encode()).digest()


@lru_cache(maxsize=4)
def _parse(keyring_text: str, legacy_secret: str) -> MacKeys:
    # The messages never repeat a value: a secret typed where an id belongs would end up in
    # the logs.
    if not keyring_text:
        return MacKeys(active=LEGACY, secrets={LEGACY: legacy_secret})
    try:
        data = json.loads(keyring_text)
    except json.JSONDecodeError as exc:
        raise ImproperlyConfigured(f"AUDIT_MAC_KEYRING is not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), dict):
        raise ImproperlyConfigured(f"AUDIT_MAC_KEYRING must be {KEYRING_SHAPE}")
    named = data["keys"]
    _check_named_keys(named, legacy_secret)
    secrets = {LEGACY: legacy_secret, **named}
    if not isinstance(data.get("active"), str) or data["active"] not in named:
        raise ImproperlyConfigured("AUDIT_MAC_KEYRING: its active key is not among its keys")
    retired = _parse_retired(data.get("retired", {}), secrets, data["active"])
    return MacKeys(active=data["active"], secrets=secrets, retired=retired)


def _check_named_keys(named: dict, legacy_secret: str) -> None:
    for key_id, secret in named.items():
        if key_id == LEGACY or not KEY_ID_PATTERN.fullmatch(key_id):
            raise ImproperlyConfigured(
                "AUDIT_MAC_KEYRING: a key id is not 1-16 letters, digits or '_.-' starting "
                f"with a letter or digit, or is {LEGACY!r} (AUDIT_MAC_KEY's)"
            )
        if not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH:
            raise ImproperlyConfigured(
                f"AUDIT_MAC_KEYRING: key {key_id} must be a random secret of "
                f"{MIN_SECRET_LENGTH} characters or more"
            )
    if len({*named.values(), legacy_secret}) != len(named) + 1:
        raise ImproperlyConfigured("AUDIT_MAC_KEYRING: two keys share one secret")


def parse_anchor(text: str) -> tuple[int, str] | None:
    """A seal as ``SEQ:MAC`` (seal_audit's anchors, a retirement's seal), or None."""
    match = ANCHOR_PATTERN.fullmatch(text.strip()) if isinstance(text, str) else None
    return (int(match[1]), match[2]) if match else None


def _parse_retired(retired, secrets: dict, active: str) -> dict[str, tuple[int, str]]:
    if not isinstance(retired, dict):
        raise ImproperlyConfigured('AUDIT_MAC_KEYRING: "retired" must be {ID: "SEQ:MAC"}')
    found = {}
    for key_id, anchor in retired.items():
        if key_id not in secrets or key_id == active:
            raise ImproperlyConfigured(
                "AUDIT_MAC_KEYRING: a retired key must stay among its keys (it verifies what "
                "it made), and cannot be the active one"
            )
        seal = parse_anchor(anchor)
        if seal is None:
            raise ImproperlyConfigured(
                f'AUDIT_MAC_KEYRING: the retirement of {key_id} must be "SEQ:MAC", as '
                "audit_key retire printed it"
            )
        found[key_id] = seal
    return found
