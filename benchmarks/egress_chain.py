"""The egress chain on a real engine: what egress proxy + guard cost against going straight to the upstream.

    .venv/bin/python benchmarks/egress_chain.py [--runtime docker|podman|podman_rootless]
        [--requests 2000] [--size-mib 1024] [--rounds 2]

Sets up one bottle's chain with ``tests/integration/_chain.py`` (the same
containers the integration test uses): a client on the internal network
whose HTTPS goes through the egress proxy and the guard, a second client on
the egress network that reaches the same TLS stub upstream directly.

- small requests: ``--requests`` GETs of a ~60-byte JSON answer on one
  keep-alive HTTPS connection, through the chain and direct; requests/s and
  the latency the chain adds at p50 and p99. Target: chain >= 40% of direct.
- download: one ``--size-mib`` GET through the chain and direct; MiB/s.
  Target: chain >= 50% of direct.
- both also through the guard alone (the client using the guard as its
  proxy), to show what each hop costs.
- each proxy's peak memory: the mitmproxy process's peak resident set
  (``VmHWM`` of PID 1 in the sidecar) after everything, and the container's
  cgroup peak where the engine exposes it (cgroup v1 ``memory.max_usage_in_bytes``
  or v2 ``memory.peak``; page cache included). Target: <= 250 MiB each.

The best of ``--rounds`` is kept for each figure (the machine is shared).
Prints figures and targets; nothing passes or fails. Removes what it created.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))

from _chain import (  # noqa: E402
    UPSTREAM_HOST,
    ChainWorld,
    build_images,
    check_engine,
    make_runtime,
    retry_store_races,
)

REQS_TARGET = 0.40
DOWNLOAD_TARGET = 0.50
MEMORY_TARGET_MIB = 250.0
MIB = 1 << 20


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


PATHS = ("direct", "guard", "chain")


def _run(world: ChainWorld, args: list[str], path: str) -> dict[str, Any]:
    if path == "direct":
        return world.client_json(args + ["--direct"], role="direct")
    return world.client_json(args, role="client", env=ChainWorld.GUARD_ONLY if path == "guard" else None)


def small(world: ChainWorld, count: int, path: str) -> dict[str, float]:
    r = _run(world, ["small", f"https://{UPSTREAM_HOST}/small", str(count)], path)
    lat = r["latencies_ms"]
    return {"rps": r["count"] / r["seconds"], "p50": statistics.median(lat), "p99": percentile(lat, 99)}


def download(world: ChainWorld, size: int, path: str) -> dict[str, float]:
    r = _run(world, ["download", f"https://{UPSTREAM_HOST}/bytes/{size}"], path)
    if r["bytes"] != size:
        raise SystemExit(f"download got {r['bytes']} bytes of {size}")
    return {"mibps": r["bytes"] / MIB / r["seconds"], "seconds": r["seconds"]}


def peak_memory(world: ChainWorld, role: str) -> dict[str, float | None]:
    """Peak RSS of the proxy process, and the container cgroup's peak if readable (MiB)."""
    rc, out = world.exec(role, ["sh", "-c", "grep VmHWM /proc/1/status; cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes"
                                            " /sys/fs/cgroup/memory.peak 2>/dev/null; true"])
    hwm = cgroup = None
    for line in out.decode().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
        elif line.strip().isdigit():
            cgroup = int(line.strip()) / MIB
    return {"rss_peak": hwm, "cgroup_peak": cgroup}


def verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime", default="docker", choices=("docker", "podman", "podman_rootless"))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    runtime = make_runtime(args.runtime)
    info = check_engine(args.runtime, runtime)
    run_id = secrets.token_hex(4)
    labels = {"io.bottle.test-run": run_id, "io.bottle.test-case": "egress-chain-bench"}
    work = Path(tempfile.mkdtemp(prefix="bottle-chain-bench-"))
    try:
        t0 = time.monotonic()
        images = build_images(runtime, work, run_id, labels)
        world = ChainWorld(runtime, images, labels, rootless=info.rootless, token="tok-bench-" + secrets.token_hex(16),
                           direct_client=True)
        print(f"engine: {args.runtime} {info.version} (rootless={info.rootless}); set up in {time.monotonic() - t0:.0f}s")

        # Warm up every path (TLS sessions, mitmproxy's certificate minting, imports).
        for path in PATHS:
            small(world, 50, path)
        best_s: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):
            for path in PATHS:
                r = small(world, args.requests, path)
                if path not in best_s or r["rps"] > best_s[path]["rps"]:
                    best_s[path] = r
        direct_s, chain_s = best_s["direct"], best_s["chain"]
        ratio = chain_s["rps"] / direct_s["rps"]
        print(f"\nsmall keep-alive HTTPS GETs ({args.requests} per run, best of {args.rounds}):")
        for path, label in (("direct", "direct"), ("guard", "guard only"), ("chain", "chain")):
            r = best_s[path]
            print(f"  {label:10s} {r['rps']:8.0f} req/s   p50 {r['p50']:6.2f} ms   p99 {r['p99']:6.2f} ms")
        print(f"  added by the chain: p50 +{chain_s['p50'] - direct_s['p50']:.2f} ms, p99 +{chain_s['p99'] - direct_s['p99']:.2f} ms")
        print(f"  chain / direct: {ratio:.0%} (target >= {REQS_TARGET:.0%}): {verdict(ratio >= REQS_TARGET)}")

        size = args.size_mib * MIB
        best_d: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):
            for path in PATHS:
                r = download(world, size, path)
                if path not in best_d or r["mibps"] > best_d[path]["mibps"]:
                    best_d[path] = r
        ratio = best_d["chain"]["mibps"] / best_d["direct"]["mibps"]
        print(f"\n{args.size_mib} MiB download (best of {args.rounds}):")
        for path, label in (("direct", "direct"), ("guard", "guard only"), ("chain", "chain")):
            r = best_d[path]
            print(f"  {label:10s} {r['mibps']:8.1f} MiB/s ({r['seconds']:.1f} s)")
        print(f"  chain / direct: {ratio:.0%} (target >= {DOWNLOAD_TARGET:.0%}): {verdict(ratio >= DOWNLOAD_TARGET)}")

        print(f"\npeak memory after all of the above (target <= {MEMORY_TARGET_MIB:.0f} MiB each):")
        for role in ("egress-proxy", "guard"):
            m = peak_memory(world, role)
            rss = m["rss_peak"]
            cg = f"{m['cgroup_peak']:.0f} MiB" if m["cgroup_peak"] is not None else "not exposed"
            ok = rss is not None and rss <= MEMORY_TARGET_MIB
            rss_text = f"{rss:.0f} MiB" if rss is not None else "unknown"
            print(f"  {role:13s} process peak RSS {rss_text:>8s}   container cgroup peak {cg:>9s}   {verdict(ok)}")
        return 0
    finally:
        try:
            retry_store_races(lambda: runtime.remove_labelled(labels), "removing the benchmark's resources")
        finally:
            runtime.close()
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
