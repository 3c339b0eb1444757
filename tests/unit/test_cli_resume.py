"""What `bottle resume` carries over from supervise: the applied hosts and routes, and the transcript."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bottle.adapters.local import LocalStateStore
from bottle.adapters.local.proposal_desk import POLICY_FILE, ProposalDesk, restore_transcript
from bottle.adapters.local.proposal_queue import prepare_queue_dirs
from bottle.cli.resume import approved_in
from bottle.cli.start import egress_policy_bytes
from bottle.core import proposals as P
from bottle.core.egress_policy import decode_policy
from bottle.core.manifest_load import parse_json_manifest
from bottle.core.plan import with_approved
from bottle.sidecars.supervise.queue import FilingQueue
from supervise_support import FakeGuard

ME = "impl-abcde"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


class Clock:
    def now(self) -> datetime:
        return NOW

    def monotonic(self) -> float:
        return time.monotonic()


def agent():  # type: ignore[no-untyped-def]
    doc = {"image": "localhost/img:1", "bottle": {"egress": {"allow": ["pypi.org"]}, "supervise": True}}
    (a,) = parse_json_manifest(json.dumps({"agents": {"impl": doc}}), "/p/bottle.json", "/p")
    return a


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalStateStore]:
    s = LocalStateStore(str(tmp_path / "state"))
    s.write(ME, POLICY_FILE, egress_policy_bytes(agent(), ME))
    s.write(ME, P.SUPERVISE_SETTINGS, P.encode_settings(P.supervise_settings(["GH_TOKEN"])))
    prepare_queue_dirs(s, ME, None)
    guard = FakeGuard(s, ME)
    yield s
    guard.close()


def test_resume_keeps_what_was_approved_for_good_and_nothing_else(store: LocalStateStore) -> None:
    queue = FilingQueue(store.host_path(ME, P.FILINGS_DIR), store.host_path(ME, P.DECISIONS_DIR), ME)
    desk = ProposalDesk(store, Clock(), confirm_timeout=5.0)
    queue.file("docs", P.AllowHost("docs.example.com"), NOW)  # 1: approved for good
    queue.file("once", P.AllowHost("once.example.com"), NOW)  # 2: approved for one request
    queue.file("no", P.AllowHost("no.example.com"), NOW)  # 3: rejected
    queue.file("gh", P.AddRoute("https://api.github.com", "GH_TOKEN"), NOW)  # 4: approved route
    queue.file("later", P.AllowHost("later.example.com"), NOW)  # 5: still pending
    assert desk.approve(ME, 1, decided_by="op").ok
    assert desk.approve(ME, 2, decided_by="op", grant=P.Grant("single-use")).ok
    assert desk.reject(ME, 3, decided_by="op").ok
    assert desk.approve(ME, 4, decided_by="op").ok

    hosts, routes = approved_in(store, ME)
    assert hosts == ("docs.example.com",)
    assert [(r.upstream, r.token_ref, r.auth_scheme) for r in routes] == [("https://api.github.com", "env:GH_TOKEN", "bearer")]

    # The policy the resumed launch writes comes from the same merge: nothing approved is dropped.
    resumed = decode_policy(egress_policy_bytes(with_approved(agent(), hosts, routes), ME))
    assert {"pypi.org", "docs.example.com", "api.github.com"} <= set(resumed.allow)
    assert not {"once.example.com", "no.example.com", "later.example.com"} & set(resumed.allow)
    assert [r.upstream for r in resumed.routes] == ["https://api.github.com"]


def test_a_route_whose_credential_is_no_longer_offered_is_dropped_at_resume(store: LocalStateStore) -> None:
    queue = FilingQueue(store.host_path(ME, P.FILINGS_DIR), store.host_path(ME, P.DECISIONS_DIR), ME)
    queue.file("gh", P.AddRoute("https://api.github.com", "GH_TOKEN"), NOW)
    assert ProposalDesk(store, Clock(), confirm_timeout=5.0).approve(ME, 1, decided_by="op").ok
    assert [r.upstream for r in approved_in(store, ME, ("env:GH_TOKEN",))[1]] == ["https://api.github.com"]
    assert approved_in(store, ME, ())[1] == ()


def test_a_bottle_without_a_queue_resumes_with_nothing_added(tmp_path: Path) -> None:
    assert approved_in(LocalStateStore(str(tmp_path / "state")), ME) == ((), ())


def test_the_transcript_comes_back_byte_for_byte(store: LocalStateStore) -> None:
    desk = ProposalDesk(store, Clock())
    session = bytes(range(256)) * 64
    store.write(ME, "home/.claude/projects/-workspace/s.jsonl", session)
    store.write(ME, "home/.claude.json", b'{"theme": "dark"}\n')
    assert sorted(desk.snapshot_transcript(ME)) == [".claude", ".claude.json"]
    store.write(ME, "home/.claude/projects/-workspace/s.jsonl", b"overwritten later")
    store.write(ME, "home/.claude/stray", b"x")
    assert sorted(restore_transcript(store, ME)) == [".claude", ".claude.json"]
    assert store.read(ME, "home/.claude/projects/-workspace/s.jsonl") == session
    assert store.read(ME, "home/.claude.json") == b'{"theme": "dark"}\n'
    assert not store.exists(ME, "home/.claude/stray")
