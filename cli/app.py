"""The click application: global options, the lazy command registry, the error edge.

Command modules are imported only when their command runs (or its own
``--help`` is asked for): ``bottle --help`` lists every command from the
registry below without importing any of them, so it stays fast and a broken
or missing module cannot break it.

Registering a command: write ``bottle/cli/<name>.py`` defining a click
command (or group) object, and add one line to ``LAZY_COMMANDS``:

    "doctor": LazyCommand("bottle.cli.doctor:doctor", "Check which engines answer."),

Embedding programs and plugins can call ``cli.add_lazy_command(...)``.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import click

from bottle.cli.errors import report_error

if TYPE_CHECKING:
    from bottle.cli.wiring import Container

RUNTIME_CHOICES = ("docker", "podman")


class LazyCommand(NamedTuple):
    """Where a command lives (``"module:attribute"``) and its one-line help."""

    import_path: str
    short_help: str


LAZY_COMMANDS: dict[str, LazyCommand] = {
    "start": LazyCommand("bottle.cli.start:start", "Start an agent in a new bottle (--dry-run shows the plan)."),
    "info": LazyCommand("bottle.cli.info:info", "Show what an agent is declared to get."),
    "doctor": LazyCommand("bottle.cli.doctor:doctor", "Check which container engines answer and what is set up."),
    "images": LazyCommand("bottle.cli.images:images", "Build or bootstrap the images bottle needs."),
    "egress": LazyCommand("bottle.cli.egress:egress", "Try an agent's egress policy on a request, offline."),
    "resume": LazyCommand("bottle.cli.resume:resume", "Relaunch a bottle whose state was kept, by its identity."),
    "ls": LazyCommand("bottle.cli.ls:ls", "List bottles: running, starting, preserved or left behind."),
    "cleanup": LazyCommand("bottle.cli.cleanup:cleanup", "Remove what stopped or crashed bottles left behind (by label)."),
    "proposals": LazyCommand("bottle.cli.proposals:proposals", "List, approve or reject what agents proposed (supervise)."),
    "dashboard": LazyCommand("bottle.cli.dashboard:dashboard", "Watch every bottle and decide proposals in a terminal UI."),
}


@functools.cache
def bottle_version() -> str:
    """The installed package's version."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415 - ~20 ms; only when needed

    try:
        return version("bottle")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass
class AppState:
    """What the root command hands every subcommand (``ctx.obj``).

    ``container`` is the dependency-injector container; built on first use
    unless a test or an embedding program passes one in
    (``cli.main(args, obj=AppState(container=my_container))``).
    """

    runtime: str | None = None
    manifest: str | None = None
    container: Container | None = None

    def get_container(self) -> Container:
        if self.container is None:
            from bottle.cli.wiring import create_container  # noqa: PLC0415 - dependency-injector is ~80 ms

            self.container = create_container()
        return self.container


def _unavailable_command(name: str, spec: LazyCommand, reason: str) -> click.Command:
    def fail() -> None:
        from bottle.ports.errors import BottleError  # noqa: PLC0415

        raise BottleError(
            f"`bottle {name}` is not available in this installation ({reason})",
            hint="reinstall bottle (pip install -e . in a checkout); BOTTLE_DEBUG=1 shows more",
        )

    return click.Command(
        name,
        callback=fail,
        short_help=spec.short_help,
        help=spec.short_help,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


class LazyGroup(click.Group):
    """A group whose commands are imported on first use, with help from a registry."""

    def __init__(self, *args: Any, lazy_commands: Mapping[str, LazyCommand] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands: dict[str, LazyCommand] = dict(lazy_commands or {})

    def add_lazy_command(self, name: str, import_path: str, short_help: str) -> None:
        """Register ``name`` as the command object at ``import_path`` (``module:attribute``)."""
        self.lazy_commands[name] = LazyCommand(import_path, short_help)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        spec = self.lazy_commands.get(cmd_name)
        if spec is None:
            return None
        module_name, _, attribute = spec.import_path.partition(":")
        try:
            command = getattr(importlib.import_module(module_name), attribute)
        except Exception as exc:  # a missing or broken module must not take the CLI down
            reason = f"{module_name}: {type(exc).__name__}: {exc}"
            return _unavailable_command(cmd_name, spec, reason)
        if not isinstance(command, click.Command):
            return _unavailable_command(cmd_name, spec, f"{spec.import_path} is not a click command")
        self.commands[cmd_name] = command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows: list[tuple[str, str]] = []
        limit = formatter.width - 6 - max((len(n) for n in self.list_commands(ctx)), default=0)
        for name in self.list_commands(ctx):
            if name in self.commands:
                command = self.commands[name]
                if command.hidden:
                    continue
                rows.append((name, command.get_short_help_str(limit)))
            else:
                rows.append((name, self.lazy_commands[name].short_help))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            from bottle.core.errors import did_you_mean  # noqa: PLC0415

            suggestion = did_you_mean(name, self.list_commands(ctx))
            message = f"no command {name!r}"
            if suggestion:
                message += f"; did you mean {suggestion!r}?"
            raise click.UsageError(message, ctx)
        return super().resolve_command(ctx, args)


class BottleGroup(LazyGroup):
    """The root group: every error of every command is reported by ``cli.errors``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except (Exception, KeyboardInterrupt) as exc:
            ctx.exit(report_error(exc))

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            sys.exit(report_error(KeyboardInterrupt()))
        except click.ClickException as exc:
            sys.exit(report_error(exc))
        except KeyboardInterrupt as exc:
            sys.exit(report_error(exc))
        sys.exit(rv if isinstance(rv, int) else 0)


def _set_manifest(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.ensure_object(AppState).manifest = value


def manifest_option(command: Any) -> Any:
    """``--manifest PATH`` on a subcommand too (``bottle start X --manifest m.json``)."""
    return click.option(
        "--manifest",
        metavar="PATH",
        expose_value=False,
        callback=_set_manifest,
        help="Extra manifest: a .json file, a .md agent file or a directory of them.",
    )(command)


def _show_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"bottle {bottle_version()}")
        ctx.exit(0)


@click.group(
    cls=BottleGroup,
    lazy_commands=LAZY_COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--runtime",
    type=click.Choice(RUNTIME_CHOICES, case_sensitive=False),
    envvar="BOTTLE_RUNTIME",
    help="Container engine to use [env: BOTTLE_RUNTIME; default: whichever answers, Docker first].",
)
@click.option(
    "--manifest",
    metavar="PATH",
    envvar="BOTTLE_MANIFEST",
    help="Extra manifest: a .json file, a .md agent file or a directory of them [env: BOTTLE_MANIFEST].",
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_show_version,
    help="Show the version and exit.",
)
@click.pass_context
def cli(ctx: click.Context, runtime: str | None, manifest: str | None) -> None:
    """Run an AI coding agent in a container that cannot leak what it must not leak."""
    state = ctx.ensure_object(AppState)
    if runtime:
        state.runtime = runtime.lower()
    if manifest:
        state.manifest = manifest
