"""Start the git gate: check its environment, prepare the repositories, serve smart HTTP.

Refuses to start (exit 2, one line saying why) when ``BOTTLE_GIT_REMOTES``
is missing or invalid or the repositories cannot be prepared. A remote
whose token is missing does not stop it: fetches and pushes of that remote
fail with a message saying so. Prints ``bottle git gate: listening on
:<port>`` once it accepts connections (``GET /healthz`` answers ``ok``).
SIGTERM stops it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence

from bottle.sidecars.git_gate.gitcmd import GateError, GateSettings, prepare_runtime
from bottle.sidecars.git_gate.server import serve


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    del argv
    env = dict(environ if environ is not None else os.environ)
    _not_dumpable()
    try:
        settings = GateSettings.from_env(env)
        prepare_runtime(settings)
        server = serve(settings, env)
    except (GateError, OSError) as exc:
        print(f"bottle git gate: cannot start: {exc}", file=sys.stderr)
        return 2
    for remote in settings.config.remotes:
        if remote.token_env not in settings.tokens:
            print(f"bottle git gate: warning: no credential for remote {remote.name} ({remote.token_env} is empty)",
                  file=sys.stderr)

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    names = ", ".join(settings.config.names())
    print(f"bottle git gate: listening on :{settings.listen_port} for {names}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


def _not_dumpable() -> None:
    """Keep other processes of the gate's user out of this one's memory and ``/proc/<pid>/environ``.

    The gate holds the git credentials; git's own processes run as the same
    user, and a non-dumpable process cannot be read or traced by them.
    """
    import ctypes  # noqa: PLC0415

    pr_set_dumpable = 4
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0)
    except (OSError, AttributeError):
        print("bottle git gate: warning: could not make the gate non-dumpable", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
