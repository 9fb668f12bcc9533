"""Delete what the mail logins leave behind and no longer need (run daily, beside
purge_audit): mail sessions that ended more than MAIL_SESSION_RETENTION_DAYS ago, and the
address throttle buckets that have refilled (a full bucket is the same as none).

Every login writes a session row and every failing address a bucket: without this, both
tables only grow.
"""

from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db.models import F, Q

from enrolment import audit, clock
from enrolment.models import AddressThrottle, AuditEvent, MailSession


class Command(BaseCommand):
    help = "Delete mail sessions ended long ago and refilled throttle buckets."

    def handle(self, *args, **options):
        sessions = ended_sessions().delete()[0]
        buckets = refilled_buckets().delete()[0]
        audit.write(
            actor_kind=AuditEvent.ActorKind.SYSTEM,
            actor="manage.py purge_mail_state",
            action="mail_state.purge",
            outcome="ok",
            details={"sessions": sessions, "buckets": buckets},
        )
        self.stdout.write(f"deleted {sessions} ended mail sessions, {buckets} refilled buckets")


def ended_sessions():
    """Revoked, expired or idle since before the retention period, and not retried since:
    a client still retrying the string is recognised by its row (never counted as a guess;
    two such clients alternating would otherwise back their owner off)."""
    cutoff = clock.utcnow() - timedelta(days=settings.MAIL_SESSION_RETENTION_DAYS)
    idle = timedelta(seconds=settings.MAIL_SESSION_IDLE_SECONDS)
    ended = Q(revoked_at__lt=cutoff) | Q(expires_at__lt=cutoff) | Q(last_seen_at__lt=cutoff - idle)
    not_retried = Q(last_refused_at__isnull=True) | Q(last_refused_at__lt=cutoff)
    return MailSession.objects.filter(ended & not_retried)


def refilled_buckets():
    """Buckets whose refill since their last failure has brought them back to the burst."""
    rate = settings.THROTTLE_ADDRESS_REFILL_PER_MINUTE / 60.0
    full_at = F("updated_at") + (settings.THROTTLE_ADDRESS_BURST - F("tokens")) / rate
    return AddressThrottle.objects.alias(full_at=full_at).filter(full_at__lte=clock.now())
