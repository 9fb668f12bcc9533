"""RFC 4226 (HOTP) and RFC 6238 (TOTP) arithmetic.

django-otp's ``oath`` module only knows HMAC-SHA-1; RFC 6238 also defines SHA-256 and SHA-512,
and its Appendix B vectors cover all three, so the few lines are ours.
"""

import base64
import hashlib
import hmac
import struct

ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}


def hotp(key: bytes, counter: int, digits: int = 6, algorithm: str = "sha1") -> str:
    mac = hmac.new(key, struct.pack(">Q", counter), ALGORITHMS[algorithm]).digest()
    offset = mac[-1] & 0x0F  # RFC 4226 §5.3 dynamic truncation
    binary = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(binary % 10**digits).zfill(digits)


def time_step(unix_time: float, period: int = 30, t0: int = 0) -> int:
    return int((unix_time - t0) // period)


def totp(key: bytes, unix_time: float, digits=6, period=30, algorithm="sha1") -> str:
    return hotp(key, time_step(unix_time, period), digits, algorithm)


def find_step(
    key: bytes, code: str, steps: range, digits: int = 6, algorithm: str = "sha1"
) -> int | None:
    """The time step in ``steps`` whose code is ``code``, or None.

    Every candidate is computed and compared in constant time, so the time taken does not tell
    an attacker how close a guess came.
    """
    if len(code) != digits or not code.isascii() or not code.isdigit():
        return None
    found = None
    for step in steps:
        if hmac.compare_digest(hotp(key, step, digits, algorithm), code):
            found = step if found is None else found
    return found


def base32_secret(key: bytes) -> str:
    """The unpadded upper-case Base32 form that authenticator apps expect."""
    return base64.b32encode(key).decode("ascii").rstrip("=")
