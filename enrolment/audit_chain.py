"""The audit trail made tamper-evident (DESIGN §8): seals, verification, retention purge.

Every row already carries a keyed MAC of its content (enrolment/audit.py), which finds an
altered or forged row. What a MAC on each row cannot find is a row deleted, so a periodic
seal (``manage.py seal_audit``, every minute or so) records each new range of row ids: the
ids it holds, a digest of their MACs, and a MAC over all that and the previous seal's MAC.
Writers never wait for the sealer: it only reads rows that are already committed.

``verify`` then names every row altered, inserted, copied or missing, every seal altered,
removed or out of order, and anything MACed with a key after its retirement (audit_keys.py).
The purge deletes whole sealed ranges and marks their seals (with a MAC of its own), so the
chain still verifies after it.
"""

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from enrolment import audit, audit_keys
from enrolment.models import AuditEvent, AuditSeal

SEAL_BATCH = 50_000  # rows per seal: a seal's ids are held in memory when verifying
ROW_FIELDS = [
    "id",
    "uid",
    "at",
    "actor_kind",
    "actor",
    "action",
    "target",
    "outcome",
    "client_ip",
    "details",
    "mac",
    "mac_key",
]


# Sealing


class ChainBroken(Exception):
    """The chain no longer holds the last anchor written outside the database."""


class AnchorFileUnusable(ChainBroken):
    """AUDIT_ANCHOR_FILE cannot be read or written: the chain cannot be checked against it,
    so nothing is sealed or purged onto it either."""


def seal(now: datetime | None = None) -> list[AuditSeal]:
    """Seal every committed row old enough (AUDIT_SEAL_DELAY_SECONDS), in ranges of at most
    SEAL_BATCH rows, and append the newest seal to AUDIT_ANCHOR_FILE. Returns the new seals.

    Refuses (ChainBroken) when the chain lacks the last anchor: someone who deleted rows
    and the seals after them would otherwise have the next run seal over the hole. Refuses
    too when the anchor file is configured but absent while seals exist (a file lost, a
    new node): a chain cut at its tail would look whole to it; start_anchor_file() once
    the chain is checked."""
    anchor = last_anchor()
    if anchor is not None and not _chain_holds(anchor):
        raise ChainBroken(
            f"the audit chain does not hold seal {anchor[0]} of the anchor file: seals "
            "were removed or remade; nothing sealed (run verify_audit)"
        )
    if anchor is None and settings.AUDIT_ANCHOR_FILE and AuditSeal.objects.exists():
        raise ChainBroken(
            f"AUDIT_ANCHOR_FILE {settings.AUDIT_ANCHOR_FILE} holds no anchor, but the chain "
            "has seals: nothing sealed. On a new node, or if the file was lost, check the "
            "chain (verify_audit --anchor with the last anchor of another node's file or of "
            "the journal), then run seal_audit --start-anchor-file"
        )
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.AUDIT_SEAL_DELAY_SECONDS)
    made = []
    while (new := _seal_next_range(cutoff)) is not None:
        made.append(new)
    if made:
        _write_anchor(made[-1])
    return made


def start_anchor_file() -> AuditSeal | None:
    """Begin AUDIT_ANCHOR_FILE at the chain's newest seal, which must verify: for a new node,
    or a file lost, once the chain was checked against an anchor kept elsewhere."""
    if not settings.AUDIT_ANCHOR_FILE:
        raise AnchorFileUnusable("AUDIT_ANCHOR_FILE is not set")
    newest = AuditSeal.objects.order_by("-seq").first()
    if newest is not None and not _seal_holds(newest):
        raise ChainBroken(f"the newest seal ({newest.seq}) does not verify (run verify_audit)")
    if newest is not None:
        _write_anchor(newest)
    return newest


def anchor_text(seal: AuditSeal) -> str:
    return f"{seal.seq}:{seal.mac}"


def parse_anchor(text: str) -> tuple[int, str]:
    anchor = audit_keys.parse_anchor(text)
    if anchor is None:
        raise ValueError(f"not an anchor (SEQ:MAC): {text.strip()[:80]!r}")
    return anchor


def last_anchor() -> tuple[int, str] | None:
    """The last line of AUDIT_ANCHOR_FILE, if one is configured and written."""
    path = settings.AUDIT_ANCHOR_FILE
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as anchors:
            anchors.seek(0, os.SEEK_END)
            anchors.seek(max(0, anchors.tell() - 512))  # the last line is ~80 bytes
            lines = [line for line in anchors.read().decode().splitlines() if line.strip()]
        return parse_anchor(lines[-1].split()[0]) if lines else None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise AnchorFileUnusable(f"AUDIT_ANCHOR_FILE {path}: {error}") from error


def _write_anchor(seal: AuditSeal) -> None:
    path = settings.AUDIT_ANCHOR_FILE
    if not path:
        return
    try:
        with open(path, "a") as anchors:
            anchors.write(f"{anchor_text(seal)} {seal.sealed_at.isoformat()}\n")
            anchors.flush()
            os.fsync(anchors.fileno())
    except OSError as error:
        raise AnchorFileUnusable(
            f"sealed up to seal {seal.seq}, but its anchor could not be written to "
            f"AUDIT_ANCHOR_FILE {path}: {error}; write the line {anchor_text(seal)} there"
        ) from error


def _chain_holds(anchor: tuple[int, str]) -> bool:
    seq, mac = anchor
    return AuditSeal.objects.filter(seq=seq, mac=mac).exists()


def _seal_next_range(cutoff: datetime) -> AuditSeal | None:
    with transaction.atomic():
        _take_the_sealers_turn()
        previous = AuditSeal.objects.order_by("-seq").first()
        if previous is not None and not _seal_holds(previous):
            raise ChainBroken(
                f"the newest seal ({previous.seq}) does not verify: nothing sealed onto it "
                "(run verify_audit)"
            )
        rows = AuditEvent.objects.all()
        if previous is not None:
            rows = rows.filter(id__gt=previous.last_id)
        bounds = rows.filter(at__lte=cutoff).aggregate(first=Min("id"), last=Max("id"))
        if bounds["last"] is None:
            return None
        first_id = previous.last_id + 1 if previous else bounds["first"]
        last_id = min(bounds["last"], first_id + SEAL_BATCH - 1)
        ids_and_macs = list(
            rows.filter(id__range=(first_id, last_id)).order_by("id").values_list("id", "mac")
        )
        last_at = AuditEvent.objects.filter(id__range=(first_id, last_id)).aggregate(Max("at"))[
            "at__max"
        ]
        present = {row_id for row_id, _ in ids_and_macs}
        new = AuditSeal(
            seq=previous.seq + 1 if previous else 1,
            first_id=first_id,
            last_id=last_id,
            count=len(ids_and_macs),
            gaps=[i for i in range(first_id, last_id + 1) if i not in present],
            digest=_digest(ids_and_macs),
            last_at=last_at,
            sealed_at=timezone.now(),
            previous_mac=previous.mac if previous else "",
            mac_key=audit_keys.mac_keys().active,
        )
        new.mac = audit.seal_mac(_canonical_seal(new), new.mac_key)
        new.save()
        return new


# Any number: the PostgreSQL advisory lock that sealers (each node's timer, a purge, a key
# retirement) take in turn.
SEALERS_LOCK = 0x5EA1


def _take_the_sealers_turn() -> None:
    """Until the transaction ends, the only sealer. A row lock on the newest seal would not
    do: a sealer waiting on it reads that seal again once it is free, not the one made
    meanwhile, and builds the same next seal (an IntegrityError); with no seal yet, there is
    nothing to lock. SQLite takes one writer at a time anyway."""
    connection = transaction.get_connection()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SEALERS_LOCK])


def _seal_holds(seal: AuditSeal) -> bool:
    if seal.mac_key not in audit_keys.mac_keys().secrets:
        return False
    return seal.mac == audit.seal_mac(_canonical_seal(seal), seal.mac_key)


def _digest(ids_and_macs) -> str:
    digest = hashlib.sha256()
    for row_id, mac in ids_and_macs:
        digest.update(f"{row_id}:{mac}\n".encode())
    return digest.hexdigest()


def _canonical_seal(seal: AuditSeal) -> str:
    return json.dumps(
        [
            seal.seq,
            seal.first_id,
            seal.last_id,
            seal.count,
            seal.gaps,
            seal.digest,
            seal.last_at.isoformat(),
            seal.sealed_at.isoformat(),
            seal.previous_mac,
        ],
        separators=(",", ":"),
    )


def _purge_mac(seal: AuditSeal) -> str:
    text = f"purged:{seal.seq}:{seal.mac}:{seal.purged_at.isoformat()}"
    return audit.seal_mac(text, seal.purge_mac_key or audit_keys.LEGACY)


# Verifying


@dataclass(frozen=True)
class Finding:
    # altered, inserted, copied, missing, replaced, unsealed, seal_altered, seal_missing,
    # seal_chain, unknown_key, retired_key
    problem: str
    message: str
    row_id: int | None = None
    seal: int | None = None

    def __str__(self):
        return self.message


def verify(anchor: tuple[int, str] | None = None, now: datetime | None = None) -> list[Finding]:
    """Every row and seal that is not as written; an empty list for an intact trail.

    The newest seals and rows, deleted together, leave a shorter chain that is intact: the
    ``anchor`` (a seal's number and MAC, as ``seal_audit`` printed them to a log kept
    elsewhere) must then still be in the chain, as must the seals that the keyring's
    retirements name. Rows left unsealed for longer than AUDIT_SEAL_MAX_LAG_SECONDS are
    reported too: their seal was removed, or the sealer does not run."""
    seals = list(AuditSeal.objects.order_by("seq"))
    anchor = anchor or last_anchor()
    retired, findings = _retirement_bounds(seals)
    findings += list(_check_seals(seals, retired))
    findings += _but_ranges_purged_meanwhile(seals, list(_check_rows(seals, retired)), retired)
    findings += list(_check_anchor(seals, anchor))
    findings += list(_check_lag(seals, now or timezone.now()))
    return findings


def _but_ranges_purged_meanwhile(seals, findings, retired) -> list[Finding]:
    """The findings, but a range's rows missing or its digest different because another
    node purged it while they were read (``seals`` were read first, unpurged). Only for a
    purge mark that verifies: one forged meanwhile is reported, not taken for an excuse."""
    purged_before = [seal.seq for seal in seals if seal.purged_at is not None]
    marked_since = AuditSeal.objects.filter(purged_at__isnull=False).exclude(seq__in=purged_before)
    excused, bad_marks = set(), []
    for seal in marked_since:
        problems = list(_check_purge_mark(seal, retired))
        if not _seal_holds(seal):
            problems.append(Finding("seal_altered", f"seal {seal.seq} was altered", seal=seal.seq))
        if problems:
            bad_marks += problems
        else:
            excused.add(seal.seq)
    incomplete = ("missing", "replaced")
    kept = [f for f in findings if not (f.problem in incomplete and f.seal in excused)]
    return kept + bad_marks


def _check_anchor(seals: list[AuditSeal], anchor) -> Iterator[Finding]:
    if anchor is None:
        return
    seq, mac = anchor
    if not any(seal.seq == seq and seal.mac == mac for seal in seals):
        yield Finding(
            "seal_missing", f"seal {seq} (the anchor given) is not in the chain", seal=seq
        )


def _check_lag(seals: list[AuditSeal], now: datetime) -> Iterator[Finding]:
    sealed_to = seals[-1].last_id if seals else 0
    limit = now - timedelta(seconds=settings.AUDIT_SEAL_MAX_LAG_SECONDS)
    late = AuditEvent.objects.filter(id__gt=sealed_to, at__lt=limit)
    bounds = late.aggregate(first=Min("id"), last=Max("id"))
    if bounds["first"] is not None:
        yield Finding(
            "unsealed",
            f"rows {bounds['first']}-{bounds['last']} are older than "
            f"{settings.AUDIT_SEAL_MAX_LAG_SECONDS} s and not sealed: a seal was removed, "
            "or seal_audit does not run",
            row_id=bounds["first"],
        )


@dataclass(frozen=True)
class Retirement:
    """How far a retired key still verifies: the seals up to the one its retirement names,
    and the rows they cover. Never a purge mark (the retirement MACed them again)."""

    seq: int
    last_id: int


def _retirement_bounds(seals: list[AuditSeal]) -> tuple[dict[str, Retirement], list[Finding]]:
    retired, findings = {}, []
    by_seq = {seal.seq: seal for seal in seals}
    for key_id, (seq, mac) in audit_keys.mac_keys().retired.items():
        named = by_seq.get(seq)
        if named is None or named.mac != mac:
            message = f"seal {seq}, where key {key_id!r} was retired, is not in the chain"
            findings.append(Finding("seal_missing", message, seal=seq))
            # Reported; its predecessor's end, if there is one, bounds the key's rows.
            named = by_seq.get(seq - 1)
        retired[key_id] = Retirement(seq, named.last_id if named else 0)
    return retired, findings


def _key_finding(what: str, key_id: str, after_retirement: bool) -> Finding | None:
    """What is wrong with the key that a row, seal or purge mark names, if anything."""
    if key_id not in audit_keys.mac_keys().secrets:
        return Finding("unknown_key", f"{what}: its MAC key {key_id!r} is not configured")
    if after_retirement:
        return Finding(
            "retired_key",
            f"{what} was MACed with key {key_id!r} after its retirement: forged with a "
            "stolen key, or a node still uses it",
        )
    return None


def _check_seals(seals: list[AuditSeal], retired: dict[str, Retirement]) -> Iterator[Finding]:
    previous = None
    for seal in seals:
        late = seal.mac_key in retired and seal.seq > retired[seal.mac_key].seq
        problem = _key_finding(f"seal {seal.seq}", seal.mac_key, late)
        if problem is not None:
            yield dataclasses.replace(problem, seal=seal.seq)
        elif not _seal_holds(seal):
            yield Finding("seal_altered", f"seal {seal.seq} was altered", seal=seal.seq)
        yield from _check_seal_order(seal, previous)
        if seal.purged_at is not None:
            yield from _check_purge_mark(seal, retired)
        previous = seal


def _check_seal_order(seal: AuditSeal, previous: AuditSeal | None) -> Iterator[Finding]:
    expected_seq = previous.seq + 1 if previous else 1
    if seal.seq != expected_seq:
        yield Finding(
            "seal_missing", f"seals {expected_seq}-{seal.seq - 1} are missing", seal=expected_seq
        )
    if seal.previous_mac != (previous.mac if previous else ""):
        yield Finding(
            "seal_chain", f"seal {seal.seq} does not follow seal {seal.seq - 1}", seal=seal.seq
        )
    if previous is not None and seal.first_id != previous.last_id + 1:
        yield Finding(
            "seal_chain",
            f"seal {seal.seq} starts at row {seal.first_id}, after row {previous.last_id}",
            seal=seal.seq,
        )
    if not 0 <= seal.last_id - seal.first_id < SEAL_BATCH:
        yield Finding(
            "seal_chain",
            f"seal {seal.seq} holds rows {seal.first_id}-{seal.last_id}, which no seal does",
            seal=seal.seq,
        )


def _check_purge_mark(seal: AuditSeal, retired: dict[str, Retirement]) -> Iterator[Finding]:
    key_id = seal.purge_mac_key or audit_keys.LEGACY
    problem = _key_finding(f"seal {seal.seq}'s purge mark", key_id, key_id in retired)
    if problem is not None:
        yield dataclasses.replace(problem, seal=seal.seq)
    elif seal.purge_mac != _purge_mac(seal):
        yield Finding("seal_altered", f"seal {seal.seq} is marked purged falsely", seal=seal.seq)


def _check_rows(seals: list[AuditSeal], retired: dict[str, Retirement]) -> Iterator[Finding]:
    yield from _check_copies()
    seal_index = 0
    sealed_rows: list[tuple[int, str]] = []  # the current seal's rows, as found
    first_sealed = seals[0].first_id if seals else None
    purged_until = _purged_until(seals)
    rows = AuditEvent.objects.order_by("id").values_list(*ROW_FIELDS)
    for values in rows.iterator(chunk_size=2000):
        row = AuditEvent(**dict(zip(ROW_FIELDS, values, strict=True)))
        # Close the seals that end before this row.
        while seal_index < len(seals) and row.id > seals[seal_index].last_id:
            yield from _check_sealed_range(seals[seal_index], sealed_rows)
            seal_index, sealed_rows = seal_index + 1, []
        yield from _check_row(row, retired)
        in_a_purged_range = seal_index < len(seals) and seals[seal_index].purged_at is not None
        if purged_until is not None and row.at <= purged_until and not in_a_purged_range:
            yield Finding(
                "inserted",
                f"row {row.id} is dated {row.at:%Y-%m-%d %H:%M:%S}, within the period purged "
                "(a purged row put back?)",
                row_id=row.id,
            )
        if first_sealed is not None and row.id < first_sealed:
            yield Finding(
                "inserted", f"row {row.id} lies before the first seal", row_id=row.id, seal=1
            )
        elif seal_index < len(seals):
            sealed_rows.append((row.id, row.mac))
    for seal in seals[seal_index:]:
        yield from _check_sealed_range(seal, sealed_rows)
        sealed_rows = []


def _purged_until(seals: list[AuditSeal]) -> datetime | None:
    """Before when no row can be left: a purge deletes whole sealed ranges by age, so a row
    dated before the newest purged one, wherever it stands, was put back (with its MAC and
    uid intact, from an export or a backup). The seal delay allows for the rows that took
    their id a little after their time."""
    ends = [seal.last_at for seal in seals if seal.purged_at is not None]
    if not ends:
        return None
    return max(ends) - timedelta(seconds=settings.AUDIT_SEAL_DELAY_SECONDS)


def _check_row(row: AuditEvent, retired: dict[str, Retirement]) -> Iterator[Finding]:
    late = row.mac_key in retired and row.id > retired[row.mac_key].last_id
    problem = _key_finding(f"row {row.id}", row.mac_key, late)
    if problem is not None:
        yield dataclasses.replace(problem, row_id=row.id)
    elif not row.mac or row.mac != audit.row_mac(row):
        yield Finding("altered", f"row {row.id} was altered or forged", row_id=row.id)


def _check_copies() -> Iterator[Finding]:
    """Rows sharing a uid: a valid row copied elsewhere. Found by the database, so that a
    trail of millions of rows is not held in memory."""
    copied = (
        AuditEvent.objects.values("uid")
        .annotate(copies=Count("id"), first=Min("id"))
        .filter(copies__gt=1)
    )
    for group in copied.iterator():
        later = AuditEvent.objects.filter(uid=group["uid"], id__gt=group["first"])
        for row_id in later.order_by("id").values_list("id", flat=True):
            yield Finding(
                "copied", f"row {row_id} is a copy of row {group['first']}", row_id=row_id
            )


def _check_sealed_range(seal: AuditSeal, rows: list[tuple[int, str]]) -> Iterator[Finding]:
    if seal.last_id - seal.first_id >= SEAL_BATCH:
        return  # a forged range (reported with the seal), which must not fill the memory
    if seal.purged_at is not None:
        # The purge deletes a range and marks it in one transaction: nothing stays behind.
        for row_id, _ in rows:
            yield Finding(
                "inserted",
                f"row {row_id} lies in the range purged with seal {seal.seq}",
                row_id=row_id,
                seal=seal.seq,
            )
        return
    expected = set(range(seal.first_id, seal.last_id + 1)) - set(seal.gaps)
    present = {row_id for row_id, _ in rows}
    for row_id in sorted(expected - present):
        yield Finding("missing", f"row {row_id} is missing", row_id=row_id, seal=seal.seq)
    for row_id in sorted(present - expected):
        yield Finding(
            "inserted",
            f"row {row_id} was inserted after seal {seal.seq}",
            row_id=row_id,
            seal=seal.seq,
        )
    if expected == present and _digest(rows) != seal.digest:
        yield Finding(
            "replaced",
            f"rows {seal.first_id}-{seal.last_id} differ from what seal {seal.seq} holds",
            seal=seal.seq,
        )


# Retention


def purge(before: datetime) -> tuple[int, int]:
    """Delete the sealed ranges whose newest row is older than ``before``. Returns (seals,
    rows) purged. Rows not yet sealed are sealed first; an unsealed range is never purged."""
    seal()
    seals_purged = rows_purged = 0
    candidates = AuditSeal.objects.filter(purged_at__isnull=True, last_at__lt=before)
    for candidate in candidates.order_by("seq"):
        with transaction.atomic():
            # Another node's purge may have taken it since: purged once, marked once.
            chosen = AuditSeal.objects.select_for_update().get(pk=candidate.pk)
            if chosen.purged_at is not None:
                continue
            rows = AuditEvent.objects.filter(id__range=(chosen.first_id, chosen.last_id))
            rows_purged += rows._raw_delete(rows.db)  # no per-row delete(): append-only model
            chosen.purged_at = timezone.now()
            chosen.purge_mac_key = audit_keys.mac_keys().active
            chosen.purge_mac = _purge_mac(chosen)
            chosen.save(update_fields=["purged_at", "purge_mac", "purge_mac_key"])
        seals_purged += 1
    return seals_purged, rows_purged


class PurgeMarkForged(Exception):
    """A purge mark that does not verify: nothing is MACed again over it."""


def mac_purge_marks_again(key_id: str) -> list[AuditSeal]:
    """The purge marks made with ``key_id``, checked and MACed again with the active key
    under their row locks, in one transaction: once the key is retired, a purge mark made
    with it is a forgery. PurgeMarkForged if one does not verify (nothing is changed)."""
    marks = AuditSeal.objects.filter(purged_at__isnull=False)
    if key_id == audit_keys.LEGACY:
        marks = marks.filter(purge_mac_key__in=["", key_id])
    else:
        marks = marks.filter(purge_mac_key=key_id)
    with transaction.atomic():
        marked = list(marks.select_for_update().order_by("seq"))
        for seal in marked:
            if not _seal_holds(seal) or seal.purge_mac != _purge_mac(seal):
                raise PurgeMarkForged(f"seal {seal.seq}'s purge mark does not verify")
        for seal in marked:
            seal.purge_mac_key = audit_keys.mac_keys().active
            seal.purge_mac = _purge_mac(seal)
            seal.save(update_fields=["purge_mac", "purge_mac_key"])
    return marked


def retention_cutoff(now: datetime | None = None, days: int | None = None) -> datetime:
    days = settings.AUDIT_RETENTION_DAYS if days is None else days
    return (now or timezone.now()) - timedelta(days=days)


# Export


def selection(since=None, until=None, professional: str = "", mailbox: str = ""):
    """The rows of a period, of a professional (as actor or target) or of a mailbox."""
    rows = AuditEvent.objects.order_by("id")
    if since:
        rows = rows.filter(at__gte=since)
    if until:
        rows = rows.filter(at__lt=until)
    if professional:
        rows = rows.filter(Q(actor=professional) | Q(target=professional))
    if mailbox:
        rows = rows.filter(target=mailbox.strip().lower())
    return rows
