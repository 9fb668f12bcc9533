"""Enrolment as a new professional does it, in Debian's Chromium: PSC login, the QR code read
off the screen, the code computed from it as FreeOTP would, and axe-core on every page."""

import re
import time
from datetime import timedelta
from urllib.parse import parse_qs, unquote, urlparse

import pyotp
import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from enrolment.models import Device, MailSession
from tests.browser_tools import axe_violations, csp_violations, read_qr

PHONE = {
    "viewport": {"width": 390, "height": 844},
    "is_mobile": True,
    "has_touch": True,
    "device_scale_factor": 2,
}


def log_in(page: Page, live_server, national_id="899700000001"):
    page.goto(live_server.url)
    page.get_by_role("link", name=re.compile("Pro Santé Connect")).click()
    page.locator("#sub").select_option(national_id)
    page.get_by_role("button", name="Se connecter").click()
    expect(page).to_have_url(f"{live_server.url}/")


def check_freeotp_rules(uri: str) -> pyotp.TOTP:
    parts = urlparse(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    issuer, account = unquote(parts.path[1:]).split(":")  # exactly one colon
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query["issuer"] == issuer == "MSSante OTP"
    assert account == "claire.martin@demo.mssante.fr"
    assert re.fullmatch(r"[A-Z2-7]{32}", query["secret"])
    assert (query["algorithm"], query["digits"], query["period"]) == ("SHA1", "6", "30")
    return pyotp.parse_uri(uri)


def a_wrong_code(phone) -> str:
    """A code the phone shows at no step of the confirmation's window (a fixed "000000" is
    one of its 21 codes about once in 50,000 runs)."""
    window = {phone.at(time.time() + 30 * step) for step in range(-12, 13)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in window)


def enrol_through_the_wizard(page: Page, live_server, check_page=lambda page: None):
    log_in(page, live_server)
    check_page(page)
    page.get_by_role("link", name="Enrôler mon téléphone").click()
    check_page(page)
    page.get_by_role("button", name="FreeOTP est installé : afficher ma clé").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Ajouter la clé dans FreeOTP")
    check_page(page)

    uri = read_qr(page, "#qr svg")
    phone = check_freeotp_rules(uri)
    assert page.locator("#otpauth-link").get_attribute("href") == uri
    assert page.locator("#secret").inner_text().replace(" ", "") == phone.secret

    page.get_by_role("link", name="Suivant : saisir un code").click()
    check_page(page)
    page.get_by_label("Code à 6 chiffres affiché par FreeOTP").fill(a_wrong_code(phone))
    page.get_by_role("button", name="Confirmer").click()
    expect(page.get_by_role("alert")).to_contain_text("Ce code n'est pas le bon")
    check_page(page)
    page.wait_for_timeout(1100)  # past the one-second back-off of the first wrong code
    page.get_by_label("Code à 6 chiffres affiché par FreeOTP").fill(phone.now())
    page.get_by_role("button", name="Confirmer").click()

    expect(page.locator("#done")).to_have_text("Votre téléphone est enrôlé")
    check_page(page)
    return phone


@pytest.mark.parametrize("screen", ["desktop", "phone"])
def test_a_new_professional_enrols_freeotp(
    browser, live_server, standin_psc, demo_mailboxes, screen
):
    context = browser.new_context(locale="fr-FR", **(PHONE if screen == "phone" else {}))
    violations = csp_violations(context)  # its own context: the page fixture's check is not here
    page = context.new_page()

    phone = enrol_through_the_wizard(page, live_server)

    device = Device.objects.get(user__professional__national_id="899700000001")
    assert device.confirmed
    assert pyotp.TOTP(phone.secret).byte_secret() == device.seed()
    expect(page.get_by_text("imap.otp.operateur.mssante.fr:993")).to_be_visible()
    assert fits_the_screen(page)

    # The sessions page with the widest rows there are: the longest IPv6 address, a long mailbox.
    open_session(device, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/128")
    page.goto(f"{live_server.url}/mail-sessions/")
    expect(page.get_by_text("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", exact=True)).to_be_visible()
    assert fits_the_screen(page)
    assert violations == []
    context.close()


def fits_the_screen(page: Page) -> bool:
    """Nothing sticks out sideways: no page-wide horizontal scrolling (a wide table scrolls
    inside its own region)."""
    page.wait_for_load_state("load")  # the stylesheet applied
    return page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )


def open_session(device: Device, network: str) -> None:
    professional = device.user.professional
    MailSession.objects.create(
        mailbox=professional.mailboxes.get(),
        professional=professional,
        device=device,
        credential_digest="0" * 64,
        national_id=professional.national_id,
        client_network=network,
        protocol="imap",
        expires_at=timezone.now() + timedelta(hours=12),
    )


@pytest.mark.parametrize("language", ["fr-FR", "en-GB"])
def test_every_wizard_page_passes_axe_wcag21_aa(
    browser, live_server, standin_psc, demo_mailboxes, language
):
    context = browser.new_context(locale="fr-FR")
    violations = csp_violations(context)
    page = context.new_page()
    found = {}

    def check_page(page):
        found[page.url] = axe_violations(page)

    if language == "en-GB":
        page.goto(live_server.url)
        page.get_by_role("button", name="English").click()
        check_page(page)
        log_in_en_then_enrol(page, live_server, check_page)
    else:
        enrol_through_the_wizard(page, live_server, check_page)
        page.goto(f"{live_server.url}/password/")
        check_page(page)
        page.goto(f"{live_server.url}/mail-sessions/")
        check_page(page)

    assert len(found) >= 6
    assert {url: v for url, v in found.items() if v} == {}
    assert violations == []
    context.close()


def log_in_en_then_enrol(page: Page, live_server, check_page):
    page.get_by_role("link", name="Log in with Pro Santé Connect").click()
    page.locator("#sub").select_option("899700000001")
    page.get_by_role("button", name="Se connecter").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Claire Martin")
    check_page(page)
    page.get_by_role("link", name="Enrol my phone").click()
    check_page(page)
    page.get_by_role("button", name="FreeOTP is installed: show my key").click()
    check_page(page)
    phone = pyotp.parse_uri(read_qr(page, "#qr svg"))
    page.get_by_role("link", name="Next: type a code").click()
    page.get_by_label("6-digit code shown by FreeOTP").fill(a_wrong_code(phone))
    page.get_by_role("button", name="Confirm").click()
    check_page(page)
    page.wait_for_timeout(1100)
    page.get_by_label("6-digit code shown by FreeOTP").fill(phone.now())
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator("#done")).to_have_text("Your phone is enrolled")
    check_page(page)
    page.goto(f"{live_server.url}/password/")
    check_page(page)


def test_axe_does_report_violations(page: Page):
    """The accessibility check above can fail: axe finds the faults of a careless page."""
    page.set_content("<html><body><img src='x.png'><input type='text'></body></html>")
    ids = {line.split(" ")[0] for line in axe_violations(page)}
    assert {"html-has-lang", "image-alt", "label"} <= ids
