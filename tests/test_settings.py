"""The site as an operator starts it: real processes with production settings."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import keyring_json

ROOT = Path(__file__).resolve().parent.parent


def run_manage(*args, **env_changes):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DEBUG", "SEED_KEYRING_FILE", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        SECRET_KEY="prod-" + os.urandom(32).hex(),
        SEED_KEYRING=keyring_json("prod1"),
        ALLOWED_HOSTS="portal.example.fr",
        PSC_CLIENT_ID="portal-prod",
        PSC_CLIENT_SECRET="prod-secret",
        NGINX_AUTH_SECRET="nginx-" + os.urandom(16).hex(),
        MAIL_BACKEND_TOKEN="backend-" + os.urandom(16).hex(),
        AUDIT_MAC_KEY="audit-" + os.urandom(32).hex(),
        AUDIT_ANCHOR_FILE="/var/lib/mss-totp/audit-anchors",
        # Production runs on PostgreSQL (check --deploy refuses SQLite); nothing here connects.
        DATABASE_URL=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal"),
    )
    env.update(env_changes)
    env = {k: v for k, v in env.items() if v is not None}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_deploy_is_clean_with_production_settings():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_refuses_the_demos_sqlite():
    """Each node on a file of its own would accept a code that another node accepted."""
    result = run_manage("check", "--deploy", DATABASE_URL=None)
    assert result.returncode != 0
    assert "enrolment.E007" in result.stderr and "DATABASE_URL is not set" in result.stderr


@pytest.mark.parametrize(
    ("keyring", "named"),
    [(None, "SEED_KEYRING"), ('{"active": "a", "keys": {"a": "AAAA"}}', "SEED_KEYRING")],
)
def test_the_site_does_not_start_without_a_valid_key(keyring, named):
    result = run_manage("check", SEED_KEYRING=keyring)
    assert result.returncode != 0
    assert "enrolment.E001" in result.stderr
    assert named in result.stderr


def load_gunicorn_entry_point(**env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import portal.wsgi"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_gunicorn_entry_point_refuses_to_load_without_a_key():
    result = load_gunicorn_entry_point(SECRET_KEY="x" * 50, SEED_KEYRING="", SEED_KEYRING_FILE="")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "SEED_KEYRING" in result.stderr


def test_gunicorn_entry_point_refuses_the_stand_in_psc_without_debug():
    good = {"SECRET_KEY": "x" * 50, "SEED_KEYRING": keyring_json("k"), "DEBUG": "0"}
    assert load_gunicorn_entry_point(**good).returncode == 0
    result = load_gunicorn_entry_point(**good, PSC_ENVIRONMENT="standin")
    assert result.returncode != 0
    assert "PSC_ENVIRONMENT=standin" in result.stderr


def test_production_settings_refuse_to_start_without_a_secret_key():
    result = run_manage("check", SECRET_KEY=None)
    assert result.returncode != 0
    assert "SECRET_KEY (or SECRET_KEY_FILE) must be set" in result.stderr


@pytest.mark.parametrize("typo", ["10.0.0.0/33", "10.0.1.7/16"])  # the second: a whole /16
def test_a_proxy_list_with_a_typo_fails_loudly_naming_the_variable(typo):
    result = run_manage("check", TRUSTED_PROXIES=f"127.0.0.1,{typo}")
    assert result.returncode != 0
    assert f"TRUSTED_PROXIES: '{typo}' is not an address or a network" in result.stderr


def test_a_bad_value_fails_loudly_naming_the_variable():
    result = run_manage("check", DEBUG="perhaps")
    assert result.returncode != 0
    assert "DEBUG must be true or false, not 'perhaps'" in result.stderr


def test_secrets_can_come_from_files(tmp_path):
    (tmp_path / "secret").write_text("file-" + "s" * 60 + "\n")
    (tmp_path / "keyring").write_text(keyring_json("fromfile"))
    result = run_manage(
        "shell",
        "-v",
        "0",
        "-c",
        "from django.conf import settings; from enrolment.seeds import load_keyring;"
        "print(settings.SECRET_KEY[:5], load_keyring().active_id)",
        SECRET_KEY=None,
        SECRET_KEY_FILE=str(tmp_path / "secret"),
        SEED_KEYRING=None,
        SEED_KEYRING_FILE=str(tmp_path / "keyring"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["file-", "fromfile"]


def test_the_stand_in_psc_is_refused_without_debug():
    result = run_manage("check", PSC_ENVIRONMENT="standin")
    assert result.returncode != 0
    assert "enrolment.E003" in result.stderr


def test_production_needs_an_anchor_file_for_the_audit_chain():
    result = run_manage("check", "--deploy", AUDIT_ANCHOR_FILE=None)
    assert result.returncode != 0
    assert "enrolment.E008" in result.stderr


def test_production_needs_a_psc_client_id():
    result = run_manage("check", "--deploy", PSC_CLIENT_ID=None)
    assert result.returncode != 0
    assert "enrolment.E002" in result.stderr


def test_models_and_migrations_agree():
    result = run_manage("makemigrations", "--check", "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_deploy_warns_when_the_audit_key_is_the_secret_key():
    result = run_manage("check", "--deploy", AUDIT_MAC_KEY=None)
    assert "enrolment.W002" in result.stderr + result.stdout


def test_behind_pgbouncer_the_database_options_follow_the_environment():
    """Transaction pooling: no prepared statements, no server-side cursors."""
    script = (
        "from django.db import connection as c;"
        "print(c.settings_dict['DISABLE_SERVER_SIDE_CURSORS'],"
        " c.settings_dict['OPTIONS']['prepare_threshold'])"
    )
    pooled = {
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/portal",
        "DATABASE_DISABLE_SERVER_SIDE_CURSORS": "true",
        "DATABASE_PREPARE_THRESHOLD": "0",
    }
    result = run_manage("shell", "-v", "0", "-c", script, **pooled)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "None"]
    default = run_manage("shell", "-v", "0", "-c", script, DATABASE_URL=pooled["DATABASE_URL"])
    assert default.stdout.split() == ["False", "5"]


@pytest.mark.parametrize("backend", ["imap.internal:1143", "127.0.0.1", "127.0.0.1:0", "[::1]"])
def test_a_backend_nginx_could_not_reach_stops_the_start(backend):
    """nginx takes an address in Auth-Server, not a name: each login would be accepted, its
    code spent, then fail at nginx."""
    result = run_manage("check", MAIL_BACKEND_IMAP=backend)
    assert result.returncode != 0
    assert "MAIL_BACKEND_IMAP must be IP:PORT" in result.stderr


def test_nginx_without_the_backend_token_stops_the_start():
    result = load_gunicorn_entry_point(
        SECRET_KEY="x" * 50,
        SEED_KEYRING=keyring_json("k"),
        NGINX_AUTH_SECRET="n" * 40,
        MAIL_BACKEND_TOKEN="",
    )
    assert result.returncode != 0
    assert "MAIL_BACKEND_TOKEN is not" in result.stderr
