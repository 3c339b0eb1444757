"""The supervise proposal queue on the local filesystem: one file per proposal, written atomically.

Two sides, two directories (see ``bottle.core.proposals``):

- ``bottle.sidecars.supervise.queue.FilingQueue`` is the sidecar's side: it
  *creates* filings in its writable mount (``proposals/``) and reads
  decisions from a read-only one (``decisions/``).
- ``HostQueue`` (here) is what the host uses: it reads every filing as untrusted
  input (no symlinks, no FIFOs, nothing larger than ``MAX_FILING_BYTES``,
  then ``parse_filing``) and alone writes decisions, with the state store's
  atomic write, under a lock so two operators cannot decide one proposal twice.

Files the host refuses are reported as ``Refusal`` (name and reason), never
acted on.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec

from bottle.core.proposals import (
    DECISIONS_DIR,
    FILINGS_DIR,
    MAX_FILING_BYTES,
    Decision,
    Filing,
    Proposal,
    ProposalEvent,
    ProposalRefused,
    encode_decision,
    encode_event,
    filing_name,
    id_from_name,
    parse_decision,
    parse_filing,
    proposal_view,
)
from bottle.core.state import audit_log_path
from bottle.ports.state import StateStore

DECISION_LIMIT = 64 * 1024
LOCK_FILE = ".lock"
SUPERVISE_AUDIT = audit_log_path("supervise")


@dataclass(frozen=True)
class Refusal:
    """A file in a bottle's queue the host will not act on, and why."""

    identity: str
    name: str
    reason: str


def read_untrusted(path: str, limit: int) -> bytes:
    """The bytes of the regular file at ``path``, refusing symlinks, FIFOs, devices and files over ``limit``.

    Raises ``ProposalRefused`` with the reason; ``FileNotFoundError`` if it is gone.
    """
    name = os.path.basename(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ProposalRefused(f"{name}: a symlink, not a proposal file", hint="nothing was applied") from None
        if exc.errno == errno.ENOENT:
            raise FileNotFoundError(path) from None
        raise ProposalRefused(f"{name}: cannot be read ({exc.strerror})", hint="nothing was applied") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ProposalRefused(f"{name}: not a regular file", hint="nothing was applied")
        if st.st_size > limit:
            raise ProposalRefused(
                f"{name}: the file is {st.st_size} bytes; a proposal is at most {limit}", hint="nothing was applied"
            )
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ProposalRefused(f"{name}: the file grew past {limit} bytes while read", hint="nothing was applied")
    return data


def _names(directory: str) -> list[str]:
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted((n for n in names if not n.startswith(".")), key=lambda n: (len(n), n))


class HostQueue:
    """The host's side of one bottle's queue, over a ``StateStore`` (its files must be local paths)."""

    def __init__(self, store: StateStore, identity: str) -> None:
        self.store = store
        self.identity = identity
        self.filings_dir = store.host_path(identity, FILINGS_DIR)
        self.decisions_dir = store.host_path(identity, DECISIONS_DIR)

    def scan(self) -> tuple[list[Proposal], list[Refusal]]:
        """Every proposal of this bottle, and every file in its queue that was refused (with why)."""
        proposals: list[Proposal] = []
        refusals: list[Refusal] = []
        for name in _names(self.filings_dir):
            try:
                proposals.append(self._load(name))
            except FileNotFoundError:
                continue
            except ProposalRefused as exc:
                refusals.append(Refusal(self.identity, name, exc.message))
        return sorted(proposals, key=lambda p: p.id), refusals

    def _load(self, name: str) -> Proposal:
        proposal_id = id_from_name(name)
        data = read_untrusted(os.path.join(self.filings_dir, name), MAX_FILING_BYTES)
        filing: Filing = parse_filing(data, name=name, identity=self.identity)
        return proposal_view(filing, self.decision(proposal_id))

    def get(self, proposal_id: int) -> Proposal:
        """Proposal ``proposal_id``; ``ProposalRefused`` if it does not exist or its file is refused."""
        name = f"{proposal_id}.json"
        try:
            return self._load(name)
        except FileNotFoundError:
            raise ProposalRefused(
                f"bottle {self.identity} has no proposal {proposal_id}",
                hint="`bottle proposals ls` lists the proposals",
            ) from None

    def decision(self, proposal_id: int) -> Decision | None:
        data = self.store.read(self.identity, f"{DECISIONS_DIR}/{filing_name(proposal_id)}")
        if data is None:
            return None
        return parse_decision(data, proposal_id=proposal_id, identity=self.identity)

    def write_decision(self, decision: Decision) -> None:
        if decision.identity != self.identity:
            raise ValueError(f"decision for {decision.identity} written to {self.identity}'s queue")
        self.store.write(self.identity, f"{DECISIONS_DIR}/{filing_name(decision.id)}", encode_decision(decision))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the bottle's decision lock (one decider at a time, across processes)."""
        os.makedirs(self.decisions_dir, mode=0o755, exist_ok=True)
        # The sidecar mounts this directory read-only, and must be able to list it.
        os.chmod(self.decisions_dir, 0o755)
        fd = os.open(os.path.join(self.decisions_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def audit(self, event: ProposalEvent) -> None:
        """Append ``event`` to ``audit/supervise.jsonl`` (one ``write``, ``O_APPEND``)."""
        path = self.store.host_path(self.identity, SUPERVISE_AUDIT)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            os.write(fd, encode_event(event))
        finally:
            os.close(fd)


def decode_event_line(line: bytes) -> ProposalEvent:
    return msgspec.json.decode(line, type=ProposalEvent)


def prepare_queue_dirs(store: StateStore, identity: str, sidecar_user: str | None) -> None:
    """Create the bottle's ``proposals/`` (writable by the sidecar's user) and ``decisions/`` (readable by it).

    ``sidecar_user`` is ``uid:gid`` the supervise sidecar runs as (None: the
    engine maps the container's root to this process's user, as rootless
    Podman does). Call before the sidecar starts.
    """
    filings = store.host_path(identity, FILINGS_DIR)
    decisions = store.host_path(identity, DECISIONS_DIR)
    for directory in (filings, decisions):
        os.makedirs(directory, mode=0o755, exist_ok=True)
        os.chmod(directory, 0o755)
    if sidecar_user and os.geteuid() == 0:
        uid_text, _, gid_text = sidecar_user.partition(":")
        if uid_text.isdigit():
            os.chown(filings, int(uid_text), int(gid_text) if gid_text.isdigit() else int(uid_text))
