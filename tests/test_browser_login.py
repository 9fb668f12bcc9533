"""A professional's first visit, in a real browser (Debian's Chromium driven by Playwright)."""

import re

from playwright.sync_api import Page, expect


def test_login_through_psc_lands_on_the_home_page(
    page: Page, live_server, standin_psc, demo_mailboxes
):
    page.goto(live_server.url)
    page.get_by_role("link", name="Se connecter avec Pro Santé Connect").click()

    expect(page).to_have_url(re.compile(f"^{re.escape(standin_psc.issuer)}/interaction/"))
    page.get_by_label("Professionnel").select_option("899700000001")
    page.get_by_role("button", name="Se connecter").click()

    expect(page).to_have_url(f"{live_server.url}/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Claire Martin")
    expect(page.get_by_text("claire.martin@demo.mssante.fr")).to_be_visible()
    expect(page.get_by_text("Aucun téléphone n'est encore enrôlé")).to_be_visible()


def test_the_home_page_switches_to_english(page: Page, live_server, standin_psc, demo_mailboxes):
    page.goto(live_server.url)
    page.get_by_role("button", name="English").click()
    expect(page.get_by_role("link", name="Log in with Pro Santé Connect")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", "en")
