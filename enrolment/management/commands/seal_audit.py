"""Seal the audit trail's new rows (run it every minute, e.g. from a systemd timer), and print
the newest seal as an anchor for a log kept elsewhere."""

from django.core.management.base import BaseCommand

from enrolment import audit_chain


class Command(BaseCommand):
    help = "Seal the audit rows written since the last seal (enrolment/audit_chain.py)."

    def handle(self, *args, **options):
        seals = audit_chain.seal()
        if not seals:
            self.stdout.write("nothing new to seal")
            return
        rows = sum(seal.count for seal in seals)
        self.stdout.write(f"sealed {rows} rows in {len(seals)} seal(s)")
        # The anchor, for a log kept off this database (the journal, a syslog server):
        # verify_audit --anchor finds the newest seals and rows deleted together.
        self.stdout.write(f"anchor {seals[-1].seq}:{seals[-1].mac}")
