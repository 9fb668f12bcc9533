"""A node as deploy/ runs it: the systemd units pass systemd's own checks, and gunicorn with
deploy/gunicorn.conf.py serves the metrics of all its workers, a worker gone included."""

import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import keyring_json
from tests.servers import ROOT, Gunicorn, PrivatePostgres, manage, populate, site_environment

UNITS = ROOT / "deploy" / "systemd"
METRICS_TOKEN = "metrics-token-of-the-deployed-node-0123456789"
MAILBOX, PASSWORD = "claire.martin@demo.mssante.fr", "Cheval-Agrafe-27"
# What systemd-analyze says of a unit verified on a machine without the installed portal.
NOT_INSTALLED = re.compile(r"^\S+: Command /opt/mss-totp/\.venv/bin/\w+ is not executable: ")


def test_the_systemd_units_pass_systemd_analyze(tmp_path):
    for unit in UNITS.iterdir():
        shutil.copy(unit, tmp_path)
    # The node's template, as its two instances (a template alone is not verified).
    template = tmp_path / "mss-totp@.service"
    for pool in ("portal", "verifier"):
        shutil.copy(template, tmp_path / f"mss-totp@{pool}.service")
    template.unlink()
    units = sorted(path.name for path in tmp_path.iterdir())
    assert {"mss-totp@portal.service", "mss-totp@verifier.service"} <= set(units)
    assert "mss-totp-seal-audit.timer" in units
    verified = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Its exit status is 1 for the missing executables alone: every problem is a line.
    said = (verified.stdout + verified.stderr).splitlines()
    assert [line for line in said if line and not NOT_INSTALLED.match(line)] == []
    assert len(said) == 4  # the four services' ExecStart: the units were all read


@pytest.fixture
def deployed_node(tmp_path):
    postgres = PrivatePostgres().start()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"left by the previous run")
    site = None
    try:
        postgres.create_database()
        env = site_environment(
            postgres.url,
            keyring_json("node1"),
            METRICS_TOKEN=METRICS_TOKEN,
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        )
        manage(env, "migrate", "-v", "0")
        token = secrets.token_urlsafe(32)
        person = {"national_id": "899700000001", "mailbox": MAILBOX, "password": PASSWORD}
        populate(env, [{**person, "seed": os.urandom(20).hex()}], token)
        site = Gunicorn(env, workers=3, config=str(ROOT / "deploy" / "gunicorn.conf.py"))
        yield site, token, metrics_dir
    finally:
        if site:
            site.stop()
        postgres.destroy()


def refused_logins(site) -> float:
    """The sum over every worker of the refused mail logins, as a scrape sees it."""
    text = requests.get(
        f"{site.url}/internal/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        timeout=10,
    ).text
    found = re.findall(r'^mss_totp_mail_logins_total\{outcome="reject",[^}]*\} (\S+)$', text, re.M)
    return sum(float(value) for value in found)


def test_the_units_write_only_where_systemd_makes_the_folder():
    """Under ProtectSystem=strict a ReadWritePaths= folder must exist before the unit starts
    (else it fails with 226/NAMESPACE on a fresh host); StateDirectory= and
    RuntimeDirectory= make theirs. And every unit is sandboxed."""
    for unit in sorted(UNITS.glob("*.service")):
        text = unit.read_text()
        assert "ReadWritePaths=" not in text, unit.name
        for setting in ("ProtectSystem=strict", "NoNewPrivileges=yes", "CapabilityBoundingSet="):
            assert f"\n{setting}\n" in text, (unit.name, setting)


def test_a_deployed_node_adds_up_every_workers_metrics(deployed_node):
    site, token, metrics_dir = deployed_node
    assert not (metrics_dir / "counter_999999.db").exists()  # emptied when gunicorn started

    def wrong_code(n):  # a refusal costs a hash: parallel ones land on several workers
        answer = requests.post(
            f"{site.url}/api/v1/verify",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "mailbox": MAILBOX,
                "secret": f"{PASSWORD}00000{n % 10}",
                "client_ip": f"192.0.2.{n}",
            },
            timeout=30,
        )
        return answer.json()["outcome"]

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert set(pool.map(wrong_code, range(30))) == {"reject"}
    assert refused_logins(site) == 30

    # A worker killed (or recycled after max_requests): what it counted is still counted.
    victim = site.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while victim in site.worker_pids() or len(site.worker_pids()) < 3:
        assert time.monotonic() < deadline, "gunicorn did not replace the worker"
        time.sleep(0.1)
    assert refused_logins(site) == 30
    assert len(list(Path(metrics_dir).glob("counter_*.db"))) >= 2
