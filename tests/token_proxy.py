"""A man in the middle on the token or the userinfo endpoint: forwards the portal's request to
the real stand-in PSC and lets a test alter the ID token or the userinfo in the answer, as an
attacker on the path or a compromised proxy would."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests


class TokenProxy:
    def __init__(self, token_endpoint: str):
        self.token_endpoint = token_endpoint
        self.alter = lambda id_token: id_token
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                upstream = requests.post(
                    proxy.token_endpoint,
                    data=body,
                    timeout=10,
                    headers={"Content-Type": self.headers.get("Content-Type", "")},
                )
                answer = upstream.json()
                if "id_token" in answer:
                    answer["id_token"] = proxy.alter(answer["id_token"])
                payload = json.dumps(answer).encode()
                self.send_response(upstream.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class UserinfoProxy:
    """The userinfo endpoint, with ``alter(claims) -> claims`` applied to its JSON answer."""

    def __init__(self, userinfo_endpoint: str):
        self.userinfo_endpoint = userinfo_endpoint
        self.alter = lambda claims: claims
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                upstream = requests.get(
                    proxy.userinfo_endpoint,
                    timeout=10,
                    headers={"Authorization": self.headers.get("Authorization", "")},
                )
                payload = json.dumps(proxy.alter(upstream.json())).encode()
                self.send_response(upstream.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/me"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
