"""`bottle start --dry-run` and `bottle info`, through click's CliRunner and a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bottle.cli.app import AppState, cli
from bottle.cli.wiring import create_container

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
CLAUDE = str(EXAMPLES / "claude-code.json")
GIT = str(EXAMPLES / "generic-git.json")
SECRET = "sk-ant-test-" + "Q7x" * 14
BOTTLE = Path(sys.executable).with_name("bottle")


class FixedRandomness:
    def choice(self, alphabet: str, count: int) -> str:
        return "k3x9q"[:count]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory as cwd, with the user's config and state dirs isolated."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("BOTTLE_RUNTIME", "docker")
    for var in ("BOTTLE_MANIFEST", "ANTHROPIC_API_KEY", "GITHUB_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN", "BOTTLE_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    proj = tmp_path / "project"
    proj.mkdir()
    monkeypatch.chdir(proj)
    return proj


def run(*args: str, state: AppState | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), obj=state, catch_exceptions=False)


def deterministic_state() -> AppState:
    container = create_container()
    container.randomness.override(FixedRandomness())
    return AppState(container=container)


def dry_run_json(*extra: str, state: AppState | None = None) -> dict:
    result = run("start", "claude", "--dry-run", "--format=json", "--manifest", CLAUDE, *extra, state=state)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# -- the plan, field by field -----------------------------------------------


def check_claude_plan(plan: dict, cwd: str, state_home: str) -> None:
    identity = plan["identity"]
    assert identity.startswith("claude-") and len(identity) == len("claude-") + 5
    assert (plan["agent"], plan["runtime"], plan["cwd"], plan["copy_cwd"]) == ("claude", "docker", cwd, False)

    nets = {n["role"]: n for n in plan["networks"]}
    assert nets["internal"]["name"] == f"bottle-internal-{identity}" and nets["internal"]["internal"] is True
    assert nets["egress"]["name"] == f"bottle-egress-{identity}" and nets["egress"]["internal"] is False

    containers = {c["role"]: c for c in plan["containers"]}
    assert list(containers) == ["agent", "guard", "egress-proxy"]
    for role, c in containers.items():
        assert c["name"] == f"bottle-{role}-{identity}"
        assert c["labels"] == {
            "io.bottle.agent": "claude", "io.bottle.identity": identity,
            "io.bottle.managed": "true", "io.bottle.role": role,
        }
    agent = containers["agent"]
    assert agent["networks"] == [{"network": f"bottle-internal-{identity}", "aliases": []}]
    assert containers["guard"]["networks"] == [
        {"network": f"bottle-internal-{identity}", "aliases": ["guard"]},
        {"network": f"bottle-egress-{identity}", "aliases": []},
    ]
    assert containers["egress-proxy"]["networks"][0]["aliases"] == ["egress-proxy"]

    agent_env = {e["name"]: e for e in agent["env"]}
    assert agent_env["HTTPS_PROXY"] == {"name": "HTTPS_PROXY", "source": "bottle", "value": "http://egress-proxy:8080"}
    assert agent_env["HTTP_PROXY"]["value"] == "http://egress-proxy:8080"
    assert agent_env["NO_PROXY"]["value"] == "localhost,127.0.0.1,::1"
    assert agent_env["SSL_CERT_FILE"]["value"] == "/etc/bottle/ca.crt"
    assert agent_env["ANTHROPIC_BASE_URL"]["value"] == "https://api.anthropic.com"
    assert agent_env["ANTHROPIC_API_KEY"] == {"name": "ANTHROPIC_API_KEY", "source": "placeholder"}
    assert agent_env["EDITOR"] == {"name": "EDITOR", "source": "manifest"}
    proxy_env = {e["name"]: e for e in containers["egress-proxy"]["env"]}
    assert proxy_env["BOTTLE_TOKEN_0"] == {"name": "BOTTLE_TOKEN_0", "source": "secret", "token_ref": "env:ANTHROPIC_API_KEY"}
    for c in containers.values():
        for var in c["env"]:
            # a value only where bottle computed it; secrets and manifest values by name only
            assert ("value" in var) == (var["source"] == "bottle")

    assert agent["mounts"][0] == {"source": cwd, "target": "/workspace", "read_only": False}
    assert agent["mounts"][1]["source"].startswith(state_home)
    assert (agent["cap_drop"], agent["no_new_privileges"], agent["pids_limit"]) == (["ALL"], True, 1024)
    assert agent["user"] != "0:0"

    assert plan["proxy"]["agent_proxy"] == "egress-proxy"
    (route,) = plan["routes"]
    assert (route["upstream"], route["auth_scheme"], route["token_ref"], route["token_env"]) == (
        "https://api.anthropic.com", "x-api-key", "env:ANTHROPIC_API_KEY", "BOTTLE_TOKEN_0")
    assert plan["allowlist"] == ["pypi.org", "files.pythonhosted.org", "api.anthropic.com"]
    assert plan["git_remotes"] == [] and plan["supervise"] is False
    assert [i["tag"] for i in plan["images"]][0] == "localhost/claude-code:latest"


def test_dry_run_json_field_by_field(project: Path, tmp_path: Path) -> None:
    plan = dry_run_json()
    check_claude_plan(plan, str(project), str(tmp_path / "state"))
    assert plan["missing_secrets"] == ["env:ANTHROPIC_API_KEY"]


def test_dry_run_json_through_a_real_process(project: Path, tmp_path: Path) -> None:
    env = {**os.environ, "ANTHROPIC_API_KEY": SECRET}
    proc = subprocess.run(
        [str(BOTTLE), "start", "claude", "--dry-run", "--format=json", "--manifest", CLAUDE],
        capture_output=True, text=True, env=env, cwd=project, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    check_claude_plan(plan, str(project), str(tmp_path / "state"))
    assert plan["missing_secrets"] == [] and plan["routes"][0]["token_present"] is True
    assert SECRET not in proc.stdout and SECRET not in proc.stderr


def test_swapped_randomness_gives_a_known_identity(project: Path) -> None:
    plan = dry_run_json(state=deterministic_state())
    assert plan["identity"] == "claude-k3x9q"
    assert plan["containers"][0]["name"] == "bottle-agent-claude-k3x9q"


def test_swapped_secret_source_decides_presence(project: Path) -> None:
    class Everything:
        def present(self, kind: str, name: str) -> bool:
            return True

        def read(self, kind: str, name: str) -> str:
            raise AssertionError("a dry run never reads a secret")

    state = deterministic_state()
    assert state.container is not None
    state.container.secret_source.override(Everything())
    assert dry_run_json(state=state)["missing_secrets"] == []


def test_missing_secret_is_a_warning_on_stderr_in_json_mode(project: Path) -> None:
    result = run("start", "claude", "--dry-run", "--format=json", "--manifest", CLAUDE)
    assert "warning: secret env:ANTHROPIC_API_KEY is missing" in result.stderr
    json.loads(result.stdout)  # stdout stays pure JSON


def test_dry_run_text(project: Path) -> None:
    result = run("start", "claude", "--dry-run", "--manifest", CLAUDE, state=deterministic_state())
    assert result.exit_code == 0
    assert "bottle claude-k3x9q: agent `claude` on docker" in result.stdout
    assert f"{project} mounted read-write at /workspace" in result.stdout
    assert "(MISSING)" in result.stdout


def test_command_after_double_dash_replaces_the_agent_command(project: Path) -> None:
    plan = dry_run_json("--", "bash", "-lc", "echo hi")
    assert plan["command"] == ["bash", "-lc", "echo hi"]
    assert plan["containers"][0]["command"] == ["bash", "-lc", "echo hi"]


def test_copy_cwd_and_cwd(project: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    plan = dry_run_json("--copy-cwd", "--cwd", str(other))
    assert plan["cwd"] == str(other) and plan["copy_cwd"] is True
    assert all(m["target"] != "/workspace" for m in plan["containers"][0]["mounts"])


def test_global_options_before_the_command_and_env_vars(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run("--runtime", "podman", "--manifest", CLAUDE, "start", "claude", "--dry-run", "--format", "json")
    assert json.loads(result.stdout)["runtime"] == "podman"
    monkeypatch.setenv("BOTTLE_MANIFEST", CLAUDE)
    monkeypatch.setenv("BOTTLE_RUNTIME", "podman")
    result = run("start", "claude", "--dry-run", "--format", "json")
    assert json.loads(result.stdout)["runtime"] == "podman"


def test_project_and_user_manifests_are_found(project: Path, tmp_path: Path) -> None:
    (project / "bottle.json").write_text(json.dumps({"agents": {"local": {"image": "local:1"}}}))
    agents = tmp_path / "config" / "bottle" / "agents"
    agents.mkdir(parents=True)
    (agents / "mine.md").write_text("---\nname: mine\nimage: mine:1\n---\nbody\n")
    local = json.loads(run("start", "local", "--dry-run", "--format=json").stdout)
    assert local["agent_image"] == "local:1"
    mine = json.loads(run("start", "mine", "--dry-run", "--format=json").stdout)
    assert mine["agent_image"] == "mine:1"


# -- refusals ---------------------------------------------------------------


def test_start_without_a_terminal_to_ask_on_needs_yes(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    result = run("start", "claude", "--manifest", CLAUDE)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: refusing to start a bottle without confirmation")
    assert "hint: pass -y" in result.stderr


def test_start_refuses_when_a_secret_is_missing(project: Path) -> None:
    result = run("start", "claude", "--manifest", CLAUDE)
    assert result.exit_code == 2
    assert "missing secret(s) env:ANTHROPIC_API_KEY" in result.stderr


def test_unknown_agent(project: Path) -> None:
    result = run("start", "claud", "--dry-run", "--manifest", CLAUDE)
    assert result.exit_code == 2
    assert "error: no agent named 'claud'; known agents: claude (did you mean 'claude'?)" in result.stderr
    assert "Traceback" not in result.output


def test_bad_manifest_names_file_and_field(project: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"agents": {"claude": {"image": "x", "bottle": {"egres": {}}}}}))
    result = run("start", "claude", "--dry-run", "--manifest", str(bad))
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        f"error: {bad}: agents.claude.bottle.egres: unknown field `egres`; did you mean `egress`?"
    )
    assert result.stderr.splitlines()[1].startswith("hint: ")


def test_missing_manifest_file(project: Path) -> None:
    result = run("start", "claude", "--dry-run", "--manifest", "/nonexistent/m.json")
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_missing_cwd_is_a_usage_error(project: Path) -> None:
    result = run("start", "claude", "--dry-run", "--manifest", CLAUDE, "--cwd", "/nonexistent/dir")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "hint: run `" in result.stderr


def test_bad_format_and_bad_runtime(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("start", "claude", "--dry-run", "--format", "yaml", "--manifest", CLAUDE).exit_code == 2
    assert run("--runtime", "lxc", "start", "claude", "--dry-run").exit_code == 2


# -- secrets never printed --------------------------------------------------


def test_the_secret_value_is_printed_nowhere(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    monkeypatch.setenv("GITHUB_TOKEN", SECRET)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"agents": {"claude": {"image": "x", "bottle": {"egress_proxy": {"routes": [
        {"upstream": "https://api.anthropic.com", "token_ref": SECRET}]}}}}}))
    runs = [
        ("start", "claude", "--dry-run", "--manifest", CLAUDE),
        ("start", "claude", "--dry-run", "--format=json", "--manifest", CLAUDE),
        ("start", "implementer", "--dry-run", "--format=json", "--manifest", GIT),
        ("start", "claude", "--manifest", CLAUDE),
        ("start", "nobody", "--dry-run", "--manifest", CLAUDE),
        ("start", "claude", "--dry-run", "--manifest", str(broken)),
        ("info", "claude", "--manifest", CLAUDE),
        ("info", "claude", "--format=json", "--manifest", CLAUDE),
    ]
    for args in runs:
        result = run(*args)
        assert SECRET not in result.output, args
        assert SECRET not in result.stderr, args
    plan = json.loads(run(*runs[1]).stdout)
    assert plan["missing_secrets"] == [] and plan["warnings"] == []


# -- info -------------------------------------------------------------------


def test_info_text(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    result = run("info", "claude", "--manifest", CLAUDE)
    assert result.exit_code == 0
    out = result.stdout
    assert "agent:        claude" in out
    assert "Claude Code with the Anthropic API" in out
    assert "image:        localhost/claude-code:latest" in out
    assert "egress allow: pypi.org, files.pythonhosted.org" in out
    assert "+ route hosts: api.anthropic.com" in out
    assert "https://api.anthropic.com  x-api-key  env:ANTHROPIC_API_KEY (present)" in out
    assert "supervise:    off" in out


def test_info_json_of_the_git_example(project: Path) -> None:
    result = run("info", "implementer", "--format=json", "--manifest", GIT)
    data = json.loads(result.stdout)
    assert data["dockerfile"] == str(EXAMPLES / "Dockerfile.agent")
    assert data["git"] == [{
        "name": "origin", "upstream": "https://github.com/example-org/example-repo.git",
        "token_ref": "env:GITHUB_TOKEN", "present": False,
        "protected": ["main", "release/*"], "allow": ["agent/*"],
    }]
    assert data["supervise"] is True


def test_a_syscall_group_given_back_shows_as_a_weakening_in_dry_run_and_info(project: Path) -> None:
    manifest = project / "db.json"
    manifest.write_text(json.dumps({"agents": {"db": {"image": "i", "bottle": {"syscalls": {"allow": ["io_uring"]}}}}}))
    text = run("start", "db", "--dry-run", "--manifest", str(manifest)).stdout
    assert "WEAKENED: io_uring allowed back by the manifest" in text
    assert "! the agent's syscall policy is weakened: io_uring allowed back" in text
    plan = json.loads(run("start", "db", "--dry-run", "--format=json", "--manifest", str(manifest)).stdout)
    assert {c["role"]: c["syscalls"]["allowed"] for c in plan["containers"]} == {"agent": ["io_uring"], "guard": []}
    info = run("info", "db", "--manifest", str(manifest)).stdout
    assert "syscalls:     bottle-v1, refuses namespaces, keyring" in info
    assert "WEAKENED: io_uring allowed back (bottle.syscalls.allow)" in info
    data = json.loads(run("info", "db", "--format=json", "--manifest", str(manifest)).stdout)
    assert data["syscalls"]["allowed"] == ["io_uring"] and data["syscalls"]["digest"].startswith("sha256:")
    manifest.write_text(json.dumps({"agents": {"db": {"image": "i", "bottle": {"syscalls": {"allow": ["iouring"]}}}}}))
    bad = run("start", "db", "--dry-run", "--manifest", str(manifest))
    assert bad.exit_code == 2
    assert f"{manifest}: agents.db.bottle.syscalls.allow[0]: unknown syscall group `iouring`" in bad.stderr
    assert "did you mean `io_uring`?" in bad.stderr and "Traceback" not in bad.stderr


def test_info_of_a_markdown_agent(project: Path) -> None:
    result = run("info", "reviewer", "--manifest", str(EXAMPLES / "agents"))
    assert result.exit_code == 0, result.output
    assert "instructions: 4 lines" in result.stdout
    assert "CLAUDE_CODE_OAUTH_TOKEN (MISSING)" in result.stdout


def test_a_dry_run_touches_nothing(project: Path, tmp_path: Path) -> None:
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    dry_run_json()
    run("start", "claude", "--dry-run", "--manifest", CLAUDE, "--copy-cwd")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not (tmp_path / "state").exists()
