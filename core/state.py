"""The per-bottle state model: what is kept on the host for one identity, and when.

One directory per identity (the ``StateStore`` port decides where) holds:

    metadata.json        BottleMetadata: how the bottle was launched (for resume)
    .preserve            marker: a capability change is pending; keep everything
    Dockerfile           the per-bottle Dockerfile written by an approved change
    transcript/          snapshot of the agent's transcript, restored on resume
    proposals/           the supervise proposal queue
    audit/supervise.jsonl  the host's own log of supervise decisions
    audit/<role>/<role>.jsonl  audit log of a sidecar (guard, egress proxy, git gate)
    ca/<role>.key|.crt   the bottle's CA material; keys are secret (0600)

Lifecycle: state is removed when a session ends, unless ``.preserve`` exists
(``decide_session_end``). Any launch, new or resumed, clears a leftover
marker (``decide_launch_state``) so it cannot keep state alive past the next
ordinary session end. This module only decides; adapters do the I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated

import msgspec

from bottle.core.identity import is_identity
from bottle.ports.errors import BottleError

METADATA = "metadata.json"
PRESERVE_MARKER = ".preserve"
DOCKERFILE = "Dockerfile"
TRANSCRIPT_DIR = "transcript"
PROPOSALS_DIR = "proposals"
AUDIT_DIR = "audit"
CA_DIR = "ca"

SECRET_SUFFIXES = (".key",)

_ROLE = re.compile(r"[a-z0-9][a-z0-9-]*")


class StateCorrupt(BottleError):
    """A state file of a bottle cannot be read back."""


def _role_file(directory: str, role: str, suffix: str) -> str:
    if not isinstance(role, str) or not _ROLE.fullmatch(role):
        raise ValueError(f"{role!r} is not a role name ([a-z0-9-], e.g. 'guard')")
    return f"{directory}/{role}{suffix}"


def ca_key_path(role: str) -> str:
    """``ca/<role>.key``: the private key of the CA a sidecar in ``role`` uses (secret)."""
    return _role_file(CA_DIR, role, ".key")


def ca_cert_path(role: str) -> str:
    """``ca/<role>.crt``: the matching certificate, which the agent trusts."""
    return _role_file(CA_DIR, role, ".crt")


def audit_dir(role: str) -> str:
    """``audit/<role>``: the audit directory of the sidecar in ``role``, mounted into it alone.

    Each sidecar gets a directory of its own, so none can write (or forge
    lines in) another's log, nor the host's ``HOST_AUDIT_LOG``: the host
    trusts the guard's ``policy-loaded`` and ``grant-used`` lines.
    """
    return _role_file(AUDIT_DIR, role, "")


def audit_log_path(role: str) -> str:
    """``audit/<role>/<role>.jsonl``: one JSON line per decision of the sidecar in ``role``."""
    return f"{audit_dir(role)}/{role}.jsonl"


# The host's own log of supervise decisions. At the top of audit/, which no
# container mounts: only per-role directories below it are mounted.
HOST_AUDIT_LOG = f"{AUDIT_DIR}/supervise.jsonl"


def is_secret_path(relpath: str) -> bool:
    """True for files that must be written 0600 (private keys)."""
    return relpath.rsplit("/", 1)[-1].endswith(SECRET_SUFFIXES)


UtcDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class BottleMetadata(msgspec.Struct, frozen=True):
    """How a bottle was launched; ``resume`` relaunches from it.

    ``started_at`` is timezone-aware. ``manifest_sources`` lists the manifest
    files in the order they were merged.
    """

    identity: str
    agent_name: str
    cwd: str
    copy_cwd: bool
    started_at: UtcDatetime
    runtime: str
    manifest_sources: tuple[str, ...] = ()


def encode_metadata(metadata: BottleMetadata) -> bytes:
    """JSON bytes of ``metadata``, as stored in ``metadata.json``.

    Raises ``ValueError`` for an invalid identity or a naive ``started_at``,
    which could not be read back.
    """
    if not is_identity(metadata.identity):
        raise ValueError(f"{metadata.identity!r} is not a bottle identity")
    if metadata.started_at.tzinfo is None or metadata.started_at.utcoffset() is None:
        raise ValueError("started_at must be timezone-aware")
    return msgspec.json.format(msgspec.json.encode(metadata), indent=2) + b"\n"


def decode_metadata(data: bytes, source: str) -> BottleMetadata:
    """Parse ``metadata.json`` read from ``source`` (a path, for messages).

    Raises ``StateCorrupt`` naming ``source`` and what is wrong.
    """
    hint = "the bottle's state is damaged; remove it with `bottle cleanup` and start a new bottle"
    try:
        metadata = msgspec.json.decode(data, type=BottleMetadata)
    except msgspec.DecodeError as exc:
        raise StateCorrupt(f"{source}: {exc}", hint=hint) from None
    if not is_identity(metadata.identity):
        raise StateCorrupt(f"{source}: {metadata.identity!r} is not a bottle identity - at `$.identity`", hint=hint)
    return metadata


def per_bottle_image_tag(identity: str) -> str:
    """``localhost/bottle-agent-<identity>:latest``: the image built from a per-bottle Dockerfile."""
    if not is_identity(identity):
        raise ValueError(f"{identity!r} is not a bottle identity")
    return f"localhost/bottle-agent-{identity}:latest"


class SessionEnd(msgspec.Struct, frozen=True):
    """What to do with a bottle's state when its session ends."""

    keep_state: bool
    resume_hint: str | None


def decide_session_end(identity: str, preserved: bool) -> SessionEnd:
    """Keep the state and tell the user how to resume if ``preserved``; else remove it."""
    if preserved:
        return SessionEnd(keep_state=True, resume_hint=f"bottle resume {identity}")
    return SessionEnd(keep_state=False, resume_hint=None)


def decide_launch_state(existing: Iterable[str]) -> list[str]:
    """Relative paths of ``existing`` state to delete when a launch succeeds.

    ``existing`` are the relative paths present in the identity's state
    directory. Both a new launch and a resume drop a stale ``.preserve``
    marker: the capability change it announced is being applied now, and a
    marker left in place would keep state alive past the next ordinary
    session end. Everything else stays (resume needs the Dockerfile and the
    transcript). Apply the result once the bottle is up, not before: a
    resume that fails half-way must still find its marker and keep its state.
    """
    return [PRESERVE_MARKER] if PRESERVE_MARKER in set(existing) else []
