"""Export the audit trail, or a part of it, as the auditors' page does but without its row cap:
for a period too long for a web request. Written to stdout as it is read.

Example usage::

    manage.py export_audit --since 2026-01-01 --until 2026-06-30 --format csv > h1.csv
"""

from django.core.management.base import BaseCommand, CommandError

from enrolment import audit, trail_export
from enrolment.models import AuditEvent


class Command(BaseCommand):
    help = "Write the audit rows of a period, professional or mailbox as CSV or JSON."

    def add_arguments(self, parser):
        parser.add_argument("--since", help="first day, YYYY-MM-DD")
        parser.add_argument("--until", help="last day, included, YYYY-MM-DD")
        parser.add_argument("--professional", help="national id, as actor or target")
        parser.add_argument("--mailbox", help="mailbox address")
        parser.add_argument("--format", choices=["csv", "json"], default="csv")

    def handle(self, *args, format, **options):
        fields = {name: options.get(name) or "" for name in trail_export.TrailFilter.base_fields}
        form = trail_export.TrailFilter(fields)
        if not form.is_valid():
            problems = "; ".join(f"--{name}: {' '.join(e)}" for name, e in form.errors.items())
            raise CommandError(problems)
        audit.write(
            actor_kind=AuditEvent.ActorKind.SYSTEM,
            actor="manage.py export_audit",
            action="audit.export",
            outcome="ok",
            details={"format": format, **{k: v for k, v in fields.items() if v}},
        )
        for piece in trail_export.lines(form.selection(), format):
            self.stdout.write(piece, ending="")
