"""Masking a brokered secret in what an upstream sends back.

An upstream that echoes request headers (an error page quoting the key, a
debugging endpoint) would hand the agent the very secret the proxy injected.
The egress proxy masks those values in responses on a route, byte for byte
(``*`` of the same length, so Content-Length stays right), across chunk
boundaries. Only identity-encoded bodies can be masked; see
docs/security-model.md.
"""

from __future__ import annotations

from collections.abc import Iterable


class Masker:
    """Replaces every occurrence of any needle with asterisks, chunk by chunk.

    ``feed`` returns what may be released now: the last ``len(longest) - 1``
    bytes are held back, unmasked, in case a needle continues in the next
    chunk, together with which of them an earlier match already covers.
    ``finish`` returns the rest.
    """

    def __init__(self, needles: Iterable[bytes]) -> None:
        self.needles = sorted({n for n in needles if n}, key=len, reverse=True)
        self._keep = max((len(n) for n in self.needles), default=1) - 1
        self._tail = b""
        self._tail_marks = bytearray()
        self.masked = 0

    def _marks(self, data: bytes, carried: bytearray) -> bytearray:
        marks = bytearray(len(data))
        marks[: len(carried)] = carried
        for needle in self.needles:
            i = data.find(needle)
            while i >= 0:
                marks[i : i + len(needle)] = b"\x01" * len(needle)
                self.masked += 1
                i = data.find(needle, i + 1)
        return marks

    @staticmethod
    def _apply(data: bytes, marks: bytearray) -> bytes:
        if 1 not in marks:
            return data
        return bytes(0x2A if m else b for b, m in zip(data, marks))

    def mask(self, data: bytes) -> bytes:
        """``data`` with every needle masked (no streaming)."""
        return self._apply(data, self._marks(data, bytearray()))

    def feed(self, chunk: bytes) -> bytes:
        window = self._tail + chunk
        marks = self._marks(window, self._tail_marks)
        cut = max(0, len(window) - self._keep)
        self._tail, self._tail_marks = window[cut:], marks[cut:]
        return self._apply(window[:cut], marks[:cut])

    def finish(self) -> bytes:
        rest = self._apply(self._tail, self._tail_marks)
        self._tail, self._tail_marks = b"", bytearray()
        return rest

    def stream(self, chunk: bytes) -> bytes:
        """A mitmproxy ``stream`` callable: ``b""`` marks the end of the body."""
        return self.finish() if chunk == b"" else self.feed(chunk)
