"""The egress chain as real processes on this host: egress proxy -> guard -> a TLS stub upstream.

No container engine: the two sidecars run as their entrypoints would in their
images (``python -m bottle.sidecars.<name>.entrypoint`` with the container's
environment contract), the stub upstream is a thread serving HTTPS as
``localhost`` with a certificate from a test CA the guard is told to trust.
What the stub receives is the back door: it records every request it gets.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import pytest

pytest.importorskip("mitmproxy")

from bottle.adapters.tls import issue_leaf, mint_ca  # noqa: E402
from bottle.core.egress_policy import encode_policy, policy_document  # noqa: E402
from bottle.core.routing import build_route_table  # noqa: E402

TOKEN = "tok-Integration-Secret-0123456789abcdefXYZ"
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
NOW = datetime.now(timezone.utc)


class R(msgspec.Struct, frozen=True):
    upstream: str
    auth_scheme: str
    token_ref: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stub:
    """An HTTPS upstream that records what reaches it."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.seen: list[dict[str, Any]] = []
        self.partial: dict[str, bytes] = {}  # path -> body bytes received so far, complete or not
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                body = b""
                stub.partial[self.path] = b""
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        line = self.rfile.readline()
                        if not line:
                            return  # cut off mid-body: the request never completes
                        size = int(line.strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        body += self.rfile.read(size)
                        stub.partial[self.path] = body
                        self.rfile.readline()
                else:
                    body = self.rfile.read(int(self.headers.get("content-length") or 0))
                    stub.partial[self.path] = body
                stub.seen.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
                out = json.dumps({"path": self.path, "authorization": self.headers.get("authorization")}).encode()
                self.send_response(200)
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = _handle

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def everything(self) -> bytes:
        return b"".join(json.dumps(s["headers"]).encode() + s["path"].encode() + s["body"] for s in self.seen)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sidecar exited with {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port} after {timeout}s")


class Chain:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        stub_ca = mint_ca("stub test CA", now=NOW)
        leaf = issue_leaf(stub_ca, ["localhost"], now=NOW)
        (tmp / "stub.crt").write_bytes(leaf.cert_pem)
        (tmp / "stub.key").write_bytes(leaf.key_pem)
        (tmp / "stub-ca.crt").write_bytes(stub_ca.cert_pem)
        self.stub = Stub(tmp / "stub.crt", tmp / "stub.key")
        for role in ("guard", "egress-proxy"):
            ca = mint_ca(f"bottle {role} CA test", now=NOW)
            (tmp / f"{role}.key").write_bytes(ca.key_pem)
            (tmp / f"{role}.crt").write_bytes(ca.cert_pem)
        self.policy = tmp / "policy" / "egress.json"
        self.policy.parent.mkdir()
        self.write_policy(["localhost"])
        self.guard_port, self.proxy_port = free_port(), free_port()
        common = {
            "PATH": os.environ.get("PATH", ""),
            "BOTTLE_IDENTITY": "itest-abcde",
            "BOTTLE_POLICY_FILE": str(self.policy),
            "BOTTLE_TOKEN_0": TOKEN,
        }
        self.guard = self._spawn(
            "guard",
            {
                **common,
                "BOTTLE_LISTEN_PORT": str(self.guard_port),
                "BOTTLE_EXTRA_CA_FILE": str(tmp / "stub-ca.crt"),
            },
        )
        self.proxy = self._spawn(
            "egress_proxy",
            {
                **common,
                "BOTTLE_ROLE": "egress-proxy",
                "BOTTLE_LISTEN_PORT": str(self.proxy_port),
                "HTTPS_PROXY": f"http://127.0.0.1:{self.guard_port}",
                "BOTTLE_UPSTREAM_CA": str(tmp / "guard.crt"),
            },
        )
        wait_listening(self.guard_port, self.guard)
        wait_listening(self.proxy_port, self.proxy)

    def write_policy(self, allow: list[str], routes: bool = True) -> None:
        table = build_route_table([R(f"https://localhost:{self.stub.port}/api", "bearer", "TOKEN")] if routes else [])
        doc = policy_document(allow, table, allow_private=["127.0.0.0/8", "::1"], identity="itest-abcde", agent="itest")
        tmp = self.policy.with_suffix(".tmp")
        tmp.write_bytes(encode_policy(doc))
        os.replace(tmp, self.policy)

    def _spawn(self, package: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        role = env.get("BOTTLE_ROLE", "guard")
        env = {
            **env,
            "BOTTLE_ROLE": role,
            "BOTTLE_CA_KEY": str(self.tmp / f"{role}.key"),
            "BOTTLE_CA_CERT": str(self.tmp / f"{role}.crt"),
            "BOTTLE_AUDIT_LOG": str(self.tmp / "audit" / f"{role}.jsonl"),
            "BOTTLE_RUNTIME_DIR": str(self.tmp / f"run-{role}"),
            "PYTHONPATH": os.pathsep.join(sys.path),
        }
        return subprocess.Popen(
            [sys.executable, "-m", f"bottle.sidecars.{package}.entrypoint"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def url(self, path: str) -> str:
        return f"https://localhost:{self.stub.port}{path}"

    def get(self, path: str, *, via: str = "proxy", headers: dict[str, str] | None = None, data: bytes | None = None) -> tuple[int, bytes]:
        port, ca = (self.proxy_port, "egress-proxy.crt") if via == "proxy" else (self.guard_port, "guard.crt")
        ctx = ssl.create_default_context(cafile=str(self.tmp / ca))
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"https": f"http://127.0.0.1:{port}"}),
            urllib.request.HTTPSHandler(context=ctx),
        )
        try:
            with opener.open(urllib.request.Request(self.url(path), headers=headers or {}, data=data), timeout=15) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except urllib.error.URLError as e:
            if "403" in str(e.reason):
                return 403, str(e.reason).encode()
            raise

    def audit(self, role: str) -> list[dict[str, Any]]:
        path = self.tmp / "audit" / f"{role}.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    def close(self) -> None:
        for proc in (self.proxy, self.guard):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.stub.close()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    c = Chain(tmp_path_factory.mktemp("chain"))
    try:
        yield c
    finally:
        c.close()


def test_route_gets_the_real_credential_and_the_agents_never_arrives(chain: Chain) -> None:
    status, body = chain.get("/api/v1/x", headers={"Authorization": "Bearer agent-own-credential"})
    assert status == 200
    seen = chain.stub.seen[-1]
    assert seen["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert b"agent-own-credential" not in chain.stub.everything()
    assert TOKEN.encode() not in body  # the echo is masked on the way back to the agent


def test_the_token_reaches_no_other_request(chain: Chain) -> None:
    status, _ = chain.get("/elsewhere")
    assert status == 200
    assert "Authorization" not in chain.stub.seen[-1]["headers"]
    assert [s["path"] for s in chain.stub.seen if TOKEN in json.dumps(s["headers"])] == [
        s["path"] for s in chain.stub.seen if s["path"].startswith("/api")
    ]


def test_aws_key_in_a_query_is_stopped_before_the_stub(chain: Chain) -> None:
    status, body = chain.get(f"/q?k={AWS_KEY_ID}")
    assert status == 403 and b"secret-in-url" in body
    assert AWS_KEY_ID.encode() not in chain.stub.everything()


def test_git_push_gets_403(chain: Chain) -> None:
    status, body = chain.get("/r.git/info/refs?service=git-receive-pack")
    assert status == 403 and b"git-push" in body
    status, _ = chain.get("/r.git/info/refs?service=git-receive-pack", via="guard")
    assert status == 403


def test_brokered_secret_in_a_body_is_stopped(chain: Chain) -> None:
    status, body = chain.get("/upload", data=b"leak=" + TOKEN.encode())
    assert status == 403 and b"secret-in-body" in body
    assert b"leak=" not in chain.stub.everything()


def test_secret_split_across_chunks_of_a_streamed_upload_never_reaches_the_stub(chain: Chain) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", chain.guard_port, timeout=15)
    conn.set_tunnel("localhost", chain.stub.port)
    conn.connect()
    conn.sock = ssl.create_default_context(cafile=str(chain.tmp / "guard.crt")).wrap_socket(conn.sock, server_hostname="localhost")
    conn.putrequest("POST", "/stream-upload")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    secret = TOKEN.encode()
    try:
        for i in range(30):
            chunk = bytearray(b"s" * 50_000)
            if i == 10:
                chunk[-9:] = secret[:9]
            if i == 11:
                chunk[: len(secret) - 9] = secret[9:]
            conn.send(b"%x\r\n" % len(chunk) + bytes(chunk) + b"\r\n")
        conn.send(b"0\r\n\r\n")
        status = conn.getresponse().status
    except OSError:
        status = 0  # the guard cut the connection
    assert status != 200
    assert not any(s["path"] == "/stream-upload" for s in chain.stub.seen)  # never a complete request
    received = chain.stub.partial.get("/stream-upload", b"")
    assert 0 < len(received) < 11 * 50_000  # the start arrived, nothing from the secret on
    assert secret[:9] not in received
    assert any(line["event"] == "body" and line["rule"] == "secret-in-body" for line in chain.audit("guard"))


def test_allowlist_reloads_without_restart_and_bad_policy_fails_closed(chain: Chain) -> None:
    chain.write_policy(["example.invalid"], routes=False)
    status, body = chain.get("/elsewhere", via="guard")
    assert status == 403
    chain.policy.write_text("{garbage")
    status, _ = chain.get("/elsewhere", via="guard")
    assert status == 403
    chain.write_policy(["localhost"])
    status, _ = chain.get("/elsewhere", via="guard")
    assert status == 200


def test_audit_logs_have_a_line_per_request_and_no_secret(chain: Chain) -> None:
    guard = chain.audit("guard")
    proxy = chain.audit("egress-proxy")
    assert any(line["event"] == "request" for line in guard) and proxy
    for role in ("guard", "egress-proxy"):
        text = (chain.tmp / "audit" / f"{role}.jsonl").read_text()
        assert TOKEN not in text and AWS_KEY_ID not in text
    assert {line["rule"] for line in proxy} >= {"route", "pass", "git-push"}
