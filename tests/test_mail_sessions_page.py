"""The professional's page "my mail sessions"."""

import pytest
from django.test import Client

from enrolment.models import AuditEvent, MailSession
from tests.test_verifier import OTHER_IP, nginx_ask, ok


@pytest.fixture
def browser(claire, nginx_secret):
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(claire.professional.user)
    return client


def test_the_page_lists_sessions_and_ends_one_or_all(claire, browser):
    first, second = claire.secret(), claire.password + claire.code(claire_next_step())
    assert ok(nginx_ask(claire.mailbox, first))
    assert ok(nginx_ask(claire.mailbox, second, client_ip=OTHER_IP, protocol="smtp"))

    page = browser.get("/mail-sessions/").content.decode()
    assert "192.0.2.10/32" in page and f"{OTHER_IP}/32" in page and "SMTP" in page

    one = MailSession.objects.get(client_network=f"{OTHER_IP}/32")
    browser.post("/mail-sessions/", {"end": str(one.pk)})
    assert not ok(nginx_ask(claire.mailbox, second, client_ip=OTHER_IP))
    assert ok(nginx_ask(claire.mailbox, first))

    browser.post("/mail-sessions/", {"end": "all"})
    assert not ok(nginx_ask(claire.mailbox, first))
    assert (
        "No mail software is logged in right now."
        in browser.get("/mail-sessions/").content.decode()
    )
    assert AuditEvent.objects.filter(action="mail_session.end").count() == 2


def test_a_professional_cannot_end_someone_elses_session(claire, nurses, browser):
    sofia = nurses[0]
    assert ok(nginx_ask(sofia.mailbox, sofia.secret()))
    browser.post("/mail-sessions/", {"end": str(MailSession.objects.get().pk)})
    assert MailSession.objects.get().revoked_at is None


def claire_next_step():
    import time

    return time.time() + 30
