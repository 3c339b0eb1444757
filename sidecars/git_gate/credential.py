"""A git credential helper that hands git the gate's token for one upstream, from the environment.

git runs it as ``credential.helper`` (configured by ``gitcmd.upstream_env``
through ``GIT_CONFIG_*``) with the operation as its argument and the
request on stdin. For ``get`` it answers with ``BOTTLE_GIT_CREDENTIAL_USER``
and the value of the variable named by ``BOTTLE_GIT_CREDENTIAL_ENV``, but
only when the request is for https on exactly the host and port of
``BOTTLE_GIT_CREDENTIAL_HOST`` (``host`` or ``host:port``; no port means
443): a redirect, a submodule elsewhere or another service on the same
host gets nothing. ``store`` and ``erase`` are ignored, so the token is
never written anywhere.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TextIO
from urllib.parse import urlsplit

HTTPS_PORT = 443


def endpoint(host: str) -> tuple[str, int] | None:
    """(lower-case host name, port) of ``host`` or ``host:port`` (``[v6]:port`` too); None if it is not one.

    This is the shape of git's ``host=`` field, which carries the port
    exactly when the URL names one; no port means https's 443.
    """
    if not host or any(c in host for c in "/?#@\\ \t\r\n\0"):
        return None
    try:
        parts = urlsplit("//" + host)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.netloc != host:
        return None
    if host.endswith(":"):
        return None
    return parts.hostname.lower(), HTTPS_PORT if port is None else port


def answer(operation: str, request: str, environ: Mapping[str, str]) -> str:
    """What the helper prints for ``operation`` given git's ``request`` text; empty for no answer."""
    if operation != "get":
        return ""
    fields: dict[str, str] = {}
    for line in request.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value
    wanted = endpoint(environ.get("BOTTLE_GIT_CREDENTIAL_HOST", ""))
    asked = endpoint(fields.get("host", ""))
    if fields.get("protocol") != "https" or wanted is None or asked != wanted:
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
