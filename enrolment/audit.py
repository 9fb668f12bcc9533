"""Writing the audit trail. Every caller passes what happened; nothing secret goes in details."""

from django.utils import timezone

from enrolment.models import AuditEvent


def actor_of(request) -> tuple[str, str]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return AuditEvent.ActorKind.PROFESSIONAL, ""
    professional = getattr(user, "professional", None)
    if professional is not None:
        return AuditEvent.ActorKind.PROFESSIONAL, professional.national_id
    return AuditEvent.ActorKind.STAFF, user.get_username()


def record(request, action: str, *, outcome: str = "", target: str = "", details=None):
    """An action taken through the site, by whoever the request belongs to."""
    actor_kind, actor = actor_of(request)
    return write(
        actor_kind=actor_kind,
        actor=actor,
        action=action,
        target=target,
        outcome=outcome,
        client_ip=request.META.get("REMOTE_ADDR") or None,
        details=details or {},
    )


def write(*, actor_kind, actor, action, target="", outcome="", client_ip=None, details=None):
    return insert(
        event(
            actor_kind=actor_kind,
            actor=actor,
            action=action,
            target=target,
            outcome=outcome,
            client_ip=client_ip,
            details=details,
        )
    )


def event(*, actor_kind, actor, action, target="", outcome="", client_ip=None, details=None):
    """An audit row, not yet written (the verifier writes a new login's in its own SQL)."""
    return AuditEvent(
        at=timezone.now(),
        actor_kind=actor_kind,
        actor=actor,
        action=action,
        target=target,
        outcome=outcome,
        client_ip=client_ip,
        details=details or {},
    )


def insert(event: AuditEvent) -> AuditEvent:
    # bulk_create: a plain INSERT (rows are only ever inserted), without save()'s machinery,
    # since every mail login writes one.
    AuditEvent.objects.bulk_create([event])
    return event
