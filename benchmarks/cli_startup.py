"""Wall time of starting the CLI, against the interpreter's own start as the floor.

    .venv/bin/python benchmarks/cli_startup.py [--runs 15]

Prints the median of N runs of ``python -c pass``, ``bottle --help`` and
``bottle start claude --dry-run`` (against docs/examples/claude-code.json),
and each one's distance from the floor. Target: ``--help`` within 0.25 s of
the floor. Figures only; nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "claude-code.json"
HELP_TARGET = 0.25


def bottle_script() -> str:
    candidate = Path(sys.executable).with_name("bottle")
    if not candidate.exists():
        sys.exit(f"no bottle script next to {sys.executable}; run with the venv's python after pip install -e .")
    return str(candidate)


def median_seconds(argv: list[str], runs: int, env: dict[str, str], cwd: str) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    bottle = bottle_script()
    with tempfile.TemporaryDirectory() as tmp:
        # An empty user config and state dir: the figures measure bottle, not this machine's manifests.
        env = {**os.environ, "XDG_CONFIG_HOME": f"{tmp}/config", "XDG_STATE_HOME": f"{tmp}/state"}
        env.pop("BOTTLE_MANIFEST", None)
        cases = [
            ("python -c pass (floor)", [sys.executable, "-c", "pass"]),
            ("bottle --help", [bottle, "--help"]),
            ("bottle start claude --dry-run", [bottle, "start", "claude", "--dry-run", "--manifest", str(EXAMPLE)]),
        ]
        results = [(label, median_seconds(argv, args.runs, env, tmp)) for label, argv in cases]
    floor = results[0][1]
    print(f"median of {args.runs} runs (python {sys.version.split()[0]}, {os.cpu_count()} cpus)")
    print(f"{'command':<34}{'median':>10}{'above floor':>14}")
    for label, seconds in results:
        print(f"{label:<34}{seconds * 1000:>8.1f}ms{(seconds - floor) * 1000:>12.1f}ms")
    help_delta = results[1][1] - floor
    verdict = "within" if help_delta <= HELP_TARGET else "OVER"
    print(f"--help is {help_delta * 1000:.1f} ms above the floor: {verdict} the {HELP_TARGET * 1000:.0f} ms target")


if __name__ == "__main__":
    main()
