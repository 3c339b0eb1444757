"""What a bottle wrote, shown to a person: ``printable`` and the dashboard's ``AuditTail``."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bottle.cli.dashboard import AUDIT_TAIL_BYTES, AuditTail
from bottle.cli.display import json_text, literal, one_line, printable

# What a terminal acts on: C0 but \t \n, DEL, C1, bidi controls, line separators, surrogates.
UNSAFE = {
    *map(chr, range(0x00, 0x09)), *map(chr, range(0x0B, 0x20)), *map(chr, range(0x7F, 0xA0)),
    "\u061c", "\u200e", "\u200f", "\u2028", "\u2029", *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A)),
}

ATTACKS = {
    "\x1b[2J\x1b[H": "\\x1b[2J\\x1b[H",  # clear the screen, cursor home
    "\x1b]52;c;aGVsbG8=\x07": "\\x1b]52;c;aGVsbG8=\\x07",  # OSC 52: set the clipboard
    "ok\rfake": "ok\\x0dfake",  # rewrite the line
    "\x1b[1A\x1b[2K": "\\x1b[1A\\x1b[2K",  # up a line, erase it
    "\x9b31m": "\\x9b31m",  # 8-bit CSI
    "abc\u202edef": "abc\\u202edef",  # right-to-left override
    "\u2066x\u2069": "\\u2066x\\u2069",
    "\x7f\x08": "\\x7f\\x08",
    "\ud800": "\\ud800",  # cannot even be encoded for the terminal
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_printable_shows_each_escape_sequence_as_text(attack: str) -> None:
    assert printable(attack) == ATTACKS[attack]


def test_printable_keeps_newlines_tabs_and_ordinary_unicode() -> None:
    text = "line 1\n\tindented: café, 日本語, emoji 🙂, [/nope] [on black]x[/]"
    assert printable(text) == text
    assert one_line("a\nb\tc\x1b", 4) == "a b "


@given(st.text())
def test_printable_output_never_holds_a_character_a_terminal_acts_on(text: str) -> None:
    shown = printable(text)
    assert not UNSAFE & set(shown)
    if not UNSAFE & set(text):
        assert shown == text


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"])))
def test_json_text_decodes_to_the_same_value_with_nothing_raw(text: str) -> None:
    encoded = json_text(json.dumps({"reason": text}, ensure_ascii=False))
    assert json.loads(encoded) == {"reason": text}
    assert not UNSAFE & set(encoded)


def test_literal_is_never_parsed_as_markup() -> None:
    shown = literal("[/nope] [on black][black]hidden[/][/] \x1b[2J")
    assert shown.plain == "[/nope] [on black][black]hidden[/][/] \\x1b[2J"
    assert not shown.spans


# -- AuditTail -------------------------------------------------------------------------------


def line(role: str, reason: str, time: str = "2026-11-26T12:00:01Z") -> str:
    return json.dumps({"time": time, "role": role, "verdict": "deny", "host": "x.example", "reason": reason}) + "\n"


def read_guarded(tail: AuditTail) -> list[str]:
    """``tail.read()`` in a thread; fails instead of hanging if it blocks."""
    result: list[list[str]] = []
    worker = threading.Thread(target=lambda: result.append(tail.read()), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "AuditTail.read() blocked"
    return result[0]


@pytest.fixture
def audit(tmp_path: Path) -> Path:
    d = tmp_path / "audit"
    d.mkdir()
    return d


def test_reads_the_hosts_and_each_sidecars_own_directory_keyed_by_path(audit: Path) -> None:
    (audit / "guard").mkdir()
    (audit / "egress").mkdir()
    (audit / "supervise.jsonl").write_text(line("supervise-host", "top"))
    (audit / "guard" / "guard.jsonl").write_text(line("guard", "first"))
    # same file name in two places: two logs, two offsets
    (audit / "egress" / "guard.jsonl").write_text(line("egress", "other"))
    tail = AuditTail(str(audit))
    shown = read_guarded(tail)
    assert len(shown) == 3 and all(any(w in s for s in shown) for w in ("top", "first", "other"))
    assert read_guarded(tail) == []
    with (audit / "guard" / "guard.jsonl").open("a") as fh:
        fh.write(line("guard", "second"))
        fh.write('{"role": "guard", "reason": "half a li')  # not complete yet
    (shown,) = read_guarded(tail)
    assert "second" in shown
    with (audit / "guard" / "guard.jsonl").open("a") as fh:
        fh.write('ne"}\n')
    assert [s.endswith("half a line") for s in read_guarded(tail)] == [True]


def test_a_planted_fifo_does_not_hang_it_and_the_other_logs_are_read(audit: Path) -> None:
    (audit / "guard").mkdir()
    os.mkfifo(audit / "guard" / "guard.jsonl")
    os.mkfifo(audit / "trap.jsonl")
    os.mkfifo(audit / "trap")  # where a sidecar's directory would be
    (audit / "egress").mkdir()
    (audit / "egress" / "egress.jsonl").write_text(line("egress", "still shown"))
    shown = read_guarded(AuditTail(str(audit)))
    assert len(shown) == 1 and "still shown" in shown[0]


def test_symlinks_to_files_or_directories_are_not_followed(audit: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "host.jsonl").write_text(line("host", "private host file"))
    (audit / "guard").mkdir()
    (audit / "guard" / "guard.jsonl").symlink_to(outside / "host.jsonl")
    (audit / "link.jsonl").symlink_to(outside / "host.jsonl")
    (audit / "egress").symlink_to(outside)
    (audit / "git").mkdir()
    (audit / "git" / "git.jsonl").write_text(line("git", "real"))
    shown = read_guarded(AuditTail(str(audit)))
    assert len(shown) == 1 and "real" in shown[0]


def test_hostile_audit_lines_come_out_printable(audit: Path) -> None:
    (audit / "egress").mkdir()
    (audit / "egress" / "egress.jsonl").write_text(
        line("egress", "\x1b]52;c;aGVsbG8=\x07 \u202eevil") + "\x1b[2J not json \x9b\n"
    )
    shown = read_guarded(AuditTail(str(audit)))
    assert len(shown) == 2
    assert not UNSAFE & set("".join(shown))
    assert any("\\x1b]52;c;aGVsbG8=\\x07 \\u202eevil" in s for s in shown)
    assert any("\\x1b[2J not json \\x9b" in s for s in shown)


def test_a_large_log_is_read_from_its_end_starting_on_a_whole_line(audit: Path) -> None:
    (audit / "guard").mkdir()
    log = audit / "guard" / "guard.jsonl"
    one = line("guard", "n" * 100)
    log.write_text(one * (3 * AUDIT_TAIL_BYTES // len(one)))
    tail = AuditTail(str(audit))
    shown = read_guarded(tail)
    assert 0 < len(shown) <= AUDIT_TAIL_BYTES // len(one)
    assert all(s.startswith("12:00:01 guard deny") for s in shown)
    # a line longer than the window is skipped whole, and what follows is read
    with log.open("a") as fh:
        fh.write("x" * (2 * AUDIT_TAIL_BYTES) + "\n" + line("guard", "after"))
    shown = read_guarded(tail)
    assert shown and all(s.startswith("12:00:01 guard deny") for s in shown) and "after" in shown[-1]
