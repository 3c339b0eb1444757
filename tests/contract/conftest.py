"""One ``runtime`` fixture, parametrized over every adapter; the suite runs unchanged on each.

Select engines with markers: ``-m docker``, ``-m "podman or podman_rootless"``,
``-m "not engine"`` (the in-memory double only).

An engine that does not answer fails every test in CI (``CI=true`` or
``BOTTLE_REQUIRE_ENGINES=1``); elsewhere its tests skip with the reason.
Everything a test creates carries this session's ``io.bottle.test-run``
label and the test's own label; each test's finalizer removes its own
through the adapter, and the last test per runtime checks through the raw
SDK that nothing with the session label is left.
"""

from __future__ import annotations

import itertools
import os
import pwd
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from bottle.adapters.memory.runtime import InMemoryRuntime
from bottle.ports.errors import EngineError, RuntimeFailure
from bottle.ports.runtime import ContainerRuntime, ContainerSpec
from contract_support import (
    BASE_IMAGE,
    CASE_LABEL,
    RUN_ID,
    RUN_LABELS,
    BackDoor,
    DockerBackDoor,
    MemoryBackDoor,
    PodmanBackDoor,
)

RUNTIMES = ("docker", "podman", "podman_rootless", "memory")
ENGINES = frozenset({"docker", "podman", "podman_rootless"})


def _engines_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("BOTTLE_REQUIRE_ENGINES") == "1"


@dataclass
class RuntimeCase:
    """One adapter under test, its back door, and what it can do."""

    id: str
    runtime: ContainerRuntime
    backdoor: BackDoor
    runs_processes: bool = True
    applies_limits: bool = True
    limits_gap: str = ""
    owners_on_copy_out: bool = True


def _rootless_url() -> str:
    user = os.environ.get("BOTTLE_ROOTLESS_USER", "bottle-rootless")
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return f"unix:///run/user/<no user {user}>/podman/podman.sock"
    return f"unix:///run/user/{uid}/podman/podman.sock"


def _make_case(name: str) -> RuntimeCase:
    if name == "memory":
        runtime = InMemoryRuntime(images=[BASE_IMAGE])
        return RuntimeCase(name, runtime, MemoryBackDoor(runtime), runs_processes=False)
    if name == "docker":
        from bottle.adapters.docker.runtime import DockerRuntime

        docker_runtime = DockerRuntime()
        return RuntimeCase(name, docker_runtime, _lazy_backdoor(DockerBackDoor, docker_runtime.address))
    from bottle.adapters.podman.runtime import PodmanRuntime

    url = os.environ.get("BOTTLE_PODMAN_URL", "unix:///run/podman/podman.sock") if name == "podman" else _rootless_url()
    podman_runtime = PodmanRuntime(base_url=url)
    # Podman's archive API chowns what it copies out to the caller; no parameter changes that.
    return RuntimeCase(name, podman_runtime, _lazy_backdoor(PodmanBackDoor, url), owners_on_copy_out=False)


def _lazy_backdoor(kind: Callable[[str], BackDoor], url: str) -> BackDoor:
    try:
        return kind(url)
    except Exception as exc:  # the availability check below reports it
        raise RuntimeFailure(f"cannot open the raw SDK client at {url}: {exc}") from exc


def _unavailable(name: str, why: str) -> None:
    message = f"{name}: {why}"
    if _engines_required():
        pytest.fail(f"{message} (CI requires every engine; see scripts/engines.sh)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(
    scope="session",
    params=[
        pytest.param(name, marks=[getattr(pytest.mark, name)] + ([pytest.mark.engine] if name in ENGINES else []), id=name)
        for name in RUNTIMES
    ],
)
def runtime_case(request: pytest.FixtureRequest) -> Iterator[RuntimeCase]:
    name: str = request.param
    try:
        case = _make_case(name)
        info = case.runtime.info()
    except RuntimeFailure as exc:
        _unavailable(name, f"{exc} — {exc.hint or ''} ({exc.engine_message or ''})")
        raise  # unreachable: _unavailable fails or skips
    if name == "podman_rootless" and not info.rootless:
        _unavailable(name, f"the engine at {info.address} is not rootless")
    if not case.runtime.image_exists(BASE_IMAGE):
        _unavailable(name, f"base image {BASE_IMAGE} is missing: run `bottle --runtime {case.runtime.name} images bootstrap`")
    if info.runtime == "podman" and info.rootless and info.cgroup_version == "v1":
        case.applies_limits = False
        case.limits_gap = "rootless Podman on cgroup v1 cannot apply pids/memory limits; the adapter refuses rather than drop them"
    yield case
    try:
        case.runtime.remove_labelled(RUN_LABELS)
    finally:
        case.backdoor.purge(RUN_LABELS)
        case.runtime.close()


@pytest.fixture(scope="session")
def runtime(runtime_case: RuntimeCase) -> ContainerRuntime:
    return runtime_case.runtime


@pytest.fixture(scope="session")
def backdoor(runtime_case: RuntimeCase) -> BackDoor:
    return runtime_case.backdoor


_counter = itertools.count(1)


@pytest.fixture
def names() -> Callable[[str], str]:
    """A maker of resource names unique to this session: ``bct-<run>-<n>-<what>``."""

    def make(what: str) -> str:
        return f"bct-{RUN_ID}-{next(_counter)}-{what}"

    return make


@pytest.fixture
def labels(runtime: ContainerRuntime, backdoor: BackDoor) -> Iterator[dict[str, str]]:
    """Labels for everything this test creates; removed through the adapter afterwards."""
    mine = {**RUN_LABELS, CASE_LABEL: secrets.token_hex(4)}
    yield mine
    runtime.remove_labelled(mine)


@pytest.fixture
def needs_processes(runtime_case: RuntimeCase, request: pytest.FixtureRequest) -> None:
    """Declare that the test runs processes; the in-memory double cannot and raises EngineError."""
    if not runtime_case.runs_processes:
        request.applymarker(
            pytest.mark.xfail(strict=True, raises=EngineError, reason=f"{runtime_case.id} runs no processes")
        )


@pytest.fixture
def needs_limits(runtime_case: RuntimeCase, request: pytest.FixtureRequest) -> None:
    """Declare that the test sets pids/memory limits; engines that cannot apply them must refuse."""
    if not runtime_case.applies_limits:
        request.applymarker(pytest.mark.xfail(strict=True, raises=EngineError, reason=runtime_case.limits_gap))


@pytest.fixture
def needs_owners_on_copy_out(runtime_case: RuntimeCase, request: pytest.FixtureRequest) -> None:
    """Declare that the test reads uid/gid back through copy_out; Podman reports the caller's ids."""
    if not runtime_case.owners_on_copy_out:
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                raises=AssertionError,
                reason="Podman's archive API reports the caller's uid/gid on copy-out (owners inside are right)",
            )
        )


@pytest.fixture
def make_container(runtime: ContainerRuntime, labels: dict[str, str], names: Callable[[str], str]) -> Callable[..., str]:
    """Create (and by default start) a container of the base image; returns its name."""

    def make(*, start: bool = True, name: str | None = None, **fields: Any) -> str:
        name = name or names(str(fields.pop("what", "c")))
        fields.setdefault("command", ("sleep", "600"))
        extra = fields.pop("labels", {})
        runtime.create_container(ContainerSpec(name=name, image=fields.pop("image", BASE_IMAGE), labels={**labels, **extra}, **fields))
        if start:
            runtime.start_container(name)
        return name

    return make
