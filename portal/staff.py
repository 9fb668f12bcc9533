"""Staff login: a Django account's password, then its own TOTP code (django-otp, on our
encrypted Device), with enrolment of the phone on the first login, which also needs the
account's one-time enrolment token (enrolment/staff_tokens.py). Roles are Django groups.

A staff session is "verified" (django-otp's OTPMiddleware) only after the code; every staff
page needs that and a role, and destructive actions also need a code typed within the last
STAFF_RECENT_LOGIN_SECONDS.
"""

import math
import time
from datetime import timedelta
from functools import wraps
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import auth
from django.contrib.auth import get_user_model
from django.contrib.auth.views import LoginView
from django.core.exceptions import PermissionDenied
from django.core.mail import send_mail
from django.db import transaction
from django.middleware.csrf import rotate_token
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import SimpleLazyObject
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django_otp import login as otp_login

from enrolment import audit, enrolling, staff_tokens, throttle, totp
from enrolment.enrolling import Outcome
from enrolment.forms import CodeForm, EnrolmentTokenForm
from enrolment.mail_sessions import throttle_source
from enrolment.models import Device
from portal.client import client_ip

HELPDESK = "helpdesk"  # find professionals, reset devices, clear back-offs, end sessions
AUDITOR = "auditor"  # read and export the audit trail
ROLES = (HELPDESK, AUDITOR)

VERIFIED_AT = "staff_verified_at"


def roles_of(user) -> set[str]:
    """The roles a staff member holds: their groups that are roles, by exact name. Read once
    per request: the role check and the staff menu both ask (``user`` is the request's)."""
    if not user.is_authenticated or not user.is_active or hasattr(user, "professional"):
        return set()
    if not hasattr(user, "_staff_roles"):
        user._staff_roles = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
    return user._staff_roles


def staff_roles(request) -> dict:
    """Context processor: ``staff_roles`` for the staff menu, read only by pages that show it."""
    return {"staff_roles": SimpleLazyObject(lambda: roles_of(request.user))}


def staff_required(*roles: str):
    """A verified staff session holding one of ``roles``. Anyone else is sent to the staff
    login (no page content), or refused (403) when logged in without the role."""

    def decorator(view):
        @wraps(view)
        @never_cache
        def wrapper(request, *args, **kwargs):
            user = request.user
            if not user.is_authenticated:
                return _to("staff_login", request)
            if hasattr(user, "professional"):
                raise PermissionDenied  # a professional's PSC session is never staff
            if not user.is_verified() or _code_too_old(request, settings.SESSION_COOKIE_AGE):
                return _to("staff_code", request)
            if not roles_of(user) & set(roles):
                raise PermissionDenied
            request.session.set_expiry(settings.STAFF_IDLE_SECONDS)  # from this request on
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def recent_code(view):
    """For destructive actions: the staff member's code typed not long ago, else again."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if _code_too_old(request, settings.STAFF_RECENT_LOGIN_SECONDS):
            return _to("staff_code", request)
        return view(request, *args, **kwargs)

    return wrapper


def _code_too_old(request, seconds: int) -> bool:
    return time.time() - request.session.get(VERIFIED_AT, 0) > seconds


def _to(name: str, request):
    # After a POST, come back to the page (its GET), not to the form's target.
    return redirect(f"{reverse(name)}?{urlencode({'next': request.get_full_path()})}")


def _step(name: str, request):
    """Another step of the staff login, still bound for where the login was going."""
    return redirect(f"{reverse(name)}?{urlencode({'next': _next_url(request)})}")


def _next_url(request, default: str = "helpdesk_search") -> str:
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return reverse(default)


class StaffLoginView(LoginView):
    """Step 1: username and password (ModelBackend). Then the code, on its own page.
    Failures spend the client address's staff budget: guessing is slowed, nobody locked."""

    template_name = "staff/login.html"
    redirect_authenticated_user = False

    def post(self, request, *args, **kwargs):
        wait = _address_wait(request)
        if wait:
            _audit_throttled(request, "staff.password")
            # An unbound form: validating the typed one would check its password (a hash per
            # refused request, the very work the throttle is there to spare).
            typed = {"username": request.POST.get("username", "")[:150]}
            form = self.get_form_class()(request, initial=typed)
            context = self.get_context_data(form=form, refusal=_too_many(wait))
            return self.render_to_response(context, status=429)
        return super().post(request, *args, **kwargs)

    def form_valid(self, form):
        auth.login(self.request, form.get_user(), backend=settings.STAFF_AUTH_BACKEND)
        self.request.session.set_expiry(settings.STAFF_IDLE_SECONDS)
        audit.record(self.request, "staff.password", outcome="ok")
        return redirect(f"{reverse('staff_code')}?{urlencode({'next': self.get_redirect_url()})}")

    def form_invalid(self, form):
        _spend_address_budget(self.request)
        # Only a name that exists goes in the trail: a password typed into the username
        # field by mistake must not.
        typed = form.data.get("username", "")[:150]
        exists = get_user_model().objects.filter(username=typed).exists()
        audit.write(
            actor_kind="staff",
            actor=typed if exists else "",
            action="staff.password",
            outcome="reject",
            client_ip=client_ip(self.request),
            details={} if exists else {"reason": "unknown_username"},
        )
        return super().form_invalid(form)


staff_login = sensitive_post_parameters("password")(never_cache(StaffLoginView.as_view()))


def _budget_key(request) -> str:
    try:
        return "staff:" + throttle_source(client_ip(request))
    except ValueError:
        return "staff:unknown"


def _address_wait(request) -> int:
    return throttle.address_wait(_budget_key(request))


def _spend_address_budget(request) -> None:
    throttle.spend_address_token(_budget_key(request))


def _audit_throttled(request, action: str) -> None:
    """A refusal before any check, for an address over its budget: audited once a minute
    (audit.due), as the verifier's, since each costs its sender nothing."""
    if audit.due(_budget_key(request), action):
        user = request.user
        audit.write(
            actor_kind="staff",
            actor=user.get_username() if user.is_authenticated else "",
            action=action,
            outcome="reject",
            client_ip=client_ip(request),
            details={"reason": "address_throttled"},
        )


def _too_many(wait: int) -> str:
    return ngettext(
        "Too many attempts from this address. Try again in %(seconds)s second.",
        "Too many attempts from this address. Try again in %(seconds)s seconds.",
        wait,
    ) % {"seconds": wait}


def _password_step_done(view):
    """Logged in with the password (the code may be pending); not a professional's session."""

    @wraps(view)
    @never_cache
    @sensitive_post_parameters("code", "token")
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return _to("staff_login", request)
        if hasattr(request.user, "professional"):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapper


@_password_step_done
def staff_code(request):
    """Step 2: the code from the staff member's own phone, or its enrolment the first time."""
    if not Device.objects.filter(user=request.user, confirmed=True).exists():
        return _step("staff_enrol", request)
    form = CodeForm(request.POST or None)
    wait = _address_wait(request) if request.method == "POST" else 0
    if wait:
        _audit_throttled(request, "staff.code")
        form.add_error(None, _too_many(wait))
    elif request.method == "POST" and form.is_valid():
        outcome, device = _check_staff_code(request.user, form.cleaned_data["code"])
        if outcome == "ok":
            return _verified(request, device, "staff.code")
        audit.record(request, "staff.code", outcome="reject", details={"reason": outcome})
        _spend_address_budget(request)
        if outcome == "throttled":
            form.add_error("code", _too_many_codes(staff_code_wait(device)))
        else:
            form.add_error(
                "code",
                _(
                    "This code is not right, or it was already used. Wait for "
                    "the next one and try again."
                ),
            )
    return render(request, "staff/code.html", {"form": form, "next": _next_url(request)})


def staff_code_wait(device: Device) -> int:
    """Seconds before the device takes a code again after wrong ones: django-otp's doubling
    wait, capped (its own cap is a century, so that a few wrong codes shut the staff member
    out for days). Someone who knows the password can still re-arm the wait with a wrong
    code every few minutes: the staff.code refusals in the trail are the sign to change it."""
    allowed, info = device.verify_is_allowed()
    if allowed or "locked_until" not in (info or {}):
        return 0
    cap = device.throttling_failure_timestamp + timedelta(
        seconds=settings.STAFF_CODE_MAX_WAIT_SECONDS
    )
    left = (min(info["locked_until"], cap) - timezone.now()).total_seconds()
    return max(0, math.ceil(left))


def _too_many_codes(wait: int) -> str:
    return ngettext(
        "Too many wrong codes: try again in %(seconds)s second.",
        "Too many wrong codes: try again in %(seconds)s seconds.",
        wait,
    ) % {"seconds": wait}


@sensitive_variables("code")
def _check_staff_code(user, code: str) -> tuple[str, Device]:
    """django-otp's throttling and our step claim, under the device's row lock: its
    throttle_increment() saves the whole row, and must not write back an older last_t
    (which would let the same code in twice)."""
    with transaction.atomic():
        device = Device.objects.select_for_update().get(user=user, confirmed=True)
        if staff_code_wait(device):
            return "throttled", device
        if device.verify_token(code):
            device.throttle_reset(commit=False)
            device.save(update_fields=["throttling_failure_count", "throttling_failure_timestamp"])
            return "ok", device
        device.throttle_increment(commit=False)
        device.save(update_fields=["throttling_failure_count", "throttling_failure_timestamp"])
        return "wrong_code", device


PENDING = "staff_pending_device"
PRESENTED_TOKEN = "staff_presented_token"  # noqa: S105  (the session key of the token's id)


@_password_step_done
@sensitive_variables("seed", "uri")
def staff_enrol(request):
    """First login: a phone for this staff account, confirmed by its first code. The key is
    shown only to the browser session that presented the account's enrolment token, and
    made for that session alone."""
    if Device.objects.filter(user=request.user, confirmed=True).exists():
        return _step("staff_code", request)
    if staff_tokens.presented_token(request.user, request.session.get(PRESENTED_TOKEN)) is None:
        return _ask_for_token(request)
    form = CodeForm(request.POST or None)
    device = _owned_pending_device(request)
    if device is None:
        if request.method == "POST":  # the key this page showed is gone: show a new one
            return _step("staff_enrol", request)
        device = _new_pending_device(request)
    if request.method == "POST" and form.is_valid():
        result = _confirm_spending_the_token(request, device, form.cleaned_data["code"])
        if result is None:  # the token was replaced or expired since this page was shown
            return _step("staff_enrol", request)
        if result.outcome is Outcome.CONFIRMED:
            device.refresh_from_db()
            request.session.pop(PENDING, None)
            request.session.pop(PRESENTED_TOKEN, None)
            _tell_staff_member(request.user)
            return _verified(request, device, "staff.enrolment")
        audit.record(request, "staff.enrolment", outcome=result.outcome.value)
        form.add_error(
            "code",
            _(
                "This code is not right. Check the phone's time and type "
                "the code FreeOTP shows now."
            ),
        )
        if result.outcome is Outcome.EXPIRED:
            device = _new_pending_device(request)
    seed = device.seed()
    uri = enrolling.otpauth_uri(device, f"staff {request.user.get_username()}", seed)
    ctx = {
        "form": form,
        "next": _next_url(request),
        "qr_svg": enrolling.qr_svg(uri),
        "otpauth_uri": uri,
        "secret_text": enrolling.grouped(totp.base32_secret(seed)),
    }
    return render(request, "staff/enrol.html", ctx)


def _confirm_spending_the_token(request, device: Device, code: str):
    """The phone confirmed and the session's token spent in one transaction, under the token's
    row lock: a token replaced (reset-phone, enrolment-token) or expired since the page was
    shown confirms nothing (None)."""
    presented = request.session.get(PRESENTED_TOKEN)
    with transaction.atomic():
        token = staff_tokens.presented_token(request.user, presented, lock=True)
        if token is None:
            return None
        result = enrolling.confirm_enrolment(device, code)
        if result.outcome is Outcome.CONFIRMED:
            token.delete()
    return result


@sensitive_variables()
def _ask_for_token(request):
    """Before any key is shown: the one-time token given with the account, claimed for this
    browser session. A wrong one spends the address's budget, as a wrong password does."""
    form = EnrolmentTokenForm(request.POST or None)
    wait = _address_wait(request) if request.method == "POST" else 0
    if wait:
        _audit_throttled(request, "staff.enrolment_token")
        form.add_error(None, _too_many(wait))
    elif request.method == "POST" and form.is_valid():
        outcome, token = staff_tokens.present(request.user, form.cleaned_data["token"])
        if token is not None:
            _new_session_key(request)  # the key it unlocks is for this browser alone
            request.session[PRESENTED_TOKEN] = token.pk
            audit.record(request, "staff.enrolment_token", outcome="ok")
            return _step("staff_enrol", request)
        _spend_address_budget(request)
        audit.record(
            request, "staff.enrolment_token", outcome="reject", details={"reason": outcome.value}
        )
        form.add_error("token", _token_refusal(outcome))
    ctx = {"form": form, "next": _next_url(request)}
    return render(request, "staff/enrol_token.html", ctx, status=429 if wait else 200)


def _token_refusal(outcome: staff_tokens.Presented) -> str:
    if outcome is staff_tokens.Presented.ALREADY_PRESENTED:
        return _(
            "This enrolment token was already used, in this browser or another. If it was not "
            "you, tell your security officer at once; ask them for a new token."
        )
    return _(
        "This enrolment token is not right, or it expired. Type it as you were given it, or "
        "ask your security officer for a new one."
    )


def _owned_pending_device(request) -> Device | None:
    return enrolling.pending_device_in(request.session, request.user, PENDING)


def _new_pending_device(request) -> Device:
    # Drops any other pending key of this staff member.
    return enrolling.start_enrolment_in(request.session, request.user, PENDING)


def _tell_staff_member(user) -> None:
    if user.email:
        send_mail(
            _("A phone was enrolled for your staff account"),
            _(
                "A phone was just enrolled for the codes of your staff account %(username)s. "
                "If it was not you, tell your security officer at once."
            )
            % {"username": user.get_username()},
            None,
            [user.email],
        )


def _verified(request, device: Device, action: str):
    _new_session_key(request)
    otp_login(request, device)
    request.session[VERIFIED_AT] = int(time.time())
    audit.record(request, action, outcome="ok")
    return redirect(_next_url(request))


def _new_session_key(request) -> None:
    """At each step past the password (the enrolment token, the code): a session that
    someone who knew only the password made, and planted in the staff member's browser,
    gains nothing from what the staff member types there. A new CSRF secret too, as
    Django's own login() gives."""
    request.session.cycle_key()
    rotate_token(request)


@never_cache
def staff_logout(request):
    if request.method == "POST":
        auth.logout(request)
    return redirect("staff_login")
