"""A man in the middle on the token or the userinfo endpoint: forwards the portal's request to
the real stand-in PSC and lets a test alter the ID token or the userinfo in the answer, as an
attacker on the path or a compromised proxy would."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
