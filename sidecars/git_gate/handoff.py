"""The pre-receive hook hands each push to the gate's server, the one process that holds the credentials.

``git http-backend`` and everything it runs (``receive-pack``, the hook)
get an environment without a single ``BOTTLE_*`` variable
(``server.cgi_env``): no token, no secrets file, no remote list. So the
hook decides nothing itself. It sends the push — the repository, the
quarantine paths ``receive-pack`` gave it and the ref updates on its stdin —
over a unix socket in the gate's runtime directory to the server process,
which scans it, applies the rules, pushes upstream (``hook.serve_push``)
and streams back what the agent reads and the hook's exit code.

Wire format, one JSON object per line, UTF-8:

    hook -> server   {"git_dir": "/srv/git/origin.git", "env": {"GIT_OBJECT_DIRECTORY": ...}, "stdin": "<base64>"}
    server -> hook   {"say": "text for the agent"} ... then {"exit": 0}

Anything else — no server, a malformed line, a closed connection before
``exit`` — refuses the push (exit 1, one line saying why).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import socket
import socketserver
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO

# What receive-pack hands its hooks so they can read the quarantined objects.
QUARANTINE = ("GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_QUARANTINE_PATH")
# A request carries the ref updates of one push: generous, but bounded.
MAX_REQUEST = 16 << 20
# sockaddr_un.sun_path is 108 bytes on Linux, with the terminating NUL.
MAX_SOCKET_PATH = 107

Say = Callable[[str], None]


class HandoffError(Exception):
    """The hook and the server could not talk; the message is for the agent (no secrets)."""


@dataclass(frozen=True)
class PushRequest:
    """One push as the hook saw it: absolute repository path, quarantine variables, pre-receive stdin."""

    git_dir: str
    env: Mapping[str, str] = field(default_factory=dict)
    stdin: bytes = b""

    def encode(self) -> bytes:
        body = {"git_dir": self.git_dir, "env": dict(self.env), "stdin": base64.b64encode(self.stdin).decode("ascii")}
        return json.dumps(body, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> PushRequest:
        """Parse one request line; ``HandoffError`` says what is wrong."""
        try:
            data = json.loads(line)
        except ValueError:
            raise HandoffError("the hook's request is not JSON") from None
        if not isinstance(data, dict):
            raise HandoffError("the hook's request is not a JSON object")
        git_dir, env, stdin = data.get("git_dir"), data.get("env", {}), data.get("stdin", "")
        if not isinstance(git_dir, str) or not os.path.isabs(git_dir):
            raise HandoffError("the hook's request names no absolute repository path")
        if not isinstance(env, dict) or not all(k in QUARANTINE and isinstance(v, str) for k, v in env.items()):
            raise HandoffError("the hook's request carries variables other than receive-pack's quarantine")
        if not isinstance(stdin, str):
            raise HandoffError("the hook's request has no ref updates")
        try:
            raw = base64.b64decode(stdin, validate=True)
        except (binascii.Error, ValueError):
            raise HandoffError("the hook's ref updates are not base64") from None
        return cls(git_dir, dict(env), raw)


def _absolute_list(value: str, cwd: str) -> str:
    # A quoted entry (one holding a colon) is left as git wrote it.
    return os.pathsep.join(e if not e or e.startswith('"') else os.path.join(cwd, e) for e in value.split(os.pathsep))


def request_from_hook(environ: Mapping[str, str], cwd: str, stdin: bytes) -> PushRequest:
    """The request for the push this hook process runs for; relative paths are made absolute against ``cwd``.

    receive-pack runs the hook with the repository as its working directory
    and may pass relative paths; the server runs in another directory.
    """
    git_dir = os.path.normpath(os.path.join(cwd, environ.get("GIT_DIR", ".")))
    env: dict[str, str] = {}
    for key in QUARANTINE:
        value = environ.get(key)
        if value is None:
            continue
        if key == "GIT_ALTERNATE_OBJECT_DIRECTORIES":
            env[key] = _absolute_list(value, cwd)
        else:
            env[key] = os.path.join(cwd, value) if value else value
    return PushRequest(git_dir, env, stdin)


def check_socket_path(path: str) -> None:
    """``HandoffError`` if ``path`` is too long for a unix socket."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise HandoffError(f"the hook socket path {path} is longer than {MAX_SOCKET_PATH} bytes; use a shorter runtime directory")


# -- the hook's side -------------------------------------------------------------------


def hand_over(socket_path: str, request: PushRequest, err: TextIO, *, timeout: float | None = None) -> int:
    """Send ``request`` to the server at ``socket_path``, copy what it says to ``err``; its exit code, 1 on any failure."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(socket_path)
            sock.sendall(request.encode())
            sock.shutdown(socket.SHUT_WR)
            with sock.makefile("rb") as answers:
                return _relay_answers(answers, err)
    except OSError as exc:
        err.write(f"bottle git gate: push refused: the gate's server did not answer ({exc.strerror or exc})\n")
        err.flush()
        return 1


def _relay_answers(answers: BinaryIO, err: TextIO) -> int:
    for line in answers:
        try:
            message = json.loads(line)
        except ValueError:
            break
        if not isinstance(message, dict):
            break
        if isinstance(message.get("say"), str):
            err.write(message["say"])
            err.flush()
        elif isinstance(message.get("exit"), int) and not isinstance(message["exit"], bool):
            return int(message["exit"])
        else:
            break
    err.write("bottle git gate: push refused: the gate's server gave no verdict\n")
    err.flush()
    return 1


# -- the server's side -------------------------------------------------------------------

Handler = Callable[[PushRequest, Say], int]


class _Connection(socketserver.StreamRequestHandler):
    server: HookListener

    def handle(self) -> None:
        def say(text: str) -> None:
            self._send({"say": text})

        line = self.rfile.readline(MAX_REQUEST + 1)
        try:
            if len(line) > MAX_REQUEST or not line.endswith(b"\n"):
                raise HandoffError("the hook's request is too large or cut short")
            request = PushRequest.decode(line)
        except HandoffError as exc:
            say(f"bottle git gate: push refused: {exc}\n")
            self._send({"exit": 1})
            return
        try:
            code = self.server.handle_push(request, say)
        except Exception as exc:  # noqa: BLE001 - any failure refuses the push, with one line
            say(f"bottle git gate: push refused: internal error ({type(exc).__name__})\n")
            code = 1
        self._send({"exit": code})

    def _send(self, message: dict[str, object]) -> None:
        try:
            self.wfile.write(json.dumps(message).encode() + b"\n")
            self.wfile.flush()
        except OSError:
            pass


class HookListener(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Answers the hooks of concurrent pushes, each in a thread, with ``handle_push(request, say) -> exit code``.

    Binds ``path`` (a stale socket there is replaced; mode 0600) and serves
    from a daemon thread once ``start`` is called; ``close`` stops it and
    removes the socket.
    """

    daemon_threads = True

    def __init__(self, path: str, handle_push: Handler) -> None:
        check_socket_path(path)
        self.path = path
        self.handle_push = handle_push
        if os.path.lexists(path):
            os.unlink(path)
        super().__init__(path, _Connection)
        os.chmod(path, 0o600)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True,
                                        name="git-gate-hooks")
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
        self.server_close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
