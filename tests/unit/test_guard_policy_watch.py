"""The guard's live policy: it confirms each load with the files' digests, and enforces temporary grants."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("mitmproxy")

from mitmproxy import http  # noqa: E402
from mitmproxy.test import taddons, tflow  # noqa: E402

from bottle.core import proposals as P  # noqa: E402
from bottle.core.egress_policy import encode_policy, policy_document  # noqa: E402
from bottle.sidecars.guard.addon import GuardAddon  # noqa: E402
from bottle.sidecars.guard.spent import spent_grants  # noqa: E402

START = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.at = START

    def __call__(self) -> datetime:
        return self.at


async def resolver(host: str, port: int) -> list[str]:
    return ["151.101.0.223"]


class Guard:
    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "policy"
        self.dir.mkdir()
        self.audit_path = tmp / "guard.jsonl"
        self.clock = Clock()
        self.write(self.dir / "egress.json", encode_policy(policy_document(["pypi.org"], identity="impl-abcde")))
        self.start()

    def start(self) -> None:
        """Start a guard process afresh on the same files (a restart keeps nothing in memory)."""
        self.addon = GuardAddon(environ={}, resolver=resolver, clock=self.clock)
        self.tctx = taddons.context(self.addon)
        self.tctx.configure(self.addon, bottle_policy=str(self.dir / "egress.json"), bottle_audit_log=str(self.audit_path),
                            bottle_identity="impl-abcde")

    @staticmethod
    def write(path: Path, data: bytes) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def grants(self, *grants: P.HostGrant) -> bytes:
        data = P.encode_grants(P.GrantsDocument(grants=grants))
        self.write(self.dir / "grants.json", data)
        return data

    def audit(self, rule: str | None = None) -> list[dict[str, Any]]:
        lines = [json.loads(x) for x in self.audit_path.read_text().splitlines()] if self.audit_path.exists() else []
        return [x for x in lines if rule is None or x["rule"] == rule]

    def get(self, url: str) -> int:
        f = tflow.tflow(req=http.Request.make("GET", url))
        f.server_conn.peername = ("151.101.0.223", 443)
        asyncio.run(self.addon.requestheaders(f))
        if f.response is None:
            self.addon.request(f)
        return f.response.status_code if f.response is not None else 200


@pytest.fixture
def guard(tmp_path: Path) -> Guard:
    return Guard(tmp_path)


def test_every_load_is_confirmed_with_the_digests_of_the_files(guard: Guard) -> None:
    guard.addon.poll_policy()
    policy = (guard.dir / "egress.json").read_bytes()
    loaded = guard.audit("policy-loaded")
    assert len(loaded) == 1 and P.confirms(loaded[0], P.digest(policy), P.digest(None))
    guard.addon.poll_policy()
    assert len(guard.audit("policy-loaded")) == 1  # nothing changed, nothing said
    new = encode_policy(policy_document(["pypi.org", "api.example.com"], identity="impl-abcde"))
    guard.write(guard.dir / "egress.json", new)
    guard.addon.poll_policy()
    assert P.confirms(guard.audit("policy-loaded")[-1], P.digest(new), P.digest(None))
    assert guard.get("https://api.example.com/x") == 200


def test_a_broken_policy_is_reported_and_denies(guard: Guard) -> None:
    guard.addon.poll_policy()
    guard.write(guard.dir / "egress.json", b"{nope")
    guard.addon.poll_policy()
    assert guard.audit()[-1]["rule"] == "policy-unavailable"
    assert guard.get("https://pypi.org/simple/") == 403


def test_a_duration_grant_admits_until_it_expires(guard: Guard) -> None:
    assert guard.get("https://docs.example.com/") == 403
    data = guard.grants(P.HostGrant(3, "docs.example.com", "duration", "2026-11-26T12:10:00.000Z"))
    guard.addon.poll_policy()
    assert P.confirms(guard.audit("policy-loaded")[-1], P.digest((guard.dir / "egress.json").read_bytes()), P.digest(data))
    assert guard.get("https://docs.example.com/") == 200
    assert guard.get("https://docs.example.com/again") == 200
    guard.clock.at = START + timedelta(minutes=10)
    assert guard.get("https://docs.example.com/") == 403
    assert [x["route"] for x in guard.audit("grant-expired")] == ["proposal:3"]
    assert guard.get("https://pypi.org/simple/") == 200  # the permanent allowlist is untouched


def test_a_single_use_grant_admits_one_request(guard: Guard) -> None:
    guard.grants(P.HostGrant(4, "once.example.com", "single-use"))
    assert guard.get("https://once.example.com/file") == 200
    assert guard.get("https://once.example.com/file") == 403
    used = guard.audit("grant-used")
    assert len(used) == 1 and used[0]["route"] == "proposal:4"


def test_a_spent_single_use_grant_stays_spent_after_a_restart(guard: Guard) -> None:
    guard.grants(P.HostGrant(4, "once.example.com", "single-use"), P.HostGrant(6, "other.example.com", "single-use"))
    assert guard.get("https://once.example.com/file") == 200
    guard.addon.done()
    guard.start()  # the grants file still lists proposal 4: the host has not dropped it yet
    assert guard.get("https://once.example.com/file") == 403
    # an unspent grant survives the restart, and is spent once
    assert guard.get("https://other.example.com/") == 200
    assert guard.get("https://other.example.com/") == 403
    guard.addon.done()
    guard.start()
    assert guard.get("https://once.example.com/") == 403 and guard.get("https://other.example.com/") == 403
    assert [x["route"] for x in guard.audit("grant-used")] == ["proposal:4", "proposal:6"]


def test_only_grant_used_lines_spend_a_grant_and_a_cut_line_spoils_no_other(guard: Guard) -> None:
    guard.addon.done()
    with guard.audit_path.open("ab") as log:
        # another rule naming a proposal; a line cut short by a crash
        log.write(b'{"rule": "grant-expired", "route": "proposal:7"}\n')
        log.write(b'{"rule": "grant-used", "route": "propo')
    guard.start()
    guard.grants(P.HostGrant(7, "seven.example.com", "single-use"), P.HostGrant(8, "eight.example.com", "single-use"))
    assert guard.get("https://seven.example.com/") == 200
    guard.addon.done()
    guard.start()
    # the cut line was ended before the next one was written, so proposal 7's line reads back
    assert guard.get("https://seven.example.com/") == 403
    assert guard.get("https://eight.example.com/") == 200


def test_an_audit_log_that_is_not_a_file_denies_everything_without_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "guard.jsonl")
    started: list[Guard] = []
    thread = threading.Thread(target=lambda: started.append(Guard(tmp_path)), daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert started, "the guard hung opening a FIFO as its audit log"
    guard = started[0]
    guard.grants(P.HostGrant(4, "once.example.com", "single-use"))
    assert guard.get("https://pypi.org/simple/") == 403
    assert guard.get("https://once.example.com/") == 403


def test_a_grant_for_a_host_also_allowed_for_good_is_never_spent(guard: Guard) -> None:
    guard.grants(P.HostGrant(5, "pypi.org", "single-use"))
    assert guard.get("https://pypi.org/a") == 200
    assert guard.get("https://pypi.org/b") == 200
    assert guard.audit("grant-used") == []


def test_an_invalid_grants_file_grants_nothing_and_says_so(guard: Guard) -> None:
    guard.write(guard.dir / "grants.json", b'{"version": 1, "grants": [{"proposal": 1, "pattern": "*", "mode": "single-use"}]}')
    guard.addon.poll_policy()
    assert guard.audit()[-1]["rule"] == "grants-unavailable"
    assert guard.get("https://anything.example/") == 403
    assert guard.get("https://pypi.org/") == 200


def test_the_watch_runs_without_requests() -> None:
    async def scenario(tmp: Path) -> list[dict[str, Any]]:
        g = Guard(tmp)
        g.addon.running()
        await asyncio.sleep(0.25)
        g.write(g.dir / "egress.json", encode_policy(policy_document(["x.example"], identity="impl-abcde")))
        await asyncio.sleep(0.3)
        g.addon.done()
        return g.audit("policy-loaded")

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        assert len(asyncio.run(scenario(Path(tmp)))) == 2



def _grant_used_routes(lines: list[bytes]) -> set[str]:
    routes = set()
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("rule") == "grant-used" and isinstance(record.get("route"), str):
            routes.add(record["route"])
    return routes


@given(st.lists(st.one_of(
    st.binary(max_size=120),
    st.builds(lambda route, rule: json.dumps({"rule": rule, "route": route}).encode(),
              st.one_of(st.text(max_size=20), st.integers(), st.none(), st.integers(0, 99).map("proposal:{}".format)),
              st.sampled_from(["grant-used", "grant-expired"])),
    st.just(b'["grant-used"]'),
), max_size=20))
def test_whatever_the_log_holds_reading_it_back_never_fails(lines: list[bytes]) -> None:
    spent = spent_grants(lines)
    routes = _grant_used_routes(lines)
    # every id read back comes from a grant-used line naming that proposal, and none is missed
    assert spent == {int(r[len("proposal:"):]) for r in routes
                     if r.startswith("proposal:") and r[len("proposal:"):].isascii() and r[len("proposal:"):].isdigit()}
