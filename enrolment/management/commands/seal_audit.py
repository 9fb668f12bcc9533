"""Seal the audit trail's new rows (run it every minute, e.g. from a systemd timer), and print
the newest seal as an anchor for a log kept elsewhere."""

from django.core.management.base import BaseCommand, CommandError

from enrolment import audit_chain


class Command(BaseCommand):
    help = "Seal the audit rows written since the last seal (enrolment/audit_chain.py)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--start-anchor-file",
            action="store_true",
            help="first write the chain's newest seal to an absent or empty AUDIT_ANCHOR_FILE "
            "(a new node, a lost file), after checking the chain with verify_audit --anchor",
        )

    def handle(self, *args, **options):
        try:
            if options["start_anchor_file"] and audit_chain.last_anchor() is None:
                started = audit_chain.start_anchor_file()
                if started is not None:
                    self.stdout.write(f"anchor file started at seal {started.seq}")
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
