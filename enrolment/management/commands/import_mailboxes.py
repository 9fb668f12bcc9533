"""Create or update mailboxes and their members from a CSV or JSON file.

Example usage::

    manage.py import_mailboxes mailboxes.csv
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, no_translations
from django.db import transaction

from enrolment import audit
from enrolment.importing import ImportFileError, import_rows, read_rows
from enrolment.models import AuditEvent


class Command(BaseCommand):
    help = "Import mailboxes and memberships (CSV or .json); all of the file or nothing."

    def add_arguments(self, parser):
        parser.add_argument(
            "file", help="CSV with columns address,kind,national_id[,...], or .json"
        )

    @no_translations  # operator messages in one language, like the rest of the commands
    def handle(self, *args, file, **options):
        path = Path(file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {path}: {exc}") from None
        try:
            # The import and its audit row commit together, or neither.
            with transaction.atomic():
                result = import_rows(read_rows(text, path.name))
                if result.changed_anything:  # who may log in to which mailbox changed
                    self._audit(path, "ok", created=result.created, updated=result.updated)
        except ImportFileError as exc:
            self._audit(path, "reject", problems=len(exc.problems))
            raise CommandError(f"{path}: nothing imported.\n{exc}") from None
        verdict = "" if result.changed_anything else " (nothing to change)"
        self.stdout.write(f"{path}: {result.summary()}{verdict}")

    def _audit(self, path: Path, outcome: str, **details):
        audit.write(
            actor_kind=AuditEvent.ActorKind.SYSTEM,
            actor="manage.py import_mailboxes",
            action="mailboxes.import",
            target=path.name[:254],
            outcome=outcome,
            details={
                name: dict(value) if isinstance(value, dict) else value
                for name, value in details.items()
            },
        )
