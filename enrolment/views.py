"""The professional's own pages: home, the enrolment wizard, the mail password."""

import uuid
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from enrolment import audit, enrolling, notify, totp
from enrolment.enrolling import Outcome
from enrolment.forms import CodeForm, MailPasswordForm
from enrolment.models import Device, Professional
from portal.psc import recent_psc_login

# The browser session's own enrolment: the pending device it started (enrolling.pending_device_in).
PENDING = "enrolment_pending_device"


def professional_of(request) -> Professional | None:
    return getattr(request.user, "professional", None) if request.user.is_authenticated else None


def professional_required(view):
    """Logged in through PSC as a professional of this operator (staff accounts are not)."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if professional_of(request) is None:
            raise Http404
        return view(request, *args, **kwargs)

    return wrapper


def home(request):
    professional = professional_of(request)
    if professional is None:
        return render(request, "home/landing.html")
    ctx = {
        "professional": professional,
        "mailboxes": professional.mailboxes.filter(is_active=True).order_by("address"),
        "device": Device.objects.filter(user=request.user, confirmed=True).first(),
        "pending": enrolling.pending_device(request.user),
    }
    return render(request, "home/home.html", ctx)


@professional_required
@recent_psc_login
def enrolment_start(request):
    """Step 1: what the professional needs, and why. POST starts a new enrolment; while this
    browser's own is under way, the page offers to go on with it first (a new key would make
    the one already scanned useless, and FreeOTP would show two entries alike)."""
    if request.method == "POST":
        enrolling.start_enrolment_in(request.session, request.user, PENDING)
        audit.record(request, "enrolment.start", outcome="ok")
        return redirect("enrolment_scan")
    ctx = {
        "replacing": Device.objects.filter(user=request.user, confirmed=True).exists(),
        "pending_minutes": settings.ENROLMENT_PENDING_SECONDS // 60,
        "under_way": enrolling.pending_device_in(request.session, request.user, PENDING),
    }
    return render(request, "enrolment/start.html", ctx)


def no_enrolment_under_way(request):
    """Where scan and confirm send a browser whose enrolment is not pending any more: to the
    done page if it is the one this browser just confirmed (Back, a second tab, a form sent
    again), else to the start."""
    finished = request.session.get(PENDING)
    if finished and Device.objects.filter(pk=finished, user=request.user, confirmed=True).exists():
        messages.info(request, _("This phone is enrolled already: nothing more to do."))
        return redirect("enrolment_done")
    messages.info(request, _("Your enrolment expired or was replaced by a newer one; start again."))
    return redirect("enrolment_start")


@never_cache  # this page shows the seed
@professional_required
@recent_psc_login
@sensitive_variables("seed", "uri", "secret")
def enrolment_scan(request):
    """Step 2: the QR code, the key to type, and the otpauth:// link."""
    device = enrolling.pending_device_in(request.session, request.user, PENDING)
    if device is None:
        return no_enrolment_under_way(request)
    seed = device.seed()
    uri = enrolling.otpauth_uri(device, enrolling.account_label(professional_of(request)), seed)
    secret = enrolling.grouped(totp.base32_secret(seed))
    ctx = {
        "qr_svg": enrolling.qr_svg(uri),
        "otpauth_uri": uri,
        "secret": secret,
        "issuer": enrolling.issuer(),
        "pending_until": device.pending_until,
    }
    return render(request, "enrolment/scan.html", ctx)


@never_cache
@sensitive_post_parameters("code")
@professional_required
@recent_psc_login
def enrolment_confirm(request):
    """Step 3: the first code from the phone turns the pending device into the active one."""
    device = enrolling.pending_device_in(request.session, request.user, PENDING)
    if device is None:
        return no_enrolment_under_way(request)
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        result = enrolling.confirm_enrolment(device, form.cleaned_data["code"])
        audit.record(
            request,
            "enrolment.confirm",
            outcome=result.outcome.value,
            details={
                "replaced_previous": result.replaced_previous,
                "clock_offset_seconds": result.clock_offset_seconds,
            },
        )
        if result.outcome is Outcome.CONFIRMED:  # PENDING now names what this browser enrolled
            return confirmed(request, result)
        if result.outcome is Outcome.ALREADY_CONFIRMED:
            return redirect("enrolment_done")  # told and emailed by the first request
        if result.outcome is Outcome.EXPIRED:
            messages.info(request, _("Your enrolment expired; start again."))
            return redirect("enrolment_start")
        form.add_error("code", refusal_message(result))
    return render(request, "enrolment/confirm.html", {"form": form})


def refusal_message(result: enrolling.Confirmation) -> str:
    if result.outcome is Outcome.THROTTLED:
        return ngettext(
            "Too many wrong codes. Wait %(seconds)d second, then type the code shown now.",
            "Too many wrong codes. Wait %(seconds)d seconds, then type the code shown now.",
            result.retry_after,
        ) % {"seconds": result.retry_after}
    return _(
        "This code is not the right one. Check that FreeOTP shows the key of the previous "
        "page (the last one shown, if you opened it twice) and type the code it shows now."
    )


def confirmed(request, result: enrolling.Confirmation):
    professional = professional_of(request)
    notify.notify(professional, "reenrolled" if result.replaced_previous else "enrolled")
    if abs(result.clock_offset_seconds) > 30:
        request.session["enrolment_clock_offset"] = result.clock_offset_seconds
    return redirect("enrolment_done")


@professional_required
def enrolment_done(request):
    """Step 4: what to type in the mail software, and where."""
    device = Device.objects.filter(user=request.user, confirmed=True).first()
    if device is None:
        return redirect("enrolment_start")
    professional = professional_of(request)
    offset = request.session.pop("enrolment_clock_offset", 0)
    ctx = {
        "offset": offset,  # seconds the phone is ahead (+) or behind (-)
        "offset_behind": -offset,
        "has_password": bool(professional.mail_password),
        "account": enrolling.account_label(professional),
        "imap_host": settings.MAIL_IMAP_HOST,
        "imap_port": settings.MAIL_IMAP_PORT,
        "smtp_host": settings.MAIL_SMTP_HOST,
        "smtp_port": settings.MAIL_SMTP_PORT,
        "separator": settings.VERIFY_CODE_SEPARATOR,
        "helpdesk_phone": settings.HELPDESK_PHONE,
    }
    return render(request, "enrolment/done.html", ctx)


@professional_required
def mail_sessions_page(request):
    """The professional's mail sessions: where their mail software is logged in; end one or all."""
    professional = professional_of(request)
    sessions = professional.mail_sessions.filter(
        revoked_at__isnull=True, expires_at__gt=timezone.now()
    )
    if request.method == "POST":
        chosen = _sessions_to_end(sessions, request.POST.get("end", ""))
        if chosen is None:
            messages.error(request, _("That session is not one of yours, or it has ended."))
            return redirect("mail_sessions")
        ended = chosen.update(revoked_at=timezone.now(), revoked_reason="ended_by_professional")
        audit.record(request, "mail_session.end", outcome="ok", details={"count": ended})
        if ended:
            messages.success(request, _ended_message(ended))
        else:  # ended meanwhile, in another tab or by its lifetime: say so, not "ended"
            messages.info(request, _("That session had ended already."))
        return redirect("mail_sessions")
    ctx = {"sessions": sessions.select_related("mailbox").order_by("-last_seen_at")}
    return render(request, "enrolment/mail_sessions.html", ctx)


def _ended_message(count: int) -> str:
    return ngettext(
        "%(count)d session ended. That mail software must log in again with a new code.",
        "%(count)d sessions ended. That mail software must log in again with a new code.",
        count,
    ) % {"count": count}


def _sessions_to_end(sessions, choice: str):
    """All of them, or the one chosen; None if the choice names no session id."""
    if choice == "all":
        return sessions
    try:
        return sessions.filter(pk=uuid.UUID(choice))
    except ValueError:
        return None


@sensitive_post_parameters("password1", "password2")
@professional_required
@recent_psc_login
def mail_password(request):
    """Set or change the password of the OTP mail endpoint."""
    professional = professional_of(request)
    form = MailPasswordForm(request.user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        professional.set_mail_password(form.cleaned_data["password1"])
        audit.record(request, "password.change", outcome="ok")
        notify.notify(professional, "password_changed")
        messages.success(
            request,
            _(
                "Your mail password is saved. Mail software that used the "
                "old one must log in again."
            ),
        )
        return redirect("home")
    ctx = {"form": form, "has_password": bool(professional.mail_password)}
    return render(request, "enrolment/password.html", ctx)
