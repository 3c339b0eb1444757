"""The click app: lazy command registry, --version, and the error edge."""

from __future__ import annotations

import sys
import types

import click
import pytest
from click.testing import CliRunner

from bottle.cli.app import LAZY_COMMANDS, BottleGroup, LazyGroup, bottle_version, cli
from bottle.cli.errors import BUG_HINT, EXIT_INTERRUPTED, redact
from bottle.ports.errors import BuildFailed, EngineUnreachable, InputError

SECRET = "sk-ant-api03-" + "w" * 40


def invoke(group: click.Group, *args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(group, list(args), env=env)


# -- help and registry ------------------------------------------------------


def test_help_lists_every_registered_command_with_its_short_help() -> None:
    result = invoke(cli, "--help")
    assert result.exit_code == 0
    for name, spec in LAZY_COMMANDS.items():
        assert f"{name}  " in result.stdout
        assert spec.short_help[:30] in result.stdout
    assert "--runtime [docker|podman]" in result.stdout and "--manifest PATH" in result.stdout


def test_version() -> None:
    result = invoke(cli, "--version")
    assert result.exit_code == 0
    assert result.stdout == f"bottle {bottle_version()}\n"
    assert bottle_version()[0].isdigit()


def make_group() -> BottleGroup:
    @click.group(cls=BottleGroup)
    def group() -> None:
        """A test group."""

    return group  # type: ignore[return-value]


def test_a_missing_module_does_not_break_help_and_fails_clearly_when_run() -> None:
    group = make_group()
    group.add_lazy_command("ghost", "bottle.cli.no_such_module:ghost", "Haunt the tests.")
    listing = invoke(group, "--help")
    assert listing.exit_code == 0 and "ghost  Haunt the tests." in listing.stdout
    result = invoke(group, "ghost", "--some", "args")
    assert result.exit_code == 1
    assert "error: `bottle ghost` is not available" in result.stderr
    assert "No module named 'bottle.cli.no_such_module'" in result.stderr
    assert "hint: " in result.stderr


def test_a_lazy_command_is_imported_only_when_run(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("bottle_test_lazy_mod")

    @click.command("hello")
    def hello() -> None:
        click.echo("hello from the lazy module")

    module.hello = hello  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bottle_test_lazy_mod", module)
    group = make_group()
    group.add_lazy_command("hello", "bottle_test_lazy_mod:hello", "Say hello.")
    assert "hello" not in group.commands  # registered, not loaded
    assert invoke(group, "--help").exit_code == 0
    assert "hello" not in group.commands  # help did not load it
    result = invoke(group, "hello")
    assert result.stdout == "hello from the lazy module\n"
    assert group.commands["hello"] is hello


def test_an_attribute_that_is_not_a_command_is_reported() -> None:
    group = make_group()
    group.add_lazy_command("odd", "bottle.cli.app:LAZY_COMMANDS", "Not a command.")
    result = invoke(group, "odd")
    assert result.exit_code == 1 and "is not a click command" in result.stderr


def test_unknown_command_suggests_the_closest() -> None:
    result = invoke(cli, "strat")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: no command 'strat'; did you mean 'start'?",
        "hint: run `cli --help` for usage",
    ]


def test_lazy_group_without_the_error_edge_still_lists_commands() -> None:
    @click.group(cls=LazyGroup, lazy_commands={"x": LAZY_COMMANDS["info"]})
    def plain() -> None:
        pass

    assert "x  Show what an agent" in invoke(plain, "--help").stdout


# -- the error edge ---------------------------------------------------------


def failing_group(exc: BaseException) -> BottleGroup:
    group = make_group()

    @group.command("boom")
    def boom() -> None:
        raise exc

    return group


def test_input_error_is_one_line_plus_hint_with_exit_2() -> None:
    result = invoke(failing_group(InputError("the manifest is wrong", hint="fix it")), "boom")
    assert result.exit_code == 2
    assert result.stderr == "error: the manifest is wrong\nhint: fix it\n"
    assert result.stdout == ""


def test_runtime_failure_adds_the_engines_own_words() -> None:
    exc = EngineUnreachable("docker does not answer", hint="start dockerd", engine_message="connection refused")
    result = invoke(failing_group(exc), "boom")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: docker does not answer", "engine: connection refused", "hint: start dockerd"]


def test_build_failure_shows_the_build_tail() -> None:
    exc = BuildFailed("build of x failed", log_tail=("step 1", "E: package not found"))
    result = invoke(failing_group(exc), "boom")
    assert "build: step 1" in result.stderr and "E: package not found" in result.stderr


def test_multi_line_hints_are_indented() -> None:
    result = invoke(failing_group(InputError("bad", hint="do this:\n  {\"a\": 1}")), "boom")
    assert result.stderr.splitlines() == ["error: bad", "hint: do this:", '        {"a": 1}']


def test_keyboard_interrupt_exits_130() -> None:
    result = invoke(failing_group(KeyboardInterrupt()), "boom")
    assert result.exit_code == EXIT_INTERRUPTED
    assert result.stderr == "interrupted\n"


def test_unexpected_exception_is_one_line_and_a_bug_hint() -> None:
    result = invoke(failing_group(ZeroDivisionError("division by zero")), "boom")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: unexpected ZeroDivisionError: division by zero", f"hint: {BUG_HINT}"]
    assert "Traceback" not in result.output


def test_bottle_debug_shows_the_traceback() -> None:
    result = invoke(failing_group(ZeroDivisionError("division by zero")), "boom", env={"BOTTLE_DEBUG": "1"})
    assert "Traceback (most recent call last)" in result.stderr


def test_errors_never_print_a_secret_shape() -> None:
    result = invoke(failing_group(ValueError(f"bad token {SECRET}")), "boom")
    assert SECRET not in result.output
    assert "[redacted]" in result.stderr
    assert redact(f"x {SECRET} y") == "x [redacted] y"


def test_bottle_alone_shows_the_help() -> None:
    result = invoke(cli)
    assert "Usage:" in result.output and "start" in result.output
    assert "error:" not in result.output
