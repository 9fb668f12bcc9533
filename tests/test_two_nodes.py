"""Scale-out: two gunicorn nodes on one PostgreSQL, behind nginx (deploy/nginx/web.conf, run
as is), behave as one. One code presented to both at once is claimed once; a mail session
opened on one is accepted on the other; a helpdesk reset made through one is effective on
both at once."""

import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from base64 import b32decode
from pathlib import Path

import psycopg
import pytest
import requests

from enrolment import seeds, totp
from tests.conftest import keyring_json
from tests.mail_stack import render, wait_for_port
from tests.psc_standin import free_port
from tests.servers import ROOT, Gunicorn, PrivatePostgres, manage, populate, site_environment

MAILBOX, PASSWORD = "claire.martin@demo.mssante.fr", "Cheval-Agrafe-27"
LUC = "luc.moreau@demo.mssante.fr"  # the one whose phone the helpdesk resets
STAFF_PASSWORD = "Support-Deux-Noeuds-9"


class Cluster:
    def __init__(self, run_dir: Path):
        self.postgres = PrivatePostgres().start()
        self.postgres.create_database()
        self.seed, self.luc_seed = seeds.new_seed(), seeds.new_seed()
        self.token = secrets.token_urlsafe(32)
        self.static = run_dir / "static"
        env = site_environment(
            self.postgres.url,
            keyring_json("nodes1"),
            STATIC_ROOT=str(self.static),
            EMAIL_PORT=str(free_port()),  # a mail server that is down
        )
        manage(env, "migrate", "-v", "0")
        manage(env, "collectstatic", "--noinput", "-v", "0")  # as a deployment does
        people = [
            {"national_id": "899700000001", "mailbox": MAILBOX, "seed": self.seed.hex()},
            {"national_id": "899700000003", "mailbox": LUC, "seed": self.luc_seed.hex()},
        ]
        populate(env, [{**person, "password": PASSWORD} for person in people], self.token)
        manage(
            env,
            *("staff", "create", "alice", "--role", "helpdesk", "--password-stdin"),
            stdin=STAFF_PASSWORD + "\n",
        )
        self.nodes = [Gunicorn(env, workers=2), Gunicorn(env, workers=2)]
        self.https_port, self.internal_port = free_port(), free_port()
        self.nginx = self._start_nginx(run_dir)

    def _start_nginx(self, run_dir: Path):
        self.cert = cert = run_dir / "cert.pem"
        key = run_dir / "key.pem"
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                *("-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"),
                *("-keyout", str(key), "-out", str(cert)),
            ],
            check=True,
            capture_output=True,
        )
        conf = render(
            ROOT / "deploy" / "nginx" / "web.conf",
            run_dir / "nginx.conf",
            RUN_DIR=str(run_dir),
            SERVER_NAME="localhost",
            LISTEN_HTTPS=f"127.0.0.1:{self.https_port}",
            LISTEN_INTERNAL=f"127.0.0.1:{self.internal_port}",
            CERT=str(cert),
            KEY=str(key),
            STATIC_ROOT=str(self.static),
            NODE_1=f"127.0.0.1:{self.nodes[0].port}",
            NODE_2=f"127.0.0.1:{self.nodes[1].port}",
        )
        process = subprocess.Popen(
            ["nginx", "-c", str(conf), "-p", str(run_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.https_port)
        return process

    def stop(self):
        self.nginx.terminate()
        self.nginx.wait(timeout=10)
        for node in self.nodes:
            node.stop()
        self.postgres.destroy()

    def verify(self, node: int, secret: str, client_ip="192.0.2.10", mailbox=MAILBOX) -> str:
        answer = requests.post(
            f"{self.nodes[node].url}/api/v1/verify",
            timeout=30,
            headers={"Authorization": f"Bearer {self.token}"},
            json={"mailbox": mailbox, "secret": secret, "client_ip": client_ip},
        )
        return answer.json()["outcome"]

    def claims(self) -> int:
        with psycopg.connect(self.postgres.url) as connection:
            return connection.execute(
                "SELECT count(*) FROM enrolment_auditevent WHERE details->>'reason' = 'new_login'"
            ).fetchone()[0]

    def secret(self, at=None, seed=None) -> str:
        return PASSWORD + totp.totp(seed or self.seed, time.time() if at is None else at)


@pytest.fixture(scope="module")
def cluster():
    run_dir = Path(tempfile.mkdtemp(prefix="mss-totp-nodes-"))
    cluster = Cluster(run_dir)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def test_one_code_at_both_nodes_at_once_is_claimed_once(cluster):
    secret, answers = cluster.secret(), []
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
    assert cluster.claims() == 1


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
    browser.log_in_and_enrol("alice", STAFF_PASSWORD)
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


class StaffBrowser:
    """The staff pages over HTTPS through nginx, as a browser would post them."""

    def __init__(self, base: str, cert: Path):
        self.base, self.session, self.cert = base, requests.Session(), str(cert)

    def get(self, path: str):
        return self.session.get(self.base + path, timeout=30, verify=self.cert)

    def post(self, path: str, data: dict):
        self.get(path)  # the form, and its CSRF cookie
        form = {**data, "csrfmiddlewaretoken": self.session.cookies["csrftoken"]}
        # Django checks the Referer of an HTTPS POST.
        headers = {"Referer": self.base + path}
        return self.session.post(
            self.base + path, data=form, headers=headers, timeout=30, verify=self.cert
        )

    def log_in_and_enrol(self, username: str, password: str):
        self.post("/staff/login/", {"username": username, "password": password})
        page = self.get("/staff/enrol/")
        key = re.search(r'id="secret">([A-Z2-7 ]+)</code>', page.text)[1].replace(" ", "")
        seed = b32decode(key + "=" * (-len(key) % 8))
        done = self.post("/staff/enrol/", {"code": totp.totp(seed, time.time())})
        assert "Trouver un professionnel" in done.text, done.text[:500]
