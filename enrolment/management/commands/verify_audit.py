"""Check the audit trail: every altered, inserted, copied or missing row, every bad seal, and
anything MACed with a key that is not configured or after its retirement.

Exit status 0 when the trail is intact, 1 when anything was found (each finding on stdout).
"""

from django.core.management.base import BaseCommand, CommandError

from enrolment import audit_chain
from enrolment.models import AuditEvent, AuditSeal


class Command(BaseCommand):
    help = "Verify the audit trail's MACs and seals; report every row or seal not as written."

    def add_arguments(self, parser):
        parser.add_argument(
            "--anchor",
            metavar="SEQ:MAC",
            help="a seal that must be in the chain, as seal_audit printed it (kept elsewhere); "
            "by default the last line of AUDIT_ANCHOR_FILE",
        )

    def handle(self, *args, anchor=None, **options):
        try:
            given = audit_chain.parse_anchor(anchor) if anchor else None
        except ValueError as error:
            raise CommandError(f"--anchor: {error}") from error
        try:
            findings = audit_chain.verify(anchor=given)
        except audit_chain.AnchorFileUnusable as unusable:
            raise CommandError(f"{unusable}; nothing verified") from unusable
        for finding in findings:
            self.stdout.write(f"{finding.problem}\t{finding}")
        if findings:
            raise CommandError(f"the audit trail was tampered with: {len(findings)} finding(s)")
        last = AuditSeal.objects.order_by("-seq").first()
        sealed_to = last.last_id if last else 0
        unsealed = AuditEvent.objects.filter(id__gt=sealed_to).count()
        self.stdout.write(
            f"audit trail intact: {AuditEvent.objects.count()} rows, "
            f"{AuditSeal.objects.count()} seals, {unsealed} rows not sealed yet"
        )
