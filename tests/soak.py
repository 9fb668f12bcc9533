"""Soak: `make soak` (python -m tests.soak [--seconds 600]).

Ten minutes of mixed load on the real stack: PostgreSQL (durable), two gunicorn nodes behind
nginx with TLS (deploy/nginx/web.conf), the stand-in Pro Santé Connect. At the same time:
enrolments through the wizard after a PSC login, new mail logins, reconnections with cached
strings, and refusals, all through nginx. Prints the errors (any answer other than the one
expected), the throughput of each kind, and each gunicorn worker's memory at the start and
at the end. Figures, not a pass/fail test; exit status 1 if there was an error.
"""

import argparse
import re
import shutil
import sys
import tempfile
import threading
import time
from base64 import b32decode
from collections import Counter
from pathlib import Path

import requests

from enrolment import seeds, totp
from tests.cluster import PASSWORD, Cluster
from tests.psc_standin import CLIENT_SECRET, free_port, login_form_action, start_standin

ENROLLING = "899700000002"  # Sofia Benali: the stand-in PSC knows her


class Soak:
    def __init__(self, cluster: Cluster, pool: list[dict], seconds: float):
        self.cluster, self.pool, self.seconds = cluster, pool, seconds
        self.done, self.errors = Counter(), Counter()
        self.samples: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.verify_url = f"http://127.0.0.1:{cluster.internal_port}/api/v1/verify"

    def record(self, kind: str, ok: bool, detail: str = ""):
        with self.lock:
            self.done[kind] += 1
            if not ok:
                self.errors[kind] += 1
                if len(self.samples) < 10:
                    self.samples.append(f"{kind}: {detail[:200]}")

    def verify(self, http, mailbox, secret, client_ip) -> str:
        response = http.post(
            self.verify_url,
            timeout=30,
            headers={"Authorization": f"Bearer {self.cluster.token}"},
            json={"mailbox": mailbox, "secret": secret, "client_ip": client_ip},
        )
        return response.json().get("outcome", f"HTTP {response.status_code}")

    # The kinds of load, each a loop in its own thread.

    def new_logins(self, people: list[dict]):
        http, used = requests.Session(), {}
        while not self.stop.is_set():
            step = int(time.time() // 30)
            person = next((p for p in people if used.get(p["mailbox"]) != step), None)
            if person is None:
                time.sleep(0.2)  # everyone logged in this step: wait for the next
                continue
            used[person["mailbox"]] = step
            secret = PASSWORD + totp.totp(bytes.fromhex(person["seed"]), time.time())
            outcome = self.verify(http, person["mailbox"], secret, "192.0.2.50")
            self.record("new login", outcome == "ok", outcome)

    def reconnects(self, cached: list[tuple[str, str]]):
        http = requests.Session()
        while not self.stop.is_set():
            for mailbox, secret in cached:
                outcome = self.verify(http, mailbox, secret, "192.0.2.60")
                self.record("reconnect", outcome == "ok", outcome)

    def refusals(self):
        http, n = requests.Session(), 0
        while not self.stop.is_set():
            n += 1
            person = self.pool[n % len(self.pool)]
            outcome = self.verify(
                http, person["mailbox"], f"wrong-{n}-000000", f"203.0.113.{n % 250}"
            )
            self.record("refusal", outcome == "reject", outcome)

    def enrolments(self):
        while not self.stop.is_set():
            try:
                ok, detail = self.enrol_once()
            except requests.RequestException as error:
                ok, detail = False, repr(error)
            self.record("enrolment", ok, detail)

    def enrol_once(self) -> tuple[bool, str]:
        # The certificate goes with each request: a session's own "verify" gives way to
        # REQUESTS_CA_BUNDLE when that is set.
        browser, cert = requests.Session(), str(self.cluster.cert)
        base = self.cluster.url
        form_page = browser.get(f"{base}/oidc/authenticate/", timeout=30, verify=cert)
        browser.post(
            login_form_action(form_page),
            data={"sub": ENROLLING, "action": "login"},
            timeout=30,
            verify=cert,
        )
        post = self._poster(browser, base, cert)
        post("/enrolment/", {})
        scan = browser.get(f"{base}/enrolment/scan/", timeout=30, verify=cert)
        found = re.search(r'id="secret">([A-Z2-7 ]+)</code>', scan.text)
        if not found:
            return False, f"no key on the scan page ({scan.status_code})"
        key = found[1].replace(" ", "")
        seed = b32decode(key + "=" * (-len(key) % 8))
        done = post("/enrolment/confirm/", {"code": totp.totp(seed, time.time())})
        return done.url.endswith("/enrolment/done/"), f"{done.status_code} {done.url}"

    @staticmethod
    def _poster(browser, base, cert):
        def post(path, data):
            browser.get(base + path, timeout=30, verify=cert)
            form = {**data, "csrfmiddlewaretoken": browser.cookies.get("__Host-csrftoken", "")}
            headers = {"Referer": base + path}
            return browser.post(base + path, data=form, headers=headers, timeout=30, verify=cert)

        return post

    def run(self, cached, login_people):
        threads = [
            threading.Thread(target=self.new_logins, args=(login_people[0::2],)),
            threading.Thread(target=self.new_logins, args=(login_people[1::2],)),
            threading.Thread(target=self.reconnects, args=(cached,)),
            threading.Thread(target=self.reconnects, args=(cached,)),
            threading.Thread(target=self.refusals),
            threading.Thread(target=self.enrolments),
        ]
        for thread in threads:
            thread.start()
        time.sleep(self.seconds)
        self.stop.set()
        for thread in threads:
            thread.join()


def worker_memory(cluster: Cluster) -> dict:
    """Resident memory (MiB) of every gunicorn worker of both nodes, both pools."""
    memory = {}
    pools = [("portal", cluster.nodes), ("verifier", cluster.verifiers)]
    for name, nodes in pools:
        for index, node in enumerate(nodes, 1):
            for pid in node.worker_pids():
                status = Path(f"/proc/{pid}/status").read_text()
                kib = int(re.search(r"VmRSS:\s+(\d+)", status)[1])
                memory[f"node {index} {name} worker {pid}"] = kib / 1024
    return memory


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--people", type=int, default=400)
    options = parser.parse_args()

    pool = [
        {
            "national_id": f"8996{n:08d}",
            "mailbox": f"soak{n}@soak.mssante.fr",
            "seed": seeds.new_seed().hex(),
        }
        for n in range(options.people)
    ]
    run_dir = Path(tempfile.mkdtemp(prefix="mss-totp-soak-"))
    https_port = free_port()
    psc = start_standin(f"https://localhost:{https_port}", run_dir / "psc.log")
    sofia = {
        "national_id": ENROLLING,
        "mailbox": "sofia.benali@soak.mssante.fr",
        "seed": seeds.new_seed().hex(),
    }
    cluster = None
    try:
        cluster = Cluster(
            run_dir,
            extra_people=[*pool, sofia],
            durable=True,
            https_port=https_port,
            PSC_ISSUER=psc.issuer,
            PSC_AUTHORIZATION_ENDPOINT=f"{psc.issuer}/auth",
            PSC_TOKEN_ENDPOINT=f"{psc.issuer}/token",
            PSC_USERINFO_ENDPOINT=f"{psc.issuer}/me",
            PSC_JWKS_ENDPOINT=f"{psc.issuer}/jwks",
            PSC_END_SESSION_ENDPOINT=f"{psc.issuer}/session/end",
            PSC_CLIENT_SECRET=CLIENT_SECRET,
            THROTTLE_ADDRESS_BURST="1000000",  # the soak's clients share a few addresses
        )
        soak = Soak(cluster, pool, options.seconds)
        reconnecting, logging_in = pool[:20], pool[20:]
        http = requests.Session()
        cached = []
        for person in reconnecting:
            secret = PASSWORD + totp.totp(bytes.fromhex(person["seed"]), time.time())
            assert soak.verify(http, person["mailbox"], secret, "192.0.2.60") == "ok"
            cached.append((person["mailbox"], secret))
        # Every worker's memory each minute. The first minute's figure is the start: by then
        # templates are compiled, statements prepared, connections open; growth after that,
        # and whether it levels off, is what a leak would show.
        series = []
        sampling = threading.Event()

        def sample():
            while not sampling.wait(60):
                series.append(worker_memory(cluster))

        at_start = worker_memory(cluster)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        soak.run(cached, logging_in)
        elapsed = time.monotonic() - started
        sampling.set()
        series.append(worker_memory(cluster))
        warm, after, halfway = series[0], series[-1], series[len(series) // 2]
    finally:
        if cluster:
            cluster.stop()
        psc.process.terminate()
        shutil.rmtree(run_dir, ignore_errors=True)

    total = sum(soak.done.values())
    print(
        f"\nsoak: {elapsed:.0f} s on two nodes (a portal and a verifier pool of 2 workers "
        "each) behind nginx, PostgreSQL durable"
    )
    print(f"{'kind':12} {'done':>8} {'per s':>8} {'errors':>7}")
    for kind, count in sorted(soak.done.items()):
        print(f"{kind:12} {count:8d} {count / elapsed:8.1f} {soak.errors[kind]:7d}")
    print(f"{'all':12} {total:8d} {total / elapsed:8.1f} {sum(soak.errors.values()):7d}")
    print(
        "\nworker memory (resident), MiB: before the load; after the first minute -> at the end"
        " (each minute)"
    )
    nan = float("nan")
    for worker, mib in warm.items():
        minutes = " ".join(f"{sample.get(worker, nan):.1f}" for sample in series)
        print(
            f"  {worker}: {at_start.get(worker, nan):.1f}; {mib:.1f} -> "
            f"{after.get(worker, nan):.1f}  ({minutes})"
        )
    # A leak grows all along; warming up (templates, statement caches, the allocator's
    # high-water mark) is over in a few minutes.
    growth = max(after.get(worker, nan) - halfway.get(worker, nan) for worker in warm)
    print(f"largest growth of a worker over the second half of the soak: {growth:+.1f} MiB")
    for sample in soak.samples:
        print("error:", sample)
    return 1 if soak.errors else 0


if __name__ == "__main__":
    sys.exit(main())
