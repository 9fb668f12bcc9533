"""The helpdesk in Debian's Chromium: a helpdesk member logs in with password and code, finds
a professional by mailbox and resets the lost phone with a reason. The professional's mail
client is refused at once through nginx's mail proxy, the professional gets the email, and
the audit trail names who did it and why; a new staff member enrols a phone with the
account's enrolment token. axe-core checks every staff page on the way."""

import base64
import re
import time

import pytest
from django.db import connection
from playwright.sync_api import Page, expect

from enrolment import totp
from enrolment.models import AuditEvent
from tests.browser_tools import axe_violations
from tests.mail_clients import imap_login

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the mail path is tested on PostgreSQL"
)

REASON = "Appel du Dr Martin : téléphone perdu, identité vérifiée par rappel, ticket 4521"
REFUSED = "b'[AUTHENTICATIONFAILED] Invalid login or password'"


def test_helpdesk_resets_a_lost_phone(
    page: Page, live_server, mail, claire, make_staff, mailoutbox
):
    imap = mail.ports["nginx_imaps"]
    cached = claire.secret()
    assert imap_login(imap, claire.mailbox, cached) == "ok"  # the mail client's cached string
    alice = make_staff("alice", "helpdesk")
    violations = {}

    def check(page):
        violations[page.url] = axe_violations(page)

    page.goto(f"{live_server.url}/helpdesk/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Connexion de l'exploitant")
    check(page)
    page.get_by_label("Identifiant").fill("alice")
    page.get_by_label("Mot de passe").fill(alice.password)
    page.get_by_role("button", name="Suivant").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Votre code")
    check(page)
    page.get_by_label("Code à 6 chiffres affiché par FreeOTP").fill(alice.code())
    page.get_by_role("button", name="Se connecter").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Trouver un professionnel")
    page.get_by_label("Identifiant national, nom ou adresse de boîte").fill(claire.mailbox)
    page.get_by_role("button", name="Rechercher").click()
    check(page)
    page.get_by_role("link", name="Martin Claire").click()
    expect(page.locator("#device-state")).to_contain_text("Enrôlé le")
    check(page)

    page.get_by_role("link", name="Réinitialiser le téléphone").click()
    check(page)
    page.get_by_label(re.compile("^Motif")).fill(REASON)
    page.get_by_role("button", name="Suivant").click()
    expect(page.locator("#confirm-reason")).to_have_text(REASON)
    check(page)
    page.get_by_role("button", name="Confirmer : Réinitialiser le téléphone").click()
    expect(page.get_by_role("status")).to_contain_text("Fait : Réinitialiser le téléphone")
    expect(page.locator("#device-state")).to_contain_text("Aucun téléphone enrôlé")
    check(page)

    # At once, through nginx: the cached string and a fresh code from the old phone.
    assert imap_login(imap, claire.mailbox, cached) == REFUSED
    assert imap_login(imap, claire.mailbox, claire.secret(time.time() + 30)) == REFUSED
    # The professional is told, in their own mailbox.
    [email] = mailoutbox
    assert email.to == [claire.mailbox]
    assert (
        email.subject
        == "Le support a réinitialisé votre téléphone pour l'accès à la messagerie MSSanté"
    )
    # The trail says who and why, on the page and in the database.
    history = "\N{EN DASH}".join(["alice ", " helpdesk.reset-device ", f" {REASON}"])
    expect(page.get_by_text(history)).to_be_visible()
    event = AuditEvent.objects.get(action="helpdesk.reset-device")
    assert (event.actor, event.target, event.details["reason"]) == ("alice", "899700000001", REASON)
    assert violations == {url: [] for url in violations}


def test_a_new_staff_member_enrols_a_phone_with_the_enrolment_token(
    page: Page, live_server, make_staff
):
    dora = make_staff("dora", "helpdesk", enrolled=False)
    violations = {}
    page.goto(f"{live_server.url}/staff/login/")
    page.get_by_label("Identifiant").fill("dora")
    page.get_by_label("Mot de passe").fill(dora.password)
    page.get_by_role("button", name="Suivant").click()

    # The password alone shows no key: the token first, typed as people do.
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Le téléphone de votre compte d'exploitation : jeton d'enrôlement"
    )
    expect(page.locator("#secret")).to_have_count(0)
    violations["token"] = axe_violations(page)
    page.get_by_label("Jeton d'enrôlement").fill(dora.enrolment_token.lower().replace("-", " "))
    page.get_by_role("button", name="Continuer").click()

    key = page.locator("#secret").inner_text().replace(" ", "")
    violations["key"] = axe_violations(page)
    seed = base64.b32decode(key + "=" * (-len(key) % 8))
    page.get_by_label("Code à 6 chiffres affiché par FreeOTP").fill(totp.totp(seed, time.time()))
    page.get_by_role("button", name="Confirmer").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Trouver un professionnel")
    assert violations == {"token": [], "key": []}
