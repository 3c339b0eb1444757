"""The guard addon, driven with mitmproxy's own test flows (taddons, tflow)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

pytest.importorskip("mitmproxy")

from mitmproxy import connection, http  # noqa: E402
from mitmproxy.proxy import server_hooks  # noqa: E402
from mitmproxy.test import taddons, tflow  # noqa: E402

from bottle.core.egress_policy import encode_policy, policy_document  # noqa: E402
from bottle.core.routing import build_route_table, render_auth_header  # noqa: E402
from bottle.sidecars.guard.addon import GuardAddon  # noqa: E402

ANTHROPIC_KEY = "sk-ant-api03-" + "Qw3rTy7UiOp1AsDfGh5JkLz" * 4
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"


class R(msgspec.Struct, frozen=True):
    upstream: str
    auth_scheme: str
    token_ref: str


TABLE = build_route_table([R("https://api.anthropic.com", "x-api-key", "ANTHROPIC_API_KEY")])
ROUTE_HEADER = render_auth_header(TABLE.routes[0], ANTHROPIC_KEY)


class Resolver:
    """A fake DNS: answers from a table, counts questions."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        seq = self.answers.get(host)
        if not seq:
            raise OSError("no such host")
        return seq.pop(0) if len(seq) > 1 else seq[0]


class Guard:
    """A configured guard addon in a mitmproxy test context."""

    def __init__(self, tmp: Path, resolver: Resolver, environ: dict[str, str]) -> None:
        self.policy_path = tmp / "policy" / "egress.json"
        self.audit_path = tmp / "audit" / "guard.jsonl"
        self.policy_path.parent.mkdir(parents=True, exist_ok=True)
        self.write_policy(["pypi.org", "*.pythonhosted.org"])
        self.resolver = resolver
        self.addon = GuardAddon(environ=environ, resolver=resolver)
        self.tctx = taddons.context(self.addon)
        self.tctx.configure(
            self.addon,
            bottle_policy=str(self.policy_path),
            bottle_audit_log=str(self.audit_path),
            bottle_identity="impl-abcde",
            bottle_body_buffer=4096,
        )

    def write_policy(self, allow: list[str], allow_private: tuple[str, ...] = ()) -> None:
        doc = policy_document(allow, TABLE, allow_private=allow_private, identity="impl-abcde", agent="impl")
        tmp = self.policy_path.with_suffix(".tmp")
        tmp.write_bytes(encode_policy(doc))
        os.replace(tmp, self.policy_path)  # how the host updates it: atomically

    def audit(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]

    def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        connected_to: str | None = "151.101.0.223",
    ) -> http.HTTPFlow:
        """Run requestheaders + request like mitmproxy does for one buffered request."""
        req = make_request(method, url, headers or {}, body)
        f = tflow.tflow(req=req)
        f.server_conn.peername = (connected_to, 443) if connected_to else None
        asyncio.run(self.addon.requestheaders(f))
        if f.response is None and f.error is None:
            if callable(f.request.stream) and body:
                sent = f.request.stream(body) + f.request.stream(b"")
                assert f.error is not None or sent == body
            self.addon.request(f)
        return f


def make_request(method: str, url: str, headers: dict[str, str], body: bytes, length: bool = True) -> http.Request:
    """A request as it arrives: headers exactly as given, the body as raw bytes."""
    req = http.Request.make(method, url)
    req.headers.pop("content-length", None)
    for name, value in headers.items():
        req.headers[name] = value
    if body:
        req.raw_content = body
        if length and "transfer-encoding" not in req.headers:
            req.headers["content-length"] = str(len(body))
    return req


@pytest.fixture
def guard(tmp_path: Path) -> Iterator[Guard]:
    resolver = Resolver({"pypi.org": [["151.101.0.223"]], "files.pythonhosted.org": [["151.101.64.223"]], "api.anthropic.com": [["160.79.104.10"]]})
    g = Guard(tmp_path, resolver, {"BOTTLE_TOKEN_0": ANTHROPIC_KEY})
    with g.tctx:
        yield g
    g.addon.done()


def denied(f: http.HTTPFlow, rule: str) -> bool:
    return f.response is not None and f.response.status_code == 403 and f.response.headers.get("X-Bottle-Rule") == rule


def assert_no_secret_in_audit(g: Guard, *secrets: str) -> None:
    text = g.audit_path.read_text()
    for s in (ANTHROPIC_KEY, AWS_KEY_ID, *secrets):
        assert s not in text


# -- the basics -------------------------------------------------------------------


def test_allowed_request_passes_and_is_audited(guard: Guard) -> None:
    f = guard.request("GET", "https://pypi.org/simple/requests/")
    assert f.response is None and f.error is None
    line = guard.audit()[-1]
    assert (line["verdict"], line["rule"], line["host"], line["path"]) == ("allow", "allowed", "pypi.org", "/simple/requests/")
    assert line["identity"] == "impl-abcde" and line["role"] == "guard" and line["time"].endswith("Z")


def test_host_not_allowed_gets_a_403_saying_the_rule_and_how_to_ask(guard: Guard) -> None:
    f = guard.request("GET", "https://evil.example/x")
    assert denied(f, "host-not-allowed")
    body = f.response.get_text()  # type: ignore[union-attr]
    assert "rule: host-not-allowed" in body and "bottle.egress.allow" in body and "'evil.example'" in body
    assert guard.audit()[-1]["verdict"] == "deny"
    assert guard.resolver.asked == []  # a name that is not allowed is never even looked up


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "https://pypi.org/o/r.git/info/refs?service=git-receive-pack"),
        ("GET", "https://pypi.org/o/r.git/info/refs?a=b&service=git%2Dreceive%2Dpack"),
        ("POST", "https://pypi.org/o/r.git/git-receive-pack"),
        ("POST", "https://pypi.org/o/r.git/GIT-RECEIVE-PACK"),
        ("POST", "https://pypi.org/o/r.git//git-receive-pack/"),
        ("POST", "https://pypi.org/o/r.git/git%252Dreceive-pack"),
    ],
)
def test_git_push_spellings_are_refused(guard: Guard, method: str, url: str) -> None:
    assert denied(guard.request(method, url, body=b"0000" if method == "POST" else b""), "git-push")


def test_aws_key_in_query_is_refused_and_the_audit_line_is_redacted(guard: Guard) -> None:
    f = guard.request("GET", f"https://pypi.org/simple/?key={AWS_KEY_ID}&page=2")
    assert denied(f, "secret-in-url")
    line = guard.audit()[-1]
    assert line["path"] == "/simple/?key=[REDACTED:aws-access-key-id]&page=2"
    assert line["findings"] == ["AWS access key id in url"]
    assert_no_secret_in_audit(guard)


@pytest.mark.parametrize(
    "encoded",
    [
        ANTHROPIC_KEY,
        base64.b64encode(ANTHROPIC_KEY.encode()).decode(),
        base64.b64encode(b"x" + ANTHROPIC_KEY.encode()).decode(),
        base64.b64encode(b"xy" + ANTHROPIC_KEY.encode()).decode(),
        ANTHROPIC_KEY.encode().hex(),
        "".join(f"%{b:02X}" for b in ANTHROPIC_KEY.encode()),
    ],
)
def test_brokered_secret_in_any_encoding_is_refused_in_header_and_body(guard: Guard, encoded: str) -> None:
    assert denied(guard.request("GET", "https://pypi.org/", {"X-Note": encoded}), "secret-in-header")
    assert denied(guard.request("POST", "https://pypi.org/upload", body=encoded.encode()), "secret-in-body")
    assert_no_secret_in_audit(guard, encoded)


def test_injected_header_passes_on_its_route_only(guard: Guard) -> None:
    name, value = ROUTE_HEADER
    assert guard.request("POST", "https://api.anthropic.com/v1/messages", {name: value}, b"{}").response is None
    assert denied(guard.request("POST", "https://pypi.org/", {name: value}, b"{}"), "secret-in-header")
    assert denied(guard.request("POST", "https://api.anthropic.com/v1/messages", {"Authorization": f"Bearer {ANTHROPIC_KEY}"}, b"{}"), "secret-in-header")
    assert_no_secret_in_audit(guard)


def test_domain_fronting_is_refused(guard: Guard) -> None:
    assert denied(guard.request("GET", "https://pypi.org/", {"Host": "evil.example"}), "host-mismatch")


# -- bodies -------------------------------------------------------------------------


def stream_flow(guard: Guard, headers: dict[str, str]) -> http.HTTPFlow:
    f = tflow.tflow(req=make_request("POST", "https://pypi.org/upload", headers, b""))
    asyncio.run(guard.addon.requestheaders(f))
    return f


def test_large_clean_body_streams_through_unchanged(guard: Guard) -> None:
    f = stream_flow(guard, {"Transfer-Encoding": "chunked"})
    assert callable(f.request.stream)
    chunks = [bytes([97 + i % 26]) * 3000 for i in range(40)]
    out = b"".join(f.request.stream(c) for c in chunks) + f.request.stream(b"")  # type: ignore[operator,misc]
    assert out == b"".join(chunks)
    guard.addon.request(f)
    assert guard.audit()[-1]["verdict"] == "allow"


@pytest.mark.parametrize("split", [1, 7, 20, len(ANTHROPIC_KEY) - 1])
def test_secret_split_across_streamed_chunks_is_stopped_before_any_of_it_leaves(guard: Guard, split: int) -> None:
    f = stream_flow(guard, {"Content-Length": str(200_000)})
    secret = ANTHROPIC_KEY.encode()
    chunks = [b"a" * 9000 + secret[:split], secret[split:] + b"b" * 9000, b"c" * 9000]
    sent = b"".join(f.request.stream(c) for c in chunks) + f.request.stream(b"")  # type: ignore[operator,misc]
    assert secret[:split] not in sent[-len(secret) :] and secret not in sent
    assert len(sent) < 9000  # nothing after the secret, and the held-back tail stays held
    assert f.error is not None  # killed
    line = guard.audit()[-1]
    assert (line["event"], line["verdict"], line["rule"]) == ("body", "deny", "secret-in-body")
    assert_no_secret_in_audit(guard)


def test_secret_in_a_streamed_body_one_byte_at_a_time(guard: Guard) -> None:
    f = stream_flow(guard, {"Transfer-Encoding": "chunked"})
    data = b"x" * 2000 + AWS_KEY_ID.encode() + b"y" * 2000
    sent = b"".join(f.request.stream(bytes([b])) for b in data)  # type: ignore[operator,misc]
    assert AWS_KEY_ID[:4].encode() not in sent
    assert guard.audit()[-1]["rule"] == "secret-in-body"


def test_streamed_body_with_content_encoding_is_refused(guard: Guard) -> None:
    f = stream_flow(guard, {"Content-Encoding": "gzip", "Content-Length": "100000"})
    assert f.error is not None and guard.audit()[-1]["rule"] == "body-encoding"  # too big for a 403: cut off


def test_small_gzip_body_is_decoded_before_the_scan(guard: Guard) -> None:
    body = gzip.compress(b"token=" + ANTHROPIC_KEY.encode())
    f = guard.request("POST", "https://pypi.org/", {"Content-Encoding": "gzip"}, body)
    assert denied(f, "secret-in-body")
    clean = guard.request("POST", "https://pypi.org/", {"Content-Encoding": "gzip"}, gzip.compress(b"hello"))
    assert clean.response is None


def test_gzip_bomb_and_unscannable_codings_are_refused(guard: Guard) -> None:
    bomb = gzip.compress(b"\0" * (4096 * 8 + 100))
    assert denied(guard.request("POST", "https://pypi.org/", {"Content-Encoding": "gzip"}, bomb), "body-encoding")
    assert denied(guard.request("POST", "https://pypi.org/", {"Content-Encoding": "br"}, b"\x0b\x02\x80hi\x03"), "body-encoding")


# -- policy file ---------------------------------------------------------------------


def test_allowlist_reloads_from_its_file_without_a_restart(guard: Guard) -> None:
    assert denied(guard.request("GET", "https://example.org/"), "host-not-allowed")
    guard.write_policy(["pypi.org", "example.org"])
    guard.resolver.answers["example.org"] = [["93.184.215.14"]]
    assert guard.request("GET", "https://example.org/").response is None
    guard.write_policy(["pypi.org"])
    assert denied(guard.request("GET", "https://example.org/"), "host-not-allowed")


@pytest.mark.parametrize("content", [b"{not json", b'{"version": 99}', b'{"version": 1, "allow": ["*"]}'])
def test_invalid_policy_denies_everything_until_fixed(guard: Guard, content: bytes) -> None:
    guard.policy_path.write_bytes(content)
    f = guard.request("GET", "https://pypi.org/")
    assert denied(f, "policy-unavailable")
    guard.write_policy(["pypi.org"])
    assert guard.request("GET", "https://pypi.org/").response is None


def test_missing_policy_denies_everything(guard: Guard) -> None:
    guard.policy_path.unlink()
    assert denied(guard.request("GET", "https://pypi.org/"), "policy-unavailable")


def test_unreadable_secrets_file_denies_everything(tmp_path: Path) -> None:
    g = Guard(tmp_path, Resolver({"pypi.org": [["151.101.0.223"]]}), {})
    with g.tctx:
        g.tctx.configure(g.addon, bottle_secrets_file=str(tmp_path / "missing.json"))
        assert denied(g.request("GET", "https://pypi.org/"), "policy-unavailable")
        (tmp_path / "secrets.json").write_text(json.dumps({"BOTTLE_TOKEN_0": ANTHROPIC_KEY}))
        g.tctx.configure(g.addon, bottle_secrets_file=str(tmp_path / "secrets.json"))
        assert g.request("GET", "https://pypi.org/").response is None
        assert denied(g.request("GET", f"https://pypi.org/?t={ANTHROPIC_KEY}"), "secret-in-url")


# -- addresses and DNS ---------------------------------------------------------------------


def connect_flow(host: str, port: int = 443) -> http.HTTPFlow:
    req = http.Request.make("CONNECT", f"http://{host}:{port}/")
    req.authority = f"{host}:{port}"
    req.host, req.port = host, port
    return tflow.tflow(req=req)


def test_connect_to_a_name_resolving_to_a_private_address_gets_a_403(guard: Guard) -> None:
    guard.resolver.answers["pypi.org"] = [["10.0.0.5"]]
    f = connect_flow("pypi.org")
    asyncio.run(guard.addon.http_connect(f))
    assert denied(f, "private-address")
    assert "private" in guard.audit()[-1]["reason"]


def test_connect_to_a_host_not_allowed_is_refused_without_dns(guard: Guard) -> None:
    f = connect_flow("evil.example")
    asyncio.run(guard.addon.http_connect(f))
    assert denied(f, "host-not-allowed") and guard.resolver.asked == []


def server_connect(guard: Guard, host: str, port: int = 443) -> connection.Server:
    server = connection.Server(address=(host, port))
    data = server_hooks.ServerConnectionHookData(server=server, client=tflow.tclient_conn())
    asyncio.run(guard.addon.server_connect(data))
    return server


def test_server_connect_pins_the_checked_address_and_the_tls_name(guard: Guard) -> None:
    server = server_connect(guard, "pypi.org")
    assert server.error is None
    assert server.address == ("151.101.0.223", 443)
    assert server.sni == "pypi.org"
    assert guard.audit()[-1]["address"] == "151.101.0.223"


def test_dns_rebinding_to_a_private_address_is_caught_at_connect_time(guard: Guard) -> None:
    guard.resolver.answers["pypi.org"] = [["151.101.0.223"], ["127.0.0.1"]]
    f = connect_flow("pypi.org")
    asyncio.run(guard.addon.http_connect(f))
    assert f.response is None  # the first answer was public
    server = server_connect(guard, "pypi.org")  # ... the second is not
    assert server.error is not None and "private-address" in server.error
    assert server.address == ("pypi.org", 443)  # never pinned
    assert guard.audit()[-1]["rule"] == "private-address"


def test_mixed_answers_are_refused(guard: Guard) -> None:
    guard.resolver.answers["pypi.org"] = [["151.101.0.223", "169.254.169.254"]]
    assert "private-address" in (server_connect(guard, "pypi.org").error or "")


def test_explicitly_allowed_private_network_is_reachable(guard: Guard) -> None:
    guard.write_policy(["stub.internal"], allow_private=("172.16.0.0/12",))
    guard.resolver.answers["stub.internal"] = [["172.18.0.4"]]
    server = server_connect(guard, "stub.internal", 8443)
    assert server.error is None and server.address == ("172.18.0.4", 8443)


def test_requests_on_a_connection_that_ended_somewhere_unchecked_are_refused(guard: Guard) -> None:
    f = tflow.tflow(req=http.Request.make("GET", "https://pypi.org/"))
    f.server_conn.peername = ("127.0.0.1", 443)
    guard.addon.server_connected(server_hooks.ServerConnectionHookData(server=f.server_conn, client=f.client_conn))
    asyncio.run(guard.addon.requestheaders(f))
    assert denied(f, "private-address")


def test_plain_http_to_a_name_resolving_privately_gets_a_403_before_connecting(guard: Guard) -> None:
    guard.resolver.answers["pypi.org"] = [["192.168.1.10"]]
    f = guard.request("GET", "http://pypi.org/simple/", connected_to=None)
    assert denied(f, "private-address")


def test_raw_tcp_is_cut(guard: Guard) -> None:
    f = tflow.ttcpflow()
    guard.addon.tcp_start(f)
    assert f.error is not None and guard.audit()[-1]["rule"] == "not-http"


def test_websocket_message_with_a_secret_is_dropped(guard: Guard) -> None:
    f = tflow.twebsocketflow()
    f.websocket.messages[-1].content = b"hi " + ANTHROPIC_KEY.encode()  # type: ignore[union-attr]
    f.websocket.messages[-1].from_client = True  # type: ignore[union-attr]
    guard.addon.websocket_message(f)
    assert f.websocket.messages[-1].dropped  # type: ignore[union-attr]
    assert guard.audit()[-1]["rule"] == "secret-in-body"


def test_responses_stream(guard: Guard) -> None:
    f = tflow.tflow(resp=True)
    guard.addon.responseheaders(f)
    assert f.response.stream is True  # type: ignore[union-attr]


def test_negative_body_buffer_is_an_options_error(guard: Guard) -> None:
    from mitmproxy import exceptions

    with pytest.raises(exceptions.OptionsError):
        guard.tctx.configure(guard.addon, bottle_body_buffer=-1)


def test_every_audit_line_is_json_without_secrets(guard: Guard) -> None:
    guard.request("GET", f"https://pypi.org/?a={ANTHROPIC_KEY}")
    guard.request("GET", f"https://{AWS_KEY_ID}.pypi.org/")
    guard.request("POST", "https://pypi.org/", body=base64.b64encode(ANTHROPIC_KEY.encode()))
    guard.request("GET", "https://pypi.org/ok")
    lines = guard.audit()
    assert len(lines) >= 4
    assert {"time", "identity", "role", "event", "verdict", "rule"} <= set(lines[0])
    assert_no_secret_in_audit(guard, base64.b64encode(ANTHROPIC_KEY.encode()).decode())
