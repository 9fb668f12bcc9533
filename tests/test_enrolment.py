"""The enrolment wizard and the mail password, through Django's test client."""

import re
import time
from datetime import timedelta
from urllib.parse import parse_qs, unquote, urlparse

import pyotp
import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from enrolment import enrolling, seeds, totp
from enrolment.models import AuditEvent, Device, Mailbox, MailSession, Professional
from tests.conftest import keyring_json
from tests.test_seeds import seed_forms


def start_and_read_secret(client) -> str:
    """Steps 1 and 2 as the professional sees them: the Base32 key shown on the page."""
    assert client.post("/enrolment/").url == "/enrolment/scan/"
    page = client.get("/enrolment/scan/")
    assert page.status_code == 200
    return re.search(r'id="secret">([A-Z2-7 ]+)<', page.content.decode()).group(1).replace(" ", "")


def confirm(client, code):
    return client.post("/enrolment/confirm/", {"code": code})


def enrol(client) -> str:
    secret = start_and_read_secret(client)
    assert confirm(client, pyotp.TOTP(secret).now()).url == "/enrolment/done/"
    return secret


@pytest.fixture
def enrolled(professional, make_device):
    """The professional's current phone, with a known seed."""
    seed = seeds.new_seed()
    device = make_device(professional.user, seed, confirmed_at=timezone.now())
    return device, seed


def open_mail_session(device) -> MailSession:
    """A mail client logged in with this device, as the verifier would have left it."""
    return MailSession.objects.create(
        mailbox=Mailbox.objects.get(),
        professional=device.user.professional,
        device=device,
        credential_digest="d" * 64,
        client_network="192.0.2.7",
        protocol="imap",
        expires_at=timezone.now() + timedelta(hours=12),
    )


def code_for(seed: bytes, offset_seconds: int = 0) -> str:
    return totp.totp(seed, time.time() + offset_seconds)


def still_works(device, seed) -> bool:
    fresh = Device.objects.get(pk=device.pk)
    return fresh.confirmed and fresh.verify_token(code_for(seed, 30))


def test_the_wizard_turns_a_confirmed_code_into_the_active_device(professional_client):
    secret = enrol(professional_client)

    device = Device.objects.get(user__professional__national_id="899700000001")
    assert device.confirmed and device.confirmed_at and device.pending_until is None
    assert totp.base32_secret(device.seed()) == secret
    done = professional_client.get("/enrolment/done/").content.decode()
    assert "imap.otp.operateur.mssante.fr:993" in done
    assert "immediately followed by the 6 digits" in done
    assert [m.subject for m in mail.outbox] == [
        "Un téléphone a été enrôlé pour votre accès à la messagerie MSSanté"
    ]
    assert mail.outbox[0].to == ["claire.martin@demo.mssante.fr"]


def test_the_done_page_leaves_out_outgoing_mail_where_there_is_none(professional_client, settings):
    enrol(professional_client)
    settings.MAIL_IMAP_HOST, settings.MAIL_IMAP_PORT = "127.0.0.1", 1993
    settings.MAIL_SMTP_HOST = ""  # the demo's: it runs no Postfix

    done = professional_client.get("/enrolment/done/").content.decode()
    assert "127.0.0.1:1993" in done
    assert "SMTP" not in done and "smtp.otp" not in done


def test_a_key_this_node_lacks_is_no_wrong_code_and_nothing_is_lost(professional_client, settings):
    """Shown on a node with the new key, typed on a node the keyring has not reached yet:
    the right code is not counted as a wrong one; 503 says to try again, and it works then."""
    settings.SEED_KEYRING = keyring_json("new-key", "test1")  # the node that made the key
    secret = start_and_read_secret(professional_client)
    with_new_key = settings.SEED_KEYRING
    settings.SEED_KEYRING = keyring_json("test1")  # the next request lands on the other node

    for page in (
        professional_client.get("/enrolment/scan/"),
        confirm(professional_client, pyotp.TOTP(secret).now()),
    ):
        assert page.status_code == 503 and page["Retry-After"] == "60"
        assert "Try again in a few minutes" in page.content.decode()
    pending = Device.objects.get(confirmed=False)
    assert pending.throttling_failure_count == 0

    settings.SEED_KEYRING = with_new_key  # the keyring copied there
    assert confirm(professional_client, pyotp.TOTP(secret).now()).url == "/enrolment/done/"


def test_back_or_a_form_sent_again_after_the_confirmation_lands_on_the_done_page(
    professional_client,
):
    secret = start_and_read_secret(professional_client)
    assert confirm(professional_client, pyotp.TOTP(secret).now()).url == "/enrolment/done/"

    code = pyotp.TOTP(secret).now()
    for again in (
        professional_client.get("/enrolment/scan/", follow=True),  # Back, twice
        professional_client.get("/enrolment/confirm/", follow=True),
        professional_client.post("/enrolment/confirm/", {"code": code}, follow=True),  # again
    ):
        assert again.redirect_chain[-1][0] == "/enrolment/done/"
        assert "This phone is enrolled already" in again.content.decode()
    assert Device.objects.filter(confirmed=True).count() == 1  # no second enrolment offered


def test_the_start_page_offers_to_go_on_with_the_key_already_shown(professional_client):
    """'Finish the enrolment' from the home page: a new key would make the one scanned useless."""
    secret = start_and_read_secret(professional_client)

    start = professional_client.get("/enrolment/").content.decode()
    assert "Your enrolment is under way" in start
    assert 'href="/enrolment/confirm/"' in start and 'href="/enrolment/scan/"' in start
    again = professional_client.get("/enrolment/scan/").content.decode()  # the same key
    assert secret in again.replace(" ", "")
    assert confirm(professional_client, pyotp.TOTP(secret).now()).url == "/enrolment/done/"


def test_the_done_page_names_the_separator_when_there_is_one(professional_client, settings):
    enrol(professional_client)
    settings.VERIFY_CODE_SEPARATOR = ";"
    done = professional_client.get("/enrolment/done/").content.decode()
    assert "type your mail password, then <kbd>;</kbd>, then the 6 digits" in done
    assert "immediately followed" not in done


def test_dates_in_english_put_the_day_first(professional_client, professional, make_device):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    at = datetime(2026, 12, 2, 9, 30, tzinfo=ZoneInfo("Europe/Paris"))
    make_device(professional.user, confirmed_at=at)
    home = professional_client.get("/").content.decode()
    assert "enrolled on 02/12/2026 09:30" in home


def test_the_key_typed_by_hand_has_the_qr_codes_issuer(professional_client, settings):
    settings.TOTP_ISSUER = "Opérateur: MSSanté"
    professional_client.post("/enrolment/")
    page = professional_client.get("/enrolment/scan/").content.decode()
    assert 'type "Opérateur MSSanté" as issuer' in page


def test_the_scan_page_shows_the_key_three_ways_and_is_never_cached(professional_client):
    professional_client.post("/enrolment/")
    page = professional_client.get("/enrolment/scan/")
    html = page.content.decode()

    assert "no-store" in page["Cache-Control"]
    assert "<svg" in html and 'role="img"' in html
    secret = re.search(r'id="secret">([A-Z2-7 ]+)<', html).group(1)
    assert re.fullmatch(r"([A-Z2-7]{4} ){7}[A-Z2-7]{4}", secret)
    uri = re.search(r'id="otpauth-link" href="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert parse_qs(urlparse(uri).query)["secret"] == [secret.replace(" ", "")]


def test_the_uri_follows_freeotps_rules(professional, settings):
    settings.TOTP_ISSUER = "Opérateur: MSSanté"
    device = enrolling.start_enrolment(professional.user)
    uri = enrolling.otpauth_uri(device, enrolling.account_label(professional), device.seed())

    assert uri.isascii()
    parts = urlparse(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    label = unquote(parts.path[1:])
    assert label.count(":") == 1
    issuer, account = label.split(":")
    assert (issuer, account) == ("Opérateur MSSanté", "claire.martin@demo.mssante.fr")
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query["issuer"] == issuer
    assert (query["algorithm"], query["digits"], query["period"]) == ("SHA1", "6", "30")
    assert re.fullmatch(r"[A-Z2-7]{32}", query["secret"])  # 160 bits, unpadded, upper case
    assert pyotp.parse_uri(uri).now() == code_for(device.seed())


def test_a_wrong_code_changes_nothing(professional_client, enrolled):
    device, seed = enrolled
    start_and_read_secret(professional_client)

    page = confirm(professional_client, "000000")

    assert "This code is not the right one" in page.content.decode()
    assert still_works(device, seed)
    assert Device.objects.filter(confirmed=False).count() == 1
    assert mail.outbox == []


def test_an_expired_enrolment_cannot_be_confirmed_and_changes_nothing(
    professional_client, enrolled
):
    device, seed = enrolled
    secret = start_and_read_secret(professional_client)
    Device.objects.filter(confirmed=False).update(pending_until=timezone.now() - timedelta(1))

    response = confirm(professional_client, pyotp.TOTP(secret).now())

    assert response.url == "/enrolment/"
    assert "start again" in professional_client.get("/enrolment/").content.decode()
    assert professional_client.get("/enrolment/scan/").url == "/enrolment/"
    assert still_works(device, seed)


def test_an_abandoned_reenrolment_leaves_the_old_phone_working(professional_client, enrolled):
    device, seed = enrolled
    start_and_read_secret(professional_client)  # ... and the professional walks away

    assert still_works(device, seed)
    home = professional_client.get("/").content.decode()
    assert "Active, enrolled on" in home
    assert "the current one works until it is confirmed" in home


def test_a_confirmed_reenrolment_stops_the_old_phone_at_once(professional_client, enrolled):
    old_device, old_seed = enrolled
    open_mail_session(old_device)

    enrol(professional_client)

    assert not Device.objects.filter(pk=old_device.pk).exists()
    assert MailSession.objects.get().revoked_reason == "device_removed"
    [device] = Device.objects.filter(confirmed=True)
    assert not device.verify_token(code_for(old_seed, 30))
    assert mail.outbox[-1].subject.startswith("Un nouveau téléphone")


@pytest.mark.parametrize(
    ("offset", "told"), [(120, "120 seconds ahead"), (-120, "120 seconds behind")]
)
def test_the_phones_clock_drift_is_learned_and_reported(
    professional_client, moved_clock, offset, told
):
    secret = start_and_read_secret(professional_client)
    moved_clock.stop()  # a code made just before a step ends would be checked after it

    confirm(professional_client, pyotp.TOTP(secret).at(moved_clock.now() + offset))

    device = Device.objects.get(confirmed=True)
    assert device.drift == offset // 30
    page = professional_client.get("/enrolment/done/").content.decode()
    assert f"Your phone's clock is {told}." in page and "-" not in told
    # Later logins expect the phone's clock where it was learned, within one step.
    assert device.verify_token(pyotp.TOTP(secret).at(moved_clock.now() + offset + 30))


def test_the_clock_notice_in_french_has_the_right_plural(professional_client):
    secret = start_and_read_secret(professional_client)
    confirm(professional_client, pyotp.TOTP(secret).at(time.time() - 120))
    page = professional_client.get(
        "/enrolment/done/", headers={"accept-language": "fr"}
    ).content.decode()
    assert "L'horloge de votre téléphone retarde de 120 secondes." in page


def test_the_seed_is_shown_to_and_confirmed_from_the_browser_session_that_asked(
    professional_client, professional
):
    """Another session of the same professional (a shared computer's, a stolen cookie's)
    is sent back to the start: it neither sees the key nor confirms it."""
    secret = start_and_read_secret(professional_client)
    other = Client(HTTP_ACCEPT_LANGUAGE="en")
    other.force_login(professional.user)
    session = other.session
    session["psc_auth_time"] = int(time.time())
    session.save()

    assert other.get("/enrolment/scan/").url == "/enrolment/"
    assert confirm(other, pyotp.TOTP(secret).now()).url == "/enrolment/"
    assert not Device.objects.filter(confirmed=True).exists()
    assert confirm(professional_client, pyotp.TOTP(secret).now()).url == "/enrolment/done/"


def test_wrong_codes_back_off(professional_client):
    secret = start_and_read_secret(professional_client)
    for _ in range(3):
        confirm(professional_client, "000000")

    right = pyotp.TOTP(secret).now()
    page = confirm(professional_client, right)

    assert "Too many wrong codes. Wait" in page.content.decode()
    assert 'aria-describedby="code-help code-error"' in page.content.decode()
    assert right not in page.content.decode()  # refused, but still valid for a while
    assert not Device.objects.filter(confirmed=True).exists()
    Device.objects.update(throttling_failure_timestamp=timezone.now() - timedelta(minutes=5))
    assert confirm(professional_client, pyotp.TOTP(secret).now()).url == "/enrolment/done/"


def test_no_page_or_email_after_confirmation_holds_the_seed(professional_client):
    enrol(professional_client)
    seed = Device.objects.get(confirmed=True).seed()
    professional_client.post(
        "/password/", {"password1": "Cheval-Agrafe-27", "password2": "Cheval-Agrafe-27"}
    )
    seen = []
    for path in [
        "/",
        "/enrolment/",
        "/enrolment/scan/",
        "/enrolment/confirm/",
        "/enrolment/done/",
        "/password/",
    ]:
        response = professional_client.get(path, follow=True)
        assert response.status_code == 200
        seen.append(response.content)
    seen += [f"{m.subject}\n{m.body}".encode() for m in mail.outbox]
    seen += [c.value.encode() for c in professional_client.cookies.values()]

    assert len(mail.outbox) == 2
    for blob in seen:
        for form in seed_forms(seed):
            assert form not in blob


def test_every_step_is_in_the_audit_trail(professional_client):
    secret = start_and_read_secret(professional_client)
    confirm(professional_client, "000000")
    # The person takes a few seconds to type again: past the first back-off (one second).
    Device.objects.update(throttling_failure_timestamp=timezone.now() - timedelta(seconds=5))
    confirm(professional_client, pyotp.TOTP(secret).now())

    trail = list(AuditEvent.objects.values_list("actor", "action", "outcome"))
    assert trail == [
        ("899700000001", "enrolment.start", "ok"),
        ("899700000001", "enrolment.confirm", "wrong_code"),
        ("899700000001", "enrolment.confirm", "confirmed"),
    ]


def test_the_wizard_needs_a_recent_psc_login(professional_client):
    session = professional_client.session
    session["psc_auth_time"] = int(time.time()) - 3600
    session.save()

    for path in ["/enrolment/", "/enrolment/scan/", "/enrolment/confirm/", "/password/"]:
        response = professional_client.get(path)
        assert response.status_code == 302
        assert response.url.startswith("/oidc/authenticate/?next=")
    assert professional_client.post("/enrolment/").status_code == 302
    assert not Device.objects.exists()


def test_the_mail_password_is_hashed_with_argon2id_and_ends_mail_sessions(
    professional_client, enrolled
):
    device, _ = enrolled
    open_mail_session(device)

    response = professional_client.post(
        "/password/", {"password1": "Cheval-Agrafe-27", "password2": "Cheval-Agrafe-27"}
    )

    assert response.url == "/"
    professional = device.user.professional
    professional.refresh_from_db()
    assert professional.mail_password.startswith("argon2$argon2id$v=19$m=19456,t=2,p=1$")
    assert "Cheval-Agrafe-27" not in professional.mail_password
    assert MailSession.objects.get().revoked_reason == "password_changed"
    assert mail.outbox[-1].subject == "Votre mot de passe de messagerie MSSanté a été modifié"


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        ("court", "court", "This password is too short"),
        ("password1234", "password1234", "This password is too common"),
        ("804519372615", "804519372615", "This password is entirely numeric"),
        ("Cheval-Agrafe-27", "Cheval-Agrafe-28", "The two passwords differ"),
        # Longer than the verifier takes with the code: it could never log in.
        ("Cheval-Agrafe-" * 80, "Cheval-Agrafe-" * 80, "At most 1018 characters"),
    ],
)
def test_a_weak_mail_password_is_refused(professional_client, first, second, message):
    page = professional_client.post("/password/", {"password1": first, "password2": second})
    html = page.content.decode()
    assert message in html
    # The error is read out with its field.
    erring = "password2" if "differ" in message else "password1"
    assert f'id="{erring}-error"' in html
    tag = re.search(rf'<input[^>]*name="{erring}"[^>]*>', html).group(0)
    assert f"{erring}-error" in tag and 'aria-invalid="true"' in tag
    assert Professional.objects.get(national_id="899700000001").mail_password == ""
    assert professional_client.get("/").content.decode().count("Not set yet.") == 1


def test_a_double_submitted_confirmation_keeps_the_new_device(professional_client, enrolled):
    secret = start_and_read_secret(professional_client)
    pending = Device.objects.get(confirmed=False)
    code = pyotp.TOTP(secret).now()

    first = enrolling.confirm_enrolment(pending, code)
    second = enrolling.confirm_enrolment(pending, code)  # the same form, clicked twice

    assert first.outcome is enrolling.Outcome.CONFIRMED
    assert second.outcome is enrolling.Outcome.ALREADY_CONFIRMED
    assert Device.objects.get(confirmed=True).pk == pending.pk


def test_a_double_clicked_confirm_sends_one_email(professional_client):
    secret = start_and_read_secret(professional_client)
    code = pyotp.TOTP(secret).now()
    answers = [professional_client.post("/enrolment/confirm/", {"code": code}) for _ in range(2)]
    assert answers[0]["Location"] == "/enrolment/done/"
    assert len(mail.outbox) == 1  # the second found nothing pending, or the first's device


def test_emails_are_plain_text_not_html_escaped(professional_client, professional):
    professional.given_name = "Ma'ryse & Jo"
    professional.save()
    secret = start_and_read_secret(professional_client)
    confirm(professional_client, pyotp.TOTP(secret).now())
    assert "Bonjour Ma'ryse & Jo," in mail.outbox[-1].body


def test_emails_are_in_french_then_in_english(professional_client):
    """Read in a mailbox, by whoever reads it: the helpdesk's events know no language."""
    secret = start_and_read_secret(professional_client)
    confirm(professional_client, pyotp.TOTP(secret).now())
    [message] = mail.outbox
    assert message.subject == "Un téléphone a été enrôlé pour votre accès à la messagerie MSSanté"
    french, _, english = message.body.partition("\n-- A phone was enrolled for your MSSanté")
    assert french.startswith("Bonjour Claire,") and "appelez immédiatement" in french
    assert "Hello Claire," in english and "call the helpdesk at 01 23 45 67 89 at once" in english
