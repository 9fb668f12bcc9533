"""TOTP seeds at rest: AES-256-GCM under a keyring of named keys.

Each ciphertext records the id of the key that sealed it, so keys can be rotated while the site
runs (``manage.py seed_key rotate``). The associated data names the device and its owner, so a
ciphertext copied onto another row does not decrypt there.
"""

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.views.decorators.debug import sensitive_variables

SEED_BYTES = 20  # 160 bits, RFC 4226's recommended length
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's 96-bit nonce, fresh for every encryption
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,32}")  # fits Device.key_id


class KeyringError(Exception):
    """The keyring setting is missing or malformed. The message names the setting."""


class SeedDecryptionError(Exception):
    """A stored seed cannot be opened: unknown key, or ciphertext not made for this row."""


@dataclass(frozen=True)
class SealedSeed:
    key_id: str
    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True)
class Keyring:
    active_id: str
    keys: dict[str, bytes] = field(repr=False)  # never in a log or a traceback

    @classmethod
    def parse(cls, text: str, source: str) -> "Keyring":
        """Build a keyring from its JSON text; ``source`` names the setting in every error."""
        try:
            data = json.loads(text, object_pairs_hook=_refusing_duplicates)
        except json.JSONDecodeError as exc:
            raise KeyringError(f"{source} is not valid JSON ({exc.msg})") from None
        except _DuplicateName as exc:
            # json.loads keeps the last of two equal names: a hand-merged file would lose
            # silently the key that older seeds need.
            raise KeyringError(f"{source} names {exc.args[0]!r} twice") from None
        if not isinstance(data, dict) or not isinstance(data.get("keys"), dict):
            raise KeyringError(f'{source} must be {{"active": ID, "keys": {{ID: base64 key}}}}')
        keys = {
            key_id: _decode_key(key_id, value, source) for key_id, value in data["keys"].items()
        }
        active_id = data.get("active")
        if not isinstance(active_id, str) or active_id not in keys:
            raise KeyringError(f"{source}: the active key {active_id!r} is not among its keys")
        return cls(active_id=active_id, keys=keys)

    def to_json(self) -> str:
        encoded = {key_id: base64.b64encode(key).decode() for key_id, key in self.keys.items()}
        return json.dumps({"active": self.active_id, "keys": encoded}, indent=2) + "\n"

    def with_key(self, key_id: str, key: bytes, activate: bool) -> "Keyring":
        check_key_id(key_id, "the new key")
        if key_id in self.keys:
            raise KeyringError(f"the keyring already has a key {key_id!r}")
        return Keyring(
            active_id=key_id if activate else self.active_id, keys={**self.keys, key_id: key}
        )

    def without_key(self, key_id: str) -> "Keyring":
        if key_id == self.active_id:
            raise KeyringError(f"{key_id!r} is the active key; activate another one first")
        if key_id not in self.keys:
            raise KeyringError(f"the keyring has no key {key_id!r}")
        return Keyring(
            active_id=self.active_id, keys={k: v for k, v in self.keys.items() if k != key_id}
        )

    def activated(self, key_id: str) -> "Keyring":
        if key_id not in self.keys:
            raise KeyringError(f"the keyring has no key {key_id!r}")
        return Keyring(active_id=key_id, keys=self.keys)

    def check_value(self, key_id: str) -> str:
        """A fingerprint of the key, which tells two keys of one id apart and nothing about
        either (an HMAC of a constant under the key)."""
        return hmac.new(
            self.keys[key_id], b"mss-totp seed key check v1", hashlib.sha256
        ).hexdigest()

    def seal(self, seed: bytes, associated_data: bytes) -> SealedSeed:
        nonce = secrets.token_bytes(NONCE_BYTES)
        ciphertext = AESGCM(self.keys[self.active_id]).encrypt(nonce, seed, associated_data)
        return SealedSeed(key_id=self.active_id, nonce=nonce, ciphertext=ciphertext)

    @sensitive_variables("key")
    def open(self, sealed: SealedSeed, associated_data: bytes) -> bytes:
        key = self.keys.get(sealed.key_id)
        if key is None:
            raise SeedDecryptionError(f"the keyring has no key {sealed.key_id!r}")
        if len(sealed.nonce) != NONCE_BYTES:  # else cryptography's ValueError, not ours
            raise SeedDecryptionError(f"the stored nonce is {len(sealed.nonce)} bytes, not 12")
        try:
            return AESGCM(key).decrypt(
                bytes(sealed.nonce), bytes(sealed.ciphertext), associated_data
            )
        except InvalidTag:
            raise SeedDecryptionError(
                "the stored seed does not authenticate for this device: "
                "it was altered or copied from another row"
            ) from None


class _DuplicateName(ValueError):
    pass


def _refusing_duplicates(pairs: list[tuple[str, object]]) -> dict:
    names = [name for name, _ in pairs]
    for name in names:
        if names.count(name) > 1:
            raise _DuplicateName(name)
    return dict(pairs)


def check_key_id(key_id: object, source: str) -> None:
    if not isinstance(key_id, str) or not KEY_ID_PATTERN.fullmatch(key_id):
        raise KeyringError(f"{source}: key id {key_id!r} must be 1-32 letters, digits, . _ or -")


def _decode_key(key_id: object, value: object, source: str) -> bytes:
    check_key_id(key_id, source)
    try:
        key = base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"{source}: key {key_id!r} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise KeyringError(
            f"{source}: key {key_id!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES}"
        )
    return key


def load_keyring() -> Keyring:
    """The configured keyring. Raises KeyringError naming the setting when it is unusable."""
    if settings.SEED_KEYRING and settings.SEED_KEYRING_FILE:
        raise KeyringError("set SEED_KEYRING or SEED_KEYRING_FILE, not both")
    if settings.SEED_KEYRING:
        return _parse_cached(settings.SEED_KEYRING, "SEED_KEYRING")
    path = settings.SEED_KEYRING_FILE
    if not path:
        raise KeyringError(
            "no seed encryption key: set SEED_KEYRING or SEED_KEYRING_FILE "
            "(manage.py seed_key new --file PATH makes one)"
        )
    try:
        # The file is read again only when it changes: a new active key is seen without a
        # restart, and the verify path costs one stat().
        stat = os.stat(path)
        return _read_file_cached(path, stat.st_ino, stat.st_mtime_ns, stat.st_size)
    except OSError as exc:
        raise KeyringError(f"SEED_KEYRING_FILE: cannot read {path}: {exc.strerror}") from None


@lru_cache(maxsize=4)
def _parse_cached(text: str, source: str) -> Keyring:
    return Keyring.parse(text, source)


@lru_cache(maxsize=4)
def _read_file_cached(path: str, inode: int, mtime_ns: int, size: int) -> Keyring:
    source = f"SEED_KEYRING_FILE ({path})"
    with open(path, "rb") as keyring_file:
        raw = keyring_file.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyringError(f"{source} is not UTF-8 text") from None
    return Keyring.parse(text, source)


def new_seed() -> bytes:
    return secrets.token_bytes(SEED_BYTES)


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)
