"""Time and randomness, injected so the core stays deterministic in tests."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start, never going backwards."""
        ...


@runtime_checkable
class Randomness(Protocol):
    def choice(self, alphabet: str, count: int) -> str:
        """``count`` characters drawn uniformly from ``alphabet``, cryptographically random."""
        ...
