"""The site's own error pages: French by default, in the site's layout, saying what to do
and nothing about the inside (no traceback, no setting)."""

import pytest
from django.template.loader import render_to_string
from django.test import Client
from django.utils import translation

pytestmark = pytest.mark.django_db


def test_a_missing_page_is_a_french_404_in_the_sites_layout(client):
    page = client.get("/enrolment/nowhere/")
    html = page.content.decode()
    assert page.status_code == 404
    assert '<html lang="fr">' in html and "Page introuvable" in html
    assert "Retour à l'accueil" in html  # a way out


def test_english_readers_get_it_in_english(client):
    page = client.get("/nowhere/", headers={"accept-language": "en"})
    assert "Page not found" in page.content.decode()


def test_a_bad_request_says_so_in_french(client):
    page = client.get("/", {"q": "a\0b"})
    assert page.status_code == 400
    assert "Requête incorrecte" in page.content.decode()


def test_a_form_sent_without_its_token_says_it_expired():
    page = Client(enforce_csrf_checks=True).post("/logout/")
    html = page.content.decode()
    assert page.status_code == 403
    assert "Formulaire expiré" in html and "Rien n'a été fait" in html
    assert "CSRF" not in html  # Django's page names the mechanism and the settings


def test_the_500_page_renders_with_nothing_but_itself():
    with translation.override("fr"):
        html = render_to_string("500.html")
    assert "Une erreur est survenue" in html and '<html lang="fr">' in html
