"""Asking the guard whether it would open a tunnel, to relay its refusal to the agent.

In upstream mode mitmproxy reads only the status line of the guard's answer
to CONNECT; a refusal (the guard's 403 naming the rule) reaches the agent as
mitmproxy's own 502 "upstream proxy refused", without the guard's body. When
a request is about to need a tunnel the guard has just refused, the egress
proxy sends the same CONNECT itself and hands the agent the guard's status,
rule headers and body. No mitmproxy here: plain asyncio streams.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

# The guard's denial is a short text; anything longer is cut, never buffered whole.
MAX_BODY = 64 * 1024
MAX_HEAD = 16 * 1024
# Headers of the guard's answer worth passing on to the agent.
RELAYED_HEADERS = ("content-type", "x-bottle-denied-by", "x-bottle-rule", "cache-control")


@dataclass(frozen=True)
class GuardRefusal:
    """The guard's non-2xx answer to CONNECT: status, reason phrase, relayed headers, body (≤ ``MAX_BODY``)."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")


def connect_request(host: str, port: int) -> bytes:
    """The CONNECT request mitmproxy itself would send to the guard for ``host:port``."""
    name = host.encode("idna") if not host.isascii() else host.encode("ascii")
    authority = b"[%s]:%d" % (name, port) if b":" in name else b"%s:%d" % (name, port)
    return b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (authority, authority)


def parse_head(head: bytes) -> tuple[int, str, list[tuple[str, str]]]:
    """Status, reason and headers of an HTTP/1 response head; ``ValueError`` if it is not one."""
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise ValueError(f"not an HTTP response: {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"malformed header line {line[:80]!r}")
        headers.append((name.strip(), value.strip()))
    return int(code), reason.strip(), headers


async def ask_guard(guard: tuple[str, int], host: str, port: int, *, timeout: float = 15.0) -> GuardRefusal | None:
    """Send ``CONNECT host:port`` to ``guard``; None if it would open the tunnel, else its refusal.

    The tunnel, when granted, is closed at once. Raises ``OSError`` (or
    ``asyncio.TimeoutError``) when the guard cannot be asked, ``ValueError``
    when its answer is not HTTP: the caller then lets mitmproxy try, and
    fail, on its own.
    """
    reader, writer = await asyncio.wait_for(asyncio.open_connection(guard[0], guard[1]), timeout)
    try:
        writer.write(connect_request(host, port))
        await writer.drain()
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        except asyncio.LimitOverrunError:
            raise ValueError("the guard's answer has an oversized head") from None
        except asyncio.IncompleteReadError as exc:
            raise ValueError("the guard closed the connection without an answer") from exc
        if len(head) > MAX_HEAD:
            raise ValueError("the guard's answer has an oversized head")
        status, reason, headers = parse_head(head[:-4])
        if 200 <= status < 300:
            return None
        length = next((v for k, v in headers if k.lower() == "content-length"), None)
        if length is not None and length.isdigit():
            want = min(int(length), MAX_BODY)
            try:
                body = await asyncio.wait_for(reader.readexactly(want), timeout)
            except asyncio.IncompleteReadError as exc:
                body = exc.partial
        else:
            body = await asyncio.wait_for(reader.read(MAX_BODY), timeout)
        relayed = tuple((k, v) for k, v in headers if k.lower() in RELAYED_HEADERS)
        return GuardRefusal(status, reason, relayed, body)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
