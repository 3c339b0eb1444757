"""Start the egress proxy: check its inputs, then run mitmdump in upstream mode with its addon.

Refuses to start (exit 2, one line saying why) without its CA, without the
guard's CA (``BOTTLE_UPSTREAM_CA``: everything it forwards goes through the
guard, which it must be able to verify) or without an upstream proxy.

Environment (besides ``bottle.sidecars._shared``'s):

    HTTPS_PROXY / BOTTLE_UPSTREAM_PROXY   the guard, e.g. http://guard:8080
    BOTTLE_UPSTREAM_CA                    the guard's CA certificate
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from bottle.core.naming import ROLE_EGRESS_PROXY
from bottle.sidecars._shared import (
    StartupError,
    base_mitm_args,
    sidecar_paths,
    write_ca_bundle,
    write_mitmproxy_confdir,
)

DEFAULT_UPSTREAM_CA = "/etc/bottle/upstream-ca.crt"


def upstream_proxy(environ: Mapping[str, str]) -> str:
    """The guard's URL (``http://host:port``) from the environment; ``StartupError`` if absent or odd."""
    url = environ.get("BOTTLE_UPSTREAM_PROXY") or environ.get("HTTPS_PROXY") or environ.get("https_proxy") or ""
    if not url:
        raise StartupError("no upstream proxy: set HTTPS_PROXY (or BOTTLE_UPSTREAM_PROXY) to the guard, e.g. http://guard:8080")
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/") or parts.username:
        raise StartupError(f"the upstream proxy {url!r} must look like http://host:port")
    return f"http://{parts.netloc}"


def prepare(environ: Mapping[str, str]) -> list[str]:
    """Write the runtime files and return mitmdump's arguments."""
    paths = sidecar_paths(environ, ROLE_EGRESS_PROXY)
    runtime = paths["runtime_dir"]
    os.makedirs(runtime, mode=0o700, exist_ok=True)
    upstream = upstream_proxy(environ)
    try:
        confdir = write_mitmproxy_confdir(os.path.join(runtime, "mitmproxy"), paths["ca_key"], paths["ca_cert"])
        guard_ca = write_ca_bundle(
            os.path.join(runtime, "upstream-trust.pem"),
            environ.get("BOTTLE_UPSTREAM_CA") or DEFAULT_UPSTREAM_CA,
        )
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    return base_mitm_args(paths, confdir) + [
        "--mode", f"upstream:{upstream}",
        # Only the guard's CA: every upstream TLS session ends at the guard.
        "--set", f"ssl_verify_upstream_trusted_ca={guard_ca}",
    ]


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = environ if environ is not None else os.environ
    try:
        args = prepare(env)
    except StartupError as exc:
        print(f"bottle egress proxy: cannot start: {exc}", file=sys.stderr)
        return 2
    from bottle.sidecars.egress_proxy.addon import EgressProxyAddon
    from bottle.sidecars._mitm import run_mitmdump

    run_mitmdump(EgressProxyAddon, args + list(argv or ()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
