"""``SecretSource`` on the host's environment variables and files."""

from __future__ import annotations

import os
from collections.abc import Mapping

from bottle.ports.errors import InputError

# A token file is a few hundred bytes; refusing huge files keeps a wrong
# path (a disk image, /dev/zero) from being read into memory.
MAX_SECRET_BYTES = 1 << 20


class SecretUnavailable(InputError):
    """A token reference points at nothing usable. The message names the reference, never a value."""


class EnvFileSecretSource:
    """Secrets from environment variables (``env``) and files (``file``).

    ``environ`` defaults to the process environment, read at each call.
    File paths expand ``~``; relative paths resolve against ``base_dir``
    (default: the current directory). Values lose trailing newlines
    (``\\n`` and ``\\r\\n``); a value that is empty after that is missing.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, base_dir: str | None = None) -> None:
        self._environ = environ
        self._base_dir = base_dir

    def present(self, kind: str, name: str) -> bool:
        try:
            self.read(kind, name)
        except SecretUnavailable:
            return False
        return True

    def read(self, kind: str, name: str) -> str:
        if kind == "env":
            return self._read_env(name)
        if kind == "file":
            return self._read_file(name)
        raise SecretUnavailable(
            f"unknown secret kind {kind!r} for {name!r}",
            hint="a token_ref is NAME, 'env:NAME' or 'file:PATH'",
        )

    def _read_env(self, name: str) -> str:
        environ = os.environ if self._environ is None else self._environ
        value = environ.get(name)
        if value is None:
            raise SecretUnavailable(
                f"secret env:{name} is not set",
                hint=f"export {name}=... in the shell that runs bottle, or point token_ref at a file",
            )
        value = value.rstrip("\r\n")
        if not value:
            raise SecretUnavailable(f"secret env:{name} is empty", hint=f"set {name} to the token's value")
        return value

    def _path(self, name: str) -> str:
        path = os.path.expanduser(name)
        if not os.path.isabs(path):
            path = os.path.join(self._base_dir or os.getcwd(), path)
        return path

    def _read_file(self, name: str) -> str:
        path = self._path(name)
        what = f"secret file:{name}" if path == name else f"secret file:{name} ({path})"
        try:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_SECRET_BYTES + 1)
        except FileNotFoundError:
            raise SecretUnavailable(
                f"{what}: no such file", hint="create the file with the token in it, or fix token_ref"
            ) from None
        except IsADirectoryError:
            raise SecretUnavailable(f"{what} is a directory", hint="point token_ref at a file") from None
        except PermissionError:
            raise SecretUnavailable(
                f"{what}: permission denied", hint="make the file readable by the user running bottle"
            ) from None
        except OSError as exc:
            raise SecretUnavailable(f"{what}: cannot read it ({exc.strerror})") from None
        if len(raw) > MAX_SECRET_BYTES:
            raise SecretUnavailable(
                f"{what} is larger than {MAX_SECRET_BYTES} bytes; that is not a token",
                hint="point token_ref at a file holding only the token",
            )
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            # from None: the exception object holds the file's bytes
            raise SecretUnavailable(f"{what} is not UTF-8 text") from None
        value = value.rstrip("\r\n")
        if not value:
            raise SecretUnavailable(f"{what} is empty", hint="write the token into the file")
        return value
