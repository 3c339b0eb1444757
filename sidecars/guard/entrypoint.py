"""Start the guard: check its inputs, then run mitmdump with the guard addon.

Refuses to start (exit 2, one line saying why) without its CA or without a
usable set of trusted upstream CAs; a missing or invalid *policy* does not
stop it: it starts and denies everything until the policy file is fixed.

Environment (see ``bottle.sidecars._shared`` for the common part):

    BOTTLE_EXTRA_CA_FILE   extra PEM bundle trusted for upstream TLS, on top
                           of the system CAs (a corporate TLS proxy's CA)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from bottle.core.naming import ROLE_GUARD
from bottle.sidecars._shared import (
    StartupError,
    base_mitm_args,
    sidecar_paths,
    system_ca_bundle,
    write_ca_bundle,
    write_mitmproxy_confdir,
)


def prepare(environ: Mapping[str, str]) -> list[str]:
    """Write the runtime files (CA for mitmproxy, upstream trust bundle) and return mitmdump's arguments."""
    paths = sidecar_paths(environ, ROLE_GUARD)
    runtime = paths["runtime_dir"]
    os.makedirs(runtime, mode=0o700, exist_ok=True)
    try:
        confdir = write_mitmproxy_confdir(os.path.join(runtime, "mitmproxy"), paths["ca_key"], paths["ca_cert"])
        system = system_ca_bundle()
        extra = environ.get("BOTTLE_EXTRA_CA_FILE") or None
        if system is None and extra is None:
            raise StartupError("no system CA bundle found and no BOTTLE_EXTRA_CA_FILE: nothing to verify upstreams with")
        trust = write_ca_bundle(os.path.join(runtime, "upstream-trust.pem"), system, extra)
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    return base_mitm_args(paths, confdir) + [
        "--mode", "regular",
        "--set", f"ssl_verify_upstream_trusted_ca={trust}",
    ]


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = environ if environ is not None else os.environ
    try:
        args = prepare(env)
    except StartupError as exc:
        print(f"bottle guard: cannot start: {exc}", file=sys.stderr)
        return 2
    from bottle.sidecars._mitm import run_mitmdump
    from bottle.sidecars.guard.addon import GuardAddon

    run_mitmdump(GuardAddon, args + list(argv or ()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
