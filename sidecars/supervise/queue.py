"""The sidecar's side of the proposal queue: create filings, read the host's decisions.

A filing is written to a temporary file and *linked* to its final name
(``<id>.json``), which fails if the name exists: two filings never
overwrite each other, and a reader never sees half a file. Decisions come
from a read-only mount the host alone writes. (The host's side, which reads
every filing as untrusted input, is ``bottle.adapters.local.proposal_queue``.)
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from datetime import datetime

from bottle.core.proposals import (
    MAX_DECISION_BYTES,
    MAX_FILING_BYTES,
    MAX_PROPOSAL_ID,
    Decision,
    Payload,
    Proposal,
    ProposalRefused,
    encode_filing,
    filing_name,
    id_from_name,
    new_filing,
    parse_decision,
    parse_filing,
    proposal_view,
)

_TMP_PREFIX = ".tmp-"
DECISION_LIMIT = MAX_DECISION_BYTES
# An agent gets this many undecided proposals at a time (disk and attention are finite).
MAX_PENDING = 32


def _read(path: str, limit: int) -> bytes | None:
    """A regular file's bytes (no symlinks, at most ``limit``), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        return fh.read(limit)


def _names(directory: str) -> list[str]:
    try:
        return [n for n in os.listdir(directory) if not n.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []


class FilingQueue:
    """The sidecar's side: create filings in ``filings_dir``, read decisions from ``decisions_dir``."""

    def __init__(self, filings_dir: str, decisions_dir: str, identity: str) -> None:
        self.filings_dir = filings_dir
        self.decisions_dir = decisions_dir
        self.identity = identity

    def _ids(self) -> list[int]:
        ids = []
        for name in _names(self.filings_dir):
            with contextlib.suppress(ProposalRefused):
                ids.append(id_from_name(name))
        return ids

    def file(self, reason: str, payload: Payload, now: datetime) -> Proposal:
        """Write a new filing with the next free id; ``ProposalRefused`` if it is invalid or the queue is full."""
        os.makedirs(self.filings_dir, exist_ok=True)
        ids = self._ids()
        decided = {n for n in _names(self.decisions_dir)}
        pending = [i for i in ids if filing_name(i) not in decided]
        if len(pending) >= MAX_PENDING:
            raise ProposalRefused(
                f"{len(pending)} proposals of this bottle are still undecided; no more until some are decided",
                hint="wait for a decision (proposal_wait, or GET /proposals/<id>/wait)",
            )
        proposal_id = max(ids, default=0) + 1
        while True:
            if proposal_id > MAX_PROPOSAL_ID:
                raise ProposalRefused(
                    f"this bottle has filed {MAX_PROPOSAL_ID} proposals; no more can be filed",
                    hint="ask the operator to resume the bottle under a new identity",
                )
            filing = new_filing(self.identity, proposal_id, reason, payload, now)
            fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=self.filings_dir)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(encode_filing(filing))
                    fh.flush()
                    os.fsync(fh.fileno())
                os.chmod(tmp, 0o644)
                try:
                    os.link(tmp, os.path.join(self.filings_dir, filing_name(proposal_id)))
                except FileExistsError:
                    proposal_id += 1
                    continue
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            return proposal_view(filing, None)

    def get(self, proposal_id: int) -> Proposal | None:
        """The proposal as the host last decided it, or None if this bottle never filed it."""
        try:
            name = filing_name(proposal_id)
        except ProposalRefused:
            return None
        data = _read(os.path.join(self.filings_dir, name), MAX_FILING_BYTES)
        if data is None:
            return None
        try:
            filing = parse_filing(data, name=name, identity=self.identity)
        except ProposalRefused:
            return None
        decision: Decision | None = None
        raw = _read(os.path.join(self.decisions_dir, name), DECISION_LIMIT)
        if raw is not None:
            with contextlib.suppress(ProposalRefused):
                decision = parse_decision(raw, proposal_id=proposal_id, identity=self.identity)
        return proposal_view(filing, decision)

    def list(self) -> list[Proposal]:
        return [p for p in (self.get(i) for i in sorted(self._ids())) if p is not None]


