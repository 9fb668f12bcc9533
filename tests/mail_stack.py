"""The real mail path, started for the tests from deploy/'s own files: nginx's mail proxy,
Dovecot (behind nginx, and as the login point with the Lua passdb), Postfix (nginx's XCLIENT
backend, and submission with Dovecot SASL), and an SMTP sink that receives what Postfix relays.
Every process is started on free loopback ports and stopped by its PID."""

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import pytest

from tests import secret_watch
from tests.psc_standin import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
MAIL_UID = 19100
BACKEND_TOKEN = "test-backend-token-" + "b" * 32  # the portal's MAIL_BACKEND_TOKEN in the tests
NEEDED = [
    "/usr/sbin/nginx",
    "/usr/lib/nginx/modules/ngx_mail_module.so",
    "/usr/sbin/dovecot",
    "/usr/lib/dovecot/modules/auth/libauthdb_lua.so",
    "/usr/sbin/postfix",
]


def missing_packages() -> list[str]:
    return [path for path in NEEDED if not Path(path).exists()]


class DeployTemplate(Template):
    """deploy/'s placeholders are ${UPPER_CASE}; nginx's own $variables stay as they are."""

    idpattern = r"[A-Z][A-Z0-9_]*"
    flags = 0


def render(template: Path, target: Path, **values) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    text = DeployTemplate(template.read_text()).safe_substitute(values)
    unfilled = sorted(set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", text)))
    if unfilled:
        raise KeyError(f"{template.name}: no value for {', '.join(unfilled)}")
    target.write_text(text)
    return target


def self_signed_certificate(cert: Path, key: Path, name: str) -> tuple[Path, Path]:
    """A throw-away certificate for ``name`` (its CN and DNS name), valid for a day."""
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class SmtpSink:
    """Accepts whatever Postfix relays and keeps the messages, for the tests to read."""

    def __init__(self):
        self.messages: list[str] = []
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                self.wfile.write(b"220 sink ESMTP\r\n")
                while line := self.rfile.readline():
                    command = line.strip().upper()
                    if command.startswith((b"EHLO", b"HELO")):
                        self.wfile.write(b"250-sink\r\n250 8BITMIME\r\n")
                    elif command == b"DATA":
                        self.wfile.write(b"354 go ahead\r\n")
                        body = []
                        while (data := self.rfile.readline()) not in (b".\r\n", b""):
                            body.append(data.decode("utf-8", "replace"))
                        sink.messages.append("".join(body))
                        self.wfile.write(b"250 2.0.0 queued\r\n")
                    elif command == b"QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:
                        self.wfile.write(b"250 ok\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 20.0) -> list[str]:
        """The messages, once ``count`` have arrived (Postfix relays them asynchronously)."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.messages)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@dataclass
class MailStack:
    run_dir: Path
    nginx_secret: str
    verifier_port: int
    ports: dict = field(default_factory=dict)
    processes: dict = field(default_factory=dict)
    sink: SmtpSink | None = None

    def start(self, api_key: str) -> "MailStack":
        secret_watch.register_log(self.run_dir)  # nginx's, Dovecot's and Postfix's logs
        os.chmod(self.run_dir, 0o755)  # noqa: S103  (Dovecot's and Postfix's users traverse it)
        mail = self.run_dir / "mail"
        mail.mkdir()
        os.chown(mail, MAIL_UID, MAIL_UID)
        self.ports = {
            name: free_port()
            for name in (
                "nginx_imaps",
                "nginx_smtps",
                "nginx_imap",
                "nginx_submission",
                "backend_imap",
                "lua_imaps",
                "lua_imap",
                "submissions",
                "submission",
                "xclient",
            )
        }
        self.sink = SmtpSink()
        common = {
            "RUN_DIR": str(self.run_dir),
            "MAIL_UID": str(MAIL_UID),
            "NGINX_ADDRESS": "127.0.0.1",
            **self._self_signed_certificate(self.run_dir / "tls"),
        }
        self._start_dovecot(
            "dovecot-backend",
            render(
                DEPLOY / "dovecot/backend.conf",
                self.run_dir / "dovecot-backend.conf",
                LISTEN_IMAP=self.ports["backend_imap"],
                BACKEND_TOKEN=BACKEND_TOKEN,
                **common,
            ),
            self.ports["backend_imap"],
        )
        spool = self._postfix_spool()  # before Dovecot, which puts its SASL socket there
        lua = render(
            DEPLOY / "dovecot/totp-passdb.lua",
            self.run_dir / "totp-passdb.lua",
            VERIFY_URL=f"http://127.0.0.1:{self.verifier_port}/api/v1/verify",
            VERIFY_KEY=api_key,
        )
        self._start_dovecot(
            "dovecot-lua",
            render(
                DEPLOY / "dovecot/lua-passdb.conf",
                self.run_dir / "dovecot-lua.conf",
                LUA_SCRIPT=str(lua),
                LISTEN_IMAPS=self.ports["lua_imaps"],
                LISTEN_IMAP=self.ports["lua_imap"],
                POSTFIX_SPOOL=str(spool),
                **common,
            ),
            self.ports["lua_imap"],
        )
        self._start_postfix(common)
        conf = render(
            DEPLOY / "nginx/mail.conf",
            self.run_dir / "nginx.conf",
            SERVER_NAME="mail.example.test",
            AUTH_HTTP=f"127.0.0.1:{self.verifier_port}/internal/nginx-auth",
            AUTH_SECRET=self.nginx_secret,
            LISTEN_IMAPS=f"127.0.0.1:{self.ports['nginx_imaps']}",
            LISTEN_SMTPS=f"127.0.0.1:{self.ports['nginx_smtps']}",
            LISTEN_IMAP=f"127.0.0.1:{self.ports['nginx_imap']}",
            LISTEN_SUBMISSION=f"127.0.0.1:{self.ports['nginx_submission']}",
            **common,
        )
        self._spawn("nginx", ["nginx", "-c", str(conf), "-p", str(self.run_dir)])
        wait_for_port(self.ports["nginx_submission"])
        return self

    def _spawn(self, name, command):
        log = (self.run_dir / f"{name}.out").open("w")
        self.processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def _start_dovecot(self, name, conf, port):
        subprocess.run(["doveconf", "-n", "-c", str(conf)], check=True, capture_output=True)
        self._spawn(name, ["dovecot", "-F", "-c", str(conf)])
        wait_for_port(port)

    @staticmethod
    def _self_signed_certificate(folder: Path) -> dict:
        """One certificate for every TLS listener: nginx's, Dovecot's and Postfix's."""
        folder.mkdir(mode=0o700)
        cert, key = self_signed_certificate(
            folder / "mail.crt", folder / "mail.key", "mail.example.test"
        )
        return {"TLS_CERT": str(cert), "TLS_KEY": str(key)}

    def _postfix_spool(self) -> Path:
        """Postfix's queue directory, with the private/ folder that only its user enters."""
        spool = self.run_dir / "postfix" / "spool"
        (spool / "private").mkdir(parents=True)
        os.chmod(spool, 0o755)  # noqa: S103  (Postfix's and Dovecot's users traverse it)
        shutil.chown(spool / "private", "postfix")
        os.chmod(spool / "private", 0o700)
        return spool

    def _start_postfix(self, common):
        etc = self.run_dir / "postfix" / "etc"
        render(
            DEPLOY / "postfix/main.cf",
            etc / "main.cf",
            RELAY_HOST=f"[127.0.0.1]:{self.sink.port}",
            **common,
        )
        render(
            DEPLOY / "postfix/master.cf",
            etc / "master.cf",
            LISTEN_SUBMISSIONS=f"127.0.0.1:{self.ports['submissions']}",
            LISTEN_SUBMISSION=f"127.0.0.1:{self.ports['submission']}",
            LISTEN_XCLIENT=f"127.0.0.1:{self.ports['xclient']}",
            **common,
        )
        shutil.copy(DEPLOY / "postfix/sender_logins.regexp", etc / "sender_logins.regexp")
        data = self.run_dir / "postfix" / "data"
        data.mkdir(mode=0o700)
        shutil.chown(data, "postfix", "postfix")
        # postfix prints its errors only to a tty or syslog: script(1) gives it a tty.
        check = subprocess.run(
            ["script", "-qec", f"postfix -c {etc} check", "/dev/null"],
            capture_output=True,
            text=True,
        )
        if check.returncode:
            raise RuntimeError(f"postfix check: {check.stdout}")
        self._spawn("postfix", ["postfix", "-c", str(etc), "start-fg"])
        wait_for_port(self.ports["xclient"])

    def stop(self):
        master = self.run_dir / "postfix" / "spool" / "pid" / "master.pid"
        for name, process in reversed(self.processes.items()):
            if name == "postfix" and master.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(master.read_text().split()[0]), signal.SIGTERM)
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.sink:
            self.sink.close()


# Fixtures (imported by conftest.py): the stack for the session, wired to the portal per test.

API_TOKEN = secrets.token_urlsafe(32)


@pytest.fixture(scope="session")
def mail_stack(live_server):
    from tests.mail_fixtures import NGINX_SECRET

    missing = missing_packages()
    if missing:
        pytest.fail(
            "the mail tests need Debian's nginx, libnginx-mod-mail, dovecot-core, "
            f"dovecot-imapd, dovecot-auth-lua and postfix (missing: {missing})"
        )
    port = int(live_server.url.rsplit(":", 1)[1])
    # Not under pytest's own temporary folder: its parents are private to root, and Dovecot
    # and Postfix drop to their own users, which must reach their files.
    run_dir = Path(tempfile.mkdtemp(prefix="mss-totp-mail-"))
    stack = MailStack(run_dir, NGINX_SECRET, port)
    try:
        yield stack.start(API_TOKEN)
    finally:
        stack.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def mail(mail_stack, settings, transactional_db):
    """The portal wired to the stack for one test (the database is emptied between tests)."""
    from enrolment.models import ApiKey
    from tests.mail_fixtures import NGINX_SECRET

    settings.NGINX_AUTH_SECRET = NGINX_SECRET
    settings.MAIL_BACKEND_IMAP = f"127.0.0.1:{mail_stack.ports['backend_imap']}"
    settings.MAIL_BACKEND_SMTP = f"127.0.0.1:{mail_stack.ports['xclient']}"
    settings.MAIL_BACKEND_TOKEN = BACKEND_TOKEN
    ApiKey.objects.create(
        name="dovecot-e2e", token_hash=hashlib.sha256(API_TOKEN.encode()).hexdigest()
    )
    mail_stack.sink.messages.clear()
    return mail_stack
