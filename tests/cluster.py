"""A cluster for the scale-out test and the soak: PostgreSQL, two nodes of two gunicorn pools
each (the browsers' and the mail layer's, as deploy/systemd/mss-totp@.service runs them),
nginx in front of them with deploy/nginx/web.conf as is, and a browser-like client for the
staff pages over HTTPS."""

import base64
import contextlib
import json
import os
import re
import secrets
import subprocess
import time
from base64 import b32decode
from pathlib import Path

import psycopg
import requests

from enrolment import seeds, totp
from tests import secret_watch
from tests.mail_stack import render, self_signed_certificate, wait_for_port
from tests.psc_standin import free_port
from tests.servers import ROOT, Gunicorn, PrivatePostgres, manage, populate, site_environment

MAILBOX, PASSWORD = "claire.martin@demo.mssante.fr", "Cheval-Agrafe-27"
LUC = "luc.moreau@demo.mssante.fr"  # the one whose phone the helpdesk resets
STAFF_PASSWORD = "Support-Deux-Noeuds-9"


class Cluster:
    """PostgreSQL, two gunicorn nodes and nginx in front (deploy/nginx/web.conf, with a
    throw-away certificate), with Claire and Luc, their phones, and the staff member alice.
    ``extra_people`` and ``env`` add professionals and settings (the soak uses both)."""

    def __init__(
        self, run_dir: Path, extra_people=(), durable=False, workers=2, https_port=None, **env
    ):
        self.run_dir = run_dir
        # What is started is stopped by stop(), last started first; if the set-up fails
        # half-way, what it had started is stopped before the error goes on.
        self._cleanup = contextlib.ExitStack()
        try:
            self._start(extra_people, durable, workers, https_port, env)
        except BaseException:
            self._cleanup.close()
            raise

    def _start(self, extra_people, durable, workers, https_port, env):
        run_dir = self.run_dir
        self.postgres = PrivatePostgres(durable=durable).start()
        self._cleanup.callback(self.postgres.destroy)
        self.postgres.create_database()
        self.seed, self.luc_seed = seeds.new_seed(), seeds.new_seed()
        self.token = secrets.token_urlsafe(32)
        self.static = run_dir / "static"
        env = site_environment(
            self.postgres.url,
            json.dumps(
                {"active": "nodes1", "keys": {"nodes1": base64.b64encode(os.urandom(32)).decode()}}
            ),
            STATIC_ROOT=str(self.static),
            EMAIL_PORT=str(free_port()),  # a mail server that is down
            **env,
        )
        manage(env, "migrate", "-v", "0")
        manage(env, "collectstatic", "--noinput", "-v", "0")  # as a deployment does
        os.chmod(run_dir, 0o755)  # noqa: S103  (nginx's workers, not root, serve the static files)
        people = [
            {"national_id": "899700000001", "mailbox": MAILBOX, "seed": self.seed.hex()},
            {"national_id": "899700000003", "mailbox": LUC, "seed": self.luc_seed.hex()},
        ]
        people += list(extra_people)
        populate(env, [{"password": PASSWORD, **person} for person in people], self.token)
        created = manage(
            env,
            *("staff", "create", "alice", "--role", "helpdesk", "--password-stdin"),
            stdin=STAFF_PASSWORD + "\n",
        )
        self.staff_token = re.search(r"enrolment token, valid until .*: (\S+)", created)[1]
        secret_watch.watch_token(self.staff_token)  # for the grep of the nodes' logs
        self.env = env
        self.nodes = [self._pool(workers), self._pool(workers)]
        self.verifiers = [self._pool(workers), self._pool(workers)]
        self.https_port, self.internal_port = https_port or free_port(), free_port()
        self.url = f"https://localhost:{self.https_port}"
        self.nginx = self._start_nginx(run_dir)

    def _pool(self, workers: int) -> Gunicorn:
        pool = Gunicorn(self.env, workers=workers)
        self._cleanup.callback(pool.stop)
        return pool

    def _start_nginx(self, run_dir: Path):
        self.cert, key = self_signed_certificate(
            run_dir / "cert.pem", run_dir / "key.pem", "localhost"
        )
        cert = self.cert
        conf = render(
            ROOT / "deploy" / "nginx" / "web.conf",
            run_dir / "nginx.conf",
            RUN_DIR=str(run_dir),
            SERVER_NAME="localhost",
            LISTEN_HTTPS=f"127.0.0.1:{self.https_port}",
            LISTEN_INTERNAL=f"127.0.0.1:{self.internal_port}",
            MAIL_PROXIES="127.0.0.1",
            CERT=str(cert),
            KEY=str(key),
            STATIC_ROOT=str(self.static),
            NODE_1=f"127.0.0.1:{self.nodes[0].port}",
            NODE_2=f"127.0.0.1:{self.nodes[1].port}",
            VERIFIER_1=f"127.0.0.1:{self.verifiers[0].port}",
            VERIFIER_2=f"127.0.0.1:{self.verifiers[1].port}",
        )
        process = subprocess.Popen(
            ["nginx", "-c", str(conf), "-p", str(run_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._cleanup.callback(_terminate, process)
        wait_for_port(self.https_port)
        return process

    def stop(self):
        self._cleanup.close()

    def verify(self, node: int, secret: str, client_ip="192.0.2.10", mailbox=MAILBOX) -> str:
        answer = requests.post(
            f"{self.verifiers[node].url}/api/v1/verify",
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


class StaffBrowser:
    """The staff pages over HTTPS through nginx, as a browser would post them."""

    def __init__(self, base: str, cert: Path):
        self.base, self.session, self.cert = base, requests.Session(), str(cert)

    def get(self, path: str):
        return self.session.get(self.base + path, timeout=30, verify=self.cert)

    def post(self, path: str, data: dict):
        self.get(path)  # the form, and its CSRF cookie
        form = {**data, "csrfmiddlewaretoken": self.session.cookies["__Host-csrftoken"]}
        # Django checks the Referer of an HTTPS POST.
        headers = {"Referer": self.base + path}
        return self.session.post(
            self.base + path, data=form, headers=headers, timeout=30, verify=self.cert
        )

    def log_in_and_enrol(self, username: str, password: str, token: str):
        self.post("/staff/login/", {"username": username, "password": password})
        self.post("/staff/enrol/", {"token": token})
        page = self.get("/staff/enrol/")
        key = re.search(r'id="secret">([A-Z2-7 ]+)</code>', page.text)[1].replace(" ", "")
        seed = b32decode(key + "=" * (-len(key) % 8))
        done = self.post("/staff/enrol/", {"code": totp.totp(seed, time.time())})
        assert "Trouver un professionnel" in done.text, done.text[:500]


def _terminate(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
