"""``bottle proposals`` and ``bottle dashboard``, driven as a person would: CliRunner and textual's pilot."""

from __future__ import annotations

import json
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
            for _ in range(100):
                await pilot.pause(0.05)
                if not app.busy and "applied" in app.status_text:
                    break
            first = app.status_text
            # the other one, still pending, is now on top
            await pilot.press("r")
            await pilot.pause()
            await pilot.press("n", "o", "enter")
            for _ in range(100):
                await pilot.pause(0.05)
                if not app.busy and "rejected" in app.status_text:
                    break
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
