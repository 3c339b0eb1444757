"""``npm ci`` of a real lockfile in a bottle, against the same image in a plain container.

    .venv/bin/python benchmarks/npm_ci.py [--engine docker|podman] [--runs 1]
        [--sidecar-version TAG ...]

- The lockfile: ``package.json`` with 18 popular packages, locked by the
  host's npm (``npm install --package-lock-only``); 150 or more packages.
- The registry is whatever ``npm config get registry`` says on the host, and
  its address whatever the host resolves it to, at run time. The bottle's
  manifest allows that host and, in case it resolves to a reserved address
  (a TLS-intercepting mirror, a corporate proxy), that exact address, and
  names the host's CA bundle as ``egress.extra_ca_file``.
- The image: the base image with Debian's npm, built once.
- ``direct``: ``<engine> run --rm`` on the engine's default network, npm
  trusting the host's CA bundle; ``bottle``: ``bottle start -y --cwd PROJECT
  -- npm ci`` (through the guard). Both with an empty npm cache, as uid 1000,
  ``--ignore-scripts``.
- ``--sidecar-version`` (repeatable) runs the bottle with each tag of the
  sidecar images (``BOTTLE_SIDECAR_VERSION``), e.g. images built from before
  and after a change; default: the current one. They must exist
  (``BOTTLE_SIDECAR_VERSION=TAG bottle images build``).

Prints the median wall time of each, and the ratio to direct. Target: <= 1.2x.
Nothing passes or fails. Removes what it created except the npm image.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from lifecycle import BASE, engine_setup, timed

HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
NPM_IMAGE = "localhost/bottle-bench-npm:bookworm"
AGENT_UID = 1000
PACKAGES = (
    "express", "lodash", "axios", "react", "react-dom", "chalk", "commander", "yargs", "debug",
    "moment", "uuid", "dotenv", "eslint", "webpack", "prettier", "typescript", "mocha", "glob",
)
DOCKERFILE = f"""ARG BASE={BASE}
FROM ${{BASE}}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends npm ca-certificates \\
    && rm -rf /var/lib/apt/lists/*
"""
NPM_CI = "npm ci --ignore-scripts --no-audit --no-fund --cache /tmp/npm-cache"
TARGET = 1.2


def registry() -> tuple[str, str, str]:
    """(URL, host, the address the host resolves it to), from the host's npm."""
    url = subprocess.run(["npm", "config", "get", "registry"], capture_output=True, text=True, check=True).stdout.strip()
    host = urlsplit(url).hostname or ""
    if not host:
        raise SystemExit(f"npm config get registry gave no URL with a host: {url!r}")
    address = socket.getaddrinfo(host, 443, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    return url, host, str(address)


def make_project(work: Path) -> tuple[Path, int]:
    project = work / "project"
    project.mkdir()
    (project / "package.json").write_text(json.dumps(
        {"name": "npm-ci-bench", "version": "1.0.0", "private": True,
         "dependencies": {name: "*" for name in PACKAGES}}, indent=2))
    subprocess.run(["npm", "install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--no-fund"],
                   cwd=project, check=True, capture_output=True)
    lock = json.loads((project / "package-lock.json").read_text())
    return project, len([k for k in lock.get("packages", {}) if k])


def ensure_image(engine: str, work: Path) -> None:
    if subprocess.run([engine, "image", "inspect", NPM_IMAGE], capture_output=True).returncode == 0:
        return
    print(f"building {NPM_IMAGE} in {engine} (Debian's npm) ...", flush=True)
    context = work / "npm-image"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    subprocess.run([engine, "build", "-t", NPM_IMAGE, "--build-arg", f"BASE={BASE}", str(context)],
                   check=True, capture_output=True)


def fresh_copy(project: Path, work: Path, name: str) -> Path:
    dest = work / name
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(project, dest)
    for path in [dest, *dest.rglob("*")]:
        os.chown(path, AGENT_UID, AGENT_UID)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["docker", "podman"], default="docker")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--sidecar-version", action="append", dest="versions")
    args = parser.parse_args()
    from bottle.cli.images import sidecar_version

    versions = args.versions or [sidecar_version()]
    url, host, address = registry()
    _, cli, extra, _ = engine_setup(args.engine)
    work = Path(tempfile.mkdtemp(prefix="bottle-bench-npm-"))
    try:
        ensure_image(args.engine, work)
        project, locked = make_project(work)
        manifest = work / "bottle.json"
        manifest.write_text(json.dumps({"agents": {"npmbench": {
            "image": NPM_IMAGE,
            "env": {"npm_config_registry": url},
            "bottle": {"egress": {"allow": [host, address], "extra_ca_file": HOST_CA_BUNDLE}},
        }}}))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("BOTTLE_", "XDG_"))},
            **extra,
            "XDG_STATE_HOME": f"{work}/state",
            "XDG_CONFIG_HOME": f"{work}/config",
            "XDG_CACHE_HOME": f"{work}/cache",
            "BOTTLE_MANIFEST": str(manifest),
        }
        direct_times: list[float] = []
        bottle_times: dict[str, list[float]] = {v: [] for v in versions}
        for _ in range(args.runs):
            copy = fresh_copy(project, work, "direct")
            direct_times.append(timed([
                args.engine, "run", "--rm", "--user", f"{AGENT_UID}:{AGENT_UID}", "-e", "HOME=/tmp",
                "-e", f"npm_config_registry={url}", "-e", "NODE_EXTRA_CA_CERTS=/etc/host-ca.crt",
                "-v", f"{HOST_CA_BUNDLE}:/etc/host-ca.crt:ro", "-v", f"{copy}:/work", "-w", "/work",
                NPM_IMAGE, "sh", "-c", NPM_CI,
            ], env, str(work))[0])
            for version in versions:
                copy = fresh_copy(project, work, "bottle")
                started = time.perf_counter()
                elapsed, _ = timed([*cli, "start", "npmbench", "-y", "--cwd", str(copy), "--", "sh", "-c", NPM_CI],
                                   {**env, "BOTTLE_SIDECAR_VERSION": version}, str(work))
                bottle_times[version].append(elapsed)
                if not (copy / "node_modules" / "express" / "package.json").is_file():
                    raise SystemExit(f"npm ci in the bottle ({version}) left no node_modules after {time.perf_counter() - started:.1f}s")
        direct = statistics.median(direct_times)
        print(f"npm ci of {locked} locked packages ({len(PACKAGES)} direct dependencies), {args.engine}, "
              f"median of {args.runs} run(s); registry from `npm config get registry`")
        print(f"{'':28} {'seconds':>8} {'vs direct':>10}  target <= {TARGET}x")
        print(f"{'direct (plain container)':28} {direct:8.1f} {1.0:9.2f}x")
        for version, times in bottle_times.items():
            t = statistics.median(times)
            print(f"{'bottle, sidecars ' + version:28} {t:8.1f} {t / direct:9.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
