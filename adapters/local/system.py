"""The real clock and a cryptographic random source."""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timezone


class SystemClock:
    """``Clock`` on the system's wall and monotonic clocks."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()


class SystemRandomness:
    """``Randomness`` from the operating system's CSPRNG (``secrets``)."""

    def choice(self, alphabet: str, count: int) -> str:
        if not alphabet:
            raise ValueError("alphabet is empty")
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        return "".join(secrets.choice(alphabet) for _ in range(count))
