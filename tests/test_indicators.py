"""The Prometheus endpoint's figures follow what happened, and the staff summary agrees."""

import re
import time

import pytest

from enrolment import totp
from enrolment.models import Device
from tests.test_verifier import nginx_ask, ok

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-for-the-tests-0123456789"


@pytest.fixture
def metrics(settings, client):
    settings.METRICS_TOKEN = TOKEN

    def scrape() -> dict:
        response = client.get("/internal/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.status_code == 200
        figures = {}
        for line in response.content.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                figures[name] = float(value)
        return figures

    return scrape


def delta(before, after, name):
    return after.get(name, 0) - before.get(name, 0)


def test_the_endpoint_needs_its_token(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/internal/metrics").status_code == 404
    settings.METRICS_TOKEN = TOKEN
    assert client.get("/internal/metrics").status_code == 401
    wrong = client.get("/internal/metrics", HTTP_AUTHORIZATION="Bearer not-the-token")
    assert wrong.status_code == 401


def test_logins_by_outcome_and_protocol_and_latency(metrics, claire, nginx_secret):
    before = metrics()
    secret = claire.secret()
    assert ok(nginx_ask(claire.mailbox, secret, "192.0.2.1", "imap"))
    assert ok(nginx_ask(claire.mailbox, secret, "192.0.2.1", "imap"))  # a session hit
    for n in range(3):  # three guesses (the same string again would be refused unhashed)
        assert not ok(nginx_ask(claire.mailbox, f"wrong-00000{n}", "192.0.2.2", "smtp"))
    after = metrics()

    name = "mss_totp_mail_logins_total"
    assert delta(before, after, f'{name}{{outcome="ok",protocol="imap"}}') == 2
    assert delta(before, after, f'{name}{{outcome="reject",protocol="smtp"}}') == 3
    assert delta(before, after, f'{name}{{outcome="reject",protocol="imap"}}') == 0
    assert delta(before, after, "mss_totp_verify_seconds_count") == 5
    assert delta(before, after, "mss_totp_verify_seconds_sum") > 0
    # One hash for the new login and one for each refusal; none for the session hit.
    assert delta(before, after, "mss_totp_password_hash_seconds_count") == 4
    hashes = delta(before, after, "mss_totp_password_hash_seconds_sum")
    assert 0 < hashes < delta(before, after, "mss_totp_verify_seconds_sum")
    assert after["mss_totp_mail_sessions"] == 1


def test_enrolments_and_active_devices(metrics, professional_client, professional):
    before = metrics()
    assert before["mss_totp_active_devices"] == 0
    professional_client.post("/enrolment/")
    device = Device.objects.get(user=professional.user)
    code = totp.totp(device.seed(), time.time())
    professional_client.post("/enrolment/confirm/", {"code": code})
    after = metrics()
    assert after["mss_totp_active_devices"] == 1
    assert delta(before, after, 'mss_totp_enrolments{kind="professional"}') == 1


def test_the_summary_page_agrees(helpdesk_client, claire, client):
    from enrolment import verifier

    assert verifier.verify(claire.mailbox, claire.secret(), "192.0.2.1", "imap").ok
    assert not verifier.verify(claire.mailbox, "wrong-000000", "192.0.2.1", "smtp").ok
    html = helpdesk_client.get("/helpdesk/summary/").content.decode()
    assert re.search(r'id="active-devices">1<', html)
    assert re.search(r'id="live-sessions">1<', html)
    assert re.search(r"<td>ok</td><td>IMAP</td><td>1</td>", html)
    assert re.search(r"<td>reject</td><td>SMTP</td><td>1</td>", html)


def test_a_database_outage_still_shows_the_workers_counters(metrics, claire, nginx_secret):
    """During an outage the temporary failures are what the scrape must show."""
    from unittest import mock

    from django.db import DatabaseError

    nginx_ask(claire.mailbox, claire.secret())
    assert metrics()["mss_totp_database_up"] == 1
    with mock.patch("enrolment.indicators.active_devices", side_effect=DatabaseError("down")):
        figures = metrics()
    assert figures["mss_totp_database_up"] == 0
    assert "mss_totp_active_devices" not in figures
    assert any(name.startswith("mss_totp_mail_logins_total") for name in figures)


def test_a_metrics_failure_does_not_change_the_answer(claire, nginx_secret):
    from unittest import mock

    with mock.patch("enrolment.indicators.LOGINS.labels", side_effect=OSError("disk full")):
        assert ok(nginx_ask(claire.mailbox, claire.secret()))
