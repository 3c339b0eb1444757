"""Token references: where a host-side secret comes from.

A ``token_ref`` in the manifest is one of

    NAME            an environment variable on the host (``ANTHROPIC_API_KEY``)
    env:NAME        the same, spelled out
    file:PATH       a file on the host (``~`` expands; relative to the manifest
                    that declares it)

The reference is not a secret and may appear in plans, logs and errors;
the value it points at never does.
"""

from __future__ import annotations

import re

import msgspec

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class TokenRef(msgspec.Struct, frozen=True):
    kind: str  # "env" | "file"
    name: str  # variable name, or the file path as written

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


def parse_token_ref(text: str) -> TokenRef:
    """Parse a ``token_ref`` string; raise ``ValueError`` saying what is expected."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("expected an environment variable name, 'env:NAME' or 'file:PATH'")
    text = text.strip()
    if text.startswith("file:"):
        path = text[len("file:"):]
        if not path:
            raise ValueError("'file:' needs a path, e.g. 'file:~/.config/tokens/github'")
        return TokenRef("file", path)
    name = text[len("env:"):] if text.startswith("env:") else text
    if not _ENV_NAME.match(name):
        raise ValueError(
            f"{text!r} is not an environment variable name; expected NAME, 'env:NAME' or 'file:PATH'"
        )
    return TokenRef("env", name)
