"""Importing the operator's mailboxes and who may use them, from CSV or JSON.

One row per (mailbox, professional) pair; an organisational mailbox has one row per member::

    address,kind,national_id,given_name,family_name
    dr.martin@cabinet.mssante.fr,personal,899700000001,Claire,Martin
    accueil@clinique.mssante.fr,organisational,899700000002,Sofia,Benali

The whole file is checked before anything is written, and written in one transaction: a file
with a bad row changes nothing, and the error names the line.
"""

import csv
import io
import json
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction

from enrolment.models import Mailbox, Membership, Professional

NATIONAL_ID = re.compile(r"^[A-Za-z0-9]{2,32}$")
REQUIRED_COLUMNS = ("address", "kind", "national_id")
OPTIONAL_COLUMNS = ("given_name", "family_name", "active")
TRUE_WORDS = {"", "1", "true", "yes", "oui"}
NAME_LENGTH = Professional._meta.get_field("given_name").max_length
FALSE_WORDS = {"0", "false", "no", "non"}


class ImportFileError(Exception):
    """The file is refused; ``problems`` lists every bad line."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Row:
    where: str  # "line 7" or "entry 3", for messages
    address: str
    kind: str
    national_id: str
    given_name: str
    family_name: str
    active: bool


@dataclass
class ImportResult:
    created: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    updated: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def changed_anything(self) -> bool:
        return any(self.created.values()) or any(self.updated.values())

    def summary(self) -> str:
        parts = [
            f"{noun}: {self.created[noun]} created, {self.updated[noun]} updated"
            for noun in ("mailboxes", "professionals", "memberships")
        ]
        return "; ".join(parts)


def read_rows(text: str, file_name: str) -> list[Row]:
    """Every row of the file, or ImportFileError listing every bad line."""
    records = _json_records(text) if file_name.lower().endswith(".json") else _csv_records(text)
    rows, problems = [], []
    for where, record in records:
        try:
            rows.append(_parse_row(record, where))
        except ValidationError as exc:
            problems.append(f"{where}: {'; '.join(exc.messages)}")
    problems += consistency_problems(rows)
    if problems:
        raise ImportFileError(problems)
    return rows


def _csv_records(text: str) -> list[tuple[str, dict]]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    _check_columns(reader.fieldnames or [], "line 1")
    records, problems = [], []
    for record in reader:
        where = f"line {reader.line_num}"
        if None in record:  # DictReader's key for the fields beyond the header's
            problems.append(f"{where}: more fields than the header's columns")
        elif any((value or "").strip() for column, value in record.items() if not column.strip()):
            problems.append(f"{where}: a value under a column with no name")
        else:
            records.append((where, record))
    if problems:  # every such line named, as every bad row is
        raise ImportFileError(problems)
    return records


def _check_columns(columns, where: str) -> None:
    """Every required column, and none unknown: a misspelt "Active" or "actif" would
    otherwise be ignored, and the deactivations it holds lost without a word."""
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    named = [c for c in columns if c.strip()]  # a trailing comma, as spreadsheets write
    unknown = [c for c in named if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    problems = []
    if missing:
        problems.append(f"{where}: missing column(s): {', '.join(missing)}")
    if unknown:
        known = ", ".join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)
        problems.append(f"{where}: unknown column(s): {', '.join(unknown)} (known: {known})")
    if problems:
        raise ImportFileError(problems)


def _json_records(text: str) -> list[tuple[str, dict]]:
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFileError([f"line {exc.lineno}: not valid JSON ({exc.msg})"]) from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ImportFileError(["the JSON file must hold a list of objects"])
    for number, record in enumerate(records, start=1):
        _check_columns(list(record), f"entry {number}")
    return [
        (f"entry {number}", {k: "" if v is None else str(v) for k, v in record.items()})
        for number, record in enumerate(records, start=1)
    ]


def _parse_row(record: dict, where: str) -> Row:
    def value(column):
        return (record.get(column) or "").strip()

    address = Mailbox.normalise_address(value("address"))
    validate_email(address)
    if len(address) > 254 or not address.isascii():
        # The verifier refuses longer or non-ASCII names (RFC 5321's path, casefolding
        # across scripts): such a mailbox could never log in.
        raise ValidationError(f"address {address[:60]!r} must be ASCII, 254 characters at most")
    kind = value("kind").lower()
    if kind not in Mailbox.Kind.values:
        raise ValidationError(f"kind must be personal or organisational, not {kind!r}")
    national_id = value("national_id")
    if not NATIONAL_ID.match(national_id):
        raise ValidationError(f"national_id {national_id!r} is not a national id (8+RPPS, 0+ADELI)")
    active_word = value("active").lower()
    if active_word not in TRUE_WORDS | FALSE_WORDS:
        raise ValidationError(f"active must be true or false, not {active_word!r}")
    for column in ("given_name", "family_name"):
        name = value(column)
        if len(name) > NAME_LENGTH:
            raise ValidationError(f"{column} is longer than {NAME_LENGTH} characters")
        control = next((c for c in name if unicodedata.category(c) == "Cc"), None)
        if control is not None:  # NUL, a tab, a line break: a name never holds one
            raise ValidationError(f"{column} holds the control character U+{ord(control):04X}")
    return Row(
        where=where,
        address=address,
        kind=kind,
        national_id=national_id,
        given_name=value("given_name"),
        family_name=value("family_name"),
        active=active_word in TRUE_WORDS,
    )


def consistency_problems(rows: list[Row]) -> list[str]:
    """A mailbox keeps one kind and one state throughout the file, a professional one name,
    and a personal mailbox has one holder. (Else the last row would win, and each import of
    the same file would switch a mailbox off and on, ending its sessions.)"""
    problems = []
    first_row_of, first_named = {}, {}
    holders = defaultdict(set)
    for row in rows:
        first = first_row_of.setdefault(row.address, row)
        if row.kind != first.kind:
            problems.append(f"{row.where}: {row.address} is {first.kind} at {first.where}")
        if row.active != first.active:
            problems.append(f"{row.where}: {row.address} is active={first.active} at {first.where}")
        name = (row.given_name, row.family_name)
        named = first_named.setdefault(row.national_id, row) if any(name) else row
        if name != (named.given_name, named.family_name):  # no name: keep the one known
            problems.append(f"{row.where}: {row.national_id} has another name at {named.where}")
        holders[row.address].add(row.national_id)
        if row.kind == Mailbox.Kind.PERSONAL and len(holders[row.address]) > 1:
            problems.append(f"{row.where}: personal mailbox {row.address} has a second holder")
    return problems


@transaction.atomic
def import_rows(rows: list[Row]) -> ImportResult:
    result = ImportResult()
    problems = []
    for row in rows:
        mailbox = _upsert(
            Mailbox,
            result,
            "mailboxes",
            {"address": row.address},
            {"kind": row.kind, "is_active": row.active},
        )
        names = {
            k: v for k, v in [("given_name", row.given_name), ("family_name", row.family_name)] if v
        }
        professional = _upsert(
            Professional, result, "professionals", {"national_id": row.national_id}, names
        )
        if row.kind == Mailbox.Kind.PERSONAL:
            other = mailbox.memberships.exclude(professional=professional).first()
            if other:
                problems.append(
                    f"{row.where}: personal mailbox {row.address} already belongs "
                    f"to {other.professional.national_id}"
                )
                continue
        _, created = Membership.objects.get_or_create(mailbox=mailbox, professional=professional)
        result.created["memberships"] += created
    if problems:
        # Raising inside the atomic block rolls back everything this file wrote.
        raise ImportFileError(problems)
    return result


def _upsert(model, result: ImportResult, noun: str, keys: dict, values: dict):
    obj, created = model.objects.get_or_create(**keys, defaults=values)
    if created:
        result.created[noun] += 1
        return obj
    changed = [name for name, new in values.items() if getattr(obj, name) != new]
    if changed:
        for name in changed:
            setattr(obj, name, values[name])
        obj.save(update_fields=changed)
        result.updated[noun] += 1
    return obj
