"""Tar archives to and from ``FileEntry`` lists, as both engines' archive APIs speak them."""

from __future__ import annotations

import io
import posixpath
import tarfile
from collections.abc import Iterable, Sequence

from bottle.ports.runtime import FileEntry


def _check_relative(path: str) -> str:
    cleaned = posixpath.normpath(path)
    if path.startswith("/") or cleaned == ".." or cleaned.startswith("../") or cleaned in ("", "."):
        raise ValueError(f"file entry path must be relative and inside the destination: {path!r}")
    return cleaned


def pack(files: Sequence[FileEntry]) -> bytes:
    """A tar archive holding ``files`` with their content, mode, uid and gid.

    The archive ends right after its two end-of-archive blocks, without the
    padding to a whole 10 KiB record that tarfile adds: Podman's copier
    stops reading at the end blocks and exits, so padding still being sent
    fails the copy now and then with "write |1: broken pipe" (HTTP 500).
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in files:
            info = tarfile.TarInfo(_check_relative(entry.path))
            info.mode = entry.mode & 0o7777
            info.uid = entry.uid
            info.gid = entry.gid
            if entry.is_dir:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = len(entry.content)
                archive.addfile(info, io.BytesIO(entry.content))
        end = archive.offset + 2 * tarfile.BLOCKSIZE
    return buffer.getvalue()[:end]


def unpack(chunks: Iterable[bytes]) -> list[FileEntry]:
    """The regular files and directories of a tar stream; links and devices are left out."""
    data = b"".join(chunks)
    entries: list[FileEntry] = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
        for member in archive:
            path = posixpath.normpath(member.name.lstrip("/"))
            if member.isdir():
                entries.append(FileEntry(path=path, mode=member.mode & 0o7777, uid=member.uid, gid=member.gid, is_dir=True))
            elif member.isreg():
                extracted = archive.extractfile(member)
                content = extracted.read() if extracted is not None else b""
                entries.append(
                    FileEntry(path=path, content=content, mode=member.mode & 0o7777, uid=member.uid, gid=member.gid)
                )
    return entries
