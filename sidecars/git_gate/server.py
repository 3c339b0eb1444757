"""The gate's smart-HTTP server: ``git http-backend`` behind a small threaded HTTP server.

Serves ``/<remote>.git/info/refs``, ``/<remote>.git/git-upload-pack`` and
``/<remote>.git/git-receive-pack`` for each brokered remote, and
``/healthz``. Nothing else: no dumb protocol, no other paths.

Every conversation starts with ``GET info/refs``; that is when the gate
refreshes its copy from the upstream (fetch and push alike), so the agent
always sees the upstream's current refs and a push is checked against
them. If the upstream cannot be reached the request fails with 502 and a
one-line reason the agent's git prints.

``git http-backend`` runs as a CGI program with an environment built from
scratch (``cgi_env``): ``PATH`` and the locale, an empty ``HOME``, the
repositories' root and the CGI variables; of the request's headers only the
few git needs are passed on (never ``Proxy``: "httpoxy"). No ``BOTTLE_*``
variable reaches it, so neither it nor anything it runs (receive-pack, the
pre-receive hook) holds a token or is told where the secrets file is: the hook hands each
push back to this process over a unix socket (``handoff.HookListener``),
and the push is decided and sent upstream here (``hook.serve_push``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import BinaryIO
from urllib.parse import parse_qs

from bottle.core.gitgate import HEALTH_PATH, GateRemote, parse_gate_path
from bottle.core.secretscan import SecretScanner
from bottle.sidecars.git_gate.gitcmd import GateError, GateSettings, audit, local_env, refresh
from bottle.sidecars.git_gate.handoff import HandoffError, HookListener, PushRequest, Say
from bottle.sidecars.git_gate.hook import serve_push

SERVICES = ("git-upload-pack", "git-receive-pack")
_PASS_HEADERS = ("Content-Type", "Content-Encoding", "Git-Protocol", "Accept", "User-Agent")
_CHUNK = 64 * 1024


def cgi_env(
    settings: GateSettings,
    inherit: Mapping[str, str],
    *,
    method: str,
    path_info: str,
    query: str,
    remote_addr: str,
    headers: Mapping[str, str] | Message,
) -> dict[str, str]:
    """The environment of ``git http-backend`` for one request: git's own, the CGI variables, no credential.

    From ``inherit`` (the gate's environment) only ``PATH``, the locale and
    Python's search path are kept (``gitcmd.local_env``); never a
    ``BOTTLE_*`` variable. Of ``headers`` only ``_PASS_HEADERS`` are passed.
    """
    env = local_env(settings, inherit)
    env.update(
        GIT_PROJECT_ROOT=settings.root,
        GIT_HTTP_EXPORT_ALL="1",
        GATEWAY_INTERFACE="CGI/1.1",
        SERVER_PROTOCOL="HTTP/1.1",
        REQUEST_METHOD=method,
        PATH_INFO=path_info,
        QUERY_STRING=query,
        REMOTE_ADDR=remote_addr,
        REMOTE_USER="agent",
    )
    length = headers.get("Content-Length")
    if length is not None:
        env["CONTENT_LENGTH"] = length
    for name in _PASS_HEADERS:
        value = headers.get(name)
        if value is not None:
            key = "CONTENT_TYPE" if name == "Content-Type" else "HTTP_" + name.upper().replace("-", "_")
            env[key] = value
    return env


class GateHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], settings: GateSettings, environ: Mapping[str, str]) -> None:
        self.settings = settings
        self.environ = dict(environ)
        self.scanner: SecretScanner = settings.scanner()
        self._locks: dict[str, threading.Lock] = {r.name: threading.Lock() for r in settings.config.remotes}
        try:
            self.hooks = HookListener(settings.hook_socket, self.answer_hook)
        except (HandoffError, OSError) as exc:
            raise GateError(f"cannot listen for the push hook at {settings.hook_socket}: {exc}") from None
        try:
            super().__init__(address, GateHandler)
        except BaseException:
            self.hooks.close()
            raise
        self.hooks.start()

    def answer_hook(self, request: PushRequest, say: Say) -> int:
        return serve_push(self.settings, request, self.environ, say)

    def server_close(self) -> None:
        super().server_close()
        self.hooks.close()

    def refresh(self, remote: GateRemote) -> None:
        with self._locks[remote.name]:
            refresh(self.settings, remote, self.scanner)


class GateHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: GateHTTPServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        sys.stderr.write(f"git-gate: {self.address_string()} {format % args}\n")

    # -- responses -------------------------------------------------------
    def _text(self, status: int, text: str) -> None:
        body = self.server.scanner.redact(text).encode("utf-8", "replace")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(body)

    # -- routing -----------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def do_HEAD(self) -> None:  # noqa: N802
        self._text(HTTPStatus.METHOD_NOT_ALLOWED, "bottle git gate: smart HTTP only\n")

    def do_PUT(self) -> None:  # noqa: N802
        self._text(HTTPStatus.METHOD_NOT_ALLOWED, "bottle git gate: smart HTTP only\n")

    def _route(self, method: str) -> None:
        path, _, query = self.path.partition("?")
        if path == HEALTH_PATH and method == "GET":
            self._text(HTTPStatus.OK, "ok\n")
            return
        parsed = parse_gate_path(path)
        names = ", ".join(self.server.settings.config.names()) or "(none)"
        if parsed is None:
            self._text(HTTPStatus.NOT_FOUND, f"bottle git gate: not a brokered repository path; brokered remotes: {names}\n")
            return
        name, service = parsed
        remote = self.server.settings.config.remote(name)
        if remote is None:
            self._text(HTTPStatus.NOT_FOUND, f"bottle git gate: no brokered remote named {name!r}; brokered remotes: {names}\n")
            return
        if service == "info/refs":
            wanted = parse_qs(query).get("service", [""])[0]
            if method != "GET" or wanted not in SERVICES:
                self._text(HTTPStatus.FORBIDDEN, "bottle git gate: smart HTTP only (git 1.6.6 or later)\n")
                return
            try:
                self.server.refresh(remote)
            except GateError as exc:
                self._audit_fetch(remote, False, "upstream-unreachable", str(exc))
                self._text(HTTPStatus.BAD_GATEWAY, f"bottle git gate: {exc}\n")
                return
            if wanted == "git-upload-pack":
                self._audit_fetch(remote, True, "ok", "refreshed from upstream")
        elif method != "POST":
            self._text(HTTPStatus.METHOD_NOT_ALLOWED, f"bottle git gate: {service} takes POST\n")
            return
        self._cgi(method, f"/{name}.git/{service}", query)

    def _audit_fetch(self, remote: GateRemote, allow: bool, rule: str, reason: str) -> None:
        audit(self.server.settings, self.server.scanner, event="fetch", remote=remote, allow=allow, rule=rule, reason=reason)

    # -- the CGI program -------------------------------------------------------
    def _cgi_env(self, method: str, path_info: str, query: str) -> dict[str, str]:
        return cgi_env(
            self.server.settings, self.server.environ, method=method, path_info=path_info, query=query,
            remote_addr=self.client_address[0], headers=self.headers,
        )

    def _feed(self, stdin: BinaryIO) -> None:
        """Copy the request body (Content-Length or chunked) into the CGI program, then close its stdin."""
        try:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                while True:
                    size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    remaining = size
                    while remaining:
                        data = self.rfile.read(min(remaining, _CHUNK))
                        if not data:
                            return
                        stdin.write(data)
                        remaining -= len(data)
                    self.rfile.readline()
            else:
                remaining = int(self.headers.get("Content-Length") or 0)
                while remaining > 0:
                    data = self.rfile.read(min(remaining, _CHUNK))
                    if not data:
                        return
                    stdin.write(data)
                    remaining -= len(data)
        except (OSError, ValueError):
            pass
        finally:
            try:
                stdin.close()
            except OSError:
                pass

    def _cgi(self, method: str, path_info: str, query: str) -> None:
        env = self._cgi_env(method, path_info, query)
        proc = subprocess.Popen(
            ["git", "http-backend"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        feeder = threading.Thread(target=self._feed, args=(proc.stdin,), daemon=True)
        feeder.start()
        errors = threading.Thread(target=self._drain_stderr, args=(proc.stderr,), daemon=True)
        errors.start()
        try:
            self._relay(proc.stdout)
        except (BrokenPipeError, ConnectionResetError):
            proc.kill()
        finally:
            feeder.join(timeout=5)
            proc.stdout.close()
            proc.wait()
            errors.join(timeout=5)
        if self.headers.get("Connection", "").lower() == "close":
            self.close_connection = True

    def _drain_stderr(self, stream: BinaryIO) -> None:
        for line in stream:
            text = self.server.scanner.redact(line.decode("utf-8", "replace").rstrip())
            if text:
                sys.stderr.write(f"git-gate: http-backend: {text}\n")

    def _relay(self, out: BinaryIO) -> None:
        """Turn the CGI program's output (headers, blank line, body) into a chunked HTTP response."""
        head = b""
        while b"\r\n\r\n" not in head and b"\n\n" not in head:
            data = os.read(out.fileno(), _CHUNK)
            if not data:
                break
            head += data
        sep = min((i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0), default=-1)
        if sep < 0:
            self._text(HTTPStatus.BAD_GATEWAY, "bottle git gate: git http-backend gave no answer\n")
            return
        body_start = sep + (4 if head[sep:sep + 4] == b"\r\n\r\n" else 2)
        status, headers = 200, []
        for line in head[:sep].decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split(" ", 1)[0])
            elif key.strip():
                headers.append((key.strip(), value.strip()))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        first = head[body_start:]
        if first:
            self._chunk(first)
        while True:
            data = os.read(out.fileno(), _CHUNK)
            if not data:
                break
            self._chunk(data)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


def serve(settings: GateSettings, environ: Mapping[str, str], host: str = "0.0.0.0") -> GateHTTPServer:
    """A server bound to ``settings.listen_port`` (not yet serving; call ``serve_forever``).

    Its hook listener (``settings.hook_socket``) already answers; ``server_close``
    stops both. ``GateError`` if the socket cannot be bound.
    """
    return GateHTTPServer((host, settings.listen_port), settings, environ)
