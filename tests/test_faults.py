"""Faults on the real stack: PostgreSQL stopped under the running site (gunicorn)."""

import contextlib
import secrets
import threading
import time

import pytest
import requests

from enrolment import seeds, totp
from tests.conftest import keyring_json
from tests.servers import Gunicorn, PrivatePostgres, manage, populate, site_environment

MAILBOX, PASSWORD = "claire.martin@demo.mssante.fr", "Cheval-Agrafe-27"


@pytest.fixture
def site_on_private_postgres():
    with contextlib.ExitStack() as cleanup:  # whatever was started, stopped even if set-up fails
        postgres = PrivatePostgres().start()
        cleanup.callback(postgres.destroy)
        postgres.create_database()
        env = site_environment(postgres.url, keyring_json("fault1"))
        manage(env, "migrate", "-v", "0")
        seed, token = seeds.new_seed(), secrets.token_urlsafe(32)
        person = {"national_id": "899700000001", "mailbox": MAILBOX, "password": PASSWORD}
        populate(env, [{**person, "seed": seed.hex()}], token)
        site = Gunicorn(env, workers=2)
        cleanup.callback(site.stop)
        yield site, postgres, seed, token


def ask(site, token, secret, client_ip="192.0.2.10"):
    try:
        answer = requests.post(
            f"{site.url}/api/v1/verify",
            timeout=10,
            headers={"Authorization": f"Bearer {token}"},
            json={"mailbox": MAILBOX, "secret": secret, "client_ip": client_ip},
        )
    except requests.RequestException as exc:
        return f"no answer: {type(exc).__name__}"
    return answer.json()["outcome"]


def test_postgres_stopped_gives_temporary_failures_then_recovers(site_on_private_postgres):
    site, postgres, seed, token = site_on_private_postgres
    cached = PASSWORD + totp.totp(seed, time.time())
    assert ask(site, token, cached) == "ok"

    postgres.stop()
    during = [ask(site, token, cached)]  # a session hit
    during.append(ask(site, token, PASSWORD + totp.totp(seed, time.time() + 30)))  # a new login
    during += [ask(site, token, cached, client_ip=f"192.0.2.{n}") for n in range(20, 30)]
    assert set(during) == {"tempfail"}

    postgres.start()
    deadline, answer = time.monotonic() + 60, None  # generous: a wait, not a figure
    while time.monotonic() < deadline and answer != "ok":
        answer = ask(site, token, cached)
        time.sleep(0.2)
    assert answer == "ok"  # recovered without restarting the site


def test_a_seed_under_a_missing_key_gives_temporary_failures_and_stays(claire, settings):
    """The keyring lacks the key that a device was sealed under (dropped too early, or a
    node deployed without the new key): that professional gets temporary failures, with
    no back-off, and the row is kept for when the key is back."""
    from enrolment import verifier
    from enrolment.models import Device

    sealed_under = Device.objects.get(pk=claire.device.pk).key_id
    full_keyring = settings.SEED_KEYRING
    other_only = keyring_json("other-key")
    settings.SEED_KEYRING = other_only
    answers = [
        verifier.verify(claire.mailbox, claire.secret(), "192.0.2.10", "imap") for _ in range(5)
    ]
    assert {(a.outcome.value, a.reason) for a in answers} == {("tempfail", "seed_key_missing")}
    device = Device.objects.get(pk=claire.device.pk)
    assert (device.key_id, device.throttling_failure_count) == (sealed_under, 0)

    settings.SEED_KEYRING = full_keyring
    assert verifier.verify(claire.mailbox, claire.secret(), "192.0.2.10", "imap").ok


def test_a_key_of_the_same_id_but_other_bytes_fails_temporarily_too(claire, settings):
    """A node given a keyring whose key has the right id but not the right bytes (made anew
    with seed_key new --id on each node instead of copied): the seed does not open. That is
    no wrong code: a temporary failure, and nobody's back-off grows."""
    from enrolment import verifier
    from enrolment.models import Device

    sealed_under = Device.objects.get(pk=claire.device.pk).key_id
    full_keyring = settings.SEED_KEYRING
    settings.SEED_KEYRING = keyring_json(sealed_under)  # same id, fresh random bytes
    answers = [
        verifier.verify(claire.mailbox, claire.secret(), "192.0.2.10", "imap") for _ in range(3)
    ]
    assert {(a.outcome.value, a.reason) for a in answers} == {("tempfail", "seed_key_missing")}
    assert Device.objects.get(pk=claire.device.pk).throttling_failure_count == 0

    settings.SEED_KEYRING = full_keyring
    assert verifier.verify(claire.mailbox, claire.secret(), "192.0.2.10", "imap").ok


def test_a_member_whose_row_is_damaged_does_not_keep_the_others_out(nurses):
    """A malformed nonce on one member's row (cryptography raised ValueError, and every
    member's login was a temporary failure)."""
    from enrolment import verifier
    from enrolment.models import Device

    sofia, luc = nurses
    Device.objects.filter(pk=sofia.device.pk).update(nonce=b"\0" * 4)
    assert verifier.verify(luc.mailbox, luc.secret(), "192.0.2.10", "imap").ok


def test_temporary_failures_for_a_missing_key_spend_the_address_budget(nurses, settings):
    """One member's seed is under a missing key: a code that matches no other member gets a
    temporary failure (it may be that member's), a code of another member a refusal. Free,
    that difference would let anyone try codes without limit; it spends the budget as any
    failure does, and the address over budget is refused like any other."""
    from enrolment import verifier
    from enrolment.models import Device

    sofia, luc = nurses
    Device.objects.filter(pk=sofia.device.pk).update(key_id="retired-key")
    burst = settings.THROTTLE_ADDRESS_BURST
    codes = [f"{(int(luc.code()) + 1 + n) % 10**6:06d}" for n in range(burst + 1)]  # not his
    answers = [
        verifier.verify(luc.mailbox, "guess" + code, "203.0.113.90", "imap") for code in codes
    ]
    assert [a.outcome.value for a in answers[:burst]] == ["tempfail"] * burst
    assert (answers[burst].outcome.value, answers[burst].reason) == ("reject", "address_throttled")
    assert verifier.verify(luc.mailbox, luc.secret(), "192.0.2.10", "imap").ok  # his own


def test_a_client_retrying_through_a_missing_key_keeps_failing_temporarily_and_costs_nothing(
    claire, nurses, settings
):
    """Claire's only device is under a missing key: her mail client's connections retry her
    string again and again. Every answer stays a temporary failure (a refusal would make
    her client ask for a new password), and her colleagues behind the same address log in
    (the retries do not spend its budget: they tell nobody anything). Audited once a minute."""
    from enrolment import verifier
    from enrolment.models import AddressThrottle, AuditEvent, Device

    Device.objects.filter(pk=claire.device.pk).update(key_id="retired-key")
    answers = [
        verifier.verify(claire.mailbox, claire.secret(), "203.0.113.95", "imap")
        for _ in range(3 * settings.THROTTLE_ADDRESS_BURST)
    ]
    assert {a.outcome.value for a in answers} == {"tempfail"}
    assert AuditEvent.objects.filter(details__reason="seed_key_missing").count() == 1
    assert not AddressThrottle.objects.filter(address="203.0.113.95").exists()  # no budget spent
    luc = nurses[1]
    assert verifier.verify(luc.mailbox, luc.secret(), "203.0.113.95", "imap").ok


def test_one_string_retried_in_a_shared_mailbox_with_a_missing_key_fails_temporarily(
    nurses, settings
):
    """Beside a member whose seed opens, the temporary failure spends the budget, once a
    refill time for one string retried: the retries fail temporarily again, not refused."""
    from enrolment import verifier
    from enrolment.models import AddressThrottle, Device

    sofia, luc = nurses
    Device.objects.filter(pk=sofia.device.pk).update(key_id="retired-key")
    answers = [
        verifier.verify(sofia.mailbox, sofia.secret(), "203.0.113.96", "imap") for _ in range(30)
    ]
    assert {a.outcome.value for a in answers} == {"tempfail"}
    spent = (
        settings.THROTTLE_ADDRESS_BURST - AddressThrottle.objects.get(address="203.0.113.96").tokens
    )
    assert round(spent) == 1  # one string: one token, however many retries
    assert verifier.verify(luc.mailbox, luc.secret(), "203.0.113.96", "imap").ok


def test_postgres_restarted_under_load_recovers_by_itself(site_on_private_postgres):
    """Four clients keep logging in (a cached string, and a wrong one) while PostgreSQL
    restarts: during the gap only temporary failures, never a wrong OK, and OKs again once
    the database is back, without restarting the site. How soon is printed, not asserted (a
    slow machine is no failure); the wait for it is generous."""
    site, postgres, seed, token = site_on_private_postgres
    cached = PASSWORD + totp.totp(seed, time.time())
    assert ask(site, token, cached) == "ok"
    answers, stop, recovered = [], threading.Event(), threading.Event()
    back = float("inf")

    def client(n):
        while not stop.is_set():
            good = n % 2 == 0
            secret = cached if good else f"{PASSWORD}-wrong-{n:06d}"
            # The cached string from where it was accepted; the wrong one from elsewhere.
            client_ip = "192.0.2.10" if good else f"192.0.2.{40 + n}"
            answer = (time.monotonic(), good, ask(site, token, secret, client_ip))
            answers.append(answer)
            if good and answer[2] == "ok" and answer[0] > back:
                recovered.set()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1)  # some answers before the stop
    postgres.stop()
    time.sleep(2)  # some answers during the gap
    postgres.start()
    back = time.monotonic()
    recovered.wait(timeout=120)
    stop.set()
    for thread in threads:
        thread.join()

    wrong_ok = [a for a in answers if not a[1] and a[2] == "ok"]
    assert wrong_ok == []
    assert {outcome for _, _, outcome in answers} <= {"ok", "reject", "tempfail"}
    good_after = [at for at, good, outcome in answers if good and outcome == "ok" and at > back]
    assert good_after, "no OK after the restart"
    gap = [outcome for at, good, outcome in answers if good and outcome != "ok"]
    assert set(gap) <= {"tempfail"}
    print(f"\n{len(answers)} answers; first OK {good_after[0] - back:.1f} s after the restart")
