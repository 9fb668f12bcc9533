"""One-time enrolment tokens of staff accounts (see StaffEnrolmentToken).

A staff account's first login enrols the phone whose codes it will need from then on. The
password alone must not be enough for that, or whoever learnt the password first would own the
account's second factor: the enrolment page asks for this token first, which the security
officer gives out of band with the account (manage.py staff create, reset-phone,
enrolment-token).

A token is presented once: the browser session that presents it may enrol, no other one ever
(whoever sees it typed cannot use it), and the enrolment spends it.
"""

import base64
import enum
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
# Base32 has no 0 or 8: what people type for O and B.
LOOK_ALIKES = str.maketrans({"0": "O", "8": "B"})


class Presented(enum.Enum):
    ACCEPTED = "ok"
    WRONG = "wrong_or_expired"
    ALREADY_PRESENTED = "already_presented"


@sensitive_variables()
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
    return in_groups(token), row


def in_groups(token: str) -> str:
    """As it is read out and typed: groups of four."""
    return "-".join(token[i : i + 4] for i in range(0, len(token), 4))


@sensitive_variables()
def present(user, typed: str) -> tuple[Presented, StaffEnrolmentToken | None]:
    """The user's live token, claimed for the session presenting it, if ``typed`` is it
    (spaces, dashes, case and look-alike digits do not matter)."""
    row = StaffEnrolmentToken.objects.filter(user=user, expires_at__gt=timezone.now()).first()
    normalised = "".join(typed.split()).replace("-", "").upper().translate(LOOK_ALIKES)
    if row is None or not hmac.compare_digest(row.token_hash, _digest(normalised)):
        return Presented.WRONG, None
    # Conditional, so that of two sessions presenting it at once only one gets it.
    unclaimed = StaffEnrolmentToken.objects.filter(pk=row.pk, presented_at__isnull=True)
    if not unclaimed.update(presented_at=timezone.now()):
        return Presented.ALREADY_PRESENTED, None
    return Presented.ACCEPTED, row


def presented_token(user, pk: int | None, lock: bool = False) -> StaffEnrolmentToken | None:
    """The token this session presented (its id), if it is still the user's and live;
    with ``lock``, under its row lock until the transaction ends."""
    if pk is None:
        return None
    tokens = StaffEnrolmentToken.objects.filter(
        pk=pk, user=user, presented_at__isnull=False, expires_at__gt=timezone.now()
    )
    return (tokens.select_for_update() if lock else tokens).first()


def spend(user) -> None:
    StaffEnrolmentToken.objects.filter(user=user).delete()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
