"""Faults on the real stack: PostgreSQL stopped under the running site (gunicorn)."""

import secrets
import time

import pytest
import requests

from enrolment import seeds, totp
from tests.conftest import keyring_json
from tests.servers import Gunicorn, PrivatePostgres, manage, populate, site_environment

MAILBOX, PASSWORD = "claire.martin@demo.mssante.fr", "Cheval-Agrafe-27"


@pytest.fixture
def site_on_private_postgres():
    postgres = PrivatePostgres().start()
    postgres.create_database()
    env = site_environment(postgres.url, keyring_json("fault1"))
    manage(env, "migrate", "-v", "0")
    seed, token = seeds.new_seed(), secrets.token_urlsafe(32)
    populate(
        env,
        [
            {
                "national_id": "899700000001",
                "mailbox": MAILBOX,
                "password": PASSWORD,
                "seed": seed.hex(),
            }
        ],
        token,
    )
    site = Gunicorn(env, workers=2)
    try:
        yield site, postgres, seed, token
    finally:
        site.stop()
        postgres.destroy()


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
    deadline, answer = time.monotonic() + 10, None
    while time.monotonic() < deadline and answer != "ok":
        answer = ask(site, token, cached)
        time.sleep(0.2)
    assert answer == "ok"  # recovered without restarting the site
