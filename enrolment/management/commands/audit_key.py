"""The audit trail's MAC keys (enrolment/audit_keys.py): status, a new secret, retirement.

Example usage::

    manage.py audit_key status          # the active key; rows and seals per key; retirements
    manage.py audit_key new             # a random secret for a new key of AUDIT_MAC_KEYRING
    manage.py audit_key retire legacy   # once every node MACs with the new key

Rotation: on every node, add the new key to AUDIT_MAC_KEYRING as its active key (the old one
stays configured: AUDIT_MAC_KEY, or a key of the keyring) and restart. Then ``retire`` the old
one: it checks the trail, seals it, MACs the old key's purge marks again with the new key, and
prints the entry for the keyring's "retired". Once that is on every node, verify_audit reports
anything the old key MACs beyond that seal.
"""

import json
import secrets
from datetime import timedelta

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
        retire = sub.add_parser(
            "retire", help="this key verifies up to the newest seal, and nothing after it"
        )
        retire.add_argument("key_id")
        retire.add_argument(
            "--force",
            action="store_true",
            help="even if rows, seals or purge marks were MACed with it just now",
        )

    def handle(self, *args, action, **options):
        getattr(self, f"handle_{action}")(**options)

    def handle_status(self, **options):
        keys = audit_keys.mac_keys()
        rows = _count_by_key(AuditEvent)
        seals = _count_by_key(AuditSeal)
        self.stdout.write(f"active key: {keys.active}")
        self.stdout.write("key\trows\tseals\tretired")
        for key_id in sorted(set(keys.secrets) | set(rows) | set(seals)):
            state = f"up to seal {keys.retired[key_id][0]}" if key_id in keys.retired else "-"
            if key_id not in keys.secrets:
                state += " (NOT CONFIGURED: verify_audit cannot check its MACs)"
            self.stdout.write(f"{key_id}\t{rows.get(key_id, 0)}\t{seals.get(key_id, 0)}\t{state}")

    def handle_new(self, **options):
        self.stdout.write(secrets.token_urlsafe(32))

    def handle_retire(self, key_id, force, **options):
        self._refuse_to_retire(key_id, force)
        try:
            audit_chain.seal()
            marks = audit_chain.mac_purge_marks_again(key_id)
        except (audit_chain.ChainBroken, audit_chain.PurgeMarkForged) as broken:
            raise CommandError(f"{broken}; not retired") from broken
        _refuse_unless_verified("after sealing")  # nothing slipped in meanwhile
        newest = AuditSeal.objects.order_by("-seq").first()
        if newest is None:
            raise CommandError("nothing is sealed yet: run seal_audit, then retire again")
        anchor = audit_chain.anchor_text(newest)
        audit.write(
            actor_kind=AuditEvent.ActorKind.SYSTEM,
            actor="manage.py audit_key",
            action="audit.retire_mac_key",
            target=key_id,
            outcome="ok",
            details={"seal": anchor, "purge_marks_maced_again": [seal.seq for seal in marks]},
        )
        self._tell(key_id, anchor, newest.seq, marks)

    def _refuse_to_retire(self, key_id: str, force: bool) -> None:
        keys = audit_keys.mac_keys()
        if key_id not in keys.secrets:
            raise CommandError(f"no key {key_id!r} is configured")
        if key_id == keys.active:
            raise CommandError(f"{key_id!r} is the active key: activate another one first")
        if key_id in keys.retired:
            raise CommandError(f"{key_id!r} is retired already")
        if _still_in_use(key_id) and not force:
            raise CommandError(
                f"rows, seals or purge marks of the last {STILL_IN_USE.seconds // 60} minutes "
                f"are MACed with {key_id!r}: a node, sealer or purger still uses it (give it "
                "the new keyring and wait), or --force: verify_audit will then report what it "
                "MACs after the retirement, for good"
            )
        _refuse_unless_verified("before")

    def _tell(self, key_id: str, anchor: str, seq: int, marks: list) -> None:
        active = audit_keys.mac_keys().active
        for seal in marks:  # to compare with the purges' own audit rows and logs
            self.stdout.write(
                f"purge mark of seal {seal.seq} (rows {seal.first_id}-{seal.last_id}, purged "
                f"{seal.purged_at:%Y-%m-%d %H:%M}) MACed again with {active!r}"
            )
        retired = json.dumps({key_id: anchor})
        self.stdout.write(
            f"{key_id!r} verified up to seal {seq}.\nOn every node, add to AUDIT_MAC_KEYRING "
            f'(keeping the key itself): "retired": {retired}\nFrom then on, verify_audit '
            f"reports anything {key_id!r} MACs beyond that seal."
        )


def _refuse_unless_verified(when: str) -> None:
    findings = audit_chain.verify()
    if findings:
        raise CommandError(
            f"the trail does not verify {when} ({len(findings)} finding(s), see verify_audit):"
            " a key is not retired over a trail that may already be forged"
        )


def _still_in_use(key_id: str) -> bool:
    """Rows, seals or purge marks MACed with it just now: a node still has it active."""
    recently = timezone.now() - STILL_IN_USE
    purge_keys = ["", key_id] if key_id == audit_keys.LEGACY else [key_id]
    return (
        AuditEvent.objects.filter(at__gte=recently, mac_key=key_id).exists()
        or AuditSeal.objects.filter(sealed_at__gte=recently, mac_key=key_id).exists()
        or AuditSeal.objects.filter(purged_at__gte=recently, purge_mac_key__in=purge_keys).exists()
    )


def _count_by_key(model) -> dict[str, int]:
    counted = model.objects.values("mac_key").annotate(n=Count("id")).order_by()
    return {entry["mac_key"]: entry["n"] for entry in counted}
