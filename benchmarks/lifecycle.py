"""The cost of a bottle: ``bottle start AGENT -y -- true`` against a bare ``<engine> run --rm BASE true``.

Prints, per engine, the median wall time of both (images already built), their
ratio, the overhead in seconds, and the median launch ("up") and teardown
("down") times bottle reports with ``-v``. Target: overhead <= 1.5 s.

    .venv/bin/python benchmarks/lifecycle.py                 # docker and rootful podman
    .venv/bin/python benchmarks/lifecycle.py --runs 9 --engine docker
    .venv/bin/python benchmarks/lifecycle.py --engine podman_rootless   # as BOTTLE_ROOTLESS_USER

The agent runs the base image with the guard only (no routes), the smallest
bottle; ``--routes`` adds a brokered route and so the egress proxy.
Sidecar images are built first if missing (tag: $BOTTLE_SIDECAR_VERSION or
the package version). Everything runs in a throwaway state/config directory.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE = os.environ.get("BOTTLE_BASE_IMAGE", "localhost/bottle-base:bookworm")
ROOT = Path(__file__).resolve().parents[1]


def engine_setup(name: str) -> tuple[list[str], list[str], dict[str, str], str | None]:
    """(bare run argv, bottle argv prefix, extra env, user) for an engine."""
    venv_bottle = str(Path(sys.executable).with_name("bottle"))
    if name == "docker":
        return ["docker", "run", "--rm", BASE, "true"], [venv_bottle, "--runtime", "docker"], {}, None
    if name == "podman":
        env = {"BOTTLE_PODMAN_URL": "unix:///run/podman/podman.sock"}
        return ["podman", "run", "--rm", BASE, "true"], [venv_bottle, "--runtime", "podman"], env, None
    user = os.environ.get("BOTTLE_ROOTLESS_USER", "bottle-rootless")
    uid = pwd.getpwnam(user).pw_uid
    site = next(Path(sys.prefix, "lib").glob("python3*/site-packages"))
    launcher = ("import site, sys; site.addsitedir(sys.argv[1]); sys.argv = ['bottle'] + sys.argv[2:]; "
                "from bottle.cli.main import main; main()")
    cli = ["/usr/bin/python3", "-S", "-c", launcher, str(site), "--runtime", "podman"]
    env = {"XDG_RUNTIME_DIR": f"/run/user/{uid}", "HOME": pwd.getpwnam(user).pw_dir}
    return ["podman", "run", "--rm", BASE, "true"], cli, env, user


def as_user(argv: list[str], env: dict[str, str], user: str | None) -> list[str]:
    if user is None:
        return argv
    return ["runuser", "-u", user, "--", "env", *[f"{k}={v}" for k, v in env.items()], *argv]


def timed(argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])} ... failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return elapsed, proc.stderr


def ensure_sidecars(name: str, version: str) -> None:
    from bottle.cli.images import build_sidecar_images

    if name == "docker":
        from bottle.adapters.docker import DockerRuntime

        runtime = DockerRuntime()
    else:
        from bottle.adapters.podman import PodmanRuntime

        if name == "podman":
            url = "unix:///run/podman/podman.sock"
        else:
            uid = pwd.getpwnam(os.environ.get("BOTTLE_ROOTLESS_USER", "bottle-rootless")).pw_uid
            url = f"unix:///run/user/{uid}/podman/podman.sock"
        runtime = PodmanRuntime(base_url=url)
    try:
        build_sidecar_images(runtime, version=version)
    finally:
        runtime.close()


def bench(name: str, runs: int, routes: bool, version: str) -> dict[str, float]:
    ensure_sidecars(name, version)
    bare, cli, extra, user = engine_setup(name)
    work = tempfile.mkdtemp(prefix="bottle-bench-")
    try:
        project = Path(work, "project")
        project.mkdir()
        bottle: dict = {"egress": {"allow": ["example.com"]}}
        if routes:
            bottle["egress_proxy"] = {"routes": [{"upstream": "https://api.example.com", "token_ref": "BENCH_TOKEN"}]}
        manifest = Path(work, "bottle.json")
        manifest.write_text(json.dumps({"agents": {"bench": {"image": BASE, "bottle": bottle}}}))
        if user is not None:
            pw = pwd.getpwnam(user)
            for path in [Path(work), *Path(work).rglob("*")]:
                os.chown(path, pw.pw_uid, pw.pw_gid)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("BOTTLE_", "XDG_"))},
            **extra,
            "XDG_STATE_HOME": f"{work}/state",
            "XDG_CONFIG_HOME": f"{work}/config",
            "XDG_CACHE_HOME": f"{work}/cache",
            "BOTTLE_SIDECAR_VERSION": version,
            "BOTTLE_MANIFEST": str(manifest),
            "BENCH_TOKEN": "bench-token-not-a-real-secret",
        }
        bare_argv = as_user(bare, env if user else {}, user)
        bottle_argv = as_user([*cli, "start", "bench", "-y", "-v", "--", "true"], env, user)
        # warm-up: the image facts cache, the engine's page cache
        timed(bare_argv, env, str(project))
        timed(bottle_argv, env, str(project))
        bare_times, bottle_times, ups, downs = [], [], [], []
        for _ in range(runs):
            bare_times.append(timed(bare_argv, env, str(project))[0])
            elapsed, err = timed(bottle_argv, env, str(project))
            bottle_times.append(elapsed)
            up = re.search(r"up in ([0-9.]+)s", err)
            down = re.search(r"down in ([0-9.]+)s", err)
            if up and down:
                ups.append(float(up.group(1)))
                downs.append(float(down.group(1)))
        return {
            "bare": statistics.median(bare_times),
            "bottle": statistics.median(bottle_times),
            "up": statistics.median(ups) if ups else float("nan"),
            "down": statistics.median(downs) if downs else float("nan"),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", action="append", choices=["docker", "podman", "podman_rootless"])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--routes", action="store_true", help="add a brokered route (the egress proxy runs too)")
    args = parser.parse_args()
    from bottle.cli.images import sidecar_version

    version = sidecar_version()
    engines = args.engine or ["docker", "podman"]
    print(f"bottle start AGENT -y -- true vs <engine> run --rm {BASE} true; median of {args.runs} runs"
          f"{' (with a route: guard + egress proxy)' if args.routes else ' (guard only)'}")
    print(f"{'engine':16} {'bare':>7} {'bottle':>7} {'ratio':>6} {'overhead':>9} {'up':>6} {'down':>6}  target overhead <= 1.50 s")
    for name in engines:
        r = bench(name, args.runs, args.routes, version)
        overhead = r["bottle"] - r["bare"]
        verdict = "ok" if overhead <= 1.5 else "OVER"
        print(f"{name:16} {r['bare']:6.2f}s {r['bottle']:6.2f}s {r['bottle'] / r['bare']:5.1f}x {overhead:8.2f}s "
              f"{r['up']:5.2f}s {r['down']:5.2f}s  {verdict}")


if __name__ == "__main__":
    main()
