"""The error hierarchy every layer of bottle speaks.

    BottleError                  base: a message a user can act on, plus a hint
    ├── InputError               bad input from the user (exit code 2)
    │   └── (core) ManifestError, UnknownAgentError, ...
    └── RuntimeFailure           the container engine refused or failed (exit 1)
        ├── EngineUnreachable    no engine answers at the configured address
        ├── NotFound             image, network or container does not exist
        ├── NameConflict         a resource with that name already exists
        ├── BuildFailed          an image build failed; carries the build's last lines
        ├── PermissionDenied     the engine refused for lack of rights
        └── EngineError          anything else the engine said no to

Adapters translate SDK exceptions into these in one place
(``map_docker_errors`` / ``map_podman_errors``) and always
``raise Ours(...) from exc`` so the engine's own words survive in
``engine_message``. Messages never contain secret values.
"""

from __future__ import annotations


class BottleError(Exception):
    """Base of every error bottle raises on purpose.

    ``str(err)`` is one line saying what is wrong; ``hint`` says what to do.
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class InputError(BottleError):
    """The user's input (arguments, manifest, environment) is wrong."""

    exit_code = 2


class RuntimeFailure(BottleError):
    """A container engine refused or failed an operation.

    ``engine_message`` holds the engine's own words, when it gave any.
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        engine_message: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.engine_message = engine_message


class EngineUnreachable(RuntimeFailure):
    """No engine answered at the configured address."""


class NotFound(RuntimeFailure):
    """The named image, network or container does not exist."""


class NameConflict(RuntimeFailure):
    """A resource with that name already exists."""


class BuildFailed(RuntimeFailure):
    """An image build failed. ``log_tail`` has the build's last lines."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        engine_message: str | None = None,
        log_tail: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, hint=hint, engine_message=engine_message)
        self.log_tail = log_tail


class PermissionDenied(RuntimeFailure):
    """The engine refused the operation for lack of rights."""


class EngineError(RuntimeFailure):
    """The engine failed in a way no more specific error describes."""
