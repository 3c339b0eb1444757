"""Following an engine's build output: shared by the Docker and Podman adapters."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bottle.adapters._errors_common import tail
from bottle.ports.errors import BuildFailed
from bottle.ports.runtime import ProgressCallback, ProgressEvent


def follow_build(
    chunks: Iterable[Mapping[str, Any]],
    action: str,
    on_progress: ProgressCallback | None,
    progress: Callable[[str], ProgressEvent],
) -> None:
    """Report each line of the build's ``stream`` chunks; raise ``BuildFailed`` on an ``error`` chunk.

    Both engines send the Docker-compatible JSON chunks; only how a line
    names its step differs, which ``progress`` turns into an event.
    """
    lines: list[str] = []
    for chunk in chunks:
        if "error" in chunk:
            message = str(chunk.get("error", "")).strip()
            lines.extend(message.splitlines())
            raise BuildFailed(
                f"{action} failed: {message.splitlines()[-1] if message else 'unknown error'}",
                hint="read the build output; fix the failing step of the Dockerfile",
                engine_message=message,
                log_tail=tail(lines),
            )
        text = chunk.get("stream")
        if not isinstance(text, str):
            continue
        for line in text.splitlines():
            if line.strip():
                lines.append(line)
                if on_progress is not None:
                    on_progress(progress(line))
