"""What ``map_docker_errors`` and ``map_podman_errors`` share.

Both SDKs sit on ``requests``; a dead or missing socket surfaces as a
``requests.ConnectionError`` (docker-py) or as an ``APIError`` whose cause is
one (podman-py), so the walk down the exception chain lives here once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

LOG_TAIL_LINES = 20


def causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything it was raised from or during, outermost first."""
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        chain.append(current)
        seen.add(id(current))
        # urllib3 and requests wrap the socket's OSError in args, not __cause__.
        nested = [arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException)]
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            nested.append(reason)
        for inner in nested:
            if id(inner) not in seen:
                chain.extend(causes(inner))
                seen.update(id(link) for link in chain)
        current = current.__cause__ or current.__context__
    return chain


def connection_failure(exc: BaseException) -> BaseException | None:
    """The link of ``exc``'s chain that says nobody answered, if any."""
    import requests

    for link in causes(exc):
        if isinstance(link, requests.exceptions.ConnectionError | requests.exceptions.ConnectTimeout):
            return link
        if isinstance(link, FileNotFoundError | ConnectionRefusedError | ConnectionResetError):
            return link
    return None


def permission_failure(exc: BaseException) -> BaseException | None:
    """The link of ``exc``'s chain that is a refused socket, if any."""
    for link in causes(exc):
        if isinstance(link, PermissionError):
            return link
    return None


def read_timeout(exc: BaseException) -> BaseException | None:
    """The link of ``exc``'s chain that is a read timeout, if any."""
    import requests

    for link in causes(exc):
        if isinstance(link, requests.exceptions.ReadTimeout | TimeoutError):
            return link
    return None


_MISSING = (
    "image not known",
    "no such image",
    "no such container",
    "no container with name or id",
    "network not found",
    "no such network",
)


def require_labels(labels: Mapping[str, str]) -> None:
    """Refuse an empty label filter where it would select every resource of the engine."""
    if not labels:
        raise ValueError("remove_labelled needs at least one label; an empty filter matches everything")


def is_missing(message: str) -> bool:
    """True when an engine's words say the thing does not exist (Podman answers 500 for some)."""
    lowered = message.lower()
    return any(words in lowered for words in _MISSING)


def is_name_conflict(message: str) -> bool:
    """True when an engine's words say a name is taken (Podman answers 500 for some)."""
    lowered = message.lower()
    return "already in use" in lowered or "already exists" in lowered or "already used" in lowered


def tail(lines: Iterable[str], count: int = LOG_TAIL_LINES) -> tuple[str, ...]:
    """The last ``count`` non-empty lines, without trailing newlines."""
    kept = [line.rstrip("\r\n") for line in lines if line.strip()]
    return tuple(kept[-count:])
