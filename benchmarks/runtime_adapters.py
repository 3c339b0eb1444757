"""Median time of one short-lived container: through our adapter vs through the engine's CLI.

Adapter: create + start + exec(``true``) + force-remove, over the REST API.
CLI:     ``docker run --rm IMAGE true`` / ``podman run --rm IMAGE true``
         (rootless: the same as the rootless user, via runuser).

    .venv/bin/python benchmarks/runtime_adapters.py [-n 10] [--only docker,podman,podman_rootless]

Prints a table; the target is a ratio (adapter / CLI) of at most 1.0.
"""

from __future__ import annotations

import argparse
import os
import pwd
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from bottle.ports.errors import RuntimeFailure
from bottle.ports.runtime import ContainerRuntime, ContainerSpec

BASE_IMAGE = os.environ.get("BOTTLE_BASE_IMAGE", "localhost/bottle-base:bookworm")
RUN_LABELS = {"io.bottle.test-run": f"bench-{secrets.token_hex(4)}"}


def _rootless() -> tuple[str, int]:
    user = os.environ.get("BOTTLE_ROOTLESS_USER", "bottle-rootless")
    return user, pwd.getpwnam(user).pw_uid


def _adapter(name: str) -> ContainerRuntime:
    if name == "docker":
        from bottle.adapters.docker.runtime import DockerRuntime

        return DockerRuntime()
    from bottle.adapters.podman.runtime import PodmanRuntime

    if name == "podman":
        return PodmanRuntime(base_url="unix:///run/podman/podman.sock")
    _user, uid = _rootless()
    return PodmanRuntime(base_url=f"unix:///run/user/{uid}/podman/podman.sock")


def _cli(name: str) -> list[str]:
    if name == "docker":
        return ["docker", "run", "--rm", BASE_IMAGE, "true"]
    if name == "podman":
        return ["podman", "run", "--rm", BASE_IMAGE, "true"]
    user, uid = _rootless()
    return ["runuser", "-u", user, "--", "env", f"XDG_RUNTIME_DIR=/run/user/{uid}", "podman", "run", "--rm", BASE_IMAGE, "true"]


def _timed(action: Callable[[], None], count: int) -> list[float]:
    action()  # warm caches and connections; not counted
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return samples


def _one_container(runtime: ContainerRuntime) -> Callable[[], None]:
    serial = iter(range(1_000_000))

    def run() -> None:
        name = f"bottle-bench-{RUN_LABELS['io.bottle.test-run']}-{next(serial)}"
        runtime.create_container(ContainerSpec(name=name, image=BASE_IMAGE, command=("sleep", "600"), labels=RUN_LABELS))
        runtime.start_container(name)
        result = runtime.exec(name, ["true"])
        if result.exit_code != 0:
            raise RuntimeError(f"exec true exited {result.exit_code}: {result.stderr!r}")
        runtime.remove_container(name, force=True)

    return run


def _cli_run(argv: list[str]) -> Callable[[], None]:
    def run() -> None:
        subprocess.run(argv, check=True, cwd="/tmp", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    return run


def per_engine(names: str, measure: Callable[[str, ContainerRuntime], tuple]) -> list[tuple]:
    """``measure(name, runtime)`` for each engine of comma-separated ``names`` that answers.

    An engine that fails is reported on stderr and left out; whatever a
    measurement created (``RUN_LABELS``) is removed.
    """
    rows = []
    for name in names.split(","):
        runtime = _adapter(name)
        try:
            runtime.info()
            rows.append(measure(name, runtime))
        except (RuntimeFailure, RuntimeError, subprocess.CalledProcessError, OSError) as exc:
            print(f"{name}: not measured: {exc}", file=sys.stderr)
        finally:
            try:
                runtime.remove_labelled(RUN_LABELS)
            except RuntimeFailure:
                pass
            runtime.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=10, help="samples per measurement (default 10)")
    parser.add_argument("--only", default="docker,podman,podman_rootless")
    args = parser.parse_args()

    def measure(name: str, runtime: ContainerRuntime) -> tuple:
        adapter = statistics.median(_timed(_one_container(runtime), args.n))
        cli = statistics.median(_timed(_cli_run(_cli(name)), args.n))
        return (name, adapter, cli, adapter / cli)

    rows = per_engine(args.only, measure)

    print(f"median of {args.n}: create+start+exec(true)+remove (adapter) vs `run --rm IMAGE true` (CLI)")
    print(f"{'runtime':<16} {'adapter ms':>11} {'CLI ms':>9} {'ratio':>7}")
    for name, adapter, cli, ratio in rows:
        print(f"{name:<16} {adapter * 1000:>11.0f} {cli * 1000:>9.0f} {ratio:>7.2f}")
    return 0 if rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
