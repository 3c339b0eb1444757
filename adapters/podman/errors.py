"""Translate podman-py and requests exceptions into ``bottle.ports.errors`` types.

    APIError caused by a refused/missing socket     -> EngineUnreachable
    podman.errors.NotFound, podman.errors.ImageNotFound
      (ImageNotFound is NOT a NotFound there)       -> NotFound
    409 on a create, or "already in use/exists"     -> NameConflict
    401 / 403, PermissionError on the socket        -> PermissionDenied
    podman.errors.BuildError                        -> BuildFailed (with log tail)
    anything else the SDK raises                    -> EngineError
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from bottle.adapters._errors_common import (
    connection_failure,
    is_missing,
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


def start_hint(address: str) -> str:
    """What to run so that a Podman API service answers at ``address``."""
    where = address or "unix:///run/podman/podman.sock"
    return (
        f"start the Podman API service: `podman system service --time=0 {where} &` "
        "(as the user who owns that socket), or set BOTTLE_PODMAN_URL / CONTAINER_HOST"
    )


def _engine_words(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    if explanation:
        return str(explanation)
    response = getattr(exc, "response", None)
    if response is not None:
        try:
            body = json.loads(response.text)
            return str(body.get("message") or body.get("cause") or response.text)
        except (ValueError, AttributeError):
            return str(getattr(response, "text", "") or exc)
    msg = getattr(exc, "msg", None)
    return str(msg) if msg else str(exc)


def _build_lines(build_log: object) -> list[str]:
    lines: list[str] = []
    for item in build_log if isinstance(build_log, list | tuple) else []:
        raw = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
        try:
            decoded = json.loads(raw)
            raw = str(decoded.get("stream") or decoded.get("error") or "")
        except (ValueError, AttributeError):
            pass
        lines.extend(raw.splitlines())
    return lines


def podman_error(exc: BaseException, action: str, *, address: str = "", creating: bool = False) -> RuntimeFailure:
    """The bottle error that says what ``exc``, raised while doing ``action``, means.

    ``creating`` marks operations where an HTTP 409 means the name is taken.
    """
    import podman.errors

    words = _engine_words(exc)
    where = f" at {address}" if address else ""
    if isinstance(exc, podman.errors.BuildError):
        return BuildFailed(
            f"{action} failed: {exc.msg}",
            hint="read the build output; fix the failing step of the Dockerfile",
            engine_message=str(exc.msg),
            log_tail=tail(_build_lines(exc.build_log)),
        )
    status = getattr(exc, "status_code", None)
    # podman-py raises ImageNotFound for images; it does not derive from its NotFound.
    missing = status is not None and status >= 400 and is_missing(words)
    if isinstance(exc, podman.errors.NotFound | podman.errors.ImageNotFound) or status == 404 or missing:
        return NotFound(f"{action}: not found", hint="check the name; `bottle ls` lists what exists", engine_message=words)
    if (status == 409 and creating) or (status is not None and status >= 400 and is_name_conflict(words)):
        return NameConflict(f"{action}: the name is taken", hint="remove the old one or pick another name", engine_message=words)
    if status in (401, 403) or permission_failure(exc) is not None:
        return PermissionDenied(
            f"{action}: Podman{where} refused access",
            hint="that socket belongs to another user; use your own (rootless: $XDG_RUNTIME_DIR/podman/podman.sock)",
            engine_message=words,
        )
    if status is None and connection_failure(exc) is not None:
        return EngineUnreachable(f"{action}: no Podman engine answers{where}", hint=start_hint(address), engine_message=words)
    if status is None and read_timeout(exc) is not None:
        return EngineError(f"{action}: Podman{where} did not answer in time", hint="the engine may be overloaded; retry", engine_message=words)
    return EngineError(f"{action} failed: {words}", hint="see the engine's message; `bottle doctor` checks the setup", engine_message=words)


@contextmanager
def map_podman_errors(action: str, *, address: str = "", creating: bool = False) -> Iterator[None]:
    """Run the block; re-raise any SDK or transport error as a bottle error ``from`` it."""
    import podman.errors
    import requests

    try:
        yield
    except RuntimeFailure:
        raise
    except (podman.errors.APIError, podman.errors.PodmanError, requests.exceptions.RequestException, OSError) as exc:
        raise podman_error(exc, action, address=address, creating=creating) from exc
