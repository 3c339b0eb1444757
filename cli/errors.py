"""The one place where an exception becomes what the user reads.

    BottleError      -> "error: <message>" [+ "engine: ..."] [+ "hint: ..."], its exit code
    click usage      -> "error: <message>" + "hint: run `<cmd> --help`", exit 2
    KeyboardInterrupt-> "interrupted", exit 130
    anything else    -> one line + "this is a bug" hint, exit 1; the traceback
                        only with BOTTLE_DEBUG=1

Everything printed goes through ``redact`` first: a message that somehow
carries a known token shape loses it.
"""

from __future__ import annotations

import os
import sys
import traceback

import click

from bottle.ports.errors import BottleError, BuildFailed, RuntimeFailure

EXIT_INTERRUPTED = 130
EXIT_BUG = 1
# click >= 8.2 raises this for a group run without a command; its message is the help.
_NO_ARGS_IS_HELP: tuple[type[BaseException], ...] = tuple(
    t for t in (getattr(click.exceptions, "NoArgsIsHelpError", None),) if t is not None
)
BUG_HINT = "this is a bug in bottle; rerun with BOTTLE_DEBUG=1 for the traceback and report it"


def redact(text: str) -> str:
    """``text`` with anything shaped like a known secret replaced by ``[redacted]``."""
    from bottle.core.manifest_load import redact_secrets  # noqa: PLC0415 - errors are rare; keep --help light

    return redact_secrets(text)


def _say(prefix: str, text: str) -> None:
    from bottle.cli.display import printable  # noqa: PLC0415

    # A message can quote what a bottle wrote (a refused proposal's field name): no escape reaches the terminal.
    lines = printable(redact(text)).splitlines() or [""]
    click.echo(f"{prefix}: {lines[0]}", err=True)
    indent = " " * (len(prefix) + 2)
    for line in lines[1:]:
        click.echo(f"{indent}{line}", err=True)


def debug_enabled() -> bool:
    return os.environ.get("BOTTLE_DEBUG", "") not in ("", "0")


def report_error(exc: BaseException) -> int:
    """Print ``exc`` for a user on stderr; return the exit code to use."""
    if isinstance(exc, BottleError):
        _say("error", " ".join(exc.message.splitlines()))
        if isinstance(exc, RuntimeFailure) and exc.engine_message:
            _say("engine", exc.engine_message.strip())
        if isinstance(exc, BuildFailed) and exc.log_tail:
            _say("build", "\n".join(exc.log_tail[-10:]))
        if exc.hint:
            _say("hint", exc.hint)
        if debug_enabled():
            traceback.print_exception(exc, file=sys.stderr)
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    if isinstance(exc, _NO_ARGS_IS_HELP):
        click.echo(exc.format_message(), err=True)  # `bottle` alone: the help itself
        return exc.exit_code
    if isinstance(exc, click.ClickException):
        _say("error", exc.format_message())
        ctx = getattr(exc, "ctx", None)
        if isinstance(exc, click.UsageError) and ctx is not None:
            _say("hint", f"run `{ctx.command_path} --help` for usage")
        return exc.exit_code
    first_line = (str(exc).splitlines() or [""])[0][:200]
    _say("error", f"unexpected {type(exc).__name__}" + (f": {first_line}" if first_line else ""))
    _say("hint", BUG_HINT)
    if debug_enabled():
        traceback.print_exception(exc, file=sys.stderr)
    return EXIT_BUG
