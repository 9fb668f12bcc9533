"""The audit trail's MAC keys: which one signs, and which ones still verify (DESIGN §8).

AUDIT_MAC_KEY is the trail's first key, named "legacy" in the rows and seals it MACs.
AUDIT_MAC_KEYRING, JSON ``{"active": ID, "keys": {ID: secret}}``, adds named keys; its active
one then MACs every new row and seal, and every other key only verifies what it made. Rows and
seals record the id of their key.

A key is retired with ``manage.py audit_key retire ID``: a row in the trail, after which anything
MACed with that key is reported by verify_audit, so whoever stole the key can no longer add to
the trail; what the key made before stays verifiable, pinned by the seals made since with the
new key. A retired key stays configured for that: a seal it made cannot be verified without it.
"""

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

LEGACY = "legacy"  # the id of AUDIT_MAC_KEY
RETIRE_ACTION = "audit.retire_mac_key"
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,16}$")  # fits AuditEvent.mac_key
MIN_SECRET_LENGTH = 32


@dataclass(frozen=True)
class MacKeys:
    active: str
    secrets: dict[str, str] = field(repr=False)  # never in a log or a traceback


def mac_keys() -> MacKeys:
    return _parse(settings.AUDIT_MAC_KEYRING, settings.AUDIT_MAC_KEY)


@lru_cache(maxsize=4)
def _parse(keyring_text: str, legacy_secret: str) -> MacKeys:
    if not keyring_text:
        return MacKeys(active=LEGACY, secrets={LEGACY: legacy_secret})
    shape = 'AUDIT_MAC_KEYRING must be {"active": ID, "keys": {ID: secret}}'
    try:
        data = json.loads(keyring_text)
    except json.JSONDecodeError as exc:
        raise ImproperlyConfigured(f"AUDIT_MAC_KEYRING is not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), dict):
        raise ImproperlyConfigured(shape)
    for key_id, secret in data["keys"].items():
        if key_id == LEGACY or not KEY_ID_PATTERN.match(key_id):
            raise ImproperlyConfigured(
                f"AUDIT_MAC_KEYRING: {key_id!r} is not a key id (1-16 letters, digits, "
                f"'_.-'; {LEGACY!r} is AUDIT_MAC_KEY's)"
            )
        if not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH:
            raise ImproperlyConfigured(
                f"AUDIT_MAC_KEYRING: key {key_id!r} must be a random secret of "
                f"{MIN_SECRET_LENGTH} characters or more"
            )
    if data.get("active") not in data["keys"]:
        raise ImproperlyConfigured(
            f"AUDIT_MAC_KEYRING: the active key {data.get('active')!r} is not among its keys"
        )
    return MacKeys(active=data["active"], secrets={LEGACY: legacy_secret, **data["keys"]})
