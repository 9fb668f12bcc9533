"""The staff pages: the helpdesk's search, professional page and actions; the auditors' trail
and export; the summary of usage for both. Roles and the login: portal/staff.py."""

from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from enrolment import audit, audit_chain, helpdesk, indicators, trail_export
from enrolment.models import Professional
from enrolment.trail_export import TrailFilter
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


@staff_required(AUDITOR)
@recent_code  # the whole trail in one file: not from a session left open for hours
def audit_export(request, fmt):
    if fmt not in ("csv", "json"):
        raise Http404
    form = TrailFilter(request.GET)
    if form.is_valid() and form.selection().count() > settings.AUDIT_EXPORT_MAX_ROWS:
        # A sync worker streaming for longer than its timeout is killed mid-file.
        form.add_error(None, _too_many_rows())
    if not form.is_valid():
        return render(request, "staff/audit.html", {"form": form, "rows": []}, status=400)
    audit.record(request, "audit.export", outcome="ok", details={"format": fmt, **_filters(form)})
    stream = trail_export.lines(form.selection(), fmt)
    content_type = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    response = StreamingHttpResponse(stream, content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{fmt}"'
    return response


def _filters(form) -> dict:
    return {key: str(value) for key, value in form.cleaned_data.items() if value}


def _too_many_rows() -> str:
    return _(
        "More than %(limit)s events match: choose a shorter period here, or have an "
        "operator export it on a node (manage.py export_audit)."
    ) % {"limit": f"{settings.AUDIT_EXPORT_MAX_ROWS:,}".replace(",", "\u202f")}


@staff_required(HELPDESK, AUDITOR)
def summary(request):
    return render(request, "staff/summary.html", {"figures": indicators.summary()})
