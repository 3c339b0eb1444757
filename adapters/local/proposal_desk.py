"""The host's desk for supervise proposals: list them, approve or reject them, and apply approvals.

``ProposalDesk`` is what ``bottle proposals`` and ``bottle dashboard`` call.
Decisions come from ``bottle.core.proposals``; this module does the I/O:

- approve an allow-host (or add-route): write the new policy file and/or
  grants file into the bottle's ``policy/`` directory (atomic renames, which
  the guard's directory mount shows at once), then wait until the guard's
  audit log says it loaded exactly those bytes (``confirms``). Only then is
  the proposal ``applied``. If the guard does not confirm within
  ``confirm_timeout``, the previous files are put back and the proposal is
  ``failed``: an approval is never acknowledged before it is in force.
- approve a capability change (or a route, whose secret reaches the
  sidecars only at a launch): mark the state preserved, write the per-bottle
  Dockerfile, stop the agent (``stop_agent``; the launcher then tears the
  bottle down and keeps its state), snapshot the transcript, and say
  ``bottle resume IDENTITY``.
- every step is one line of ``audit/supervise.jsonl`` naming who decided.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bottle.adapters.local.proposal_queue import HostQueue, Refusal
from bottle.core.egress_policy import decode_policy, encode_policy
from bottle.core.proposals import (
    spent_grants,
    SUPERVISE_SETTINGS,
    check_offered,
    decode_settings,
    BUILD_NETWORK_MARKER,
    FILINGS_DIR,
    GRANTS_FILE,
    ApprovalEffects,
    Grant,
    GrantsDocument,
    Proposal,
    ProposalEvent,
    ProposalRefused,
    approval_effects,
    confirms,
    decide,
    decode_grants,
    digest,
    encode_grants,
    event_for,
    proposal_view,
)
from bottle.core.audit import utc_timestamp
from bottle.core.state import DOCKERFILE, PRESERVE_MARKER, TRANSCRIPT_DIR, audit_log_path
from bottle.ports.clock import Clock
from bottle.ports.errors import BottleError
from bottle.ports.state import StateStore

POLICY_FILE = "policy/egress.json"
GRANTS_PATH = f"policy/{GRANTS_FILE}"
GUARD_AUDIT = audit_log_path("guard")
HOME_DIR = "home"
# What Claude Code keeps of a conversation in its home; other agents add theirs.
TRANSCRIPT_PATHS = (".claude", ".claude.json")
DEFAULT_CONFIRM_TIMEOUT = 10.0


class GuardDidNotConfirm(BottleError):
    """The guard did not report loading the new policy in time; the change was rolled back."""


@dataclass(frozen=True)
class Outcome:
    """What a decision did: the proposal as it now stands and a one-line status for people."""

    proposal: Proposal
    message: str
    resume_hint: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.proposal.status in ("applied", "rejected")


def default_decider() -> str:
    """Who is deciding: ``$BOTTLE_OPERATOR``, else the login name (and host)."""
    import getpass  # noqa: PLC0415
    import socket  # noqa: PLC0415

    name = os.environ.get("BOTTLE_OPERATOR")
    if name:
        return name
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"


class ProposalDesk:
    """Proposals of every bottle in ``store``; approvals applied as the module docstring says."""

    def __init__(
        self,
        store: StateStore,
        clock: Clock,
        *,
        confirm_timeout: float = DEFAULT_CONFIRM_TIMEOUT,
        poll_interval: float = 0.02,
        stop_agent: Callable[[str], None] | None = None,
        transcript_paths: Sequence[str] = TRANSCRIPT_PATHS,
    ) -> None:
        self.store = store
        self.clock = clock
        self.confirm_timeout = confirm_timeout
        self.poll_interval = poll_interval
        self.stop_agent = stop_agent
        self.transcript_paths = tuple(transcript_paths)

    # -- reading ---------------------------------------------------------------
    def identities(self) -> list[str]:
        """Bottles that have a proposal queue."""
        return [i for i in self.store.identities() if self.store.exists(i, FILINGS_DIR)]

    def queue(self, identity: str) -> HostQueue:
        return HostQueue(self.store, identity)

    def scan(self, identities: Sequence[str] | None = None) -> tuple[list[Proposal], list[Refusal]]:
        """Every proposal (and refused file) of ``identities`` (default: all bottles with a queue)."""
        proposals: list[Proposal] = []
        refusals: list[Refusal] = []
        for identity in identities if identities is not None else self.identities():
            found, refused = self.queue(identity).scan()
            proposals += found
            refusals += refused
        return proposals, refusals

    def resolve(self, ref: str, identity: str | None = None) -> tuple[str, int]:
        """(identity, id) of ``IDENTITY/N``, or of ``N`` in ``identity`` or the one bottle that has it pending."""
        text = ref.strip()
        if "/" in text:
            identity, _, text = text.rpartition("/")
        if not text.isdigit():
            raise ProposalRefused(
                f"{ref!r} is not a proposal reference", hint="write IDENTITY/N as `bottle proposals ls` shows it"
            )
        number = int(text)
        if identity:
            return identity, number
        queues = self.identities()
        if len(queues) == 1:
            return queues[0], number
        # With several bottles, a bare number could name a different bottle's
        # proposal than the one a person looked at: the bottle must be named.
        pending = sorted(p.ref for p in self.scan()[0] if p.id == number and p.status == "pending")
        where = f"pending as {', '.join(pending)}" if pending else "pending in no bottle"
        raise ProposalRefused(
            f"{len(queues)} bottles have proposals; proposal {number} is {where}; name the bottle",
            hint="write IDENTITY/N as `bottle proposals ls` shows it",
        )

    # -- deciding --------------------------------------------------------------
    def reject(self, identity: str, proposal_id: int, *, decided_by: str, note: str = "") -> Outcome:
        started = time.monotonic()
        queue = self.queue(identity)
        with queue.locked():
            proposal = queue.get(proposal_id)
            decision = decide(proposal, "rejected", decided_by=decided_by, now=self.clock.now(), note=note)
            queue.write_decision(decision)
            queue.audit(event_for(decision, proposal))
        view = proposal_view(decision.filing, decision)
        return Outcome(view, f"rejected {view.ref}: {view.describe()}", seconds=time.monotonic() - started)

    def approve(
        self,
        identity: str,
        proposal_id: int,
        *,
        decided_by: str,
        note: str = "",
        grant: Grant | None = None,
        build_network: bool = False,
    ) -> Outcome:
        """Approve and apply; returns once the change is in force (or has failed and been rolled back).

        ``build_network`` lets a capability change's image build use the
        engine's default network (to fetch packages); without it the build
        runs with no network at all.
        """
        started = time.monotonic()
        queue = self.queue(identity)
        with queue.locked():
            proposal = queue.get(proposal_id)
            check_offered(proposal, decode_settings(self.store.read(identity, SUPERVISE_SETTINGS)))
            decision = decide(
                proposal, "approved", decided_by=decided_by, now=self.clock.now(), note=note, grant=grant,
                build_network=build_network,
            )
            queue.write_decision(decision)
            queue.audit(event_for(decision, proposal))
            approved = proposal_view(decision.filing, decision)
            try:
                effects = approval_effects(
                    approved, decision, self._policy(identity), self._grants(identity),
                    now=self.clock.now(), used=self._used_grants(identity),
                )
                policy_digest = ""
                if effects.policy is not None or effects.grants is not None:
                    policy_digest = self._apply_policy(identity, effects)
                if effects.restart:
                    self._preserve_and_stop(identity, effects, build_network=decision.build_network)
            except (BottleError, OSError, ValueError) as exc:
                message = exc.message if isinstance(exc, BottleError) else str(exc)
                final = decide(approved, "failed", decided_by=decided_by, now=self.clock.now(), previous=decision, error=message)
                queue.write_decision(final)
                queue.audit(event_for(final, approved))
                view = proposal_view(final.filing, final)
                return Outcome(view, f"FAILED {view.ref}: {message}", seconds=time.monotonic() - started)
            final = decide(
                approved, "applied", decided_by=decided_by, now=self.clock.now(), previous=decision,
                policy_digest=policy_digest, resume_hint=effects.resume_hint,
            )
            queue.write_decision(final)
            queue.audit(event_for(final, approved, change=effects.change))
        view = proposal_view(final.filing, final)
        message = f"applied {view.ref}: {effects.change}"
        if policy_digest:
            message += " (the guard confirmed)"
        if effects.restart:
            message += f"; the bottle is going down with its state kept: run `{effects.resume_hint}`"
        return Outcome(view, message, effects.resume_hint, time.monotonic() - started)

    # -- policy ----------------------------------------------------------------
    def _policy(self, identity: str):  # type: ignore[no-untyped-def]
        data = self.store.read(identity, POLICY_FILE)
        if data is None:
            raise ProposalRefused(
                f"bottle {identity} has no policy file ({POLICY_FILE})",
                hint="the bottle is not running; start or resume it first",
            )
        return decode_policy(data)

    def _grants(self, identity: str) -> GrantsDocument:
        data = self.store.read(identity, GRANTS_PATH)
        return GrantsDocument() if data is None else decode_grants(data)

    def _guard_log(self, identity: str) -> str:
        return self.store.host_path(identity, GUARD_AUDIT)

    def _used_grants(self, identity: str) -> set[int]:
        try:
            with _open_log(self._guard_log(identity)) as fh:
                return spent_grants(fh)
        except FileNotFoundError:
            return set()

    def _apply_policy(self, identity: str, effects: ApprovalEffects) -> str:
        """Write the new files, wait for the guard to confirm them; roll back and raise if it does not."""
        log = self._guard_log(identity)
        try:
            offset = os.path.getsize(log)
        except FileNotFoundError:
            offset = 0
        old_policy = self.store.read(identity, POLICY_FILE)
        old_grants = self.store.read(identity, GRANTS_PATH)
        new_policy = encode_policy(effects.policy) if effects.policy is not None else old_policy
        new_grants = encode_grants(effects.grants) if effects.grants is not None else old_grants
        if new_grants is not None and new_grants != old_grants:
            self.store.write(identity, GRANTS_PATH, new_grants)
        if effects.policy is not None:
            self.store.write(identity, POLICY_FILE, encode_policy(effects.policy))
        wanted = (digest(new_policy), digest(new_grants))
        if self._wait_confirm(log, offset, *wanted):
            return wanted[0]
        # Not confirmed: put the old files back so the change cannot come into force unannounced.
        if old_grants is None:
            self.store.delete(identity, GRANTS_PATH)
        else:
            self.store.write(identity, GRANTS_PATH, old_grants)
        if old_policy is not None:
            self.store.write(identity, POLICY_FILE, old_policy)
        raise GuardDidNotConfirm(
            f"the guard of {identity} did not confirm the new policy within {self.confirm_timeout:g}s; "
            "the change was rolled back",
            hint="is the bottle running? `bottle ls` shows it; the guard's log says more",
        )

    def _wait_confirm(self, log: str, offset: int, policy_digest: str, grants_digest: str) -> bool:
        deadline = time.monotonic() + self.confirm_timeout
        pending = b""
        while True:
            try:
                with _open_log(log) as fh:
                    fh.seek(offset)
                    chunk = fh.read()
            except FileNotFoundError:
                chunk = b""
            if chunk:
                offset += len(chunk)
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    if b"policy-loaded" not in line:
                        continue
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if confirms(record, policy_digest, grants_digest):
                        return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(self.poll_interval)

    # -- capability changes ------------------------------------------------------
    def _preserve_and_stop(self, identity: str, effects: ApprovalEffects, *, build_network: bool) -> None:
        """Keep the state, put the change where a resume finds it, stop the agent, snapshot its transcript.

        The preserve marker comes first: the launcher tears the bottle down
        as soon as the agent stops, and keeps the state only if it is there.
        If anything fails before the agent stops, the marker and the
        Dockerfile are put back as they were, so a failed change is not
        resumable as if it had been applied.
        """
        previous = {rel: self.store.read(identity, rel) for rel in (PRESERVE_MARKER, DOCKERFILE, BUILD_NETWORK_MARKER)}
        stopped = False
        try:
            self.store.write(identity, PRESERVE_MARKER, utc_timestamp(self.clock.now()).encode() + b"\n")
            if effects.dockerfile is not None:
                self.store.write(identity, DOCKERFILE, effects.dockerfile.encode("utf-8"))
                if build_network:
                    self.store.write(identity, BUILD_NETWORK_MARKER, b"default\n")
                else:
                    self.store.delete(identity, BUILD_NETWORK_MARKER)
            if self.stop_agent is not None:
                self.stop_agent(identity)
            stopped = True
            self.snapshot_transcript(identity)
        except BaseException:
            for rel, data in previous.items():
                if stopped and rel == PRESERVE_MARKER:
                    continue  # the bottle is going down: without the marker its state would go too
                if data is None:
                    self.store.delete(identity, rel)
                else:
                    self.store.write(identity, rel, data)
            raise

    def snapshot_transcript(self, identity: str) -> list[str]:
        """Copy the agent's conversation files from its home into ``transcript/``; the paths copied."""
        home = self.store.host_path(identity, HOME_DIR)
        target = self.store.host_path(identity, TRANSCRIPT_DIR)
        copied = []
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        for rel in self.transcript_paths:
            source = os.path.join(home, rel)
            if not os.path.lexists(source) or os.path.islink(source):
                continue
            os.makedirs(target, mode=0o700, exist_ok=True)
            if _copy_plain(source, os.path.join(target, rel)):
                copied.append(rel)
        return copied

    def record(self, identity: str, event: ProposalEvent) -> None:
        self.queue(identity).audit(event)


def _open_log(path: str):  # type: ignore[no-untyped-def]
    """The guard's audit log for reading: a regular file, never a link, a FIFO or a device.

    The guard's directory is the guard's to write; a FIFO there must not
    hang an approval. ``FileNotFoundError`` while it does not exist yet.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise GuardDidNotConfirm(
            f"the guard's audit log {path} is not a regular file",
            hint="something in the bottle replaced it; tear the bottle down (`bottle cleanup`)",
        )
    return os.fdopen(fd, "rb")


def restore_transcript(store: StateStore, identity: str, transcript_paths: Sequence[str] = TRANSCRIPT_PATHS) -> list[str]:
    """Put the transcript snapshot back into the agent's home (for ``bottle resume``); the paths restored.

    The snapshot wins over what the home holds: it is the conversation as it
    was when the capability change stopped the agent.
    """
    home = store.host_path(identity, HOME_DIR)
    source_root = store.host_path(identity, TRANSCRIPT_DIR)
    restored = []
    for rel in transcript_paths:
        source = os.path.join(source_root, rel)
        if not os.path.lexists(source) or os.path.islink(source):
            continue
        target = os.path.join(home, rel)
        os.makedirs(home, mode=0o700, exist_ok=True)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        elif os.path.lexists(target):
            os.unlink(target)
        if _copy_plain(source, target):
            restored.append(rel)
    return restored


def _plain_or_link(directory: str, names: list[str]) -> list[str]:
    """``copytree``'s ignore: FIFOs, sockets and devices (opening a FIFO the agent planted would hang us)."""
    ignored = []
    for name in names:
        mode = os.lstat(os.path.join(directory, name)).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
            ignored.append(name)
    return ignored


def _copy_plain(source: str, target: str) -> bool:
    """Copy a regular file or a tree of them (symlinks copied as links, special files left out)."""
    mode = os.lstat(source).st_mode
    if stat.S_ISDIR(mode):
        shutil.copytree(source, target, symlinks=True, ignore=_plain_or_link)
        return True
    if stat.S_ISREG(mode):
        shutil.copy2(source, target, follow_symlinks=False)
        return True
    return False
