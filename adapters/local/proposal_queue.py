"""The supervise proposal queue on the local filesystem: one file per proposal, written atomically.

Two sides, two directories (see ``bottle.core.proposals``):

- ``bottle.sidecars.supervise.queue.FilingQueue`` is the sidecar's side: it
  *creates* filings in its writable mount (``proposals/``) and reads
  decisions from a read-only one (``decisions/``).
- ``HostQueue`` (here) is what the host uses: it reads every filing as untrusted
  input (no symlinks, no FIFOs, nothing larger than ``MAX_FILING_BYTES``,
  then ``parse_filing``) and alone writes decisions, with the state store's
  atomic write, under a lock so two operators cannot decide one proposal twice.
- The first time the host reads a valid filing it *pins* a copy of its bytes
  in ``pinned/`` (host-only). From then on the pin is what is shown and
  decided; a filing whose bytes differ from its pin was rewritten after a
  person may have seen it, and is refused. A decision keeps its own copy of
  the filing, so nothing the sidecar writes later changes what was decided.

Files the host refuses are reported as ``Refusal`` (name and reason), never
acted on.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec

from bottle.core.proposals import (
    DECISIONS_DIR,
    FILINGS_DIR,
    MAX_DECISION_BYTES,
    MAX_FILING_BYTES,
    MAX_PROPOSAL_ID,
    PINS_DIR,
    Decision,
    Filing,
    Proposal,
    ProposalEvent,
    ProposalRefused,
    digest,
    encode_decision,
    encode_event,
    filing_name,
    id_from_name,
    parse_decision,
    parse_filing,
    proposal_view,
)
from bottle.core.state import HOST_AUDIT_LOG
from bottle.ports.state import StateStore

DECISION_LIMIT = MAX_DECISION_BYTES
_FILE_NAME = re.compile(r"^[1-9][0-9]{0,3}\.json$")
# The sidecar files at most MAX_PROPOSAL_ID proposals; a directory holding
# more entries was stuffed, and the host does not read past this many.
MAX_QUEUE_ENTRIES = MAX_PROPOSAL_ID
# What one scan reads of a queue at most: the dashboard scans every second,
# and a stuffed queue must not make each scan read hundreds of megabytes.
MAX_QUEUE_BYTES = 32 * 1024 * 1024
LOCK_FILE = ".lock"
SUPERVISE_AUDIT = HOST_AUDIT_LOG


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
        names = _names(self.filings_dir)
        # A decided proposal is listed from its decision even if its filing was deleted.
        filed = set(names)
        decided = [n for n in _names(self.decisions_dir) if _FILE_NAME.match(n) and n not in filed]
        if len(names) > MAX_QUEUE_ENTRIES:
            refusals.append(Refusal(
                self.identity, FILINGS_DIR,
                f"the queue holds {len(names)} entries; only the first {MAX_QUEUE_ENTRIES} are read",
            ))
            names = names[:MAX_QUEUE_ENTRIES]
        budget = MAX_QUEUE_BYTES
        for name in names + decided:
            try:
                budget -= os.lstat(os.path.join(self.filings_dir, name)).st_size
            except OSError:
                pass
            if budget < 0:
                refusals.append(Refusal(
                    self.identity, FILINGS_DIR,
                    f"the queue holds more than {MAX_QUEUE_BYTES // (1024 * 1024)} MiB of filings; "
                    f"the rest, from {name} on, is not read",
                ))
                break
            try:
                proposal, tampered = self._load(name)
            except FileNotFoundError:
                continue
            except ProposalRefused as exc:
                refusals.append(Refusal(self.identity, name, exc.message))
                continue
            proposals.append(proposal)
            if tampered:
                refusals.append(Refusal(self.identity, name, tampered))
        return sorted(proposals, key=lambda p: p.id), refusals

    def _load(self, name: str) -> tuple[Proposal, str]:
        """The proposal of file ``name``, and why its file is suspect ('' when it is not).

        Decided: the decision's copy, whatever the file says now. Pending:
        the pinned copy, pinned at the first read; a file that no longer
        matches its pin is refused.
        """
        proposal_id = id_from_name(name)
        decision = self.decision(proposal_id)
        try:
            data = read_untrusted(os.path.join(self.filings_dir, name), MAX_FILING_BYTES)
        except (FileNotFoundError, ProposalRefused) as exc:
            if decision is None:
                raise
            gone = "is gone" if isinstance(exc, FileNotFoundError) else f"is refused ({exc})"
            return proposal_view(decision.filing, decision), f"{name} {gone} since it was decided"
        if decision is not None:
            changed = digest(data) != decision.filing_digest
            why = f"{name} was rewritten after it was decided; the decided copy stands" if changed else ""
            return proposal_view(decision.filing, decision), why
        pinned = self.store.read(self.identity, f"{PINS_DIR}/{name}")
        filing: Filing | None = None
        if pinned is None:
            # Only a valid filing is pinned; the pin that stands may be another reader's.
            filing = parse_filing(data, name=name, identity=self.identity)
            pinned = self._pin(name, data)
        if pinned != data:
            raise ProposalRefused(
                f"{name} was rewritten after the host first read it ({digest(pinned)[:19]}...); "
                "what a person saw may not be what it says now, so it is refused",
                hint="nothing was applied; look at what runs in that bottle",
            )
        if filing is None:
            filing = parse_filing(data, name=name, identity=self.identity)
        return proposal_view(filing, None, filing_digest=digest(data)), ""

    def _pin(self, name: str, data: bytes) -> bytes:
        """Pin ``data`` as filing ``name`` unless another reader pinned it first; the pin that stands."""
        directory = self.store.host_path(self.identity, PINS_DIR)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".pin-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            # link() never replaces: of two readers racing, the first pin wins.
            os.link(tmp, os.path.join(directory, name))
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        return self.store.read(self.identity, f"{PINS_DIR}/{name}") or b""

    def get(self, proposal_id: int) -> Proposal:
        """Proposal ``proposal_id``; ``ProposalRefused`` if it does not exist or its file is refused."""
        name = f"{proposal_id}.json"
        try:
            return self._load(name)[0]
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
