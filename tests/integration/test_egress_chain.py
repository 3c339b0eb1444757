"""The egress chain on real engines: a client on a bottle's internal network attacks through egress proxy and guard.

On Docker, rootful Podman and rootless Podman, through our ``ContainerRuntime``
adapters (see ``_chain.py`` for what runs where): the client sits on the
internal network only, with the egress proxy as its HTTPS proxy; a stub
upstream on the egress network answers over TLS as ``api.example.test``
with a test CA only the guard trusts; the route ``https://api.example.test/brokered``
gets the brokered token.

Back doors: the stub's own record of every request that reached it
(headers, path with query, body), and the sidecars' audit logs read inside
their containers. One set of containers per engine (class-scoped).
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _chain import (  # pytest puts this directory on sys.path (rootdir-relative, no __init__.py)
    ENGINES,
    ROUTE_PREFIX,
    UPSTREAM_HOST,
    ChainWorld,
    build_images,
    check_engine,
    engines_required,
    make_runtime,
    retry_store_races,
)

RUN_ID = secrets.token_hex(4)
RUN_LABELS = {"io.bottle.test-run": RUN_ID, "io.bottle.test-case": "egress-chain"}
TOKEN = "tok-chain-" + secrets.token_urlsafe(24).replace("-", "x").replace("_", "y")
AWS_KEY = "AKIAZ7QX2PLM4HNBV5CD"
CLIENT_OWN = "client-own-credential-" + secrets.token_hex(6)
BASE = f"https://{UPSTREAM_HOST}"


@pytest.fixture(
    scope="class",
    params=[pytest.param(n, marks=[getattr(pytest.mark, n), pytest.mark.engine], id=n) for n in ENGINES],
)
def world(request: pytest.FixtureRequest) -> Iterator[ChainWorld]:
    from bottle.ports.errors import RuntimeFailure

    name: str = request.param
    try:
        runtime = make_runtime(name)
        info = check_engine(name, runtime)
    except RuntimeFailure as exc:
        message = f"{name}: {exc}"
        if engines_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    work = Path(tempfile.mkdtemp(prefix="bottle-chain-"))
    labels = {**RUN_LABELS, "io.bottle.test-engine": name}
    try:
        images = build_images(runtime, work, RUN_ID, labels)
        yield ChainWorld(runtime, images, labels, rootless=info.rootless, token=TOKEN)
    finally:
        try:
            retry_store_races(lambda: runtime.remove_labelled(labels), "removing the test's resources")
        finally:
            runtime.close()
            shutil.rmtree(work, ignore_errors=True)


def _everything_the_stub_saw(world: ChainWorld) -> str:
    return json.dumps(world.stub_requests())


def _header(record: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in record["headers"] if k.lower() == name.lower()]


class TestEgressChain:
    def test_an_allowed_host_answers_through_the_chain(self, world: ChainWorld) -> None:
        marker = secrets.token_hex(4)
        r = world.request("GET", f"{BASE}/hello/{marker}")
        assert r["status"] == 200, r
        assert json.loads(r["body"])["path"] == f"/hello/{marker}"
        assert [s["path"] for s in world.stub_requests() if marker in s["path"]] == [f"/hello/{marker}"]

    def test_a_host_not_allowed_gets_the_guards_403_naming_the_rule(self, world: ChainWorld) -> None:
        r = world.request("GET", "https://not-allowed.example.test/anything")
        assert r["status"] == 403, r
        assert "rule: host-not-allowed" in r["body"]
        assert "bottle.egress.allow" in r["body"]  # how to ask for access
        assert ["X-Bottle-Rule", "host-not-allowed"] in r["headers"]

    def test_a_fake_aws_key_in_a_query_is_stopped_and_never_reaches_the_stub(self, world: ChainWorld) -> None:
        r = world.request("GET", f"{BASE}/search?q=deploy&key={AWS_KEY}")
        assert r["status"] == 403, r
        assert "rule: secret-in-url" in r["body"]
        assert AWS_KEY not in r["body"]
        assert AWS_KEY not in _everything_the_stub_saw(world)
        assert not [s for s in world.stub_requests() if s["path"].startswith("/search")]

    def test_the_brokered_token_reaches_the_stub_on_its_route_and_nowhere_else(self, world: ChainWorld) -> None:
        marker = secrets.token_hex(4)
        on = world.request("GET", f"{BASE}{ROUTE_PREFIX}/v1/{marker}")
        off = world.request("POST", f"{BASE}/elsewhere/{marker}", data="hello")
        assert on["status"] == 200 and off["status"] == 200, (on, off)
        seen = {s["path"]: s for s in world.stub_requests() if marker in s["path"]}
        assert _header(seen[f"{ROUTE_PREFIX}/v1/{marker}"], "Authorization") == [f"Bearer {TOKEN}"]
        assert _header(seen[f"/elsewhere/{marker}"], "Authorization") == []
        carrying = [s["path"] for s in world.stub_requests() if TOKEN in json.dumps(s)]
        assert carrying and all(p.startswith(ROUTE_PREFIX + "/") for p in carrying)
        # The stub echoes the Authorization it got; the egress proxy masks the token on its way back.
        echoed = json.loads(on["body"])["authorization"]
        assert TOKEN not in on["body"] and echoed == "*" * len(f"Bearer {TOKEN}")

    def test_the_clients_own_credentials_never_reach_the_stub_on_the_route(self, world: ChainWorld) -> None:
        marker = secrets.token_hex(4)
        r = world.request("GET", f"{BASE}{ROUTE_PREFIX}/me/{marker}",
                          {"Authorization": f"Bearer {CLIENT_OWN}", "X-Api-Key": CLIENT_OWN, "Cookie": f"s={CLIENT_OWN}"})
        assert r["status"] == 200, r
        seen = [s for s in world.stub_requests() if marker in s["path"]]
        assert len(seen) == 1 and _header(seen[0], "Authorization") == [f"Bearer {TOKEN}"]
        assert CLIENT_OWN not in _everything_the_stub_saw(world)
        # Proxy credentials are for the proxy, on and off the route.
        world.request("GET", f"{BASE}/off/{marker}", {"Proxy-Authorization": f"Basic {CLIENT_OWN}"})
        assert CLIENT_OWN not in _everything_the_stub_saw(world)

    def test_git_push_over_https_gets_403(self, world: ChainWorld) -> None:
        rc, out = world.client_shell(
            "rm -rf push && git init -q -b main push && cd push"
            " && git -c user.name=a -c user.email=a@b commit -q --allow-empty -m one"
            f" && git push {BASE}/org/repo.git HEAD:refs/heads/main"
        )
        assert rc != 0 and "403" in out, out
        for method, path in (("GET", "/org/repo.git/info/refs?service=git-receive-pack"),
                             ("POST", "/org/repo.git/git-receive-pack")):
            r = world.request(method, f"{BASE}{path}", data="0000" if method == "POST" else None)
            assert r["status"] == 403 and "rule: git-push" in r["body"], r
        assert not [s for s in world.stub_requests() if "receive-pack" in s["path"]]

    def test_the_audit_logs_have_a_line_per_request_and_no_secret(self, world: ChainWorld) -> None:
        marker = secrets.token_hex(4)
        sent = [
            ("GET", f"/audit/{marker}/ok", 200),
            ("GET", f"{ROUTE_PREFIX}/audit/{marker}", 200),
            ("GET", f"/audit/{marker}/leak?k={AWS_KEY}", 403),
            ("POST", f"/audit/{marker}/repo.git/git-receive-pack", 403),
        ]
        for method, path, status in sent:
            r = world.request(method, f"{BASE}{path}", {"Authorization": f"Bearer {CLIENT_OWN}"},
                              data="x" if method == "POST" else None)
            assert r["status"] == status, (path, r)
        proxy = [a for a in world.audit("egress-proxy") if marker in a.get("path", "")]
        guard = [a for a in world.audit("guard") if a.get("event") == "request" and marker in a.get("path", "")]
        for method, path, status in sent:
            mine = [a for a in proxy if a["method"] == method and a["path"].split("?")[0] == path.split("?")[0]]
            assert len(mine) == 1, (path, proxy)
            assert mine[0]["host"] == UPSTREAM_HOST and mine[0]["identity"] == "itest-chain"
        # What the proxy refused (git push) never reached the guard; everything else got a verdict there.
        assert sorted((a["path"].split("?")[0], a["verdict"]) for a in guard) == sorted([
            (f"/audit/{marker}/ok", "allow"), (f"{ROUTE_PREFIX}/audit/{marker}", "allow"), (f"/audit/{marker}/leak", "deny"),
        ])
        assert [a["rule"] for a in guard if a["verdict"] == "deny"] == ["secret-in-url"]
        assert [a["rule"] for a in proxy if a["verdict"] == "deny"] == ["git-push"]
        for role in ("guard", "egress-proxy"):
            text = world.audit_text(role)
            assert TOKEN not in text and AWS_KEY not in text and CLIENT_OWN not in text

    def test_the_client_has_no_way_out_but_the_proxies(self, world: ChainWorld) -> None:
        rc, out = world.client_shell(
            f"python3 -c \"import socket; socket.create_connection(('{UPSTREAM_HOST}', 443), 3)\""
        )
        assert rc != 0, out
        rc, out = world.client_shell("cat /proc/[0-9]*/environ 2>/dev/null; find /tmp /etc/bottle -type f -exec cat {} + 2>/dev/null")
        assert TOKEN not in out
