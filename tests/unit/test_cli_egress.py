"""`bottle egress check`: the chain's verdict on one request, without an engine or a network."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from bottle.cli.app import AppState, BottleGroup
from bottle.cli.egress import egress
from bottle.cli.wiring import create_container

ROOT = Path(__file__).resolve().parents[2]
CLAUDE = str(ROOT / "docs" / "examples" / "claude-code.json")
GIT = str(ROOT / "docs" / "examples" / "generic-git.json")
KEY = "sk-ant-api03-" + "Vb7Nm3Kq9Lp2Wx5Zr8Ty4Hj6" * 4


@click.group(cls=BottleGroup)
def app() -> None:
    """The root group, with its error edge, holding only `egress`."""


app.add_command(egress)


class Secrets:
    """A SecretSource holding the Anthropic key."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.read_calls: list[str] = []

    def present(self, kind: str, name: str) -> bool:
        return name in self.values

    def read(self, kind: str, name: str) -> str:
        from bottle.ports.errors import InputError

        self.read_calls.append(name)
        if name not in self.values:
            raise InputError(f"secret {kind}:{name} is not set")
        return self.values[name]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("BOTTLE_MANIFEST", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)


def run(*args: str, secrets: dict[str, str] | None = None, manifest: str = CLAUDE) -> Result:
    container = create_container()
    container.secret_source.override(Secrets(secrets or {}))
    return CliRunner().invoke(app, ["egress", "check", "--manifest", manifest, *args], obj=AppState(container=container))


def as_json(result: Result) -> dict:
    return json.loads(result.stdout)


def test_allowed_host_exits_0() -> None:
    result = run("claude", "https://pypi.org/simple/requests/")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("allow  allowed")
    assert "pypi.org:443 matches 'pypi.org'" in result.stdout


def test_denied_host_exits_1_with_rule_and_how_to_ask() -> None:
    result = run("claude", "https://evil.example/x")
    assert result.exit_code == 1
    assert result.stdout.startswith("deny  host-not-allowed")
    assert "bottle.egress.allow of agent 'claude'" in result.stdout


def test_extra_allow_opens_a_host() -> None:
    assert run("claude", "https://evil.example/x", "--allow", "evil.example").exit_code == 0


def test_private_address_needs_an_explicit_exception() -> None:
    result = run("claude", "http://10.1.2.3/", "--allow", "10.1.2.3", "--format", "json")
    assert result.exit_code == 0  # an IP address listed in allow is explicit
    result = run("claude", "http://127.0.0.1/", "--allow", "example.org", "--format", "json")
    assert as_json(result)["rule"] == "host-not-allowed"


def test_git_push_is_stopped_by_the_egress_proxy_for_a_bottle_with_routes() -> None:
    data = as_json(run("claude", "https://pypi.org/o/r.git/info/refs?service=git-receive-pack", "--format", "json"))
    assert (data["verdict"], data["rule"], data["decided_by"]) == ("deny", "git-push", "egress-proxy")
    data = as_json(run("implementer", "https://github.com/o/r.git/info/refs?service=git-receive-pack", "--format", "json", manifest=GIT))
    assert (data["rule"], data["decided_by"], data["path"]) == ("git-push", "guard", ["guard"])


def test_aws_key_in_query_is_denied_and_redacted_in_the_output() -> None:
    result = run("claude", "https://pypi.org/?k=AKIAIOSFODNN7EXAMPLE", "--format", "json")
    data = as_json(result)
    assert result.exit_code == 1
    assert (data["rule"], data["findings"]) == ("secret-in-url", ["AWS access key id in url"])
    assert "AKIAIOSFODNN7EXAMPLE" not in result.stdout + result.stderr


def test_route_request_gets_the_real_credential_and_passes() -> None:
    result = run(
        "claude",
        "https://api.anthropic.com/v1/messages",
        "-X", "POST",
        "-H", "x-api-key: bottle-placeholder-not-a-secret",
        "-d", '{"model": "x"}',
        "--format", "json",
        secrets={"ANTHROPIC_API_KEY": KEY},
    )
    data = as_json(result)
    assert result.exit_code == 0, result.output
    assert data["route"] == "https://api.anthropic.com" and data["credential_injected"] is True
    assert data["secrets_missing"] == []
    assert KEY not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ("https://pypi.org/?k={key}",),
        ("https://pypi.org/", "-H", "X-Debug: {key}"),
        ("https://pypi.org/", "-d", "payload={key}"),
        ("https://api.anthropic.com/v1/messages", "-d", '{{"echo": "{key}"}}'),  # its route, but the body
    ],
)
def test_the_bottles_own_secret_is_denied_anywhere_but_its_route_and_never_printed(args: tuple[str, ...]) -> None:
    filled = [a.format(key=KEY) for a in args]
    for fmt in ("text", "json"):
        result = run("claude", *filled, "--format", fmt, secrets={"ANTHROPIC_API_KEY": KEY})
        assert result.exit_code == 1, result.output
        assert KEY not in result.output
        assert "BOTTLE_TOKEN_0" in result.output or "Anthropic API key" in result.output


def test_secret_on_its_route_in_the_agents_own_header_is_stripped_not_sent() -> None:
    # The egress proxy removes the agent's x-api-key and injects the real one.
    result = run("claude", "https://api.anthropic.com/v1/messages", "-H", f"x-api-key: {KEY}", "-d", "{}", secrets={"ANTHROPIC_API_KEY": KEY})
    assert result.exit_code == 0


def test_missing_route_secret_is_noted_and_no_secrets_skips_reading() -> None:
    result = run("claude", "https://pypi.org/")
    assert "note: env:ANTHROPIC_API_KEY is not set here" in result.stdout
    container = create_container()
    source = Secrets({"ANTHROPIC_API_KEY": KEY})
    container.secret_source.override(source)
    CliRunner().invoke(app, ["egress", "check", "--manifest", CLAUDE, "claude", "https://pypi.org/", "--no-secrets"], obj=AppState(container=container))
    assert source.read_calls == []


def test_body_from_a_file(tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text('{"k": "AKIAIOSFODNN7EXAMPLE"}')
    data = as_json(run("claude", "https://pypi.org/", "-d", f"@{body}", "--format", "json"))
    assert (data["rule"], data["request"]["method"]) == ("secret-in-body", "POST")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("claude", "ftp://pypi.org/"), "only http:// and https://"),
        (("claude", "https://pypi.org/", "-H", "no colon"), "is not 'Name: value'"),
        (("nobody", "https://pypi.org/"), "no agent named 'nobody'"),
        (("claude", "https://pypi.org/", "--allow", "*"), "invalid host pattern"),
        (("claude", "https://pypi.org/", "--allow-private", "10.0.0.1/8"), "10.0.0.1/8"),
        (("claude", "https://pypi.org/", "-d", "@/no/such/file"), "cannot read the body file"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_importing_the_command_loads_no_mitmproxy_or_engine_sdk() -> None:
    import subprocess

    code = (
        "import sys; import bottle.cli.egress, bottle.core.egress_policy, bottle.core.secretscan; "
        "bad = [m for m in ('mitmproxy', 'docker', 'podman') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
