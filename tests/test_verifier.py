"""The verifier through its nginx auth_http interface, in-process (Django's test client):
every rule of DESIGN §5. The real nginx, Dovecot and Postfix are in test_mail_stack.py."""

import json
import re
import time
from datetime import timedelta
from unittest import mock

import pytest
from django.contrib.auth.hashers import check_password
from django.db import DatabaseError, connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from enrolment import forms, throttle, totp, verifier
from enrolment.models import AuditEvent, Device, MailSession, Professional
from tests.mail_fixtures import make_mail_user, nginx_escape

HOME_IP, OTHER_IP = "192.0.2.10", "198.51.100.7"


def nginx_ask(
    user,
    secret,
    client_ip=HOME_IP,
    protocol="imap",
    key="test-nginx-shared-secret",
    remote="127.0.0.1",
    attempt=1,
):
    """One auth_http request, as nginx's mail module sends it."""
    headers = {
        "Auth-Method": "plain",
        "Auth-User": nginx_escape(user),
        "Auth-Pass": nginx_escape(secret),
        "Auth-Protocol": protocol,
        "Auth-Login-Attempt": str(attempt),
        "Client-IP": client_ip,
        "X-Auth-Key": key,
    }
    return Client(REMOTE_ADDR=remote).get("/internal/nginx-auth", headers=headers)


def ok(response) -> bool:
    return response["Auth-Status"] == "OK"


@pytest.fixture(autouse=True)
def _nginx(nginx_secret):
    return nginx_secret


def hashes_during(action) -> int:
    """How many password hashes an action costs (Argon2 time is what an attacker measures)."""
    with mock.patch("enrolment.verifier.check_password", wraps=check_password) as spy:
        action()
    return spy.call_count


def test_the_trail_keeps_no_password_typed_as_the_user_name(claire):
    wrong_code = f"{(int(claire.code()) + 1) % 10**6:06d}"
    too_long = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + ".fr"
    for typed, secret in [
        ("Tr0ub4dor&3-secret", claire.secret()),  # the password pasted in the wrong field
        ("personne@demo.mssante.fr", claire.secret()),  # no such mailbox
        ("personne@demo.mssante.fr", claire.secret()),  # the same, refused before any lookup
        (too_long, claire.secret()),  # an address, but longer than any mailbox's
        (claire.mailbox, claire.password + wrong_code),
    ]:
        assert not ok(nginx_ask(typed, secret))

    rows = AuditEvent.objects.filter(action="mail.login").order_by("id")
    assert list(rows.values_list("target", "details__reason")) == [
        ("", "unknown_mailbox"),
        ("@demo.mssante.fr", "unknown_mailbox"),
        ("@demo.mssante.fr", "refused_again"),
        ("", "malformed"),
        ("claire.martin@demo.mssante.fr", "wrong_code"),
    ]


def test_nginx_may_be_allowed_by_its_network(claire, settings):
    settings.NGINX_AUTH_ALLOWED_ADDRESSES = ["10.0.0.0/24"]
    assert ok(nginx_ask(claire.mailbox, claire.secret(), remote="10.0.0.5"))
    # A pool bound to [::] sees IPv4 nginx as an IPv4-mapped address: the same nginx.
    assert ok(nginx_ask(claire.mailbox, claire.secret(), remote="::ffff:10.0.0.6"))
    refused = nginx_ask(claire.mailbox, claire.secret(), remote="10.0.1.5")
    assert refused["Auth-Status"] != "OK"


def test_a_good_password_and_code_log_in(claire):
    answer = nginx_ask(claire.mailbox, claire.secret())

    assert ok(answer)
    assert (answer["Auth-Server"], answer["Auth-Port"]) == ("127.0.0.1", "1143")
    assert answer["Auth-Pass"] == "test-backend-token-" + "b" * 32  # never the user's password
    assert len(answer.serialize_headers()) < 1024  # nginx reads at most 1 KiB
    event = AuditEvent.objects.get(action="mail.login")
    assert (event.actor, event.target, event.outcome, event.client_ip) == (
        "899700000001",
        "claire.martin@demo.mssante.fr",
        "ok",
        HOME_IP,
    )
    assert event.details == {"protocol": "imap", "reason": "new_login", "via": "nginx"}


def test_smtp_goes_to_the_smtp_backend(claire):
    answer = nginx_ask(claire.mailbox, claire.secret(), protocol="smtp")
    assert ok(answer) and answer["Auth-Port"] == "1025"
    assert "Auth-Pass" not in answer  # nginx never AUTHs to the SMTP backend (XCLIENT)


def test_the_login_name_is_case_insensitive(claire):
    assert ok(nginx_ask("Claire.Martin@DEMO.mssante.fr", claire.secret()))


@pytest.mark.parametrize(
    "case",
    ["wrong code", "wrong password", "missing code", "unknown mailbox", "code only", "empty"],
)
def test_every_refusal_looks_the_same_and_costs_one_hash(claire, case):
    right_code = claire.code()
    wrong_code = f"{(int(right_code) + 1) % 10**6:06d}"
    user, secret = {
        "wrong code": (claire.mailbox, claire.password + wrong_code),
        "wrong password": (claire.mailbox, "not-the-password" + right_code),
        "missing code": (claire.mailbox, claire.password),
        "unknown mailbox": ("nobody@demo.mssante.fr", claire.secret()),
        "code only": (claire.mailbox, right_code),
        "empty": (claire.mailbox, ""),
    }[case]
    answers = []
    hashes = hashes_during(lambda: answers.append(nginx_ask(user, secret)))

    [answer] = answers
    assert answer["Auth-Status"] == "[AUTHENTICATIONFAILED] Invalid login or password"
    assert int(answer["Auth-Wait"]) >= 1
    assert hashes == (0 if case == "empty" else 1)
    assert secret == "" or secret not in json.dumps(list(AuditEvent.objects.values()), default=str)


def test_smtp_refusals_carry_the_smtp_error_code(claire):
    answer = nginx_ask(claire.mailbox, claire.password + "000000", protocol="smtp")
    assert (answer["Auth-Status"], answer["Auth-Error-Code"]) == (
        "Invalid login or password",
        "535 5.7.8",
    )


def test_parallel_connections_and_reconnections_reuse_the_string(claire, moved_clock):
    secret = claire.secret()
    assert all(ok(nginx_ask(claire.mailbox, secret)) for _ in range(5))
    moved_clock.advance(600)  # the client reconnects ten minutes later with its cached string

    assert ok(nginx_ask(claire.mailbox, secret))
    assert not ok(nginx_ask(claire.mailbox, secret, client_ip=OTHER_IP))
    assert MailSession.objects.count() == 1
    assert Device.objects.get().last_t >= 0


def test_a_session_is_one_query_and_no_hash(claire, django_assert_max_num_queries):
    secret = claire.secret()
    assert ok(nginx_ask(claire.mailbox, secret))
    answers = []
    with django_assert_max_num_queries(1):
        assert hashes_during(lambda: answers.append(nginx_ask(claire.mailbox, secret))) == 0
    assert ok(answers[0])


def test_sessions_expire_when_idle_and_after_their_lifetime(claire, moved_clock, settings):
    secret = claire.secret()
    assert ok(nginx_ask(claire.mailbox, secret))
    moved_clock.advance(settings.MAIL_SESSION_IDLE_SECONDS + 1)
    assert not ok(nginx_ask(claire.mailbox, secret))

    fresh = claire.secret(moved_clock.now())
    assert ok(nginx_ask(claire.mailbox, fresh))
    # Kept busy, every 1.5 h (idle time: 2 h), it lasts past many idle times, up to 12 h.
    busy_every = settings.MAIL_SESSION_IDLE_SECONDS * 3 // 4
    lifetime = settings.MAIL_SESSION_LIFETIME_SECONDS
    for _ in range(lifetime // busy_every - 1):
        moved_clock.advance(busy_every)
        assert ok(nginx_ask(claire.mailbox, fresh))
    moved_clock.advance(lifetime % busy_every + busy_every)  # the lifetime, not idleness, ends it
    assert not ok(nginx_ask(claire.mailbox, fresh))


@pytest.mark.parametrize(
    "how",
    [
        "professional ends all",
        "password change",
        "device reset",
        "professional deactivated",
        "mailbox deactivated",
        "membership removed",
        "membership handed to another",
    ],
)
def test_a_session_ends_with_every_event_that_should_end_it(claire, nurses, how):
    secret = claire.secret()
    assert ok(nginx_ask(claire.mailbox, secret))
    if how == "professional ends all":
        claire.professional.end_mail_sessions("ended_by_professional")
    elif how == "password change":
        claire.professional.set_mail_password("Un-Autre-Mot-De-Passe")
    elif how == "device reset":
        claire.device.delete()
    elif how == "professional deactivated":
        claire.professional.is_active = False
        claire.professional.save()
    elif how == "mailbox deactivated":
        mailbox = claire.professional.mailboxes.get()
        mailbox.is_active = False
        mailbox.save()
    elif how == "membership removed":
        claire.professional.memberships.get().delete()
    else:  # as the admin's inline can do
        membership = claire.professional.memberships.get()
        membership.professional = nurses[0].professional
        membership.save()

    assert not ok(nginx_ask(claire.mailbox, secret))


def test_a_string_seen_before_is_refused_elsewhere_as_any_guess_and_not_counted(claire):
    """Refused at a wrong password's price (a hash, the address's token and wait): a cheaper
    refusal would tell a guesser that this password with that old code was right. Not
    counted against the professional: it is what their mail clients retry all day."""
    secret = claire.secret()
    assert ok(nginx_ask(claire.mailbox, secret))
    seen, seen_hashes = ask_counting_hashes(claire.mailbox, secret, "203.0.113.41")
    wrong = "not her password" + secret[-6:]
    guessed, guessed_hashes = ask_counting_hashes(claire.mailbox, wrong, "203.0.113.42")
    assert refusal_seen(seen) == refusal_seen(guessed) == REFUSED
    assert seen_hashes == guessed_hashes == 1
    assert AuditEvent.objects.filter(details__reason="session_ended_or_elsewhere").exists()
    assert Device.objects.get().throttling_failure_count == 0  # neither is a guess


def test_a_clients_connections_retrying_one_old_string_do_not_drain_the_address(
    claire, moved_clock, settings
):
    """Its session over, a client's five connections retry the cached string again and
    again: one token each refill time, not one per try, so whoever else is behind that
    address (a hospital's NAT) still logs in. The retries are noted on the old session."""
    cached = claire.secret(moved_clock.now())
    assert ok(nginx_ask(claire.mailbox, cached))
    moved_clock.advance(settings.MAIL_SESSION_IDLE_SECONDS + 1)
    for _ in range(3 * settings.THROTTLE_ADDRESS_BURST):
        assert not ok(nginx_ask(claire.mailbox, cached))
    assert MailSession.objects.get().last_refused_at is not None
    assert ok(nginx_ask(claire.mailbox, claire.secret(moved_clock.now())))


def test_an_address_repeating_a_refused_string_is_not_hashed_again(claire, moved_clock, settings):
    """One address sending one wrong string over and over: refused each time as the first
    time, but with one Argon2id check every few seconds, not one per request (which would
    let a single address keep the verifier's processors busy without ever running out of
    budget). The right credential from that address still logs in."""
    moved_clock.stop()
    wrong = "not her password" + claire.code(moved_clock.now())
    first, first_hashes = ask_counting_hashes(claire.mailbox, wrong, "203.0.113.44")
    repeats = [ask_counting_hashes(claire.mailbox, wrong, "203.0.113.44") for _ in range(10)]
    assert refusal_seen(first) == REFUSED and first_hashes == 1
    assert [refusal_seen(answer) for answer, _ in repeats] == [REFUSED] * 10
    assert sum(hashes for _, hashes in repeats) == 0
    assert AuditEvent.objects.filter(details__reason="refused_again").count() == 1

    moved_clock.advance(throttle.REFUSED_AGAIN_SECONDS)
    assert ask_counting_hashes(claire.mailbox, wrong, "203.0.113.44")[1] == 1
    right = claire.secret(moved_clock.now())
    assert ok(nginx_ask(claire.mailbox, right, client_ip="203.0.113.44"))


def test_parallel_copies_of_a_repeated_string_get_one_hash_per_window(claire, moved_clock):
    """Five connections (on five workers) send one wrong string together every 2 s: each
    window's copies all read the bucket before any of them is refused, as parallel workers
    do (here: each copy arrives while the one before it hashes). One copy a window is
    hashed, the others refused before the hash."""
    moved_clock.stop()
    wrong = "not her password" + claire.code(moved_clock.now())
    assert not ok(nginx_ask(claire.mailbox, wrong, client_ip="203.0.113.45"))
    real_check, in_flight = verifier._check_password, []

    def check_while_the_next_copy_arrives(password, professional):
        if len(in_flight) < 4:
            in_flight.append(1)
            assert not ok(nginx_ask(claire.mailbox, wrong, client_ip="203.0.113.45"))
        return real_check(password, professional)

    hashed = 0
    with mock.patch.object(verifier, "_check_password", check_while_the_next_copy_arrives):
        for _ in range(30):  # one minute
            moved_clock.advance(throttle.REFUSED_AGAIN_SECONDS)
            in_flight.clear()
            hashed += hashes_during(
                lambda: nginx_ask(claire.mailbox, wrong, client_ip="203.0.113.45")
            )
    assert hashed == 30


@pytest.mark.parametrize("refill_per_minute", [10, 1])
def test_the_string_refused_during_a_back_off_gets_in_soon_after_it_ends(
    claire, moved_clock, settings, refill_per_minute
):
    """A typo starts a back-off of 1 s; the right string, sent during it, is refused (the
    back-off is silent), and the mail client retries that string: once the back-off is
    over it gets in within seconds, whatever the address's refill rate (the code in it is
    valid for a minute or so only)."""
    settings.THROTTLE_ADDRESS_REFILL_PER_MINUTE = refill_per_minute
    moved_clock.stop()
    now = moved_clock.now()
    right = claire.secret(now)
    assert not ok(nginx_ask(claire.mailbox, claire.password + wrong_code(claire, now)))
    assert not ok(nginx_ask(claire.mailbox, right))  # during the back-off
    moved_clock.advance(throttle.REFUSED_AGAIN_SECONDS)
    assert ok(nginx_ask(claire.mailbox, right))


def test_old_strings_from_an_address_over_budget_are_throttled_like_any(claire, settings):
    """A string accepted once (its session elsewhere) does not lift the address's budget."""
    secret = claire.secret()
    assert ok(nginx_ask(claire.mailbox, secret))
    for n in range(settings.THROTTLE_ADDRESS_BURST):
        nginx_ask(f"user{n}@demo.mssante.fr", "guess123456", client_ip="203.0.113.43")
    answer, hashes = ask_counting_hashes(claire.mailbox, secret, "203.0.113.43")
    assert not ok(answer) and hashes == 0 and int(answer["Auth-Wait"]) > 1


def test_a_spent_code_with_the_right_password_answers_as_a_wrong_password(
    claire, settings, moved_clock
):
    """The code of the step before the one accepted: spent, and refused with the wait the
    address has earned, as a wrong password from the same budget is."""
    # The verifier's clock held still: should a step boundary pass during the guesses, the
    # step before the one accepted would fall out of the window, no longer a spent code.
    moved_clock.stop()
    now = moved_clock.now()
    assert ok(nginx_ask(claire.mailbox, claire.secret(now)))
    earlier = claire.code(now - 30)
    answers = {}
    for password, client_ip in ((claire.password, "203.0.113.51"), ("nope", "203.0.113.52")):
        for n in range(settings.THROTTLE_ADDRESS_BURST - 1):  # one token left, then none
            nginx_ask(f"user{n}@demo.mssante.fr", "guess123456", client_ip=client_ip)
        answer, hashes = ask_counting_hashes(claire.mailbox, password + earlier, client_ip)
        answers[password == claire.password] = (*refusal_seen(answer), hashes)
    assert answers[True] == answers[False]
    assert int(answers[True][2]) > 1 and answers[True][3] == 1
    assert AuditEvent.objects.filter(details__reason="code_reused").exists()


def statements_of(mailbox, secret, client_ip) -> list[tuple[str, str]]:
    """The kind and table of each SQL statement a refusal runs: what its time is made of."""
    with CaptureQueriesContext(connection) as queries:
        assert not ok(nginx_ask(mailbox, secret, client_ip=client_ip))
    shapes = []
    for query in queries.captured_queries:
        sql = query["sql"].replace('"', "")
        table = re.search(r"\b(?:FROM|INTO|UPDATE)\s+(\w+)", sql)
        shapes.append((sql.split()[0].upper(), table[1] if table else ""))
    return shapes


def test_every_refusal_runs_the_same_statements(claire, nurses, django_user_model, moved_clock):
    """Whether the mailbox exists, is personal or shared, has a device, and which factor was
    right: none of it shows in the statements a refusal runs (one more would be a fraction
    of a millisecond a guesser can average out of many answers)."""
    sofia = nurses[0]
    make_mail_user(django_user_model, "899700000009", "sans.appareil@demo.mssante.fr", "pw")
    Device.objects.filter(user__professional__national_id="899700000009").delete()
    moved_clock.stop()  # every code of the cases is what it is meant to be, however long
    now = moved_clock.now()
    assert ok(nginx_ask(claire.mailbox, claire.secret(now), client_ip="203.0.113.70"))
    spent = claire.secret(now)
    claire_wrong = wrong_code(claire, now)
    cases = {
        "unknown mailbox": ("nobody@demo.mssante.fr", "guess123456"),
        "mailbox without device": ("sans.appareil@demo.mssante.fr", "pw123456"),
        "all wrong": (claire.mailbox, "guess" + claire_wrong),
        "right password, wrong code": (claire.mailbox, claire.password + claire_wrong),
        "right code, wrong password": (sofia.mailbox, "guess" + sofia.code(now)),
        "shared mailbox, all wrong": (sofia.mailbox, "guess" + wrong_code(sofia, now)),
        "right password, spent code": (claire.mailbox, spent),
    }
    seen = {
        case: statements_of(mailbox, secret, f"203.0.113.{71 + n}")
        for n, (case, (mailbox, secret)) in enumerate(cases.items())
    }
    assert len({tuple(shapes) for shapes in seen.values()}) == 1, seen


def test_outdated_argon2_parameters_are_rehashed_after_a_login_only(claire, settings, moved_clock):
    """Not when the password is right and the code is not: a second hash then would tell."""
    settings.ARGON2_TIME_COST = 3  # the operator raised it since Claire's password was set
    stored = Professional.objects.get(pk=claire.professional.pk).mail_password
    wrong = claire.password + wrong_code(claire, moved_clock.now())
    assert not ok(nginx_ask(claire.mailbox, wrong, client_ip="203.0.113.61"))
    assert Professional.objects.get(pk=claire.professional.pk).mail_password == stored
    moved_clock.advance(30)  # past the back-off the wrong code started
    assert ok(nginx_ask(claire.mailbox, claire.secret(moved_clock.now())))
    rehashed = Professional.objects.get(pk=claire.professional.pk).mail_password
    assert rehashed != stored and ",t=3," in rehashed


def test_a_failed_rehash_does_not_turn_a_login_into_a_refusal(claire, settings):
    settings.ARGON2_TIME_COST = 3
    with mock.patch("enrolment.verifier.make_password", side_effect=DatabaseError("busy")):
        assert ok(nginx_ask(claire.mailbox, claire.secret()))


def test_one_typo_on_parallel_connections_counts_once(claire):
    """Each connection read the device before any recorded the failure: the database, not
    what each read, decides that the same string again is no new guess."""
    read_before = [Device.objects.get(pk=claire.device.pk) for _ in range(5)]
    for device in read_before:
        throttle.record_refusal(device, "digest-of-the-typo", guess=True)
    assert Device.objects.get(pk=claire.device.pk).throttling_failure_count == 1


def test_organisational_mailbox_logins_stay_nominative(nurses):
    sofia, luc = nurses
    assert ok(nginx_ask(sofia.mailbox, sofia.secret()))
    assert ok(nginx_ask(luc.mailbox, luc.secret(), client_ip=OTHER_IP))
    # Sofia's password with Luc's code is nobody's login.
    assert not ok(nginx_ask(sofia.mailbox, sofia.password + luc.code(), client_ip="192.0.2.99"))

    logins = AuditEvent.objects.filter(action="mail.login", outcome="ok")
    assert sorted(logins.values_list("actor", flat=True)) == ["899700000002", "899700000003"]
    assert set(logins.values_list("target", flat=True)) == {sofia.mailbox}


def wrong_code(person, now, offset=1):
    return f"{(int(person.code(now)) + offset) % 10**6:06d}"


REFUSED = (200, "[AUTHENTICATIONFAILED] Invalid login or password", "1")


def refusal_seen(answer) -> tuple:
    """What a client learns from a refusal."""
    return answer.status_code, answer["Auth-Status"], answer["Auth-Wait"]


def ask_counting_hashes(mailbox, secret, client_ip) -> tuple:
    """The answer, and how many password hashes it cost."""
    answers = []
    hashes = hashes_during(lambda: answers.append(nginx_ask(mailbox, secret, client_ip=client_ip)))
    return answers[0], hashes


def test_wrong_codes_back_off_silently_capped_and_never_lock_out(
    claire, nurses, moved_clock, settings
):
    settings.THROTTLE_ADDRESS_BURST = 1000  # this test is about the professional's back-off
    for attempt in range(30):
        wrong = wrong_code(claire, moved_clock.now(), 1 + attempt)
        answer = nginx_ask(claire.mailbox, claire.password + wrong, client_ip=OTHER_IP)
        assert refusal_seen(answer) == REFUSED
        if attempt < 29:  # a patient attacker waits out each back-off before the next guess
            moved_clock.advance(min(2**attempt, settings.THROTTLE_PROFESSIONAL_MAX_SECONDS))
    assert Device.objects.get(pk=claire.device.pk).throttling_failure_count == 30

    # Backing off: even the right string is refused, as any wrong one would be, and costs the
    # same hash; it does not prolong the back-off. Other professionals are not slowed at all.
    answers = []
    hashes = hashes_during(
        lambda: answers.append(nginx_ask(claire.mailbox, claire.secret(moved_clock.now())))
    )
    assert refusal_seen(answers[0]) == REFUSED and hashes == 1
    assert Device.objects.get(pk=claire.device.pk).throttling_failure_count == 30
    sofia = nurses[0]
    assert ok(nginx_ask(sofia.mailbox, sofia.secret(moved_clock.now()), client_ip=OTHER_IP))

    moved_clock.advance(settings.THROTTLE_PROFESSIONAL_MAX_SECONDS)  # the cap, and no more
    assert ok(nginx_ask(claire.mailbox, claire.secret(moved_clock.now())))


def test_a_back_off_tells_a_password_guesser_nothing(claire, moved_clock):
    """A guess of the password with a wrong code, then a probe at once: the answers and their
    hashes are the same whether the password guessed was right (the back-off started) or not.
    Each sequence from its own address, so that the address's budget is the same too."""

    def guess_then_probe(password, client_ip):
        seen = []
        for offset in (1, 2):
            secret = password + wrong_code(claire, moved_clock.now(), offset)
            answer, hashes = ask_counting_hashes(claire.mailbox, secret, client_ip)
            seen.append((*refusal_seen(answer), hashes))
        return seen

    wrong_password = guess_then_probe("not her password", "203.0.113.1")
    assert Device.objects.get(pk=claire.device.pk).throttling_failure_count == 0
    right_password = guess_then_probe(claire.password, "203.0.113.2")
    assert Device.objects.get(pk=claire.device.pk).throttling_failure_count == 1  # backing off
    assert right_password == wrong_password
    assert right_password[1] == (*REFUSED, 1)


def test_wrong_codes_from_one_address_slow_down_capped(claire, nurses, moved_clock, settings):
    """The answers an address gets slow down once it has spent its budget, capped; the
    professional logs in from their own network after their back-off; others never wait."""
    moved_clock.stop()  # no token refills while the 30 answers are given, however long
    waits, hashes = [], []
    for attempt in range(30):
        wrong = wrong_code(claire, moved_clock.now(), 1 + attempt)
        answer, hashed = ask_counting_hashes(
            claire.mailbox, claire.password + wrong, "198.51.100.30"
        )
        assert not ok(answer)
        waits.append(int(answer["Auth-Wait"]))
        hashes.append(hashed)
    burst = settings.THROTTLE_ADDRESS_BURST
    refill = 60 // settings.THROTTLE_ADDRESS_REFILL_PER_MINUTE  # 6 s
    assert waits == [1] * (burst - 1) + [refill] * (31 - burst)
    assert hashes == [1] * burst + [0] * (30 - burst)  # then refused before any hashing
    assert refill <= settings.MAIL_AUTH_WAIT_MAX_SECONDS

    sofia = nurses[0]
    assert ok(nginx_ask(sofia.mailbox, sofia.secret(moved_clock.now())))
    moved_clock.advance(settings.THROTTLE_PROFESSIONAL_MAX_SECONDS)
    assert ok(nginx_ask(claire.mailbox, claire.secret(moved_clock.now())))


def test_a_guess_failed_in_parallel_stops_a_right_one_at_the_back_offs_end(claire):
    """Two guesses at once, as a back-off ends: while this one's hash runs, another worker
    records a failure. The right code then does not get in; the back-off holds for it."""
    real_check = verifier._check_password

    def check_while_another_guess_fails(password, professional):
        Device.objects.filter(pk=claire.device.pk).update(
            throttling_failure_count=1, throttling_failure_timestamp=timezone.now()
        )
        return real_check(password, professional)

    with mock.patch.object(verifier, "_check_password", check_while_another_guess_fails):
        answer = nginx_ask(claire.mailbox, claire.secret())
    assert not ok(answer) and answer["Auth-Wait"] == "1"
    assert not MailSession.objects.exists()
    refusal = AuditEvent.objects.get(action="mail.login")
    assert refusal.details["reason"] == "professional_throttled"


def test_a_success_elsewhere_does_not_stop_a_second_clients_fresh_string(claire):
    """An old typo left the count at 1 (its back-off over). While this login's hash runs,
    the professional's other client logs in and resets the count to 0: this one still
    gets in."""
    Device.objects.filter(pk=claire.device.pk).update(
        throttling_failure_count=1, throttling_failure_timestamp=timezone.now() - timedelta(hours=1)
    )
    real_check = verifier._check_password

    def check_while_the_other_client_logs_in(password, professional):
        Device.objects.filter(pk=claire.device.pk).update(
            throttling_failure_count=0, throttling_failure_timestamp=None
        )
        return real_check(password, professional)

    with mock.patch.object(verifier, "_check_password", check_while_the_other_client_logs_in):
        assert ok(nginx_ask(claire.mailbox, claire.secret()))


def test_a_client_retrying_one_stale_string_does_not_grow_the_back_off(claire, moved_clock):
    typo = claire.password + f"{(int(claire.code()) + 1) % 10**6:06d}"
    for _ in range(10):
        assert not ok(nginx_ask(claire.mailbox, typo))
        moved_clock.advance(5)
    assert Device.objects.get(pk=claire.device.pk).throttling_failure_count == 1
    assert ok(nginx_ask(claire.mailbox, claire.secret(moved_clock.now())))
    assert Device.objects.get(pk=claire.device.pk).throttling_failure_count == 0


def test_an_address_spraying_mailboxes_is_refused_before_any_hashing(claire, settings):
    answers = [
        nginx_ask(f"user{n}@demo.mssante.fr", "guess123456", client_ip=OTHER_IP)
        for n in range(settings.THROTTLE_ADDRESS_BURST)
    ]
    assert not any(ok(a) for a in answers)

    later = []
    hashes = hashes_during(
        lambda: later.extend(
            nginx_ask(f"more{n}@demo.mssante.fr", "guess123456", client_ip=OTHER_IP)
            for n in range(20)
        )
    )

    assert hashes == 0
    assert all(int(a["Auth-Wait"]) >= 1 and not ok(a) for a in later)
    assert ok(nginx_ask(claire.mailbox, claire.secret()))  # another address is not affected
    # The flood is in the trail, without one row per request.
    assert AuditEvent.objects.filter(details__reason="address_throttled").count() == 1


def test_ipv4_clients_behind_a_dual_stack_listener_keep_their_own_budgets(claire):
    """nginx on [::] with ipv6only=off shows IPv4 clients as ::ffff:a.b.c.d: each is still
    its own IPv4 address, not one shared /64 that a single sprayer could empty for all."""
    for n in range(30):
        nginx_ask(f"user{n}@demo.mssante.fr", "guess123456", client_ip="::ffff:203.0.113.66")
    assert ok(nginx_ask(claire.mailbox, claire.secret(), client_ip="::ffff:192.0.2.10"))
    # And the session it opened is the IPv4 address's, however nginx writes it.
    assert MailSession.objects.get().client_network == "192.0.2.10/32"
    assert ok(nginx_ask(claire.mailbox, claire.secret(), client_ip="192.0.2.10"))


def test_no_backend_token_is_a_temporary_failure_not_a_500(claire, settings):
    settings.MAIL_BACKEND_PASS_MODE = "token"
    settings.MAIL_BACKEND_TOKEN = ""
    answer = nginx_ask(claire.mailbox, claire.secret())
    assert answer.status_code == 200
    assert answer["Auth-Status"].startswith("[UNAVAILABLE]") and "Auth-Pass" not in answer


def test_malformed_requests_spend_the_budget_and_do_not_flood_the_trail(claire, settings):
    """Names no mailbox can have, from one address: each spends its budget like a wrong
    password, and once it is spent they are refused as throttled, audited once a minute."""
    for n in range(settings.THROTTLE_ADDRESS_BURST + 30):
        answer = nginx_ask(f"dr.müller{n}@exemple.fr", "guess123456", client_ip="203.0.113.9")
        assert not ok(answer)
    malformed = AuditEvent.objects.filter(details__reason="malformed").count()
    throttled = AuditEvent.objects.filter(details__reason="address_throttled").count()
    assert (malformed, throttled) == (settings.THROTTLE_ADDRESS_BURST, 1)
    answers = []
    hashes = hashes_during(
        lambda: answers.append(nginx_ask(claire.mailbox, claire.secret(), client_ip="203.0.113.9"))
    )
    assert not ok(answers[0]) and hashes == 0  # the address is over budget for real logins too
    assert ok(nginx_ask(claire.mailbox, claire.secret()))  # from her own address


@pytest.mark.parametrize("mode", ["token", "password"])
def test_the_reply_fits_nginxs_1_kib_with_the_longest_address(claire, settings, mode):
    """nginx reads the reply's headers into 1 KiB; gunicorn adds its status line, Server,
    Date and Connection (about 100 bytes). Only what nginx reads is sent. In password mode
    the reply carries the password too: the longest one the portal lets one choose."""
    settings.MAIL_BACKEND_PASS_MODE = mode
    longest = "a" * 64 + "@" + "b" * 185 + ".fr"  # 253 characters
    claire.professional.mailboxes.update(address=longest)
    if mode == "password":
        claire.password = "é" * (forms.BACKEND_PASSWORD_MAX_BYTES // 2)  # 2 bytes each
        assert forms.MailPasswordForm(
            claire.professional.user, {"password1": claire.password, "password2": claire.password}
        ).is_valid()
        over = claire.password + "e"
        refused = forms.MailPasswordForm(
            claire.professional.user, {"password1": over, "password2": over}
        )
        assert str(forms.BACKEND_PASSWORD_MAX_BYTES) in str(refused.errors["password1"])
        claire.professional.set_mail_password(claire.password)
    answer = nginx_ask(longest, claire.secret())
    assert ok(answer) and answer["Auth-User"] == longest
    names = {name.lower() for name in answer.headers}
    assert names <= {"content-type", "content-length", "x-request-id"} | {
        "auth-status",
        "auth-server",
        "auth-port",
        "auth-user",
        "auth-pass",
    }
    block = "".join(f"{name}: {value}\r\n" for name, value in answer.items())
    assert len(block) + 100 < 1024


def test_only_nginx_may_ask(claire):
    assert nginx_ask(claire.mailbox, claire.secret(), key="wrong").status_code == 403
    assert nginx_ask(claire.mailbox, claire.secret(), remote="10.1.2.3").status_code == 403
    refused = nginx_ask(claire.mailbox, claire.secret(), key="")
    assert refused["Auth-Status"].startswith("[UNAVAILABLE]")
    assert not AuditEvent.objects.filter(outcome="ok").exists()


def test_a_database_error_is_a_temporary_failure_never_ok(claire):
    with mock.patch("enrolment.mail_sessions.first_look", side_effect=DatabaseError("down")):
        answer = nginx_ask(claire.mailbox, claire.secret(), protocol="smtp")
    assert answer["Auth-Status"] == "Temporary authentication failure, try again later"
    assert answer["Auth-Error-Code"] == "454 4.7.0"


def test_an_unusable_seed_never_logs_in(claire):
    """A damaged row: the code may be right, so no refusal either (nor a back-off)."""
    Device.objects.filter(pk=claire.device.pk).update(ciphertext=b"\x00" * 36)
    answer = nginx_ask(claire.mailbox, claire.secret())
    assert answer["Auth-Status"].startswith("[UNAVAILABLE] ")


@pytest.mark.parametrize("protocol", ["imap", "smtp"])
def test_a_connection_that_keeps_guessing_is_closed(claire, settings, protocol):
    """nginx lets a connection retry as long as refusals carry Auth-Wait, and keeps every
    attempt in memory until it ends: from MAIL_AUTH_MAX_ATTEMPTS on, none, and nginx closes."""
    wrong = claire.password + f"{(int(claire.code()) + 1) % 10**6:06d}"
    last_allowed = settings.MAIL_AUTH_MAX_ATTEMPTS - 1
    assert "Auth-Wait" in nginx_ask(claire.mailbox, wrong, protocol=protocol, attempt=last_allowed)
    for attempt in (settings.MAIL_AUTH_MAX_ATTEMPTS, 500):
        answer = nginx_ask(claire.mailbox, wrong, protocol=protocol, attempt=attempt)
        assert answer["Auth-Status"].endswith("Invalid login or password")
        assert "Auth-Wait" not in answer


def test_a_missing_backend_token_fails_before_anything_is_spent(claire, settings):
    settings.MAIL_BACKEND_TOKEN = ""  # token mode (the default) without its token
    answer = nginx_ask(claire.mailbox, claire.secret())
    assert answer["Auth-Status"].startswith("[UNAVAILABLE] ")
    assert not MailSession.objects.exists()
    assert not AuditEvent.objects.filter(action="mail.login", outcome="ok").exists()
    device = Device.objects.get(pk=claire.device.pk)
    assert device.last_t < totp.time_step(time.time())  # the code is not spent
    settings.MAIL_BACKEND_TOKEN = "t" * 40
    assert ok(nginx_ask(claire.mailbox, claire.secret()))


@pytest.mark.parametrize(
    ("backend", "server", "port"),
    [("[::1]:1143", "::1", "1143"), ("10.0.0.5:143", "10.0.0.5", "143")],
)
def test_the_backend_is_given_as_nginx_reads_it(claire, settings, backend, server, port):
    settings.MAIL_BACKEND_IMAP = backend
    answer = nginx_ask(claire.mailbox, claire.secret())
    assert (answer["Auth-Status"], answer["Auth-Server"], answer["Auth-Port"]) == (
        "OK",
        server,
        port,
    )


def test_a_malformed_client_address_is_refused(claire):
    answer = nginx_ask(claire.mailbox, claire.secret(), client_ip="not-an-ip")
    assert answer["Auth-Status"] == REFUSED[1]


def test_the_decision_function_needs_no_http(claire):
    decision = verifier.verify(claire.mailbox, claire.secret(), HOME_IP, "imap")
    assert (decision.outcome, decision.national_id, decision.reason) == (
        verifier.Outcome.OK,
        "899700000001",
        "new_login",
    )


def test_old_phones_cached_strings_after_a_new_enrolment_do_not_lock_the_professional_out(
    claire, moved_clock
):
    from enrolment import enrolling

    imap = claire.secret()
    smtp = claire.password + claire.code(moved_clock.now() + 30)
    assert ok(nginx_ask(claire.mailbox, imap))
    assert ok(nginx_ask(claire.mailbox, smtp, protocol="smtp"))
    pending = enrolling.start_enrolment(claire.professional.user)
    moved_clock.advance(60)
    assert (
        enrolling.confirm_enrolment(
            pending, totp.totp(pending.seed(), moved_clock.now()), moved_clock.now()
        ).outcome
        is enrolling.Outcome.CONFIRMED
    )

    for _ in range(10):  # the mail clients keep retrying what they cached, turn by turn
        assert not ok(nginx_ask(claire.mailbox, imap))
        assert not ok(nginx_ask(claire.mailbox, smtp, protocol="smtp"))
        moved_clock.advance(5)

    fresh = claire.password + totp.totp(pending.seed(), moved_clock.now())
    assert ok(nginx_ask(claire.mailbox, fresh))


def test_a_spent_code_with_a_wrong_password_does_not_grow_the_back_off(claire):
    code = claire.code()
    assert ok(nginx_ask(claire.mailbox, claire.password + code))
    for guess in ("guess-one", "guess-two", "guess-three"):
        assert not ok(nginx_ask(claire.mailbox, guess + code, client_ip=OTHER_IP))
    assert Device.objects.get().throttling_failure_count == 0


def test_an_ipv6_client_spends_the_budget_of_its_slash_64(claire, settings):
    settings.THROTTLE_ADDRESS_BURST = 3
    for n in range(3):  # three addresses of one /64
        nginx_ask(f"user{n}@demo.mssante.fr", "guess123456", client_ip=f"2001:db8:1:2::{n + 1}")
    hashes = hashes_during(
        lambda: nginx_ask("x@demo.mssante.fr", "guess123456", client_ip="2001:db8:1:2::99")
    )
    assert hashes == 0
    assert ok(nginx_ask(claire.mailbox, claire.secret(), client_ip="2001:db8:9:9::1"))


def test_the_backend_gets_the_checked_name_and_odd_names_are_refused(claire):
    answer = nginx_ask("  Claire.Martin@Demo.MSSante.fr ", claire.secret())
    assert ok(answer) and answer["Auth-User"] == "claire.martin@demo.mssante.fr"
    dotless_i = "claire.mart\u0131n@demo.mssante.fr"
    assert not ok(nginx_ask(dotless_i, claire.secret()))


def test_pop3_goes_to_its_own_backend_or_nowhere(claire, settings):
    """Sent to the IMAP backend, a POP3 login was accepted, its code spent, then failed."""
    wrong = claire.password + f"{(int(claire.code()) + 1) % 10**6:06d}"
    answer = nginx_ask(claire.mailbox, claire.secret(), protocol="pop3")
    assert answer["Auth-Status"] == "[SYS/TEMP] Temporary authentication failure, try again later"
    assert not MailSession.objects.exists()

    settings.MAIL_BACKEND_POP3 = "10.0.0.6:110"
    answer = nginx_ask(claire.mailbox, claire.secret(), protocol="pop3")
    assert (answer["Auth-Status"], answer["Auth-Server"], answer["Auth-Port"]) == (
        "OK",
        "10.0.0.6",
        "110",
    )
    refused = nginx_ask(claire.mailbox, wrong, protocol="pop3")
    assert refused["Auth-Status"] == "[AUTH] Invalid login or password"


def test_pop3_without_its_backend_is_said_once_a_minute(claire, caplog):
    """A setting, the same for every request, that anyone can make the site repeat."""
    for _ in range(20):
        nginx_ask(claire.mailbox, claire.secret(), protocol="pop3")
    said = [r for r in caplog.records if "no backend for pop3" in r.getMessage()]
    assert len(said) == 1 and said[0].exc_info is None
