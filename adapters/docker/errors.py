"""Translate docker-py and requests exceptions into ``bottle.ports.errors`` types.

    requests.ConnectionError / FileNotFoundError ... -> EngineUnreachable
    docker.errors.NotFound (and its ImageNotFound)    -> NotFound
    409 on a create, or "already in use"              -> NameConflict
    401 / 403, PermissionError on the socket          -> PermissionDenied
    docker.errors.BuildError                          -> BuildFailed (with log tail)
    anything else the SDK raises                      -> EngineError
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from bottle.adapters._errors_common import (
    connection_failure,
    is_name_conflict,
    permission_failure,
    read_timeout,
    tail,
)
from bottle.ports.errors import (
    BuildFailed,
    EngineError,
    EngineUnreachable,
    NameConflict,
    NotFound,
    PermissionDenied,
    RuntimeFailure,
)

START_HINT = "start dockerd (`dockerd &` or `systemctl start docker`), or point DOCKER_HOST at a running engine"


def _engine_words(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    if explanation:
        return str(explanation)
    return str(exc)


def docker_error(exc: BaseException, action: str, *, address: str = "", creating: bool = False) -> RuntimeFailure:
    """The bottle error that says what ``exc``, raised while doing ``action``, means.

    ``creating`` marks operations where an HTTP 409 means the name is taken.
    """
    import docker.errors

    words = _engine_words(exc)
    where = f" at {address}" if address else ""
    if isinstance(exc, docker.errors.BuildError):
        log = [str(item.get("stream", item.get("error", ""))) for item in exc.build_log if isinstance(item, dict)]
        return BuildFailed(f"{action} failed: {exc.msg}", hint="read the build output above", engine_message=exc.msg, log_tail=tail(log))
    status = getattr(exc, "status_code", None)
    if isinstance(exc, docker.errors.NotFound) or status == 404:
        return NotFound(f"{action}: not found", hint="check the name; `bottle ls` lists what exists", engine_message=words)
    if status == 409 and (creating or is_name_conflict(words)):
        return NameConflict(f"{action}: the name is taken", hint="remove the old one or pick another name", engine_message=words)
    if status in (401, 403) or permission_failure(exc) is not None:
        return PermissionDenied(
            f"{action}: Docker{where} refused access",
            hint="add your user to the `docker` group, or use rootless Podman (`--runtime podman`)",
            engine_message=words,
        )
    if status is None and connection_failure(exc) is not None:
        return EngineUnreachable(f"{action}: no Docker engine answers{where}", hint=START_HINT, engine_message=words)
    if status is None and read_timeout(exc) is not None:
        return EngineError(f"{action}: Docker{where} did not answer in time", hint="the engine may be overloaded; retry", engine_message=words)
    if isinstance(exc, docker.errors.DockerException) and "error while fetching server api version" in words.lower():
        return EngineUnreachable(f"{action}: no Docker engine answers{where}", hint=START_HINT, engine_message=words)
    return EngineError(f"{action} failed: {words}", hint="see the engine's message; `bottle doctor` checks the setup", engine_message=words)


@contextmanager
def map_docker_errors(action: str, *, address: str = "", creating: bool = False) -> Iterator[None]:
    """Run the block; re-raise any SDK or transport error as a bottle error ``from`` it."""
    import docker.errors
    import requests

    try:
        yield
    except RuntimeFailure:
        raise
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise docker_error(exc, action, address=address, creating=creating) from exc
