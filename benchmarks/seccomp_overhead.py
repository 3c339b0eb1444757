"""What bottle's syscall profile costs a launch: one short-lived container with and without it, per engine.

Each sample creates, starts and waits for a container running ``true``, then
removes it (through our adapter, as the launcher does). Samples alternate
between the two settings so drift of a busy machine hits both alike.

    .venv/bin/python benchmarks/seccomp_overhead.py [-n 15] [--only docker,podman,podman_rootless]

Prints medians and the ratio (with / without); the cost should be noise
(the Podman adapter also writes and removes the profile's temporary file).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from runtime_adapters import BASE_IMAGE, RUN_LABELS, per_engine

from bottle.core.seccomp import render_profile
from bottle.ports.runtime import ContainerRuntime, ContainerSpec


def _one_run(runtime: ContainerRuntime, profile: str | None) -> Callable[[], float]:
    serial = iter(range(1_000_000))

    def run() -> float:
        name = f"bottle-bench-{RUN_LABELS['io.bottle.test-run']}-{'p' if profile else 'd'}{next(serial)}"
        started = time.perf_counter()
        runtime.create_container(
            ContainerSpec(name=name, image=BASE_IMAGE, command=("true",), labels=RUN_LABELS, seccomp_profile=profile)
        )
        runtime.start_container(name)
        code = runtime.wait_container(name, timeout=60)
        elapsed = time.perf_counter() - started
        runtime.remove_container(name, force=True)
        if code != 0:
            raise RuntimeError(f"`true` exited {code}")
        return elapsed

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=15, help="samples per setting (default 15)")
    parser.add_argument("--only", default="docker,podman,podman_rootless")
    args = parser.parse_args()
    profile = render_profile()

    def measure(name: str, runtime: ContainerRuntime) -> tuple:
        plain, confined = _one_run(runtime, None), _one_run(runtime, profile)
        plain(), confined()  # warm caches and connections; not counted
        without, with_ = [], []
        for _ in range(args.n):
            without.append(plain())
            with_.append(confined())
        return (name, statistics.median(without), statistics.median(with_))

    rows = per_engine(args.only, measure)

    print(f"median of {args.n}: create+start+wait(`true`) without / with bottle's seccomp profile")
    print(f"{'runtime':<16} {'engine default ms':>18} {'bottle profile ms':>18} {'ratio':>7}")
    for name, without, with_ in rows:
        print(f"{name:<16} {without * 1000:>18.0f} {with_ * 1000:>18.0f} {with_ / without:>7.2f}")
    return 0 if rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
