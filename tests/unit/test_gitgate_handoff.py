"""The git gate keeps its credentials out of git http-backend: the CGI environment and the hook's handoff."""

from __future__ import annotations

import io
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bottle.core.gitgate import GateRemote, encode_gate_config
from bottle.sidecars.git_gate import hook
from bottle.sidecars.git_gate.gitcmd import GateSettings, prepare_runtime
from bottle.sidecars.git_gate.handoff import (
    HandoffError,
    HookListener,
    PushRequest,
    Say,
    _relay_answers,
    hand_over,
    request_from_hook,
)
from bottle.sidecars.git_gate.server import cgi_env

TOKEN = "gt-Handoff0Credential1Value2abcdefXYZ"
ORIGIN = GateRemote("origin", "https://git.example.test/org/repo.git", "BOTTLE_GIT_TOKEN_0")


def gate_environ(tmp_path: Path) -> dict[str, str]:
    secrets = tmp_path / "secrets.json"
    secrets.write_text('{"BOTTLE_GIT_TOKEN_1": "gt-FromTheFile0123456789abcdef"}')
    return {
        "BOTTLE_GIT_REMOTES": encode_gate_config([ORIGIN]),
        "BOTTLE_GIT_TOKEN_0": TOKEN,
        "BOTTLE_SECRETS_FILE": str(secrets),
        "BOTTLE_IDENTITY": "agent-abcde",
        "BOTTLE_GIT_ROOT": str(tmp_path / "srv"),
        "BOTTLE_RUNTIME_DIR": str(tmp_path / "run"),
        "BOTTLE_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "BOTTLE_GIT_CREDENTIAL_ENV": "BOTTLE_GIT_TOKEN_0",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/root",
        "GIT_CONFIG_PARAMETERS": "'core.hooksPath'='/tmp/evil'",
    }


# -- what git http-backend (and so receive-pack and the hook) gets ------------------------


def test_the_cgi_environment_holds_no_credential_and_no_bottle_setting(tmp_path: Path) -> None:
    environ = gate_environ(tmp_path)
    settings = GateSettings.from_env(environ)
    assert settings.tokens  # the gate itself holds both tokens
    env = cgi_env(
        settings, environ, method="POST", path_info="/origin.git/git-receive-pack", query="",
        remote_addr="10.0.0.2",
        headers={"Content-Type": "application/x-git-receive-pack-request", "Content-Length": "12",
                 "Proxy": "http://evil.example", "Authorization": f"Basic {TOKEN}", "Git-Protocol": "version=2"},
    )
    assert not [k for k in env if k.startswith("BOTTLE_")]
    for value in settings.tokens.values():
        assert all(value not in v for v in env.values())
    assert str(tmp_path / "secrets.json") not in "".join(env.values())
    assert "HTTP_PROXY" not in env and "HTTP_AUTHORIZATION" not in env and "GIT_CONFIG_PARAMETERS" not in env
    assert env["GIT_PROJECT_ROOT"] == settings.root and env["GIT_HTTP_EXPORT_ALL"] == "1"
    assert env["PATH"] == environ["PATH"] and env["HOME"] == settings.home
    assert env["REQUEST_METHOD"] == "POST" and env["PATH_INFO"] == "/origin.git/git-receive-pack"
    assert env["CONTENT_TYPE"] == "application/x-git-receive-pack-request" and env["CONTENT_LENGTH"] == "12"
    assert env["HTTP_GIT_PROTOCOL"] == "version=2" and env["REMOTE_ADDR"] == "10.0.0.2"


# -- the hook's handoff to the server -----------------------------------------------------------


Listening = tuple[HookListener, list[PushRequest]]


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listening]:
    seen: list[PushRequest] = []

    def handle(request: PushRequest, say: Say) -> int:
        seen.append(request)
        say("checked\n")
        say(f"{len(request.stdin)} bytes of updates\n")
        return 7

    server = HookListener(str(tmp_path / "h.sock"), handle)
    server.start()
    try:
        yield server, seen
    finally:
        server.close()


def test_the_hook_relays_what_the_server_says_and_exits_with_its_code(tmp_path: Path, listener: Listening) -> None:
    server, seen = listener
    assert (os.stat(server.path).st_mode & 0o777) == 0o600
    request = PushRequest("/srv/git/origin.git", {"GIT_QUARANTINE_PATH": "/srv/git/origin.git/objects/incoming-x"},
                          b"a" * 40 + b" " + b"b" * 40 + b" refs/heads/main\n")
    err = io.StringIO()
    assert hand_over(server.path, request, err, timeout=10) == 7
    assert err.getvalue() == "checked\n98 bytes of updates\n"
    assert seen == [request]


def test_concurrent_pushes_are_answered_each_on_its_own(listener: Listening) -> None:
    server, seen = listener
    codes: list[int] = []

    def push(n: int) -> None:
        codes.append(hand_over(server.path, PushRequest(f"/srv/git/r{n}.git"), io.StringIO(), timeout=10))

    threads = [threading.Thread(target=push, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [7] * 5 and sorted(r.git_dir for r in seen) == [f"/srv/git/r{n}.git" for n in range(5)]


def test_no_server_refuses_the_push(tmp_path: Path) -> None:
    err = io.StringIO()
    assert hand_over(str(tmp_path / "nobody.sock"), PushRequest("/srv/git/origin.git"), err, timeout=5) == 1
    assert "push refused: the gate's server did not answer" in err.getvalue()


def test_a_server_that_hangs_up_without_a_verdict_refuses_the_push(tmp_path: Path) -> None:
    path = str(tmp_path / "mute.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)
        sock.listen(1)

        def answer() -> None:
            conn, _ = sock.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b'{"say": "half a story\\n"}\n')

        t = threading.Thread(target=answer)
        t.start()
        err = io.StringIO()
        assert hand_over(path, PushRequest("/srv/git/origin.git"), err, timeout=10) == 1
        t.join()
    assert err.getvalue() == "half a story\nbottle git gate: push refused: the gate's server gave no verdict\n"


@pytest.mark.parametrize(
    "line",
    [
        b"not json\n",
        b'{"git_dir": "relative/origin.git", "stdin": ""}\n',
        b'{"git_dir": "/srv/git/origin.git", "env": {"BOTTLE_GIT_TOKEN_0": "x"}, "stdin": ""}\n',
        b'{"git_dir": "/srv/git/origin.git", "env": {"GIT_DIR": "/elsewhere"}, "stdin": ""}\n',
        b'{"git_dir": "/srv/git/origin.git", "stdin": "***"}\n',
    ],
)
def test_a_malformed_request_is_refused_before_the_handler_runs(line: bytes, listener: Listening) -> None:
    server, seen = listener
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(server.path)
        sock.sendall(line)
        sock.shutdown(socket.SHUT_WR)
        with sock.makefile("rb") as answers:
            err = io.StringIO()
            assert _relay_answers(answers, err) == 1
    assert "push refused" in err.getvalue() and not seen


def test_the_request_round_trips_and_carries_only_quarantine_variables() -> None:
    request = PushRequest("/srv/git/o.git", {"GIT_OBJECT_DIRECTORY": "/srv/git/o.git/objects/incoming-1"}, b"\x00\xffrefs\n")
    assert PushRequest.decode(request.encode()) == request
    with pytest.raises(HandoffError, match="quarantine"):
        PushRequest.decode(b'{"git_dir": "/x", "env": {"PATH": "/tmp/evil"}, "stdin": ""}')


def test_the_hook_sends_absolute_paths_whatever_receive_pack_gave_it() -> None:
    environ = {
        "GIT_DIR": ".",
        "GIT_OBJECT_DIRECTORY": "./objects/incoming-abc",
        "GIT_QUARANTINE_PATH": "/srv/git/o.git/objects/incoming-abc",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES": "./objects:/srv/git/o.git/more",
        "BOTTLE_GIT_TOKEN_0": TOKEN,
        "PATH": "/bin",
    }
    request = request_from_hook(environ, "/srv/git/o.git", b"updates")
    assert request.git_dir == "/srv/git/o.git"
    assert request.env == {
        "GIT_OBJECT_DIRECTORY": "/srv/git/o.git/./objects/incoming-abc",
        "GIT_QUARANTINE_PATH": "/srv/git/o.git/objects/incoming-abc",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES": "/srv/git/o.git/./objects:/srv/git/o.git/more",
    }
    assert TOKEN.encode() not in request.encode()


def test_the_hook_without_its_socket_refuses_the_push() -> None:
    err = io.StringIO()
    assert hook.main([], {}, io.BytesIO(b""), err) == 1
    assert "push refused" in err.getvalue()


# -- the server's side: only the gate's own repositories -----------------------------------------


def test_the_server_answers_only_for_its_own_repositories(tmp_path: Path) -> None:
    settings = GateSettings.from_env(gate_environ(tmp_path))
    prepare_runtime(settings)
    repo = settings.repo(ORIGIN)
    said: list[str] = []
    other = tmp_path / "other" / "origin.git"
    other.mkdir(parents=True)
    assert hook.serve_push(settings, PushRequest(str(other)), {}, said.append) == 1
    assert "not a brokered remote" in said[-1]
    outside = {"GIT_OBJECT_DIRECTORY": str(tmp_path / "elsewhere")}
    assert hook.serve_push(settings, PushRequest(repo, outside), {}, said.append) == 1
    assert "quarantine is outside the repository" in said[-1]
    sneaky = {"GIT_ALTERNATE_OBJECT_DIRECTORIES": f"{repo}/objects:{repo}/../../elsewhere"}
    assert hook.serve_push(settings, PushRequest(repo, sneaky), {}, said.append) == 1
    assert "quarantine is outside the repository" in said[-1]
