"""Keys of the seed keyring: make, activate, rotate to, report and drop.

Example usage::

    manage.py seed_key new --file /etc/mss-totp/keyring.json          # copy it to every node
    manage.py seed_key activate KEY_ID --file /etc/mss-totp/keyring.json  # copy it again
    manage.py seed_key rotate
    manage.py seed_key status
    manage.py seed_key drop 2026-06-01-3fa2 --file /etc/mss-totp/keyring.json
"""

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from enrolment import audit, seeds
from enrolment.models import AuditEvent, Device, SeedKey
from enrolment.rotation import rotate_to_active_key


class Command(BaseCommand):
    help = "Manage the keys that encrypt TOTP seeds at rest."
    # This command is how a missing keyring gets made, so it must run without one.
    requires_system_checks = []

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        new = sub.add_parser("new", help="add a fresh random key (creates the file if needed)")
        self._add_file_argument(new)
        new.add_argument("--id", dest="key_id", help="key id (default: today's date + random)")
        new.add_argument("--activate", action="store_true", help="make it the key for writing")
        activate = sub.add_parser("activate", help="make an existing key the key for writing")
        activate.add_argument("key_id")
        self._add_file_argument(activate)
        rotate = sub.add_parser("rotate", help="re-encrypt every seed under the active key")
        rotate.add_argument("--batch-size", type=int, default=500)
        sub.add_parser("status", help="how many seeds each key encrypts")
        drop = sub.add_parser("drop", help="remove a key that no seed needs any more")
        drop.add_argument("key_id")
        self._add_file_argument(drop)

    def _add_file_argument(self, parser):
        parser.add_argument(
            "--file",
            default=settings.SEED_KEYRING_FILE or None,
            help="the keyring file (default: SEED_KEYRING_FILE)",
        )

    def handle(self, *args, action, **options):
        try:
            getattr(self, f"handle_{action}")(**options)
        except seeds.KeyringError as exc:
            raise CommandError(str(exc)) from None

    def handle_new(self, file, key_id, activate, **options):
        path = self._require_file(file)
        key_id = key_id or f"{timezone.now():%Y-%m-%d}-{os.urandom(2).hex()}"
        seeds.check_key_id(key_id, "--id")
        if _has_table(SeedKey) and SeedKey.objects.filter(key_id=key_id).exists():
            raise CommandError(f"key id {key_id!r} was used before: choose another")
        with self._editing(path):
            if path.exists():
                keyring = self._read(path).with_key(key_id, seeds.new_key(), activate)
            else:
                keyring = seeds.Keyring(active_id=key_id, keys={key_id: seeds.new_key()})
            self._write(path, keyring)
        state = "active" if keyring.active_id == key_id else "not active yet"
        audited = _audit("seed_key.new", key_id, {"active": keyring.active_id == key_id})
        self.stdout.write(f"Added key {key_id} to {path} ({state}).")
        if not audited:
            self.stdout.write("Not in the audit trail: the database is not migrated yet.")

    def handle_activate(self, key_id, file, **options):
        path = self._require_file(file)
        if _has_table(SeedKey) and SeedKey.objects.filter(key_id=key_id, dropped_at__isnull=False):
            raise CommandError(f"key {key_id} was dropped: it seals nothing any more")
        with self._editing(path):
            self._write(path, self._read(path).activated(key_id))
        _audit("seed_key.activate", key_id)
        self.stdout.write(f"Key {key_id} is now active. Run 'seed_key rotate' to move old seeds.")

    def handle_rotate(self, batch_size, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        keyring = seeds.load_keyring()
        self.stdout.write(f"Using the keyring of {_site_keyring()}.")
        result = rotate_to_active_key(keyring, batch_size)
        _audit(
            "seed_key.rotate",
            keyring.active_id,
            {"rotated": result.rotated, "unreadable": result.unreadable},
            outcome="partial" if result.unreadable else "ok",
        )
        self.stdout.write(
            f"Rotated {result.rotated} seed(s) to key {keyring.active_id}; "
            f"{result.changed_meanwhile} re-enrolled meanwhile; {result.unreadable} unreadable."
        )
        if result.unreadable:
            raise CommandError(
                f"{result.unreadable} seed(s) could not be opened with this keyring (see the log)"
            )

    def handle_status(self, **options):
        keyring = seeds.load_keyring()
        counts = dict(
            Device.objects.values_list("key_id").annotate(n=Count("id")).values_list("key_id", "n")
        )
        for key_id in sorted(set(keyring.keys) | set(counts)):
            notes = []
            if key_id == keyring.active_id:
                notes.append("active")
            if key_id not in keyring.keys:
                notes.append("MISSING FROM KEYRING")
            suffix = f" ({', '.join(notes)})" if notes else ""
            self.stdout.write(f"{key_id}: {counts.get(key_id, 0)} seed(s){suffix}")

    def handle_drop(self, key_id, file, **options):
        path = self._require_file(file)
        with self._editing(path):
            keyring = self._read(path)
            remaining = keyring.without_key(key_id)
            _mark_dropped(key_id, keyring.check_value(key_id))
            try:
                self._write(path, remaining)
            except OSError as exc:
                raise CommandError(
                    f"key {key_id} is marked dropped, but {path} could not be written "
                    f"({exc.strerror}): run this drop again once it can be"
                ) from None
        _audit("seed_key.drop", key_id)
        self.stdout.write(f"Dropped key {key_id} from {path}.")

    def _require_file(self, file) -> Path:
        if not file:
            raise CommandError("name the keyring file with --file or SEED_KEYRING_FILE")
        path = Path(file)
        if not _is_the_sites_file(path):
            # Allowed (a keyring made for another node, a file made before the settings
            # name it), but this node would go on with what it has: say so.
            self.stderr.write(
                f"Note: this node reads the keyring of {_site_keyring()}, not {path}: "
                "the change reaches it only once that file is where its settings point."
            )
        return path

    @contextlib.contextmanager
    def _editing(self, path: Path):
        """One edit at a time: two commands reading the file at once and writing it back each
        would keep only the second's change (a key just made active, lost)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = path.parent / f".{path.name}.lock"
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _read(self, path: Path) -> seeds.Keyring:
        try:
            return seeds.Keyring.parse(path.read_text(encoding="utf-8"), str(path))
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None

    def _write(self, path: Path, keyring: seeds.Keyring) -> None:
        # Written whole and renamed into place: a crash never leaves half a keyring. A new
        # file is its owner's only; a file rewritten keeps its owner, group and mode (the
        # README's root:mss-totp 0640, so the portal still reads it), never world-readable.
        # Read back first: never write a file that the site would then refuse to load.
        seeds.Keyring.parse(keyring.to_json(), str(path))
        previous = path.stat() if path.exists() else None
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".keyring-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(keyring.to_json())
            os.chmod(tmp, previous.st_mode & 0o640 if previous else 0o600)
            if previous and (previous.st_uid, previous.st_gid) != (os.geteuid(), os.getegid()):
                os.chown(tmp, previous.st_uid, previous.st_gid)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _mark_dropped(key_id: str, check_value: str) -> None:
    """Mark the key dropped in the database, unless seeds still need it. Alone among the
    sealers (SeedKey.take_turn): a seal in flight on another node commits first and is
    counted; a node whose keyring still seals with this key is refused from now on, where
    its seeds would have been unreadable once the new file reached it."""
    with transaction.atomic():
        SeedKey.take_turn(alone=True)
        dropped = {"dropped_at": timezone.now()}
        SeedKey.objects.update_or_create(
            key_id=key_id, defaults=dropped, create_defaults={"check_value": check_value, **dropped}
        )
        still_needed = Device.objects.filter(key_id=key_id).count()
        if still_needed:
            raise CommandError(
                f"Refusing to drop key {key_id}: {still_needed} seed(s) still need it. "
                "Run 'manage.py seed_key rotate' first (on every node's current keyring)."
            )


def _has_table(model) -> bool:
    """Whether the database has the model's table yet: the first key is made before the
    database is (deploy/demo/run.sh), and a node may run this before migrate."""
    return model._meta.db_table in connection.introspection.table_names()


def _is_the_sites_file(path: Path) -> bool:
    site_file = settings.SEED_KEYRING_FILE
    if settings.SEED_KEYRING or not site_file:
        return False
    return os.path.abspath(site_file) == os.path.abspath(path)


def _site_keyring() -> str:
    if settings.SEED_KEYRING:
        return "SEED_KEYRING (its settings)"
    return settings.SEED_KEYRING_FILE or "no keyring (neither SEED_KEYRING nor SEED_KEYRING_FILE)"


def _audit(action: str, key_id: str, details: dict | None = None, outcome: str = "ok") -> bool:
    """The keyring's changes in the trail: the key's id, never the key. The first key is made
    before the database is (deploy/demo/run.sh does): then there is no trail to write to,
    and False says so."""
    if not _has_table(AuditEvent):
        return False
    audit.write(
        actor_kind=AuditEvent.ActorKind.SYSTEM,
        actor="manage.py seed_key",
        action=action,
        target=key_id,
        outcome=outcome,
        details=details or {},
    )
    return True
