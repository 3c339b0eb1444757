"""Progress for long work: a live status line on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from bottle.cli.display import literal, one_line, printable
from bottle.ports.runtime import ProgressEvent


@contextmanager
def progress(title: str) -> Iterator[Callable[[ProgressEvent], None]]:
    """Yield a callback that shows each ``ProgressEvent`` under ``title``.

    On a terminal, rich keeps one spinner line updated in place; in a log
    (CI, a pipe) every event is one line on stderr, so the log tells what
    happened last when something hangs. Build output can come from a
    Dockerfile an agent wrote: it is shown literally, never as markup or
    terminal control sequences.
    """
    if not sys.stderr.isatty():
        print(f"{title} ...", file=sys.stderr, flush=True)

        def plain(event: ProgressEvent) -> None:
            if event.message.strip():
                print(f"  {printable(event.message.rstrip())}", file=sys.stderr, flush=True)

        yield plain
        return

    from rich.console import Console  # noqa: PLC0415 - rich costs ~50 ms; only for long work

    console = Console(stderr=True)
    with console.status(title) as status:

        def live(event: ProgressEvent) -> None:
            text = event.message.strip()
            if text:
                step = f"[{event.step}/{event.total}] " if event.step and event.total else ""
                status.update(literal(f"{title}: {step}{one_line(text, 100)}"))

        yield live
    console.print(literal(f"{title}: done"))
