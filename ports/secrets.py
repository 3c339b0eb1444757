"""The ``SecretSource`` port: where host-side secrets come from.

A token reference (``token_ref`` in the manifest) names an environment
variable or a file on the host. The core only ever asks whether a secret is
*present*; the value is read at launch time by the code that hands it to the
one sidecar that needs it, and never logged or put in an error message.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class SecretSource(Protocol):
    def present(self, kind: str, name: str) -> bool:
        """True if the secret ``kind`` (``"env"`` or ``"file"``) ``name`` exists and is non-empty."""
        ...

    def read(self, kind: str, name: str) -> str:
        """The secret's value, stripped of a trailing newline.

        Raises ``bottle.ports.errors.InputError`` naming the reference (never
        the value) when it is missing or empty.
        """
        ...
