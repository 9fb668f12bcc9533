"""One-time enrolment tokens of staff accounts (see StaffEnrolmentToken).

A staff account's first login enrols the phone whose codes it will need from then on. The
password alone must not be enough for that, or whoever learnt the password first would own the
account's second factor: the enrolment page asks for this token first, which the security
officer gives out of band with the account (manage.py staff create, reset-phone,
enrolment-token). It is spent when a phone is enrolled.
"""

import base64
import hashlib
import hmac
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from enrolment.models import StaffEnrolmentToken

TOKEN_BYTES = 15  # 120 bits: 24 base32 characters, no padding


@sensitive_variables("token")
def issue(user) -> tuple[str, StaffEnrolmentToken]:
    """A new token for ``user``, replacing any earlier one; the token is shown once."""
    token = base64.b32encode(secrets.token_bytes(TOKEN_BYTES)).decode()
    expires_at = timezone.now() + timedelta(hours=settings.STAFF_ENROLMENT_TOKEN_HOURS)
    with transaction.atomic():
        # A new row, not the old one updated: a browser that presented the old token holds
        # its id, which must not let it through now.
        spend(user)
        row = StaffEnrolmentToken.objects.create(
            user=user, token_hash=_digest(token), expires_at=expires_at
        )
    return grouped(token), row


def grouped(token: str) -> str:
    """As it is read out and typed: groups of four."""
    return "-".join(token[i : i + 4] for i in range(0, len(token), 4))


@sensitive_variables("typed")
def check(user, typed: str) -> StaffEnrolmentToken | None:
    """The user's live token if ``typed`` is it (spaces, dashes and case do not matter)."""
    row = live_token(user)
    normalised = "".join(typed.split()).replace("-", "").upper()
    if row is None or not hmac.compare_digest(row.token_hash, _digest(normalised)):
        return None
    return row


def live_token(user, pk: int | None = None) -> StaffEnrolmentToken | None:
    tokens = StaffEnrolmentToken.objects.filter(user=user, expires_at__gt=timezone.now())
    if pk is not None:
        tokens = tokens.filter(pk=pk)
    return tokens.first()


def spend(user) -> None:
    StaffEnrolmentToken.objects.filter(user=user).delete()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
