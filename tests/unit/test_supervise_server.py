"""The supervise sidecar's server in-process: plain HTTP, MCP over streamable HTTP, and the in-bottle client."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from bottle.adapters.local import LocalStateStore
from bottle.adapters.local.proposal_queue import HostQueue, prepare_queue_dirs
from bottle.core import proposals as P
from bottle.sidecars.supervise import client
from bottle.sidecars.supervise.queue import FilingQueue
from bottle.sidecars.supervise.server import SuperviseService, make_server

ME = "impl-abcde"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Sidecar:
    def __init__(self, tmp: Path) -> None:
        self.store = LocalStateStore(str(tmp / "state"))
        prepare_queue_dirs(self.store, ME, None)
        queue = FilingQueue(self.store.host_path(ME, "proposals"), self.store.host_path(ME, "decisions"), ME)
        self.server = make_server(SuperviseService(queue, clock=lambda: NOW), host="127.0.0.1", port=0)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with _NO_PROXY.open(req, timeout=10) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None, dict(r.headers)
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw else None, dict(e.headers)

    def rpc(self, method: str, params: dict[str, Any] | None = None, rid: int = 1) -> Any:
        status, body, _ = self.call("POST", "/mcp", {"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}},
                                    {"Accept": "application/json, text/event-stream"})
        assert status == 200
        return body

    def decide(self, pid: int, status: str, note: str = "") -> None:
        q = HostQueue(self.store, ME)
        p = q.get(pid)
        d = P.decide(p, "approved" if status == "applied" else status, decided_by="ann", now=NOW, note=note)
        if status == "applied":
            d = P.decide(P.proposal_view(P.Filing(1, pid, ME, p.reason, p.payload, p.filed_at), d), "applied",
                         decided_by="ann", now=NOW, previous=d)
        q.write_decision(d)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[Sidecar]:
    s = Sidecar(tmp_path)
    yield s
    s.close()


# -- HTTP -----------------------------------------------------------------------------


def test_filing_over_http_lands_in_the_host_queue(sidecar: Sidecar) -> None:
    status, body, headers = sidecar.call("POST", "/proposals", {"kind": "allow-host", "host": "PyPI.org", "reason": "deps"})
    assert status == 201 and body["id"] == 1 and body["status"] == "pending" and body["ref"] == f"{ME}/1"
    assert headers["Location"] == "/proposals/1"
    found, refused = HostQueue(sidecar.store, ME).scan()
    assert [(p.id, p.payload) for p in found] == [(1, P.AllowHost("pypi.org"))] and not refused
    assert sidecar.call("GET", "/proposals/1")[1]["payload"] == {"kind": "allow-host", "host": "pypi.org"}
    assert [p["id"] for p in sidecar.call("GET", "/proposals")[1]] == [1]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"kind": "allow-host", "host": "a.com", "reason": "r", "status": "approved"}, "only the host decides"),
        ({"kind": "add-route", "upstream": "https://api.github.com", "token_ref": "ghp_" + "Ab1" * 12, "reason": "r"}, "looks like a secret"),
        ({"kind": "capability-change", "dockerfile": "FROM x\n" + "#" * 70000, "reason": "r"}, "the limit is 65536"),
        ({"kind": "allow-host", "host": "http://a.com/x", "reason": "r"}, "host pattern"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_filings_are_refused_with_the_reason_and_nothing_is_written(sidecar: Sidecar, body: Any, expected: str) -> None:
    status, answer, _ = sidecar.call("POST", "/proposals", body)
    assert status == 400 and expected in answer["error"]
    assert HostQueue(sidecar.store, ME).scan() == ([], [])


def test_unknown_ids_and_paths_are_404(sidecar: Sidecar) -> None:
    assert sidecar.call("GET", "/proposals/7")[0] == 404
    assert sidecar.call("GET", "/proposals/x")[0] == 404
    assert sidecar.call("GET", "/nope")[0] == 404
    assert sidecar.call("GET", "/healthz")[1] == {"ok": True}
    assert sidecar.call("GET", "/mcp")[0] == 405


def test_wait_returns_when_the_host_decides(sidecar: Sidecar) -> None:
    sidecar.call("POST", "/proposals", {"kind": "allow-host", "host": "a.com", "reason": "r"})
    timer = threading.Timer(0.3, sidecar.decide, args=(1, "rejected", "not today"))
    timer.start()
    started = time.monotonic()
    status, body, _ = sidecar.call("GET", "/proposals/1/wait?timeout=10")
    assert status == 200 and body["status"] == "rejected" and body["note"] == "not today"
    assert 0.25 < time.monotonic() - started < 5
    # and it gives up after the timeout, still pending
    sidecar.call("POST", "/proposals", {"kind": "allow-host", "host": "b.com", "reason": "r"})
    assert sidecar.call("GET", "/proposals/2/wait?timeout=0.2")[1]["status"] == "pending"


# -- MCP ---------------------------------------------------------------------------------


def test_mcp_handshake_lists_the_tools(sidecar: Sidecar) -> None:
    status, body, headers = sidecar.call(
        "POST", "/mcp",
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}},
    )
    assert status == 200 and body["result"]["protocolVersion"] == "2025-03-26"
    assert body["result"]["capabilities"]["tools"] is not None and headers.get("Mcp-Session-Id")
    status, body, _ = sidecar.call("POST", "/mcp", {"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert status == 202 and body is None
    tools = {t["name"]: t for t in sidecar.rpc("tools/list")["result"]["tools"]}
    assert {"propose_allow_host", "propose_route", "propose_capability_change", "proposal_status", "proposal_wait"} <= set(tools)
    assert tools["propose_allow_host"]["inputSchema"]["required"] == ["host", "reason"]


def test_mcp_tools_file_and_report(sidecar: Sidecar) -> None:
    r = sidecar.rpc("tools/call", {"name": "propose_allow_host", "arguments": {"host": "api.example.com", "reason": "docs"}})["result"]
    assert not r["isError"] and r["structuredContent"]["id"] == 1 and "filed proposal 1" in r["content"][0]["text"]
    r = sidecar.rpc("tools/call", {"name": "propose_capability_change",
                                   "arguments": {"dockerfile": "ARG BASE\nFROM ${BASE}\nRUN apt-get install -y jq\n", "reason": "jq"}})["result"]
    assert r["structuredContent"]["kind"] == "capability-change"
    refused = sidecar.rpc("tools/call", {"name": "propose_route",
                                         "arguments": {"upstream": "https://api.github.com", "token_ref": "ghp_" + "Ab1" * 12, "reason": "r"}})["result"]
    assert refused["isError"] and "looks like a secret" in refused["content"][0]["text"]
    sidecar.decide(1, "applied", "granted")
    r = sidecar.rpc("tools/call", {"name": "proposal_wait", "arguments": {"id": 1, "timeout_seconds": 5}})["result"]
    assert r["structuredContent"]["status"] == "applied" and "note from ann: granted" in r["content"][0]["text"]
    r = sidecar.rpc("tools/call", {"name": "proposal_status", "arguments": {"id": 2}})["result"]
    assert r["structuredContent"]["status"] == "pending"
    assert sidecar.rpc("tools/call", {"name": "proposal_status", "arguments": {"id": 9}})["result"]["isError"]
    assert sidecar.rpc("tools/call", {"name": "nope", "arguments": {}})["error"]["code"] == -32602
    assert sidecar.rpc("resources/list")["error"]["code"] == -32601
    assert len(HostQueue(sidecar.store, ME).scan()[0]) == 2


# -- the in-bottle client ---------------------------------------------------------------------


def test_the_client_files_waits_and_reports(sidecar: Sidecar, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert client.main(["--url", sidecar.url, "allow-host", "pypi.org", "--reason", "deps"]) == 0
    assert "proposal 1 (allow-host): pending" in capsys.readouterr().out
    assert client.main(["--url", sidecar.url, "route", "https://api.github.com", "--token-ref", "ghp_" + "Ab1" * 12, "--reason", "r"]) == 1
    assert "looks like a secret" in capsys.readouterr().err
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("ARG BASE\nFROM ${BASE}\nRUN apt-get install -y jq\n")
    assert client.main(["--url", sidecar.url, "capability", str(dockerfile), "--reason", "jq"]) == 0
    sidecar.decide(1, "rejected", "no")
    assert client.main(["--url", sidecar.url, "wait", "1", "--timeout", "5"]) == 3
    assert "rejected - ann: no" in capsys.readouterr().out
    assert client.main(["--url", sidecar.url, "wait", "2", "--timeout", "0.1"]) == 4


def test_the_client_script_is_served_and_uses_only_the_standard_library(sidecar: Sidecar) -> None:
    req = urllib.request.Request(sidecar.url + "/client.py")
    with _NO_PROXY.open(req, timeout=5) as r:
        text = r.read().decode()
    imports = {line.split()[1].split(".")[0] for line in text.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"__future__", "argparse", "json", "os", "sys", "urllib"}
