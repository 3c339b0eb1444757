"""``bottle proposals`` and ``bottle dashboard``, driven as a person would: CliRunner and textual's pilot."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from bottle.adapters.local import LocalStateStore
from bottle.adapters.local.proposal_desk import POLICY_FILE
from bottle.adapters.local.proposal_queue import prepare_queue_dirs
from bottle.cli.app import AppState, cli
from bottle.cli.wiring import create_container
from bottle.core import proposals as P
from bottle.core.egress_policy import decode_policy, encode_policy, policy_document
from bottle.sidecars.supervise.queue import FilingQueue
from supervise_support import FakeGuard

ME = "impl-abcde"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def root(tmp_path: Path) -> str:
    return str(tmp_path / "state")


@pytest.fixture
def store(root: str) -> LocalStateStore:
    s = LocalStateStore(root)
    s.write(ME, POLICY_FILE, encode_policy(policy_document(["pypi.org"], identity=ME, agent="impl")))
    prepare_queue_dirs(s, ME, None)
    return s


@pytest.fixture
def guard(store: LocalStateStore) -> Iterator[FakeGuard]:
    g = FakeGuard(store, ME)
    yield g
    g.close()


def queue(store: LocalStateStore) -> FilingQueue:
    return FilingQueue(store.host_path(ME, "proposals"), store.host_path(ME, "decisions"), ME)


def run(root: str, *args: str) -> tuple[int, str, str]:
    container = create_container(runtime="memory", state_root=root)
    result = CliRunner().invoke(cli, list(args), obj=AppState(container=container), env={"BOTTLE_OPERATOR": "ann"})
    return result.exit_code, result.stdout, result.stderr


def test_ls_shows_pending_proposals_and_refused_files(root: str, store: LocalStateStore) -> None:
    queue(store).file("deps from pypi mirrors", P.AllowHost("files.pythonhosted.org"), NOW)
    Path(store.host_path(ME, "proposals/2.json")).write_text('{"status": "approved"}')
    code, out, err = run(root, "proposals", "ls")
    assert code == 0
    assert f"{ME}/1" in out and "allow files.pythonhosted.org" in out and "pending" in out
    assert f"refused {ME}/2.json" in err and "forged" in err
    code, out, _ = run(root, "proposals", "ls", "--format", "json")
    data = json.loads(out)
    assert data["proposals"][0]["ref"] == f"{ME}/1" and "forged" in data["refused"][0]["reason"]


def test_approve_applies_once_confirmed_and_names_the_operator(root: str, store: LocalStateStore, guard: FakeGuard) -> None:
    queue(store).file("deps", P.AllowHost("files.pythonhosted.org"), NOW)
    code, out, _ = run(root, "proposals", "approve", "1", "--note", "fine")
    assert code == 0, out
    assert f"applied {ME}/1: allow files.pythonhosted.org for the bottle's lifetime (the guard confirmed)" in out
    assert "files.pythonhosted.org" in decode_policy(store.read(ME, POLICY_FILE) or b"").allow
    p = queue(store).get(1)
    assert p is not None and (p.status, p.decided_by, p.note) == ("applied", "ann", "fine")
    code, out, _ = run(root, "proposals", "ls")
    assert "no pending proposals" in out


def test_approve_with_a_grant_and_json_output(root: str, store: LocalStateStore, guard: FakeGuard) -> None:
    queue(store).file("one file", P.AllowHost("once.example"), NOW)
    code, out, _ = run(root, "proposals", "approve", f"{ME}/1", "--grant", "once", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["status"] == "applied" and data["grant"] == {"mode": "single-use", "seconds": 0}


def test_reject_and_errors(root: str, store: LocalStateStore) -> None:
    queue(store).file("r", P.AllowHost("a.example"), NOW)
    code, out, _ = run(root, "proposals", "reject", f"{ME}/1", "--note", "no")
    assert code == 0 and f"rejected {ME}/1" in out
    code, out, err = run(root, "proposals", "approve", f"{ME}/1")
    assert code == 2 and "is rejected; it cannot become approved" in err
    code, _, err = run(root, "proposals", "approve", f"{ME}/7")
    assert code == 2 and "has no proposal 7" in err
    code, _, err = run(root, "proposals", "approve", f"{ME}/1", "--grant", "forever")
    assert code == 2 and "is not a grant" in err


def test_approve_fails_with_exit_1_when_the_guard_never_confirms(root: str, store: LocalStateStore) -> None:
    before = store.read(ME, POLICY_FILE)
    queue(store).file("r", P.AllowHost("a.example"), NOW)
    code, out, _ = run(root, "proposals", "approve", "1", "--timeout", "0.2")
    assert code == 1 and "did not confirm" in out
    assert store.read(ME, POLICY_FILE) == before


def test_show_prints_the_dockerfile_diff(root: str, store: LocalStateStore) -> None:
    store.write(ME, "Dockerfile", b"ARG BASE\nFROM ${BASE}\n")
    queue(store).file("need jq", P.CapabilityChange("ARG BASE\nFROM ${BASE}\nRUN apt-get install -y jq\n"), NOW)
    code, out, _ = run(root, "proposals", "show", f"{ME}/1")
    assert code == 0 and "+RUN apt-get install -y jq" in out and "reason: need jq" in out


# -- the dashboard -------------------------------------------------------------------------


async def settled(app, pilot, word: str) -> None:  # type: ignore[no-untyped-def]
    """Let the dashboard's decision worker finish (up to 5 s): until the status line says ``word``."""
    for _ in range(100):
        await pilot.pause(0.05)
        if not app.busy and word in app.status_text:
            return


def test_the_dashboard_approves_a_proposal_with_a_note(store: LocalStateStore, guard: FakeGuard) -> None:
    import asyncio

    from bottle.adapters.local.proposal_desk import ProposalDesk
    from bottle.adapters.local.system import SystemClock
    from bottle.cli.dashboard import BottleRow, run_headless

    queue(store).file("first", P.AllowHost("files.pythonhosted.org"), NOW)
    queue(store).file("second", P.AllowHost("evil.example"), NOW)
    desk = ProposalDesk(store, SystemClock(), confirm_timeout=5)
    app = run_headless(desk, [BottleRow(ME, "impl", {"agent": "running", "guard": "running"})], decided_by="ann")

    async def drive() -> tuple[str, str]:
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause()
            preview = str(app.query_one("#preview").render())
            await pilot.press("a")
            await pilot.pause()
            for key in "looks fine":
                await pilot.press("space" if key == " " else key)
            await pilot.press("enter")
            await settled(app, pilot, "applied")
            first = app.status_text
            # the other one, still pending, is now on top
            await pilot.press("r")
            await pilot.pause()
            await pilot.press("n", "o", "enter")
            await settled(app, pilot, "rejected")
            return preview, first + "\n" + app.status_text

    preview, status = asyncio.run(drive())
    assert "+ files.pythonhosted.org" in preview
    assert f"applied {ME}/1: allow files.pythonhosted.org for the bottle's lifetime (the guard confirmed)" in status
    assert f"rejected {ME}/2" in status
    first, second = queue(store).get(1), queue(store).get(2)
    assert first is not None and (first.status, first.note, first.decided_by) == ("applied", "looks fine", "ann")
    assert second is not None and (second.status, second.note) == ("rejected", "no")
    allow = decode_policy(store.read(ME, POLICY_FILE) or b"").allow
    assert "files.pythonhosted.org" in allow and "evil.example" not in allow


def test_approving_a_capability_change_says_how_to_resume(root: str, store: LocalStateStore) -> None:
    store.write(ME, "home/.claude/session.jsonl", b"turn 1\n")
    queue(store).file("need jq", P.CapabilityChange("ARG BASE\nFROM ${BASE}\nRUN apt-get install -y jq\n"), NOW)
    code, out, _ = run(root, "proposals", "approve", f"{ME}/1", "--note", "ok")
    assert code == 0, out
    assert f"run `bottle resume {ME}`" in out
    assert store.exists(ME, ".preserve") and store.read(ME, "transcript/.claude/session.jsonl") == b"turn 1\n"


# -- what an agent wrote is shown literally, never acted on by the terminal or the UI -----------

MARKUP = "[/nope] [on black][black]hidden[/][/] [bold red]FAKE: approved[/]"
ESCAPES = "\x1b[2J\x1b[H \x1b]52;c;aGVsbG8=\x07 \u202eevil\u202c \x9b31m ok\rfake"
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\u202c", "\r")
SHOWN = ("\\x1b[2J\\x1b[H", "\\x1b]52;c;aGVsbG8=\\x07", "\\u202eevil\\u202c", "\\x9b31m", "ok\\x0dfake")


def forged(reason: str, **fields: str) -> P.Proposal:
    """A proposal with text the filing checks would refuse, as if it got past them (defence in depth)."""
    return P.Proposal(
        id=1, identity=ME, kind="allow-host", reason=reason, payload=P.AllowHost(f"a.example{ESCAPES}"),
        status=fields.pop("status", "pending"), filed_at="2026-11-26T12:00:00Z", **fields,
    )


class ForgedDesk:
    """The real desk (and its refusals), except that its queue holds ``proposal``."""

    def __init__(self, desk: object, proposal: P.Proposal) -> None:
        self.desk, self.proposal = desk, proposal

    def __getattr__(self, name: str) -> object:
        return getattr(self.desk, name)

    def scan(self, identities: object = None) -> tuple[list[P.Proposal], list[object]]:
        return [self.proposal], self.desk.scan(identities)[1]  # type: ignore[attr-defined]

    def queue(self, identity: str) -> object:
        return type("Queue", (), {"get": lambda _, n: self.proposal})()


@pytest.fixture
def forged_cli(monkeypatch: pytest.MonkeyPatch, store: LocalStateStore) -> P.Proposal:
    import bottle.cli.proposals as cli_proposals

    p = forged(f"{MARKUP} {ESCAPES}", status="failed", decided_by="ann", decided_at="2026-11-26T12:01:00Z",
               note=f"note {ESCAPES}", error=f"error {ESCAPES}")
    real = cli_proposals.make_desk
    monkeypatch.setattr(cli_proposals, "make_desk", lambda state, **kw: ForgedDesk(real(state, **kw), p))
    return p


def assert_escaped(text: str) -> None:
    assert not [c for c in RAW if c in text], repr(text)
    assert all(s in text for s in SHOWN), text


def test_show_prints_no_control_character_of_the_agent(root: str, forged_cli: P.Proposal) -> None:
    code, out, _ = run(root, "proposals", "show", f"{ME}/1")
    assert code == 0
    assert f"reason: {MARKUP} " in out
    for part in out.split("reason: ", 1)[1].split("note ", 1)[1].split("error ", 1):
        assert_escaped(part.split("\n")[0])
    assert_escaped(out.split("error ", 1)[1].split("\n")[0])
    assert "+ a.example\\x1b[2J" in out and not [c for c in RAW if c in out]


def test_ls_prints_no_control_character_and_json_keeps_the_exact_text(root: str, forged_cli: P.Proposal) -> None:
    code, out, _ = run(root, "proposals", "ls", "--all")
    assert code == 0 and "\\x1b[2J\\x1b[H" in out and not [c for c in RAW if c in out]
    code, out, _ = run(root, "proposals", "ls", "--all", "--format", "json")
    assert code == 0 and not [c for c in RAW if c in out]
    (shown,) = json.loads(out)["proposals"]
    assert (shown["reason"], shown["note"], shown["error"]) == (forged_cli.reason, forged_cli.note, forged_cli.error)


def hostile_refusal(store: LocalStateStore) -> None:
    """A filing whose unknown field name the refusal reason quotes: text that reaches the host today."""
    Path(store.host_path(ME, "proposals/2.json")).write_text(json.dumps({
        "version": 1, "id": 2, "identity": ME, "reason": "r", "payload": {"kind": "allow-host", "host": "a.example"},
        "filed_at": "2026-11-26T12:00:00Z", ESCAPES: 1,
    }))


def test_ls_quotes_a_refused_files_hostile_content_escaped(root: str, store: LocalStateStore) -> None:
    hostile_refusal(store)
    code, _, err = run(root, "proposals", "ls")
    assert code == 0 and f"refused {ME}/2.json" in err
    assert_escaped(err)
    code, out, _ = run(root, "proposals", "ls", "--format", "json")
    assert not [c for c in RAW if c in out] and ESCAPES in json.loads(out)["refused"][0]["reason"]


def rendered(app: object, selector: str) -> str:
    """What the widget draws on screen, line by line."""
    from textual.geometry import Region

    widget = app.query_one(selector)  # type: ignore[attr-defined]
    strips = widget.render_lines(Region(0, 0, *widget.outer_size))
    return "\n".join("".join(segment.text for segment in strip) for strip in strips)


def drive_dashboard(desk: object, *, after: object = None) -> dict[str, str]:
    import asyncio

    from bottle.cli.dashboard import BottleRow, run_headless

    app = run_headless(desk, [BottleRow(ME, f"impl{MARKUP}", {"agent": "running"})])  # type: ignore[arg-type]

    async def drive() -> dict[str, str]:
        async with app.run_test(size=(200, 48)) as pilot:
            for _ in range(40):
                await pilot.pause(0.05)
                if rendered(app, "#audit").strip():
                    break
            return {s: rendered(app, s) for s in ("#bottles", "#proposals", "#preview", "#audit", "#status")}

    return asyncio.run(drive())


def test_the_dashboard_shows_markup_in_a_reason_literally(store: LocalStateStore) -> None:
    from bottle.adapters.local.proposal_desk import ProposalDesk
    from bottle.adapters.local.system import SystemClock

    queue(store).file(MARKUP, P.AllowHost("files.pythonhosted.org"), NOW)
    screen = drive_dashboard(ProposalDesk(store, SystemClock()))
    assert f"reason: {MARKUP}" in screen["#preview"]
    assert "[/nope] [on black][black]hidden[/][/]" in screen["#proposals"]
    assert f"impl{MARKUP}"[:30] in screen["#bottles"]


def test_the_dashboard_shows_control_characters_as_escapes_and_skips_a_fifo(store: LocalStateStore) -> None:
    from bottle.adapters.local.proposal_desk import ProposalDesk
    from bottle.adapters.local.system import SystemClock

    audit = Path(store.host_path(ME, "audit"))
    (audit / "guard").mkdir(parents=True)
    os.mkfifo(audit / "guard" / "guard.jsonl")  # planted by a sidecar: must not hang the UI
    (audit / "egress").mkdir()
    (audit / "egress" / "egress.jsonl").write_text(json.dumps({
        "time": "2026-11-26T12:00:01Z", "role": "egress", "verdict": "deny", "host": "x.example",
        "reason": "\x1b[2J\x1b[H[/nope] [on black]hidden[/] \u202e",
    }) + "\n")
    hostile_refusal(store)
    p = forged(f"{MARKUP} {ESCAPES}", status="failed", decided_by="ann", note=f"note {ESCAPES}")
    screen = drive_dashboard(ForgedDesk(ProposalDesk(store, SystemClock()), p))
    for pane in screen.values():
        assert not [c for c in RAW if c in pane], pane
    assert f"reason: {MARKUP} \\x1b[2J\\x1b[H" in screen["#preview"]
    assert "note \\x1b[2J" in screen["#preview"] and "+ a.example\\x1b[2J" in screen["#preview"]
    assert "\\x1b]52;c;aGVsbG8=\\x07" in screen["#preview"]
    assert "[/nope] [on black][black]hidden[/][/]" in screen["#proposals"]
    assert "x.example \\x1b[2J\\x1b[H[/nope] [on black]hidden[/] \\u202e" in screen["#audit"]
    assert f"refused {ME}/2.json: 2.json: malformed proposal (Object contains unknown field `\\x1b[2J\\x1b[H" in screen["#status"]


def test_the_dashboard_grants_a_capability_build_the_network_only_with_shift_a(store: LocalStateStore) -> None:
    import asyncio

    from bottle.adapters.local.proposal_desk import ProposalDesk
    from bottle.adapters.local.system import SystemClock
    from bottle.cli.dashboard import BottleRow, run_headless

    queue(store).file("need jq", P.CapabilityChange("ARG BASE\nFROM ${BASE}\nRUN apt-get install -y jq\n"), NOW)
    desk = ProposalDesk(store, SystemClock(), confirm_timeout=5)
    app = run_headless(desk, [BottleRow(ME, "impl", {"agent": "running"})], decided_by="ann")

    async def drive() -> str:
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause()
            await pilot.press("A")
            await pilot.pause()
            await pilot.press("o", "k", "enter")
            await settled(app, pilot, "applied")
            return app.status_text

    status = asyncio.run(drive())
    assert f"applied {ME}/1" in status, status
    decided = queue(store).get(1)
    assert decided is not None and decided.build_network
    assert store.exists(ME, P.BUILD_NETWORK_MARKER)


def test_approve_build_network_is_for_capability_changes(root: str, store: LocalStateStore) -> None:
    queue(store).file("r", P.AllowHost("a.example"), NOW)
    code, _, err = run(root, "proposals", "approve", f"{ME}/1", "--build-network")
    assert code == 2 and "capability changes only" in err
