"""The staff pages: the helpdesk's search, professional page and actions; the auditors' trail
and export; the summary of usage for both. Roles and the login: portal/staff.py."""

import csv
import json
from datetime import UTC, datetime, time, timedelta

from django import forms
from django.contrib import messages
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from enrolment import audit, audit_chain, helpdesk, indicators
from enrolment.models import Professional
from portal.staff import AUDITOR, HELPDESK, recent_code, staff_required


@staff_required(HELPDESK)
def helpdesk_search(request):
    query = request.GET.get("q", "")
    found = helpdesk.search(query) if query else helpdesk.Found([], False)
    context = {"query": query, "results": found.professionals, "more": found.more}
    return render(request, "staff/search.html", {**context, "limit": helpdesk.SEARCH_LIMIT})


@staff_required(HELPDESK)
def helpdesk_professional(request, national_id):
    professional = get_object_or_404(Professional, national_id=national_id)
    ctx = {"o": helpdesk.overview(professional), "actions": helpdesk.ACTIONS.values()}
    return render(request, "staff/professional.html", ctx)


class ReasonForm(forms.Form):
    reason = forms.CharField(
        label=gettext_lazy("Reason (the caller's request, the ticket number)"),
        min_length=10,
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3, "aria-describedby": "reason-help"}),
    )

    def clean_reason(self):
        # One line of plain text in the trail: control characters would garble the exports.
        reason = " ".join(self.cleaned_data["reason"].split())
        if len(reason) < 10:
            raise forms.ValidationError(_("Say in a few words why (at least 10 characters)."))
        return reason


@staff_required(HELPDESK)
@recent_code
def helpdesk_action(request, national_id, action):
    """Three steps: the reason (GET, then POST), a second screen that restates the action and
    the reason (POST confirm), then the action itself."""
    chosen = helpdesk.ACTIONS.get(action)
    if chosen is None:
        raise Http404
    professional = get_object_or_404(Professional, national_id=national_id)
    form = ReasonForm(request.POST or None)
    ctx = {"professional": professional, "action": chosen, "form": form}
    if request.method != "POST" or not form.is_valid():
        return render(request, "staff/action_reason.html", ctx)
    if request.POST.get("confirmed") != "yes":
        return render(request, "staff/action_confirm.html", ctx)
    emailed = helpdesk.perform(request, chosen, professional, form.cleaned_data["reason"])
    messages.success(request, _("Done: %(action)s.") % {"action": chosen.title})
    if not emailed:
        messages.warning(
            request, _("The email to the professional could not be sent: tell them by phone.")
        )
    return redirect("helpdesk_professional", national_id=professional.national_id)


# The audit trail


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


TRAIL_PAGE = 200


@staff_required(AUDITOR)
def audit_trail(request):
    form = TrailFilter(request.GET or None)
    rows = []
    if form.is_valid() or not request.GET:
        selection = form.selection() if request.GET else audit_chain.selection()
        rows = list(selection.order_by("-id")[:TRAIL_PAGE])
    return render(
        request,
        "staff/audit.html",
        {"form": form, "rows": rows, "query": request.GET.urlencode(), "page": TRAIL_PAGE},
    )


EXPORT_FIELDS = audit_chain.ROW_FIELDS  # every column, the uid and MAC included


@staff_required(AUDITOR)
def audit_export(request, fmt):
    if fmt not in ("csv", "json"):
        raise Http404
    form = TrailFilter(request.GET)
    if not form.is_valid():
        return render(request, "staff/audit.html", {"form": form, "rows": []}, status=400)
    audit.record(request, "audit.export", outcome="ok", details={"format": fmt, **_filters(form)})
    rows = form.selection().values_list(*EXPORT_FIELDS).iterator(chunk_size=2000)
    stream = _csv_lines(rows) if fmt == "csv" else _json_lines(rows)
    content_type = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    response = StreamingHttpResponse(stream, content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{fmt}"'
    return response


def _filters(form) -> dict:
    return {key: str(value) for key, value in form.cleaned_data.items() if value}


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


@staff_required(HELPDESK, AUDITOR)
def summary(request):
    return render(request, "staff/summary.html", {"figures": indicators.summary()})
