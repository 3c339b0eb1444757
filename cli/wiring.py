"""The composition root: which adapter implements each port.

``Container`` is a dependency-injector container. Every provider imports its
adapter only when first called, so importing this module loads no SDK. Swap
any port in a test or an embedding program::

    container = create_container(runtime="docker")
    container.runtime.override(InMemoryRuntime())
    container.secret_source.override(EnvFileSecretSource(environ={...}))
    cli.main(["start", "claude", "--dry-run"], obj=AppState(container=container))

Runtime selection: ``config.runtime`` is ``docker``, ``podman`` or
``memory``; ``resolve_runtime`` fills it from ``--runtime`` /
``BOTTLE_RUNTIME`` or by probing which engine socket answers
(``bottle.core.runtime_choice.choose_runtime`` decides from the probes).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dependency_injector import containers, providers

from bottle.core.runtime_choice import RuntimeChoice, choose_runtime

if TYPE_CHECKING:
    from bottle.ports import Clock, ContainerRuntime, Randomness, SecretSource, StateStore

DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"
ROOTFUL_PODMAN_SOCKET = "/run/podman/podman.sock"
PROBE_TIMEOUT = 0.5


# -- lazy factories: the SDK import happens on first call ------------------


def _docker_runtime(base_url: str | None) -> Iterator[ContainerRuntime]:
    from bottle.adapters.docker import DockerRuntime  # noqa: PLC0415

    runtime = DockerRuntime(base_url=base_url)
    try:
        yield runtime
    finally:
        runtime.close()


def _podman_runtime(base_url: str | None, rootless: bool | None) -> Iterator[ContainerRuntime]:
    from bottle.adapters.podman import PodmanRuntime  # noqa: PLC0415

    runtime = PodmanRuntime(base_url=base_url, rootless=rootless)
    try:
        yield runtime
    finally:
        runtime.close()


def _memory_runtime() -> ContainerRuntime:
    from bottle.adapters.memory import InMemoryRuntime  # noqa: PLC0415

    return InMemoryRuntime()


def _state_store(root: str | None) -> StateStore:
    from bottle.adapters.local import LocalStateStore  # noqa: PLC0415

    return LocalStateStore(root)


def _clock() -> Clock:
    from bottle.adapters.local import SystemClock  # noqa: PLC0415

    return SystemClock()


def _randomness() -> Randomness:
    from bottle.adapters.local import SystemRandomness  # noqa: PLC0415

    return SystemRandomness()


def _secret_source() -> SecretSource:
    from bottle.adapters.local import EnvFileSecretSource  # noqa: PLC0415

    return EnvFileSecretSource()


class Container(containers.DeclarativeContainer):
    """Providers of every port. ``config``: ``runtime``, ``docker.base_url``,
    ``podman.base_url``, ``podman.rootless``, ``state_root``."""

    config = providers.Configuration()

    runtime = providers.Selector(
        config.runtime,
        docker=providers.Resource(_docker_runtime, base_url=config.docker.base_url),
        podman=providers.Resource(
            _podman_runtime, base_url=config.podman.base_url, rootless=config.podman.rootless
        ),
        memory=providers.Singleton(_memory_runtime),
    )
    state_store = providers.Singleton(_state_store, root=config.state_root)
    clock = providers.Singleton(_clock)
    randomness = providers.Singleton(_randomness)
    secret_source = providers.Singleton(_secret_source)


def create_container(**config: object) -> Container:
    """A ``Container`` with the real adapters and ``config`` applied."""
    container = Container()
    container.config.from_dict(
        {"runtime": None, "docker": {"base_url": None}, "podman": {"base_url": None, "rootless": None},
         "state_root": None, **config}
    )
    return container


# -- engine detection -------------------------------------------------------


@dataclass(frozen=True)
class EngineProbe:
    """One engine socket and whether it answered ``GET /_ping``."""

    runtime: str
    url: str
    rootless: bool
    answers: bool


def _unix_path(url: str | None) -> str | None:
    if url and url.startswith("unix://"):
        return url[len("unix://"):]
    return None


def _ping(path: str, timeout: float = PROBE_TIMEOUT) -> bool:
    import socket  # noqa: PLC0415

    if not os.path.exists(path):
        return False
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: localhost\r\n\r\n")
        head = sock.recv(32)
    except OSError:
        return False
    finally:
        sock.close()
    return head.startswith(b"HTTP/1.") and head[8:13].strip().startswith(b"200")


def engine_sockets(environ: Mapping[str, str]) -> list[tuple[str, str, bool]]:
    """Candidate (runtime, unix socket path, rootless) in the order they are tried."""
    candidates: list[tuple[str, str, bool]] = []
    docker = _unix_path(environ.get("DOCKER_HOST")) or DEFAULT_DOCKER_SOCKET
    candidates.append(("docker", docker, False))
    container_host = _unix_path(environ.get("CONTAINER_HOST"))
    if container_host:
        candidates.append(("podman", container_host, os.geteuid() != 0))
    runtime_dir = environ.get("XDG_RUNTIME_DIR")
    if os.geteuid() != 0 and runtime_dir:
        candidates.append(("podman", os.path.join(runtime_dir, "podman", "podman.sock"), True))
    candidates.append(("podman", ROOTFUL_PODMAN_SOCKET, False))
    return candidates


def probe_engines(environ: Mapping[str, str] | None = None) -> list[EngineProbe]:
    """Ping every candidate engine socket (see ``engine_sockets``)."""
    env = os.environ if environ is None else environ
    return [
        EngineProbe(runtime, f"unix://{path}", rootless, _ping(path))
        for runtime, path, rootless in engine_sockets(env)
    ]


def resolve_runtime(container: Container, requested: str | None) -> RuntimeChoice:
    """Decide the runtime, record it (and the socket that answered) in ``container.config``.

    A runtime already set in the config (a test, an embedding program) wins.
    Without ``requested`` the engines are probed; nothing is imported.
    """
    configured = container.config.runtime()
    if configured:
        return RuntimeChoice(configured, "set by the program that embeds bottle", True)
    if requested:
        choice = choose_runtime(requested, {})
    else:
        probes = probe_engines()
        answering: dict[str, bool] = {}
        for probe in probes:
            answering[probe.runtime] = answering.get(probe.runtime, False) or probe.answers
        choice = choose_runtime(None, answering)
        chosen = next((p for p in probes if p.runtime == choice.name and p.answers), None)
        if chosen is not None and chosen.runtime == "podman":
            container.config.podman.base_url.from_value(chosen.url)
            container.config.podman.rootless.from_value(chosen.rootless)
    container.config.runtime.from_value(choice.name)
    return choice
