"""Undoing a request body's Content-Encoding before it is scanned, with a size cap.

A compressed body would hide any secret from the scanner, and a small
compressed body can expand without bound; so the guard decodes what it can
(gzip, deflate) up to a limit and refuses what it cannot.
"""

from __future__ import annotations

import zlib


def content_codings(header: str | None) -> list[str]:
    """The codings of a Content-Encoding header, in the order they were applied."""
    if not header:
        return []
    return [c.strip().lower() for c in header.split(",") if c.strip() and c.strip().lower() != "identity"]


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    d = zlib.decompressobj(wbits)
    out = d.decompress(data, limit + 1)
    if len(out) > limit or d.unconsumed_tail:
        raise ValueError(f"the body expands beyond {limit} bytes when decoded")
    out += d.flush()
    if len(out) > limit:
        raise ValueError(f"the body expands beyond {limit} bytes when decoded")
    return out


def decode_body(data: bytes, content_encoding: str | None, limit: int) -> bytes:
    """``data`` with its Content-Encoding undone, at most ``limit`` bytes.

    Raises ``ValueError`` for a coding that cannot be scanned (br, zstd,
    anything unknown), a corrupt stream, or an expansion beyond ``limit``.
    """
    codings = content_codings(content_encoding)
    for coding in reversed(codings):
        try:
            if coding in ("gzip", "x-gzip"):
                data = _inflate(data, 16 + zlib.MAX_WBITS, limit)
            elif coding == "deflate":
                try:
                    data = _inflate(data, zlib.MAX_WBITS, limit)
                except zlib.error:
                    # Some clients send raw deflate without the zlib header.
                    data = _inflate(data, -zlib.MAX_WBITS, limit)
            else:
                raise ValueError(f"Content-Encoding {coding!r} cannot be scanned")
        except zlib.error as exc:
            raise ValueError(f"the {coding} body is corrupt ({exc})") from None
    return data
