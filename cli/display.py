"""Text a bottle wrote, made safe to show a person in a terminal or a terminal UI.

An agent writes proposal reasons, Dockerfiles, host names and (through the
sidecars) audit lines; the operator reads them. Shown raw, a control
character could clear the screen, rewrite the line above, set the clipboard
(OSC 52) or reorder what is read (bidi overrides); parsed as textual/rich
markup, a bracket could hide text, fake a line of the UI or crash it. So
every such string goes through ``printable`` before a terminal sees it, and
through ``literal`` before a widget does.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import Text

# C0 (but \t and \n), DEL, C1, the bidi marks, embeddings, overrides and
# isolates, the line/paragraph separators, and lone surrogates (which cannot
# even be encoded for the terminal: printing one would crash the command).
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
# The same set minus C0, which JSON encoders already escape.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every character that could drive a terminal shown as an escape (ESC -> ``\\x1b``).

    Keeps newlines and tabs; replaces C0 and C1 control characters, DEL,
    Unicode bidi controls (U+202A..U+202E, U+2066..U+2069, and the marks),
    U+2028/U+2029 and lone surrogates. Nothing in the result moves the
    cursor, hides text or talks to the terminal.
    """
    return _UNSAFE.sub(_escape, text)


def one_line(text: str, limit: int | None = None) -> str:
    """``printable(text)`` on one line (newlines and tabs become spaces), cut to ``limit`` characters."""
    flat = printable(text).replace("\n", " ").replace("\t", " ")
    return flat if limit is None else flat[:limit]


def json_text(encoded: str) -> str:
    """JSON ``encoded`` with the characters a JSON encoder leaves raw (DEL, C1, bidi) as ``\\uXXXX``.

    Such characters can only occur inside JSON strings, where the escape
    means the same character: the document decodes to the same value.
    """
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", encoded)


def literal(text: str) -> Text:
    """``printable(text)`` as a rich ``Text``: textual shows it as is, never parsing it as markup."""
    from rich.text import Text  # noqa: PLC0415 - only the dashboard needs rich

    return Text(printable(text), end="")
