"""The ``StateStore`` port: per-bottle state on the host.

The core decides *what* to keep (``bottle.core.state`` names the relative
paths); a store only reads and writes bytes under one directory per bottle
identity. Relative paths use ``/`` and never contain ``..``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class StateStore(Protocol):
    """Per-identity storage of small files.

    Contract:
    - ``write`` is atomic: a reader sees the old content or the new, never
      a part. Directories are created 0700; ``secret=True`` files are 0600,
      others 0644.
    - ``read`` returns ``None`` for a missing file.
    - ``remove_bottle`` deletes everything of one identity; missing is fine.
    - ``identities`` lists identities that have any state.
    - ``host_path`` is the absolute host path of a file or directory, for
      bind mounts; it need not exist yet.
    """

    def read(self, identity: str, relpath: str) -> bytes | None: ...

    def write(self, identity: str, relpath: str, data: bytes, *, secret: bool = False) -> None: ...

    def delete(self, identity: str, relpath: str) -> None: ...

    def exists(self, identity: str, relpath: str) -> bool: ...

    def list_dir(self, identity: str, relpath: str) -> list[str]: ...

    def remove_bottle(self, identity: str) -> None: ...

    def identities(self) -> list[str]: ...

    def host_path(self, identity: str, relpath: str = "") -> str: ...
