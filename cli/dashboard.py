"""``bottle dashboard``: a terminal UI over every bottle: health, audit logs, proposals, decisions.

Panes: the bottles (containers and their state, from the engine's labels),
their proposals (pending first), the change the selected proposal makes
(allowlist delta or Dockerfile diff), the live tail of the selected bottle's
audit logs, and a status line with the outcome of the last decision.

Keys: ``a`` approve (asks for a note), ``A`` approve a capability change
whose build may use the network, ``r`` reject (asks for a note), ``g``
cycle the grant of the next approval (lifetime, once, 30m, 2h), ``u``
refresh now, ``q`` quit. Decisions go through the same desk as
``bottle proposals``, in a worker thread: the UI stays live while an
approval waits for the guard to confirm.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from bottle.cli.app import AppState
from bottle.cli.display import literal, one_line

if TYPE_CHECKING:
    from bottle.adapters.local.proposal_desk import ProposalDesk

GRANTS = ("lifetime", "once", "30m", "2h")
AUDIT_TAIL_BYTES = 64 * 1024
AUDIT_MAX_FILES = 64
AUDIT_LINE_CHARS = 240
REFRESH_SECONDS = 0.5
ENGINE_REFRESH_SECONDS = 3.0


@dataclass(frozen=True)
class BottleRow:
    """One bottle on the engine: its identity, agent and each container's role -> status."""

    identity: str
    agent: str = ""
    containers: dict[str, str] = field(default_factory=dict)

    def health(self) -> str:
        if not self.containers:
            return "no containers"
        return " ".join(f"{role}:{status}" for role, status in sorted(self.containers.items()))


def engine_bottles(state: AppState) -> Callable[[], list[BottleRow]]:
    """A source of ``BottleRow`` from the selected engine's labelled containers."""

    def load() -> list[BottleRow]:
        from bottle.cli.wiring import resolve_runtime  # noqa: PLC0415
        from bottle.core.naming import LABEL_AGENT, LABEL_IDENTITY, LABEL_MANAGED, LABEL_ROLE  # noqa: PLC0415

        container = state.get_container()
        resolve_runtime(container, state.runtime)
        rows: dict[str, BottleRow] = {}
        for c in container.runtime().list_containers({LABEL_MANAGED: "true"}):
            identity = c.labels.get(LABEL_IDENTITY, "")
            if not identity:
                continue
            row = rows.setdefault(identity, BottleRow(identity, c.labels.get(LABEL_AGENT, "")))
            row.containers[c.labels.get(LABEL_ROLE, c.name)] = c.status
        return sorted(rows.values(), key=lambda r: r.identity)

    return load


def audit_summary(line: bytes) -> str:
    """One audit line (any sidecar's, or supervise's) as a short, printable line for people."""
    try:
        record = json.loads(line)
    except ValueError:
        return one_line(line.decode("utf-8", "replace").strip(), AUDIT_LINE_CHARS)
    if not isinstance(record, dict):
        return one_line(str(record), AUDIT_LINE_CHARS)
    time = str(record.get("time", ""))[11:19]
    role = record.get("role", "?")
    if role == "supervise":
        who = f" by {record['decided_by']}" if record.get("decided_by") else ""
        note = f": {record['note']}" if record.get("note") else ""
        text = f"{time} supervise #{record.get('proposal')} {record.get('event')}{who} {record.get('change', '')}{note}"
        return one_line(text, AUDIT_LINE_CHARS)
    verdict = record.get("verdict", "")
    target = str(record.get("host", ""))
    if record.get("path"):
        target += str(record["path"])[:60]
    fields = (time, role, verdict, record.get("rule", ""), record.get("method", ""), target, record.get("reason", ""))
    return one_line(" ".join(str(f) for f in fields).strip(), AUDIT_LINE_CHARS)


def _open_dir(name: str, dir_fd: int | None = None) -> int | None:
    """A directory's fd; None for a symlink, anything else, or a missing one."""
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None


def _open_log(name: str, dir_fd: int) -> int | None:
    """A regular file's fd; None for a symlink, FIFO, socket, device or a missing file.

    A sidecar owns its audit directory and could plant any of those: a FIFO
    opened without O_NONBLOCK would hang the dashboard, a device might do
    anything on open. The lstat refuses those before the open; O_NOFOLLOW,
    O_NONBLOCK and the fstat refuse what was swapped in between.
    """
    try:
        if not stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            return None
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _listdir(fd: int) -> list[str]:
    try:
        return sorted(os.listdir(fd))
    except OSError:
        return []


class AuditTail:
    """New lines of one bottle's audit logs since the last call (starts near the end).

    Reads ``audit/*.jsonl`` (the host's, e.g. ``supervise.jsonl``) and
    ``audit/*/*.jsonl`` (each sidecar's own directory), at most
    ``AUDIT_MAX_FILES`` of them and ``AUDIT_TAIL_BYTES`` of each per call.
    Symlinks and anything but regular files and directories are skipped.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        # relative path -> (offset read up to, whether that offset starts a line)
        self._positions: dict[str, tuple[int, bool]] = {}

    def _logs(self, top: int) -> list[tuple[str, int]]:
        """(relative path, fd) of each log, opened without following links."""
        found: list[tuple[str, int]] = []
        for name in _listdir(top):
            if len(found) >= AUDIT_MAX_FILES:
                break
            if name.endswith(".jsonl"):
                fd = _open_log(name, top)
                if fd is not None:
                    found.append((name, fd))
                continue
            sub = _open_dir(name, top)
            if sub is None:
                continue
            try:
                for inner in _listdir(sub):
                    if len(found) >= AUDIT_MAX_FILES:
                        break
                    if inner.endswith(".jsonl"):
                        fd = _open_log(inner, sub)
                        if fd is not None:
                            found.append((f"{name}/{inner}", fd))
            finally:
                os.close(sub)
        return found

    def _new_bytes(self, rel: str, fd: int) -> bytes:
        """The complete lines of ``fd`` past the last call's position (and moves it)."""
        size = os.fstat(fd).st_size
        start, aligned = self._positions.get(rel, (max(0, size - AUDIT_TAIL_BYTES), size <= AUDIT_TAIL_BYTES))
        if start > size:  # truncated or replaced: from the top
            start, aligned = 0, True
        if size - start > AUDIT_TAIL_BYTES:  # fell behind: only the newest part
            start, aligned = size - AUDIT_TAIL_BYTES, False
        chunk = os.pread(fd, size - start, start)
        if not aligned:  # started mid-line: skip to the next line
            cut = chunk.find(b"\n") + 1
            if cut == 0:
                self._positions[rel] = (start + len(chunk), False)
                return b""
            start, chunk = start + cut, chunk[cut:]
        complete = chunk.rfind(b"\n") + 1
        self._positions[rel] = (start + complete, True)
        return chunk[:complete]

    def read(self) -> list[str]:
        """Printable summaries of the new lines, ordered by time of day."""
        top = _open_dir(self.directory)
        if top is None:
            return []
        try:
            logs = self._logs(top)
        finally:
            os.close(top)
        lines: list[tuple[str, str]] = []
        for rel, fd in logs:
            try:
                chunk = self._new_bytes(rel, fd)
            except OSError:
                continue
            finally:
                os.close(fd)
            for raw in chunk.splitlines():
                if raw.strip():
                    text = audit_summary(raw)
                    lines.append((text[:8], text))
        return [text for _, text in sorted(lines, key=lambda item: item[0])]


def build_app(desk: ProposalDesk, bottles: Callable[[], list[BottleRow]], *, decided_by: str) -> Any:
    """The textual ``App`` (built here so importing this module does not import textual)."""
    from textual import on  # noqa: PLC0415
    from textual.app import App, ComposeResult  # noqa: PLC0415
    from textual.binding import Binding  # noqa: PLC0415
    from textual.containers import Horizontal, Vertical  # noqa: PLC0415
    from textual.screen import ModalScreen  # noqa: PLC0415
    from textual.widgets import DataTable, Footer, Header, Input, Label, RichLog, Static  # noqa: PLC0415

    from bottle.cli.proposals import preview  # noqa: PLC0415
    from bottle.core.proposals import Proposal, ProposalRefused, parse_grant  # noqa: PLC0415
    from bottle.ports.errors import BottleError  # noqa: PLC0415

    class NoteScreen(ModalScreen[str | None]):
        """Asks for the note of a decision; Enter decides, Escape cancels."""

        BINDINGS = [Binding("escape", "cancel", "Cancel")]

        def __init__(self, title: str) -> None:
            super().__init__()
            self.title_text = title

        def compose(self) -> ComposeResult:
            with Vertical(id="note-box"):
                yield Label(literal(self.title_text), markup=False)
                yield Input(placeholder="note (optional), Enter to confirm, Escape to cancel", id="note")

        def on_mount(self) -> None:
            self.query_one(Input).focus()

        @on(Input.Submitted)
        def submitted(self, event: Input.Submitted) -> None:
            self.dismiss(event.value)

        def action_cancel(self) -> None:
            self.dismiss(None)

    class Dashboard(App[None]):
        TITLE = "bottle dashboard"
        CSS = """
        #top { height: 40%; }
        #bottles { width: 45%; }
        #proposals { width: 55%; }
        #middle { height: 1fr; }
        #preview { width: 50%; border: round $accent; padding: 0 1; }
        #audit { width: 50%; border: round $accent; }
        #status { height: 1; background: $boost; padding: 0 1; }
        #note-box { width: 70; height: auto; border: round $accent; padding: 1 2; background: $panel; }
        NoteScreen { align: center middle; }
        """
        BINDINGS = [
            Binding("a", "approve", "Approve"),
            Binding("A", "approve_networked", "Approve, build with network"),
            Binding("r", "reject", "Reject"),
            Binding("g", "grant", "Grant"),
            Binding("u", "refresh", "Refresh"),
            Binding("q", "quit", "Quit"),
        ]

        def __init__(self) -> None:
            super().__init__()
            self.desk = desk
            self.load_bottles = bottles
            self.decided_by = decided_by
            self.grant_index = 0
            self.bottle_rows: list[BottleRow] = []
            self.proposal_rows: list[Proposal] = []
            self.selected_identity: str | None = None
            self.tails: dict[str, AuditTail] = {}
            self.status_text = "ready"
            self.busy = False

        def compose(self) -> ComposeResult:
            yield Header()
            with Horizontal(id="top"):
                yield DataTable(id="bottles", cursor_type="row")
                yield DataTable(id="proposals", cursor_type="row")
            with Horizontal(id="middle"):
                yield Static("", id="preview", markup=False)
                yield RichLog(id="audit", max_lines=500, wrap=False)
            yield Static("", id="status", markup=False)
            yield Footer()

        def on_mount(self) -> None:
            self.query_one("#bottles", DataTable).add_columns("BOTTLE", "AGENT", "CONTAINERS")
            self.query_one("#proposals", DataTable).add_columns("REF", "KIND", "STATUS", "REASON")
            self.refresh_engine()
            self.refresh_queue()
            self.set_interval(REFRESH_SECONDS, self.refresh_queue)
            self.set_interval(ENGINE_REFRESH_SECONDS, self.refresh_engine)
            self.query_one("#proposals", DataTable).focus()
            self._show_status()

        # -- data ------------------------------------------------------------
        def refresh_engine(self) -> None:
            self.run_worker(self._load_engine, thread=True, exclusive=True, group="engine")

        def _load_engine(self) -> None:
            try:
                rows = self.load_bottles()
            except BottleError as exc:
                self.call_from_thread(self.set_status, f"engine: {exc.message}")
                return
            self.call_from_thread(self._show_bottles, rows)

        def _show_bottles(self, rows: list[BottleRow]) -> None:
            known = {r.identity for r in rows}
            # Bottles with a queue but no containers (stopped, preserved) are listed too.
            for identity in self.desk.identities():
                if identity not in known:
                    rows.append(BottleRow(identity))
            self.bottle_rows = rows
            table = self.query_one("#bottles", DataTable)
            cursor = table.cursor_row
            table.clear()
            for row in rows:
                table.add_row(literal(row.identity), literal(row.agent), literal(row.health()), key=row.identity)
            if rows:
                table.move_cursor(row=min(cursor, len(rows) - 1))

        def refresh_queue(self) -> None:
            found, refused = self.desk.scan()
            order = {"pending": 0, "approved": 1}
            found.sort(key=lambda p: (order.get(p.status, 2), p.identity, p.id))
            table = self.query_one("#proposals", DataTable)
            if [(p.ref, p.status) for p in found] != [(p.ref, p.status) for p in self.proposal_rows]:
                cursor = table.cursor_row
                table.clear()
                for p in found:
                    cells = (one_line(p.ref), p.kind, p.status, one_line(p.reason, 80))
                    table.add_row(*(literal(c) for c in cells), key=p.ref)
                self.proposal_rows = found
                if found:
                    table.move_cursor(row=min(max(cursor, 0), len(found) - 1))
                self._show_preview()
            if refused and not self.busy:
                self.set_status(f"refused {refused[0].identity}/{refused[0].name}: {refused[0].reason}")
            self._tail_audit()

        def _current(self) -> Proposal | None:
            table = self.query_one("#proposals", DataTable)
            if not self.proposal_rows or table.cursor_row < 0 or table.cursor_row >= len(self.proposal_rows):
                return None
            return self.proposal_rows[table.cursor_row]

        def _show_preview(self) -> None:
            p = self._current()
            pane = self.query_one("#preview", Static)
            if p is None:
                pane.update(literal("no proposals"))
                return
            decided = f"\n{p.status} by {p.decided_by}: {p.note}" if p.decided_by else ""
            # literal(): the reason, note and preview are the agent's words, never markup.
            text = f"{p.ref} {p.kind} ({p.status})\nreason: {p.reason}{decided}\n\n{preview(self.desk, p)}"
            pane.update(literal(text))
            if p.identity != self.selected_identity:
                self.selected_identity = p.identity
                self.query_one("#audit", RichLog).clear()
                self.tails.pop(p.identity, None)
                self._tail_audit()

        def _tail_audit(self) -> None:
            identity = self.selected_identity
            if identity is None:
                return
            tail = self.tails.get(identity)
            if tail is None:
                tail = self.tails[identity] = AuditTail(self.desk.store.host_path(identity, "audit"))
            log = self.query_one("#audit", RichLog)
            for line in tail.read():
                log.write(literal(line))

        @on(DataTable.RowHighlighted, "#proposals")
        def _proposal_moved(self, event: DataTable.RowHighlighted) -> None:
            self._show_preview()

        @on(DataTable.RowHighlighted, "#bottles")
        def _bottle_moved(self, event: DataTable.RowHighlighted) -> None:
            if event.row_key is not None and event.row_key.value != self.selected_identity:
                self.selected_identity = str(event.row_key.value)
                self.query_one("#audit", RichLog).clear()
                self.tails.pop(self.selected_identity, None)
                self._tail_audit()

        # -- status ------------------------------------------------------------
        def set_status(self, text: str) -> None:
            self.status_text = text
            self._show_status()

        def _show_status(self) -> None:
            line = f"[grant: {GRANTS[self.grant_index]}] {one_line(self.status_text)}"
            self.query_one("#status", Static).update(literal(line))

        # -- decisions -----------------------------------------------------------
        def action_grant(self) -> None:
            self.grant_index = (self.grant_index + 1) % len(GRANTS)
            self._show_status()

        def action_refresh(self) -> None:
            self.refresh_queue()
            self.refresh_engine()

        def _decide(self, action: str, build_network: bool = False) -> None:
            p = self._current()
            if p is None or p.status != "pending":
                self.set_status("nothing pending selected" if p is None else f"{p.ref} is {p.status}, not pending")
                return
            if self.busy:
                self.set_status("a decision is still being applied")
                return
            if build_network and p.kind != "capability-change":
                self.set_status(f"{p.ref} is {p.kind}: only a capability change has a build")
                return
            grant = GRANTS[self.grant_index] if action == "approve" else ""
            title = f"{action} {p.ref}: {p.describe()}" + (f" ({grant})" if grant and p.kind == "allow-host" else "")
            if build_network:
                title += " (its build may use the network)"

            def done(note: str | None) -> None:
                if note is None:
                    self.set_status("cancelled")
                    return
                self.busy = True
                self.set_status(f"{action}ing {p.ref}...")
                self.run_worker(lambda: self._apply(action, p, note, grant, build_network), thread=True, group="decide")

            self.push_screen(NoteScreen(title), done)

        def _apply(self, action: str, p: Proposal, note: str, grant: str, build_network: bool = False) -> None:
            try:
                if action == "approve":
                    chosen = parse_grant(grant) if p.kind == "allow-host" else None
                    outcome = self.desk.approve(
                        p.identity, p.id, decided_by=self.decided_by, note=note, grant=chosen,
                        build_network=build_network,
                    )
                else:
                    outcome = self.desk.reject(p.identity, p.id, decided_by=self.decided_by, note=note)
                message = outcome.message
            except (ProposalRefused, BottleError) as exc:
                message = f"refused: {exc.message}"
            except OSError as exc:
                message = f"error: {exc}"
            self.call_from_thread(self._decided, message)

        def _decided(self, message: str) -> None:
            self.busy = False
            self.set_status(message)
            self.refresh_queue()

        def action_approve(self) -> None:
            self._decide("approve")

        def action_approve_networked(self) -> None:
            self._decide("approve", build_network=True)

        def action_reject(self) -> None:
            self._decide("reject")

    return Dashboard()


@click.command("dashboard", short_help="Watch every bottle and decide proposals in a terminal UI.")
@click.pass_obj
def dashboard(state: AppState) -> None:
    """Every bottle's containers, its live audit log and its proposals; approve (a) or reject (r) them."""
    from bottle.adapters.local.proposal_desk import default_decider  # noqa: PLC0415
    from bottle.cli.proposals import make_desk  # noqa: PLC0415

    app = build_app(make_desk(state), engine_bottles(state), decided_by=default_decider())
    app.run()


def run_headless(desk: ProposalDesk, rows: Sequence[BottleRow] = (), *, decided_by: str = "test") -> Any:
    """The app with a fixed bottle list (for tests and demos); call ``run_test()`` on it."""
    return build_app(desk, lambda: list(rows), decided_by=decided_by)
