"""Login through the real stand-in PSC process, without a visitor: every refusal of DESIGN §6."""

import base64
import hashlib
import re
import secrets
import time
from urllib.parse import parse_qs, urlencode, urljoin, urlparse, urlunparse

import jwt
import pytest
import requests
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.utils import timezone

from enrolment.models import AuditEvent, Professional
from tests.psc_standin import CLIENT_SECRET, log_in, login_form_action
from tests.token_proxy import MutualTLSProxy, TokenProxy, UserinfoProxy, make_test_pki

DOCTOR, NURSE, STRANGER = "899700000001", "899700000002", "899700000099"


@pytest.fixture
def visitor():
    session = requests.Session()
    session.headers["Accept-Language"] = "en"
    return session


@pytest.fixture
def portal(live_server, standin_psc, demo_mailboxes):
    return live_server.url


def logged_in_sessions() -> list[Session]:
    return [s for s in Session.objects.all() if "_auth_user_id" in s.get_decoded()]


def assert_nothing_left_behind():
    assert get_user_model().objects.count() == 0
    assert not Professional.objects.filter(user__isnull=False).exists()
    assert logged_in_sessions() == []


def authorize_url(visitor, portal) -> str:
    """The portal's authorization request to PSC, as its redirect hands it to the visitor."""
    response = visitor.get(f"{portal}/oidc/authenticate/", allow_redirects=False, timeout=10)
    assert response.status_code == 302
    return response.headers["Location"]


def with_params(url: str, **changes) -> str:
    parts = urlparse(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return urlunparse(parts._replace(query=urlencode({**query, **changes})))


def follow_to_callback(visitor, url, national_id) -> str:
    """Log in at PSC from ``url`` and stop at the redirect to the portal's callback."""
    response = visitor.post(
        login_form_action(visitor.get(url, timeout=10)),
        data={"sub": national_id, "action": "login"},
        allow_redirects=False,
        timeout=10,
    )
    while "/oidc/callback/" not in response.headers.get("Location", ""):
        assert response.status_code in (302, 303), response.text[:300]
        response = visitor.get(
            urljoin(response.url, response.headers["Location"]), allow_redirects=False, timeout=10
        )
    return urljoin(response.url, response.headers["Location"])


def test_a_professional_logs_in_and_sees_name_and_mailboxes(portal, visitor):
    home = log_in(visitor, f"{portal}/oidc/authenticate/", NURSE)

    assert home.url == f"{portal}/"
    assert "Sofia Benali" in home.text
    assert "899700000002" in home.text
    assert "accueil@clinique-demo.mssante.fr" in home.text
    assert "No phone is enrolled yet" in home.text
    professional = Professional.objects.get(national_id=NURSE)
    assert professional.user is not None and professional.last_login_at is not None
    assert "SubjectRefPro" in professional.psc_claims
    assert AuditEvent.objects.filter(action="psc.login", outcome="ok", actor=NURSE).exists()


def test_french_is_the_default_language(portal):
    home = log_in(requests.Session(), f"{portal}/oidc/authenticate/", DOCTOR)
    assert '<html lang="fr">' in home.text
    assert "Mes boîtes aux lettres" in home.text


def test_an_hs256_signed_id_token_is_accepted_too(portal, visitor, standin_psc, settings):
    for name, value in standin_psc.settings("portal-hs256", "HS256").items():
        setattr(settings, name, value)
    home = log_in(visitor, f"{portal}/oidc/authenticate/", DOCTOR)
    assert "Claire Martin" in home.text


def test_a_professional_unknown_to_the_operator_gets_a_clear_page(portal, visitor):
    page = log_in(visitor, f"{portal}/oidc/authenticate/", STRANGER)

    assert page.status_code == 403
    assert "No mailbox for you here" in page.text
    assert not Professional.objects.filter(national_id=STRANGER).exists()
    assert_nothing_left_behind()
    assert AuditEvent.objects.filter(outcome="refused", target=STRANGER).exists()


def test_a_cancelled_login_gets_a_clear_page(portal, visitor):
    page = log_in(visitor, f"{portal}/oidc/authenticate/", DOCTOR, action="cancel")
    assert "Login cancelled" in page.text
    assert_nothing_left_behind()


def test_an_error_link_from_elsewhere_does_not_log_anyone_out(portal, visitor):
    log_in(visitor, f"{portal}/oidc/authenticate/", DOCTOR)
    visitor.get(f"{portal}/oidc/callback/?error=access_denied", timeout=10)
    visitor.get(f"{portal}/oidc/callback/?error=access_denied&state=forged", timeout=10)
    assert len(logged_in_sessions()) == 1
    assert "Claire Martin" in visitor.get(f"{portal}/", timeout=10).text


def test_a_refusal_survives_a_refresh_and_the_language_switch(portal, visitor):
    """Rendered at the callback's address, both replayed the spent code: the real reason
    became 'this login link is not valid'."""
    page = log_in(visitor, f"{portal}/oidc/authenticate/", STRANGER)
    assert urlparse(page.url).path == "/login/failed/" and "code=" not in page.url

    again = visitor.get(page.url, timeout=10)
    assert (again.status_code, again.url) == (403, page.url)
    assert "No mailbox for you here" in again.text
    form = {
        name: re.search(rf'name="{name}" value="([^"]*)"', page.text).group(1)
        for name in ("csrfmiddlewaretoken", "next")
    }
    switched = visitor.post(
        f"{portal}/i18n/setlang/", data={**form, "language": "fr"}, headers={"Referer": portal}
    )
    assert (
        switched.status_code == 403 and "Aucune boîte aux lettres à votre nom ici" in switched.text
    )
    assert AuditEvent.objects.filter(outcome="refused", target=STRANGER).count() == 1


def test_callback_links_of_no_login_here_are_audited_once_a_minute(portal, visitor):
    """Anyone can load such links in a loop, without logging in at PSC: each gets its page,
    the trail a row a minute per address and kind."""
    links = ["?error=access_denied&state=forged", "?code=c&state=forged", ""]
    pages = [visitor.get(f"{portal}/oidc/callback/{link}", timeout=10) for link in links * 20]

    assert {page.status_code for page in pages} == {200, 400}
    refused = AuditEvent.objects.filter(action="psc.login", outcome="refused")
    assert sorted(refused.values_list("details__reason", flat=True)) == ["cancelled", "tampered"]
    # A browser's own failed login is always audited.
    log_in(visitor, f"{portal}/oidc/authenticate/", DOCTOR, action="cancel")
    assert refused.filter(details__reason="cancelled").count() == 2


def test_a_callback_with_a_wrong_state_is_refused(portal, visitor):
    callback = follow_to_callback(visitor, authorize_url(visitor, portal), DOCTOR)
    forged = with_params(callback, state="forged-state")

    page = visitor.get(forged, timeout=10)

    assert page.status_code == 400
    assert "This login link is not valid" in page.text
    assert_nothing_left_behind()


def test_a_replayed_callback_is_refused(portal, visitor):
    callback = follow_to_callback(visitor, authorize_url(visitor, portal), DOCTOR)
    assert "Claire Martin" in visitor.get(callback, timeout=10).text
    visitor.post(
        f"{portal}/logout/",
        headers={"X-CSRFToken": visitor.cookies["csrftoken"], "Referer": f"{portal}/"},
        timeout=10,
    )

    page = visitor.get(callback, timeout=10)

    assert page.status_code == 400
    assert "This login link is not valid" in page.text
    assert logged_in_sessions() == []


def test_a_code_reused_in_another_login_is_refused(portal, visitor):
    callback = follow_to_callback(visitor, authorize_url(visitor, portal), DOCTOR)
    stolen = parse_qs(urlparse(callback).query)["code"][0]
    assert "Claire Martin" in visitor.get(callback, timeout=10).text  # used once, legitimately
    attacker = requests.Session()
    attacker.headers["Accept-Language"] = "en"
    own = follow_to_callback(attacker, authorize_url(attacker, portal), NURSE)

    page = attacker.get(with_params(own, code=stolen), timeout=10)

    assert page.status_code == 400
    assert "This login link is not valid" in page.text
    assert not Professional.objects.filter(national_id=NURSE, user__isnull=False).exists()


def test_a_code_sent_to_another_page_logs_nobody_in_and_stays_unspent(portal, visitor):
    """Django asks every login backend: the staff login form with PSC's ?code= and ?state= on
    its address must not redeem the code (no nonce, no PKCE: a code from elsewhere would log
    its professional in)."""
    callback = follow_to_callback(visitor, authorize_url(visitor, portal), DOCTOR)
    query = urlparse(callback).query
    stranger = requests.Session()
    stranger.headers["Accept-Language"] = "en"
    stranger.get(f"{portal}/staff/login/", timeout=10)

    page = stranger.post(
        f"{portal}/staff/login/?{query}",
        data={"username": "x", "password": "y"},
        headers={"X-CSRFToken": stranger.cookies["csrftoken"], "Referer": f"{portal}/"},
        timeout=10,
    )

    assert page.status_code == 200 and "Staff login" in page.text
    assert logged_in_sessions() == []
    # PSC was never asked: the code still logs in the browser it was made for.
    assert "Claire Martin" in visitor.get(callback, timeout=10).text


def test_an_id_token_with_a_wrong_nonce_is_refused(portal, visitor):
    tampered = with_params(authorize_url(visitor, portal), nonce="nonce-of-another-login")
    page = visitor.get(follow_to_callback(visitor, tampered, DOCTOR), timeout=10)

    assert page.status_code == 400
    assert "This login link is not valid" in page.text
    assert_nothing_left_behind()


def test_an_id_token_with_a_weaker_acr_is_refused(portal, visitor):
    downgraded = with_params(authorize_url(visitor, portal), acr_values="eidas0")
    page = visitor.get(follow_to_callback(visitor, downgraded, DOCTOR), timeout=10)

    assert page.status_code == 403
    assert "Authentication level too low" in page.text
    assert_nothing_left_behind()


@pytest.fixture
def token_proxy(standin_psc, settings):
    proxy = TokenProxy(f"{standin_psc.issuer}/token")
    settings.OIDC_OP_TOKEN_ENDPOINT = proxy.url
    yield proxy
    proxy.close()


def id_token_for_another_service(psc, portal, nonce) -> str:
    """A genuine ID token from the same PSC, issued to another relying party."""
    other = requests.Session()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    url = f"{psc.issuer}/auth?" + urlencode(
        {
            "client_id": "another-service",
            "response_type": "code",
            "scope": "openid scope_all",
            "redirect_uri": f"{portal}/oidc/callback/",
            "state": "s",
            "nonce": nonce,
            "code_challenge": challenge.decode().rstrip("="),
            "code_challenge_method": "S256",
            "acr_values": "eidas1",
        }
    )
    code = parse_qs(urlparse(follow_to_callback(other, url, DOCTOR)).query)["code"][0]
    tokens = requests.post(
        f"{psc.issuer}/token",
        timeout=10,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": f"{portal}/oidc/callback/",
            "client_id": "another-service",
            "client_secret": CLIENT_SECRET,
        },
    ).json()
    return tokens["id_token"]


def test_an_id_token_for_another_audience_is_refused(portal, visitor, standin_psc, token_proxy):
    authorize = authorize_url(visitor, portal)
    nonce = parse_qs(urlparse(authorize).query)["nonce"][0]
    foreign = id_token_for_another_service(standin_psc, portal, nonce)
    token_proxy.alter = lambda id_token: foreign

    page = visitor.get(follow_to_callback(visitor, authorize, DOCTOR), timeout=10)

    assert page.status_code == 400
    assert "This login link is not valid" in page.text
    assert_nothing_left_behind()


def doctors_callback(visitor, portal):
    """The doctor logs in at PSC; the portal's callback page, through whatever a test put on
    the way."""
    return visitor.get(
        follow_to_callback(visitor, authorize_url(visitor, portal), DOCTOR), timeout=10
    )


def test_an_id_token_with_a_bad_signature_is_refused(portal, visitor, token_proxy):
    def flip_signature(id_token):
        head, body, signature = id_token.split(".")
        return f"{head}.{body}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"

    token_proxy.alter = flip_signature
    page = doctors_callback(visitor, portal)
    assert page.status_code == 400
    assert "This login link is not valid" in page.text
    assert_nothing_left_behind()


def test_a_psc_clock_a_little_ahead_is_tolerated_and_an_expired_token_is_not(
    portal, visitor, standin_psc, settings, token_proxy
):
    """PyJWT alone refuses an ID token issued a second "in the future": a portal clock
    behind PSC's would show every professional the "altered answer" page."""
    for name, value in standin_psc.settings("portal-hs256", "HS256").items():
        if name != "OIDC_OP_TOKEN_ENDPOINT":  # the proxy's
            setattr(settings, name, value)

    def resigned(**changes):
        def resign(id_token):
            claims = jwt.decode(id_token, options={"verify_signature": False})
            changed = {**claims, **changes}
            return jwt.encode(changed, settings.OIDC_RP_CLIENT_SECRET, algorithm="HS256")

        return resign

    token_proxy.alter = resigned(iat=int(time.time()) + 20)  # PSC's clock 20 s ahead
    assert "Claire Martin" in doctors_callback(visitor, portal).text

    late = requests.Session()
    token_proxy.alter = resigned(exp=int(time.time()) - 120)  # expired by any clock
    page = late.get(follow_to_callback(late, authorize_url(late, portal), NURSE), timeout=10)
    assert page.status_code == 400
    assert not Professional.objects.filter(national_id=NURSE, user__isnull=False).exists()


@pytest.fixture
def psc_by_mutual_tls(standin_psc, settings, tmp_path):
    """The portal in PSC_CLIENT_CERT_FILE mode, PSC's token and userinfo behind mTLS."""
    pki = make_test_pki(tmp_path)
    proxy = MutualTLSProxy(standin_psc.issuer, pki, CLIENT_SECRET)
    settings.OIDC_OP_TOKEN_ENDPOINT = f"{proxy.url}/token"
    settings.OIDC_OP_USER_ENDPOINT = f"{proxy.url}/me"
    settings.PSC_CLIENT_CERT_FILE = str(pki["client.crt"])
    settings.PSC_CLIENT_KEY_FILE = str(pki["client.key"])
    settings.OIDC_VERIFY_SSL = str(pki["ca.crt"])
    yield proxy
    proxy.close()


def test_in_mutual_tls_mode_every_call_to_psc_presents_the_certificate(
    portal, visitor, psc_by_mutual_tls
):
    """The Espace de Confiance: the certificate replaces the secret at the token endpoint,
    and PSC binds the access token to it, so the userinfo call must present it too."""
    home = log_in(visitor, f"{portal}/oidc/authenticate/", DOCTOR)
    assert "Claire Martin" in home.text
    assert psc_by_mutual_tls.presented == [("/token", "portal-client"), ("/me", "portal-client")]


def test_a_deactivated_professional_is_logged_out_at_the_next_page(portal, visitor):
    log_in(visitor, f"{portal}/oidc/authenticate/", DOCTOR)
    assert "Claire Martin" in visitor.get(f"{portal}/", timeout=10).text
    Professional.objects.filter(national_id=DOCTOR).update(is_active=False)

    assert "Claire Martin" not in visitor.get(f"{portal}/", timeout=10).text
    page = visitor.get(f"{portal}/password/", allow_redirects=False, timeout=10)
    assert page.status_code == 302 and "/oidc/authenticate/" in page.headers["Location"]


@pytest.fixture
def userinfo_proxy(standin_psc, settings):
    proxy = UserinfoProxy(f"{standin_psc.issuer}/me")
    settings.OIDC_OP_USER_ENDPOINT = proxy.url
    yield proxy
    proxy.close()


def test_userinfo_about_someone_else_than_the_id_token_is_refused(portal, visitor, userinfo_proxy):
    """The ID token says the doctor; the userinfo answer, swapped on the way, says the nurse
    (OIDC Core 5.3.2: its sub must be the ID token's). Nobody is logged in."""

    def the_nurse_instead(claims):
        return {**claims, "sub": NURSE, "SubjectNameID": NURSE}

    userinfo_proxy.alter = the_nurse_instead
    page = doctors_callback(visitor, portal)
    assert page.status_code == 400
    assert "This login link is not valid" in page.text
    assert_nothing_left_behind()
    refusal = AuditEvent.objects.get(action="psc.login")
    assert refusal.details["reason"] == "tampered"


def test_userinfo_without_a_subject_is_refused(portal, visitor, userinfo_proxy):
    userinfo_proxy.alter = lambda claims: {k: v for k, v in claims.items() if k != "sub"}
    page = doctors_callback(visitor, portal)
    assert page.status_code == 400
    assert_nothing_left_behind()


def test_psc_unreachable_gets_a_clear_page(portal, visitor, settings):
    callback = follow_to_callback(visitor, authorize_url(visitor, portal), DOCTOR)
    settings.OIDC_OP_TOKEN_ENDPOINT = "http://127.0.0.1:9/token"  # nothing listens there

    page = visitor.get(callback, timeout=10)

    assert page.status_code == 503
    assert "Pro Santé Connect cannot be reached" in page.text
    assert_nothing_left_behind()


def test_an_old_login_goes_back_through_psc_and_returns_to_the_page(portal, visitor):
    log_in(visitor, f"{portal}/oidc/authenticate/", DOCTOR)
    assert "Enrol your phone" in visitor.get(f"{portal}/enrolment/", timeout=10).text
    [session] = logged_in_sessions()
    data = session.get_decoded()
    data["psc_auth_time"] = time.time() - 3600
    Session.objects.filter(pk=session.pk).update(session_data=Session.objects.encode(data))

    back_to_psc = visitor.get(f"{portal}/enrolment/", allow_redirects=False, timeout=10)
    to_psc = visitor.get(
        urljoin(portal, back_to_psc.headers["Location"]), allow_redirects=False, timeout=10
    )
    assert parse_qs(urlparse(to_psc.headers["Location"]).query)["max_age"] == ["300"]
    # PSC's own session is fresh here, so PSC answers without asking again.
    page = visitor.get(to_psc.headers["Location"], timeout=10)

    assert page.url == f"{portal}/enrolment/"
    assert "Enrol your phone" in page.text
    assert AuditEvent.objects.filter(action="psc.login", outcome="ok").count() == 2


def test_after_a_helpdesk_reset_psc_is_asked_for_a_new_login_not_sent_round(portal, visitor):
    """PSC's own session is seconds old, but from before the reset: a max_age of minutes
    would have PSC answer with it, which the portal refuses, again and again."""
    log_in(visitor, f"{portal}/oidc/authenticate/", DOCTOR)
    time.sleep(1.1)
    Professional.objects.filter(national_id=DOCTOR).update(access_reset_at=timezone.now())

    back_to_psc = visitor.get(f"{portal}/enrolment/", allow_redirects=False, timeout=10)
    page = visitor.get(urljoin(portal, back_to_psc.headers["Location"]), timeout=10)
    again = visitor.post(
        login_form_action(page), data={"sub": DOCTOR, "action": "login"}, timeout=10
    )  # PSC asked for the card again

    assert again.url == f"{portal}/enrolment/"
    assert "Enrol your phone" in again.text


def test_an_id_token_without_auth_time_counts_as_an_old_login(settings, rf):
    """The recent-login rule then sends the professional back through PSC, with max_age."""
    from portal.psc import PSCBackend

    backend = PSCBackend()
    backend.request = rf.get("/oidc/callback/")
    backend.request.session = {}
    backend.check_id_token(
        {
            "iss": settings.PSC_ISSUER,
            "aud": backend.OIDC_RP_CLIENT_ID,
            "exp": int(time.time()) + 60,
            "acr": settings.PSC_REQUIRED_ACR,
        }
    )
    assert backend.request.psc_login == {"auth_time": 0}


def test_two_first_logins_at_once_link_one_user(demo_mailboxes, rf):
    """Each read the professional before either made the user: the second finds it."""
    from portal.psc import PSCBackend

    backend = PSCBackend()
    backend.request = rf.get("/oidc/callback/")
    first, second = (Professional.objects.get(national_id=DOCTOR) for _ in range(2))
    claims = {"given_name": "Claire", "family_name": "Martin"}
    assert backend.link_user(first, claims) == backend.link_user(second, claims)
    assert get_user_model().objects.count() == 1


def test_logout_goes_through_psc_end_session(portal, visitor, standin_psc):
    log_in(visitor, f"{portal}/oidc/authenticate/", DOCTOR)
    response = visitor.post(
        f"{portal}/logout/",
        allow_redirects=False,
        timeout=10,
        headers={"X-CSRFToken": visitor.cookies["csrftoken"], "Referer": f"{portal}/"},
    )

    target = urlparse(response.headers["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{standin_psc.issuer}/session/end"
    query = parse_qs(target.query)
    assert query["post_logout_redirect_uri"] == [f"{portal}/"]
    assert query["id_token_hint"][0].count(".") == 2
    assert logged_in_sessions() == []
    [logout] = AuditEvent.objects.filter(action="psc.logout")
    assert (logout.actor_kind, logout.actor, logout.outcome) == ("professional", DOCTOR, "ok")


def test_psc_stopped_during_a_login_gets_a_clear_page_then_works_again(
    live_server, demo_mailboxes, visitor, settings, tmp_path
):
    """The stand-in PSC process stops between the professional's login there and the
    callback: a clear page, nobody half logged in; once PSC is back, the login works."""
    from tests.psc_standin import start_standin

    starts = iter(("psc.log", "psc-again.log"))  # each start's own log, for a failure

    def psc_for_this_test():
        psc = start_standin(live_server.url, tmp_path / next(starts))
        for name, value in psc.settings().items():
            setattr(settings, name, value)
        return psc

    psc = psc_for_this_test()
    try:
        callback = follow_to_callback(visitor, authorize_url(visitor, live_server.url), DOCTOR)
        psc.process.terminate()
        psc.process.wait(timeout=10)

        page = visitor.get(callback, timeout=10)
        assert page.status_code == 503
        assert "Pro Santé Connect cannot be reached" in page.text
        assert_nothing_left_behind()

        psc = psc_for_this_test()
        home = log_in(visitor, f"{live_server.url}/oidc/authenticate/", DOCTOR)
        assert "Claire Martin" in home.text
    finally:
        psc.process.terminate()
        psc.process.wait(timeout=10)
