"""The audit trail's selection by period, professional or mailbox, and its export as CSV or
JSON, written as it is read: the auditors' page (enrolment/staff_views.py) and
`manage.py export_audit` share them."""

import csv
import json
from datetime import UTC, datetime, time, timedelta

from django import forms
from django.utils import timezone
from django.utils.translation import gettext_lazy

from enrolment import audit_chain

EXPORT_FIELDS = audit_chain.ROW_FIELDS  # every column, the uid and MAC included


DAY = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")  # the browser's date picker


class TrailFilter(forms.Form):
    since = forms.DateField(label=gettext_lazy("From (day)"), required=False, widget=DAY)
    until = forms.DateField(label=gettext_lazy("To (day, included)"), required=False, widget=DAY)
    professional = forms.CharField(
        label=gettext_lazy("Professional's national id"), required=False, max_length=32
    )
    mailbox = forms.CharField(label=gettext_lazy("Mailbox"), required=False, max_length=254)

    def selection(self):
        data = self.cleaned_data
        return audit_chain.selection(
            since=_day_start(data.get("since")),
            until=_day_start(data.get("until"), days=1),
            professional=data.get("professional", "").strip(),
            mailbox=data.get("mailbox", ""),
        )


def _day_start(day, days=0):
    """The day's first instant, or None (no bound) for the calendar's ends, where the day after
    or the conversion to UTC would overflow."""
    if day is None:
        return None
    try:
        start = timezone.make_aware(datetime.combine(day + timedelta(days=days), time.min))
        start.astimezone(UTC)
    except OverflowError:
        return None
    return start


def lines(selection, fmt: str):
    """The rows of ``selection`` as CSV or JSON text, piece by piece."""
    rows = selection.values_list(*EXPORT_FIELDS).iterator(chunk_size=2000)
    return _csv_lines(rows) if fmt == "csv" else _json_lines(rows)


def _exported(row) -> dict:
    record = dict(zip(EXPORT_FIELDS, row, strict=True))
    record["at"] = record["at"].isoformat()
    return record


class _Echo:
    def write(self, value):
        return value


def _csv_lines(rows):
    writer = csv.writer(_Echo())
    yield writer.writerow(EXPORT_FIELDS)
    for row in rows:
        record = _exported(row)
        record["details"] = json.dumps(record["details"], ensure_ascii=False, sort_keys=True)
        yield writer.writerow([_inert(value) for value in record.values()])


def _inert(value):
    """A cell a spreadsheet will not run: the trail holds what clients typed (a mailbox at
    an IMAP login), and "=HYPERLINK(...)" must stay text (OWASP's CSV injection advice)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _json_lines(rows):
    # One JSON array, written as it is read: an export of a year is not held in memory.
    yield "["
    for index, row in enumerate(rows):
        record = _exported(row)
        yield ("," if index else "") + "\n" + json.dumps(record, ensure_ascii=False)
    yield "\n]\n"
