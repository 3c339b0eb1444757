"""plan_launch: a pure function from (agent, request, identity, secrets present) to the plan."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bottle.core import naming
from bottle.core.errors import UnknownAgentError
from bottle.core.manifest import Agent
from bottle.core.manifest_load import ManifestText, load_manifest, parse_json_manifest
from bottle.core.plan import (
    AGENT_CA_PATH,
    DEFAULT_AGENT_USER,
    ImageSettings,
    LaunchPlan,
    LaunchRequest,
    plan_launch,
    secret_uses,
    with_approved,
)
from bottle.core.manifest import Route
from bottle.core.plan_render import render_json, render_text

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
ID = "claude-k3x9q"
STATE = "/state/bottles/" + ID


def example(name: str) -> Agent:
    path = EXAMPLES / name
    (agent,) = parse_json_manifest(path.read_text(), str(path), str(path.parent))
    return agent


def agent_of(fields: dict, name: str = "claude") -> Agent:
    (agent,) = parse_json_manifest(json.dumps({"agents": {name: fields}}), "/proj/bottle.json", "/proj")
    return agent


def request(**changes: object) -> LaunchRequest:
    base = LaunchRequest(
        agent="claude", cwd="/home/me/project", runtime="docker", state_dir=STATE,
        images=ImageSettings(version="0.1.0"), user="1000:1000", home="/home/me",
    )
    return msgspec.structs.replace(base, **changes)


def plan_of(agent: Agent, identity: str = ID, present: dict[str, bool] | None = None, **changes: object) -> LaunchPlan:
    return plan_launch(agent, request(agent=agent.name, **changes), identity, present or {})


def env(plan: LaunchPlan, role: str) -> dict[str, msgspec.Struct]:
    container = plan.container(role)
    assert container is not None
    return {var.name: var for var in container.env}


# -- the Claude example -----------------------------------------------------


@pytest.fixture
def claude() -> LaunchPlan:
    return plan_of(example("claude-code.json"), present={"env:ANTHROPIC_API_KEY": True})


def test_containers_names_and_labels(claude: LaunchPlan) -> None:
    assert [c.role for c in claude.containers] == ["agent", "guard", "egress-proxy"]
    for c in claude.containers:
        assert c.name == f"bottle-{c.role}-{ID}"
        assert c.labels == {
            naming.LABEL_MANAGED: "true", naming.LABEL_IDENTITY: ID, naming.LABEL_ROLE: c.role,
            naming.LABEL_AGENT: "claude",
        }


def test_two_networks_internal_and_egress(claude: LaunchPlan) -> None:
    internal, egress = claude.networks
    assert (internal.name, internal.internal) == (f"bottle-internal-{ID}", True)
    assert (egress.name, egress.internal) == (f"bottle-egress-{ID}", False)
    assert internal.labels[naming.LABEL_ROLE] == "internal" and egress.labels[naming.LABEL_IDENTITY] == ID


def test_the_agent_sits_on_the_internal_network_only(claude: LaunchPlan) -> None:
    agent = claude.container("agent")
    assert agent is not None
    assert [a.network for a in agent.networks] == [f"bottle-internal-{ID}"]


def test_sidecars_sit_on_both_networks_with_their_alias(claude: LaunchPlan) -> None:
    for role in ("guard", "egress-proxy"):
        c = claude.container(role)
        assert c is not None
        assert [(a.network, a.aliases) for a in c.networks] == [
            (f"bottle-internal-{ID}", (role,)),
            (f"bottle-egress-{ID}", ()),
        ]


def test_agent_proxy_goes_to_the_egress_proxy_when_routes_exist(claude: LaunchPlan) -> None:
    assert claude.proxy.agent_proxy == "egress-proxy"
    agent_env = env(claude, "agent")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        assert agent_env[name].value == "http://egress-proxy:8080"
        assert agent_env[name].source == "bottle"
    assert "git-gate" not in agent_env["NO_PROXY"].value
    # the egress proxy's own outbound leg goes through the guard
    assert env(claude, "egress-proxy")["HTTPS_PROXY"].value == "http://guard:8080"
    assert claude.proxy.egress_proxy_upstream == "http://guard:8080"


def test_agent_trusts_the_ca_of_the_proxy_it_talks_to(claude: LaunchPlan) -> None:
    agent_env = env(claude, "agent")
    for name in ("NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "GIT_SSL_CAINFO"):
        assert agent_env[name].value == AGENT_CA_PATH
    agent = claude.container("agent")
    assert agent is not None
    ca = next(m for m in agent.mounts if m.target == AGENT_CA_PATH)
    assert ca.source == f"{STATE}/ca/egress-proxy.crt" and ca.read_only


def test_claude_env_for_an_anthropic_route(claude: LaunchPlan) -> None:
    agent_env = env(claude, "agent")
    assert claude.claude is True
    assert agent_env["ANTHROPIC_BASE_URL"].value == "https://api.anthropic.com"
    # x-api-key route: Claude Code must send x-api-key, so the placeholder is ANTHROPIC_API_KEY
    assert agent_env["ANTHROPIC_API_KEY"].source == "placeholder"
    assert agent_env["ANTHROPIC_API_KEY"].value is None
    for name in ("DISABLE_TELEMETRY", "DISABLE_ERROR_REPORTING", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"):
        assert agent_env[name].value == "1"


def test_a_bearer_anthropic_route_gets_the_oauth_placeholder() -> None:
    agent = agent_of({"image": "x", "bottle": {"egress_proxy": {"routes": [
        {"upstream": "https://api.anthropic.com", "token_ref": "CLAUDE_CODE_OAUTH_TOKEN"}]}}})
    agent_env = env(plan_of(agent), "agent")
    assert agent_env["CLAUDE_CODE_OAUTH_TOKEN"].source == "placeholder"
    assert "ANTHROPIC_API_KEY" not in agent_env


def test_no_claude_env_without_an_anthropic_route() -> None:
    agent = agent_of({"image": "x", "bottle": {"egress_proxy": {"routes": [
        {"upstream": "https://api.openai.com", "token_ref": "OPENAI_API_KEY"}]}}})
    plan = plan_of(agent)
    assert plan.claude is False
    assert not {"ANTHROPIC_BASE_URL", "DISABLE_TELEMETRY"} & set(env(plan, "agent"))


def test_secrets_are_env_names_with_their_token_ref_never_values(claude: LaunchPlan) -> None:
    for role in ("egress-proxy", "guard"):
        token = env(claude, role)["BOTTLE_TOKEN_0"]
        assert (token.source, token.token_ref, token.value) == ("secret", "env:ANTHROPIC_API_KEY", None)
    agent_env = env(claude, "agent")
    assert not any(v.source == "secret" for v in agent_env.values())
    assert "BOTTLE_TOKEN_0" not in agent_env


def test_manifest_env_appears_by_name_only(claude: LaunchPlan) -> None:
    editor = env(claude, "agent")["EDITOR"]
    assert (editor.source, editor.value) == ("manifest", None)


def test_routes_and_allowlist(claude: LaunchPlan) -> None:
    (r,) = claude.routes
    assert (r.upstream, r.host, r.port, r.path_prefix) == ("https://api.anthropic.com", "api.anthropic.com", 443, "")
    assert (r.auth_scheme, r.header_name, r.token_ref, r.token_env, r.token_present) == (
        "x-api-key", "x-api-key", "env:ANTHROPIC_API_KEY", "BOTTLE_TOKEN_0", True)
    assert claude.allowlist == ("pypi.org", "files.pythonhosted.org", "api.anthropic.com")


def test_images_agent_then_sidecars_tagged_with_the_version(claude: LaunchPlan) -> None:
    assert [(i.role, i.tag, i.action) for i in claude.images] == [
        ("agent", "localhost/claude-code:latest", "use"),
        ("guard", "localhost/bottle-guard:0.1.0", "use"),
        ("egress-proxy", "localhost/bottle-egress-proxy:0.1.0", "use"),
    ]
    assert claude.agent_image == "localhost/claude-code:latest"
    guard = claude.container("guard")
    assert guard is not None and guard.image == "localhost/bottle-guard:0.1.0"


def test_agent_security_defaults(claude: LaunchPlan) -> None:
    agent = claude.container("agent")
    assert agent is not None
    assert agent.user == "1000:1000"
    assert agent.cap_drop == ("ALL",)
    assert agent.no_new_privileges is True
    assert agent.pids_limit == 1024
    assert agent.memory_bytes == 4 * 2**30
    assert agent.read_only_rootfs is False
    assert agent.workdir == "/workspace"
    assert agent.command == ("claude",)


def test_project_is_mounted_at_workspace(claude: LaunchPlan) -> None:
    agent = claude.container("agent")
    assert agent is not None
    ws = next(m for m in agent.mounts if m.target == "/workspace")
    assert (ws.source, ws.read_only) == ("/home/me/project", False)


def test_missing_secrets_are_recorded_and_warned() -> None:
    plan = plan_of(example("claude-code.json"), present={})
    assert plan.missing_secrets == ("env:ANTHROPIC_API_KEY",)
    assert plan.routes[0].token_present is False
    assert any("env:ANTHROPIC_API_KEY" in w and "refuses" in w for w in plan.warnings)
    assert plan.secrets[0].used_by == ("route https://api.anthropic.com",)


def test_present_secrets_give_no_warning(claude: LaunchPlan) -> None:
    assert claude.missing_secrets == () and claude.warnings == ()


# -- other shapes -----------------------------------------------------------


def test_without_routes_the_agent_talks_to_the_guard() -> None:
    plan = plan_of(agent_of({"image": "x", "bottle": {"egress": {"allow": ["pypi.org"]}}}))
    assert [c.role for c in plan.containers] == ["agent", "guard"]
    assert plan.proxy.agent_proxy == "guard" and plan.proxy.egress_proxy_upstream is None
    assert env(plan, "agent")["HTTPS_PROXY"].value == "http://guard:8080"
    agent = plan.container("agent")
    assert agent is not None
    assert next(m for m in agent.mounts if m.target == AGENT_CA_PATH).source == f"{STATE}/ca/guard.crt"
    assert plan.routes == () and plan.allowlist == ("pypi.org",)
    assert [i.role for i in plan.images] == ["agent", "guard"]


def test_git_remotes_bring_the_git_gate() -> None:
    plan = plan_of(example("generic-git.json"), identity="implementer-abcde",
                   present={"env:GITHUB_TOKEN": True})
    gate = plan.container("git-gate")
    assert gate is not None
    assert gate.name == "bottle-git-gate-implementer-abcde"
    assert [(a.network, a.aliases) for a in gate.networks] == [
        ("bottle-internal-implementer-abcde", ("git-gate",)),
        ("bottle-egress-implementer-abcde", ()),
    ]
    token = {v.name: v for v in gate.env}["BOTTLE_GIT_TOKEN_0"]
    assert (token.source, token.token_ref) == ("secret", "env:GITHUB_TOKEN")
    # the guard knows it too (in its own slot scheme), to catch it leaving over HTTP; the agent never does
    assert env(plan, "guard")["BOTTLE_TOKEN_0"].token_ref == "env:GITHUB_TOKEN"
    assert not any(v.source == "secret" for v in env(plan, "agent").values())
    (remote,) = plan.git_remotes
    assert remote.gate_url == "http://git-gate:8080/origin.git"
    assert remote.upstream == "https://github.com/example-org/example-repo.git"
    assert (remote.protected, remote.allow) == (("main", "release/*"), ("agent/*",))
    assert remote.token_present is True
    assert "git-gate" in env(plan, "agent")["NO_PROXY"].value.split(",")
    # the git host is not in the guard's allowlist: pushes leave only through the gate
    assert "github.com" not in plan.allowlist


def test_the_gate_gets_its_remotes_audit_and_health_check() -> None:
    from bottle.core.gitgate import FindingWaiver, decode_gate_config, gitconfig_rewrites

    plan = plan_of(example("generic-git.json"), identity="implementer-abcde", present={"env:GITHUB_TOKEN": True})
    gate = plan.container("git-gate")
    assert gate is not None
    config = decode_gate_config(env(plan, "git-gate")["BOTTLE_GIT_REMOTES"].value)
    (remote,) = config.remotes
    assert (remote.name, remote.upstream, remote.token_env) == (
        "origin", "https://github.com/example-org/example-repo.git", "BOTTLE_GIT_TOKEN_0")
    assert (remote.protected, remote.allow, remote.username) == (("main", "release/*"), ("agent/*",), "x-access-token")
    assert remote.waivers == (FindingWaiver("tests/fixtures/*", "aws-access-key-id"),)
    # the remote list names the credential's variable, never its value or reference
    assert "GITHUB_TOKEN" not in env(plan, "git-gate")["BOTTLE_GIT_REMOTES"].value.replace("BOTTLE_GIT_TOKEN", "")
    assert gate.health_path == "/healthz"
    assert any(m.source == f"{STATE}/audit/git-gate" and m.target == "/var/log/bottle" and not m.read_only
               for m in gate.mounts)
    # the agent's git and the plan agree on where the gate is
    assert f'[url "{plan.git_remotes[0].gate_url}"]' in gitconfig_rewrites(config.remotes, "git-gate", 8080)
    # the gate reaches the upstream itself, not through the guard (which refuses every push)
    assert not any(v.name.upper() in ("HTTP_PROXY", "HTTPS_PROXY") for v in gate.env)


def test_a_remote_without_username_or_waivers_gets_the_defaults() -> None:
    from bottle.core.gitgate import DEFAULT_USERNAME, decode_gate_config

    plan = plan_of(agent_of({"image": "x", "bottle": {"git": [
        {"name": "o", "upstream": "https://h.example/r.git", "token_ref": "GH"}]}}))
    (remote,) = decode_gate_config(env(plan, "git-gate")["BOTTLE_GIT_REMOTES"].value).remotes
    assert remote.username == DEFAULT_USERNAME and remote.waivers == ()
    # no branches listed: main and master are protected
    assert remote.branch_rules().protected == ("main", "master")
    assert plan.container("guard").health_path is None  # type: ignore[union-attr]


def test_supervise_runs_on_the_internal_network_only() -> None:
    plan = plan_of(example("generic-git.json"), identity="implementer-abcde")
    sup = plan.container("supervise")
    assert sup is not None
    assert [(a.network, a.aliases) for a in sup.networks] == [("bottle-internal-implementer-abcde", ("supervise",))]
    assert plan.supervise is True
    assert env(plan, "agent")["BOTTLE_SUPERVISE_URL"].value == "http://supervise:8080"
    assert "supervise" in env(plan, "agent")["NO_PROXY"].value.split(",")


def test_supervise_sees_its_queue_read_write_and_the_decisions_read_only() -> None:
    plan = plan_of(example("generic-git.json"), identity="implementer-abcde")
    sup = plan.container("supervise")
    assert sup is not None
    state = STATE
    mounts = {m.target: (m.source, m.read_only) for m in sup.mounts}
    assert mounts == {
        "/run/supervise/queue": (f"{state}/proposals", False),
        "/run/supervise/decisions": (f"{state}/decisions", True),
    }
    # nothing else of the state: no CA, no policy, no home
    assert sup.health_path == "/healthz"
    assert not any(v.source == "secret" for v in sup.env) and sup.secrets_file is None


def test_supervise_off_means_no_container() -> None:
    plan = plan_of(example("claude-code.json"))
    assert plan.container("supervise") is None and plan.supervise is False


def test_dockerfile_agent_is_built_from_the_file_next_to_the_manifest() -> None:
    plan = plan_of(example("generic-git.json"), identity="implementer-abcde")
    step = plan.images[0]
    assert (step.role, step.action) == ("agent", "build")
    assert step.dockerfile == str(EXAMPLES / "Dockerfile.agent")
    assert step.context == str(EXAMPLES)
    assert step.base == "localhost/bottle-base:bookworm"
    assert plan.agent_image == step.tag


def test_copy_cwd_layers_the_project_into_the_image_and_mounts_nothing() -> None:
    plan = plan_of(example("claude-code.json"), copy_cwd=True)
    agent = plan.container("agent")
    assert agent is not None
    assert all(m.target != "/workspace" for m in agent.mounts)
    layer = plan.images[1]
    assert (layer.action, layer.context, layer.base) == ("build", "/home/me/project", "localhost/claude-code:latest")
    assert layer.labels[naming.LABEL_IDENTITY] == ID
    assert plan.agent_image == layer.tag == agent.image


def test_per_bottle_dockerfile_layer_sits_between_agent_and_project() -> None:
    plan = plan_of(example("claude-code.json"), copy_cwd=True, per_bottle_dockerfile=True)
    tags = [i.tag for i in plan.images if i.role == "agent"]
    assert tags[0] == "localhost/claude-code:latest"
    assert tags[1] == f"localhost/bottle-agent-{ID}:latest"
    assert plan.images[1].dockerfile == f"{STATE}/Dockerfile"
    assert plan.images[2].base == tags[1]


def test_the_per_bottle_build_context_never_holds_the_state() -> None:
    # The state holds the CA private keys: a build context there would send them to the engine.
    plan = plan_of(example("generic-git.json"), per_bottle_dockerfile=True)
    (layer,) = [i for i in plan.images if i.tag == f"localhost/bottle-agent-{ID}:latest"]
    assert layer.dockerfile == f"{STATE}/Dockerfile"
    assert layer.context == f"{STATE}/build"
    keys = {m.source for c in plan.containers for m in c.mounts if m.source.endswith(".key")}
    assert keys and all(k.startswith(STATE + "/ca/") for k in keys)
    for step in (i for i in plan.images if i.action == "build"):
        context = (step.context or "").rstrip("/")
        assert context != STATE and not STATE.startswith(context + "/"), step
        assert not any(k.startswith(context + "/") for k in keys), step


def test_approved_hosts_and_routes_join_the_plan() -> None:
    agent = example("claude-code.json")
    route = Route("https://api.github.com", "GH_TOKEN")
    plan = plan_of(agent, approved_hosts=("pypi.org", "*.example.org"), approved_routes=(route,))
    assert {"pypi.org", "*.example.org", "api.github.com"} <= set(plan.allowlist)
    assert "https://api.github.com" in [r.upstream for r in plan.routes]
    assert "env:GH_TOKEN" in plan.missing_secrets  # the operator must hold the approved route's secret
    merged = with_approved(agent, ("pypi.org", "*.example.org"), (route,))
    assert "env:GH_TOKEN" in [u.ref for u in secret_uses(merged)]
    # the same merge: the plan of the merged agent is the plan of the request
    assert plan_of(merged) == plan_of(agent, approved_hosts=("pypi.org", "*.example.org"), approved_routes=(route,))
    plain = plan_of(agent)
    assert "*.example.org" not in plain.allowlist and "https://api.github.com" not in [r.upstream for r in plain.routes]


@given(st.lists(st.sampled_from(["pypi.org", "a.example.com", "*.example.net", "api.anthropic.com"]), max_size=6))
@settings(max_examples=40, deadline=None)
def test_with_approved_is_idempotent_and_keeps_the_manifest_first(hosts: list[str]) -> None:
    agent = example("claude-code.json")
    # An approved route to an upstream the manifest already routes never replaces the manifest's.
    routes = (Route("https://api.anthropic.com", "OTHER_TOKEN", "bearer"), Route("https://api.github.com", "GH"))
    once = with_approved(agent, hosts, routes)
    assert with_approved(once, hosts, routes) == once
    assert once.bottle.egress.allow[: len(agent.bottle.egress.allow)] == agent.bottle.egress.allow
    assert set(once.bottle.egress.allow) == set(agent.bottle.egress.allow) | set(hosts)
    assert once.bottle.egress_proxy.routes[: len(agent.bottle.egress_proxy.routes)] == agent.bottle.egress_proxy.routes
    assert [r.upstream for r in once.bottle.egress_proxy.routes].count("https://api.anthropic.com") == 1
    assert with_approved(agent) is agent


def test_command_override_replaces_the_manifest_command() -> None:
    plan = plan_of(example("claude-code.json"), command=("bash",))
    agent = plan.container("agent")
    assert agent is not None and agent.command == ("bash",) and plan.command == ("bash",)


def test_root_never_runs_the_agent() -> None:
    for user in ("0:0", "root", None):
        agent = plan_of(example("claude-code.json"), user=user).container("agent")
        assert agent is not None and agent.user == DEFAULT_AGENT_USER


def test_read_only_root_gets_a_tmpfs_and_limits_can_be_lifted() -> None:
    agent = plan_of(agent_of({"image": "x", "bottle": {"read_only_root": True,
                                                         "limits": {"memory": None, "pids": None}}})).container("agent")
    assert agent is not None
    assert agent.read_only_rootfs is True and "/tmp" in agent.tmpfs
    assert agent.memory_bytes is None and agent.pids_limit is None


def test_extra_ca_file_is_mounted_into_the_guard_and_the_gate_not_the_agent() -> None:
    plan = plan_of(agent_of({"image": "x", "bottle": {
        "egress": {"extra_ca_file": "~/corp-ca.pem"},
        "egress_proxy": {"routes": [{"upstream": "https://api.example.com", "token_ref": "T"}]},
        "git": [{"name": "o", "upstream": "https://h.example/r.git", "token_ref": "GH"}]}}))
    assert plan.extra_ca_file == "/home/me/corp-ca.pem"
    for role in ("guard", "git-gate"):
        container = plan.container(role)
        assert container is not None
        mount = next(m for m in container.mounts if m.source == "/home/me/corp-ca.pem")
        assert mount.read_only and env(plan, role)["BOTTLE_EXTRA_CA_FILE"].value == mount.target
    # the agent and the egress proxy (whose upstream is the guard) never trust it
    for role in ("agent", "egress-proxy"):
        container = plan.container(role)
        assert container is not None
        assert all(m.source != "/home/me/corp-ca.pem" for m in container.mounts)
        assert "BOTTLE_EXTRA_CA_FILE" not in env(plan, role)


def test_routes_sharing_a_token_ref_share_a_slot() -> None:
    agent = agent_of({"image": "x", "bottle": {"egress_proxy": {"routes": [
        {"upstream": "https://api.github.com", "token_ref": "GH"},
        {"upstream": "https://uploads.github.com", "token_ref": "env:GH"},
        {"upstream": "https://api.example.com", "token_ref": "file:tokens/ex"},
    ]}}})
    plan = plan_of(agent)
    assert [r.token_env for r in plan.routes] == ["BOTTLE_TOKEN_0", "BOTTLE_TOKEN_0", "BOTTLE_TOKEN_1"]
    assert [s.token_ref for s in plan.secrets] == ["env:GH", "file:tokens/ex"]
    assert [n for n in env(plan, "egress-proxy") if n.startswith("BOTTLE_TOKEN_")] == ["BOTTLE_TOKEN_0", "BOTTLE_TOKEN_1"]


def test_secret_uses_resolve_files_against_the_manifest() -> None:
    agent = agent_of({"image": "x", "bottle": {
        "egress_proxy": {"routes": [{"upstream": "https://a.example", "token_ref": "file:tokens/a"},
                                    {"upstream": "https://b.example", "token_ref": "file:~/b"}]},
        "git": [{"name": "o", "upstream": "https://h.example/r.git", "token_ref": "GH"}]}})
    uses = secret_uses(agent)
    assert [(u.ref, u.kind, u.name) for u in uses] == [
        ("file:tokens/a", "file", "/proj/tokens/a"),
        ("file:~/b", "file", "~/b"),
        ("env:GH", "env", "GH"),
    ]


def test_plan_from_a_manifest_looks_the_agent_up() -> None:
    manifest = load_manifest([[ManifestText((EXAMPLES / "claude-code.json").read_text(), "m.json", "/e")]])
    assert plan_launch(manifest, request(), ID, {}).agent == "claude"
    with pytest.raises(UnknownAgentError):
        plan_launch(manifest, request(agent="nope"), ID, {})


def test_the_plan_is_a_pure_function_of_its_inputs() -> None:
    agent = example("claude-code.json")
    assert plan_of(agent) == plan_of(agent)
    assert render_json(plan_of(agent)) == render_json(plan_of(agent))
    other = plan_of(agent, identity="claude-zzzzz")
    assert all(c.name.endswith("claude-zzzzz") for c in other.containers)


ENV_VALUES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_/.:", min_size=12, max_size=30)


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{2,12}", fullmatch=True), ENV_VALUES, min_size=1, max_size=4))
def test_manifest_env_values_never_appear_in_the_plan(values: dict[str, str]) -> None:
    reserved = {"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "SSL_CERT_FILE", "GIT_SSL_CAINFO",
                "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
                "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"}
    values = {k: "v" + v for k, v in values.items() if k not in reserved}
    fields = json.loads((EXAMPLES / "claude-code.json").read_text())["agents"]["claude"]
    fields["env"] = values
    plan = plan_of(agent_of(fields))
    outputs = render_json(plan) + render_text(plan)
    for name, value in values.items():
        assert name in outputs
        assert value not in outputs


def test_the_guard_gets_each_brokered_secret_once_in_its_slots() -> None:
    agent = agent_of({"image": "x", "bottle": {
        "egress_proxy": {"routes": [{"upstream": "https://api.github.com", "token_ref": "GH"}]},
        "git": [{"name": "o", "upstream": "https://github.com/a/b.git", "token_ref": "GH"},
                {"name": "p", "upstream": "https://gitlab.example/a/b.git", "token_ref": "GL"}]}})
    plan = plan_of(agent)
    guard = {n: v.token_ref for n, v in env(plan, "guard").items() if v.source == "secret"}
    assert guard == {"BOTTLE_TOKEN_0": "env:GH", "BOTTLE_TOKEN_1": "env:GL"}
    gate = {n: v.token_ref for n, v in env(plan, "git-gate").items() if v.source == "secret"}
    assert gate == {"BOTTLE_GIT_TOKEN_0": "env:GH", "BOTTLE_GIT_TOKEN_1": "env:GL"}
    proxy = {n: v.token_ref for n, v in env(plan, "egress-proxy").items() if v.source == "secret"}
    assert proxy == {"BOTTLE_TOKEN_0": "env:GH"}


def test_guard_and_egress_proxy_read_the_policy_directory() -> None:
    plan = plan_of(example("claude-code.json"))
    for role in ("guard", "egress-proxy"):
        c = plan.container(role)
        assert c is not None
        assert any(m.source == f"{STATE}/policy" and m.target == "/etc/bottle/policy" and m.read_only for m in c.mounts)


def test_each_sidecar_writes_only_an_audit_directory_of_its_own() -> None:
    from bottle.core.state import HOST_AUDIT_LOG, audit_log_path
    from bottle.sidecars._shared import sidecar_paths

    plan = plan_of(agent_of({"image": "x", "bottle": {
        "egress_proxy": {"routes": [{"upstream": "https://api.example.com", "auth_scheme": "bearer", "token_ref": "T"}]},
        "git": [{"name": "o", "upstream": "https://h.example/r.git", "token_ref": "GH"}],
        "supervise": True,
    }}))
    writable = {
        c.role: sorted(m.source for m in c.mounts if not m.read_only and m.source.startswith(STATE))
        for c in plan.containers if c.role != "agent"
    }
    assert writable == {
        "guard": [f"{STATE}/audit/guard"],
        "egress-proxy": [f"{STATE}/audit/egress-proxy"],
        "git-gate": [f"{STATE}/audit/git-gate"],
        "supervise": [f"{STATE}/proposals"],
    }
    # No container, the agent included, mounts a directory holding the host's own log.
    host_log = f"{STATE}/{HOST_AUDIT_LOG}"
    for c in plan.containers:
        assert not any(host_log.startswith(m.source + "/") or m.source == host_log for m in c.mounts), c.role
    assert plan.audit_dirs() == ("audit/guard", "audit/egress-proxy", "audit/git-gate")
    # The file a sidecar writes by default is, on the host, the role's audit_log_path.
    for role in ("guard", "egress-proxy", "git-gate"):
        container = plan.container(role)
        assert container is not None
        (mount,) = [m for m in container.mounts if m.target == "/var/log/bottle"]
        inside = sidecar_paths({"BOTTLE_ROLE": role}, role)["audit_log"]
        assert mount.source + inside.removeprefix(mount.target) == f"{STATE}/{audit_log_path(role)}"


def test_an_invalid_identity_is_refused() -> None:
    with pytest.raises(ValueError):
        plan_of(example("claude-code.json"), identity="Not An Identity")


# -- what the launcher needs (issue 5) -----------------------------------------


def test_sidecars_run_as_the_state_owner_and_the_agent_keeps_its_user() -> None:
    plan = plan_of(example("claude-code.json"), user="1234:55", sidecar_user="0:0")
    assert plan.container("agent").user == "1234:55"  # type: ignore[union-attr]
    for role in ("guard", "egress-proxy"):
        assert plan.container(role).user == "0:0"  # type: ignore[union-attr]
    rootless = plan_of(example("claude-code.json"), user="1001:1001", userns="keep-id")
    assert rootless.container("agent").userns == "keep-id"  # type: ignore[union-attr]
    assert rootless.container("guard").user is None and rootless.container("guard").userns is None  # type: ignore[union-attr]


def test_secrets_travel_as_a_file_copied_into_their_sidecar() -> None:
    plan = plan_of(example("claude-code.json"), present={"env:ANTHROPIC_API_KEY": True})
    for role in ("guard", "egress-proxy"):
        container = plan.container(role)
        assert container is not None and container.secrets_file == "/run/bottle-secrets.json"
        assert env(plan, role)["BOTTLE_SECRETS_FILE"].value == "/run/bottle-secrets.json"
    agent = plan.container("agent")
    assert agent is not None and agent.secrets_file is None
    plain = plan_of(agent_of({"image": "x"}))
    assert plain.container("guard").secrets_file is None  # type: ignore[union-attr]
    assert "BOTTLE_SECRETS_FILE" not in env(plain, "guard")


def test_the_agent_gets_a_home_its_passwd_and_the_ca_bundle_from_the_state() -> None:
    agent = plan_of(example("claude-code.json")).container("agent")
    assert agent is not None
    mounts = {m.target: m for m in agent.mounts}
    assert mounts["/home/bottle"].source == f"{STATE}/home" and not mounts["/home/bottle"].read_only
    assert mounts["/etc/passwd"].source == f"{STATE}/agent/passwd" and mounts["/etc/passwd"].read_only
    assert mounts["/etc/group"].read_only
    assert mounts["/etc/ssl/certs/ca-certificates.crt"].source == f"{STATE}/agent/ca-certificates.crt"
    assert {v.name: v.value for v in agent.env}["HOME"] == "/home/bottle"


def test_a_terminal_only_without_a_command() -> None:
    interactive = plan_of(example("claude-code.json")).container("agent")
    batch = plan_of(example("claude-code.json"), interactive=False, command=("true",)).container("agent")
    assert interactive is not None and (interactive.tty, interactive.stdin_open) == (True, True)
    assert batch is not None and (batch.tty, batch.stdin_open) == (False, False)


def test_engines_without_limits_drop_them_with_a_warning() -> None:
    plan = plan_of(example("claude-code.json"), limits_supported=False, runtime="podman")
    agent = plan.container("agent")
    assert agent is not None and agent.pids_limit is None and agent.memory_bytes is None
    assert any("cannot apply pids or memory limits" in w for w in plan.warnings)
    lifted = plan_of(agent_of({"image": "x", "bottle": {"limits": {"memory": None, "pids": None}}}), limits_supported=False)
    assert not any("limits" in w for w in lifted.warnings)
