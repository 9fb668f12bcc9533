"""Seal the audit trail's new rows (run it every minute, e.g. from a systemd timer), and print
the newest seal as an anchor for a log kept elsewhere."""

from django.core.management.base import BaseCommand, CommandError

from enrolment import audit_chain


class Command(BaseCommand):
    help = "Seal the audit rows written since the last seal (enrolment/audit_chain.py)."

    def handle(self, *args, **options):
        try:
            seals = audit_chain.seal()
        except audit_chain.ChainBroken as broken:
            raise CommandError(str(broken)) from broken
        if not seals:
            self.stdout.write("nothing new to seal")
            return
        rows = sum(seal.count for seal in seals)
        self.stdout.write(f"sealed {rows} rows in {len(seals)} seal(s)")
        # The anchor, for a log kept off this database (the journal, a syslog server):
        # verify_audit --anchor finds the newest seals and rows deleted together.
        self.stdout.write(f"anchor {audit_chain.anchor_text(seals[-1])}")
