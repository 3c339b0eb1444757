"""The egress proxy relays the guard's refusal of a tunnel (its 403 naming the rule), not a 502.

A fake guard (an asyncio server) answers CONNECT as the real one would;
the flow is a mitmproxy test flow whose server connection goes through it,
as in upstream mode, and was refused (closed before TLS).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mitmproxy")

from mitmproxy import connection, http  # noqa: E402
from mitmproxy.test import taddons, tflow  # noqa: E402

from bottle.core.egress_policy import denial_text, encode_policy, policy_document  # noqa: E402
from bottle.sidecars.egress_proxy.addon import EgressProxyAddon  # noqa: E402
from bottle.sidecars.egress_proxy.refusal import MAX_BODY, ask_guard, parse_head  # noqa: E402

DENIAL = denial_text("host-not-allowed", "evil.example:443 is not on this bottle's egress allowlist",
                     role="guard", host="evil.example", agent="impl").encode()


def guard_403(body: bytes = DENIAL, rule: str = "host-not-allowed") -> bytes:
    return (b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain; charset=utf-8\r\nX-Bottle-Denied-By: guard\r\n"
            b"X-Bottle-Rule: %s\r\ncontent-length: %d\r\n\r\n%s" % (rule.encode(), len(body), body))


class FakeGuard:
    """Answers every CONNECT with ``answer`` and records the request heads it got."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.heads: list[bytes] = []
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> FakeGuard:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(self.answer)
            await writer.drain()
            writer.close()

        self._server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


def through_guard(url: str, port: int, *, established: bool = False, method: str = "GET") -> http.HTTPFlow:
    """A flow as mitmproxy's upstream mode hands it over: the tunnel to the guard refused, or up."""
    f = tflow.tflow(req=http.Request.make(method, url))
    server = f.server_conn
    server.via = ("http", ("127.0.0.1", port))
    server.address = (f.request.host, f.request.port)
    server.timestamp_start = 1.0
    if established:
        server.state = connection.ConnectionState.OPEN
        server.timestamp_tls_setup = 2.0
    else:
        server.state = connection.ConnectionState.CLOSED
        server.timestamp_tls_setup = None
    return f


def run_proxy(tmp: Path, answer: bytes, body: Callable[[FakeGuard, EgressProxyAddon], Awaitable[Any]]) -> tuple[Any, FakeGuard, list[dict[str, Any]]]:
    policy = tmp / "egress.json"
    policy.write_bytes(encode_policy(policy_document(["api.example"], agent="impl")))
    audit = tmp / "egress-proxy.jsonl"
    addon = EgressProxyAddon(environ={})

    async def main() -> tuple[Any, FakeGuard]:
        async with FakeGuard(answer) as guard:
            with taddons.context(addon) as tctx:
                tctx.configure(addon, bottle_policy=str(policy), bottle_audit_log=str(audit), bottle_identity="impl-abcde")
                result = await body(guard, addon)
            return result, guard

    result, guard = asyncio.run(main())
    addon.done()
    return result, guard, [json.loads(line) for line in audit.read_text().splitlines()]


def test_a_refused_tunnel_gets_the_guards_403_and_body(tmp_path: Path) -> None:
    async def go(guard: FakeGuard, addon: EgressProxyAddon) -> http.HTTPFlow:
        f = through_guard("https://evil.example/x?y=1", guard.port)
        await addon.requestheaders(f)
        return f

    f, guard, audit = run_proxy(tmp_path, guard_403(), go)
    assert f.response is not None and f.response.status_code == 403
    assert f.response.content == DENIAL
    assert f.response.headers["X-Bottle-Rule"] == "host-not-allowed"
    assert f.response.headers["X-Bottle-Denied-By"] == "guard"
    assert guard.heads == [b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n"]
    assert audit[-1]["verdict"] == "deny" and audit[-1]["rule"] == "host-not-allowed" and audit[-1]["status"] == 403
    assert not [line for line in audit if line["verdict"] == "allow"]


def test_a_tunnel_the_guard_now_grants_lets_the_request_go_on(tmp_path: Path) -> None:
    async def go(guard: FakeGuard, addon: EgressProxyAddon) -> http.HTTPFlow:
        f = through_guard("https://api.example/v1", guard.port)
        await addon.requestheaders(f)
        return f

    f, guard, audit = run_proxy(tmp_path, b"HTTP/1.1 200 Connection established\r\n\r\n", go)
    assert f.response is None and f.request.stream is True
    assert len(guard.heads) == 1
    assert audit[-1]["verdict"] == "allow" and audit[-1]["rule"] == "pass"


def test_an_established_tunnel_is_not_asked_about_again(tmp_path: Path) -> None:
    async def go(guard: FakeGuard, addon: EgressProxyAddon) -> http.HTTPFlow:
        f = through_guard("https://api.example/v1", guard.port, established=True)
        await addon.requestheaders(f)
        return f

    f, guard, _ = run_proxy(tmp_path, guard_403(), go)
    assert f.response is None
    assert guard.heads == []


def test_git_push_is_refused_by_the_proxy_without_asking_the_guard(tmp_path: Path) -> None:
    async def go(guard: FakeGuard, addon: EgressProxyAddon) -> http.HTTPFlow:
        f = through_guard("https://evil.example/o/r.git/git-receive-pack", guard.port, method="POST")
        await addon.requestheaders(f)
        return f

    f, guard, _ = run_proxy(tmp_path, guard_403(), go)
    assert f.response is not None and f.response.headers["X-Bottle-Rule"] == "git-push"
    assert guard.heads == []


def test_an_unreachable_guard_leaves_the_flow_to_mitmproxy(tmp_path: Path) -> None:
    async def go(guard: FakeGuard, addon: EgressProxyAddon) -> http.HTTPFlow:
        f = through_guard("https://api.example/v1", guard.port)
        await guard.__aexit__()  # nothing listens there any more
        f.server_conn.via = ("http", ("127.0.0.1", guard.port))
        await addon.requestheaders(f)
        return f

    f, _, _ = run_proxy(tmp_path, guard_403(), go)
    assert f.response is None  # mitmproxy's own connection attempt fails with its 502


def test_ask_guard_cuts_an_oversized_body_and_relays_other_refusals() -> None:
    async def go() -> Any:
        big = b"x" * (MAX_BODY + 5000)
        async with FakeGuard(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: %d\r\nSet-Cookie: a=b\r\n\r\n%s" % (len(big), big)) as g:
            return await ask_guard(("127.0.0.1", g.port), "api.example", 8443)

    refusal = asyncio.run(go())
    assert refusal.status == 502 and refusal.reason == "Bad Gateway"
    assert len(refusal.body) == MAX_BODY
    assert refusal.headers == ()  # only content-type and bottle's own headers are passed on


@pytest.mark.parametrize("head", [b"SSH-2.0-OpenSSH", b"HTTP/1.1 abc nope", b"HTTP/1.1 403 Forbidden\r\nno colon here"])
def test_parse_head_rejects_what_is_not_an_http_response(head: bytes) -> None:
    with pytest.raises(ValueError):
        parse_head(head)


def test_the_lean_master_keeps_only_what_a_proxy_needs_and_every_option() -> None:
    from mitmproxy import options
    from mitmproxy.tools.dump import DumpMaster

    from bottle.sidecars._mitm import KEEP, prune_addons

    async def go() -> tuple[set[str], list[str], DumpMaster]:
        master = DumpMaster(options.Options())
        removed = prune_addons(master.addons)
        return set(master.addons.lookup), removed, master

    kept, removed, master = asyncio.run(go())
    assert kept == set(KEEP)
    assert {"dumper", "save", "scriptloader", "maplocal", "proxyauth", "upstreamauth"} <= set(removed)
    assert [a for a in master.addons.chain if a.__class__.__name__.lower() == "dumper"] == []
    master.options.update(flow_detail=0, termlog_verbosity="warn")  # the entrypoints' --set flags still parse
