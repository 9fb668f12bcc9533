"""Benchmark of the verify path: `make bench` (python -m tests.bench_verify).

Starts a private PostgreSQL cluster (default durability: fsync and synchronous commit on) and
the site under gunicorn with production settings, loads it over HTTP from several client
processes, and prints for (a) an empty request through the same stack, (b) mail-session hits,
(c) new logins, (d) refusals for a throttled address: requests/s, p50 and p99 latency, and
the ratios of (b), (c), (d) to (a). Figures, not a pass/fail test.
"""

import argparse
import base64
import functools
import http.client
import itertools
import json
import multiprocessing
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, fields

import argon2
import psycopg

from enrolment import seeds, totp
from tests.servers import (
    Gunicorn,
    PrivatePostgres,
    cpu_seconds,
    manage,
    populate,
    site_environment,
)

NGINX_SECRET = "bench-nginx-secret"
METRICS_TOKEN = "bench-metrics-token-0123456789abcdef"
PASSWORD = "Cheval-Agrafe-27"
LONE_PEOPLE = 200  # new logins of one client alone, per round: more than 1.5 s of them


def keyring() -> str:
    return json.dumps(
        {"active": "bench", "keys": {"bench": base64.b64encode(os.urandom(32)).decode()}}
    )


def request(port: int, path: str, headers: dict) -> tuple[float, dict]:
    """One request on a new connection, as nginx's auth_http makes them."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    response.read()
    answer = dict(response.getheaders())
    connection.close()
    return time.perf_counter() - started, answer


def nginx_headers(mailbox: str, secret: str, client_ip: str) -> dict:
    return {
        "Auth-Method": "plain",
        "Auth-User": mailbox,
        "Auth-Pass": secret.replace(" ", "%20"),
        "Auth-Protocol": "imap",
        "Auth-Login-Attempt": "1",
        "Client-IP": client_ip,
        "X-Auth-Key": NGINX_SECRET,
    }


def client_loop(args) -> tuple[list[float], int, float]:
    """One load process: for ``seconds``, requests of the scenario; latencies, errors and the
    seconds it ran. A new login takes a professional nobody has logged in as yet (the same one
    again would be a session hit): the process stops early when its share runs out."""
    scenario, port, seconds, people, expect_ok = args
    latencies, errors, index = [], 0, 0
    started = time.monotonic()
    while time.monotonic() < started + seconds:
        if scenario == "empty":
            path, headers = "/internal/health/live", {}
        elif scenario == "new_login":
            if index == len(people):
                print(f"a load process ran out of professionals after {index} new logins")
                break
            person = people[index]
            index += 1
            secret = PASSWORD + totp.totp(bytes.fromhex(person["seed"]), time.time())
            path, headers = (
                "/internal/nginx-auth",
                nginx_headers(person["mailbox"], secret, "192.0.2.10"),
            )
        else:  # the one session string, or an address's guesses in turn
            path, headers = "/internal/nginx-auth", people[index % len(people)]
            index += 1
        elapsed, answer = request(port, path, headers)
        latencies.append(elapsed)
        if scenario != "empty" and (answer.get("Auth-Status") == "OK") != expect_ok:
            errors += 1
    return latencies, errors, time.monotonic() - started


def run(scenario, port, seconds, clients, people_per_client, expect_ok=True):
    with multiprocessing.Pool(clients) as pool:
        results = pool.map(
            client_loop,
            [(scenario, port, seconds, people, expect_ok) for people in people_per_client],
        )
    latencies = sorted(x for result in results for x in result[0])
    errors = sum(result[1] for result in results)
    return {
        "rps": sum(len(result[0]) / result[2] for result in results),
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "n": len(latencies),
        "errors": errors,
    }


def median_round(results: list[dict]) -> dict:
    ranked = sorted(results, key=lambda figures: figures["rps"])
    chosen = dict(ranked[len(ranked) // 2])
    chosen["errors"] = sum(figures["errors"] for figures in results)
    return chosen


def site_password_hash(env) -> str:
    """The benchmark's password hashed by the site, with the site's Argon2id parameters."""
    script = (
        f"from django.contrib.auth.hashers import make_password\nprint(make_password({PASSWORD!r}))"
    )
    return manage(env, "shell", "-v", "0", "-c", script).strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per scenario and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the four scenarios")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client processes")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument(
        "--people", type=int, default=1500, help="professionals for the new logins of a round"
    )
    options = parser.parse_args()

    postgres = PrivatePostgres(durable=True).start()
    metrics_dir = tempfile.mkdtemp(prefix="bench-metrics-")
    site = None
    try:
        postgres.create_database()
        env = site_environment(
            postgres.url,
            keyring(),
            NGINX_AUTH_SECRET=NGINX_SECRET,
            THROTTLE_ADDRESS_BURST="20",
            # As a node runs: every worker's metrics in one scrape, read by the lone rounds.
            METRICS_TOKEN=METRICS_TOKEN,
            PROMETHEUS_MULTIPROC_DIR=metrics_dir,
        )
        manage(env, "migrate", "-v", "0")
        shared_hash = site_password_hash(env)
        # Every new login of the run is a professional's first: their own share to each
        # round of (c) and to each lone round.
        everyone = [
            {
                "national_id": f"8997{n:08d}",
                "mailbox": f"pro{n}@bench.mssante.fr",
                "password": PASSWORD,
                "seed": seeds.new_seed().hex(),
            }
            for n in range(1 + options.rounds * (options.people + LONE_PEOPLE))
        ]
        populate(env, everyone, secrets.token_urlsafe(16), password_hash=shared_hash)
        session_person, fresh = everyone[0], iter(everyone[1:])

        def take(count: int) -> list[dict]:
            return list(itertools.islice(fresh, count))

        site = Gunicorn(env, workers=options.workers)
        port = site.port

        # (b) one established session, hit again and again.
        session = nginx_headers(
            session_person["mailbox"],
            PASSWORD + totp.totp(bytes.fromhex(session_person["seed"]), time.time()),
            "192.0.2.20",
        )
        assert request(port, "/internal/nginx-auth", session)[1]["Auth-Status"] == "OK"
        # (d) an address that spent its whole bucket on wrong guesses and goes on guessing
        # (each guess new: the string it was refused last is refused before the throttle).
        wrong = [
            nginx_headers(f"nobody{n}@bench.mssante.fr", f"guess-{n:06d}", "198.51.100.66")
            for n in range(100)
        ]
        for guess in wrong[:25]:
            request(port, "/internal/nginx-auth", guess)

        def new_logins():
            people = take(options.people)
            return [people[i :: options.clients] for i in range(options.clients)]

        scenarios = {
            "(a) empty request": ("empty", lambda: [[]] * options.clients, True),
            "(b) mail-session hit": ("session", lambda: [[session]] * options.clients, True),
            "(c) new login": ("new_login", new_logins, True),
            "(d) refusal, throttled address": (
                "refusal",
                lambda: [wrong] * options.clients,
                False,
            ),
        }
        # Rounds of all four in turn, the median round kept: the machine's other load then
        # weighs on every scenario alike, and one unlucky run does not decide a ratio.
        rounds = {name: [] for name in scenarios}
        refusals_hashed = 0  # (d) is refused before any hash, but for the bucket's refill
        for _ in range(options.rounds):
            for name, (scenario, shares, expect_ok) in scenarios.items():
                before = site_timings(site)
                rounds[name].append(
                    run(scenario, port, options.seconds, options.clients, shares(), expect_ok)
                )
                if scenario == "refusal":
                    refusals_hashed += (site_timings(site) - before).hash_count
        figures = {name: median_round(results) for name, results in rounds.items()}
        # A new login on its own (one client, no queueing): one Argon2id hash plus the rest.
        alone = [
            lone_round(site, postgres, take(LONE_PEOPLE), shared_hash)
            for _ in range(options.rounds)
        ]
        after_hash = commit_after_hash(postgres, shared_hash)
        after_pauses = round_trip_after_pauses(postgres)
        sent = 1 + sum(result["n"] for result in rounds["(c) new login"])
        sent += sum(result["logins"] for result in alone)
        audited = new_logins_audited(postgres)
    finally:
        if site:
            site.stop()
        postgres.destroy()
        shutil.rmtree(metrics_dir, ignore_errors=True)

    report(figures, alone, options)
    print(
        "What an Argon2id check does to the work after it: a one-row INSERT and its commit on "
        f"this PostgreSQL takes {after_hash['back to back']:.2f} ms back to back, "
        f"{after_hash['after a sleep']:.2f} ms after a 15 ms sleep, "
        f"{after_hash['after a busy loop']:.2f} ms after a 15 ms busy loop, "
        f"{after_hash['after a hash']:.2f} ms after a hash"
    )
    print(
        "A SELECT 1 on this PostgreSQL after a busy pause of "
        + ", ".join(f"{pause:g}" for pause in after_pauses)
        + " ms: "
        + ", ".join(f"{ms:.2f}" for ms in after_pauses.values())
        + " ms (any pause leaves the caches cold, not the hash alone)"
    )
    print(f"new logins sent: {sent}; audited by the site as new logins: {audited}")
    refusals = sum(result["n"] for result in rounds["(d) refusal, throttled address"])
    print(f"refusals of (d) sent: {refusals}; that cost a hash (the bucket's refill): ", end="")
    print(f"{refusals_hashed:.0f}")
    if audited != sent:
        print("SOME 'NEW LOGINS' WERE NOT NEW LOGINS: the figures of (c) are not to be trusted")
        return 1
    if refusals_hashed > refusals / 100:
        print("THE ADDRESS OF (d) WAS NOT THROTTLED: its figures are not to be trusted")
        return 1
    return 0


def argon2_check(shared_hash: str):
    """One Argon2id check of the benchmark's password against the site's hash, as the site
    makes it (with its parameters), outside the site."""
    phc = shared_hash.removeprefix("argon2")  # Django's "argon2" + the PHC string
    return functools.partial(argon2.PasswordHasher().verify, phc, PASSWORD)


def busy_loop(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def round_trip_after_pauses(postgres) -> dict[float, float]:
    """The median time of a `SELECT 1` after busy pauses of growing length: how much of
    what follows a hash is owed to the pause itself."""
    medians = {}
    with psycopg.connect(postgres.url, autocommit=True) as connection:
        for pause in (0, 2, 8, 16, 35):
            times = []
            for _ in range(40):
                busy_loop(pause / 1000)
                started = time.perf_counter()
                connection.execute("SELECT 1").fetchone()
                times.append(time.perf_counter() - started)
            medians[pause] = statistics.median(times) * 1000
    return medians


def commit_after_hash(postgres, shared_hash: str) -> dict[str, float]:
    """The median time of a one-row INSERT in autocommit, back to back, after a sleep, after
    a busy loop (the processor kept running, no memory swept) and after an Argon2id check:
    what a new login's statements pay for following the hash, and how much of it is the
    hash's own memory sweep rather than the pause itself."""
    pauses = {
        "back to back": lambda: None,
        "after a sleep": lambda: time.sleep(0.015),
        "after a busy loop": lambda: busy_loop(0.015),
        "after a hash": argon2_check(shared_hash),
    }
    medians = {}
    with psycopg.connect(postgres.url, autocommit=True) as connection:
        # A table like the site's (a temporary one writes no WAL, so its commit flushes none)
        connection.execute("CREATE TABLE bench_after_hash (note text)")
        for name, pause in pauses.items():
            times = []
            for _ in range(60):
                pause()
                started = time.perf_counter()
                connection.execute("INSERT INTO bench_after_hash VALUES ('x')")
                times.append(time.perf_counter() - started)
            medians[name] = statistics.median(times) * 1000
        connection.execute("DROP TABLE bench_after_hash")
    return medians


def new_logins_audited(postgres) -> int:
    with psycopg.connect(postgres.url) as connection:
        row = connection.execute(
            "SELECT count(*) FROM enrolment_auditevent"
            " WHERE action = 'mail.login' AND details->>'reason' = 'new_login'"
        ).fetchone()
    return row[0]


def lone_round(site, postgres, people: list[dict], shared_hash: str) -> dict:
    """One client alone, in turn: Argon2id checks of the site's hash (here, with the site's
    parameters), new logins, empty requests. Measured side by side, so that the machine's
    other load weighs on the three alike; a new login's cost beyond the hash and the HTTP
    stack is the difference, in wall-clock time and in the CPU time of the site's workers
    and of PostgreSQL's processes."""
    check = argon2_check(shared_hash)
    checks, cpu = [], time.process_time()
    for _ in range(15):
        started = time.perf_counter()
        check()
        checks.append(time.perf_counter() - started)
    hash_cpu = (time.process_time() - cpu) / len(checks) * 1000
    before = site_timings(site)
    login, login_cpu = measured(site, postgres, "new_login", people)
    inside = site_timings(site) - before
    empty, empty_cpu = measured(site, postgres, "empty", people)
    hash_ms = statistics.median(checks) * 1000
    return {
        "site_verify": inside.verify_ms(),
        "site_hash": inside.hash_ms(),
        "hash": hash_ms,
        "login": login["p50"],
        "empty": empty["p50"],
        "beyond": login["p50"] - hash_ms - empty["p50"],
        "beyond_site_hash": login["p50"] - inside.hash_ms() - empty["p50"],
        "site_cpu_beyond": login_cpu[0] - hash_cpu - empty_cpu[0],
        "db_cpu": login_cpu[1],
        "logins": login["n"],
    }


@dataclass
class SiteTimings:
    """Sums and counts of the site's own histograms: verify() and its Argon2id checks."""

    verify_sum: float
    verify_count: float
    hash_sum: float
    hash_count: float

    def __sub__(self, other):
        return SiteTimings(
            *(getattr(self, f.name) - getattr(other, f.name) for f in fields(SiteTimings))
        )

    def verify_ms(self) -> float:
        return self.verify_sum / self.verify_count * 1000

    def hash_ms(self) -> float:
        return self.hash_sum / self.hash_count * 1000


def site_timings(site) -> SiteTimings:
    connection = http.client.HTTPConnection("127.0.0.1", site.port, timeout=30)
    connection.request(
        "GET", "/internal/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    text = connection.getresponse().read().decode()
    connection.close()

    def value(name):
        return float(re.search(rf"^{name} (\S+)$", text, re.M)[1])

    return SiteTimings(
        value("mss_totp_verify_seconds_sum"),
        value("mss_totp_verify_seconds_count"),
        value("mss_totp_password_hash_seconds_sum"),
        value("mss_totp_password_hash_seconds_count"),
    )


def measured(site, postgres, scenario: str, people: list[dict]) -> tuple[dict, tuple]:
    """One client for 1.5 s, and the CPU milliseconds per request of (site, database)."""
    workers, database = site.worker_pids(), postgres.server_pids()
    before = cpu_seconds(workers), cpu_seconds(database)
    figures = run(scenario, site.port, 1.5, 1, [people])
    after = cpu_seconds(workers), cpu_seconds(database)
    per_request = tuple((a - b) * 1000 / figures["n"] for a, b in zip(after, before, strict=True))
    return figures, per_request


def report(figures, alone, options):
    empty = figures["(a) empty request"]
    print(
        f"\nverify benchmark: gunicorn {options.workers} workers, {options.clients} client "
        f"processes, median of {options.rounds} rounds of {options.seconds:.0f} s per "
        f"scenario, PostgreSQL (durable), "
        f"{os.cpu_count()} cores"
    )
    print(f"{'scenario':34} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'x (a)':>7} {'errors':>7}")
    for name, f in figures.items():
        ratio = f["rps"] / empty["rps"]
        print(
            f"{name:34} {f['rps']:8.0f} {f['p50']:8.2f} {f['p99']:8.2f} {ratio:7.2f} "
            f"{f['errors']:7d}"
        )

    def median(key):
        return statistics.median(figures[key] for figures in alone)

    rounds = ", ".join(f"{figures['beyond']:.1f}" for figures in alone)
    print(
        f"\nOne client alone, median of {len(alone)} rounds: a new login p50 "
        f"{median('login'):.1f} ms = one Argon2id check ({median('hash'):.1f} ms) + the empty "
        f"request ({median('empty'):.1f} ms) + {median('beyond'):.1f} ms "
        f"(rounds: {rounds} ms)"
    )
    print(
        f"Inside the site (its own metrics, mean of each round's logins): verify() "
        f"{median('site_verify'):.1f} ms, of which the Argon2id check {median('site_hash'):.1f} "
        f"ms: {median('site_verify') - median('site_hash'):.1f} ms around the hash; over HTTP, "
        f"the p50 is that hash + the empty request + {median('beyond_site_hash'):.1f} ms"
    )
    print(
        f"CPU per new login beyond the hash and the empty request: site "
        f"{median('site_cpu_beyond'):.1f} ms; PostgreSQL {median('db_cpu'):.1f} ms "
        "(in clock ticks of 10 ms, spread over each round's logins)"
    )


if __name__ == "__main__":
    sys.exit(main())
