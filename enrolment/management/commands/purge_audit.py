"""Remove audit rows older than the retention period (AUDIT_RETENTION_DAYS, 183 by default),
whole sealed ranges at a time, so that the trail still verifies afterwards."""

from django.core.management.base import BaseCommand, CommandError

from enrolment import audit, audit_chain
from enrolment.models import AuditEvent


class Command(BaseCommand):
    help = "Purge the audit rows older than the retention period, keeping the chain verifiable."

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, help="retention in days (default: the setting)")

    def handle(self, *args, days=None, **options):
        cutoff = audit_chain.retention_cutoff(days=days)
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
