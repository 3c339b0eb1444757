"""core.lifecycle: launch steps, teardown order, probes, provisioning files, cleanup and ls decisions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bottle.core import naming
from bottle.core.gitgate import GateRemote, gitconfig_rewrites
from bottle.core.lifecycle import (
    AGENT_HOME,
    BottleInUse,
    Created,
    FoundResource,
    ImageFacts,
    NameTaken,
    StateFacts,
    agent_files,
    attach_argv,
    build_cache_key,
    choose_users,
    gitconfig_text,
    launch_steps,
    ls_rows,
    orphan_verdict,
    project_dockerfile,
    ready_probe,
    render_ls,
    select_cleanup,
    steps_ready,
    teardown_waves,
)
from bottle.core.manifest import Agent
from bottle.core.manifest_load import parse_json_manifest
from bottle.core.plan import ImageSettings, LaunchPlan, LaunchRequest, plan_launch
from bottle.core.state import BottleMetadata
from bottle.ports.runtime import ContainerInfo, ImageInfo, NetworkInfo

ID = "agent-k3x9q"


def agent_of(bottle: dict | None = None, **fields: object) -> Agent:
    doc = {"image": "img:1", **fields}
    if bottle is not None:
        doc["bottle"] = bottle
    (agent,) = parse_json_manifest(json.dumps({"agents": {"agent": doc}}), "/p/bottle.json", "/p")
    return agent


def plan_of(agent: Agent, **changes: object) -> LaunchPlan:
    request = LaunchRequest(
        agent="agent", cwd="/p", runtime="docker", state_dir=f"/s/{ID}", images=ImageSettings("1.0"),
        user="1000:1000",
    )
    request = msgspec.structs.replace(request, **changes)
    present = {ref: True for ref in ("env:TOKEN", "env:GH")}
    return plan_launch(agent, request, ID, present)


ROUTES = {"egress_proxy": {"routes": [{"upstream": "https://api.example.com", "token_ref": "TOKEN"}]}}


# -- users -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("facts", "agent", "sidecars", "userns", "noted"),
    [
        ({"euid": 1001, "egid": 1001, "rootless_engine": True}, "1001:1001", None, "keep-id", False),
        ({"euid": 1000, "egid": 100, "rootless_engine": False}, "1000:100", "1000:100", None, False),
        ({"euid": 0, "egid": 0, "rootless_engine": False, "sudo_uid": 1234, "sudo_gid": 55}, "1234:55", "0:0", None, False),
        ({"euid": 0, "egid": 0, "rootless_engine": False, "cwd_owner": (4321, 4322)}, "4321:4322", "0:0", None, False),
        ({"euid": 0, "egid": 0, "rootless_engine": False, "cwd_owner": (0, 0)}, "1000:1000", "0:0", None, True),
        ({"euid": 0, "egid": 0, "rootless_engine": False}, "1000:1000", "0:0", None, True),
    ],
)
def test_who_runs_as_whom(facts: dict, agent: str, sidecars: str | None, userns: str | None, noted: bool) -> None:
    users = choose_users(**facts)
    assert (users.agent, users.sidecars, users.userns, users.note is not None) == (agent, sidecars, userns, noted)


@given(st.integers(0, 70000), st.integers(0, 70000), st.booleans(), st.none() | st.integers(0, 70000))
def test_the_agent_never_runs_as_root(euid: int, egid: int, rootless: bool, sudo: int | None) -> None:
    users = choose_users(euid=euid, egid=egid, rootless_engine=rootless, sudo_uid=sudo, cwd_owner=(0, 0))
    if not rootless:  # rootless root is refused before this is asked
        assert users.agent.split(":")[0] != "0"


# -- launch steps ------------------------------------------------------------


def _by_kind(steps, kind, role=None):  # type: ignore[no-untyped-def]
    return [s for s in steps if s.kind == kind and (role is None or s.role == role)]


def _before(steps, first, then) -> bool:  # type: ignore[no-untyped-def]
    """``first`` is a (transitive) dependency of ``then``."""
    by_index = {s.index: s for s in steps}
    todo, seen = list(then.needs), set()
    while todo:
        i = todo.pop()
        if i == first.index:
            return True
        if i not in seen:
            seen.add(i)
            todo.extend(by_index[i].needs)
    return False


PLANS = {
    "plain": lambda: plan_of(agent_of()),
    "routes": lambda: plan_of(agent_of(ROUTES)),
    "copy-cwd": lambda: plan_of(agent_of(ROUTES), copy_cwd=True),
    "dockerfile+per-bottle+copy": lambda: plan_of(
        agent_of(image=None, dockerfile="Dockerfile"), copy_cwd=True, per_bottle_dockerfile=True
    ),
}


@pytest.mark.parametrize("name", list(PLANS))
def test_steps_form_a_valid_serial_order(name: str) -> None:
    steps = launch_steps(PLANS[name]())
    assert [s.index for s in steps] == list(range(1, len(steps) + 1))
    for s in steps:
        assert all(n < s.index for n in s.needs), s
    # executing greedily in waves reaches every step
    done: set[int] = set()
    while len(done) < len(steps):
        ready = steps_ready(steps, done)
        assert ready, "stuck"
        done |= {s.index for s in ready}


@pytest.mark.parametrize("name", list(PLANS))
def test_nothing_is_created_before_the_probe_and_the_images(name: str) -> None:
    steps = launch_steps(PLANS[name]())
    (probe,) = _by_kind(steps, "probe")
    assert probe.index == 1 and probe.needs == ()
    (state,) = _by_kind(steps, "write_state")
    (cas,) = _by_kind(steps, "mint_cas")
    assert _before(steps, state, cas)
    for create in _by_kind(steps, "create_container") + _by_kind(steps, "agent_files"):
        assert _before(steps, cas, create), "containers mount the CAs"
    for image in _by_kind(steps, "check_image") + _by_kind(steps, "build_image"):
        assert _before(steps, probe, image)
        assert _before(steps, image, state)
    for creating in _by_kind(steps, "create_network") + _by_kind(steps, "create_container"):
        assert _before(steps, state, creating), "the launcher record precedes every engine resource"


@pytest.mark.parametrize("name", list(PLANS))
def test_sidecars_run_and_are_ready_before_the_agent(name: str) -> None:
    plan = PLANS[name]()
    steps = launch_steps(plan)
    (agent,) = _by_kind(steps, "create_container", naming.ROLE_AGENT)
    assert agent.index == len(steps), "the agent container is the last step; the run follows"
    for network in _by_kind(steps, "create_network"):
        for create in _by_kind(steps, "create_container"):
            assert _before(steps, network, create)
    for start in _by_kind(steps, "start_container"):
        assert _before(steps, start, agent), "Podman writes running peers into the agent's /etc/hosts"
    assert {s.target for s in _by_kind(steps, "wait_ready")} == {c.name for c in plan.containers if c.role != "agent"}


def test_the_egress_proxy_is_created_after_the_guard_runs() -> None:
    steps = launch_steps(plan_of(agent_of(ROUTES)))
    (guard_start,) = _by_kind(steps, "start_container", naming.ROLE_GUARD)
    (proxy,) = _by_kind(steps, "create_container", naming.ROLE_EGRESS_PROXY)
    assert _before(steps, guard_start, proxy)
    # and the secrets go in before the proxy starts
    (deliver,) = _by_kind(steps, "deliver_secrets", naming.ROLE_EGRESS_PROXY)
    (proxy_start,) = _by_kind(steps, "start_container", naming.ROLE_EGRESS_PROXY)
    assert _before(steps, proxy, deliver) and _before(steps, deliver, proxy_start)


def test_independent_steps_can_run_together() -> None:
    steps = launch_steps(plan_of(agent_of(ROUTES)))
    done = {s.index for s in steps if s.kind in ("probe", "check_image", "write_state", "mint_cas")}
    ready = {(s.kind, s.target) for s in steps_ready(steps, done)}
    assert ("create_network", f"bottle-internal-{ID}") in ready
    assert ("create_network", f"bottle-egress-{ID}") in ready
    assert any(kind == "agent_files" for kind, _ in ready)


def test_layers_build_in_order() -> None:
    steps = launch_steps(PLANS["dockerfile+per-bottle+copy"]())
    builds = _by_kind(steps, "build_image")
    assert [b.target for b in builds][0].startswith("localhost/bottle-dockerfile-")
    assert len(builds) == 3
    assert _before(steps, builds[0], builds[1]) and _before(steps, builds[1], builds[2])


# -- teardown ------------------------------------------------------------------

created_items = st.lists(
    st.builds(
        Created,
        st.sampled_from(["image", "state", "network", "container"]),
        st.sampled_from(["a", "b", "c", "d"]),
        st.sampled_from(["agent", "guard", "egress-proxy", "internal", "probe", ""]),
    ),
    max_size=20,
)

ORDER = {"container": 0, "network": 1, "image": 2, "state": 3}


@given(created_items)
def test_teardown_removes_everything_once_in_dependency_order(items: list[Created]) -> None:
    waves = teardown_waves(items)
    flat = [c for wave in waves for c in wave]
    assert sorted(flat, key=repr) == sorted(set(items), key=repr)
    assert len(flat) == len(set(flat))
    kinds = [ORDER[c.kind] for c in flat]
    assert kinds == sorted(kinds), "containers, then networks, then images, then state"
    for wave in waves:
        assert len({c.kind for c in wave}) == 1
    agents = [c for c in flat if c.kind == "container" and c.role == "agent"]
    if agents:
        assert waves[0] == tuple(agents), "the agent goes before its proxies"


def test_an_exited_agent_goes_with_the_sidecars() -> None:
    items = [Created("container", "g", "guard"), Created("container", "a", "agent")]
    assert teardown_waves(items) == ((Created("container", "a", "agent"),), (Created("container", "g", "guard"),))
    assert teardown_waves(items, agent_exited=True) == ((Created("container", "a", "agent"), Created("container", "g", "guard")),)


def test_teardown_reverses_creation_order_within_a_kind() -> None:
    items = [Created("network", "n1"), Created("network", "n2"), Created("container", "g", "guard"),
             Created("container", "p", "egress-proxy")]
    assert teardown_waves(items) == (
        (Created("container", "p", "egress-proxy"), Created("container", "g", "guard")),
        (Created("network", "n2"), Created("network", "n1")),
    )


# -- the orphan probe ------------------------------------------------------------


def ours(name: str, status: str = "exited", kind: str = "container") -> FoundResource:
    return FoundResource(kind, name, naming.managed_labels(ID, "guard"), status)  # type: ignore[arg-type]


def test_probe_nothing_found_is_ok() -> None:
    assert orphan_verdict(ID, []).ok


def test_probe_leftovers_point_at_cleanup() -> None:
    verdict = orphan_verdict(ID, [ours(f"bottle-guard-{ID}"), ours(f"bottle-egress-{ID}", kind="network")])
    assert verdict.kind == "leftover"
    assert "bottle cleanup" in verdict.hint
    err = verdict.error()
    assert isinstance(err, BottleInUse) and err.exit_code == 2
    assert f"bottle-guard-{ID}" in str(err)


def test_probe_running_bottle_is_in_use() -> None:
    verdict = orphan_verdict(ID, [ours(f"bottle-agent-{ID}", "running")])
    assert verdict.kind == "running" and "bottle ls" in verdict.hint


def test_probe_foreign_name_is_a_conflict_cleanup_would_not_touch() -> None:
    foreign = FoundResource("container", f"bottle-agent-{ID}", {"something": "else"}, "running")
    verdict = orphan_verdict(ID, [foreign, ours(f"bottle-guard-{ID}")])
    assert verdict.kind == "name-taken"
    assert isinstance(verdict.error(), NameTaken)
    assert "cleanup" not in verdict.hint


def test_ok_verdict_has_no_error() -> None:
    with pytest.raises(ValueError):
        orphan_verdict(ID, []).error()


# -- the agent's files -------------------------------------------------------------

PASSWD = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
CA = b"-----BEGIN CERTIFICATE-----\nBOTTLE\n-----END CERTIFICATE-----\n"


def facts(**changes: object) -> ImageFacts:
    base = ImageFacts("sha256:1", PASSWD, GROUP, "/etc/ssl/certs/ca-certificates.crt", b"IMAGE-CAS")
    return msgspec.structs.replace(base, **changes)


def test_a_missing_user_is_added_with_the_bottle_home() -> None:
    files = agent_files(facts(), "1234:555", CA, "")
    entry = files.passwd.splitlines()[-1].split(":")
    assert entry == ["bottle", "x", "1234", "555", "bottle agent", AGENT_HOME, "/bin/bash"]
    assert files.passwd.startswith(PASSWD)
    assert files.group.splitlines()[-1] == "bottle:x:555:"


def test_an_existing_user_keeps_its_name_and_gets_the_bottle_home() -> None:
    passwd = PASSWD + "node:x:1000:1000:node:/home/node:/bin/sh\n"
    group = GROUP + "node:x:1000:\n"
    files = agent_files(facts(passwd=passwd, group=group), "1000:1000", CA, "")
    assert "node:x:1000:1000:node:/home/bottle:/bin/sh" in files.passwd.splitlines()
    assert files.group == group
    assert len(files.passwd.splitlines()) == 3


def test_a_taken_name_gets_another() -> None:
    passwd = PASSWD + "bottle:x:2000:2000::/x:/bin/sh\n"
    files = agent_files(facts(passwd=passwd), "3000:3000", CA, "")
    assert files.passwd.splitlines()[-1].startswith("bottle2:x:3000:3000:")


def test_the_ca_bundle_is_the_images_plus_the_bottle_ca() -> None:
    files = agent_files(facts(), "1:1", CA, "")
    assert files.ca_bundle == b"IMAGE-CAS\n" + CA
    assert files.ca_bundle_target == "/etc/ssl/certs/ca-certificates.crt"
    fedora = agent_files(facts(ca_bundle_path="/etc/pki/tls/certs/ca-bundle.crt"), "1:1", CA, "")
    assert fedora.ca_bundle_target == "/etc/pki/tls/certs/ca-bundle.crt"
    bare = agent_files(facts(ca_bundle_path=None, ca_bundle=b""), "1:1", CA, "")
    assert bare.ca_bundle == CA and bare.ca_bundle_target == "/etc/ssl/certs/ca-certificates.crt"


def _git_config(home: Path, text: str, *args: str) -> str:
    (home / ".gitconfig").write_text(text)
    env = {"HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", "PATH": os.environ["PATH"]}
    return subprocess.run(["git", "config", "--global", *args], env=env, capture_output=True, text=True).stdout


def test_gitconfig_sends_brokered_remotes_to_the_gate_and_trusts_the_project(tmp_path: Path) -> None:
    rewrites = gitconfig_rewrites([GateRemote("origin", "https://github.com/o/r.git", "BOTTLE_GIT_TOKEN_0")])
    text = gitconfig_text(rewrites)
    assert _git_config(tmp_path, text, "--get-all", "safe.directory").split() == ["*"]
    forms = _git_config(tmp_path, text, "--get-all", "url.http://git-gate:8080/origin.git.insteadOf").split()
    assert "https://github.com/o/r.git" in forms and "git@github.com:o/r" in forms


def test_gitconfig_on_resume_keeps_the_agents_settings_and_renews_bottles_block(tmp_path: Path) -> None:
    old = gitconfig_text(gitconfig_rewrites([GateRemote("old", "https://h.example/o/old.git", "T")]))
    edited = old + "[user]\n\tname = agent\n[alias]\n\tst = status\n"
    text = gitconfig_text(gitconfig_rewrites([GateRemote("new", "https://h.example/o/new.git", "T")]), edited)
    assert _git_config(tmp_path, text, "user.name").strip() == "agent"
    assert _git_config(tmp_path, text, "alias.st").strip() == "status"
    assert "old.git" not in text and _git_config(tmp_path, text, "--get-all", "safe.directory").split() == ["*"]
    assert _git_config(tmp_path, text, "url.http://git-gate:8080/new.git.insteadOf")
    # Renewing twice changes nothing.
    assert gitconfig_text(gitconfig_rewrites([GateRemote("new", "https://h.example/o/new.git", "T")]), text) == text


@pytest.mark.parametrize("health_path", [None, "/healthz"])
def test_the_ready_probe_waits_for_a_port_or_a_healthy_answer(health_path: str | None) -> None:
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        healthy = False

        def do_GET(self) -> None:  # noqa: N802
            ok = self.path == "/healthz" and Handler.healthy
            self.send_response(200 if ok else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        argv = [sys.executable if a == "python3" else a for a in ready_probe(port, 0.3, health_path)]
        first = subprocess.run(argv, capture_output=True).returncode
        Handler.healthy = True
        second = subprocess.run(argv, capture_output=True).returncode
    finally:
        server.shutdown()
        server.server_close()
    # Without a path an open port is enough; with one, only a 200 counts.
    assert (first, second) == ((0, 0) if health_path is None else (1, 0))
    closed = subprocess.run([sys.executable if a == "python3" else a for a in ready_probe(port, 0.2, health_path)])
    assert closed.returncode == 1


def test_project_dockerfile_copies_as_the_agent_user() -> None:
    text = project_dockerfile("1000:1000")
    assert "FROM ${BASE}" in text and "COPY --chown=1000:1000 project/ /workspace/" in text


def test_build_cache_key_changes_with_each_input() -> None:
    key = build_cache_key(b"FROM x", "sha256:a", [("f", 1, 2)])
    assert key == build_cache_key(b"FROM x", "sha256:a", [("f", 1, 2)])
    assert len({key, build_cache_key(b"FROM y", "sha256:a", [("f", 1, 2)]),
                build_cache_key(b"FROM x", "sha256:b", [("f", 1, 2)]),
                build_cache_key(b"FROM x", "sha256:a", [("f", 1, 3)])}) == 4


def test_attach_argv_reaches_the_adapters_engine() -> None:
    assert attach_argv("docker", "unix:///var/run/docker.sock", "c") == [
        "docker", "-H", "unix:///var/run/docker.sock", "start", "--attach", "--interactive", "c"]
    assert attach_argv("podman", "unix:///run/user/1000/podman/podman.sock", "c") == [
        "podman", "--remote", "--url", "unix:///run/user/1000/podman/podman.sock",
        "start", "--attach", "--interactive", "c"]
    with pytest.raises(ValueError):
        attach_argv("memory", "", "c")


# -- cleanup and ls ------------------------------------------------------------------

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)


def container(identity: str, role: str, status: str) -> ContainerInfo:
    return ContainerInfo(f"id-{identity}-{role}", naming.resource_name(role, identity), "img", status,  # type: ignore[arg-type]
                         naming.managed_labels(identity, role, "a"))


def network(identity: str, role: str) -> NetworkInfo:
    return NetworkInfo(f"n-{identity}-{role}", naming.resource_name(role, identity), role == "internal",
                       naming.managed_labels(identity, role))


def meta(identity: str, minutes: int = 5) -> BottleMetadata:
    return BottleMetadata(identity, "a", "/p", False, NOW - timedelta(minutes=minutes), "docker")


def test_cleanup_takes_dead_bottles_and_leaves_live_ones() -> None:
    dead, live, foreign, preserved = "a-aaaaa", "a-bbbbb", "a-ccccc", "a-ddddd"
    containers = [
        container(dead, "guard", "running"),  # its launcher is gone: an orphan
        container(dead, "agent", "exited"),
        container(live, "guard", "running"),
        container(foreign, "agent", "running"),
    ]
    networks = [network(dead, "internal"), network(live, "internal")]
    images = [ImageInfo("sha256:x", ("localhost/bottle-project-a-aaaaa:latest",), naming.managed_labels(dead, "agent")),
              ImageInfo("sha256:g", ("localhost/bottle-guard:1",), {naming.LABEL_MANAGED: "true"})]
    states = {
        dead: StateFacts(dead, meta(dead), launcher_alive=False),
        live: StateFacts(live, meta(live), launcher_alive=True),
        preserved: StateFacts(preserved, meta(preserved), preserved=True),
        "a-eeeee": StateFacts("a-eeeee", meta("a-eeeee")),  # stale state only
    }
    plan = select_cleanup(containers, networks, images, states)
    assert sorted(plan.containers) == [f"bottle-agent-{dead}", f"bottle-guard-{dead}"]
    assert plan.networks == (f"bottle-internal-{dead}",)
    assert plan.images == ("localhost/bottle-project-a-aaaaa:latest",), "shared images are never a bottle's"
    assert sorted(plan.states) == [dead, "a-eeeee"]
    kept = dict(plan.kept)
    assert set(kept) == {live, foreign, preserved}
    assert "resume" in kept[preserved]
    assert sorted(plan.identities) == [dead, "a-eeeee"]


def test_cleanup_of_nothing_is_empty() -> None:
    assert select_cleanup([], [], [], {}).empty()


def test_ls_rows_and_table() -> None:
    a, b, c = "a-aaaaa", "a-bbbbb", "a-ccccc"
    containers = [container(a, "agent", "running"), container(a, "guard", "running"), container(b, "guard", "exited")]
    states = {a: StateFacts(a, meta(a, 3), launcher_alive=True), c: StateFacts(c, meta(c, 90), preserved=True)}
    rows = {r.identity: r for r in ls_rows(containers, states, NOW)}
    assert rows[a].status == "running" and rows[a].age_seconds == 180
    assert rows[a].containers == {"agent": "running", "guard": "running"}
    assert rows[b].status == "stopped" and rows[b].age_seconds is None and rows[b].agent == "a"
    assert rows[c].status == "preserved" and rows[c].containers == {}
    table = render_ls(list(rows.values()))
    assert table.splitlines()[0].split() == ["IDENTITY", "AGENT", "RUNTIME", "STATUS", "AGE", "CONTAINERS"]
    assert f"{a}" in table and "3m" in table.replace("180s", "3m") and "agent:running, guard:running" in table
    assert render_ls([]) == "no bottles\n"


def test_ls_starting_when_the_launcher_lives_without_an_agent() -> None:
    a = "a-aaaaa"
    rows = ls_rows([container(a, "guard", "running")], {a: StateFacts(a, meta(a), launcher_alive=True)}, NOW)
    assert rows[0].status == "starting"


def test_ls_orphaned_when_the_agent_runs_without_its_launcher() -> None:
    a = "a-aaaaa"
    rows = ls_rows([container(a, "agent", "running")], {a: StateFacts(a, meta(a), launcher_alive=False)}, NOW)
    assert rows[0].status == "orphaned"


@settings(max_examples=50)
@given(st.lists(st.tuples(st.sampled_from(["a-aaaaa", "a-bbbbb"]), st.sampled_from(["agent", "guard"]),
                          st.sampled_from(["running", "exited", "created"]))))
def test_cleanup_never_touches_a_bottle_whose_launcher_lives(items: list[tuple[str, str, str]]) -> None:
    containers = [container(i, r, s) for i, r, s in items]
    states = {"a-aaaaa": StateFacts("a-aaaaa", meta("a-aaaaa"), launcher_alive=True)}
    plan = select_cleanup(containers, [], [], states)
    assert not any("a-aaaaa" in name for name in plan.containers)
    assert "a-aaaaa" not in plan.states
