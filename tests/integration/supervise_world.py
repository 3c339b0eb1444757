"""A supervised bottle's moving parts on a real engine, for the supervise test and its benchmark.

On one engine (Docker, rootful Podman, rootless Podman), labelled with a run
label and removed afterwards:

- an *upstream*: Python's http.server on the egress network, answering as
  ``allowed.example.test``, ``rejected.example.test`` and ``b<n>.example.test``;
- the *guard*, built from ``sidecars/Dockerfile``, reading its policy
  from the bottle's ``policy/`` directory (a read-only directory mount, as the
  launch plan mounts it) and writing its audit log into ``audit/guard/``;
- the *supervise* sidecar, built from ``sidecars/Dockerfile``, with
  the bottle's ``proposals/`` mounted writable and ``decisions/`` read-only;
- an *agent* on the internal network only, with the guard as its proxy.

The host side is the real ``ProposalDesk`` over a ``LocalStateStore`` in a
temporary directory.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bottle.core.state import audit_dir, audit_log_path

BASE_IMAGE = os.environ.get("BOTTLE_BASE_IMAGE", "localhost/bottle-base:bookworm")
IDENTITY = "itest-sup01"
PRIVATE_NETS = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
UPSTREAM_NAMES = ("allowed.example.test", "rejected.example.test", *(f"b{i}.example.test" for i in range(64)))
ENGINES = ("docker", "podman", "podman_rootless")
PROBE = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2)"
# What the agent runs to fetch a URL through its proxy: prints the HTTP status.
FETCH = (
    "import sys, urllib.request, urllib.error\n"
    "try:\n"
    "    print(urllib.request.urlopen(sys.argv[1], timeout=10).status)\n"
    "except urllib.error.HTTPError as e:\n"
    "    print(e.code)\n"
)


def rootless_url() -> str:
    user = os.environ.get("BOTTLE_ROOTLESS_USER", "bottle-rootless")
    try:
        return f"unix:///run/user/{pwd.getpwnam(user).pw_uid}/podman/podman.sock"
    except KeyError:
        return f"unix:///run/user/<no user {user}>/podman/podman.sock"


def rootless_uid() -> int:
    return pwd.getpwnam(os.environ.get("BOTTLE_ROOTLESS_USER", "bottle-rootless")).pw_uid


def make_runtime(name: str) -> Any:
    if name == "docker":
        from bottle.adapters.docker import DockerRuntime

        return DockerRuntime()
    from bottle.adapters.podman import PodmanRuntime

    url = os.environ.get("BOTTLE_PODMAN_URL", "unix:///run/podman/podman.sock") if name == "podman" else rootless_url()
    return PodmanRuntime(base_url=url)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def build_images(runtime: Any, work: Path, run_id: str, labels: dict[str, str]) -> dict[str, str]:
    """The guard and supervise images from the sidecar build context (wheels cached on the host)."""
    import platformdirs

    from bottle.sidecars._wheels import sidecar_build_contexts

    builds = sidecar_build_contexts(str(work / "context"), cache_dir=platformdirs.user_cache_dir("bottle"),
                                    roles=["guard", "supervise"])
    images = {}
    for build in builds:
        tag = f"localhost/bottle-test-{build.role}:{run_id}"
        runtime.build_image(build.request(tag, BASE_IMAGE, labels))
        images[build.role] = tag
    return images


class SupervisedBottle:
    """One supervised bottle on ``runtime``; ``close`` removes what it made (by label)."""

    def __init__(self, runtime: Any, images: dict[str, str], labels: dict[str, str], *, rootless: bool,
                 confirm_timeout: float = 15.0) -> None:
        from bottle.adapters.local import LocalStateStore, SystemClock
        from bottle.adapters.local.proposal_desk import POLICY_FILE, ProposalDesk
        from bottle.adapters.local.proposal_queue import prepare_queue_dirs
        from bottle.adapters.tls import mint_ca
        from bottle.core.egress_policy import encode_policy, policy_document
        from bottle.ports.runtime import ContainerSpec, FileEntry, Mount, NetworkAttachment, NetworkSpec

        self.rt = runtime
        self.labels = labels
        self.tmp = Path(tempfile.mkdtemp(prefix="bottle-supervise-"))
        os.chmod(self.tmp, 0o755)
        self.store = LocalStateStore(str(self.tmp / "state"))
        store = self.store
        # Nothing allowed yet; the upstream is on a private network the policy names.
        store.write(IDENTITY, POLICY_FILE, encode_policy(
            policy_document([], allow_private=PRIVATE_NETS, identity=IDENTITY, agent="itest")))
        store.write(IDENTITY, f"{audit_dir('guard')}/.keep", b"")
        sidecar_user = None if rootless else "1000:1000"
        prepare_queue_dirs(store, IDENTITY, sidecar_user)
        if rootless:
            # The rootless engine (and the containers' root) is that user on the host: it must reach the state.
            uid = rootless_uid()
            os.chown(self.tmp, uid, uid)
            for root, dirs, files in os.walk(self.tmp):
                for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                    os.chown(name, uid, uid)
        self.desk = ProposalDesk(store, SystemClock(), confirm_timeout=confirm_timeout)
        tag = secrets.token_hex(3)
        self.names = {r: f"bsv-{r}-{tag}" for r in ("internal", "egress", "upstream", "guard", "supervise", "agent")}
        internal, egress = self.names["internal"], self.names["egress"]
        runtime.create_network(NetworkSpec(internal, internal=True, labels=dict(labels)))
        runtime.create_network(NetworkSpec(egress, internal=False, labels=dict(labels)))

        def start(spec: ContainerSpec, entries: list[FileEntry] = ()) -> None:  # type: ignore[assignment]
            runtime.create_container(spec)
            if entries:
                runtime.copy_in(spec.name, "/tmp", [FileEntry("bottle-test", is_dir=True, mode=0o755), *entries])
            runtime.start_container(spec.name)

        start(ContainerSpec(
            name=self.names["upstream"], image=images["supervise"], labels=dict(labels),
            entrypoint=("python3",), command=("-m", "http.server", "80", "--directory", "/tmp"),
            networks=(NetworkAttachment(egress, UPSTREAM_NAMES),),
        ))
        ca = mint_ca("supervise test guard CA", now=datetime.now(timezone.utc))
        state = lambda rel: store.host_path(IDENTITY, rel)  # noqa: E731
        start(ContainerSpec(
            name=self.names["guard"], image=images["guard"], labels=dict(labels),
            env={"BOTTLE_IDENTITY": IDENTITY, "BOTTLE_ROLE": "guard", "BOTTLE_CA_KEY": "/tmp/bottle-test/guard.key",
                 "BOTTLE_CA_CERT": "/tmp/bottle-test/guard.crt"},
            mounts=(Mount(state("policy"), "/etc/bottle/policy", True), Mount(state(audit_dir("guard")), "/var/log/bottle", False)),
            networks=(NetworkAttachment(internal, ("guard",)), NetworkAttachment(egress)),
        ), [FileEntry("bottle-test/guard.crt", ca.cert_pem, 0o644), FileEntry("bottle-test/guard.key", ca.key_pem, 0o600)])
        start(ContainerSpec(
            name=self.names["supervise"], image=images["supervise"], labels=dict(labels), user=sidecar_user,
            cap_drop=("ALL",), no_new_privileges=True,
            env={"BOTTLE_IDENTITY": IDENTITY, "BOTTLE_ROLE": "supervise"},
            mounts=(Mount(state("proposals"), "/run/supervise/queue", False),
                    Mount(state("decisions"), "/run/supervise/decisions", True)),
            networks=(NetworkAttachment(internal, ("supervise",)),),
        ))
        start(ContainerSpec(
            name=self.names["agent"], image=images["supervise"], labels=dict(labels), user=sidecar_user,
            entrypoint=("sleep",), command=("infinity",), workdir="/tmp",
            env={"HTTP_PROXY": "http://guard:8080", "http_proxy": "http://guard:8080",
                 "NO_PROXY": "supervise,localhost", "no_proxy": "supervise,localhost",
                 "BOTTLE_SUPERVISE_URL": "http://supervise:8080"},
            networks=(NetworkAttachment(internal),),
        ))
        for peer in ("guard", "supervise"):
            wait_for(lambda p=peer: self.exec("agent", ["python3", "-c", PROBE, p, "8080"])[0] == 0,
                     f"the agent to reach {peer}", 90)
        guard_log = Path(state(audit_log_path("guard")))
        wait_for(lambda: b"policy-loaded" in (guard_log.read_bytes() if guard_log.exists() else b""),
                 "the guard to load its policy", 60)
        rc, out = self.exec("agent", ["python3", "-c",
                                      "import urllib.request as u; open('/tmp/propose','wb').write("
                                      "u.build_opener(u.ProxyHandler({})).open('http://supervise:8080/client.py').read())"])
        assert rc == 0, out

    def exec(self, role: str, argv: list[str]) -> tuple[int, str]:
        r = self.rt.exec(self.names[role], argv)
        return r.exit_code, (r.stdout + r.stderr).decode("utf-8", "replace")

    # -- what the agent does ------------------------------------------------------
    def fetch(self, host: str) -> int:
        """The HTTP status the agent gets for ``http://host/`` through the guard."""
        rc, out = self.exec("agent", ["python3", "-c", FETCH, f"http://{host}/"])
        assert rc == 0, out
        return int(out.strip().splitlines()[-1])

    def propose_http(self, host: str, reason: str) -> int:
        """File an allow-host with the in-bottle client (fetched from the sidecar); the id."""
        rc, out = self.exec("agent", ["sh", "-c", f"python3 /tmp/propose --json allow-host {shlex.quote(host)} "
                                                  f"--reason {shlex.quote(reason)}"])
        assert rc == 0, out
        return int(json.loads(out)["id"])

    def propose_mcp(self, host: str, reason: str) -> int:
        """File an allow-host through MCP (initialize, then tools/call); the id."""
        script = (
            "import json, urllib.request as u, sys\n"
            "o = u.build_opener(u.ProxyHandler({}))\n"
            "def rpc(m, p, i):\n"
            "    r = u.Request('http://supervise:8080/mcp', json.dumps({'jsonrpc':'2.0','id':i,'method':m,'params':p}).encode(),\n"
            "                  {'Content-Type':'application/json','Accept':'application/json, text/event-stream'})\n"
            "    return json.loads(o.open(r).read())\n"
            "rpc('initialize', {'protocolVersion':'2025-06-18','capabilities':{},'clientInfo':{'name':'t','version':'0'}}, 1)\n"
            "res = rpc('tools/call', {'name':'propose_allow_host','arguments':{'host':sys.argv[1],'reason':sys.argv[2]}}, 2)\n"
            "print(res['result']['structuredContent']['id'])\n"
        )
        rc, out = self.exec("agent", ["python3", "-c", script, host, reason])
        assert rc == 0, out
        return int(out.strip().splitlines()[-1])

    def wait_status(self, proposal_id: int) -> str:
        rc, out = self.exec("agent", ["python3", "/tmp/propose", "--json", "status", str(proposal_id)])
        assert rc == 0, out
        return str(json.loads(out)["status"])

    def guard_audit(self) -> list[dict[str, Any]]:
        path = Path(self.store.host_path(IDENTITY, audit_log_path("guard")))
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]

    def close(self) -> None:
        try:
            self.rt.remove_labelled(self.labels)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
