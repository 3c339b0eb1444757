"""The plan in JSON (stable, decodable) and in words (the preflight)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from bottle.core.manifest_load import parse_json_manifest
from bottle.core.plan import ImageSettings, LaunchPlan, LaunchRequest, plan_launch, secret_uses
from bottle.core.plan_render import plan_to_json, render_json, render_text

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def plan(name: str = "claude-code.json", identity: str = "claude-k3x9q", present: bool = False) -> LaunchPlan:
    path = EXAMPLES / name
    (agent,) = parse_json_manifest(path.read_text(), str(path), str(path.parent))
    request = LaunchRequest(
        agent=agent.name, cwd="/p", runtime="podman", state_dir="/s", images=ImageSettings(version="1.2.3")
    )
    return plan_launch(agent, request, identity, {use.ref: present for use in secret_uses(agent)})


def test_json_decodes_back_to_the_same_plan() -> None:
    p = plan()
    assert msgspec.json.decode(render_json(p), type=LaunchPlan) == p
    assert msgspec.json.decode(plan_to_json(p), type=LaunchPlan) == p


def test_json_key_order_is_stable_and_top_level_fields_are_in_declaration_order() -> None:
    text = render_json(plan())
    data = json.loads(text)
    assert list(data)[:4] == ["identity", "agent", "description", "runtime"]
    labels = data["containers"][0]["labels"]
    assert list(labels) == sorted(labels)
    assert text.endswith("}\n")


def test_text_says_what_will_happen() -> None:
    text = render_text(plan())
    assert "bottle claude-k3x9q: agent `claude` on podman" in text
    assert "/p mounted read-write at /workspace" in text
    assert "agent -> egress-proxy -> guard -> internet" in text
    assert "pypi.org, files.pythonhosted.org, api.anthropic.com" in text
    assert "https://api.anthropic.com  x-api-key  from env:ANTHROPIC_API_KEY (MISSING)" in text
    assert "bottle-agent-claude-k3x9q  [agent]" in text
    assert "HTTP_PROXY/HTTPS_PROXY/http_proxy/https_proxy=http://egress-proxy:8080" in text
    assert "EDITOR (from the manifest)" in text
    assert "BOTTLE_TOKEN_0 (from env:ANTHROPIC_API_KEY)" in text
    assert "warnings:" in text and "! secret env:ANTHROPIC_API_KEY is missing" in text


def test_text_of_the_git_example() -> None:
    text = render_text(plan("generic-git.json", identity="implementer-abcde", present=True))
    assert "origin  https://github.com/example-org/example-repo.git  token env:GITHUB_TOKEN (present)" in text
    assert "protected main, release/*" in text
    assert "supervise: on" in text
    assert "build localhost/bottle-dockerfile-implementer:latest from" in text
    assert "warnings:" not in text
    assert "sent as user x-access-token" in text
    assert "findings waived: aws-access-key-id in tests/fixtures/*" in text
    # the gate's remote list is shown once, in words, not as a JSON dump in its env
    assert "BOTTLE_GIT_REMOTES (the git remotes above, as JSON)" in text
    assert '{"remotes"' not in text


def test_text_of_a_remote_without_branch_rules_names_the_default_protection() -> None:
    (agent,) = parse_json_manifest(json.dumps({"agents": {"a": {"image": "x", "bottle": {
        "egress": {"extra_ca_file": "/ca.pem"},
        "git": [{"name": "o", "upstream": "https://h.example/r.git", "token_ref": "T"}]}}}}), "/p/bottle.json", "/p")
    request = LaunchRequest(agent="a", cwd="/p", runtime="docker", state_dir="/s/a-k3x9q", images=ImageSettings("1"))
    text = render_text(plan_launch(agent, request, "a-k3x9q", {"env:T": True}))
    assert "protected main, master" in text
    assert "the guard and the git gate also trust /ca.pem upstream" in text


def test_text_says_how_secrets_travel_and_who_runs() -> None:
    (agent,) = parse_json_manifest(json.dumps({"agents": {"a": {"image": "x", "bottle": {"egress_proxy": {"routes": [
        {"upstream": "https://api.example.com", "token_ref": "TOK"}]}}}}}), "/p/bottle.json", "/p")
    request = LaunchRequest(agent="a", cwd="/p", runtime="podman", state_dir="/s/a-k3x9q", images=ImageSettings("1"),
                            user="1001:1001", userns="keep-id")
    text = render_text(plan_launch(agent, request, "a-k3x9q", {"env:TOK": True}))
    assert "secrets: copied in as /run/bottle-secrets.json before it starts (not in its env)" in text
    assert "runs as: 1001:1001, user namespace keep-id" in text
