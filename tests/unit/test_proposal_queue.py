"""The proposal queue on disk and the host's desk: filings, tampering, approvals confirmed by the guard."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import msgspec
import pytest

from bottle.adapters.local import LocalStateStore
from bottle.adapters.local.proposal_desk import GRANTS_PATH, POLICY_FILE, ProposalDesk
from bottle.adapters.local.proposal_queue import HostQueue, prepare_queue_dirs
from bottle.core import proposals as P
from bottle.core.egress_policy import decode_policy, encode_policy, policy_document
from bottle.core.state import DOCKERFILE, PRESERVE_MARKER
from bottle.sidecars.supervise.queue import FilingQueue
from supervise_support import FakeGuard

ME = "impl-abcde"
OTHER = "other-zzzzz"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.at = NOW

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return time.monotonic()


@pytest.fixture
def store(tmp_path: Path) -> LocalStateStore:
    s = LocalStateStore(str(tmp_path / "state"))
    for identity in (ME, OTHER):
        s.write(identity, POLICY_FILE, encode_policy(policy_document(["pypi.org"], identity=identity, agent="impl")))
        s.write(identity, P.SUPERVISE_SETTINGS, P.encode_settings(P.supervise_settings(["GH_TOKEN"])))
        prepare_queue_dirs(s, identity, None)
    return s


@pytest.fixture
def guard(store: LocalStateStore) -> Iterator[FakeGuard]:
    g = FakeGuard(store, ME)
    yield g
    g.close()


def sidecar(store: LocalStateStore, identity: str = ME) -> FilingQueue:
    return FilingQueue(store.host_path(identity, P.FILINGS_DIR), store.host_path(identity, P.DECISIONS_DIR), identity)


def desk(store: LocalStateStore, **kw: object) -> ProposalDesk:
    return ProposalDesk(store, Clock(), confirm_timeout=kw.pop("confirm_timeout", 5.0), **kw)  # type: ignore[arg-type]


def policy_allow(store: LocalStateStore) -> tuple[str, ...]:
    return decode_policy(store.read(ME, POLICY_FILE) or b"").allow


def test_the_sidecar_files_one_file_per_proposal_with_increasing_ids(store: LocalStateStore) -> None:
    q = sidecar(store)
    a = q.file("deps", P.AllowHost("files.pythonhosted.org"), NOW)
    b = q.file("api", P.AddRoute("https://api.github.com", "GITHUB_TOKEN"), NOW)
    assert (a.id, b.id, a.status) == (1, 2, "pending")
    assert sorted(os.listdir(store.host_path(ME, "proposals"))) == ["1.json", "2.json"]
    found, refused = HostQueue(store, ME).scan()
    assert [p.ref for p in found] == [f"{ME}/1", f"{ME}/2"] and refused == []
    assert q.get(3) is None and q.get(0) is None


def test_a_filing_never_overwrites_another(store: LocalStateStore) -> None:
    q = sidecar(store)
    Path(store.host_path(ME, "proposals/1.json")).write_bytes(b"not mine")
    p = q.file("deps", P.AllowHost("a.com"), NOW)
    assert p.id == 2 and Path(store.host_path(ME, "proposals/1.json")).read_bytes() == b"not mine"


# -- tampering: refused with a reason, nothing applied ---------------------------------


def _forge(store: LocalStateStore, name: str, data: bytes) -> None:
    Path(store.host_path(ME, f"proposals/{name}")).write_bytes(data)


def _assert_nothing_applied(store: LocalStateStore, d: ProposalDesk, ref: str, before: bytes) -> P.ProposalRefused:
    identity, number = ref.split("/")
    with pytest.raises(P.ProposalRefused) as err:
        d.approve(identity, int(number), decided_by="ann")
    assert store.read(ME, POLICY_FILE) == before
    assert not store.exists(ME, GRANTS_PATH)
    assert store.list_dir(ME, "decisions") in ([], [".lock"])
    return err.value


def test_tampered_files_are_refused_with_a_clear_reason_and_nothing_applied(store: LocalStateStore, guard: FakeGuard) -> None:
    before = store.read(ME, POLICY_FILE) or b""
    good = P.new_filing(ME, 1, "r", P.AllowHost("evil.example"), NOW)
    data = msgspec.to_builtins(good)
    # 1: forged from inside the bottle, claiming to be approved already
    _forge(store, "1.json", msgspec.json.encode({**data, "status": "approved", "decided_by": "ann"}))
    # 2: another bottle's identity
    _forge(store, "2.json", P.encode_filing(P.new_filing(OTHER, 2, "r", P.AllowHost("evil.example"), NOW)))
    # 3: an oversized Dockerfile
    _forge(store, "3.json", msgspec.json.encode({**data, "id": 3, "payload": {"kind": "capability-change", "dockerfile": "ARG BASE\nFROM ${BASE}\n" + "#" * 70000}}))
    # out of range, and a symlink to the guard's CA key
    _forge(store, "10000.json", msgspec.json.encode({**data, "id": 10000}))
    os.symlink(store.host_path(ME, POLICY_FILE), store.host_path(ME, "proposals/4.json"))
    found, refused = HostQueue(store, ME).scan()
    assert found == []
    reasons = {r.name: r.reason for r in refused}
    assert "status 'approved'" in reasons["1.json"] and "forged" in reasons["1.json"]
    assert "for bottle 'other-zzzzz'" in reasons["2.json"]
    assert "the limit is 65536" in reasons["3.json"]
    assert "out of range" in reasons["10000.json"]
    assert "symlink" in reasons["4.json"]
    d = desk(store)
    for ref, expected in ((f"{ME}/1", "forged"), (f"{ME}/2", "other-zzzzz"), (f"{ME}/3", "65536"), (f"{ME}/4", "symlink")):
        assert expected in _assert_nothing_applied(store, d, ref, before).message
    with pytest.raises(P.ProposalRefused, match="out of range"):
        d.approve(ME, 10000, decided_by="ann")


def test_a_file_too_large_to_read_is_refused_unread(store: LocalStateStore) -> None:
    _forge(store, "1.json", b"{" + b" " * (P.MAX_FILING_BYTES + 10))
    _, refused = HostQueue(store, ME).scan()
    assert "a proposal is at most" in refused[0].reason


def test_a_forged_decision_in_the_wrong_place_is_not_a_decision(store: LocalStateStore) -> None:
    p = sidecar(store).file("r", P.AllowHost("a.com"), NOW)
    # The sidecar's mount holds only filings; a decision-shaped file there is just a refused filing.
    filing = P.new_filing(ME, 2, "r", P.AllowHost("b.com"), NOW)
    forged = P.Decision(1, 2, ME, "approved", "agent", "2026-11-26T12:00:00Z", filing, P.digest(b""))
    _forge(store, "2.json", P.encode_decision(forged))
    found, refused = HostQueue(store, ME).scan()
    assert [x.status for x in found] == ["pending"] and found[0].id == p.id
    assert "forged" in refused[0].reason


# -- approvals --------------------------------------------------------------------------


def test_approve_returns_once_the_guard_confirmed_and_the_sidecar_sees_it(store: LocalStateStore, guard: FakeGuard) -> None:
    q = sidecar(store)
    p = q.file("install deps", P.AllowHost("files.pythonhosted.org"), NOW)
    outcome = desk(store).approve(ME, p.id, decided_by="ann", note="ok for today")
    assert outcome.ok and "the guard confirmed" in outcome.message
    assert "files.pythonhosted.org" in policy_allow(store)
    seen = q.get(p.id)
    assert seen is not None and (seen.status, seen.note, seen.decided_by) == ("applied", "ok for today", "ann")
    events = [json.loads(x) for x in Path(store.host_path(ME, "audit/supervise.jsonl")).read_text().splitlines()]
    assert [e["event"] for e in events] == ["approved", "applied"]
    assert all(e["decided_by"] == "ann" for e in events)


def test_without_a_guard_the_approval_fails_and_is_rolled_back(store: LocalStateStore) -> None:
    before = store.read(ME, POLICY_FILE)
    p = sidecar(store).file("r", P.AllowHost("a.example"), NOW)
    outcome = desk(store, confirm_timeout=0.3).approve(ME, p.id, decided_by="ann")
    assert not outcome.ok and outcome.proposal.status == "failed"
    assert "did not confirm" in outcome.message and "rolled back" in outcome.message
    assert store.read(ME, POLICY_FILE) == before and not store.exists(ME, GRANTS_PATH)


def test_reject_changes_nothing_and_a_decided_proposal_cannot_be_decided_again(store: LocalStateStore, guard: FakeGuard) -> None:
    before = store.read(ME, POLICY_FILE)
    p = sidecar(store).file("r", P.AllowHost("a.example"), NOW)
    d = desk(store)
    outcome = d.reject(ME, p.id, decided_by="ann", note="no")
    assert outcome.ok and outcome.proposal.status == "rejected"
    assert store.read(ME, POLICY_FILE) == before
    with pytest.raises(P.ProposalRefused, match="is rejected; it cannot become approved"):
        d.approve(ME, p.id, decided_by="bob")


def test_timed_and_single_use_grants_go_to_the_grants_file(store: LocalStateStore, guard: FakeGuard) -> None:
    q = sidecar(store)
    once = q.file("one download", P.AllowHost("once.example"), NOW)
    timed = q.file("an hour of docs", P.AllowHost("docs.example"), NOW)
    d = desk(store)
    assert d.approve(ME, once.id, decided_by="ann", grant=P.Grant("single-use")).ok
    assert d.approve(ME, timed.id, decided_by="ann", grant=P.Grant("duration", 3600)).ok
    grants = P.decode_grants(store.read(ME, GRANTS_PATH) or b"")
    assert grants.grants == (
        P.HostGrant(once.id, "once.example", "single-use"),
        P.HostGrant(timed.id, "docs.example", "duration", "2026-11-26T13:00:00.000Z"),
    )
    assert "once.example" not in policy_allow(store)
    assert q.get(timed.id).expires_at == "2026-11-26T13:00:00.000Z"  # type: ignore[union-attr]


def test_a_capability_change_preserves_state_stops_the_agent_and_snapshots_the_transcript(store: LocalStateStore) -> None:
    store.write(ME, "home/.claude/projects/p/session.jsonl", b'{"turn": 1}\n')
    stopped: list[str] = []

    def stop(identity: str) -> None:
        stopped.append(identity)
        store.write(ME, "home/.claude/projects/p/session.jsonl", b'{"turn": 1}\n{"turn": 2}\n')

    p = sidecar(store).file("need jq", P.CapabilityChange("ARG BASE\nFROM ${BASE}\nRUN apt-get install -y jq\n"), NOW)
    outcome = desk(store, stop_agent=stop).approve(ME, p.id, decided_by="ann")
    assert outcome.ok and outcome.resume_hint == f"bottle resume {ME}"
    assert f"`bottle resume {ME}`" in outcome.message
    assert stopped == [ME] and store.exists(ME, PRESERVE_MARKER)
    assert b"jq" in (store.read(ME, DOCKERFILE) or b"")
    # snapshotted after the agent stopped: the last turn is in it
    assert store.read(ME, "transcript/.claude/projects/p/session.jsonl") == b'{"turn": 1}\n{"turn": 2}\n'


def test_resolve_takes_a_bare_number_only_when_one_bottle_has_a_queue(tmp_path: Path) -> None:
    s = LocalStateStore(str(tmp_path / "state"))
    prepare_queue_dirs(s, ME, None)
    sidecar(s).file("r", P.AllowHost("a.com"), NOW)
    d = desk(s)
    assert d.resolve(f"{ME}/1") == (ME, 1)
    assert d.resolve("1") == (ME, 1)
    # A second bottle: "1" might be its proposal rather than the one a person looked at.
    prepare_queue_dirs(s, OTHER, None)
    with pytest.raises(P.ProposalRefused, match=f"pending as {ME}/1; name the bottle"):
        d.resolve("1")
    sidecar(s, OTHER).file("r", P.AllowHost("b.com"), NOW)
    with pytest.raises(P.ProposalRefused, match="name the bottle"):
        d.resolve("1")
    assert d.resolve(f"{OTHER}/1") == (OTHER, 1)
    with pytest.raises(P.ProposalRefused, match="not a proposal reference"):
        d.resolve("abc")


def test_the_transcript_comes_back_byte_identical_on_resume(store: LocalStateStore) -> None:
    from bottle.adapters.local.proposal_desk import restore_transcript

    session = bytes(range(256)) * 40
    store.write(ME, "home/.claude/projects/p/session.jsonl", session)
    store.write(ME, "home/.claude.json", b'{"numStartups": 3}')
    p = sidecar(store).file("need jq", P.CapabilityChange("ARG BASE\nFROM ${BASE}\nRUN true\n"), NOW)
    assert desk(store).approve(ME, p.id, decided_by="ann").ok
    store.delete(ME, "home/.claude")
    store.write(ME, "home/.claude.json", b"{}")
    assert restore_transcript(store, ME) == [".claude", ".claude.json"]
    assert store.read(ME, "home/.claude/projects/p/session.jsonl") == session
    assert store.read(ME, "home/.claude.json") == b'{"numStartups": 3}'


def test_an_agent_has_a_bounded_number_of_undecided_proposals(store: LocalStateStore) -> None:
    from bottle.sidecars.supervise.queue import MAX_PENDING

    q = sidecar(store)
    for i in range(MAX_PENDING):
        q.file("r", P.AllowHost(f"h{i}.example"), NOW)
    with pytest.raises(P.ProposalRefused, match="still undecided"):
        q.file("r", P.AllowHost("one-more.example"), NOW)
    desk(store).reject(ME, 1, decided_by="ann")
    assert q.file("r", P.AllowHost("one-more.example"), NOW).id == MAX_PENDING + 1


# -- what a person saw is what is decided, and stays decided ------------------------------


def _rewrite(store: LocalStateStore, pid: int, payload: P.Payload, reason: str = "r") -> None:
    Path(store.host_path(ME, f"proposals/{pid}.json")).write_bytes(
        P.encode_filing(P.new_filing(ME, pid, reason, payload, NOW))
    )


def test_a_filing_rewritten_after_the_host_read_it_is_refused(store: LocalStateStore, guard: FakeGuard) -> None:
    before = store.read(ME, POLICY_FILE) or b""
    p = sidecar(store).file("docs", P.AllowHost("docs.example.com"), NOW)
    (shown,), _ = HostQueue(store, ME).scan()  # what `proposals show` or the dashboard displayed
    assert shown.payload == P.AllowHost("docs.example.com")
    _rewrite(store, p.id, P.AllowHost("evil.example"))  # swapped before the person approves
    found, refused = HostQueue(store, ME).scan()
    assert found == [] and "rewritten after the host first read it" in refused[0].reason
    assert "rewritten" in _assert_nothing_applied(store, desk(store), f"{ME}/{p.id}", before).message
    assert "evil.example" not in policy_allow(store)


def test_the_pin_is_what_gets_approved(store: LocalStateStore, guard: FakeGuard) -> None:
    p = sidecar(store).file("docs", P.AllowHost("docs.example.com"), NOW)
    HostQueue(store, ME).scan()
    assert desk(store).approve(ME, p.id, decided_by="ann").ok
    decision = HostQueue(store, ME).decision(p.id)
    assert decision is not None and decision.filing.payload == P.AllowHost("docs.example.com")
    assert decision.filing_digest == P.digest(store.read(ME, f"pinned/{p.id}.json"))


def test_a_decided_proposal_keeps_what_was_decided_whatever_its_file_says_later(store: LocalStateStore, guard: FakeGuard) -> None:
    from bottle.cli.resume import approved_in

    q = sidecar(store)
    host = q.file("docs", P.AllowHost("docs.example.com"), NOW)
    route = q.file("gh", P.AddRoute("https://api.github.com", "GH_TOKEN"), NOW)
    gone = q.file("pkg", P.AllowHost("pkg.example.com"), NOW)
    d = desk(store)
    for pid in (host.id, route.id, gone.id):
        assert d.approve(ME, pid, decided_by="ann").ok
    # From inside the bottle, after the decisions: rewrite two filings, delete one.
    _rewrite(store, host.id, P.AllowHost("evil.example"))
    _rewrite(store, route.id, P.AddRoute("https://evil.example", "AWS_SECRET_ACCESS_KEY"))
    os.unlink(store.host_path(ME, f"proposals/{gone.id}.json"))
    found, refused = HostQueue(store, ME).scan()
    assert [p.describe() for p in found] == [
        "allow docs.example.com",
        "route https://api.github.com (bearer, secret from env:GH_TOKEN)",
        "allow pkg.example.com",
    ]
    assert sorted(r.reason for r in refused) == sorted([
        f"{gone.id}.json is gone since it was decided",
        f"{host.id}.json was rewritten after it was decided; the decided copy stands",
        f"{route.id}.json was rewritten after it was decided; the decided copy stands",
    ])
    hosts, routes = approved_in(store, ME)  # what `bottle resume` relaunches with
    assert hosts == ("docs.example.com", "pkg.example.com")
    assert [(r.upstream, r.token_ref) for r in routes] == [("https://api.github.com", "env:GH_TOKEN")]


def test_a_stuffed_queue_is_read_only_up_to_its_limit(store: LocalStateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from bottle.adapters.local import proposal_queue

    monkeypatch.setattr(proposal_queue, "MAX_QUEUE_ENTRIES", 3)
    q = sidecar(store)
    for i in range(5):
        q.file("r", P.AllowHost(f"h{i}.example"), NOW)
    found, refused = HostQueue(store, ME).scan()
    assert [p.id for p in found] == [1, 2, 3]
    assert refused[0].reason == "the queue holds 5 entries; only the first 3 are read"


def test_a_queue_is_read_only_up_to_its_byte_budget(store: LocalStateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from bottle.adapters.local import proposal_queue

    q = sidecar(store)
    for i in range(4):
        q.file("r", P.AllowHost(f"h{i}.example"), NOW)
    size = os.path.getsize(store.host_path(ME, "proposals/1.json"))
    monkeypatch.setattr(proposal_queue, "MAX_QUEUE_BYTES", 2 * size + size // 2)
    found, refused = HostQueue(store, ME).scan()
    assert [p.id for p in found] == [1, 2]
    assert "from 3.json on, is not read" in refused[0].reason


# -- capability changes: the build's network, and failures ---------------------------------


CAP = "ARG BASE\nFROM ${BASE}\nRUN apt-get install -y jq\n"


def test_the_build_gets_the_network_only_when_the_approver_says_so(store: LocalStateStore, guard: FakeGuard) -> None:
    q = sidecar(store)
    quiet = q.file("jq", P.CapabilityChange(CAP), NOW)
    assert desk(store).approve(ME, quiet.id, decided_by="ann").ok
    assert not store.exists(ME, P.BUILD_NETWORK_MARKER)
    store.delete(ME, PRESERVE_MARKER)
    online = q.file("jq again", P.CapabilityChange(CAP + "RUN true\n"), NOW)
    outcome = desk(store).approve(ME, online.id, decided_by="ann", build_network=True)
    assert outcome.ok and outcome.proposal.build_network and store.exists(ME, P.BUILD_NETWORK_MARKER)
    host = q.file("h", P.AllowHost("a.example"), NOW)
    with pytest.raises(P.ProposalRefused, match="capability changes only"):
        desk(store).approve(ME, host.id, decided_by="ann", build_network=True)


def test_a_capability_change_that_fails_before_the_agent_stops_is_not_resumable(store: LocalStateStore) -> None:
    store.write(ME, DOCKERFILE, b"ARG BASE\nFROM ${BASE}\nRUN true\n")

    def stop(identity: str) -> None:
        raise OSError("the engine is gone")

    p = sidecar(store).file("need jq", P.CapabilityChange(CAP), NOW)
    outcome = desk(store, stop_agent=stop).approve(ME, p.id, decided_by="ann")
    assert outcome.proposal.status == "failed" and "the engine is gone" in outcome.message
    assert not store.exists(ME, PRESERVE_MARKER)
    assert store.read(ME, DOCKERFILE) == b"ARG BASE\nFROM ${BASE}\nRUN true\n"


def test_a_fifo_in_the_agents_home_does_not_hang_the_snapshot(store: LocalStateStore) -> None:
    import threading

    store.write(ME, "home/.claude/projects/p/session.jsonl", b"turn\n")
    os.mkfifo(store.host_path(ME, "home/.claude/trap"))
    p = sidecar(store).file("need jq", P.CapabilityChange(CAP), NOW)
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(desk(store).approve(ME, p.id, decided_by="ann")), daemon=True)
    worker.start()
    worker.join(30)
    assert result, "the snapshot hung on a FIFO"
    assert result[0].ok  # type: ignore[attr-defined]
    assert store.read(ME, "transcript/.claude/projects/p/session.jsonl") == b"turn\n"
    assert not os.path.lexists(store.host_path(ME, "transcript/.claude/trap"))


def test_the_sidecar_reads_the_decision_of_the_largest_dockerfile(store: LocalStateStore) -> None:
    q = sidecar(store)
    big = "ARG BASE\nFROM ${BASE}\n" + "RUN true\n" * ((P.MAX_DOCKERFILE_BYTES - 64) // 9)
    p = q.file("big", P.CapabilityChange(big), NOW)
    assert desk(store).approve(ME, p.id, decided_by="ann").ok
    seen = q.get(p.id)
    assert seen is not None and seen.status == "applied"


def test_a_route_may_name_only_a_credential_the_manifest_offers(store: LocalStateStore, guard: FakeGuard) -> None:
    before = store.read(ME, POLICY_FILE) or b""
    q = sidecar(store)
    for ref in ("file:~/.ssh/id_ed25519", "AWS_SECRET_ACCESS_KEY"):
        p = q.file("r", P.AddRoute("https://collector.example", ref), NOW)
        with pytest.raises(P.ProposalRefused, match="does not offer to proposals \\(offered: env:GH_TOKEN\\)"):
            desk(store).approve(ME, p.id, decided_by="ann")
        assert store.read(ME, POLICY_FILE) == before and HostQueue(store, ME).get(p.id).status == "pending"
    offered = q.file("gh", P.AddRoute("https://api.github.com", "env:GH_TOKEN"), NOW)
    assert desk(store).approve(ME, offered.id, decided_by="ann").ok
    store.delete(ME, P.SUPERVISE_SETTINGS)  # a bottle launched without supervise_token_refs offers none
    p = q.file("r", P.AddRoute("https://api.github.com", "GH_TOKEN"), NOW)
    with pytest.raises(P.ProposalRefused, match="offered: none"):
        desk(store).approve(ME, p.id, decided_by="ann")


def test_a_fifo_for_the_guards_log_fails_the_approval_instead_of_hanging_it(store: LocalStateStore) -> None:
    import threading

    from bottle.core.state import audit_log_path

    before = store.read(ME, POLICY_FILE)
    log = store.host_path(ME, audit_log_path("guard"))
    os.makedirs(os.path.dirname(log), exist_ok=True)
    os.mkfifo(log)
    p = sidecar(store).file("r", P.AllowHost("a.example"), NOW)
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(desk(store).approve(ME, p.id, decided_by="ann")), daemon=True)
    worker.start()
    worker.join(30)
    assert result, "the approval hung on a FIFO"
    outcome = result[0]
    assert outcome.proposal.status == "failed" and "not a regular file" in outcome.message  # type: ignore[attr-defined]
    assert store.read(ME, POLICY_FILE) == before
