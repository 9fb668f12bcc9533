"""What the operator's helpdesk sees of a professional and may do for them (DESIGN §8).

No seed, code or password is ever read here: a device is shown by its state, a session by
its address and dates. Each action is audited with the staff member's identity and reason,
and the professional is told by email.
"""

from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from enrolment import audit, notify, throttle
from enrolment.models import AuditEvent, Device, Mailbox, MailSession, Membership, Professional

SEARCH_LIMIT = 50


@dataclass(frozen=True)
class Found:
    professionals: list
    more: bool  # more matched than are shown: the helpdesk should narrow the search


def search(query: str) -> Found:
    """Professionals by national id or mailbox address (exact, by their indexes, first), else
    those whose name or mailbox address contains every word of the query."""
    query = " ".join(query.split())[:254]
    if len(query) < 2:
        return Found([], False)
    exact = _exactly(query)
    if exact:
        return _first(Professional.objects.filter(pk__in=exact))
    every_word = Q()
    for word in query.split():
        every_word &= (
            Q(family_name__icontains=word)
            | Q(given_name__icontains=word)
            | Q(mailboxes__address__icontains=word)
        )
    return _first(Professional.objects.filter(every_word))


def _exactly(query: str) -> set[int]:
    """The professional of that national id, and the members of that mailbox: two lookups by
    their unique indexes (one query with an OR across the join would read whole tables)."""
    by_id = Professional.objects.filter(national_id=query).values_list("pk", flat=True)
    members = Membership.objects.filter(mailbox__address=Mailbox.normalise_address(query))
    return set(by_id) | set(members.values_list("professional_id", flat=True))


def _first(professionals) -> Found:
    rows = list(
        professionals.distinct()
        .prefetch_related("mailboxes")
        .order_by("family_name", "given_name", "national_id")[: SEARCH_LIMIT + 1]
    )
    return Found(rows[:SEARCH_LIMIT], len(rows) > SEARCH_LIMIT)


@dataclass(frozen=True)
class Overview:
    professional: Professional
    mailboxes: list
    device: Device | None
    pending: Device | None
    backoff_seconds: int
    failures: int
    sessions: list
    logins: list  # the audit's latest mail logins
    history: list  # the audit's latest helpdesk actions on this professional


def overview(professional: Professional) -> Overview:
    user = professional.user
    devices = Device.objects.filter(user=user) if user else Device.objects.none()
    device = devices.filter(confirmed=True).first()
    now = timezone.now()
    sessions = MailSession.objects.filter(
        professional=professional, revoked_at__isnull=True, expires_at__gt=now
    ).select_related("mailbox")
    nid = professional.national_id
    return Overview(
        professional=professional,
        mailboxes=list(professional.mailboxes.order_by("address")),
        device=device,
        pending=devices.filter(confirmed=False, pending_until__gt=now).first(),
        backoff_seconds=throttle.professional_retry_after(device) if device else 0,
        failures=device.throttling_failure_count if device else 0,
        sessions=list(sessions.order_by("-last_seen_at")),
        logins=list(AuditEvent.objects.filter(action="mail.login", actor=nid).order_by("-id")[:10]),
        history=list(
            AuditEvent.objects.filter(action__startswith="helpdesk.", target=nid).order_by("-id")[
                :10
            ]
        ),
    )


# Actions. Each returns a short summary for the audit's details.


def reset_device(professional: Professional) -> dict:
    """The phone is lost: its device goes, with its mail sessions (models.py), and enrolling
    a new one needs a PSC login after now."""
    removed = 0
    if professional.user:
        _, per_model = Device.objects.filter(user=professional.user).delete()
        removed = per_model.get(Device._meta.label, 0)
    professional.access_reset_at = timezone.now()
    professional.save(update_fields=["access_reset_at"])
    return {"devices_removed": removed}


def clear_backoff(professional: Professional) -> dict:
    devices = Device.objects.filter(user=professional.user, confirmed=True)
    for device in devices:
        throttle.clear_professional_backoff(device)
    throttle.forget_refused_strings()
    return {"devices": len(devices)}


def end_sessions(professional: Professional) -> dict:
    return {"sessions_ended": professional.end_mail_sessions("ended_by_helpdesk")}


@dataclass(frozen=True)
class Action:
    slug: str
    title: str
    explanation: str
    perform: object
    email: str  # templates/email/<email>.txt


ACTIONS = {
    action.slug: action
    for action in [
        Action(
            "reset-device",
            _("Reset the device"),
            _(
                "The professional's phone stops working at once for mail, with every mail "
                "session. They enrol a new phone after logging in again with Pro Santé Connect."
            ),
            reset_device,
            "helpdesk_reset_device",
        ),
        Action(
            "clear-backoff",
            _("Clear the back-off"),
            _("Wrong codes slowed this professional's logins down; they may try again now."),
            clear_backoff,
            "helpdesk_clear_backoff",
        ),
        Action(
            "end-sessions",
            _("End all mail sessions"),
            _(
                "Every mail client of this professional must log in again with the password "
                "and a new code."
            ),
            end_sessions,
            "helpdesk_end_sessions",
        ),
    ]
}


def perform(request, action: Action, professional: Professional, reason: str) -> bool:
    """Do it, audit it with who and why, then tell the professional. False if the email
    could not be sent (the action stands)."""
    with transaction.atomic():
        summary = action.perform(professional)
        audit.record(
            request,
            f"helpdesk.{action.slug}",
            outcome="ok",
            target=professional.national_id,
            details={"reason": reason, **summary},
        )
    return notify.notify(professional, action.email)
