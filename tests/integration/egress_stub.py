"""A public-looking HTTPS upstream for the egress chain tests and benchmark; it records what reaches it.

It knows nothing of bottle: Python's ``http.server`` over TLS, HTTP/1.1
with keep-alive. Every request is answered 200 with a small JSON echo of
its path and Authorization header (so a test can see what came back through
the chain), except ``GET /bytes/<n>``, which sends ``n`` bytes (a download).

Back door: one JSON line per request in ``STUB_LOG`` — method, path (with
the query), the headers as pairs, and the body (latin-1, first 64 KiB).

Run: ``python3 egress_stub.py`` with STUB_CERT, STUB_KEY, STUB_LOG and
optionally STUB_PORT (443). Prints ``stub listening`` when ready.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_LOG_LOCK = threading.Lock()
_CHUNK = b"\0" * (1 << 20)
_BODY_KEPT = 64 * 1024


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body go out as two writes; with Nagle the body waits for a delayed ACK (40 ms).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _record(self, body: bytes) -> None:
        path = os.environ.get("STUB_LOG")
        if not path:
            return
        line = json.dumps({
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": body[:_BODY_KEPT].decode("latin-1"),
        })
        with _LOG_LOCK, open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def _handle(self) -> None:
        body = self._body()
        self._record(body)
        if self.command == "GET" and self.path.startswith("/bytes/"):
            size = int(self.path.split("/")[2].split("?")[0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            left = size
            while left > 0:
                n = min(left, len(_CHUNK))
                self.wfile.write(_CHUNK[:n] if n < len(_CHUNK) else _CHUNK)
                left -= n
            return
        out = json.dumps({"path": self.path, "authorization": self.headers.get("Authorization")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = _handle  # noqa: N815


def main() -> int:
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("STUB_PORT", "443"))), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.environ["STUB_CERT"], os.environ["STUB_KEY"])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print("stub listening", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
