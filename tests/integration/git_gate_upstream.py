"""A git host for tests: smart HTTP over TLS with basic auth, serving bare repositories.

It plays the public host (GitHub, GitLab) that a brokered remote points at.
It knows nothing of bottle: ``git http-backend`` as a CGI program behind
Python's ``http.server`` with ``ssl``, so it is independent of the gate it
tests. Every request is checked against one user and password; pushes and
fetches need them (``info/refs`` of either service and both RPCs).

Back door for tests: one JSON line per request in ``UPSTREAM_LOG`` —
method, path, service, the user name presented, whether the password was
the right one, the HTTP status. The password itself is never logged.

Run: ``python3 git_gate_upstream.py`` with UPSTREAM_ROOT (directory of
bare repos), UPSTREAM_PORT, UPSTREAM_CERT, UPSTREAM_KEY, UPSTREAM_USER,
UPSTREAM_PASSWORD, UPSTREAM_LOG. Prints ``upstream listening`` when ready.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

_LOG_LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _record(self, status: int, user: str, auth_ok: bool) -> None:
        path, _, query = self.path.partition("?")
        service = parse_qs(query).get("service", [""])[0] or path.rsplit("/", 1)[-1]
        line = json.dumps({"method": self.command, "path": path, "service": service, "user": user,
                           "auth_ok": auth_ok, "status": status})
        with _LOG_LOCK, open(os.environ["UPSTREAM_LOG"], "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _auth(self) -> tuple[str, bool]:
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return "", False
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return "", False
        ok = hmac.compare_digest(user, os.environ["UPSTREAM_USER"]) and hmac.compare_digest(
            password, os.environ["UPSTREAM_PASSWORD"]
        )
        return user, ok

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        body = self._body() if self.command == "POST" else b""
        user, ok = self._auth()
        if not ok:
            self._record(401, user, False)
            self._reply(401, b"authentication required\n", {"WWW-Authenticate": 'Basic realm="upstream"'})
            return
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": os.environ["UPSTREAM_ROOT"],
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REMOTE_USER": user,
            "REMOTE_ADDR": self.client_address[0],
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
        }
        for name in ("Git-Protocol", "Content-Encoding"):
            if self.headers.get(name):
                env["HTTP_" + name.upper().replace("-", "_")] = self.headers[name]
        result = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False)
        out = result.stdout
        sep = out.find(b"\r\n\r\n")
        skip = 4
        if sep < 0:
            sep, skip = out.find(b"\n\n"), 2
        status, headers = 200, {}
        for line in out[:max(sep, 0)].decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key.strip():
                headers[key.strip()] = value.strip()
        self._record(status, user, True)
        self._reply(status, out[sep + skip:] if sep >= 0 else b"", headers)

    def do_GET(self) -> None:  # noqa: N802
        self._handle()

    def do_POST(self) -> None:  # noqa: N802
        self._handle()


def main() -> int:
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("UPSTREAM_PORT", "443"))), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.environ["UPSTREAM_CERT"], os.environ["UPSTREAM_KEY"])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print("upstream listening", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
