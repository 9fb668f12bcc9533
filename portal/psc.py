"""Login with Pro Santé Connect (PSC), on mozilla-django-oidc.

The library does the authorization-code flow with PKCE, state and nonce, and checks the ID token's
signature. This module adds what PSC needs on top: the professional keyed by SubjectNameID (never
by email), the ID token's issuer, audience and acr, the recent-login rule, logout through PSC, and
a clear page for each way a login can fail.
"""

import logging
import time
from functools import wraps
from urllib.parse import urlencode

import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import get_random_string
from django.utils.translation import gettext_lazy as _
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from enrolment import audit
from enrolment.mail_sessions import throttle_source
from enrolment.models import Professional
from portal.client import client_ip

logger = logging.getLogger(__name__)

# How far PSC's clock may be from ours for an ID token's exp, iat and nbf.
CLOCK_LEEWAY_SECONDS = 60

# Claims of the userinfo kept on the professional for later steps; the rest is dropped.
KEPT_CLAIMS = ("SubjectRefPro", "SubjectRole", "otherIds", "authMode")

FAILURES = {
    "unreachable": (
        503,
        _("Pro Santé Connect cannot be reached"),
        _(
            "Pro Santé Connect did not answer. Nothing was changed; "
            "please try again in a few minutes."
        ),
    ),
    "cancelled": (
        200,
        _("Login cancelled"),
        _(
            "The login at Pro Santé Connect was cancelled or consent was refused. "
            "You are not logged in."
        ),
    ),
    "acr": (
        403,
        _("Authentication level too low"),
        _(
            "This portal needs a login with a CPS card or e-CPS "
            "at the required level (eIDAS substantial)."
        ),
    ),
    "unknown_professional": (
        403,
        _("No mailbox for you here"),
        _(
            "You are logged in at Pro Santé Connect, but this operator holds no mailbox for you. "
            "If you think this is wrong, contact your operator's helpdesk."
        ),
    ),
    "tampered": (
        400,
        _("This login link is not valid"),
        _(
            "The answer from Pro Santé Connect was altered, already used, or expired. "
            "Please log in again."
        ),
    ),
}


class PSCLoginRefused(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def failure_page(request, reason: str, detail: str = "", *, sampled: bool = False):
    """The page of a failed login, logged and audited. ``sampled``: a failure that anyone can
    cause without logging in at PSC (a callback link of no login of this browser's), logged
    and audited once a minute per address (audit.due), lest a loop of such links flood both."""
    if not sampled or audit.due(_sampling_source(request), f"psc.{reason}"):
        logger.warning("PSC login refused (%s): %s", reason, detail)
        target = detail if reason == "unknown_professional" else ""
        details = {"reason": reason}
        audit.record(request, "psc.login", outcome="refused", target=target, details=details)
    # Shown at an address of its own: rendered at the callback's, a refresh or the language
    # switch (whose "next" is the page's address) replayed the spent code and state, and the
    # real reason became "this link is not valid"; the code stayed in the history too.
    return redirect(f"{reverse('psc_failure')}?{urlencode({'reason': reason})}")


def failure_view(request):
    """The page of a failed login, by its reason: a fixed text, nothing of the login's."""
    reason = request.GET.get("reason", "")
    if reason not in FAILURES:
        raise Http404
    status, title, message = FAILURES[reason]
    return render(request, "psc/failure.html", {"title": title, "message": message}, status=status)


def _sampling_source(request) -> str:
    try:
        return throttle_source(client_ip(request))  # an IPv6 client's whole /64
    except ValueError:
        return "unknown"


class PSCBackend(OIDCAuthenticationBackend):
    """Finds the professional by PSC's SubjectNameID; refuses anyone the operator does not know."""

    def authenticate(self, request, **kwargs):
        # Only the callback view's call, which brings the nonce and PKCE verifier this session
        # stored. Django asks every backend at every authenticate() (the staff login's too),
        # and the library would redeem a ?code= on any page without them: a code obtained
        # elsewhere would log someone in, and anyone could make the portal call PSC's token
        # endpoint with its client secret at will.
        if kwargs.get("nonce") is None or kwargs.get("code_verifier") is None:
            return None
        return super().authenticate(request, **kwargs)

    def get_user(self, user_id):
        # Each request of a PSC session: a professional (or account) deactivated since the
        # login is logged out at once, not at the end of the session.
        user = super().get_user(user_id)
        if user is None or not user.is_active:
            return None
        professional = getattr(user, "professional", None)
        if professional is not None and not professional.is_active:
            return None
        return user

    def _verify_jws(self, payload, key):
        # The library's check (the header's alg must be the one configured), with a leeway on
        # exp, iat and nbf: PyJWT refuses an iat a second ahead of our clock, so a portal
        # clock slightly behind PSC's would turn every login into an "altered answer".
        alg = jwt.get_unverified_header(payload).get("alg")
        if alg != self.OIDC_RP_SIGN_ALGO:
            raise SuspiciousOperation(f"ID token signed with {alg!r}")
        return jwt.decode(
            payload,
            key,
            algorithms=[alg],
            options={"verify_aud": False},  # checked by check_id_token, with azp
            leeway=CLOCK_LEEWAY_SECONDS,
        )

    def get_token(self, payload):
        if not settings.PSC_CLIENT_CERT_FILE:
            return super().get_token(payload)
        # mTLS client authentication (PSC's "Espace de Confiance"): the certificate replaces
        # the secret, which is not sent.
        payload.pop("client_secret", None)
        response = _with_certificate(requests.post, self.OIDC_OP_TOKEN_ENDPOINT, data=payload)
        self.raise_token_response_error(response)
        return response.json()

    def get_userinfo(self, access_token, id_token, payload):
        if not settings.PSC_CLIENT_CERT_FILE:
            return super().get_userinfo(access_token, id_token, payload)
        # PSC binds the access token to the certificate that obtained it
        # (tls_client_certificate_bound_access_tokens): the userinfo call presents it too.
        response = _with_certificate(
            requests.get,
            self.OIDC_OP_USER_ENDPOINT,
            headers={"Authorization": f"Bearer {access_token}"},
        )
        response.raise_for_status()
        if response.headers.get("content-type", "").lower().startswith("application/jwt"):
            return self.verify_token(response.text)  # a signed userinfo answer
        return response.json()

    def verify_token(self, token, **kwargs):
        try:
            payload = super().verify_token(token, **kwargs)
        except (SuspiciousOperation, jwt.InvalidTokenError) as exc:
            raise PSCLoginRefused("tampered", str(exc)) from None
        if "nonce" in kwargs:  # the ID token (userinfo as a JWT comes without a nonce)
            self.check_id_token(payload)
        else:
            self.check_signed_userinfo(payload)
        return payload

    def check_signed_userinfo(self, payload: dict) -> None:
        """OIDC Core 5.3.2: a signed userinfo answer's iss and aud, when present, are PSC's
        and ours."""
        if "iss" in payload and payload["iss"] != settings.PSC_ISSUER:
            raise PSCLoginRefused("tampered", f"userinfo issuer {payload['iss']!r}")
        audience = payload.get("aud", self.OIDC_RP_CLIENT_ID)
        audiences = audience if isinstance(audience, list) else [audience]
        if self.OIDC_RP_CLIENT_ID not in audiences:
            raise PSCLoginRefused("tampered", f"userinfo audience {audience!r}")

    def check_id_token(self, payload: dict) -> None:
        if payload.get("iss") != settings.PSC_ISSUER:
            raise PSCLoginRefused("tampered", f"issuer {payload.get('iss')!r}")
        audience = payload.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.OIDC_RP_CLIENT_ID not in audiences or (
            len(audiences) > 1 and payload.get("azp") != self.OIDC_RP_CLIENT_ID
        ):
            raise PSCLoginRefused("tampered", f"audience {audience!r}")
        if "exp" not in payload:
            raise PSCLoginRefused("tampered", "no expiry")
        if payload.get("acr") != settings.PSC_REQUIRED_ACR:
            raise PSCLoginRefused("acr", f"acr {payload.get('acr')!r}")
        auth_time = payload.get("auth_time")
        if self.request.session.get("psc_reauth_asked"):
            # We asked for a fresh authentication (max_age): PSC must show when it happened.
            fresh = isinstance(auth_time, int) and (
                time.time() - auth_time <= settings.PSC_RECENT_LOGIN_SECONDS
            )
            if not fresh:
                raise PSCLoginRefused("tampered", "no fresh auth_time after max_age")
        if not isinstance(auth_time, int):
            auth_time = 0  # unknown: not recent, so the recent-login rule asks PSC again
        self.request.psc_login = {"auth_time": auth_time}

    def store_tokens(self, access_token, id_token):
        # Kept on the request, and put in the session by the callback view after login():
        # login() may flush the session (another user was logged in), which would lose them.
        self.request.psc_login["id_token"] = id_token

    def get_or_create_user(self, access_token, id_token, payload):
        claims = self.get_userinfo(access_token, id_token, payload)
        # OIDC Core 5.3.2: the userinfo must be about the ID token's subject, else an answer
        # swapped on the way (or another login's access token) picks whom we log in.
        if not claims.get("sub") or claims.get("sub") != payload.get("sub"):
            raise PSCLoginRefused("tampered", "userinfo sub is not the ID token's")
        national_id = str(claims.get("SubjectNameID") or "")
        professional = (
            Professional.objects.filter(
                national_id=national_id,
                is_active=True,
                memberships__mailbox__is_active=True,
            )
            .distinct()
            .first()
        )
        if professional is None:
            raise PSCLoginRefused("unknown_professional", national_id)
        return self.link_user(professional, claims)

    @transaction.atomic
    def link_user(self, professional: Professional, claims: dict):
        # Under the professional's row lock: two first logins at once (two tabs, a retry)
        # take turns, and the second finds the user the first made.
        professional = Professional.objects.select_for_update().get(pk=professional.pk)
        user = professional.user
        if user is None:
            user = get_user_model().objects.create_user(f"psc-{professional.national_id}")
            professional.user = user
        user.first_name = str(claims.get("given_name", ""))[:150]
        user.last_name = str(claims.get("family_name", ""))[:150]
        user.save(update_fields=["first_name", "last_name"])
        professional.given_name, professional.family_name = user.first_name, user.last_name
        professional.psc_claims = {k: claims[k] for k in KEPT_CLAIMS if k in claims}
        professional.last_login_at = timezone.now()
        professional.last_login_method = str(claims.get("authMode", ""))[:32]
        professional.save()
        return user


def _with_certificate(send, url: str, **kwargs):
    return send(
        url,
        cert=(settings.PSC_CLIENT_CERT_FILE, settings.PSC_CLIENT_KEY_FILE),
        verify=settings.OIDC_VERIFY_SSL,
        timeout=settings.OIDC_TIMEOUT,
        **kwargs,
    )


class PSCLoginView(OIDCAuthenticationRequestView):
    """Sends the browser to PSC. With ?reauth=1 (the recent-login rule) PSC is asked, through
    max_age, for a fresh authentication."""

    def get_extra_params(self, request):
        params = {"acr_values": settings.PSC_REQUIRED_ACR}
        request.session["psc_reauth_asked"] = bool(request.GET.get("reauth"))
        if request.GET.get("reauth"):
            params["max_age"] = reauth_max_age(request)
        return params


def reauth_max_age(request) -> int:
    """Half the window: a login PSC reuses is then young enough for several minutes of the
    page's work, not sent back to PSC seconds after returning from it. After a helpdesk
    reset, no older than the reset: PSC would otherwise answer with its login from before
    it, which recent_psc_login refuses, and send the browser round in a loop."""
    max_age = settings.PSC_RECENT_LOGIN_SECONDS // 2
    reset_at = _access_reset_at(request)
    if reset_at is not None:
        max_age = min(max_age, max(0, int(time.time() - reset_at.timestamp())))
    return max_age


def _access_reset_at(request):
    professional = getattr(request.user, "professional", None)
    return getattr(professional, "access_reset_at", None)


class PSCCallbackView(OIDCAuthenticationCallbackView):
    def get(self, request):
        if request.GET.get("error"):
            own = request.GET.get("state") in request.session.get("oidc_states", {})
            if own:
                # This session's own login failed: the library forgets the state (no
                # replay) and logs out. Any other error link (a cross-site image, say) must
                # not log anyone out.
                super().get(request)
            error = repr(request.GET["error"][:64])
            return failure_page(request, "cancelled", error, sampled=not own)
        try:
            return super().get(request)
        except SuspiciousOperation as exc:  # unknown or reused state
            return failure_page(request, "tampered", str(exc), sampled=True)
        except PSCLoginRefused as exc:
            return failure_page(request, exc.reason, exc.detail)
        except requests.HTTPError as exc:
            # The token endpoint refuses a reused or foreign code with a 4xx.
            status = exc.response.status_code if exc.response is not None else 502
            return failure_page(request, "tampered" if status < 500 else "unreachable", str(exc))
        except requests.RequestException as exc:
            return failure_page(request, "unreachable", type(exc).__name__)

    def login_failure(self):
        detail = "no pending login in this session"
        return failure_page(self.request, "tampered", detail, sampled=True)

    def login_success(self):
        response = super().login_success()
        self.request.session["psc_auth_time"] = self.request.psc_login["auth_time"]
        self.request.session["psc_id_token"] = self.request.psc_login["id_token"]
        audit.record(self.request, "psc.login", outcome="ok")
        return response


def end_session_url(request) -> str:
    """Where logout sends the browser: PSC's end-session endpoint, which ends the PSC session
    too, then comes back to our home page."""
    id_token = request.session.get("psc_id_token")
    if not id_token or not settings.OIDC_OP_LOGOUT_ENDPOINT:
        return reverse("home")
    query = urlencode(
        {
            "id_token_hint": id_token,
            "post_logout_redirect_uri": request.build_absolute_uri(reverse("home")),
            "state": get_random_string(32),
        }
    )
    return f"{settings.OIDC_OP_LOGOUT_ENDPOINT}?{query}"


def recent_psc_login(view):
    """For enrolment and password changes: a PSC login younger than PSC_RECENT_LOGIN_SECONDS.
    An older session goes back through PSC (max_age) and returns to the page it asked for."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        auth_time = request.session.get("psc_auth_time", 0)
        reset_at = _access_reset_at(request)
        # After a helpdesk reset, only a PSC login made since counts (auth_time is in whole
        # seconds: one in the reset's own second counts as after it).
        reset_since = reset_at is not None and auth_time < int(reset_at.timestamp())
        if reset_since or time.time() - auth_time > settings.PSC_RECENT_LOGIN_SECONDS:
            query = urlencode({"next": request.get_full_path(), "reauth": "1"})
            return redirect(f"{reverse('oidc_authentication_init')}?{query}")
        return view(request, *args, **kwargs)

    return wrapper
