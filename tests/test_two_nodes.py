"""Scale-out: two gunicorn nodes on one PostgreSQL, behind nginx (deploy/nginx/web.conf, run
as is), behave as one. One code presented to both at once is claimed once; a mail session
opened on one is accepted on the other; a helpdesk reset made through one is effective on
both at once."""

import contextlib
import http.client
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from enrolment import seeds
from tests.cluster import LUC, STAFF_PASSWORD, Cluster, StaffBrowser

PAUL, PAUL_SEED = "paul.durand@demo.mssante.fr", seeds.new_seed()


class SlowPSC:
    """A token endpoint that accepts connections and answers nothing until released: Pro
    Santé Connect having a bad day."""

    def __init__(self):
        self.released = threading.Event()
        self.held = threading.Semaphore(0)  # one release per connection it holds
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.released.is_set():
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._hold, args=(connection,), daemon=True).start()

    def _hold(self, connection):
        self.held.release()
        self.released.wait(60)
        connection.close()

    def close(self):
        self.released.set()
        self.server.close()


@pytest.fixture(scope="module")
def slow_psc():
    psc = SlowPSC()
    yield psc
    psc.close()


@pytest.fixture(scope="module")
def cluster(slow_psc):
    run_dir = Path(tempfile.mkdtemp(prefix="mss-totp-nodes-"))
    cluster = Cluster(
        run_dir,
        extra_people=[{"national_id": "899700000004", "mailbox": PAUL, "seed": PAUL_SEED.hex()}],
        PSC_TOKEN_ENDPOINT=f"http://127.0.0.1:{slow_psc.port}/token",
    )
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def test_one_code_at_both_nodes_at_once_is_claimed_once(cluster):
    secret, answers = cluster.secret(), []
    before = cluster.claims()
    start = threading.Barrier(30)

    def login(n):
        start.wait()
        answers.append(cluster.verify(n % 2, secret))

    threads = [threading.Thread(target=login, args=(n,)) for n in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == ["ok"] * 30
    assert cluster.claims() == before + 1


def test_a_session_opened_on_one_node_is_accepted_on_the_other(cluster):
    secret = cluster.secret(time.time() + 30)  # a step no test has used
    before = cluster.claims()
    assert cluster.verify(0, secret, "192.0.2.20") == "ok"
    assert cluster.verify(1, secret, "192.0.2.20") == "ok"
    assert cluster.verify(1, secret, "198.51.100.20") == "reject"  # not from elsewhere
    assert cluster.claims() == before + 1


def test_a_reset_through_one_node_is_effective_on_both(cluster):
    cached = cluster.secret(seed=cluster.luc_seed)
    assert cluster.verify(0, cached, mailbox=LUC) == "ok"
    assert cluster.verify(1, cached, mailbox=LUC) == "ok"

    browser = StaffBrowser(f"https://localhost:{cluster.https_port}", cluster.cert)
    browser.log_in_and_enrol("alice", STAFF_PASSWORD, cluster.staff_token)
    page = browser.post(
        "/helpdesk/professionals/899700000003/reset-device/",
        {"reason": "Téléphone perdu, appel vérifié, ticket 31", "confirmed": "yes"},
    )
    assert "Aucun téléphone enrôlé" in page.text
    # No mail server here: the reset stands, and the helpdesk is told to phone instead.
    assert "par téléphone" in page.text

    fresh = cluster.secret(time.time() + 30, seed=cluster.luc_seed)
    for node in (0, 1):
        assert cluster.verify(node, cached, mailbox=LUC) == "reject"
        assert cluster.verify(node, fresh, "192.0.2.30", mailbox=LUC) == "reject"


def test_the_internal_listener_answers_the_mail_proxies_only(cluster):
    """web.conf's internal server: /internal/ and /api/ from the mail proxies' network, and
    nothing from any other address (here 127.0.0.2, loopback too, but not listed)."""
    url = f"http://127.0.0.1:{cluster.internal_port}/internal/health/live"
    assert http_get(url, "127.0.0.1") == 200
    assert http_get(url, "127.0.0.2") == 403
    assert http_get(f"http://127.0.0.1:{cluster.internal_port}/staff/login/", "127.0.0.1") == 404


def http_get(url: str, source: str) -> int:
    parts = urlparse(url)
    connection = http.client.HTTPConnection(
        parts.hostname, parts.port, timeout=10, source_address=(source, 0)
    )
    try:
        connection.request("GET", parts.path)
        return connection.getresponse().status
    finally:
        connection.close()


def test_static_files_carry_one_cache_header_and_the_sites_security_headers(cluster):
    """They never reach the portal, so nginx gives them what the portal's answers carry."""
    response = requests.get(
        f"https://localhost:{cluster.https_port}/static/css/portal.css",
        verify=str(cluster.cert),
        timeout=10,
    )
    assert response.status_code == 200 and "--accent" in response.text
    assert response.raw.headers.getlist("Cache-Control") == ["public, max-age=604800"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_browsers_held_by_a_slow_psc_do_not_hold_up_mail_logins(cluster, slow_psc):
    """Each PSC login's callback waits on PSC's token endpoint (up to PSC_TIMEOUT_SECONDS,
    three calls in a row). With more such logins than the portal has workers, the browsers'
    pool is full; the mail layer's answers, on its own pool, still come within nginx mail's
    auth_http_timeout (5 s)."""
    site = f"https://localhost:{cluster.https_port}"

    def psc_login_stuck_at_the_callback():
        browser, cert = requests.Session(), str(cluster.cert)
        to_psc = browser.get(
            f"{site}/oidc/authenticate/", allow_redirects=False, timeout=10, verify=cert
        )
        state = parse_qs(urlparse(to_psc.headers["Location"]).query)["state"][0]
        with contextlib.suppress(requests.RequestException):
            callback = f"{site}/oidc/callback/?code=the-authorization-code&state={state}"
            browser.get(callback, timeout=40, verify=cert)

    browsers = [threading.Thread(target=psc_login_stuck_at_the_callback) for _ in range(6)]
    for browser in browsers:
        browser.start()
    try:
        portal_workers = 2 * 2  # two nodes of two workers: each now waits on PSC
        assert all(slow_psc.held.acquire(timeout=30) for _ in range(portal_workers))
        with pytest.raises(requests.Timeout):  # the browsers' pool is indeed full
            requests.get(f"{site}/", verify=str(cluster.cert), timeout=3)
        answer = requests.post(
            f"http://127.0.0.1:{cluster.internal_port}/api/v1/verify",
            headers={"Authorization": f"Bearer {cluster.token}"},
            json={
                "mailbox": PAUL,
                "secret": cluster.secret(seed=PAUL_SEED),
                "client_ip": "192.0.2.40",
            },
            timeout=5,  # nginx mail's auth_http_timeout: the contract, not a speed figure
        )
        assert answer.json()["outcome"] == "ok"
    finally:
        slow_psc.released.set()
        for browser in browsers:
            browser.join(timeout=60)
    # nginx's access log has the callbacks, not their authorization codes.
    access_log = (cluster.run_dir / "access.log").read_text()
    assert "/oidc/callback/" in access_log and "the-authorization-code" not in access_log
