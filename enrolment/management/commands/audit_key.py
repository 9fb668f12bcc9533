"""The audit trail's MAC keys (enrolment/audit_keys.py): status, a new secret, retirement.

Example usage::

    manage.py audit_key status          # the active key; rows and seals per key; retirements
    manage.py audit_key new             # a random secret for a new key of AUDIT_MAC_KEYRING
    manage.py audit_key retire legacy   # once every node MACs with the new key

Rotation: on every node, add the new key to AUDIT_MAC_KEYRING as its active key (the old one
stays configured: AUDIT_MAC_KEY, or a key of the keyring) and restart; then ``retire`` the old
one. That writes the retirement into the trail and seals it under the new key at once: from
then on verify_audit reports anything MACed with the old key.
"""

import secrets
import time
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count
from django.utils import timezone

from enrolment import audit, audit_chain, audit_keys
from enrolment.models import AuditEvent, AuditSeal

STILL_IN_USE = timedelta(minutes=5)  # a node MACing with the key this recently still has it


class Command(BaseCommand):
    help = "Status of the audit trail's MAC keys, a new key's secret, or a key's retirement."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("status", help="the active key, and what each key MACed")
        sub.add_parser("new", help="print a random secret for AUDIT_MAC_KEYRING")
        retire = sub.add_parser("retire", help="nothing MACed with this key is valid any more")
        retire.add_argument("key_id")
        retire.add_argument(
            "--force", action="store_true", help="even if rows were MACed with it just now"
        )

    def handle(self, *args, action, **options):
        getattr(self, f"handle_{action}")(**options)

    def handle_status(self, **options):
        keys = audit_keys.mac_keys()
        rows = _count_by_key(AuditEvent)
        seals = _count_by_key(AuditSeal)
        retired = audit_chain.retirements()
        self.stdout.write(f"active key: {keys.active}")
        self.stdout.write("key\trows\tseals\tretired")
        for key_id in sorted(set(keys.secrets) | set(rows) | set(seals)):
            state = f"by row {retired[key_id]}" if key_id in retired else "-"
            if key_id not in keys.secrets:
                state += " (NOT CONFIGURED: verify_audit cannot check its MACs)"
            self.stdout.write(f"{key_id}\t{rows.get(key_id, 0)}\t{seals.get(key_id, 0)}\t{state}")

    def handle_new(self, **options):
        self.stdout.write(secrets.token_urlsafe(32))

    def handle_retire(self, key_id, force, **options):
        keys = audit_keys.mac_keys()
        if key_id not in keys.secrets:
            raise CommandError(f"no key {key_id!r} is configured")
        if key_id == keys.active:
            raise CommandError(f"{key_id!r} is the active key: activate another one first")
        if key_id in audit_chain.retirements():
            raise CommandError(f"{key_id!r} is retired already")
        recent = AuditEvent.objects.filter(at__gte=timezone.now() - STILL_IN_USE, mac_key=key_id)
        if recent.exists() and not force:
            raise CommandError(
                f"rows of the last {STILL_IN_USE.seconds // 60} minutes are MACed with "
                f"{key_id!r}: a node still uses it (give it the new keyring), or --force"
            )
        row = audit.write(
            actor_kind=AuditEvent.ActorKind.SYSTEM,
            actor="manage.py audit_key",
            action=audit_keys.RETIRE_ACTION,
            target=key_id,
            outcome="ok",
        )
        # Sealed now, under the new key: the retirement cannot be taken back unseen.
        delay = settings.AUDIT_SEAL_DELAY_SECONDS
        if delay:
            self.stdout.write(f"retired by row {row.id}; sealing it in {delay + 1} s")
            time.sleep(delay + 1)
        try:
            seals = audit_chain.seal()
        except audit_chain.ChainBroken as broken:
            raise CommandError(str(broken)) from broken
        newest = AuditSeal.objects.order_by("-seq").first()
        if newest is None or newest.last_id < row.id:
            raise CommandError(f"row {row.id} is not sealed yet: run seal_audit")
        self.stdout.write(f"{key_id!r} retired by row {row.id}, sealed in seal {newest.seq}")
        if seals:
            self.stdout.write(f"anchor {audit_chain.anchor_text(seals[-1])}")


def _count_by_key(model) -> dict[str, int]:
    counted = model.objects.values("mac_key").annotate(n=Count("id")).order_by()
    return {entry["mac_key"]: entry["n"] for entry in counted}
