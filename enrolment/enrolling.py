"""Enrolling a phone: a pending device, its otpauth:// URI, and its confirmation.

The pending seed is a Device row like any other, encrypted at rest, with confirmed=False and a
deadline; it never travels in a cookie. Only a confirmed code turns it into the active device,
and only then is the previous device (a lost phone) removed, with its mail sessions.
"""

import enum
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote, urlencode

import qrcode
import qrcode.image.svg
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from enrolment import clock, seeds, totp
from enrolment.models import Device, Mailbox, Professional


class Outcome(enum.Enum):
    CONFIRMED = "confirmed"
    ALREADY_CONFIRMED = "already_confirmed"  # the same form sent twice: nothing more to do
    WRONG_CODE = "wrong_code"
    THROTTLED = "throttled"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Confirmation:
    outcome: Outcome
    clock_offset_seconds: int = 0  # how far the phone's clock is from ours (+ ahead)
    replaced_previous: bool = False
    retry_after: int = 0


def start_enrolment(user) -> Device:
    """A new pending device with a fresh seed; any older pending one is dropped."""
    with transaction.atomic():
        Device.objects.filter(user=user, confirmed=False).delete()
        device = Device(
            user=user,
            name="FreeOTP",
            confirmed=False,
            pending_until=timezone.now() + timedelta(seconds=settings.ENROLMENT_PENDING_SECONDS),
        )
        device.set_seed(seeds.new_seed())
        device.save()
    return device


def pending_device(user) -> Device | None:
    return Device.objects.filter(
        user=user, confirmed=False, pending_until__gt=timezone.now()
    ).first()


def start_enrolment_in(session, user, key: str) -> Device:
    """start_enrolment(), and the browser session that asked is the one it belongs to."""
    device = start_enrolment(user)
    session[key] = device.pk
    return device


def pending_device_in(session, user, key: str) -> Device | None:
    """The user's pending device, if this browser session started it: the seed is shown to,
    and confirmed from, that session only (another session of the same user, a shared
    computer's or a stolen cookie's, sees no seed)."""
    device = pending_device(user)
    if device is not None and session.get(key) == device.pk:
        return device
    return None


def account_label(professional: Professional) -> str:
    """The account FreeOTP shows under the issuer: the personal mailbox, else the first one."""
    mailboxes = professional.mailboxes.filter(is_active=True).order_by("address")
    personal = mailboxes.filter(kind=Mailbox.Kind.PERSONAL).first()
    mailbox = personal or mailboxes.first()
    return mailbox.address if mailbox else professional.national_id


def issuer() -> str:
    """The issuer FreeOTP shows, in the QR code and for a key typed by hand alike. No colon:
    FreeOTP-Android rejects a label with two."""
    return settings.TOTP_ISSUER.replace(":", "").strip()


def otpauth_uri(device: Device, account: str, seed: bytes) -> str:
    """The Key URI that FreeOTP (Android and iOS) and other apps read. FreeOTP takes the issuer
    from the label's prefix and iOS ignores the parameter, so both carry the same name."""
    issuer_name = issuer()
    account = account.replace(":", "")
    label = quote(f"{issuer_name}:{account}", safe=":")
    query = urlencode(
        {
            "secret": totp.base32_secret(seed),
            "issuer": issuer_name,
            "algorithm": device.algorithm.upper(),
            "digits": device.digits,
            "period": device.period,
        },
        quote_via=quote,
    )
    return f"otpauth://totp/{label}?{query}"


def grouped(secret: str, size: int = 4) -> str:
    """ABCD EFGH …: the key as a person types it."""
    return " ".join(secret[i : i + size] for i in range(0, len(secret), size))


def confirm_enrolment(device: Device, code: str, unix_time: float | None = None) -> Confirmation:
    """Accept the first code from the phone, within a wide window to learn the clock drift.

    Wrong codes back off (django-otp's throttling on the pending device); an expired enrolment
    is dropped. The row lock makes two concurrent confirmations take turns.
    """
    now = clock.now() if unix_time is None else unix_time
    with transaction.atomic():
        device = Device.objects.select_for_update().filter(pk=device.pk).first()
        if device is None:
            return Confirmation(Outcome.EXPIRED)
        if device.confirmed:
            # The same form sent twice (a double click): the first request confirmed it.
            return Confirmation(Outcome.ALREADY_CONFIRMED)
        if device.pending_until is None or device.pending_until <= timezone.now():
            device.delete()
            return Confirmation(Outcome.EXPIRED)
        allowed, info = device.verify_is_allowed()
        if not allowed:
            return Confirmation(Outcome.THROTTLED, retry_after=_seconds_until(info))
        step = device.match_step(code, now, tolerance=settings.ENROLMENT_CONFIRM_WINDOW_STEPS)
        if step is None:
            device.throttle_increment()
            return Confirmation(Outcome.WRONG_CODE)
        previous = Device.objects.filter(user=device.user, confirmed=True).exclude(pk=device.pk)
        replaced = previous.exists()
        previous.delete()  # the lost phone stops working now; its mail sessions go with it
        offset_steps = step - totp.time_step(now, device.period)
        device.confirmed = True
        device.confirmed_at = timezone.now()
        device.pending_until = None
        device.drift = offset_steps
        device.last_t = step  # this code is spent
        device.throttle_reset(commit=False)
        device.save()
    return Confirmation(
        Outcome.CONFIRMED,
        clock_offset_seconds=offset_steps * device.period,
        replaced_previous=replaced,
    )


def _seconds_until(info) -> int:
    locked_until = (info or {}).get("locked_until")
    if locked_until is None:
        return 1
    return max(1, int((locked_until - timezone.now()).total_seconds()) + 1)


def qr_svg(uri: str) -> str:
    """The URI as an inline SVG QR code: no image request to cache, no CSP exception."""
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, border=4)
    return image.to_string(encoding="unicode")
