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
    assert "<td>192.0.2.10</td>" in page and f"<td>{OTHER_IP}</td>" in page and "SMTP" in page
    assert "/32" not in page  # an address, as a person reads it
    # Each button says, to a screen reader, which session it ends.
    assert f"the session of {claire.mailbox} from {OTHER_IP} (SMTP)</span></button>" in page

    one = MailSession.objects.get(client_network=f"{OTHER_IP}/32")
    told = browser.post("/mail-sessions/", {"end": str(one.pk)}, follow=True)
    assert "1 session ended." in told.content.decode()
    assert not ok(nginx_ask(claire.mailbox, second, client_ip=OTHER_IP))
    assert ok(nginx_ask(claire.mailbox, first))

    browser.post("/mail-sessions/", {"end": "all"})
    assert not ok(nginx_ask(claire.mailbox, first))
    assert (
        "No mail software is logged in right now."
        in browser.get("/mail-sessions/").content.decode()
    )
    assert AuditEvent.objects.filter(action="mail_session.end").count() == 2


def test_a_session_ended_meanwhile_is_not_said_to_be_ended_now(claire, browser):
    """The page in a second tab, or a Back: its button names a session already over."""
    assert ok(nginx_ask(claire.mailbox, claire.secret()))
    session = MailSession.objects.get()
    browser.post("/mail-sessions/", {"end": "all"}, follow=True)

    told = browser.post("/mail-sessions/", {"end": str(session.pk)}, follow=True)
    page = told.content.decode()
    assert "That session had ended already." in page and "ended. That" not in page


def test_a_network_wider_than_one_address_is_shown_as_a_network(claire, browser, settings):
    settings.MAIL_SESSION_PREFIX_V4 = 24
    assert ok(nginx_ask(claire.mailbox, claire.secret()))
    assert "<td>192.0.2.0/24</td>" in browser.get("/mail-sessions/").content.decode()


def test_a_professional_cannot_end_someone_elses_session(claire, nurses, browser):
    sofia = nurses[0]
    assert ok(nginx_ask(sofia.mailbox, sofia.secret()))
    browser.post("/mail-sessions/", {"end": str(MailSession.objects.get().pk)})
    assert MailSession.objects.get().revoked_at is None


def claire_next_step():
    import time

    return time.time() + 30
