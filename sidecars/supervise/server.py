"""The supervise sidecar's server: proposals over plain HTTP and over MCP (streamable HTTP).

Runs on the bottle's internal network only (no way out, none needed). The
agent files proposals; this server validates them with the same rules the
host applies (``bottle.core.proposals``), writes each as a filing into its
queue mount and reports the host's decisions, which it reads from a
read-only mount. It can never decide anything itself.

HTTP API (JSON in and out; errors are ``{"error": ..., "hint": ...}``):

    POST /proposals               {"kind": "allow-host", "host": ..., "reason": ...}
                                  {"kind": "add-route", "upstream": ..., "token_ref": ...,
                                   "auth_scheme": "bearer", "reason": ...}
                                  {"kind": "capability-change", "dockerfile": ..., "reason": ...}
                                  -> 201 and the proposal
    GET  /proposals               -> this bottle's proposals
    GET  /proposals/<id>          -> one proposal (404 if unknown)
    GET  /proposals/<id>/wait?timeout=S
                                  -> the proposal once it is no longer pending,
                                     or as it is after S seconds (at most 300)
    GET  /client.py               -> a stdlib-only command-line client
    GET  /healthz                 -> {"ok": true}
    POST /mcp                     MCP JSON-RPC: initialize, tools/list, tools/call, ping

Environment: ``BOTTLE_IDENTITY``, ``BOTTLE_SUPERVISE_QUEUE`` (default
``/run/supervise/queue``), ``BOTTLE_SUPERVISE_DECISIONS`` (default
``/run/supervise/decisions``), ``BOTTLE_LISTEN_PORT`` (default 8080).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from bottle.sidecars.supervise.queue import FilingQueue
from bottle.core.proposals import MAX_FILING_BYTES, Proposal, ProposalRefused, payload_from_request
from bottle.sidecars.supervise import mcp

DEFAULT_QUEUE = "/run/supervise/queue"
DEFAULT_DECISIONS = "/run/supervise/decisions"
MAX_WAIT_SECONDS = 300.0
WAIT_POLL_SECONDS = 0.05
MAX_BODY = MAX_FILING_BYTES + 16 * 1024
CLIENT_SCRIPT = Path(__file__).with_name("client.py")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def proposal_json(proposal: Proposal) -> dict[str, Any]:
    """The JSON shape of a proposal in every answer (with ``ref``)."""
    data: dict[str, Any] = msgspec.to_builtins(proposal)
    data["ref"] = proposal.ref
    return data


class SuperviseService:
    """What both front ends (HTTP, MCP) call: file, look up, wait."""

    def __init__(self, queue: FilingQueue, clock: Callable[[], datetime] = _utcnow) -> None:
        self.queue = queue
        self.clock = clock
        self._lock = threading.Lock()

    def file(self, body: dict[str, Any]) -> Proposal:
        """File a proposal from a request body; ``ProposalRefused`` says what is wrong with it."""
        reason, payload = payload_from_request(body)
        with self._lock:
            proposal = self.queue.file(reason, payload, self.clock())
        print(f"bottle supervise: filed proposal {proposal.id}: {proposal.describe()}", file=sys.stderr, flush=True)
        return proposal

    def get(self, proposal_id: int) -> Proposal:
        proposal = self.queue.get(proposal_id)
        if proposal is None:
            raise LookupError(f"this bottle has no proposal {proposal_id}")
        return proposal

    def list(self) -> list[Proposal]:
        return self.queue.list()

    def wait(self, proposal_id: int, timeout: float) -> Proposal:
        """The proposal once the host decided it (status not pending), or as it is when ``timeout`` runs out."""
        deadline = time.monotonic() + max(0.0, min(timeout, MAX_WAIT_SECONDS))
        while True:
            proposal = self.get(proposal_id)
            if proposal.status not in ("pending", "approved") or time.monotonic() >= deadline:
                return proposal
            time.sleep(WAIT_POLL_SECONDS)


def _parse_id(text: str) -> int:
    if not text.isdigit() or len(text) > 6:
        raise LookupError(f"{text!r} is not a proposal id")
    return int(text)


class SuperviseHandler(BaseHTTPRequestHandler):
    server_version = "bottle-supervise/1"
    protocol_version = "HTTP/1.1"
    service: SuperviseService

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # filings are logged by the service; requests are not interesting

    # -- plumbing ----------------------------------------------------------------
    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None, *, raw: bytes | None = None,
              content_type: str = "application/json") -> None:
        data = raw if raw is not None else (json.dumps(body, indent=2) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, message: str, hint: str | None = None) -> None:
        body = {"error": message}
        if hint:
            body["hint"] = hint
        self._send(status, body)

    def _body(self) -> Any:
        length_text = self.headers.get("Content-Length", "")
        if not length_text.isdigit():
            raise ValueError("a JSON body with Content-Length is required")
        length = int(length_text)
        if length > MAX_BODY:
            raise OverflowError(f"the body is {length} bytes; at most {MAX_BODY} are accepted")
        raw = self.rfile.read(length)
        try:
            return json.loads(raw or b"null")
        except ValueError as exc:
            raise ValueError(f"the body is not JSON: {exc}") from None

    # -- routes ------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        try:
            if parts == ["healthz"]:
                self._send(200, {"ok": True})
            elif parts == ["client.py"]:
                self._send(200, None, raw=CLIENT_SCRIPT.read_bytes(), content_type="text/x-python; charset=utf-8")
            elif parts == ["proposals"]:
                self._send(200, [proposal_json(p) for p in self.service.list()])
            elif len(parts) == 2 and parts[0] == "proposals":
                self._send(200, proposal_json(self.service.get(_parse_id(parts[1]))))
            elif len(parts) == 3 and parts[0] == "proposals" and parts[2] == "wait":
                query = parse_qs(url.query)
                try:
                    timeout = float(query.get("timeout", ["30"])[0])
                except ValueError:
                    timeout = 30.0
                self._send(200, proposal_json(self.service.wait(_parse_id(parts[1]), timeout)))
            elif parts == ["mcp"]:
                # No server-initiated stream: every answer comes with its request.
                self._send(405, {"error": "GET /mcp opens no stream here; POST JSON-RPC requests"}, {"Allow": "POST"})
            else:
                self._error(404, f"no such path {url.path}", "see GET /client.py, or POST /proposals")
        except LookupError as exc:
            self._error(404, str(exc), "GET /proposals lists this bottle's proposals")

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path.rstrip("/")
        try:
            body = self._body()
        except OverflowError as exc:
            self._error(413, str(exc))
            return
        except ValueError as exc:
            if path == "/mcp":
                self._send(400, mcp.error_response(None, mcp.PARSE_ERROR, str(exc)))
            else:
                self._error(400, str(exc))
            return
        if path == "/proposals":
            try:
                proposal = self.service.file(body)
            except ProposalRefused as exc:
                self._error(400, exc.message, exc.hint)
                return
            self._send(201, proposal_json(proposal), {"Location": f"/proposals/{proposal.id}"})
        elif path == "/mcp":
            answer, headers = mcp.handle(self.service, body, self.headers.get("Mcp-Session-Id"))
            if answer is None:
                self._send(202, None, headers, raw=b"")
            else:
                self._send(200, answer, headers)
        else:
            self._error(404, f"no such path {path}", "POST /proposals or POST /mcp")


def make_server(service: SuperviseService, host: str = "0.0.0.0", port: int = 8080) -> ThreadingHTTPServer:
    """An HTTP server for ``service`` (not started; call ``serve_forever``)."""
    handler = type("Handler", (SuperviseHandler,), {"service": service})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(environ: dict[str, str] | None = None) -> int:
    env = environ if environ is not None else dict(os.environ)
    identity = env.get("BOTTLE_IDENTITY", "")
    port_text = env.get("BOTTLE_LISTEN_PORT") or "8080"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        print(f"bottle supervise: cannot start: BOTTLE_LISTEN_PORT={port_text!r} is not a port", file=sys.stderr)
        return 2
    from bottle.core.identity import is_identity  # noqa: PLC0415

    if not is_identity(identity):
        print(f"bottle supervise: cannot start: BOTTLE_IDENTITY={identity!r} is not a bottle identity", file=sys.stderr)
        return 2
    queue_dir = env.get("BOTTLE_SUPERVISE_QUEUE") or DEFAULT_QUEUE
    decisions = env.get("BOTTLE_SUPERVISE_DECISIONS") or DEFAULT_DECISIONS
    if not os.access(queue_dir, os.W_OK):
        print(f"bottle supervise: cannot start: the queue {queue_dir} is not writable", file=sys.stderr)
        return 2
    service = SuperviseService(FilingQueue(queue_dir, decisions, identity))
    server = make_server(service, port=int(port_text))
    print(f"bottle supervise: listening on :{port_text} for {identity}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
