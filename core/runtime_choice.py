"""Which container engine a command uses, when the user did not say.

The shell probes which engine sockets answer; this decides from the answers.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

RUNTIMES = ("docker", "podman")


class RuntimeChoice(msgspec.Struct, frozen=True):
    """``name`` is the engine to use; ``reason`` says why, for ``doctor`` and dry runs.

    ``reachable`` is False when no probed engine answered and ``name`` is
    only the default.
    """

    name: str
    reason: str
    reachable: bool


def choose_runtime(requested: str | None, answering: Mapping[str, bool]) -> RuntimeChoice:
    """Pick the runtime: the one asked for (``--runtime`` / ``BOTTLE_RUNTIME``), else
    Docker if it answers, else Podman if it answers, else Docker as the default.

    ``requested`` must be one of ``RUNTIMES`` or ``None`` (the CLI validates
    it); ``answering`` maps runtime names to whether their socket answered.
    """
    if requested:
        if requested not in RUNTIMES:
            raise ValueError(f"unknown runtime {requested!r}; expected one of {', '.join(RUNTIMES)}")
        return RuntimeChoice(requested, "chosen with --runtime or BOTTLE_RUNTIME", answering.get(requested, True))
    for name in RUNTIMES:
        if answering.get(name):
            return RuntimeChoice(name, f"{name} answered", True)
    return RuntimeChoice("docker", "no engine answered; docker is the default", False)
