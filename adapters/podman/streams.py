"""Podman's multiplexed attach/log stream: 8-byte frame headers (stream id, size) before each chunk."""

from __future__ import annotations

_HEADER = 8
_STDOUT, _STDERR = 1, 2


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """The ``(stream id, payload)`` frames of ``data``; a truncated last frame is kept as it is."""
    result: list[tuple[int, bytes]] = []
    offset = 0
    while offset + _HEADER <= len(data):
        stream = data[offset]
        size = int.from_bytes(data[offset + 4 : offset + _HEADER], "big")
        result.append((stream, data[offset + _HEADER : offset + _HEADER + size]))
        offset += _HEADER + size
    return result


def demux(data: bytes) -> tuple[bytes, bytes]:
    """Split a multiplexed stream into (stdout, stderr)."""
    out = bytearray()
    err = bytearray()
    for stream, payload in frames(data):
        if stream == _STDERR:
            err += payload
        elif stream == _STDOUT:
            out += payload
    return bytes(out), bytes(err)


def join_frames(data: bytes) -> bytes:
    """Stdout and stderr of a multiplexed stream, interleaved as written."""
    return b"".join(payload for _stream, payload in frames(data))
