"""Seal the audit trail's new rows (run it every minute, e.g. from a systemd timer)."""

from django.core.management.base import BaseCommand

from enrolment import audit_chain


class Command(BaseCommand):
    help = "Seal the audit rows written since the last seal (enrolment/audit_chain.py)."

    def handle(self, *args, **options):
        seals = audit_chain.seal()
        if seals:
            rows = sum(seal.count for seal in seals)
            self.stdout.write(
                f"sealed {rows} rows in {len(seals)} seal(s), up to seal {seals[-1].seq}"
            )
        else:
            self.stdout.write("nothing new to seal")
