"""A man in the middle on the token or the userinfo endpoint: forwards the portal's request to
the real stand-in PSC and lets a test alter the ID token or the userinfo in the answer, as an
attacker on the path or a compromised proxy would. And PSC's mTLS front (MutualTLSProxy)."""

import json
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl

import requests


class _Proxy:
    """A local HTTP server whose ``forward(handler)`` returns (status, JSON answer)."""

    path = "/"

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.alter = lambda value: value
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self._reply(*proxy.forward(self))

            do_POST = do_GET

            def _reply(self, status: int, answer: dict):
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}{self.path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def forward(self, handler) -> tuple[int, dict]:
        raise NotImplementedError

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class TokenProxy(_Proxy):
    """The token endpoint, with ``alter(id_token) -> id_token`` applied to its answer."""

    path = "/token"

    def forward(self, handler):
        body = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
        upstream = requests.post(
            self.upstream,
            data=body,
            timeout=10,
            headers={"Content-Type": handler.headers.get("Content-Type", "")},
        )
        answer = upstream.json()
        if "id_token" in answer:
            answer["id_token"] = self.alter(answer["id_token"])
        return upstream.status_code, answer


class UserinfoProxy(_Proxy):
    """The userinfo endpoint, with ``alter(claims) -> claims`` applied to its JSON answer."""

    path = "/me"

    def forward(self, handler):
        upstream = requests.get(
            self.upstream,
            timeout=10,
            headers={"Authorization": handler.headers.get("Authorization", "")},
        )
        return upstream.status_code, self.alter(upstream.json())


def make_test_pki(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, with openssl."""

    def run(*arguments):
        subprocess.run(["openssl", *arguments], cwd=folder, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=Test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    for name, extension in [("server", "subjectAltName=IP:127.0.0.1"), ("client", "")]:
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN=portal-{name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
        )
        (folder / f"{name}.ext").write_text(extension + "\n")
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            f"{name}.crt",
            "-extfile",
            f"{name}.ext",
        )
    names = ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")
    return {name: folder / name for name in names}


class MutualTLSProxy(_Proxy):
    """PSC's token and userinfo endpoints as the Espace de Confiance serves them: over TLS
    that requires a client certificate of the CA. Forwards to the stand-in (adding the client
    secret that the certificate replaces) and records who presented a certificate where."""

    def __init__(self, issuer: str, pki: dict[str, Path], client_secret: str):
        self.issuer, self.client_secret = issuer, client_secret
        self.presented: list[tuple[str, str]] = []  # (path, the certificate's CN)
        super().__init__(issuer)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki["server.crt"], pki["server.key"])
        context.load_verify_locations(pki["ca.crt"])
        context.verify_mode = ssl.CERT_REQUIRED
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_port}"

    def forward(self, handler):
        subject = dict(field[0] for field in handler.connection.getpeercert()["subject"])
        self.presented.append((handler.path.split("?")[0], subject["commonName"]))
        if handler.command == "POST":
            body = handler.rfile.read(int(handler.headers.get("Content-Length", 0))).decode()
            form = {**dict(parse_qsl(body)), "client_secret": self.client_secret}
            upstream = requests.post(self.issuer + handler.path, data=form, timeout=10)
        else:
            headers = {"Authorization": handler.headers.get("Authorization", "")}
            upstream = requests.get(self.issuer + handler.path, headers=headers, timeout=10)
        return upstream.status_code, upstream.json()
