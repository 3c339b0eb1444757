"""A sidecar image's entry point: run the module its build named (``BOTTLE_SIDECAR_ENTRY``).

All sidecar images share one Dockerfile (sidecars/Dockerfile); the build
argument ``ENTRY`` becomes this variable, so each image runs its own
program as PID 1 with no shell in between.
"""

from __future__ import annotations

import os
import runpy
import sys

ENTRY_ENV = "BOTTLE_SIDECAR_ENTRY"


def main() -> None:
    entry = os.environ.get(ENTRY_ENV, "")
    if not entry.startswith("bottle.sidecars."):
        print(f"bottle sidecar: {ENTRY_ENV} must name a bottle.sidecars module, not {entry!r}", file=sys.stderr)
        raise SystemExit(2)
    runpy.run_module(entry, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
