"""The helpdesk's pages: find a professional, see their state, and act with a reason and a
confirmation; each action audited with the staff member's name and emailed to the
professional. No page shows a seed, a code or a password."""

import threading
import time

import pytest
from django.core import mail
from django.db import connection
from django.db.models.signals import pre_delete
from django.test.utils import CaptureQueriesContext

from enrolment import helpdesk, verifier
from enrolment.models import AuditEvent, Device, Mailbox, MailSession, Membership, Professional
from tests.mail_fixtures import make_mail_user

# Transactional: the email goes once the action is committed (transaction.on_commit).
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def claire_by_mail(db, django_user_model):
    return make_mail_user(
        django_user_model, "899700000001", "claire.martin@demo.mssante.fr", "Mot-de-Passe-2026"
    )


def page_of(user):
    return f"/helpdesk/professionals/{user.professional.national_id}/"


@pytest.mark.parametrize("query", ["899700000001", "martin", "claire.martin@demo", "Claire"])
def test_search_by_national_id_name_or_mailbox(helpdesk_client, claire_by_mail, query):
    html = helpdesk_client.get("/helpdesk/", {"q": query}).content.decode()
    assert page_of(claire_by_mail) in html
    assert "claire.martin@demo.mssante.fr" in html


def test_a_full_name_finds_that_person_among_many_namesakes(helpdesk_client, claire_by_mail):
    """Every word must match: "Claire Martin" is Claire Martin, not the first fifty Claires."""
    for n in range(60):
        Professional.objects.create(
            national_id=f"8997100{n:05d}", given_name="Claire", family_name=f"Aaron{n:02d}"
        )
    html = helpdesk_client.get("/helpdesk/", {"q": "Claire Martin"}).content.decode()
    assert page_of(claire_by_mail) in html
    assert "Aaron" not in html and "Plus de 50" not in html

    crowd = helpdesk_client.get("/helpdesk/", {"q": "claire"}).content.decode()
    assert crowd.count("/helpdesk/professionals/") == 50
    assert "Plus de 50 professionnels correspondent" in crowd


def test_an_exact_national_id_or_address_finds_only_its_owner(helpdesk_client, claire_by_mail):
    Professional.objects.create(national_id="1899700000001", given_name="Paul", family_name="X")
    html = helpdesk_client.get("/helpdesk/", {"q": " CLAIRE.Martin@demo.mssante.fr "}).content
    assert page_of(claire_by_mail) in html.decode()
    html = helpdesk_client.get("/helpdesk/", {"q": "899700000001"}).content.decode()
    assert page_of(claire_by_mail) in html and "/helpdesk/professionals/1899700000001/" not in html


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's plans")
@pytest.mark.parametrize("query", ["899700000001", "Claire.Martin@demo.mssante.fr"])
def test_an_exact_search_reads_by_index_only(helpdesk_client, claire_by_mail, query):
    """At a million professionals a table read is a second per search: every statement of
    an exact search must be able to use an index (the planner is told to avoid table reads;
    one it cannot avoid still shows)."""
    with CaptureQueriesContext(connection) as queries:
        found = helpdesk.search(query)
    assert [p.national_id for p in found.professionals] == ["899700000001"]
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        for query_run in queries.captured_queries:
            cursor.execute("EXPLAIN (FORMAT JSON) " + query_run["sql"])
            plan = cursor.fetchone()[0][0]["Plan"]
            assert not list(_whole_table_reads(plan)), query_run["sql"]
        cursor.execute("RESET enable_seqscan")


def _whole_table_reads(node):
    """The plan's scans of a table with no index condition: a Seq Scan, or an index read
    end to end."""
    if "Relation Name" in node and "Index Cond" not in node and "Recheck Cond" not in node:
        yield node["Node Type"], node["Relation Name"]
    for child in node.get("Plans", []):
        yield from _whole_table_reads(child)


def test_a_search_that_matches_nobody_says_so(helpdesk_client, claire_by_mail):
    html = helpdesk_client.get("/helpdesk/", {"q": "Dupont"}).content.decode()
    assert page_of(claire_by_mail) not in html
    assert "Personne ne correspond" in html


def test_the_professional_page_shows_state_and_no_secret(helpdesk_client, claire_by_mail):
    claire = claire_by_mail
    assert verifier.verify(claire.mailbox, claire.secret(), "192.0.2.7", "imap").ok
    html = helpdesk_client.get(page_of(claire)).content.decode()
    assert "claire.martin@demo.mssante.fr" in html
    assert "Enrôlé le" in html
    assert "<td>192.0.2.7</td>" in html  # the open mail session
    assert "new_login" in html  # the last login, from the audit trail
    device = Device.objects.get(pk=claire.device.pk)
    for secret in (
        claire.password,
        claire.code(),
        claire.seed.hex(),
        device.ciphertext.hex(),
        claire.professional.mail_password,
        MailSession.objects.get().credential_digest,
    ):
        assert secret not in html


def reset(client, user, reason="Appel du 1er décembre : téléphone perdu, ticket 4521"):
    url = page_of(user) + "reset-device/"
    form = client.get(url)
    assert form.status_code == 200 and "Motif" in form.content.decode()
    second = client.post(url, {"reason": reason})
    assert second.status_code == 200
    assert reason in second.content.decode()  # restated on the confirmation screen
    assert Device.objects.filter(pk=user.device.pk).exists()  # nothing done yet
    return client.post(url, {"reason": reason, "confirmed": "yes"})


def test_reset_device_asks_why_confirms_then_stops_the_phone(helpdesk_client, claire_by_mail):
    claire = claire_by_mail
    cached = claire.secret()
    assert verifier.verify(claire.mailbox, cached, "192.0.2.7", "imap").ok
    mail.outbox.clear()

    done = reset(helpdesk_client, claire)
    assert done.status_code == 302 and done["Location"] == page_of(claire)

    assert not Device.objects.filter(user=claire.professional.user).exists()
    refused = verifier.verify(claire.mailbox, claire.secret(time.time() + 30), "192.0.2.7", "imap")
    assert not refused.ok
    assert not verifier.verify(claire.mailbox, cached, "192.0.2.7", "imap").ok
    event = AuditEvent.objects.get(action="helpdesk.reset-device")
    assert (event.actor_kind, event.actor, event.target) == ("staff", "alice", "899700000001")
    assert event.details["reason"] == "Appel du 1er décembre : téléphone perdu, ticket 4521"
    assert [m.to for m in mail.outbox] == [["claire.martin@demo.mssante.fr"]]
    assert "réinitialisé" in mail.outbox[0].subject
    page = helpdesk_client.get(page_of(claire)).content.decode()
    assert "Aucun téléphone enrôlé" in page and "ticket 4521" in page


@pytest.mark.skipif(connection.vendor != "postgresql", reason="two writers at once")
@pytest.mark.parametrize("landing", ["new login", "retry of an ended session"])
def test_a_mail_login_landing_during_a_reset_leaves_no_session(claire_by_mail, landing):
    """Another worker's login arrives while the reset is between ending the device's
    sessions and deleting it: its string must not stay accepted, and neither waits for
    the other for ever (a refusal locks sessions, then the device: so does the reset)."""
    claire, cached = claire_by_mail, claire_by_mail.secret()
    if landing == "retry of an ended session":
        assert verifier.verify(claire.mailbox, cached, "192.0.2.7", "imap").ok
        claire.professional.end_mail_sessions("ended_by_professional")
    decisions = []

    def mail_login():
        decisions.append(verifier.verify(claire.mailbox, cached, "192.0.2.7", "imap"))
        connection.close()

    landing = threading.Thread(target=mail_login)

    def while_resetting(sender, instance, **kwargs):
        landing.start()
        landing.join(timeout=2)  # it may have to wait for the reset: not forever

    pre_delete.connect(while_resetting, sender=Device, dispatch_uid="while_resetting")
    try:
        helpdesk.reset_device(claire.professional)
    finally:
        pre_delete.disconnect(sender=Device, dispatch_uid="while_resetting")
    landing.join(timeout=30)

    assert decisions and not decisions[0].ok and decisions[0].reason != "internal_error"
    assert not MailSession.objects.filter(revoked_at__isnull=True).exists()
    assert not verifier.verify(claire.mailbox, cached, "192.0.2.7", "imap").ok


def test_a_reset_needs_a_new_psc_login_before_enrolling_again(
    helpdesk_client, claire_by_mail, client
):
    from django.test import Client

    professional_browser = Client()
    professional_browser.force_login(claire_by_mail.professional.user)
    session = professional_browser.session
    session["psc_auth_time"] = int(time.time()) - 5  # logged in just before the reset
    session.save()
    assert professional_browser.get("/enrolment/").status_code == 200
    reset(helpdesk_client, claire_by_mail)
    response = professional_browser.get("/enrolment/")
    assert response.status_code == 302 and "/oidc/authenticate/" in response["Location"]


@pytest.mark.parametrize("reason", ["", "short", "   \n\t  "])
def test_an_action_without_a_real_reason_is_refused(helpdesk_client, claire_by_mail, reason):
    url = page_of(claire_by_mail) + "end-sessions/"
    response = helpdesk_client.post(url, {"reason": reason, "confirmed": "yes"})
    assert response.status_code == 200
    assert 'role="alert"' in response.content.decode()
    assert not AuditEvent.objects.filter(action__startswith="helpdesk.").exists()


def test_clear_backoff_lets_the_professional_in_at_once(helpdesk_client, claire_by_mail):
    claire = claire_by_mail
    for n in range(4):  # the right password, wrong codes: the back-off grows
        wrong = f"{(int(claire.code()) + 1 + n) % 10**6:06d}"
        verifier.verify(claire.mailbox, claire.password + wrong, "192.0.2.7", "imap")
    slowed = verifier.verify(claire.mailbox, claire.secret(), "192.0.2.7", "imap")
    assert slowed.reason == "professional_throttled"
    assert (
        "Ralenti après des codes erronés" in helpdesk_client.get(page_of(claire)).content.decode()
    )

    url = page_of(claire) + "clear-backoff/"
    reason = "Appel : codes tapés de travers, vérifié par rappel"
    helpdesk_client.post(url, {"reason": reason, "confirmed": "yes"})
    assert verifier.verify(claire.mailbox, claire.secret(), "192.0.2.7", "imap").ok
    assert AuditEvent.objects.get(action="helpdesk.clear-backoff").details["reason"] == reason
    assert mail.outbox[-1].to == ["claire.martin@demo.mssante.fr"]


def test_end_sessions_refuses_the_cached_string(helpdesk_client, claire_by_mail):
    claire = claire_by_mail
    cached = claire.secret()
    assert verifier.verify(claire.mailbox, cached, "192.0.2.7", "imap").ok
    url = page_of(claire) + "end-sessions/"
    helpdesk_client.post(url, {"reason": "Poste volé au cabinet, ticket 77", "confirmed": "yes"})
    assert not verifier.verify(claire.mailbox, cached, "192.0.2.7", "imap").ok
    event = AuditEvent.objects.get(action="helpdesk.end-sessions")
    assert event.details["sessions_ended"] == 1
    assert Device.objects.filter(pk=claire.device.pk).exists()  # the phone still works


def test_organisational_mailbox_search_finds_every_member(helpdesk_client, nurses):
    html = helpdesk_client.get("/helpdesk/", {"q": "accueil@clinique"}).content.decode()
    assert "Benali" in html and "Moreau" in html
    assert Mailbox.objects.count() == 1 and Membership.objects.count() == 2
