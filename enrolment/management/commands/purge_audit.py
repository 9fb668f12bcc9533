"""Remove audit rows older than the retention period (AUDIT_RETENTION_DAYS, 183 by default),
whole sealed ranges at a time, so that the trail still verifies afterwards."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from enrolment import audit, audit_chain
from enrolment.models import AuditEvent

MAX_DAYS = 36_500


class Command(BaseCommand):
    help = "Purge the audit rows older than the retention period, keeping the chain verifiable."

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, help="retention in days (default: the setting)")
        parser.add_argument(
            "--force", action="store_true", help="keep fewer days than AUDIT_RETENTION_DAYS"
        )

    def handle(self, *args, days=None, force=False, **options):
        cutoff = audit_chain.retention_cutoff(days=self._checked(days, force))
        try:
            seals, rows = audit_chain.purge(cutoff)
        except audit_chain.ChainBroken as broken:
            raise CommandError(f"{broken}; nothing purged") from broken
        audit.write(
            actor_kind=AuditEvent.ActorKind.SYSTEM,
            actor="manage.py purge_audit",
            action="audit.purge",
            outcome="ok",
            details={"before": cutoff.isoformat(), "seals": seals, "rows": rows},
        )
        self.stdout.write(
            f"purged {rows} rows ({seals} sealed ranges) older than {cutoff:%Y-%m-%d}"
        )

    @staticmethod
    def _checked(days: int | None, force: bool) -> int | None:
        """A typo here deletes the trail: a day at least, and the policy unless forced."""
        if days is None:
            return None
        if not 1 <= days <= MAX_DAYS:
            raise CommandError(f"--days must be between 1 and {MAX_DAYS}; nothing purged")
        if days < settings.AUDIT_RETENTION_DAYS and not force:
            raise CommandError(
                f"--days {days} keeps less than AUDIT_RETENTION_DAYS "
                f"({settings.AUDIT_RETENTION_DAYS}); add --force if that is meant; nothing purged"
            )
        return days
