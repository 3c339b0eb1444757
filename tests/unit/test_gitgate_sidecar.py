"""The git gate sidecar's parts that need no server: settings, credential helper, git environments, push argv."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bottle.core.gitgate import GateRemote, encode_gate_config
from bottle.core.gitpolicy import PushRefUpdate
from bottle.sidecars.git_gate import credential
from bottle.sidecars.git_gate.gitcmd import GateError, GateSettings, local_env, prepare_runtime, upstream_env
from bottle.sidecars.git_gate.hook import upstream_push_argv

TOKEN = "gt-Sidecar0Credential1Value2abcdefXYZ"
ZERO = "0" * 40
A = "a" * 40
B = "b" * 40
ORIGIN = GateRemote("origin", "https://git.example.test/org/repo.git", "BOTTLE_GIT_TOKEN_0")


def settings_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "BOTTLE_GIT_REMOTES": encode_gate_config([ORIGIN]),
        "BOTTLE_IDENTITY": "agent-abcde",
        "BOTTLE_GIT_ROOT": str(tmp_path / "srv"),
        "BOTTLE_RUNTIME_DIR": str(tmp_path / "run"),
        "BOTTLE_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "PATH": os.environ["PATH"],
    }
    env.update(extra)
    return env


# -- settings --------------------------------------------------------------------


def test_settings_read_tokens_from_env_and_secrets_file(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"BOTTLE_GIT_TOKEN_1": "from-file", "BOTTLE_TOKEN_0": "not-mine", "BOTTLE_GIT_TOKEN_2": ""}))
    s = GateSettings.from_env(settings_env(tmp_path, BOTTLE_GIT_TOKEN_0=TOKEN, BOTTLE_SECRETS_FILE=str(secrets)))
    assert s.tokens == {"BOTTLE_GIT_TOKEN_0": TOKEN, "BOTTLE_GIT_TOKEN_1": "from-file"}
    assert s.config.names() == ("origin",)
    assert s.role == "git-gate" and s.listen_port == 8080
    assert s.repo(ORIGIN) == str(tmp_path / "srv" / "origin.git")
    assert s.scanner().scan(f"x {TOKEN} y", "t")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"BOTTLE_GIT_REMOTES": ""}, "BOTTLE_GIT_REMOTES is not set"),
        ({"BOTTLE_GIT_REMOTES": "{oops"}, "not JSON"),
        ({"BOTTLE_LISTEN_PORT": "http"}, "not a port"),
        ({"BOTTLE_SECRETS_FILE": "/nonexistent/secrets.json"}, "cannot read the secrets file"),
    ],
)
def test_bad_settings_name_the_problem(tmp_path: Path, change: dict[str, str], message: str) -> None:
    with pytest.raises(GateError, match=message):
        GateSettings.from_env(settings_env(tmp_path, **change))


def test_a_malformed_secrets_file_is_named_not_quoted(tmp_path: Path) -> None:
    secrets = tmp_path / "s.json"
    secrets.write_text(f'["{TOKEN}"]')
    with pytest.raises(GateError) as err:
        GateSettings.from_env(settings_env(tmp_path, BOTTLE_SECRETS_FILE=str(secrets)))
    assert str(secrets) in str(err.value) and TOKEN not in str(err.value)


# -- the credential helper ----------------------------------------------------------

HELPER_ENV = {
    "BOTTLE_GIT_CREDENTIAL_ENV": "BOTTLE_GIT_TOKEN_0",
    "BOTTLE_GIT_CREDENTIAL_HOST": "git.example.test",
    "BOTTLE_GIT_CREDENTIAL_USER": "x-access-token",
    "BOTTLE_GIT_TOKEN_0": TOKEN,
}


ANSWER = f"username=x-access-token\npassword={TOKEN}\n"


@pytest.mark.parametrize("host", ["git.example.test", "GIT.example.test", "git.example.test:443"])
def test_credential_helper_answers_for_its_own_host(host: str) -> None:
    request = f"protocol=https\nhost={host}\npath=org/repo.git\n"
    assert credential.answer("get", request, HELPER_ENV) == ANSWER


@pytest.mark.parametrize(
    ("upstream_host", "asked", "answers"),
    [
        ("git.example.test", "git.example.test:8443", False),
        ("git.example.test:8443", "git.example.test:8443", True),
        ("git.example.test:8443", "git.example.test", False),
        ("git.example.test:8443", "git.example.test:443", False),
        ("git.example.test:8443", "git.example.test:8444", False),
        ("git.example.test:443", "git.example.test", True),
        ("[fd00::1]:8443", "[FD00::1]:8443", True),
        ("[fd00::1]:8443", "[fd00::1]", False),
        ("git.example.test:8443", "git.example.test:8443@evil.example", False),
        ("git.example.test:8443", "git.example.test:http", False),
    ],
)
def test_credential_helper_matches_the_port_exactly(upstream_host: str, asked: str, answers: bool) -> None:
    env = {**HELPER_ENV, "BOTTLE_GIT_CREDENTIAL_HOST": upstream_host}
    assert credential.answer("get", f"protocol=https\nhost={asked}\n", env) == (ANSWER if answers else "")
    # The same host and port over plain http never gets the token.
    assert credential.answer("get", f"protocol=http\nhost={asked}\n", env) == ""


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_credential_helper_answers_no_other_host_text(asked: str) -> None:
    out = credential.answer("get", f"protocol=https\nhost={asked}\n", {**HELPER_ENV, "BOTTLE_GIT_CREDENTIAL_HOST": "git.example.test:8443"})
    if out:
        host, _, port = asked.lower().rpartition(":")
        assert host == "git.example.test" and port.isascii() and port.isdigit() and int(port) == 8443


@pytest.mark.parametrize(
    ("operation", "request_text", "env"),
    [
        ("get", "protocol=https\nhost=evil.example\n", HELPER_ENV),
        ("get", "protocol=https\nhost=git.example.test.evil.example\n", HELPER_ENV),
        ("get", "protocol=http\nhost=git.example.test\n", HELPER_ENV),
        ("store", "protocol=https\nhost=git.example.test\nusername=u\npassword=p\n", HELPER_ENV),
        ("erase", "protocol=https\nhost=git.example.test\n", HELPER_ENV),
        ("get", "protocol=https\nhost=git.example.test\n", {**HELPER_ENV, "BOTTLE_GIT_TOKEN_0": ""}),
        ("get", "protocol=https\nhost=git.example.test\n", {k: v for k, v in HELPER_ENV.items() if k != "BOTTLE_GIT_CREDENTIAL_HOST"}),
    ],
)
def test_credential_helper_gives_nothing_otherwise(operation: str, request_text: str, env: dict[str, str]) -> None:
    assert credential.answer(operation, request_text, env) == ""


def test_credential_helper_main_reads_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in HELPER_ENV.items():
        monkeypatch.setenv(k, v)
    out = io.StringIO()
    assert credential.main(["get"], io.StringIO("protocol=https\nhost=git.example.test\n"), out) == 0
    assert out.getvalue().endswith(f"password={TOKEN}\n")


# -- git environments -------------------------------------------------------------


def test_upstream_env_configures_the_helper_without_the_token_in_any_config(tmp_path: Path) -> None:
    s = GateSettings.from_env(settings_env(tmp_path, BOTTLE_GIT_TOKEN_0=TOKEN, HOME="/root", GIT_DIR="/elsewhere"))
    env = upstream_env(s, ORIGIN, inherit={"PATH": "/usr/bin", "HOME": "/root", "GIT_DIR": "/x", "SSH_AUTH_SOCK": "/s"})
    config = {env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"] for i in range(int(env["GIT_CONFIG_COUNT"]))}
    assert "bottle.sidecars.git_gate.credential" in config["credential.helper"]
    assert all(TOKEN not in v for v in config.values())
    assert env["BOTTLE_GIT_TOKEN_0"] == TOKEN and env["BOTTLE_GIT_CREDENTIAL_ENV"] == "BOTTLE_GIT_TOKEN_0"
    assert env["BOTTLE_GIT_CREDENTIAL_HOST"] == "git.example.test"
    assert env["HOME"] == s.home and env["GIT_TERMINAL_PROMPT"] == "0"
    assert "GIT_DIR" not in env and "SSH_AUTH_SOCK" not in env
    assert config["http.followRedirects"] == "false" and config["protocol.allow"] == "never"
    assert config["protocol.https.allow"] == "always" and "protocol.http.allow" not in config


def test_git_holding_the_token_ignores_hooks_proxy_and_tls_settings_a_push_could_leave(tmp_path: Path) -> None:
    """A repository's config is the bottle's to influence; the gate's upstream git must not obey it."""
    import subprocess

    s = GateSettings.from_env(settings_env(tmp_path, BOTTLE_GIT_TOKEN_0=TOKEN))
    env = upstream_env(s, ORIGIN, inherit={"PATH": os.environ["PATH"]})
    repo, hooks, marker = tmp_path / "repo.git", tmp_path / "evil-hooks", tmp_path / "hook-ran"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True, env=env)
    hooks.mkdir()
    (hooks / "reference-transaction").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (hooks / "reference-transaction").chmod(0o755)
    for key, value in (("core.hooksPath", str(hooks)), ("http.sslVerify", "false"), ("http.proxy", "http://attacker:3128")):
        subprocess.run(["git", "-C", str(repo), "config", key, value], check=True)

    def effective(key: str) -> str:
        return subprocess.run(["git", "-C", str(repo), "config", "--get", key], env=env, capture_output=True, text=True).stdout.strip()

    assert (effective("http.sslVerify"), effective("http.proxy")) == ("true", "")
    blob = subprocess.run(["git", "-C", str(repo), "hash-object", "-w", "--stdin"], input="x", env=env,
                          capture_output=True, text=True, check=True).stdout.strip()
    tree = subprocess.run(["git", "-C", str(repo), "mktree"], input=f"100644 blob {blob}\tf\n", env=env,
                          capture_output=True, text=True, check=True).stdout.strip()
    commit = subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit-tree", tree, "-m", "m"],
                            env=env, capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["git", "-C", str(repo), "update-ref", "refs/heads/main", commit], env=env, check=True)
    assert not marker.exists(), "a hook the repository's config named ran in git holding the token"


def test_upstream_env_pins_the_credential_to_the_upstreams_port(tmp_path: Path) -> None:
    remote = GateRemote("origin", "https://Git.Example.test:8443/org/repo.git", "BOTTLE_GIT_TOKEN_0")
    s = GateSettings.from_env(settings_env(tmp_path, BOTTLE_GIT_TOKEN_0=TOKEN, BOTTLE_GIT_REMOTES=encode_gate_config([remote])))
    env = upstream_env(s, remote, inherit={"PATH": "/usr/bin"})
    assert env["BOTTLE_GIT_CREDENTIAL_HOST"] == "git.example.test:8443"
    assert credential.answer("get", "protocol=https\nhost=git.example.test:8443\n", env) == ANSWER
    assert credential.answer("get", "protocol=https\nhost=git.example.test\n", env) == ""


def test_upstream_env_refuses_without_a_token(tmp_path: Path) -> None:
    s = GateSettings.from_env(settings_env(tmp_path))
    with pytest.raises(GateError, match="no credential for remote 'origin'"):
        upstream_env(s, ORIGIN)


def test_local_env_trusts_the_gates_own_repositories(tmp_path: Path) -> None:
    s = GateSettings.from_env(settings_env(tmp_path))
    env = local_env(s, {"PATH": "/bin", "GIT_CONFIG_PARAMETERS": "'core.hooksPath'='/tmp/evil'"})
    assert "GIT_CONFIG_PARAMETERS" not in env
    assert env["GIT_CONFIG_KEY_0"] == "safe.directory" and env["GIT_CONFIG_VALUE_0"] == "*"


def test_prepare_runtime_makes_configured_bare_repos_and_the_hook(tmp_path: Path) -> None:
    s = GateSettings.from_env(settings_env(tmp_path, BOTTLE_GIT_TOKEN_0=TOKEN))
    prepare_runtime(s)
    prepare_runtime(s)  # idempotent
    repo = Path(s.repo(ORIGIN))
    config = (repo / "config").read_text()
    assert "bare = true" in config and "receivepack = true" in config and s.hooks_dir in config
    assert TOKEN not in config and "credential" not in config
    hook = Path(s.hooks_dir) / "pre-receive"
    assert os.access(hook, os.X_OK) and "bottle.sidecars.git_gate.hook" in hook.read_text()
    # The hook finds the server by the socket on its command line, not through its environment.
    assert s.hook_socket in hook.read_text() and "$" not in hook.read_text()


def test_prepare_runtime_refuses_a_runtime_dir_too_long_for_the_hook_socket(tmp_path: Path) -> None:
    s = GateSettings.from_env(settings_env(tmp_path, BOTTLE_RUNTIME_DIR=str(tmp_path / ("r" * 120))))
    with pytest.raises(GateError, match="hook socket path"):
        prepare_runtime(s)


# -- what goes upstream -----------------------------------------------------------------


def test_upstream_push_argv_forces_only_what_the_rules_let_through_and_leases_it() -> None:
    updates = [
        PushRefUpdate("refs/heads/main", A, B),
        PushRefUpdate("refs/heads/topic", A, B),
        PushRefUpdate("refs/heads/new", ZERO, B),
        PushRefUpdate("refs/heads/old", A, ZERO),
        PushRefUpdate("refs/tags/v1", ZERO, A),
    ]
    argv = upstream_push_argv(ORIGIN, updates, {"refs/heads/main": True, "refs/heads/topic": False})
    assert argv[:5] == ["git", "push", "--porcelain", "--no-verify", "--no-recurse-submodules"]
    assert "--atomic" in argv
    assert f"--force-with-lease=refs/heads/topic:{A}" in argv
    assert f"--force-with-lease=refs/heads/old:{A}" in argv
    assert not any(a.startswith("--force-with-lease=refs/heads/main") for a in argv)
    assert argv[-6:] == [
        ORIGIN.upstream,
        f"{B}:refs/heads/main",
        f"+{B}:refs/heads/topic",
        f"{B}:refs/heads/new",
        ":refs/heads/old",
        f"{A}:refs/tags/v1",
    ]
    single = upstream_push_argv(ORIGIN, updates[:1], {"refs/heads/main": True})
    assert "--atomic" not in single
