"""``StateStore`` on the local filesystem, one directory per bottle identity."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile

from bottle.core.identity import InvalidIdentity, is_identity
from bottle.core.state import StateCorrupt

_TMP_PREFIX = ".bottle-tmp-"
DIR_MODE = 0o700
FILE_MODE = 0o644
SECRET_MODE = 0o600


class UnsafeStateFile(StateCorrupt, ValueError):
    """A state path leads through a symlink, or names something other than a regular file.

    Sidecars and the agent can write parts of a bottle's state; a FIFO there
    would hang the host reading it, a symlink would lead it elsewhere.
    """


_UNSAFE_HINT = (
    "something in the bottle put it there; stop the bottle and remove it, or remove the bottle's state "
    "with `bottle cleanup`"
)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def default_state_root() -> str:
    """``<XDG state dir>/bottle/bottles`` (honours ``XDG_STATE_HOME``)."""
    import platformdirs  # imported here so importing the adapter stays cheap

    return os.path.join(platformdirs.user_state_dir("bottle"), "bottles")


def _check_relpath(relpath: str, *, allow_empty: bool) -> list[str]:
    if not isinstance(relpath, str):
        raise ValueError(f"state path must be a string, got {type(relpath).__name__}")
    if relpath == "":
        if allow_empty:
            return []
        raise ValueError("state path is empty")
    if relpath.startswith("/") or "\\" in relpath or "\x00" in relpath:
        raise ValueError(f"state path {relpath!r} must be relative, '/'-separated")
    parts = relpath.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"state path {relpath!r} may not contain empty, '.' or '..' segments")
    return parts


class LocalStateStore:
    """Per-identity state under ``root`` (default ``default_state_root()``).

    Writes go to a temporary file in the target's directory, are fsynced and
    renamed over the target, so readers never see a partial file. Directories
    are 0700; files 0644, or 0600 with ``secret=True``, whatever the umask.
    Paths that lead through a symlink are refused, and ``read`` reads only
    regular files (``UnsafeStateFile``): a sidecar or the agent that can
    write into a state directory must not make the host read or write
    elsewhere, nor hang it on a FIFO.
    """

    def __init__(self, root: str | None = None) -> None:
        self.root = os.path.abspath(root if root is not None else default_state_root())

    # -- paths ----------------------------------------------------------
    def _path(self, identity: str, relpath: str, *, allow_empty: bool = False) -> str:
        if not is_identity(identity):
            raise InvalidIdentity(
                f"{identity!r} is not a bottle identity",
                hint="an identity looks like 'implementer-k3x9q'; `bottle ls` lists them",
            )
        parts = _check_relpath(relpath, allow_empty=allow_empty)
        return os.path.join(self.root, identity, *parts)

    def _refuse_symlinks(self, identity: str, path: str) -> None:
        """Raise if any existing component from the bottle dir down to ``path`` is a symlink."""
        current = os.path.join(self.root, identity)
        rel = os.path.relpath(path, current)
        components = [] if rel == "." else rel.split(os.sep)
        for component in [None, *components]:
            if component is not None:
                current = os.path.join(current, component)
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                return
            if stat.S_ISLNK(st.st_mode):
                raise UnsafeStateFile(f"refusing to follow a symlink in bottle state: {current}", hint=_UNSAFE_HINT)

    def _make_dirs(self, path: str) -> None:
        """Create ``path`` and missing parents with mode 0700."""
        missing: list[str] = []
        current = path
        while not os.path.isdir(current):
            missing.append(current)
            parent = os.path.dirname(current)
            if parent == current:
                break
            current = parent
        for directory in reversed(missing):
            with contextlib.suppress(FileExistsError):
                os.mkdir(directory, DIR_MODE)
            os.chmod(directory, DIR_MODE)

    # -- StateStore -----------------------------------------------------
    def read(self, identity: str, relpath: str) -> bytes | None:
        """The file's bytes; ``None`` if missing; ``UnsafeStateFile`` unless it is a regular file.

        Opened without following a final symlink and without blocking (a
        FIFO would otherwise wait for a writer forever), then checked with
        ``fstat`` on the open descriptor, so a swap after the check is moot.
        """
        path = self._path(identity, relpath)
        self._refuse_symlinks(identity, path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeStateFile(f"refusing to follow a symlink in bottle state: {path}", hint=_UNSAFE_HINT) from None
            raise
        try:
            mode = os.fstat(fd).st_mode
        except BaseException:
            os.close(fd)
            raise
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise UnsafeStateFile(f"refusing to read {path}: it is {_kind(mode)}, not a regular file", hint=_UNSAFE_HINT)
        with os.fdopen(fd, "rb") as fh:
            return fh.read()

    def write(self, identity: str, relpath: str, data: bytes, *, secret: bool = False) -> None:
        path = self._path(identity, relpath)
        self._refuse_symlinks(identity, path)
        directory = os.path.dirname(path)
        self._make_dirs(directory)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=directory)
        try:
            os.fchmod(fd, SECRET_MODE if secret else FILE_MODE)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        # the rename itself must survive a crash too (O_DIRECTORY: never a FIFO's open)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def delete(self, identity: str, relpath: str) -> None:
        """Remove a file, or a directory with its contents; missing is fine."""
        path = self._path(identity, relpath)
        self._refuse_symlinks(identity, path)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path, ignore_errors=False)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def exists(self, identity: str, relpath: str) -> bool:
        return os.path.lexists(self._path(identity, relpath))

    def list_dir(self, identity: str, relpath: str) -> list[str]:
        """Sorted entry names of a state directory; ``[]`` if it does not exist."""
        path = self._path(identity, relpath, allow_empty=True)
        self._refuse_symlinks(identity, path)
        try:
            names = os.listdir(path)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(n for n in names if not n.startswith(_TMP_PREFIX))

    def remove_bottle(self, identity: str) -> None:
        path = self._path(identity, "", allow_empty=True)
        if os.path.islink(path):
            os.unlink(path)
            return
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(path)

    def identities(self) -> list[str]:
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return []
        return sorted(e.name for e in entries if is_identity(e.name) and e.is_dir(follow_symlinks=False))

    def host_path(self, identity: str, relpath: str = "") -> str:
        return self._path(identity, relpath, allow_empty=True)
