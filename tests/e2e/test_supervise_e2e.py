"""Supervise through the real commands, on every real engine: the agent asks, a person decides.

One bottle per engine (``bottle start`` with ``bottle.supervise: true``) walks
the whole loop:

1. The agent asks for a host it cannot reach (the guard answers 403), files a
   proposal over plain HTTP, and another with the in-bottle client; both show
   in ``bottle proposals ls``. ``bottle proposals approve`` makes the agent's
   next request pass without a restart; ``reject`` leaves the other blocked.
2. The agent writes a transcript under ``~/.claude`` and proposes a
   capability change that installs a Debian package (``hello``) in its image.
   Approving it takes the bottle down with its state kept and prints
   ``bottle resume IDENTITY``; the resume rebuilds the image with the package,
   restores the transcript byte for byte, and keeps the approved host allowed
   (and the rejected one blocked).

The upstream is a stub on the bottle's egress network answering as
``wanted.test`` and ``other.test`` (as in the lifecycle suite); the agent
container is driven through the engine's exec, as the agent.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time

import pytest
from conftest import BASE_IMAGE, GENERIC_IMAGE, STUB_BODY, STUB_PORT, STUB_SCRIPT, Bottle, EgressNeighbour, Engine, agent_manifest, jsonl, wait_for_agent

from bottle.core import naming
from bottle.core.state import HOST_AUDIT_LOG
from bottle.ports.runtime import ContainerSpec, NetworkAttachment, NetworkInfo

pytestmark = pytest.mark.e2e

WANTED = "wanted.test"
OTHER = "other.test"
PACKAGE = "hello"
# The agent idles until the approval of a capability change stops it (SIGTERM).
IDLE = "trap 'exit 0' TERM; while :; do sleep 0.2; done"
CAPABILITY = (
    "ARG BASE\n"
    "FROM ${BASE}\n"
    "USER root\n"
    "RUN apt-get update \\\n"
    f" && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {PACKAGE} \\\n"
    " && rm -rf /var/lib/apt/lists/*\n"
)
# What the agent keeps of its conversation (Claude Code's layout), and how it lists them.
TRANSCRIPT = (
    "set -e; mkdir -p ~/.claude/projects/-workspace ~/.claude/todos\n"
    "head -c 65536 /dev/urandom > ~/.claude/projects/-workspace/session.jsonl\n"
    "printf '{\"type\":\"user\",\"text\":\"caf\\303\\251\"}\\n' >> ~/.claude/projects/-workspace/session.jsonl\n"
    "printf '[]' > ~/.claude/todos/t.json; printf '{\"theme\":\"dark\"}\\n' > ~/.claude/settings.json\n"
)
HASHES = "cd ~ && find .claude .claude.json -type f | LC_ALL=C sort | xargs sha256sum"


def get(host: str, attempts: int = 1) -> str:
    """Shell: print the status of an HTTP GET to ``host`` through the bottle's proxy (retried while not 200)."""
    return (
        f"for i in $(seq 1 {attempts}); do"
        f" c=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 http://{host}:{STUB_PORT}/);"
        f' [ "$c" = 200 ] && break; sleep 0.2; done; echo "$c"'
    )


class Upstream(EgressNeighbour):
    """A stub answering as ``wanted.test`` and ``other.test`` on the bottle's egress network."""

    prefix = "upstream"

    def join(self, network: NetworkInfo) -> None:
        self.engine.adapter.create_container(ContainerSpec(
            name=self.name,
            image=BASE_IMAGE,
            command=("python3", "-c", STUB_SCRIPT),
            labels=self.labels(),
            networks=(NetworkAttachment(network.name, (WANTED, OTHER)),),
        ))
        self.engine.adapter.start_container(self.name)






def test_the_agent_asks_and_a_person_decides(bottle: Bottle, engine: Engine) -> None:
    bottle.write_manifest({bottle.agent: agent_manifest(GENERIC_IMAGE, routes=False, supervise=True)})
    with Upstream(engine, bottle.agent) as upstream:
        proc = bottle.popen("start", bottle.agent, "-y", "--", "bash", "-c", IDLE)
        try:
            agent = wait_for_agent(engine, bottle.agent, proc)
            identity = agent.removeprefix(f"bottle-{naming.ROLE_AGENT}-")
            assert upstream.ready.wait(120) and upstream.error is None, upstream.error
            transcript = hosts_and_capability(bottle, engine, agent, identity, proc)
        except BaseException:
            proc.kill()
            raise
        out, err = proc.communicate(timeout=180)
    # The approval of the capability change stopped the agent; the state stays for the resume.
    assert proc.returncode == 0, f"{out}\n{err}"
    assert f"bottle resume {identity}" in err, err
    assert bottle.states() == [identity] and bottle.leftovers() == {}
    state = bottle.state_root / identity
    assert (state / "Dockerfile").read_text() == CAPABILITY
    assert (state / ".preserve").exists() and (state / "transcript" / ".claude").is_dir()

    with Upstream(engine, bottle.agent) as upstream:
        script = (
            f"{PACKAGE}; echo \"PKG $?\"; {HASHES}; echo \"WANTED $({get(WANTED, 150)})\"; echo \"OTHER $({get(OTHER)})\";"
            " echo \"MCP $(python3 -c 'import json, os; print(json.load(open(os.path.expanduser(\"~/.claude.json\")))"
            "[\"mcpServers\"][\"bottle-supervise\"][\"url\"])')\""
        )
        again = bottle.run("resume", identity, "-y", "--", "bash", "-c", script, timeout=600)
    assert again.returncode == 0, f"{again.stdout}\n{again.stderr}"
    lines = again.stdout.splitlines()
    assert "Hello, world!" in lines and "PKG 0" in lines, again.stdout
    resumed = [line for line in lines if re.match(r"^[0-9a-f]{64}  ", line)]
    assert resumed == transcript, again.stdout
    assert "WANTED 200" in lines, again.stdout  # the approved host stays allowed after the resume
    assert "OTHER 403" in lines, again.stdout
    assert "MCP http://supervise:8080/mcp" in lines, again.stdout
    assert bottle.states() == [] and bottle.leftovers() == {}
    assert engine.leftovers({naming.LABEL_IDENTITY: identity}) == {}


def hosts_and_capability(
    bottle: Bottle, engine: Engine, agent: str, identity: str, proc: subprocess.Popen[str]
) -> list[str]:
    """Steps 1 and 2 while the bottle runs; returns the transcript's hashes as the agent saw them."""

    def sh(script: str) -> tuple[int, str]:
        r = engine.adapter.exec(agent, ["bash", "-c", script])
        return r.exit_code, (r.stdout + r.stderr).decode("utf-8", "replace")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return bottle.run(*args, timeout=120)

    state = bottle.state_root / identity
    container_id = engine.adapter.inspect_container(agent).id
    # The MCP server is registered for Claude Code.
    config = json.loads((state / "home" / ".claude.json").read_text())
    assert config["mcpServers"]["bottle-supervise"] == {"type": "http", "url": "http://supervise:8080/mcp"}

    # -- a host the agent cannot reach, and a proposal for it over plain HTTP
    assert sh(get(WANTED))[1].strip() == "403"
    rc, out = sh(
        'curl -s -X POST "$BOTTLE_SUPERVISE_URL/proposals" -H "Content-Type: application/json"'
        f' -d \'{{"kind": "allow-host", "host": "{WANTED}", "reason": "fetch the test fixtures"}}\''
    )
    assert rc == 0 and json.loads(out)["id"] == 1 and json.loads(out)["status"] == "pending", out
    # -- another, with the in-bottle client
    rc, out = sh(
        'curl -s "$BOTTLE_SUPERVISE_URL/client.py" -o /tmp/bottle-propose'
        f' && python3 /tmp/bottle-propose allow-host {OTHER} --reason "look around"'
    )
    assert rc == 0, out
    listed = cli("proposals", "ls", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    pending = {p["ref"]: p for p in json.loads(listed.stdout)["proposals"]}
    assert set(pending) == {f"{identity}/1", f"{identity}/2"}, listed.stdout
    assert pending[f"{identity}/1"]["payload"]["host"] == WANTED and pending[f"{identity}/1"]["reason"] == "fetch the test fixtures"

    # -- approve: the next request passes, in the same agent container
    approved = cli("proposals", "approve", f"{identity}/1", "--note", "fixtures are fine")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert "the guard confirmed" in approved.stdout, approved.stdout
    assert sh(get(WANTED))[1].strip() == "200"
    assert proc.poll() is None and engine.adapter.inspect_container(agent).id == container_id, "no restart"
    assert sh(f"curl -s --max-time 10 http://{WANTED}:{STUB_PORT}/")[1] == STUB_BODY
    # -- reject: the other stays blocked; the agent learns why
    rejected = cli("proposals", "reject", f"{identity}/2", "--note", "not needed")
    assert rejected.returncode == 0, rejected.stdout + rejected.stderr
    assert sh(get(OTHER))[1].strip() == "403"
    rc, out = sh("python3 /tmp/bottle-propose wait 2 --timeout 10")
    assert rc == 3 and "rejected" in out and "not needed" in out, out
    supervise_audit = jsonl(state / HOST_AUDIT_LOG)
    assert [(e["event"], e["proposal"]) for e in supervise_audit] == [("approved", 1), ("applied", 1), ("rejected", 2)]
    assert all(e["decided_by"] for e in supervise_audit)

    # -- a transcript, and a capability change that adds a package
    assert sh(f"command -v {PACKAGE}")[0] != 0
    rc, out = sh(TRANSCRIPT + HASHES)
    assert rc == 0, out
    transcript = out.splitlines()
    assert len(transcript) == 4, out
    rc, out = sh(
        f"printf '%s' {shlex.quote(CAPABILITY)} > /tmp/Dockerfile.new"
        f" && python3 /tmp/bottle-propose capability /tmp/Dockerfile.new --reason 'needs {PACKAGE}'"
    )
    assert rc == 0, out
    shown = cli("proposals", "show", f"{identity}/3")
    assert shown.returncode == 0 and "+RUN apt-get update" in shown.stdout, shown.stdout
    # Its build fetches the package from the mirror, so the approver grants the build the network.
    approved = cli("proposals", "approve", f"{identity}/3", "--note", "ok", "--build-network")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert f"bottle resume {identity}" in approved.stdout
    return transcript

