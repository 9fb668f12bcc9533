"""The stand-in Pro Santé Connect (deploy/dev-psc) as a test fixture: a real OpenID provider
process on a free loopback port, and helpers that log in through it as a browser would."""

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import requests

from tests import secret_watch

ROOT = Path(__file__).resolve().parent.parent
PSC_DIR = ROOT / "deploy" / "dev-psc"
CLIENT_SECRET = "test-portal-secret-" + "s" * 40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class StandinPSC:
    issuer: str
    process: subprocess.Popen

    def settings(self, client_id="portal", sign_algo="RS256") -> dict:
        return {
            "PSC_ISSUER": self.issuer,
            "OIDC_OP_AUTHORIZATION_ENDPOINT": f"{self.issuer}/auth",
            "OIDC_OP_TOKEN_ENDPOINT": f"{self.issuer}/token",
            "OIDC_OP_USER_ENDPOINT": f"{self.issuer}/me",
            "OIDC_OP_JWKS_ENDPOINT": f"{self.issuer}/jwks",
            "OIDC_OP_LOGOUT_ENDPOINT": f"{self.issuer}/session/end",
            "OIDC_RP_CLIENT_ID": client_id,
            "OIDC_RP_CLIENT_SECRET": CLIENT_SECRET,
            "OIDC_RP_SIGN_ALGO": sign_algo,
        }


def start_standin(rp_url: str, log_path: Path) -> StandinPSC:
    if not (PSC_DIR / "node_modules").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=PSC_DIR,
            check=True,
            capture_output=True,
            timeout=300,
        )
    # Node loads oidc-provider in a second or two; once in CI a start never reached its
    # listen() in 20 s. Two tries of 30 s, each on a fresh port, each told apart in the log.
    for attempt in (1, 2):
        psc = _try_to_start(rp_url, log_path, attempt)
        if psc is not None:
            return psc
    raise RuntimeError(f"the stand-in PSC did not start twice; see {log_path}")


def _try_to_start(rp_url: str, log_path: Path, attempt: int) -> StandinPSC | None:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PSC_PORT": str(port),
        "PSC_ISSUER": issuer,
        "RP_REDIRECT_URIS": f"{rp_url}/oidc/callback/",
        "RP_POST_LOGOUT_URIS": f"{rp_url}/",
        "RP_CLIENT_SECRET": CLIENT_SECRET,
    }
    log = log_path.open("w" if attempt == 1 else "a")
    log.write(f"--- start {attempt}, port {port}\n")
    log.flush()
    secret_watch.register_log(log_path)
    process = subprocess.Popen(
        ["node", "psc.mjs"], cwd=PSC_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(f"{issuer}/.well-known/openid-configuration", timeout=2).ok:
                return StandinPSC(issuer, process)
        except requests.RequestException:  # not listening yet, or too busy to answer
            time.sleep(0.1)
    process.kill()
    process.wait(timeout=10)
    return None


class _FormFinder(HTMLParser):
    def __init__(self):
        super().__init__()
        self.action = None

    def handle_starttag(self, tag, attrs):
        action = dict(attrs).get("action") or ""
        if tag == "form" and "/interaction/" in action:
            self.action = action


def login_form_action(response: requests.Response) -> str:
    finder = _FormFinder()
    finder.feed(response.text)
    assert finder.action, f"no login form at {response.url}: {response.text[:300]}"
    return urljoin(response.url, finder.action)


def log_in(session: requests.Session, start_url: str, national_id: str, action="login"):
    """Start at the portal, pick the professional on the stand-in's login form, and follow
    every redirect back. Returns the last response."""
    form_page = session.get(start_url, timeout=10)
    return session.post(
        login_form_action(form_page), data={"sub": national_id, "action": action}, timeout=10
    )
