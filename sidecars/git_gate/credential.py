"""A git credential helper that hands git the gate's token for one upstream host, from the environment.

git runs it as ``credential.helper`` (configured by ``gitcmd.upstream_env``
through ``GIT_CONFIG_*``) with the operation as its argument and the
request on stdin. For ``get`` it answers with ``BOTTLE_GIT_CREDENTIAL_USER``
and the value of the variable named by ``BOTTLE_GIT_CREDENTIAL_ENV``, but
only when the request is for https on ``BOTTLE_GIT_CREDENTIAL_HOST``: a
redirect or a submodule elsewhere gets nothing. ``store`` and ``erase`` are
ignored, so the token is never written anywhere.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TextIO


def answer(operation: str, request: str, environ: Mapping[str, str]) -> str:
    """What the helper prints for ``operation`` given git's ``request`` text; empty for no answer."""
    if operation != "get":
        return ""
    fields: dict[str, str] = {}
    for line in request.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value
    host = fields.get("host", "").lower()
    # git sends host:port when the URL names a port.
    if fields.get("protocol") != "https" or host.split(":", 1)[0] != environ.get("BOTTLE_GIT_CREDENTIAL_HOST", "\0"):
        return ""
    token = environ.get(environ.get("BOTTLE_GIT_CREDENTIAL_ENV", ""), "")
    user = environ.get("BOTTLE_GIT_CREDENTIAL_USER", "")
    if not token or not user or "\n" in token or "\n" in user:
        return ""
    return f"username={user}\npassword={token}\n"


def main(argv: list[str], stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    operation = argv[0] if argv else ""
    out = answer(operation, stdin.read(), os.environ)
    if out:
        stdout.write(out)
        stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
