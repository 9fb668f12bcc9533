"""Staff login (password, then the staff member's own code), first-login enrolment, roles on
every staff page, the recent-code rule, and the admin behind it all."""

import base64
import hashlib
import io
import re
import time
from datetime import timedelta
from unittest import mock

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from enrolment import staff_tokens, totp
from enrolment.models import AuditEvent, Device, StaffEnrolmentToken
from portal.staff import VERIFIED_AT
from tests.conftest import keyring_json
from tests.staff_fixtures import STAFF_PASSWORD, log_in, present_token

pytestmark = pytest.mark.django_db


def staff_pages(national_id):
    """Every staff page, and the roles that may see it."""
    return {
        "/helpdesk/?q=Mart": {"helpdesk"},  # not the whole name: pages echo their URL
        f"/helpdesk/professionals/{national_id}/": {"helpdesk"},
        f"/helpdesk/professionals/{national_id}/reset-device/": {"helpdesk"},
        f"/helpdesk/professionals/{national_id}/clear-backoff/": {"helpdesk"},
        f"/helpdesk/professionals/{national_id}/end-sessions/": {"helpdesk"},
        "/helpdesk/summary/": {"helpdesk", "auditor"},
        "/audit/": {"auditor"},
        "/audit/export.csv": {"auditor"},
        "/audit/export.json": {"auditor"},
    }


def test_password_alone_opens_no_staff_page(client, make_staff, professional):
    alice = make_staff("alice", "helpdesk")
    response = client.post(
        "/staff/login/", {"username": "alice", "password": alice.password, "next": "/helpdesk/"}
    )
    assert response.status_code == 302 and response["Location"].startswith("/staff/code/")
    page = client.get("/helpdesk/?q=Martin")
    assert page.status_code == 302 and page["Location"].startswith("/staff/code/")
    assert b"Martin" not in page.content


def test_a_code_verifies_the_login_once(client, make_staff, professional):
    alice = make_staff("alice", "helpdesk")
    code = alice.code()
    client.post("/staff/login/", {"username": "alice", "password": alice.password})
    response = client.post("/staff/code/?next=/helpdesk/", {"code": code})
    assert response.status_code == 302 and response["Location"] == "/helpdesk/"
    assert "Martin" in client.get("/helpdesk/?q=Martin").content.decode()

    # The same code again, from another browser with the right password: refused.
    other = Client()
    other.post("/staff/login/", {"username": "alice", "password": alice.password})
    refused = other.post("/staff/code/", {"code": code})
    assert refused.status_code == 200
    assert "pas le bon" in refused.content.decode()  # French first
    assert other.get("/helpdesk/").status_code == 302
    outcomes = AuditEvent.objects.filter(action="staff.code", actor="alice")
    assert sorted(outcomes.values_list("outcome", flat=True)) == ["ok", "reject"]


def test_a_wrong_password_is_refused_and_audited_without_what_was_typed(client, make_staff):
    make_staff("alice", "helpdesk")
    response = client.post("/staff/login/", {"username": "alice", "password": "Wrong-Guess-42"})
    assert response.status_code == 200
    # A password typed into the username field by mistake is not kept either.
    client.post("/staff/login/", {"username": "Helpdesk-Passe-2026", "password": "x"})
    events = AuditEvent.objects.filter(action="staff.password").order_by("id")
    assert [(e.actor, e.outcome) for e in events] == [("alice", "reject"), ("", "reject")]
    for event in events:
        written = f"{event.actor} {event.target} {event.details}"
        assert "Wrong-Guess-42" not in written and "Helpdesk-Passe-2026" not in written
    assert "Wrong-Guess-42" not in response.content.decode()


def test_password_guessing_from_one_address_is_slowed(client, make_staff, settings):
    settings.THROTTLE_ADDRESS_BURST = 3
    alice = make_staff("alice", "helpdesk")
    for n in range(3):
        client.post("/staff/login/", {"username": "alice", "password": f"guess-{n}"})
    refused = client.post("/staff/login/", {"username": "alice", "password": alice.password})
    assert refused.status_code == 429
    assert "Trop de tentatives" in refused.content.decode()
    client.post("/staff/login/", {"username": "alice", "password": "guess-4"})
    # The throttled refusals, which cost their sender nothing, in the trail once a minute.
    throttled = AuditEvent.objects.filter(details__reason="address_throttled")
    assert list(throttled.values_list("action", "outcome")) == [("staff.password", "reject")]
    other_address = Client(REMOTE_ADDR="192.0.2.44")
    assert log_in(other_address, alice).get("/helpdesk/").status_code == 200


def test_a_code_whose_seed_does_not_open_here_is_no_wrong_code(client, make_staff, settings):
    alice = make_staff("alice", "helpdesk")
    client.post("/staff/login/", {"username": "alice", "password": alice.password})
    own_keyring, settings.SEED_KEYRING = settings.SEED_KEYRING, keyring_json("test1")

    page = client.post("/staff/code/", {"code": alice.code()})
    assert page.status_code == 503
    assert "Réessayez dans quelques minutes" in page.content.decode()
    assert Device.objects.get(user=alice.user).throttling_failure_count == 0
    settings.SEED_KEYRING = own_keyring
    assert client.post("/staff/code/", {"code": alice.code()}).status_code == 302


def test_wrong_codes_back_off_and_the_right_one_works_after(client, make_staff):
    alice = make_staff("alice", "helpdesk")
    client.post("/staff/login/", {"username": "alice", "password": alice.password})
    wrong = f"{(int(alice.code()) + 1) % 10**6:06d}"
    assert "pas le bon" in client.post("/staff/code/", {"code": wrong}).content.decode()
    throttled = client.post("/staff/code/", {"code": alice.code()})
    assert "Trop de codes erronés" in throttled.content.decode()
    # django-otp's first back-off is one second: its wrong code, two seconds ago.
    Device.objects.filter(user=alice.user).update(
        throttling_failure_timestamp=timezone.now() - timedelta(seconds=2)
    )
    assert client.post("/staff/code/", {"code": alice.code()}).status_code == 302
    reasons = AuditEvent.objects.filter(action="staff.code", outcome="reject")
    assert sorted(e.details["reason"] for e in reasons) == ["throttled", "wrong_code"]


def test_the_code_gives_the_session_a_new_key(make_staff):
    """Someone who knows only the password makes a session and plants its cookie in the
    staff member's browser: the code typed there verifies the browser, not their copy."""
    alice = make_staff("alice", "helpdesk")
    attacker = Client()
    attacker.post("/staff/login/", {"username": "alice", "password": alice.password})
    victim = Client()
    victim.cookies["sessionid"] = attacker.cookies["sessionid"].value

    response = victim.post("/staff/code/?next=/helpdesk/", {"code": alice.code()})

    assert response.status_code == 302 and response["Location"] == "/helpdesk/"
    assert victim.get("/helpdesk/").status_code == 200
    assert attacker.get("/helpdesk/").status_code == 302  # to a login step, no page


def test_the_enrolment_token_gives_the_session_a_new_key(make_staff):
    """The token unlocks the new phone's key: a planted password-only session must not see
    the key the staff member is shown."""
    chloe = make_staff("chloe", "auditor", enrolled=False)
    attacker = Client()
    attacker.post("/staff/login/", {"username": "chloe", "password": chloe.password})
    victim = Client()
    victim.cookies["sessionid"] = attacker.cookies["sessionid"].value

    assert 'id="secret"' in present_token_text(victim, chloe.enrolment_token, follow=True)
    assert 'id="secret"' not in attacker.get("/staff/enrol/").content.decode()


def test_a_throttled_login_does_not_check_the_password(client, make_staff, settings):
    settings.THROTTLE_ADDRESS_BURST = 2
    make_staff("alice", "helpdesk")
    for n in range(2):
        client.post("/staff/login/", {"username": "alice", "password": f"guess-{n}"})
    backend = "django.contrib.auth.backends.ModelBackend.authenticate"
    with mock.patch(backend, autospec=True, return_value=None) as checked:
        refused = client.post("/staff/login/", {"username": "alice", "password": "guess-3"})
    assert refused.status_code == 429
    assert "Trop de tentatives" in refused.content.decode()
    assert 'value="alice"' in refused.content.decode()
    assert checked.call_count == 0


def test_an_empty_field_says_so(client, make_staff):
    make_staff("alice", "helpdesk")
    page = client.post("/staff/login/", {"username": "alice", "password": ""}).content.decode()
    assert "Ce champ est obligatoire" in page
    assert 'aria-invalid="true" aria-describedby="password-error"' in page


def test_wrong_codes_wait_at_most_the_cap_and_say_how_long(client, make_staff, settings):
    settings.STAFF_CODE_MAX_WAIT_SECONDS = 300
    alice = make_staff("alice", "helpdesk")
    client.post("/staff/login/", {"username": "alice", "password": alice.password})
    device = Device.objects.get(user=alice.user)
    device.throttling_failure_count = 15  # django-otp alone: 2**14 s, four and a half hours
    device.throttling_failure_timestamp = timezone.now()
    device.save()
    throttled = client.post("/staff/code/", {"code": alice.code()}).content.decode()
    assert re.search(r"réessayez dans (29\d|300) secondes", throttled)

    device.throttling_failure_timestamp = timezone.now() - timedelta(seconds=301)
    device.save()
    assert client.post("/staff/code/", {"code": alice.code()}).status_code == 302


def test_a_staff_session_ends_when_idle_and_asks_a_code_each_day(helpdesk_client, settings):
    settings.STAFF_IDLE_SECONDS = 1800
    assert helpdesk_client.get("/helpdesk/").status_code == 200
    assert 1790 <= helpdesk_client.session.get_expiry_age() <= 1800  # not SESSION_COOKIE_AGE
    session = helpdesk_client.session
    session[VERIFIED_AT] = int(time.time()) - settings.SESSION_COOKIE_AGE - 1
    session.save()
    response = helpdesk_client.get("/helpdesk/")
    assert response.status_code == 302 and response["Location"].startswith("/staff/code/")


def test_a_logout_is_audited(helpdesk_client):
    helpdesk_client.post("/staff/logout/")
    assert helpdesk_client.get("/helpdesk/").status_code == 302
    [row] = AuditEvent.objects.filter(action="staff.logout")
    assert (row.actor_kind, row.actor, row.outcome) == ("staff", "alice", "ok")


def test_a_logout_ends_the_session_even_if_the_trail_cannot_be_written(helpdesk_client):
    with mock.patch("enrolment.audit.insert", side_effect=DatabaseError("disk full")):
        assert helpdesk_client.post("/staff/logout/").status_code == 302
    assert helpdesk_client.get("/helpdesk/").status_code == 302  # logged out all the same


def test_professionals_never_reach_the_staff_login_steps(professional_client):
    for url in ("/staff/code/", "/staff/enrol/"):
        assert professional_client.get(url).status_code == 403
    assert not Device.objects.exists()


def test_a_new_token_replaces_the_one_a_browser_presented_and_its_key(make_staff, mailoutbox):
    chloe = make_staff("chloe", "auditor", enrolled=False)
    chloe.user.email = "chloe@operateur.example"
    chloe.user.save()
    first, second = Client(), Client()
    for browser in (first, second):
        browser.post("/staff/login/", {"username": "chloe", "password": STAFF_PASSWORD})
    present_token(first, chloe)
    first_key = shown_key(first.get("/staff/enrol/"))
    new_token, _row = staff_tokens.issue(chloe.user)  # the security officer gives a new one
    present_token(second, chloe, typed=new_token)
    second_key = shown_key(second.get("/staff/enrol/"))
    assert first_key != second_key
    # The first session's token and key are gone: its code enrols nothing.
    refused = first.post("/staff/enrol/", {"code": totp.totp(first_key, time.time())}, follow=True)
    assert 'name="token"' in refused.content.decode()
    assert not Device.objects.filter(confirmed=True).exists()
    assert (
        second.post("/staff/enrol/", {"code": totp.totp(second_key, time.time())})["Location"]
        == "/helpdesk/"
    )
    [email] = mailoutbox
    assert email.to == ["chloe@operateur.example"] and "chloe" in email.body


def shown_key(page) -> bytes:
    secret = re.search(r'id="secret">([A-Z2-7 ]+)</code>', page.content.decode())[1]
    secret = secret.replace(" ", "")
    return base64.b32decode(secret + "=" * (-len(secret) % 8))


def test_first_login_enrols_the_staff_phone(client, make_staff):
    chloe = make_staff("chloe", "auditor", enrolled=False)
    client.post("/staff/login/", {"username": "chloe", "password": STAFF_PASSWORD})
    page = client.get("/staff/code/?next=/audit/", follow=True)
    assert page.redirect_chain[-1][0].startswith("/staff/enrol/")
    assert 'name="token"' in page.content.decode()
    page = client.post(
        page.redirect_chain[-1][0], {"token": chloe.enrolment_token.lower()}, follow=True
    )
    html = page.content.decode()
    assert "<svg" in html and "otpauth://totp/" in html
    secret = re.search(r'<code class="secret" id="secret">([A-Z2-7 ]+)</code>', html)[1]
    seed = base64.b32decode(secret.replace(" ", "") + "=" * (-len(secret.replace(" ", "")) % 8))

    response = client.post("/staff/enrol/?next=/audit/", {"code": totp.totp(seed, time.time())})
    assert response.status_code == 302 and response["Location"] == "/audit/"
    assert client.get("/audit/").status_code == 200
    assert Device.objects.get(user__username="chloe").confirmed
    # Enrolled: the page with the key is gone for good.
    assert client.get("/staff/enrol/")["Location"].startswith("/staff/code/")


def test_a_password_alone_never_shows_a_staff_key(client, make_staff):
    chloe = make_staff("chloe", "auditor", enrolled=False)
    client.post("/staff/login/", {"username": "chloe", "password": STAFF_PASSWORD})
    pages = [
        client.get("/staff/enrol/"),
        present_token(client, chloe, typed="AAAA-BBBB-CCCC-DDDD-EEEE-FFFF"),
        client.post("/staff/enrol/", {"code": "123456"}),  # a code instead of the token
    ]
    for page in pages:
        html = page.content.decode()
        assert 'name="token"' in html
        assert "<svg" not in html and "otpauth://" not in html and 'id="secret"' not in html
    assert "n&#x27;est pas le bon, ou il a expiré" in pages[1].content.decode()
    assert "Ce champ est obligatoire" in pages[2].content.decode()
    assert not Device.objects.exists()  # no key was even made
    refusals = AuditEvent.objects.filter(action="staff.enrolment_token", outcome="reject")
    assert refusals.count() == 1
    assert "AAAA" not in str([event.details for event in refusals])


def test_an_expired_token_or_another_accounts_is_refused(client, make_staff):
    chloe = make_staff("chloe", "auditor", enrolled=False)
    dora = make_staff("dora", "auditor", enrolled=False)
    client.post("/staff/login/", {"username": "chloe", "password": STAFF_PASSWORD})
    assert "n&#x27;est pas le bon" in present_token_text(client, dora.enrolment_token)
    StaffEnrolmentToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    page = present_token_text(client, chloe.enrolment_token)
    assert "n&#x27;est pas le bon, ou il a expiré" in page and "<svg" not in page


def test_a_token_lets_in_the_one_browser_that_presented_it(make_staff):
    chloe = make_staff("chloe", "auditor", enrolled=False)
    first, second = Client(), Client()
    for browser in (first, second):
        browser.post("/staff/login/", {"username": "chloe", "password": STAFF_PASSWORD})
    # A token with an O and a B, typed with 0 and 8 as people do (base32 has neither digit).
    token = "BOOK-2345-67AB-CDEF-GHIJ-KLMN"
    digest = hashlib.sha256(token.replace("-", "").encode()).hexdigest()
    StaffEnrolmentToken.objects.filter(user=chloe.user).update(token_hash=digest)
    typed = token.replace("O", "0").replace("B", "8").lower()
    assert 'id="secret"' in present_token_text(first, typed, follow=True)
    # Whoever saw it typed, with the password too, gets no key with it.
    page = present_token_text(second, token)
    assert "déjà été utilisé" in page and 'id="secret"' not in page
    refusal = AuditEvent.objects.get(action="staff.enrolment_token", outcome="reject")
    assert refusal.details == {"reason": "already_presented"}


def test_a_token_expiring_before_the_code_confirms_nothing(client, make_staff):
    chloe = make_staff("chloe", "auditor", enrolled=False)
    client.post("/staff/login/", {"username": "chloe", "password": STAFF_PASSWORD})
    present_token(client, chloe)
    key = shown_key(client.get("/staff/enrol/"))
    StaffEnrolmentToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    refused = client.post("/staff/enrol/", {"code": totp.totp(key, time.time())}, follow=True)
    assert 'name="token"' in refused.content.decode()
    assert not Device.objects.filter(confirmed=True).exists()


def test_a_throttled_address_cannot_present_even_the_right_token(client, make_staff, settings):
    settings.THROTTLE_ADDRESS_BURST = 2
    chloe = make_staff("chloe", "auditor", enrolled=False)
    client.post("/staff/login/", {"username": "chloe", "password": STAFF_PASSWORD})
    for _ in range(2):
        present_token(client, chloe, typed="AAAA-BBBB-CCCC-DDDD-EEEE-FFFF")
    throttled = present_token(client, chloe)
    assert throttled.status_code == 429 and "Trop de tentatives" in throttled.content.decode()
    assert 'id="secret"' not in throttled.content.decode()


def test_djangos_own_account_commands_are_audited(db, monkeypatch, make_staff):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "Racine-Solide-Orage-47")
    call_command("createsuperuser", "--noinput", "--username", "root", "--email", "r@op.example")
    make_staff("alice", "helpdesk")
    typed = iter(["Nouveau-Passe-Long-2027"] * 2)
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(typed))
    call_command("changepassword", "alice", stdout=io.StringIO())
    with pytest.raises(CommandError):  # no such account: nothing changed, nothing audited
        call_command("changepassword", "personne", stdout=io.StringIO())

    rows = AuditEvent.objects.filter(action__in=["staff.create_superuser", "staff.change_password"])
    assert sorted(rows.values_list("action", "actor", "target")) == [
        ("staff.change_password", "manage.py changepassword", "alice"),
        ("staff.create_superuser", "manage.py createsuperuser", "root"),
    ]
    assert not [row for row in rows if "Passe" in str(row.details) + row.target]


def test_the_staff_command_gives_a_token_with_each_account_and_phone_reset(client, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(STAFF_PASSWORD + "\n"))
    token = token_printed("create", "dora", "--role", "helpdesk", "--password-stdin")
    assert re.search(r"^dora\thelpdesk\t-\tactive\ttoken until ", staff_list(), re.M)
    client.post("/staff/login/", {"username": "dora", "password": STAFF_PASSWORD})
    client.post("/staff/enrol/", {"token": token})
    key = shown_key(client.get("/staff/enrol/"))
    assert client.post("/staff/enrol/", {"code": totp.totp(key, time.time())}).status_code == 302
    assert not StaffEnrolmentToken.objects.exists()  # spent by the enrolment
    assert re.search(r"^dora\thelpdesk\tphone\tactive\t-$", staff_list(), re.M)

    with pytest.raises(CommandError, match="has a phone already"):
        call_command("staff", "enrolment-token", "dora")
    new_token = token_printed("reset-phone", "dora")
    assert new_token != token and not Device.objects.filter(user__username="dora").exists()
    again = Client()
    again.post("/staff/login/", {"username": "dora", "password": STAFF_PASSWORD})
    assert 'name="token"' in present_token_text(again, token)  # the old one is gone
    assert 'id="secret"' in present_token_text(again, new_token, follow=True)
    call_command("staff", "disable", "dora", stdout=io.StringIO())
    assert not StaffEnrolmentToken.objects.exists()  # enabled again, dora needs a new one

    issued = AuditEvent.objects.filter(action="staff.issue_enrolment_token")
    assert list(issued.values_list("actor", "target")) == [("manage.py staff", "dora")] * 2
    for event in AuditEvent.objects.all():
        row = str([getattr(event, field.name) for field in AuditEvent._meta.fields])
        for secret in (token, new_token):
            assert secret not in row and secret.replace("-", "") not in row


@pytest.mark.parametrize(
    ("username", "refusal"),
    [
        ("", "a username is 1 to 150 characters"),
        ("x" * 151, "a username is 1 to 150 characters"),
        ("psc-899700000001", "the professionals' accounts"),
        ("alice smith", "Enter a valid username"),
    ],
)
def test_staff_create_refuses_a_bad_username(db, monkeypatch, username, refusal):
    monkeypatch.setattr("sys.stdin", io.StringIO("Un-Mot-De-Passe-Solide-2026\n"))
    with pytest.raises(CommandError, match=re.escape(refusal)):
        call_command(
            "staff",
            "create",
            username,
            "--role",
            "helpdesk",
            "--password-stdin",
            stdout=io.StringIO(),
        )
    assert not AuditEvent.objects.exists()


def token_printed(*args) -> str:
    out = io.StringIO()
    call_command("staff", *args, stdout=out)
    return re.search(
        r"One-time enrolment token, valid until [^:]+:\d\d [A-Z]+: (\S+)", out.getvalue()
    )[1]


def staff_list() -> str:
    out = io.StringIO()
    call_command("staff", "list", stdout=out)
    return out.getvalue()


def present_token_text(browser, token: str, follow: bool = False) -> str:
    return browser.post("/staff/enrol/", {"token": token}, follow=follow).content.decode()


@pytest.mark.parametrize("role", ["helpdesk", "auditor"])
def test_each_role_sees_its_pages_and_only_those(make_staff, professional, role):
    browser = log_in(Client(), make_staff(f"staff-{role}", role))
    for url, allowed in staff_pages(professional.national_id).items():
        status = browser.get(url).status_code
        assert status == (200 if role in allowed else 403), (url, status)


def test_staff_without_a_role_and_professionals_see_nothing(
    make_staff, professional, professional_client
):
    no_role = log_in(Client(), make_staff("dora"))
    for url in staff_pages(professional.national_id):
        assert no_role.get(url).status_code == 403, url
        answer = professional_client.get(url)
        assert answer.status_code == 403, url
        assert b"Martin" not in answer.content


def test_anonymous_visitors_are_sent_to_the_staff_login(client, professional):
    for url in staff_pages(professional.national_id):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/staff/login/"), url
        assert b"Martin" not in response.content


def test_an_auditor_cannot_reset_a_device(make_staff, professional, make_device):
    device = make_device(professional.user)
    auditor = log_in(Client(), make_staff("bruno", "auditor"))
    url = f"/helpdesk/professionals/{professional.national_id}/reset-device/"
    response = auditor.post(url, {"reason": "ticket 42, phone lost", "confirmed": "yes"})
    assert response.status_code == 403
    assert Device.objects.filter(pk=device.pk).exists()


def test_a_helpdesk_member_cannot_export(helpdesk_client):
    assert helpdesk_client.get("/audit/export.csv").status_code == 403
    assert not AuditEvent.objects.filter(action="audit.export").exists()


def test_an_export_needs_a_recent_code(auditor_client):
    session = auditor_client.session
    session[VERIFIED_AT] = int(time.time()) - 3600
    session.save()
    response = auditor_client.get("/audit/export.csv")
    assert response.status_code == 302 and response["Location"].startswith("/staff/code/")
    assert not AuditEvent.objects.filter(action="audit.export").exists()


def test_destructive_actions_need_a_recent_code(helpdesk_client, professional):
    url = f"/helpdesk/professionals/{professional.national_id}/reset-device/"
    assert helpdesk_client.get(url).status_code == 200
    session = helpdesk_client.session
    session[VERIFIED_AT] = int(time.time()) - 3600
    session.save()
    response = helpdesk_client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/staff/code/")
    # Reading is still allowed: only actions ask for the code again.
    assert (
        helpdesk_client.get(f"/helpdesk/professionals/{professional.national_id}/").status_code
        == 200
    )
    member = helpdesk_client.member
    again = helpdesk_client.post(response["Location"], {"code": member.code(time.time() + 30)})
    assert again["Location"] == url
    assert helpdesk_client.get(url).status_code == 200


def test_the_admin_is_for_verified_superusers_and_hides_secrets(
    make_staff, professional, make_device
):
    professional.set_mail_password("Mot-de-passe-Mail-2026")
    device = make_device(professional.user)
    root = make_staff("root", superuser=True)
    unverified = Client()
    unverified.post("/staff/login/", {"username": "root", "password": root.password})
    helpdesk = log_in(Client(), make_staff("alice", "helpdesk"))
    for refused in (unverified, helpdesk):
        landed = refused.get("/admin/enrolment/device/", follow=True)
        assert landed.redirect_chain[-1][0].startswith("/staff/login/")
        assert str(device.uuid) not in landed.content.decode()

    admin = log_in(Client(), root)
    assert admin.get("/admin/").status_code == 200
    pages = [
        f"/admin/enrolment/device/{device.pk}/change/",
        f"/admin/enrolment/professional/{professional.pk}/change/",
        "/admin/enrolment/mailsession/",
    ]
    professional.refresh_from_db()
    for url in pages:
        html = admin.get(url).content.decode()
        assert admin.get(url).status_code == 200, url
        assert "ciphertext" not in html and "nonce" not in html
        assert professional.mail_password not in html
        assert "argon2" not in html


def test_every_admin_change_is_audited_and_needs_a_recent_code(make_staff, professional, settings):
    """A superuser's edits in the admin (a professional, a mailbox's members, a staff role)
    are in the audit trail with the fields changed; the national id cannot be edited; an
    old code is asked again before any of it."""
    root = make_staff("root", superuser=True)
    alice = make_staff("alice")
    admin = log_in(Client(), root)
    mailbox = professional.mailboxes.get()

    page = admin.get(f"/admin/enrolment/professional/{professional.pk}/change/")
    assert 'name="national_id"' not in page.content.decode()  # shown, not editable
    changed = admin.post(
        f"/admin/enrolment/professional/{professional.pk}/change/",
        {
            "national_id": "899700000666",
            "family_name": "Martin-Durand",
            "given_name": "Claire",
            "is_active": "on",
            "email": "",
        },
    )
    assert changed.status_code == 302, changed.content.decode()[:2000]
    professional.refresh_from_db()
    assert professional.national_id == "899700000001"
    assert professional.family_name == "Martin-Durand"

    helpdesk = Group.objects.get_or_create(name="helpdesk")[0]
    user_page = f"/admin/auth/user/{alice.user.pk}/change/"
    form = {
        "username": "alice",
        "email": alice.user.email,
        "is_active": "on",
        "groups": [helpdesk.pk],
        "date_joined_0": f"{timezone.localtime(alice.user.date_joined):%Y-%m-%d}",
        "date_joined_1": f"{timezone.localtime(alice.user.date_joined):%H:%M:%S}",
    }
    assert admin.post(user_page, form).status_code == 302
    assert alice.user.groups.filter(name="helpdesk").exists()
    assert (
        admin.post(f"/admin/enrolment/mailbox/{mailbox.pk}/delete/", {"post": "yes"}).status_code
        == 302
    )

    rows = AuditEvent.objects.filter(action__startswith="admin.").order_by("id")
    assert [(row.action, row.target, row.actor) for row in rows] == [
        ("admin.change", f"enrolment.professional:{professional.pk}", "root"),
        ("admin.change", f"auth.user:{alice.user.pk}", "root"),
        ("admin.delete", f"enrolment.mailbox:{mailbox.pk}", "root"),
    ]
    assert rows[0].details["changes"] == [{"changed": {"fields": ["Family name"]}}]
    assert "Groups" in rows[1].details["changes"][0]["changed"]["fields"]

    # An old code: the admin asks for a new one, and changes nothing meanwhile.
    session = admin.session
    session[VERIFIED_AT] -= settings.STAFF_RECENT_LOGIN_SECONDS + 1
    session.save()
    stale = admin.post(user_page, {**form, "groups": []}, follow=True)
    assert stale.redirect_chain[-1][0].startswith("/staff/code/")
    assert alice.user.groups.filter(name="helpdesk").exists()


def test_a_bulk_delete_that_fails_leaves_no_audit_row_claiming_it(make_staff, professional):
    root = make_staff("root", superuser=True)
    admin = log_in(Client(), root)
    mailbox = professional.mailboxes.get()
    form = {"action": "delete_selected", "_selected_action": [mailbox.pk], "post": "yes"}
    with (
        mock.patch(
            "enrolment.admin.MailboxAdmin.delete_queryset", side_effect=RuntimeError("disk full")
        ),
        pytest.raises(RuntimeError),
    ):
        admin.post("/admin/enrolment/mailbox/", form)
    assert not AuditEvent.objects.filter(action="admin.delete").exists()
    assert admin.post("/admin/enrolment/mailbox/", form).status_code == 302
    assert AuditEvent.objects.filter(action="admin.delete").count() == 1


def staff_menu(browser, url: str) -> set[str]:
    html = browser.get(url).content.decode()
    links = {"/helpdesk/": "Helpdesk", "/audit/": "Audit trail", "/helpdesk/summary/": "Summary"}
    return {name for href, name in links.items() if f'href="{href}"' in html}


def test_the_staff_menu_shows_the_roles_held_and_no_look_alike(make_staff):
    auditor = make_staff("eve", "auditor")
    auditor.user.groups.add(Group.objects.create(name="helpdesk-trainees"))  # not a role
    assert staff_menu(log_in(Client(), auditor), "/audit/") == {"Audit trail", "Summary"}
    helpdesk = log_in(Client(), make_staff("fred", "helpdesk"))
    with CaptureQueriesContext(connection) as queries:
        assert staff_menu(helpdesk, "/helpdesk/") == {"Helpdesk", "Summary"}
    # The role check and the menu: one read of the roles between them.
    assert sum("auth_group" in query["sql"] for query in queries.captured_queries) == 1


def test_behind_nginx_each_browser_has_its_own_budget_and_address(make_staff, settings):
    """gunicorn sees nginx as every request's peer: one browser guessing passwords must not
    spend every other browser's budget, and the trail names the browser, not nginx."""
    alice = make_staff("alice", "helpdesk")
    attacker = Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.66")
    for _ in range(settings.THROTTLE_ADDRESS_BURST + 5):
        attacker.post("/staff/login/", {"username": "alice", "password": "wrong-guess"})
    refused = attacker.post("/staff/login/", {"username": "alice", "password": alice.password})
    assert refused.status_code == 429  # that browser waits

    colleague = Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.8")
    log_in(colleague, alice)  # another browser behind the same nginx is not slowed
    guesses = AuditEvent.objects.filter(action="staff.password", outcome="reject")
    assert set(guesses.values_list("client_ip", flat=True)) == {"203.0.113.66"}


def test_a_proxy_may_be_named_by_its_network(make_staff, settings):
    """A web nginx on another host of the private network: its X-Forwarded-For counts."""
    settings.TRUSTED_PROXIES = ["10.0.0.0/24"]
    behind = Client(REMOTE_ADDR="10.0.0.7", HTTP_X_FORWARDED_FOR="203.0.113.9")
    behind.post("/staff/login/", {"username": "nobody", "password": "x"})
    [row] = AuditEvent.objects.filter(action="staff.password")
    assert row.client_ip == "203.0.113.9"


def test_a_forwarded_address_from_anyone_but_the_proxy_is_ignored(make_staff):
    """Only the configured proxy's X-Forwarded-For counts: a browser reaching gunicorn
    directly cannot pick its address."""
    direct = Client(REMOTE_ADDR="192.0.2.77", HTTP_X_FORWARDED_FOR="203.0.113.1")
    direct.post("/staff/login/", {"username": "nobody", "password": "x"})
    [row] = AuditEvent.objects.filter(action="staff.password")
    assert row.client_ip == "192.0.2.77"
