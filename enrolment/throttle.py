"""Throttling guesses without letting an attacker lock anyone out (DESIGN §5.4).

- Per client address, a token bucket: every failed login spends a token, and an address with
  none left is refused before any hashing. It refills by itself.
- Per professional, after a failure where one factor was right, an exponential back-off
  (1, 2, 4 … seconds) capped at THROTTLE_PROFESSIONAL_MAX_SECONDS: never a permanent lock.
  A success, or the helpdesk, clears it. It is enforced silently: a login during it is
  refused with the answer, the hash and the writes of any other refusal, since a back-off
  that showed (a longer Auth-Wait, a faster answer) would tell a password guesser that the
  password just tried was right.
"""

import math

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Q, Value, When

from enrolment import clock
from enrolment.models import AddressThrottle, Device


def _refill_rate() -> float:
    return settings.THROTTLE_ADDRESS_REFILL_PER_MINUTE / 60.0


def _tokens_now(bucket: AddressThrottle, now: float) -> float:
    burst = settings.THROTTLE_ADDRESS_BURST
    return min(burst, bucket.tokens + (now - bucket.updated_at) * _refill_rate())


def address_retry_after(bucket: tuple | None) -> int:
    """0 if the address may try; else the seconds until it has a token again. ``bucket`` is
    the address's (tokens, updated_at[, last_digest, refused_at]), read by the verifier with
    its session lookup."""
    if bucket is None or bucket[0] is None:
        return 0
    tokens = _tokens_now(AddressThrottle(tokens=bucket[0], updated_at=bucket[1]), clock.now())
    return 0 if tokens >= 1 else math.ceil((1 - tokens) / _refill_rate())


def address_wait(address: str) -> int:
    """address_retry_after() for a bucket not read yet."""
    bucket = AddressThrottle.objects.filter(address=address).values_list("tokens", "updated_at")
    return address_retry_after(bucket.first())


# A string refused after a hash, sent again from the same address within this time, is
# refused again before the hash. Short: what made the refusal may end meanwhile (a back-off
# running out, a password just saved in the portal), and the string then gets a real try
# within this time; long enough that one address repeating one string gets at most one
# Argon2id check per this time, not one per request.
REFUSED_AGAIN_SECONDS = 2.0


def may_hash_again(bucket: tuple | None, digest: str, address: str) -> bool:
    """False for the string this address was last refused after a hash, sent again within
    REFUSED_AGAIN_SECONDS: the verifier refuses it again without a hash or a charge. Hashed
    each time (and, within a token's refill time, uncharged), one address repeating one
    wrong string would cost an Argon2id check per request for ever; refused cheaply, it
    tells the sender nothing they did not know. Once that time is over, one request takes
    the next try, claimed in the database (its parallel copies, on other workers, would
    otherwise all read the same expired time and all be hashed). A temporary failure is not
    marked: its retries get the temporary failure again, not a refusal."""
    if bucket is None or not digest or bucket[2] != digest or bucket[3] is None:
        return True
    now = clock.now()
    if now - bucket[3] < REFUSED_AGAIN_SECONDS:
        return False
    claimed = AddressThrottle.objects.filter(
        address=address, last_digest=digest, refused_at__lte=now - REFUSED_AGAIN_SECONDS
    ).update(refused_at=now)
    return claimed == 1


def _is_repeat(last_digest: str, updated_at: float, digest: str, now: float) -> bool:
    return bool(digest) and last_digest == digest and now - updated_at < 1 / _refill_rate()


def spend_address_token(address: str, digest: str = "", refused: bool = True) -> int:
    """One failure of the address (a refusal, or with ``refused`` False a temporary failure);
    returns the seconds until it may try again (0: at once). The string (its digest) that
    failed last, again within a token's refill time, is not charged twice: one client's
    connections retrying what they cached cost one token each refill time, not one per try,
    so that whoever else is behind the address (a hospital's NAT) still gets in."""
    now = clock.now()
    refused_at = now if refused else None
    with transaction.atomic():
        bucket, created = AddressThrottle.objects.select_for_update().get_or_create(
            address=address,
            defaults={
                "tokens": settings.THROTTLE_ADDRESS_BURST - 1,
                "updated_at": now,
                "last_digest": digest,
                "refused_at": refused_at,
            },
        )
        if not created:
            if not _is_repeat(bucket.last_digest, bucket.updated_at, digest, now):
                # Floored: an address that kept failing is back in business at most two
                # bursts' refill after the attack stops (a NAT must not stay shut out).
                floor = -settings.THROTTLE_ADDRESS_BURST
                bucket.tokens = max(floor, _tokens_now(bucket, now) - 1)
                bucket.updated_at = now
                bucket.last_digest = digest
            bucket.refused_at = refused_at
            bucket.save(update_fields=["tokens", "updated_at", "last_digest", "refused_at"])
    return address_retry_after((bucket.tokens, bucket.updated_at))


def professional_retry_after(device: Device) -> int:
    """Seconds left of the device's back-off, 0 when it may try."""
    if not device.throttling_failure_count or device.throttling_failure_timestamp is None:
        return 0
    delay = min(
        settings.THROTTLE_PROFESSIONAL_MAX_SECONDS, 2 ** (device.throttling_failure_count - 1)
    )
    elapsed = clock.now() - device.throttling_failure_timestamp.timestamp()
    return max(0, math.ceil(delay - elapsed))


def record_refusal(device: Device | None, digest: str, guess: bool) -> None:
    """A refusal of the device's owner: a ``guess`` (one factor was right) grows the back-off
    and remembers the string, unless it is the string refused last (a mail client retrying
    what it cached, or its parallel connections with one typo: one guess, not five). The
    database decides that, so connections in flight together count once. One UPDATE of the
    same columns either way, so that its cost does not tell a guesser which it was; with no
    device (nobody to check), the same UPDATE, of no row."""
    count, since = F("throttling_failure_count"), F("throttling_failure_timestamp")
    if guess:
        new_string = ~Q(last_failed_digest=digest)
        changes = {
            "throttling_failure_count": Case(
                When(new_string, then=count + 1), default=count, output_field=_field("count")
            ),
            "throttling_failure_timestamp": Case(
                When(new_string, then=Value(clock.utcnow())),
                default=since,
                output_field=_field("timestamp"),
            ),
            "last_failed_digest": Value(digest),
        }
    else:
        changes = {
            "throttling_failure_count": count,
            "throttling_failure_timestamp": since,
            "last_failed_digest": F("last_failed_digest"),
        }
    Device.objects.filter(pk=device.pk if device else None).update(**changes)


def _field(name: str):
    return Device._meta.get_field(f"throttling_failure_{name}")


def forget_refused_strings() -> None:
    """Every address's string refused last is hashed again at its next try: after the
    helpdesk lifts a back-off, the professional's mail client, retrying the string refused
    during it, gets in at once rather than REFUSED_AGAIN_SECONDS later. Which address that
    client is behind is not known here, and the helpdesk acts seldom: all of them."""
    AddressThrottle.objects.filter(refused_at__isnull=False).update(refused_at=None)


def clear_professional_backoff(device: Device) -> None:
    if device.throttling_failure_count:
        Device.objects.filter(pk=device.pk).update(
            throttling_failure_count=0, throttling_failure_timestamp=None, last_failed_digest=""
        )
