"""The launcher on the in-memory runtime: what it creates, and that it removes exactly that, whatever happens."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import msgspec
import pytest

from bottle.adapters.local import LocalStateStore, SystemClock
from bottle.adapters.memory import InMemoryRuntime
from bottle.cli.launcher import (
    ImageMissing,
    Interrupted,
    LaunchInputs,
    Launcher,
    SidecarFailed,
    boot_id,
    launcher_alive,
    process_state,
)
from bottle.core import naming, seccomp
from bottle.core.images import sidecar_image_tag
from bottle.core.lifecycle import BottleInUse, LauncherRecord, NameTaken, Users, launch_steps
from bottle.core.manifest import Agent
from bottle.core.manifest_load import parse_json_manifest
from bottle.core.plan import ImageSettings, LaunchPlan, LaunchRequest, plan_launch
from bottle.core.state import PRESERVE_MARKER, BottleMetadata
from bottle.ports.errors import EngineError
from bottle.ports.runtime import ContainerSpec, ExecResult, FileEntry, NetworkSpec

ID = "agent-k3x9q"
VERSION = "t1"
SECRET = "sk-test-" + "Zq9" * 12
USERS = Users(agent="1000:1000", sidecars="1000:1000")


class Runtime(InMemoryRuntime):
    """The in-memory engine, where the agent exits with ``agent_exit`` as soon as it starts."""

    def __init__(self, images: Sequence[str], *, ready: bool = True, fail: tuple[str, str] | None = None) -> None:
        super().__init__(images=images, exec_handler=self._exec)
        self.ready = ready
        self.fail = fail
        self.agent_exit = 0
        self.calls: list[tuple[str, str]] = []

    def _exec(self, name: str, argv: Sequence[str]) -> ExecResult:
        return ExecResult(0 if self.ready else 1, b"", b"")

    def _maybe_fail(self, method: str, name: str) -> None:
        self.calls.append((method, name))
        if self.fail is not None and self.fail[0] == method and self.fail[1] in name:
            raise EngineError(f"{method} {name}: the engine said no", engine_message="injected")

    def create_network(self, spec):  # type: ignore[no-untyped-def]
        self._maybe_fail("create_network", spec.name)
        return super().create_network(spec)

    def create_container(self, spec: ContainerSpec):  # type: ignore[no-untyped-def]
        self._maybe_fail("create_container", spec.name)
        return super().create_container(spec)

    def start_container(self, name: str) -> None:
        self._maybe_fail("start_container", name)
        super().start_container(name)
        if name.startswith("bottle-agent-"):
            self._set_status(self._container(name), "exited", self.agent_exit)

    def copy_in(self, name: str, dest_dir: str, files: Sequence[FileEntry]) -> None:
        self._maybe_fail("copy_in", name)
        super().copy_in(name, dest_dir, files)

    def logs(self, name: str) -> bytes:
        return b"agent says hi\n" if name.startswith("bottle-agent-") else b""


def agent_of(bottle: dict | None = None, **fields: object) -> Agent:
    doc = {"image": "localhost/img:1", "env": {"EDITOR": "vi"}, **fields}
    if bottle is not None:
        doc["bottle"] = bottle
    (agent,) = parse_json_manifest(json.dumps({"agents": {"agent": doc}}), "/p/bottle.json", "/p")
    return agent


ROUTES = {"egress_proxy": {"routes": [{"upstream": "https://api.example.com", "token_ref": "TOKEN"}]}}


def images() -> list[str]:
    return ["localhost/img:1", sidecar_image_tag("guard", VERSION), sidecar_image_tag("egress-proxy", VERSION)]


@pytest.fixture
def store(tmp_path: Path) -> LocalStateStore:
    return LocalStateStore(str(tmp_path / "state"))


def make(
    store: LocalStateStore,
    runtime: Runtime,
    agent: Agent,
    tmp_path: Path,
    *,
    resume: bool = False,
    request_changes: dict[str, object] | None = None,
    **launcher: object,
) -> Launcher:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    (project / "file.txt").write_text("hello")
    request = LaunchRequest(
        agent="agent", cwd=str(project), runtime="memory", state_dir=store.host_path(ID),
        images=ImageSettings(VERSION), user=USERS.agent, sidecar_user=USERS.sidecars, interactive=False,
    )
    request = msgspec.structs.replace(request, **(request_changes or {}))
    plan = plan_launch(agent, request, ID, {"env:TOKEN": True})
    metadata = BottleMetadata(ID, "agent", str(project), False, datetime.now(timezone.utc), "memory")
    inputs = LaunchInputs(plan, metadata, USERS, {"env:TOKEN": SECRET}, dict(agent.env), b'{"version": 1}', resume)
    return Launcher(runtime, store, SystemClock(), inputs, **launcher)  # type: ignore[arg-type]


def leftovers(runtime: InMemoryRuntime) -> dict[str, list[str]]:
    labels = {naming.LABEL_IDENTITY: ID}
    return {
        "containers": [c.name for c in runtime.list_containers(labels)],
        "networks": [n.name for n in runtime.list_networks(labels)],
        "images": [t for i in runtime.list_images(labels) for t in i.tags],
    }


NOTHING = {"containers": [], "networks": [], "images": []}


def run_all(launcher: Launcher) -> int:
    with launcher.interrupts:
        try:
            launcher.launch()
            return launcher.run(interactive=False, out=lambda data: None)
        finally:
            launcher.teardown()


# -- a whole run -------------------------------------------------------------------


def test_a_bottle_comes_up_runs_and_leaves_nothing(store: LocalStateStore, tmp_path: Path) -> None:
    runtime = Runtime(images())
    runtime.agent_exit = 3
    launcher = make(store, runtime, agent_of(ROUTES), tmp_path)
    seen: dict[str, object] = {}
    output: list[bytes] = []

    with launcher.interrupts:
        launcher.launch()
        seen["containers"] = {c.name: c for c in runtime.list_containers({naming.LABEL_IDENTITY: ID})}
        seen["networks"] = sorted(n.name for n in runtime.list_networks({naming.LABEL_IDENTITY: ID}))
        seen["state"] = sorted(store.list_dir(ID, ""))
        code = launcher.run(interactive=False, out=output.append)
        report = launcher.teardown()

    assert code == 3
    assert output == [b"agent says hi\n"]
    assert set(seen["containers"]) == {f"bottle-{r}-{ID}" for r in ("agent", "guard", "egress-proxy")}  # type: ignore[arg-type]
    assert seen["networks"] == [f"bottle-egress-{ID}", f"bottle-internal-{ID}"]
    assert {"metadata.json", "launcher.json", "policy", "ca", "agent", "home", "audit"} <= set(seen["state"])  # type: ignore[arg-type]
    assert leftovers(runtime) == NOTHING
    assert not (ID in store.identities()) and report.problems == [] and not report.kept_state


def test_secrets_reach_only_their_sidecar_as_a_file(store: LocalStateStore, tmp_path: Path) -> None:
    runtime = Runtime(images())
    launcher = make(store, runtime, agent_of(ROUTES), tmp_path)
    with launcher.interrupts:
        try:
            launcher.launch()
            containers = {c.spec.name: c for c in runtime.containers.values()}
        finally:
            launcher.teardown()
    for name, c in containers.items():
        assert SECRET not in json.dumps(dict(c.spec.env)), name
        assert all(SECRET not in arg for arg in (c.spec.command or ())), name
    proxy = containers[f"bottle-egress-proxy-{ID}"]
    secret_file = proxy.files["/run/bottle-secrets.json"]
    assert json.loads(secret_file.content) == {"BOTTLE_TOKEN_0": SECRET}
    assert (secret_file.mode, secret_file.uid, secret_file.gid) == (0o400, 1000, 1000)
    assert proxy.spec.env["BOTTLE_SECRETS_FILE"] == "/run/bottle-secrets.json"
    agent = containers[f"bottle-agent-{ID}"]
    assert not any(SECRET.encode() in f.content for f in agent.files.values())
    assert agent.spec.env["EDITOR"] == "vi" and agent.spec.env["HOME"] == "/home/bottle"
    assert agent.spec.user == "1000:1000" and agent.spec.cap_drop == ("ALL",) and agent.spec.no_new_privileges
    assert [a.network for a in agent.spec.networks] == [f"bottle-internal-{ID}"]


def test_state_files_for_the_agent(store: LocalStateStore, tmp_path: Path) -> None:
    runtime = Runtime(images())
    launcher = make(store, runtime, agent_of(), tmp_path)
    with launcher.interrupts:
        try:
            launcher.launch()
            passwd = store.read(ID, "agent/passwd")
            bundle = store.read(ID, "agent/ca-certificates.crt")
            gitconfig = store.read(ID, "home/.gitconfig")
            guard_ca = store.read(ID, "ca/guard.crt")
            policy = store.read(ID, "policy/egress.json")
        finally:
            launcher.teardown()
    assert passwd is not None and b"bottle:x:1000:1000:" in passwd
    assert guard_ca is not None and bundle is not None and bundle.endswith(guard_ca)
    assert gitconfig is not None and b"[safe]" in gitconfig
    assert policy == b'{"version": 1}'


# -- interrupted or failing at every step -------------------------------------------


def step_count(store: LocalStateStore, tmp_path: Path, agent: Agent) -> int:
    return len(make(store, Runtime(images()), agent, tmp_path).steps)


@pytest.mark.parametrize("bottle", [None, ROUTES], ids=["guard-only", "with-routes"])
def test_an_interrupt_after_any_step_leaves_nothing(store: LocalStateStore, tmp_path: Path, bottle: dict | None) -> None:
    agent = agent_of(bottle)
    total = step_count(store, tmp_path, agent)
    assert total >= 11
    for n in range(1, total + 1):
        runtime = Runtime(images())
        launcher = make(store, runtime, agent, tmp_path, interrupt_after=n)
        with pytest.raises(Interrupted) as info:
            run_all(launcher)
        assert info.value.exit_code == 130
        assert leftovers(runtime) == NOTHING, n
        assert not (ID in store.identities()), n
        assert not runtime.containers and not any(
            naming.LABEL_IDENTITY in net.labels for net in runtime.networks.values()
        ), n


FAILURES = [
    ("create_network", "bottle-egress-"),
    ("create_container", "bottle-guard-"),
    ("start_container", "bottle-guard-"),
    ("create_container", "bottle-egress-proxy-"),
    ("copy_in", "bottle-egress-proxy-"),
    ("create_container", "bottle-agent-"),
    ("start_container", "bottle-agent-"),
]


@pytest.mark.parametrize("fail", FAILURES, ids=[f"{m}:{n}" for m, n in FAILURES])
def test_an_engine_error_at_any_step_leaves_nothing(store: LocalStateStore, tmp_path: Path, fail: tuple[str, str]) -> None:
    runtime = Runtime(images(), fail=fail)
    launcher = make(store, runtime, agent_of(ROUTES), tmp_path)
    with pytest.raises(EngineError, match="the engine said no"):
        run_all(launcher)
    assert leftovers(runtime) == NOTHING
    assert not runtime.containers
    assert not (ID in store.identities())


def test_every_container_gets_the_syscall_profile_its_plan_names(store: LocalStateStore, tmp_path: Path) -> None:
    runtime = Runtime(images())
    launcher = make(store, runtime, agent_of({**ROUTES, "syscalls": {"allow": ["io_uring"]}}), tmp_path)
    with launcher.interrupts:
        launcher.launch()
        specs = {c.spec.name: c.spec.seccomp_profile for c in runtime.containers.values()}
        launcher.teardown()
    assert specs == {
        f"bottle-agent-{ID}": seccomp.render_profile(("io_uring",)),
        f"bottle-guard-{ID}": seccomp.render_profile(),
        f"bottle-egress-proxy-{ID}": seccomp.render_profile(),
    }


def test_an_engine_that_cannot_apply_the_profile_stops_the_launch(store: LocalStateStore, tmp_path: Path) -> None:
    runtime = Runtime(images())
    runtime.seccomp = False
    launcher = make(store, runtime, agent_of(), tmp_path)
    with pytest.raises(EngineError, match="cannot apply a seccomp profile"):
        run_all(launcher)
    assert leftovers(runtime) == NOTHING and not runtime.containers
    assert not (ID in store.identities())


def test_a_sidecar_that_never_gets_ready_is_reported_and_removed(
    store: LocalStateStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = Runtime(images(), ready=False)
    original = runtime.start_container

    def start_then_die(name: str) -> None:
        original(name)
        if "guard" in name:
            runtime._set_status(runtime._container(name), "exited", 2)

    monkeypatch.setattr(runtime, "start_container", start_then_die)
    launcher = make(store, runtime, agent_of(), tmp_path)
    with pytest.raises(SidecarFailed, match="guard sidecar exited with code 2"):
        run_all(launcher)
    assert leftovers(runtime) == NOTHING and not (ID in store.identities())


# -- refusals that create nothing --------------------------------------------------------


def test_a_missing_sidecar_image_creates_nothing(store: LocalStateStore, tmp_path: Path) -> None:
    runtime = Runtime(["localhost/img:1"])
    launcher = make(store, runtime, agent_of(), tmp_path)
    with pytest.raises(ImageMissing, match="bottle-guard") as info:
        run_all(launcher)
    assert "images build" in (info.value.hint or "")
    assert leftovers(runtime) == NOTHING and not (ID in store.identities())
    assert not any(call[0].startswith("create") for call in runtime.calls)


def test_a_missing_agent_image_creates_nothing(store: LocalStateStore, tmp_path: Path) -> None:
    runtime = Runtime(images()[1:])
    with pytest.raises(ImageMissing, match="localhost/img:1"):
        run_all(make(store, runtime, agent_of(), tmp_path))
    assert not (ID in store.identities()) and not runtime.calls


def test_leftovers_of_the_same_identity_stop_the_launch(store: LocalStateStore, tmp_path: Path) -> None:
    runtime = Runtime(images())
    runtime.create_network(NetworkSpec(f"bottle-internal-{ID}", True, naming.managed_labels(ID, "internal")))
    with pytest.raises(BottleInUse, match="left resources behind") as info:
        run_all(make(store, runtime, agent_of(), tmp_path))
    assert "bottle cleanup" in (info.value.hint or "")
    assert [n.name for n in runtime.networks.values()] == [f"bottle-internal-{ID}"], "not the launch's to remove"
    assert not (ID in store.identities())


def test_a_foreign_container_with_the_name_is_a_conflict(store: LocalStateStore, tmp_path: Path) -> None:
    runtime = Runtime(images())
    runtime.create_container(ContainerSpec(name=f"bottle-guard-{ID}", image="localhost/img:1", labels={"x": "y"}))
    with pytest.raises(NameTaken):
        run_all(make(store, runtime, agent_of(), tmp_path))
    assert [c.spec.name for c in runtime.containers.values()] == [f"bottle-guard-{ID}"]


# -- images and resume -----------------------------------------------------------------------


def test_copy_cwd_builds_a_project_layer_and_removes_it(store: LocalStateStore, tmp_path: Path) -> None:
    runtime = Runtime(images())
    project = tmp_path / "project"
    project.mkdir()
    (project / "file.txt").write_text("hello")
    request = msgspec.structs.replace(
        LaunchRequest(agent="agent", cwd=str(project), runtime="memory", state_dir=store.host_path(ID),
                      images=ImageSettings(VERSION), user="1000:1000", interactive=False),
        copy_cwd=True,
    )
    plan = plan_launch(agent_of(), request, ID, {})
    launcher = make(store, runtime, agent_of(), tmp_path)
    launcher.plan = launcher.inputs.plan = plan
    launcher.steps = launch_steps(plan)
    with launcher.interrupts:
        try:
            launcher.launch()
            agent = next(c for c in runtime.containers.values() if c.spec.name.startswith("bottle-agent-"))
            assert agent.spec.image == f"localhost/bottle-project-{ID}:latest"
            assert all(m.target != "/workspace" for m in agent.spec.mounts)
        finally:
            launcher.teardown()
    assert leftovers(runtime) == NOTHING
    assert [t for i in runtime.images.values() for t in i.tags if ID in t] == []
    assert (project / "file.txt").read_text() == "hello"


def test_a_dockerfile_agent_is_built_once_and_kept(store: LocalStateStore, tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nLABEL kind=agent\n")
    agent = agent_of(image=None, dockerfile=str(context / "Dockerfile"))
    runtime = Runtime(images() + ["localhost/bottle-base:bookworm"])
    builds: list[str] = []
    original = runtime.build_image
    runtime.build_image = lambda request, on_progress=None: builds.append(request.tag) or original(request, on_progress)  # type: ignore[method-assign]
    for _ in range(2):
        run_all(make(store, runtime, agent, tmp_path))
    assert builds == ["localhost/bottle-dockerfile-agent:latest"], "the second launch reuses the image"
    assert runtime.image_exists("localhost/bottle-dockerfile-agent:latest")
    (context / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nLABEL kind=changed\n")
    run_all(make(store, runtime, agent, tmp_path))
    assert len(builds) == 2, "a changed Dockerfile builds again"


def test_a_resume_keeps_preserved_state_and_shows_the_hint(store: LocalStateStore, tmp_path: Path) -> None:
    runtime = Runtime(images())
    store.write(ID, "metadata.json", b"{}")
    store.write(ID, "home/.claude/transcript.jsonl", b"earlier")
    launcher = make(store, runtime, agent_of(), tmp_path, resume=True)
    with launcher.interrupts:
        launcher.launch()
        assert not store.exists(ID, PRESERVE_MARKER)
        launcher.run(interactive=False, out=lambda data: None)
        store.write(ID, PRESERVE_MARKER, b"")  # supervise approved a capability change meanwhile
        report = launcher.teardown()
    assert report.kept_state and report.resume_hint == f"bottle resume {ID}"
    assert store.read(ID, "home/.claude/transcript.jsonl") == b"earlier"
    assert leftovers(runtime) == NOTHING


@pytest.mark.parametrize("approved_network, expected_mode", [(False, "none"), (True, None)])
def test_the_per_bottle_image_builds_from_a_context_holding_only_its_dockerfile(
    store: LocalStateStore, tmp_path: Path, approved_network: bool, expected_mode: str | None
) -> None:
    runtime = Runtime(images())
    store.write(ID, "metadata.json", b"{}")
    store.write(ID, "ca/guard.key", b"PRIVATE KEY OF THE GUARD CA", secret=True)
    store.write(ID, "Dockerfile", b"ARG BASE\nFROM ${BASE}\nLABEL kind=per-bottle\n")
    store.write(ID, "build/stale-from-last-time", b"old")
    if approved_network:
        store.write(ID, "Dockerfile.network", b"default\n")
    contexts: list[dict[str, bytes]] = []
    modes: list[str | None] = []
    original = runtime.build_image

    def build(request, on_progress=None):  # type: ignore[no-untyped-def]
        files = {}
        for root, _, names in os.walk(request.context_dir):
            for name in names:
                path = os.path.join(root, name)
                files[os.path.relpath(path, request.context_dir)] = Path(path).read_bytes()
        contexts.append(files)
        modes.append(request.network_mode)
        return original(request, on_progress)

    runtime.build_image = build  # type: ignore[method-assign]
    launcher = make(store, runtime, agent_of(), tmp_path, resume=True, request_changes={"per_bottle_dockerfile": True})
    with launcher.interrupts:
        try:
            launcher.launch()
            agent = next(c for c in runtime.containers.values() if c.spec.name.startswith("bottle-agent-"))
            assert agent.spec.image == f"localhost/bottle-agent-{ID}:latest"
            assert runtime.inspect_image(agent.spec.image).labels["kind"] == "per-bottle"
        finally:
            launcher.teardown()
    assert contexts == [{"Dockerfile": b"ARG BASE\nFROM ${BASE}\nLABEL kind=per-bottle\n"}]
    # An agent wrote that Dockerfile: its RUN steps reach no network unless the approver allowed it.
    assert modes == [expected_mode]
    assert not store.exists(ID, "build"), "the copy goes once the image is built"
    assert leftovers(runtime) == NOTHING


def test_supervise_gets_its_queue_and_claude_code_its_mcp_server(store: LocalStateStore, tmp_path: Path) -> None:
    runtime = Runtime(images() + [sidecar_image_tag("supervise", VERSION)])
    store.write(ID, "metadata.json", b"{}")
    earlier = {"theme": "dark", "mcpServers": {"mine": {"type": "stdio", "command": "x"}}}
    store.write(ID, "home/.claude.json", json.dumps(earlier).encode())
    store.write(ID, "policy/grants.json", b'{"version": 1, "grants": []}')
    launcher = make(store, runtime, agent_of({"supervise": True}), tmp_path, resume=True)
    with launcher.interrupts:
        try:
            launcher.launch()
            supervise = next(c.spec for c in runtime.containers.values() if c.spec.name == f"bottle-supervise-{ID}")
            config = json.loads(store.read(ID, "home/.claude.json") or b"")
            queue = Path(store.host_path(ID, "proposals"))
            decisions = Path(store.host_path(ID, "decisions"))
            grants = store.exists(ID, "policy/grants.json")
            dirs = queue.is_dir() and decisions.is_dir()
        finally:
            launcher.teardown()
    assert {(m.source, m.target, m.read_only) for m in supervise.mounts} == {
        (str(queue), "/run/supervise/queue", False),
        (str(decisions), "/run/supervise/decisions", True),
    }
    assert dirs
    assert not grants, "temporary grants last one session"
    assert config["theme"] == "dark" and config["mcpServers"]["mine"] == earlier["mcpServers"]["mine"]
    assert config["mcpServers"]["bottle-supervise"] == {"type": "http", "url": "http://supervise:8080/mcp"}


def test_a_claude_json_that_is_not_an_object_is_left_alone(store: LocalStateStore, tmp_path: Path) -> None:
    runtime = Runtime(images() + [sidecar_image_tag("supervise", VERSION)])
    store.write(ID, "metadata.json", b"{}")
    store.write(ID, "home/.claude.json", b"[1, 2]")
    said: list[str] = []
    run_all(make(store, runtime, agent_of({"supervise": True}), tmp_path, resume=True, say=said.append))
    # the state went with the session; what the launcher said is what is left
    assert any(".claude.json" in line for line in said), said


def test_a_failed_resume_keeps_the_state(store: LocalStateStore, tmp_path: Path) -> None:
    runtime = Runtime(images(), fail=("create_container", "bottle-guard-"))
    store.write(ID, PRESERVE_MARKER, b"")
    with pytest.raises(EngineError):
        run_all(make(store, runtime, agent_of(), tmp_path, resume=True))
    assert store.exists(ID, PRESERVE_MARKER)
    assert leftovers(runtime) == NOTHING


def test_a_plain_session_end_removes_a_resumed_bottles_state(store: LocalStateStore, tmp_path: Path) -> None:
    runtime = Runtime(images())
    store.write(ID, PRESERVE_MARKER, b"")
    run_all(make(store, runtime, agent_of(), tmp_path, resume=True))
    assert not (ID in store.identities())


# -- is a launcher still alive? ---------------------------------------------------------------


def record_of(pid: int, **changes: object) -> LauncherRecord:
    state = process_state(pid)
    record = LauncherRecord(pid=pid, host=socket.gethostname(), boot_id=boot_id(), start_ticks=state[1] if state else 0)
    return msgspec.structs.replace(record, **changes)


def test_a_running_launcher_is_alive() -> None:
    assert launcher_alive(record_of(os.getpid()))
    with subprocess.Popen(["sleep", "30"]) as child:
        try:
            assert launcher_alive(record_of(child.pid))
        finally:
            child.kill()


def test_a_dead_a_zombie_or_a_reused_pid_is_not() -> None:
    child = subprocess.Popen(["sleep", "30"])
    record = record_of(child.pid)
    child.kill()
    time.sleep(0.2)  # not reaped yet: a zombie
    assert process_state(child.pid) is not None and process_state(child.pid)[0] == "Z"  # type: ignore[index]
    assert not launcher_alive(record)
    child.wait()
    assert not launcher_alive(record)
    with subprocess.Popen(["sleep", "30"]) as other:
        try:
            assert not launcher_alive(record_of(other.pid, start_ticks=1)), "another process with the same pid"
            assert not launcher_alive(record_of(other.pid, host="elsewhere"))
        finally:
            other.kill()


# -- the git gate ---------------------------------------------------------------------------

GIT = {"git": [{"name": "origin", "upstream": "https://git.example.com/org/repo.git", "token_ref": "TOKEN",
                "allow_findings": [{"path": "fixtures/*", "rule": "jwt"}]}]}


def test_the_gate_is_waited_for_on_its_health_path_and_the_agents_git_points_at_it(
    store: LocalStateStore, tmp_path: Path
) -> None:
    from bottle.core.gitgate import decode_gate_config

    probes: list[tuple[str, list[str]]] = []

    class Recording(Runtime):
        def _exec(self, name: str, argv: Sequence[str]) -> ExecResult:
            probes.append((name, list(argv)))
            return super()._exec(name, argv)

    runtime = Recording(images() + [sidecar_image_tag("git-gate", VERSION)])
    launcher = make(store, runtime, agent_of(GIT), tmp_path)
    with launcher.interrupts:
        try:
            launcher.launch()
            gitconfig = (store.read(ID, "home/.gitconfig") or b"").decode()
            gate = next(c for c in runtime.containers.values() if c.spec.name == f"bottle-git-gate-{ID}")
        finally:
            launcher.teardown()
    gate_probe = [argv for name, argv in probes if name == f"bottle-git-gate-{ID}"]
    assert gate_probe and gate_probe[0][-1] == "/healthz"
    guard_probe = [argv for name, argv in probes if name == f"bottle-guard-{ID}"]
    assert guard_probe and "/healthz" not in guard_probe[0]
    assert '[url "http://git-gate:8080/origin.git"]' in gitconfig
    assert 'insteadOf = "https://git.example.com/org/repo.git"' in gitconfig
    (remote,) = decode_gate_config(gate.spec.env["BOTTLE_GIT_REMOTES"]).remotes
    assert remote.upstream == "https://git.example.com/org/repo.git" and remote.waivers[0].rule == "jwt"
    assert json.loads(gate.files["/run/bottle-secrets.json"].content) == {"BOTTLE_GIT_TOKEN_0": SECRET}
    assert SECRET not in gitconfig and SECRET not in json.dumps(dict(gate.spec.env))


def test_a_resume_renews_bottles_gitconfig_block_and_keeps_the_agents_lines(
    store: LocalStateStore, tmp_path: Path
) -> None:
    store.write(ID, "home/.gitconfig", b"[user]\n\tname = agent\n[url \"http://stale\"]\n\tinsteadOf = x\n")
    runtime = Runtime(images() + [sidecar_image_tag("git-gate", VERSION)])
    launcher = make(store, runtime, agent_of(GIT), tmp_path, resume=True)
    with launcher.interrupts:
        try:
            launcher.launch()
            gitconfig = (store.read(ID, "home/.gitconfig") or b"").decode()
        finally:
            launcher.teardown()
    assert "name = agent" in gitconfig and "git-gate:8080/origin.git" in gitconfig
    assert gitconfig.count("[safe]") == 1
