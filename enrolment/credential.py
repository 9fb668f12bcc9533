"""Splitting what a mail client sends in its one password field (DESIGN §5.1)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Credential:
    password: str
    code: str

    def __repr__(self):  # never in a log or a traceback
        return "Credential(<hidden>)"


def split_credential(secret: str, digits: int = 6, separator: str = "") -> Credential | None:
    """The code is the last ``digits`` characters, all ASCII digits; the password is everything
    before (digits and any other character allowed), less an optional separator.
    None when there is no well-formed code or no password."""
    code = secret[-digits:]
    if len(secret) <= digits or not code.isascii() or not code.isdigit():
        return None
    password = secret[:-digits]
    if separator:
        if not password.endswith(separator):
            return None
        password = password[: -len(separator)]
    return Credential(password, code) if password else None
