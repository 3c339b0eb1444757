"""Loading manifests from text: formats, every error kind with its field path, merging."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bottle.core.errors import DOCUMENT, InputError, ManifestError, UnknownAgentError
from bottle.core.manifest import Agent, Manifest, parse_memory
from bottle.core.manifest_load import (
    ManifestText,
    load_manifest,
    looks_like_secret,
    parse_json_manifest,
    parse_markdown_agent,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
SECRET = "sk-ant-api03-" + "Zq9" * 12


def doc(agent: dict, name: str = "a") -> str:
    return json.dumps({"agents": {name: agent}})


def load_one(agent: dict) -> Agent:
    (parsed,) = parse_json_manifest(doc(agent), "m.json", "/proj")
    return parsed


def error_of(agent_or_text: dict | str) -> ManifestError:
    text = agent_or_text if isinstance(agent_or_text, str) else doc(agent_or_text)
    with pytest.raises(ManifestError) as info:
        parse_json_manifest(text, "m.json", "/proj")
    return info.value


def md_error(text: str) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        parse_markdown_agent(text, "agents/r.md", "/proj/agents")
    return info.value


def route(**fields: str) -> dict:
    return {"upstream": "https://api.example.com", "token_ref": "EXAMPLE_TOKEN", **fields}


# -- the examples shipped in docs/ ------------------------------------------


def test_claude_example_loads_with_its_route_and_allowlist() -> None:
    path = EXAMPLES / "claude-code.json"
    (agent,) = parse_json_manifest(path.read_text(), str(path), str(path.parent))
    assert agent.name == "claude"
    assert agent.image and agent.dockerfile is None
    assert agent.bottle.egress.allow == ("pypi.org", "files.pythonhosted.org")
    (r,) = agent.bottle.egress_proxy.routes
    assert (r.upstream, r.auth_scheme, r.token_ref) == ("https://api.anthropic.com", "x-api-key", "ANTHROPIC_API_KEY")
    assert agent.source == str(path)


def test_generic_git_example_has_a_brokered_remote_and_a_dockerfile_next_to_it() -> None:
    path = EXAMPLES / "generic-git.json"
    (agent,) = parse_json_manifest(path.read_text(), str(path), str(path.parent))
    (remote,) = agent.bottle.git
    assert remote.name == "origin" and remote.upstream.startswith("https://")
    assert remote.branches.protected == ("main", "release/*")
    assert agent.dockerfile_path() == str(EXAMPLES / "Dockerfile.agent")
    assert (EXAMPLES / "Dockerfile.agent").is_file()


def remote(**fields: object) -> dict:
    return {"name": "origin", "upstream": "https://git.example.com/o/r.git", "token_ref": "GIT_TOKEN", **fields}


def test_a_git_remote_takes_a_username_and_finding_waivers() -> None:
    from bottle.core.gitgate import DEFAULT_USERNAME, FindingWaiver

    plain = load_one({"image": "x", "bottle": {"git": [remote()]}})
    assert plain.bottle.git[0].username == DEFAULT_USERNAME and plain.bottle.git[0].allow_findings == ()
    agent = load_one({"image": "x", "bottle": {"git": [remote(
        username="oauth2", allow_findings=[{"path": "tests/fixtures/*", "rule": "aws-access-key-id"}])]}})
    (r,) = agent.bottle.git
    assert r.username == "oauth2"
    assert r.allow_findings == (FindingWaiver("tests/fixtures/*", "aws-access-key-id"),)


@pytest.mark.parametrize(
    ("fields", "where", "words"),
    [
        ({"allow_findings": [{"path": "x", "rule": "brokered-secret"}]}, "allow_findings[0].rule", "never waived"),
        ({"allow_findings": [{"path": "x", "rule": "everything"}]}, "allow_findings[0].rule", "aws-access-key-id"),
        ({"allow_findings": [{"path": " ", "rule": "jwt"}]}, "allow_findings[0].path", "path pattern"),
        ({"allow_findings": [{"rule": "jwt"}]}, "allow_findings[0].path", "missing"),
        ({"allow_findings": [{"path": "x", "rule": "jwt", "line": 3}]}, "allow_findings[0].line", "unknown field"),
        ({"username": "a:b"}, "username", "no ':'"),
        ({"username": ""}, "username", "user name"),
        ({"username": "ghp_" + "a1B2" * 9}, "username", "looks like a token"),
    ],
)
def test_bad_usernames_and_waivers_are_named_by_field(fields: dict, where: str, words: str) -> None:
    err = error_of({"image": "x", "bottle": {"git": [remote(**fields)]}})
    assert f"agents.a.bottle.git[0].{where}" in str(err)
    assert words in str(err)
    assert "a1B2a1B2" not in str(err)


def test_reviewer_markdown_example_has_instructions_from_its_body() -> None:
    path = EXAMPLES / "agents" / "reviewer.md"
    agent = parse_markdown_agent(path.read_text(), str(path), str(path.parent))
    assert agent.name == "reviewer"
    assert agent.instructions.startswith("You are a careful code reviewer.")
    assert "---" not in agent.instructions
    assert agent.bottle.read_only_root is True
    assert agent.bottle.egress_proxy.routes[0].token_ref == "CLAUDE_CODE_OAUTH_TOKEN"


# -- defaults and normalisation ---------------------------------------------


def test_defaults_of_an_agent_with_only_an_image() -> None:
    agent = load_one({"image": "localhost/x:1"})
    assert agent.command is None and agent.env == {} and agent.description == ""
    bottle = agent.bottle
    assert bottle.egress.allow == () and bottle.egress.extra_ca_file is None
    assert bottle.egress_proxy.routes == () and bottle.git == ()
    assert bottle.supervise is False and bottle.read_only_root is False
    assert (bottle.limits.memory, bottle.limits.pids) == ("2g", 512)


def test_route_auth_scheme_defaults_to_bearer() -> None:
    agent = load_one({"image": "x", "bottle": {"egress_proxy": {"routes": [route()]}}})
    assert agent.bottle.egress_proxy.routes[0].auth_scheme == "bearer"


def test_host_patterns_are_normalised() -> None:
    agent = load_one({"image": "x", "bottle": {"egress": {"allow": ["PyPI.org.", "*.Example.COM"]}}})
    assert agent.bottle.egress.allow == ("pypi.org", "*.example.com")


def test_relative_paths_resolve_against_the_declaring_file() -> None:
    agent = load_one({"dockerfile": "docker/Dockerfile", "bottle": {"egress": {"extra_ca_file": "../ca.pem"}}})
    assert agent.dockerfile_path() == "/proj/docker/Dockerfile"
    assert agent.resolve_path("../ca.pem") == "/ca.pem"
    assert agent.resolve_path("/abs/ca.pem") == "/abs/ca.pem"
    assert agent.resolve_path("~/ca.pem") == "~/ca.pem"


def test_limits_null_lifts_them() -> None:
    agent = load_one({"image": "x", "bottle": {"limits": {"memory": None, "pids": None}}})
    assert agent.bottle.limits.memory_bytes() is None and agent.bottle.limits.pids is None


@pytest.mark.parametrize(
    ("text", "size"),
    [("512m", 512 * 2**20), ("2g", 2 * 2**30), ("2G", 2 * 2**30), ("1gb", 2**30), ("7340032", 7340032)],
)
def test_parse_memory(text: str, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["", "2x", "1.5g", "-1g", "1m", "g"])
def test_parse_memory_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_memory(text)


def test_version_1_is_accepted_and_others_are_not() -> None:
    assert parse_json_manifest('{"version": 1, "agents": {}}', "m.json", "/") == ()
    err = error_of('{"version": 2, "agents": {}}')
    assert err.field == "version"


def test_an_empty_manifest_declares_no_agents() -> None:
    assert parse_json_manifest("{}", "m.json", "/") == ()


# -- errors: one field path each ---------------------------------------------

ERROR_CASES = [
    pytest.param('{"agents": ', DOCUMENT, "expected JSON", id="unparseable"),
    pytest.param("[1, 2]", DOCUMENT, "expected an object", id="top-level-list"),
    pytest.param('{"agents": [1]}', "agents", "expected an object of agents", id="agents-not-object"),
    pytest.param('{"agent": {}}', "agent", "did you mean `agents`?", id="top-level-typo"),
    pytest.param('{"agents": {"a": {"image": "x"}, "a": {"image": "y"}}}', "agents.a", "appears twice", id="dup-agent"),
    pytest.param(doc({}), "agents.a", "got neither", id="no-image"),
    pytest.param(doc({"image": "x", "dockerfile": "D"}), "agents.a", "got both", id="both-images"),
    pytest.param(doc({"image": "has space"}), "agents.a.image", "image reference", id="bad-image"),
    pytest.param(doc({"image": "x", "egres": {}}), "agents.a.egres", "unknown field", id="unknown-agent-field"),
    pytest.param(
        doc({"image": "x", "bottle": {"egres": {}}}), "agents.a.bottle.egres", "did you mean `egress`?", id="egres"
    ),
    pytest.param(
        doc({"image": "x", "bottle": {"egress": {"alow": []}}}), "agents.a.bottle.egress.alow",
        "did you mean `allow`?", id="alow",
    ),
    pytest.param(
        doc({"image": "x", "bottle": {"egress": {"allow": ["a.com", "b.com", "http://c.com"]}}}),
        "agents.a.bottle.egress.allow[2]", "write only the host", id="allow-url",
    ),
    pytest.param(
        doc({"image": "x", "bottle": {"egress": {"allow": ["a.com", 7]}}}),
        "agents.a.bottle.egress.allow[1]", "expected a string, got a number", id="allow-type",
    ),
    pytest.param(
        doc({"image": "x", "bottle": {"egress": {"allow": "a.com"}}}),
        "agents.a.bottle.egress.allow", "expected a list of strings, got a string", id="allow-not-list",
    ),
    pytest.param(
        doc({"image": "x", "bottle": {"egress_proxy": {"routes": [route(upstream="http://api.x.com")]}}}),
        "agents.a.bottle.egress_proxy.routes[0].upstream", "https://", id="route-http",
    ),
    pytest.param(
        doc({"image": "x", "bottle": {"egress_proxy": {"routes": [route(), route(auth_scheme="digest")]}}}),
        "agents.a.bottle.egress_proxy.routes[1].auth_scheme", "digest", id="auth-scheme",
    ),
    pytest.param(
        doc({"image": "x", "bottle": {"egress_proxy": {"routes": [{"upstream": "https://a.example"}]}}}),
        "agents.a.bottle.egress_proxy.routes[0].token_ref", "missing", id="route-no-token-ref",
    ),
    pytest.param(
        doc({"image": "x", "bottle": {"egress_proxy": {"routes": [route(token_ref="not a name")]}}}),
        "agents.a.bottle.egress_proxy.routes[0].token_ref", "environment variable name", id="token-ref",
    ),
    pytest.param(
        doc({"image": "x", "bottle": {"egress_proxy": {"routes": [route(), route(upstream="https://API.example.com/")]}}}),
        "agents.a.bottle.egress_proxy.routes", "keep one", id="dup-route",
    ),
    pytest.param(
        doc({"image": "x", "bottle": {"git": [{"name": "o", "upstream": "git@github.com:a/b.git", "token_ref": "T"}]}}),
        "agents.a.bottle.git[0].upstream", "https://", id="git-ssh-url",
    ),
    pytest.param(
        doc({"image": "x", "bottle": {"git": [{"name": "o", "upstream": "https://github.com", "token_ref": "T"}]}}),
        "agents.a.bottle.git[0].upstream", "with a path", id="git-no-repo",
    ),
    pytest.param(
        doc({"image": "x", "bottle": {"git": [
            {"name": "o", "upstream": "https://h.example/a.git", "token_ref": "T"},
            {"name": "o", "upstream": "https://h.example/b.git", "token_ref": "T"},
        ]}}),
        "agents.a.bottle.git[1].name", "declared twice", id="git-dup-name",
    ),
    pytest.param(
        doc({"image": "x", "bottle": {"git": [
            {"name": "o", "upstream": "https://h.example/a.git", "token_ref": "T", "branches": {"protect": []}}
        ]}}),
        "agents.a.bottle.git[0].branches.protect", "did you mean `protected`?", id="branches-typo",
    ),
    pytest.param(
        doc({"image": "x", "bottle": {"git": [
            {"name": "o", "upstream": "https://h.example/a.git", "token_ref": "T", "branches": {"allow": ["ok", ""]}}
        ]}}),
        "agents.a.bottle.git[0].branches.allow[1]", "branch name", id="branch-empty",
    ),
    pytest.param(
        doc({"image": "x", "bottle": {"supervise": "yes"}}), "agents.a.bottle.supervise", "true or false",
        id="supervise-type",
    ),
    pytest.param(
        doc({"image": "x", "bottle": {"limits": {"memory": "2x"}}}), "agents.a.bottle.limits.memory", "'2g'",
        id="memory",
    ),
    pytest.param(
        doc({"image": "x", "bottle": {"limits": {"pids": 0}}}), "agents.a.bottle.limits.pids", "from 1",
        id="pids-zero",
    ),
    pytest.param(
        doc({"image": "x", "bottle": {"limits": {"pids": True}}}), "agents.a.bottle.limits.pids", "integer",
        id="pids-bool",
    ),
    pytest.param(doc({"image": "x", "env": {"K": 1}}), "agents.a.env.K", "expected a string", id="env-type"),
    pytest.param(doc({"image": "x", "env": {"1BAD": "v"}}), 'agents.a.env["1BAD"]', "variable name", id="env-name"),
    pytest.param(doc({"image": "x", "env": {"HTTPS_PROXY": "v"}}), "agents.a.env.HTTPS_PROXY", "set by bottle", id="env-reserved"),
    pytest.param(
        doc({"image": "x", "env": {"SSL_CERT_FILE": "v"}}), "agents.a.env.SSL_CERT_FILE", "set by bottle",
        id="env-ca",
    ),
    pytest.param(
        doc({"image": "x", "env": {"GH": "v"}, "bottle": {"egress_proxy": {"routes": [route(token_ref="GH")]}}}),
        "agents.a.env.GH", "token_ref", id="env-is-token-ref",
    ),
    pytest.param(
        doc({"image": "x", "env": {"ANTHROPIC_BASE_URL": "v"},
             "bottle": {"egress_proxy": {"routes": [route(upstream="https://api.anthropic.com")]}}}),
        "agents.a.env.ANTHROPIC_BASE_URL", "api.anthropic.com", id="env-claude",
    ),
    pytest.param(doc({"image": "x", "command": []}), "agents.a.command", "non-empty", id="command-empty"),
    pytest.param(doc({"image": "x", "command": "claude"}), "agents.a.command", "a list of strings", id="command-str"),
    pytest.param(doc({"image": "x", "instructions": "hi"}), "agents.a.instructions", "unknown field", id="loader-field"),
    pytest.param(doc({"image": "x", "source": "hi"}), "agents.a.source", "unknown field", id="loader-field-2"),
    pytest.param(json.dumps({"agents": {"": {"image": "x"}}}), 'agents[""]', "non-empty", id="empty-name"),
    pytest.param(json.dumps({"agents": {"a\tb": {"image": "x"}}}), 'agents["a\\tb"]', "control", id="control-name"),
    pytest.param(doc({"image": "x"}, name="my agent") .replace('"image": "x"', '"image": 3'), 'agents["my agent"].image', "a string", id="quoted-path"),
]


@pytest.mark.parametrize(("text", "field", "fragment"), ERROR_CASES)
def test_error_names_file_field_and_expectation(text: str, field: str, fragment: str) -> None:
    err = error_of(text)
    assert isinstance(err, InputError) and err.exit_code == 2
    assert err.source == "m.json"
    assert err.field == field
    assert fragment in err.problem
    assert str(err) == f"m.json: {field}: {err.problem}"


def test_unknown_field_hint_lists_the_known_fields() -> None:
    err = error_of({"image": "x", "bottle": {"egres": {}}})
    assert err.problem == "unknown field `egres`; did you mean `egress`?"
    assert "egress_proxy" in (err.hint or "")


def test_unknown_field_without_a_close_match_has_no_suggestion() -> None:
    err = error_of({"image": "x", "bottle": {"zzzzzz": 1}})
    assert err.problem == "unknown field `zzzzzz`"


def test_json_syntax_error_gives_line_and_column() -> None:
    err = error_of('{\n  "agents": {\n    "a": {"image": "x",}\n  }\n}')
    assert err.field == DOCUMENT
    assert "line 3" in err.problem


# -- legacy keys ------------------------------------------------------------


def test_legacy_tokens_dies_with_the_equivalent_route() -> None:
    err = error_of({"image": "x", "bottle": {"tokens": [{"kind": "anthropic", "token_ref": "ANTHROPIC_API_KEY"}]}})
    assert err.field == "agents.a.bottle.tokens"
    assert "egress_proxy.routes" in err.problem
    hint = err.hint or ""
    recipe = json.loads(hint[hint.index("{"): hint.rindex("}") + 1])
    assert recipe == {
        "egress_proxy": {
            "routes": [
                {"upstream": "https://api.anthropic.com", "auth_scheme": "x-api-key", "token_ref": "ANTHROPIC_API_KEY"}
            ]
        }
    }


def test_legacy_cred_proxy_routes_are_translated() -> None:
    legacy = {"routes": [{"path": "/gh", "upstream": "https://api.github.com", "auth_scheme": "bearer",
                          "token_ref": "GITHUB_TOKEN", "role": ["git-insteadof"]}]}
    err = error_of({"image": "x", "bottle": {"cred_proxy": legacy}})
    assert err.field == "agents.a.bottle.cred_proxy"
    hint = err.hint or ""
    recipe = json.loads(hint[hint.index("{"): hint.rindex("}") + 1])
    assert recipe["egress_proxy"]["routes"] == [
        {"upstream": "https://api.github.com", "auth_scheme": "bearer", "token_ref": "GITHUB_TOKEN"}
    ]


def test_legacy_recipe_never_repeats_a_pasted_secret() -> None:
    err = error_of({"image": "x", "bottle": {"tokens": {"anthropic": SECRET}}})
    assert SECRET not in str(err) and SECRET not in (err.hint or "")
    assert "ENV_VAR_NAME" in (err.hint or "")


def test_legacy_recipe_in_a_markdown_file_is_yaml() -> None:
    text = "---\nname: r\nimage: x\nbottle:\n  cred_proxy:\n    routes:\n      - upstream: https://api.github.com\n        token_ref: GH\n---\n"
    err = md_error(text)
    assert err.field == "bottle.cred_proxy"
    hint = err.hint or ""
    recipe = yaml.safe_load(hint[hint.index("egress_proxy:"): hint.index("(auth_scheme")])
    assert recipe["egress_proxy"]["routes"][0]["upstream"] == "https://api.github.com"


# -- secrets never echoed ---------------------------------------------------


@pytest.mark.parametrize(
    ("agent", "field"),
    [
        ({"image": "x", "bottle": {"egress_proxy": {"routes": [route(token_ref=SECRET)]}}},
         "agents.a.bottle.egress_proxy.routes[0].token_ref"),
        ({"image": "x", "bottle": {"egress_proxy": {"routes": [route(token_ref="x-" + SECRET)]}}},
         "agents.a.bottle.egress_proxy.routes[0].token_ref"),
        ({"image": "x", "env": {"KEY": SECRET}}, "agents.a.env.KEY"),
        ({"image": "x", "command": ["run", "--key", SECRET]}, "agents.a.command[2]"),
        ({"image": "x", "bottle": {"egress_proxy": {"routes": [route(upstream=f"https://u:{SECRET}@api.x.com")]}}},
         "agents.a.bottle.egress_proxy.routes[0].upstream"),
        ({"image": "x", "bottle": {"egress_proxy": {"routes": [route(upstream=f"https://api.x.com/?key={SECRET}")]}}},
         "agents.a.bottle.egress_proxy.routes[0].upstream"),
        ({"image": "x", "bottle": {"git": [{"name": "o", "upstream": f"https://x:{SECRET}@h.example/r.git",
                                              "token_ref": "T"}]}},
         "agents.a.bottle.git[0].upstream"),
    ],
)
def test_a_secret_pasted_into_the_manifest_is_refused_without_echo(agent: dict, field: str) -> None:
    err = error_of(agent)
    assert err.field == field
    assert SECRET not in str(err)
    assert SECRET not in (err.hint or "")


@pytest.mark.parametrize(
    "value",
    [SECRET, "ghp_" + "a" * 36, "github_pat_" + "b" * 30, "AKIAABCDEFGHIJKLMNOP", "glpat-" + "c" * 20,
     "-----BEGIN OPENSSH PRIVATE KEY-----"],
)
def test_looks_like_secret_knows_common_token_shapes(value: str) -> None:
    assert looks_like_secret(value)


@pytest.mark.parametrize("value", ["vi", "https://pypi.org/simple", "task-skeleton-for-the-agent", "AKIA"])
def test_looks_like_secret_leaves_ordinary_values(value: str) -> None:
    assert looks_like_secret(value) is None


# -- markdown agent files ---------------------------------------------------

MD = """---
name: reviewer
description: reviews
image: localhost/x:1
bottle:
  egress:
    allow: [pypi.org]
---

Review the code.

Be kind.
"""


def test_markdown_agent_fields_and_body() -> None:
    agent = parse_markdown_agent(MD, "agents/r.md", "/proj/agents")
    assert (agent.name, agent.description, agent.image) == ("reviewer", "reviews", "localhost/x:1")
    assert agent.instructions == "Review the code.\n\nBe kind."
    assert agent.bottle.egress.allow == ("pypi.org",)
    assert (agent.source, agent.base_dir) == ("agents/r.md", "/proj/agents")


def test_markdown_with_crlf_line_ends_and_a_bom() -> None:
    agent = parse_markdown_agent("\ufeff" + MD.replace("\n", "\r\n"), "r.md", "/")
    assert agent.name == "reviewer"


def test_markdown_dockerfile_is_relative_to_the_agent_file() -> None:
    agent = parse_markdown_agent("---\nname: r\ndockerfile: ../Dockerfile\n---\n", "r.md", "/proj/.bottle/agents")
    assert agent.dockerfile_path() == "/proj/.bottle/Dockerfile"


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        ("just text", DOCUMENT, "front matter"),
        ("---\nname: r\nimage: x\n", DOCUMENT, "closing '---'"),
        ("---\nname: r\n  image: [x\n---\n", DOCUMENT, "line"),
        ("---\n- a\n- b\n---\n", DOCUMENT, "mapping"),
        ("---\n---\nbody", DOCUMENT, "mapping"),
        ("---\nimage: x\n---\n", "name", "missing"),
        ("---\nname: 3\nimage: x\n---\n", "name", "a string"),
        ("---\nname: r\nimage: x\nimage: y\n---\n", "image", "appears twice"),
        ("---\nname: r\nimage: x\nbottle:\n  egres: {}\n---\n", "bottle.egres", "did you mean `egress`?"),
        ("---\nname: r\nimage: x\nbottle:\n  egress: {allow: [a.com, '*.com']}\n---\n", "bottle.egress.allow[1]", "too broad"),
        ("---\nname: r\nimage: x\nbottle:\n  tokens: [{kind: github, token_ref: GH}]\n---\n", "bottle.tokens", "removed"),
        ("---\nname: r\nimage: x\ninstructions: hi\n---\n", "instructions", "unknown field"),
        ("---\nname: r\nimage: x\nenv: {1: x}\n---\n", "env", "names (strings) as keys"),
        ("---\nname: r\nimage: x\ncommand: [1]\n---\n", "command[0]", "a string"),
        ("---\nname: r\nimage: 2024-01-01\n---\n", "image", "got a date"),
    ],
)
def test_markdown_errors(text: str, field: str, fragment: str) -> None:
    err = md_error(text)
    assert err.source == "agents/r.md"
    assert err.field == field
    assert fragment in err.problem


# -- merging ----------------------------------------------------------------


def src(text: str, source: str, kind: str = "json") -> ManifestText:
    return ManifestText(text=text, source=source, base_dir="/d", kind=kind)  # type: ignore[arg-type]


def test_later_layers_replace_whole_agents_and_keep_the_rest() -> None:
    user = src(json.dumps({"agents": {"a": {"image": "user-a", "env": {"X": "1"}}, "b": {"image": "user-b"}}}), "user.json")
    project = src(json.dumps({"agents": {"a": {"image": "project-a"}}}), "project.json")
    explicit = src("---\nname: b\nimage: explicit-b\n---\nhi\n", "b.md", "markdown")
    manifest = load_manifest([[user], [project], [explicit]])
    assert manifest.names() == ("a", "b")
    assert manifest.agent("a").image == "project-a"
    assert manifest.agent("a").env == {}  # replaced whole, not merged field by field
    assert manifest.agent("a").source == "project.json"
    assert manifest.agent("b").image == "explicit-b" and manifest.agent("b").instructions == "hi"
    assert manifest.sources == ("user.json", "project.json", "b.md")


def test_a_name_declared_twice_in_one_layer_is_an_error_naming_both_files() -> None:
    json_src = src(json.dumps({"agents": {"a": {"image": "x"}}}), "bottle.json")
    md_src = src("---\nname: a\nimage: y\n---\n", ".bottle/agents/a.md", "markdown")
    with pytest.raises(ManifestError) as info:
        load_manifest([[json_src, md_src]])
    err = info.value
    assert err.source == ".bottle/agents/a.md" and err.field == "name"
    assert "bottle.json" in err.problem


def test_an_error_in_any_layer_names_that_file() -> None:
    good = src(json.dumps({"agents": {"a": {"image": "x"}}}), "good.json")
    bad = src(json.dumps({"agents": {"a": {"image": "x", "bottle": {"egres": {}}}}}), "bad.json")
    with pytest.raises(ManifestError) as info:
        load_manifest([[good], [bad]])
    assert info.value.source == "bad.json"


def test_unknown_agent_lists_the_known_ones_and_suggests() -> None:
    manifest = load_manifest([[src(json.dumps({"agents": {"implementer": {"image": "x"}, "reviewer": {"image": "y"}}}), "m.json")]])
    with pytest.raises(UnknownAgentError) as info:
        manifest.agent("implementor")
    err = info.value
    assert err.exit_code == 2
    assert "implementer, reviewer" in str(err)
    assert "did you mean 'implementer'?" in str(err)
    assert "m.json" in (err.hint or "")


def test_unknown_agent_in_an_empty_manifest_says_how_to_declare_one() -> None:
    with pytest.raises(UnknownAgentError) as info:
        Manifest().agent("x")
    assert "no agents are declared" in str(info.value)
    assert "bottle.json" in (info.value.hint or "")


# -- docs/manifest.md documents every field ---------------------------------


def test_the_reference_documents_every_field_and_default() -> None:
    import msgspec

    from bottle.core import manifest as m

    text = (EXAMPLES.parent / "manifest.md").read_text()
    for struct in (m.Agent, m.BottleConfig, m.Egress, m.EgressProxy, m.Route, m.GitRemote, m.Branches, m.Limits,
                   m.FindingWaiver, m.Syscalls):
        for field in msgspec.structs.fields(struct):
            if field.name in m.LOADER_FIELDS - {"name"}:
                continue
            documented = (f"`{field.name}`", f".{field.name}`", f"`{field.name}.")
            assert any(d in text for d in documented), f"{struct.__name__}.{field.name}"
    assert f'`"{m.DEFAULT_MEMORY}"`' in text and f"`{m.DEFAULT_PIDS}`" in text
    assert "`bottle.tokens`" in text and "`bottle.cred_proxy`" in text


def test_supervise_token_refs_are_token_refs_and_need_supervise() -> None:
    agent = load_one({"image": "i", "bottle": {"supervise": True, "supervise_token_refs": ["GH_TOKEN", "file:~/.t/x"]}})
    assert agent.bottle.supervise_token_refs == ("GH_TOKEN", "file:~/.t/x")
    err = error_of({"image": "i", "bottle": {"supervise_token_refs": ["GH_TOKEN"]}})
    assert "need supervise: true" in str(err)
    err = error_of({"image": "i", "bottle": {"supervise": True, "supervise_token_refs": ["not a ref"]}})
    assert "supervise_token_refs" in str(err)
