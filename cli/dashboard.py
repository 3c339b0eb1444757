"""``bottle dashboard``: a terminal UI over every bottle: health, audit logs, proposals, decisions.

Panes: the bottles (containers and their state, from the engine's labels),
their proposals (pending first), the change the selected proposal makes
(allowlist delta or Dockerfile diff), the live tail of the selected bottle's
audit logs, and a status line with the outcome of the last decision.

Keys: ``a`` approve (asks for a note), ``r`` reject (asks for a note), ``g``
cycle the grant of the next approval (lifetime, once, 30m, 2h), ``u``
refresh now, ``q`` quit. Decisions go through the same desk as
``bottle proposals``, in a worker thread: the UI stays live while an
approval waits for the guard to confirm.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from bottle.cli.app import AppState

if TYPE_CHECKING:
    from bottle.adapters.local.proposal_desk import ProposalDesk

GRANTS = ("lifetime", "once", "30m", "2h")
AUDIT_TAIL_BYTES = 64 * 1024
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
    """One audit line (any sidecar's, or supervise's) as a short line for people."""
    try:
        record = json.loads(line)
    except ValueError:
        return line.decode("utf-8", "replace").strip()[:200]
    if not isinstance(record, dict):
        return str(record)[:200]
    time = str(record.get("time", ""))[11:19]
    role = record.get("role", "?")
    if role == "supervise":
        who = f" by {record['decided_by']}" if record.get("decided_by") else ""
        note = f": {record['note']}" if record.get("note") else ""
        return f"{time} supervise #{record.get('proposal')} {record.get('event')}{who} {record.get('change', '')}{note}"
    verdict = record.get("verdict", "")
    target = record.get("host", "")
    if record.get("path"):
        target += str(record["path"])[:60]
    return f"{time} {role} {verdict} {record.get('rule', '')} {record.get('method', '')} {target} {record.get('reason', '')}".strip()[:240]


class AuditTail:
    """New lines of every ``audit/*.jsonl`` of one bottle since the last call (starts near the end)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._offsets: dict[str, int] = {}

    def read(self) -> list[str]:
        lines: list[tuple[str, str]] = []
        try:
            names = sorted(n for n in os.listdir(self.directory) if n.endswith(".jsonl"))
        except OSError:
            return []
        for name in names:
            path = os.path.join(self.directory, name)
            try:
                size = os.path.getsize(path)
                offset = self._offsets.get(name, max(0, size - AUDIT_TAIL_BYTES))
                if size < offset:
                    offset = 0
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read(size - offset)
            except OSError:
                continue
            complete = chunk.rfind(b"\n") + 1
            self._offsets[name] = offset + complete
            for raw in chunk[:complete].splitlines():
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
                yield Label(self.title_text)
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
                yield Static("", id="preview")
                yield RichLog(id="audit", max_lines=500, wrap=False)
            yield Static("", id="status")
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
                table.add_row(row.identity, row.agent, row.health(), key=row.identity)
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
                    table.add_row(p.ref, p.kind, p.status, p.reason.replace("\n", " ")[:80], key=p.ref)
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
                pane.update("no proposals")
                return
            decided = f"\n{p.status} by {p.decided_by}: {p.note}" if p.decided_by else ""
            pane.update(f"{p.ref} {p.kind} ({p.status})\nreason: {p.reason}{decided}\n\n{preview(self.desk, p)}")
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
                log.write(line)

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
            self.query_one("#status", Static).update(f"[grant: {GRANTS[self.grant_index]}] {self.status_text}")

        # -- decisions -----------------------------------------------------------
        def action_grant(self) -> None:
            self.grant_index = (self.grant_index + 1) % len(GRANTS)
            self._show_status()

        def action_refresh(self) -> None:
            self.refresh_queue()
            self.refresh_engine()

        def _decide(self, action: str) -> None:
            p = self._current()
            if p is None or p.status != "pending":
                self.set_status("nothing pending selected" if p is None else f"{p.ref} is {p.status}, not pending")
                return
            if self.busy:
                self.set_status("a decision is still being applied")
                return
            grant = GRANTS[self.grant_index] if action == "approve" else ""
            title = f"{action} {p.ref}: {p.describe()}" + (f" ({grant})" if grant and p.kind == "allow-host" else "")

            def done(note: str | None) -> None:
                if note is None:
                    self.set_status("cancelled")
                    return
                self.busy = True
                self.set_status(f"{action}ing {p.ref}...")
                self.run_worker(lambda: self._apply(action, p, note, grant), thread=True, group="decide")

            self.push_screen(NoteScreen(title), done)

        def _apply(self, action: str, p: Proposal, note: str, grant: str) -> None:
            try:
                if action == "approve":
                    chosen = parse_grant(grant) if p.kind == "allow-host" else None
                    outcome = self.desk.approve(p.identity, p.id, decided_by=self.decided_by, note=note, grant=chosen)
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
