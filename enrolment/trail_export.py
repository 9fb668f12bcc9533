"""The audit trail's selection by period, professional or mailbox, and its export as CSV or
JSON, written as it is read: the auditors' page (enrolment/staff_views.py) and
`manage.py export_audit` share them."""

import csv
import json
import re
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
    # Every cell quoted: a spreadsheet that splits on ";" (French Excel's default) would
    # otherwise cut "x;=2+5" typed as a mail user name into a cell that starts a formula.
    writer = csv.writer(_Echo(), quoting=csv.QUOTE_ALL)
    yield writer.writerow(EXPORT_FIELDS)
    for row in rows:
        record = _exported(row)
        record["details"] = json.dumps(record["details"], ensure_ascii=False, sort_keys=True)
        yield writer.writerow([_inert(value) for value in record.values()])


# A formula's first character, at the start of a cell or after a separator.
_FORMULA_START = re.compile(r"(^|[;,])([=+\-@\t\r])")


def _inert(value):
    """A cell a spreadsheet will not run: the trail holds what people typed (a helpdesk
    reason, a mail user name), and "=HYPERLINK(...)" must stay text (OWASP's CSV injection
    advice). After a ";" or "," too: a spreadsheet that splits this file on another
    separator than its own (French Excel on ";") ignores its quotes and starts a cell there."""
    if isinstance(value, str):
        return _FORMULA_START.sub(r"\1'\2", value)
    return value


def _json_lines(rows):
    # One JSON array, written as it is read: an export of a year is not held in memory.
    yield "["
    for index, row in enumerate(rows):
        record = _exported(row)
        yield ("," if index else "") + "\n" + json.dumps(record, ensure_ascii=False)
    yield "\n]\n"
