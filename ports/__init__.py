"""Ports: the interfaces the core needs from the world. Standard library only."""

from bottle.ports.clock import Clock, Randomness
from bottle.ports.errors import (
    BottleError,
    BuildFailed,
    EngineError,
    EngineUnreachable,
    InputError,
    NameConflict,
    NotFound,
    PermissionDenied,
    RuntimeFailure,
)
from bottle.ports.runtime import (
    BuildRequest,
    ContainerInfo,
    ContainerRuntime,
    ContainerSpec,
    EngineInfo,
    ExecResult,
    FileEntry,
    ImageInfo,
    Mount,
    NetworkAttachment,
    NetworkInfo,
    NetworkSpec,
    ProgressEvent,
    RemovalSummary,
)
from bottle.ports.secrets import SecretSource
from bottle.ports.state import StateStore

__all__ = [
    "BottleError", "BuildFailed", "BuildRequest", "Clock", "ContainerInfo", "ContainerRuntime",
    "ContainerSpec", "EngineError", "EngineInfo", "EngineUnreachable", "ExecResult", "FileEntry",
    "ImageInfo", "InputError", "Mount", "NameConflict", "NetworkAttachment", "NetworkInfo",
    "NetworkSpec", "NotFound", "PermissionDenied", "ProgressEvent", "Randomness", "RemovalSummary",
    "RuntimeFailure", "SecretSource", "StateStore",
]
