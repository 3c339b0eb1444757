"""Build progress shows what a Dockerfile printed literally: no markup, no terminal control sequences."""

from __future__ import annotations

import io
import sys

import pytest

from bottle.cli.progress import progress
from bottle.ports.runtime import ProgressEvent

HOSTILE = ["[/x] closing tag of nothing", "[on black][black]hidden[/][/]", "\x1b]52;c;Zm9v\x07 clipboard", "\x1b[2J\x1b[H cleared"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [False, True])
def test_hostile_build_output_is_shown_literally_and_does_not_abort_the_build(monkeypatch: pytest.MonkeyPatch, tty: bool) -> None:
    err = Terminal() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with progress("building localhost/bottle-agent-x") as report:
        for i, line in enumerate(HOSTILE, 1):
            report(ProgressEvent(line, step=i, total=len(HOSTILE)))
    out = err.getvalue()
    assert "building localhost/bottle-agent-x" in out
    assert "\x1b]52" not in out and "\x1b[2J" not in out and "\x07" not in out
    if not tty:
        assert "[/x] closing tag of nothing" in out and "\\x1b]52;c;Zm9v\\x07 clipboard" in out
