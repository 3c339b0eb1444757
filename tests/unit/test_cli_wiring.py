"""The composition root and engine detection."""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path

import pytest

from bottle.cli.wiring import create_container, engine_sockets, probe_engines, resolve_runtime
from bottle.core.runtime_choice import RuntimeChoice, choose_runtime


# -- the decision (core) ----------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "answering", "expected"),
    [
        ("podman", {"docker": True}, "podman"),
        ("docker", {}, "docker"),
        (None, {"docker": True, "podman": True}, "docker"),
        (None, {"docker": False, "podman": True}, "podman"),
        (None, {}, "docker"),
    ],
)
def test_choose_runtime(requested: str | None, answering: dict[str, bool], expected: str) -> None:
    assert choose_runtime(requested, answering).name == expected


def test_nothing_answering_is_reported() -> None:
    choice = choose_runtime(None, {"docker": False, "podman": False})
    assert choice == RuntimeChoice("docker", "no engine answered; docker is the default", False)


def test_unknown_runtime_is_refused() -> None:
    with pytest.raises(ValueError):
        choose_runtime("lxc", {})


# -- probing (cli) ----------------------------------------------------------


def serve_once(path: str, reply: bytes) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        conn.recv(1024)
        conn.sendall(reply)
        conn.close()
        server.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return thread


def test_probe_pings_the_docker_socket_named_by_docker_host(tmp_path: Path) -> None:
    sock = str(tmp_path / "d.sock")
    thread = serve_once(sock, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
    env = {"DOCKER_HOST": f"unix://{sock}", "CONTAINER_HOST": f"unix://{tmp_path / 'none.sock'}"}
    probes = probe_engines(env)
    thread.join(5)
    assert probes[0].runtime == "docker" and probes[0].url == f"unix://{sock}" and probes[0].answers
    assert probes[1].runtime == "podman" and not probes[1].answers


def test_a_socket_that_answers_an_error_does_not_count(tmp_path: Path) -> None:
    sock = str(tmp_path / "d.sock")
    thread = serve_once(sock, b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    assert not probe_engines({"DOCKER_HOST": f"unix://{sock}"})[0].answers
    thread.join(5)


def test_rootless_podman_socket_is_a_candidate_for_ordinary_users() -> None:
    candidates = engine_sockets({"XDG_RUNTIME_DIR": "/run/user/1001"})
    if os.geteuid() == 0:
        assert ("podman", "/run/user/1001/podman/podman.sock", True) not in candidates
    else:
        assert ("podman", "/run/user/1001/podman/podman.sock", True) in candidates
    assert candidates[-1] == ("podman", "/run/podman/podman.sock", False)
    assert candidates[0] == ("docker", "/var/run/docker.sock", False)


def test_resolve_runtime_records_the_choice_in_the_config() -> None:
    container = create_container()
    assert resolve_runtime(container, "podman").name == "podman"
    assert container.config.runtime() == "podman"


def test_a_runtime_set_by_an_embedding_program_wins() -> None:
    container = create_container(runtime="memory")
    assert resolve_runtime(container, "docker").name == "memory"


# -- the container ----------------------------------------------------------


class FakeRuntime:
    name = "fake"

    def close(self) -> None:
        pass


def test_every_port_can_be_overridden() -> None:
    container = create_container(runtime="docker")
    fake = FakeRuntime()
    container.runtime.override(fake)
    assert container.runtime() is fake
    for provider in ("state_store", "clock", "randomness", "secret_source"):
        sentinel = object()
        getattr(container, provider).override(sentinel)
        assert getattr(container, provider)() is sentinel


def test_local_adapters_are_the_defaults(tmp_path: Path) -> None:
    container = create_container(state_root=str(tmp_path))
    from bottle.adapters.local import EnvFileSecretSource, LocalStateStore, SystemClock, SystemRandomness

    assert isinstance(container.state_store(), LocalStateStore)
    assert container.state_store().root == str(tmp_path)
    assert isinstance(container.clock(), SystemClock)
    assert isinstance(container.randomness(), SystemRandomness)
    assert isinstance(container.secret_source(), EnvFileSecretSource)


def test_the_selector_picks_the_adapter_by_name() -> None:
    pytest.importorskip("bottle.adapters.memory", reason="the in-memory runtime lands with the adapters")
    from bottle.adapters import memory

    if not hasattr(memory, "InMemoryRuntime"):
        pytest.skip("InMemoryRuntime not written yet")
    container = create_container(runtime="memory")
    assert type(container.runtime()).__name__ == "InMemoryRuntime"


def test_creating_the_container_imports_no_sdk() -> None:
    import subprocess

    # the factories import their adapter inside; nothing SDK-shaped is loaded by wiring itself
    code = (
        "import sys; from bottle.cli.wiring import create_container; c = create_container(runtime='docker'); "
        "c.secret_source(); c.state_store(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('docker', 'podman')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
