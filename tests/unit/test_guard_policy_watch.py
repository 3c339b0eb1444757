"""The guard's live policy: it confirms each load with the files' digests, and enforces temporary grants."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mitmproxy")

from mitmproxy import http  # noqa: E402
from mitmproxy.test import taddons, tflow  # noqa: E402

from bottle.core import proposals as P  # noqa: E402
from bottle.core.egress_policy import encode_policy, policy_document  # noqa: E402
from bottle.sidecars.guard.addon import GuardAddon  # noqa: E402

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
