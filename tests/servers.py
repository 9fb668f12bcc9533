"""Real servers started by the tests and the benchmark: a private PostgreSQL cluster (which a
test may stop and start), and the portal under gunicorn. Free ports; stopped by their PID."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from tests import secret_watch
from tests.mail_stack import wait_for_port
from tests.psc_standin import free_port

ROOT = Path(__file__).resolve().parent.parent


def postgres_bin(tool: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"))
    if not found:
        raise RuntimeError("PostgreSQL's server binaries are missing (Debian: postgresql)")
    return str(found[-1])


class PrivatePostgres:
    """A throw-away cluster in a temporary folder, run as the postgres user."""

    def server_pids(self) -> list[int]:
        """The postmaster and its children (backends, WAL writer, ...)."""
        postmaster = int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
        return [postmaster, *child_pids(postmaster)]

    def __init__(self, durable: bool = False):
        self.dir = Path(tempfile.mkdtemp(prefix="mss-totp-pg-"))
        self.port = free_port()
        self.durable = durable
        try:
            os.chmod(self.dir, 0o755)  # noqa: S103  (the postgres user must reach its data)
            shutil.chown(self.dir, "postgres", "postgres")
            self._as_postgres(
                postgres_bin("initdb"),
                *("-D", str(self.dir / "data"), "-U", "postgres", "-A", "trust", "--no-sync"),
                *("-E", "UTF8", "--locale=C.UTF-8"),
            )
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/portal"

    def _as_postgres(self, *command):
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *command],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self):
        """Started, or else stopped and removed: a fixture whose set-up fails leaves nothing."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir}"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        try:
            self._as_postgres(
                postgres_bin("pg_ctl"),
                *("-D", str(self.dir / "data"), "-l", str(self.dir / "server.log")),
                *("-w", "-o", options, "start"),
            )
        except BaseException:
            self.destroy()
            raise
        return self

    def stop(self):
        self._as_postgres(
            postgres_bin("pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop"
        )

    def create_database(self):
        subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-q",
                "-c",
                "CREATE DATABASE portal",
            ],
            check=True,
            capture_output=True,
        )

    def destroy(self):
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop()
        secret_watch.keep_log(self.dir / "server.log")  # for the suite's log grep
        shutil.rmtree(self.dir, ignore_errors=True)


def site_environment(database_url: str, keyring: str, **extra) -> dict:
    """The production settings, as an operator would set them, for a site on loopback."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        DATABASE_URL=database_url,
        SEED_KEYRING=keyring,
        SECRET_KEY="site-" + os.urandom(24).hex(),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SECURE_SSL_REDIRECT="false",
        PSC_CLIENT_ID="portal",
        MAIL_BACKEND_TOKEN="site-backend-token-" + os.urandom(16).hex(),
        LOG_LEVEL="WARNING",
        **extra,
    )
    env.pop("SEED_KEYRING_FILE", None)
    return env


def manage(env: dict, *args, stdin: str | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)}: {result.stderr[-2000:]}")
    return result.stdout


class Gunicorn:
    def __init__(self, env: dict, workers: int = 2, threads: int = 1, config: str | None = None):
        """``config``: a gunicorn configuration file (deploy/gunicorn.conf.py, as a node runs
        it); the bind address, the workers and the logs given here take precedence."""
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115  (open while gunicorn runs)
            prefix="gunicorn-", suffix=".log", delete=False
        )
        secret_watch.register_log(self.log.name)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                *(["--config", config] if config else []),
                "portal.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(workers),
                "--threads",
                str(threads),
                "--no-control-socket",
                "--access-logfile",
                "-",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        try:
            self._wait_until_it_answers()
        except BaseException:
            self.stop()  # a fixture whose set-up fails leaves no server running
            raise

    def _wait_until_it_answers(self):
        wait_for_port(self.port, timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/internal/health/live", timeout=2).ok:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not answer; see {self.log.name}")

    def worker_pids(self) -> list[int]:
        return child_pids(self.process.pid)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def child_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in children.read_text().split()]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes used so far (Linux /proc)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


SETUP_SCRIPT = """
import hashlib, json, sys
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import transaction
from django.utils import timezone
from enrolment.models import ApiKey, Device, Mailbox, Membership, Professional

def add(person, password_hash):
    user = get_user_model().objects.create_user("psc-" + person["national_id"])
    encoded = password_hash or make_password(person["password"])
    professional = Professional.objects.create(national_id=person["national_id"], user=user,
        mail_password=encoded)
    mailbox = Mailbox.objects.create(address=person["mailbox"])
    Membership.objects.create(mailbox=mailbox, professional=professional)
    device = Device(user=user, name="FreeOTP", confirmed=True, confirmed_at=timezone.now())
    device.set_seed(bytes.fromhex(person["seed"]))
    device.save()

spec = json.load(sys.stdin)
with transaction.atomic():  # one commit for everyone: thousands of people in seconds
    for person in spec["people"]:
        add(person, spec.get("password_hash"))
    token_hash = hashlib.sha256(spec["api_token"].encode()).hexdigest()
    ApiKey.objects.create(name="load", token_hash=token_hash)
"""


def populate(env: dict, people: list[dict], api_token: str, password_hash: str = "") -> None:
    """Professionals with a mailbox, a password and a device, through manage.py shell.
    With ``password_hash``, everyone shares that one hash (fast to set up, same to check)."""
    spec = {"people": people, "api_token": api_token, "password_hash": password_hash}
    manage(env, "shell", "-v", "0", "-c", SETUP_SCRIPT, stdin=json.dumps(spec))
