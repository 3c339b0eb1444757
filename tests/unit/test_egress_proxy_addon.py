"""The egress proxy addon with mitmproxy's test flows: push block, routes, credential swap, echo masking."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

pytest.importorskip("mitmproxy")

from mitmproxy import http  # noqa: E402
from mitmproxy.test import taddons, tflow  # noqa: E402

from bottle.core.egress_policy import encode_policy, policy_document  # noqa: E402
from bottle.core.routing import build_route_table  # noqa: E402
from bottle.sidecars.egress_proxy.addon import EgressProxyAddon  # noqa: E402
from bottle.sidecars.egress_proxy.scrub import Masker  # noqa: E402

ANTHROPIC_KEY = "sk-ant-api03-" + "Qw3rTy7UiOp1AsDfGh5JkLz" * 4
GITHUB_TOKEN = "ghp_" + "Zx9Cv8Bn7Mq6Wr5Et4Yu3Io2Pa1Sd0Fg9Hj8K"


class R(msgspec.Struct, frozen=True):
    upstream: str
    auth_scheme: str
    token_ref: str


TABLE = build_route_table(
    [
        R("https://api.anthropic.com", "x-api-key", "ANTHROPIC_API_KEY"),
        R("https://api.github.com/repos", "bearer", "GITHUB_TOKEN"),
        R("https://git.example/api", "basic", "GIT_BASIC"),
    ]
)


class Proxy:
    def __init__(self, tmp: Path, environ: dict[str, str]) -> None:
        self.policy_path = tmp / "policy" / "egress.json"
        self.policy_path.parent.mkdir(parents=True)
        self.policy_path.write_bytes(encode_policy(policy_document(["pypi.org"], TABLE, agent="impl")))
        self.audit_path = tmp / "audit" / "egress-proxy.jsonl"
        self.addon = EgressProxyAddon(environ=environ)
        self.tctx = taddons.context(self.addon)
        self.tctx.configure(
            self.addon,
            bottle_policy=str(self.policy_path),
            bottle_audit_log=str(self.audit_path),
            bottle_identity="impl-abcde",
        )

    def request(self, method: str, url: str, headers: dict[str, str] | None = None) -> http.HTTPFlow:
        req = http.Request.make(method, url)
        for k, v in (headers or {}).items():
            req.headers.add(k, v)
        f = tflow.tflow(req=req)
        asyncio.run(self.addon.requestheaders(f))
        return f

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.audit_path.read_text().splitlines()]


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    p = Proxy(tmp_path, {"BOTTLE_TOKEN_0": ANTHROPIC_KEY, "BOTTLE_TOKEN_1": GITHUB_TOKEN, "BOTTLE_TOKEN_2": "bot:pa55-w0rd-XYZ"})
    with p.tctx:
        yield p
    p.addon.done()


def denied(f: http.HTTPFlow, rule: str) -> bool:
    return f.response is not None and f.response.status_code == 403 and f.response.headers["X-Bottle-Rule"] == rule


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("POST", "https://api.github.com/repos/o/r.git/git-receive-pack"),  # on a route
        ("GET", "https://api.github.com/repos/o/r.git/info/refs?service=git-receive-pack"),
        ("GET", "https://github.com/o/r/info/refs?foo=1&service=GIT-RECEIVE-PACK"),
        ("POST", "https://github.com/o/r.git/git%2Dreceive%2Dpack"),
    ],
)
def test_git_push_is_refused_before_route_matching(proxy: Proxy, method: str, url: str) -> None:
    f = proxy.request(method, url, {"Authorization": "Bearer x"})
    assert denied(f, "git-push")
    assert "Authorization" in f.request.headers  # nothing was swapped: it never got that far
    assert "git gate" in f.response.get_text()  # type: ignore[union-attr]


def test_route_strips_the_agents_credentials_and_injects_the_real_one(proxy: Proxy) -> None:
    f = proxy.request(
        "POST",
        "https://api.anthropic.com/v1/messages",
        {
            "x-api-key": "bottle-placeholder-not-a-secret",
            "Authorization": "Bearer agent-own",
            "Proxy-Authorization": "Basic abc",
            "Cookie": "session=1",
            "X-Api-Key": "second-copy",
            "anthropic-version": "2023-06-01",
        },
    )
    assert f.response is None
    assert f.request.headers.get_all("x-api-key") == [ANTHROPIC_KEY]
    for gone in ("Authorization", "Proxy-Authorization", "Cookie"):
        assert gone not in f.request.headers
    assert f.request.headers["anthropic-version"] == "2023-06-01"
    assert f.request.stream is True  # bodies pass through unbuffered; the guard scans them


def test_route_path_prefix_decides(proxy: Proxy) -> None:
    on = proxy.request("GET", "https://api.github.com/repos/o/r", {"Authorization": "Bearer agent"})
    assert on.request.headers["Authorization"] == f"Bearer {GITHUB_TOKEN}"
    off = proxy.request("GET", "https://api.github.com/user", {"Authorization": "Bearer agent"})
    assert off.request.headers["Authorization"] == "Bearer agent"  # not a route: the guard judges it


def test_basic_route_renders_user_and_password(proxy: Proxy) -> None:
    f = proxy.request("GET", "https://git.example/api/v1/x")
    import base64

    assert f.request.headers["Authorization"] == "Basic " + base64.b64encode(b"bot:pa55-w0rd-XYZ").decode()


def test_off_route_requests_lose_only_proxy_authorization(proxy: Proxy) -> None:
    f = proxy.request("GET", "https://pypi.org/simple/", {"Authorization": "Bearer own", "Proxy-Authorization": "x"})
    assert f.request.headers["Authorization"] == "Bearer own"
    assert "Proxy-Authorization" not in f.request.headers
    assert proxy.audit()[-1]["rule"] == "pass"


def test_route_without_its_secret_is_refused(tmp_path: Path) -> None:
    p = Proxy(tmp_path, {"BOTTLE_TOKEN_1": GITHUB_TOKEN})
    with p.tctx:
        f = p.request("POST", "https://api.anthropic.com/v1/messages")
        assert denied(f, "route-token-missing")
        assert "BOTTLE_TOKEN_0" in f.response.get_text()  # type: ignore[union-attr]


def test_invalid_policy_refuses_everything_and_reload_fixes_it(proxy: Proxy) -> None:
    proxy.policy_path.write_text("{oops")
    assert denied(proxy.request("GET", "https://pypi.org/"), "policy-unavailable")
    tmp = proxy.policy_path.with_suffix(".tmp")
    tmp.write_bytes(encode_policy(policy_document([], TABLE)))
    os.replace(tmp, proxy.policy_path)
    assert proxy.request("GET", "https://pypi.org/").response is None


def test_echoed_secret_is_masked_in_response_headers_and_streamed_body(proxy: Proxy) -> None:
    f = proxy.request("POST", "https://api.anthropic.com/v1/messages")
    f.response = http.Response.make(401, b"", {"X-Echo": f"key={ANTHROPIC_KEY}", "Content-Length": "999"})
    proxy.addon.responseheaders(f)
    assert ANTHROPIC_KEY not in f.response.headers["X-Echo"]
    assert f.response.headers["X-Echo"] == "key=" + "*" * len(ANTHROPIC_KEY)
    body = b'{"error": "invalid x-api-key ' + ANTHROPIC_KEY.encode() + b'"}'
    stream = f.response.stream
    assert callable(stream)
    out = b"".join(stream(body[i : i + 7]) for i in range(0, len(body), 7)) + stream(b"")
    assert len(out) == len(body) and ANTHROPIC_KEY.encode() not in out
    assert out.startswith(b'{"error": "invalid x-api-key ***')


def test_off_route_responses_just_stream(proxy: Proxy) -> None:
    f = proxy.request("GET", "https://pypi.org/")
    f.response = http.Response.make(200, b"x")
    proxy.addon.responseheaders(f)
    assert f.response.stream is True


def test_audit_lines_never_hold_the_injected_secret(proxy: Proxy) -> None:
    proxy.request("POST", "https://api.anthropic.com/v1/messages")
    proxy.request("GET", f"https://pypi.org/?leak={ANTHROPIC_KEY}")
    proxy.request("GET", "https://api.github.com/repos/o/r.git/git-receive-pack")
    text = proxy.audit_path.read_text()
    assert ANTHROPIC_KEY not in text and GITHUB_TOKEN not in text
    assert [line["rule"] for line in proxy.audit()] == ["route", "pass", "git-push"]


def test_raw_tcp_is_cut(proxy: Proxy) -> None:
    f = tflow.ttcpflow()
    proxy.addon.tcp_start(f)
    assert f.error is not None


def test_masker_handles_needles_across_chunk_boundaries() -> None:
    m = Masker([b"SECRET-VALUE", b"SECRET"])
    data = b"aa SECRET-VALUE bb SECRET cc" * 3
    for size in (1, 2, 5, 13, 100):
        m = Masker([b"SECRET-VALUE", b"SECRET"])
        out = b"".join(m.stream(data[i : i + size]) for i in range(0, len(data), size)) + m.stream(b"")
        assert out == data.replace(b"SECRET-VALUE", b"*" * 12).replace(b"SECRET", b"*" * 6)
