"""Supervise latency on real engines: filing -> visible on the host, and approve -> the agent's request passes.

For each engine, a supervised bottle (guard + supervise sidecar + agent, see
``tests/integration/supervise_world.py``) is brought up once; then, per run:

- *filing*: a process in the agent notes the time and POSTs an allow-host
  proposal to the sidecar; the host polls the bottle's queue (every 2 ms)
  and notes when ``HostQueue.scan`` returns it. (``bottle dashboard``
  refreshes every 0.5 s on top of this.)
- *approve*: a process in the agent requests a not-yet-allowed host through
  the guard every 20 ms; the host notes the time, calls
  ``ProposalDesk.approve`` (which returns once the guard confirmed), and the
  agent reports when its first request passed.

Prints p50 / p95 / max per engine (and how long ``approve`` itself took, until
the guard's confirmation); target: both p95 <= 1 s.

    .venv/bin/python benchmarks/supervise_latency.py                     # every engine that answers
    .venv/bin/python benchmarks/supervise_latency.py --engine docker --runs 30
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from supervise_world import BASE_IMAGE, ENGINES, IDENTITY, SupervisedBottle, build_images, make_runtime  # noqa: E402

FILE_SCRIPT = (
    "import json, sys, time, urllib.request as u\n"
    "o = u.build_opener(u.ProxyHandler({}))\n"
    "body = json.dumps({'kind': 'allow-host', 'host': sys.argv[1], 'reason': 'benchmark'}).encode()\n"
    "t = time.time()\n"
    "r = o.open(u.Request('http://supervise:8080/proposals', body, {'Content-Type': 'application/json'}))\n"
    "print(json.dumps({'sent': t, 'id': json.loads(r.read())['id']}))\n"
)
POLL_SCRIPT = (
    "import sys, time, urllib.request, urllib.error\n"
    "end = time.time() + 30\n"
    "while time.time() < end:\n"
    "    try:\n"
    "        if urllib.request.urlopen(sys.argv[1], timeout=5).status == 200:\n"
    "            print(time.time()); sys.exit(0)\n"
    "    except urllib.error.HTTPError:\n"
    "        pass\n"
    "    time.sleep(0.02)\n"
    "sys.exit(1)\n"
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def measure(bottle: SupervisedBottle, runs: int) -> tuple[list[float], list[float], list[float]]:
    from bottle.adapters.local.proposal_queue import HostQueue

    queue = HostQueue(bottle.store, IDENTITY)
    filing: list[float] = []
    approving: list[float] = []
    confirming: list[float] = []
    for i in range(runs):
        host = f"b{i % 64}.example.test"
        # filing -> visible on the host
        known = {p.id for p in queue.scan()[0]}
        result: dict[str, object] = {}
        thread = threading.Thread(target=lambda: result.update(out=bottle.exec("agent", ["python3", "-c", FILE_SCRIPT, host])))
        thread.start()
        seen_at = None
        while seen_at is None:
            if {p.id for p in queue.scan()[0]} - known:
                seen_at = time.time()
            else:
                time.sleep(0.002)
        thread.join()
        rc, out = result["out"]  # type: ignore[misc]
        assert rc == 0, out
        sent = json.loads(out.strip().splitlines()[-1])
        filing.append(seen_at - sent["sent"])
        # approve -> the agent's next request passes
        poll: dict[str, object] = {}
        poller = threading.Thread(target=lambda: poll.update(out=bottle.exec("agent", ["python3", "-c", POLL_SCRIPT, f"http://{host}/"])))
        poller.start()
        time.sleep(0.3)  # the agent is being refused by now
        started = time.time()
        outcome = bottle.desk.approve(IDENTITY, int(sent["id"]), decided_by="benchmark")
        assert outcome.ok, outcome.message
        confirming.append(outcome.seconds)
        poller.join()
        rc, out = poll["out"]  # type: ignore[misc]
        assert rc == 0, out
        approving.append(float(out.strip().splitlines()[-1]) - started)
    return filing, approving, confirming


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", action="append", choices=ENGINES)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    from bottle.ports.errors import RuntimeFailure

    print(f"{'engine':<16} {'measure':<26} {'p50':>7} {'p95':>7} {'max':>7}  (seconds, {args.runs} runs)")
    for name in args.engine or ENGINES:
        run_id = secrets.token_hex(4)
        labels = {"io.bottle.test-run": run_id, "io.bottle.test-case": "supervise-benchmark"}
        try:
            runtime = make_runtime(name)
            info = runtime.info()
            if not runtime.image_exists(BASE_IMAGE):
                raise RuntimeFailure(f"no {BASE_IMAGE}")
        except RuntimeFailure as exc:
            print(f"{name:<16} skipped: {exc}")
            continue
        work = Path(tempfile.mkdtemp(prefix="bottle-supervise-bench-"))
        bottle = None
        try:
            images = build_images(runtime, work, run_id, labels)
            bottle = SupervisedBottle(runtime, images, labels, rootless=info.rootless)
            filing, approving, confirming = measure(bottle, args.runs)
            for label, values in (("filing -> visible on host", filing), ("approve -> request passes", approving),
                                  ("approve returns (confirmed)", confirming)):
                print(f"{name:<16} {label:<26} {statistics.median(values):7.3f} {percentile(values, 0.95):7.3f} "
                      f"{max(values):7.3f}")
        finally:
            try:
                if bottle is not None:
                    bottle.close()
                runtime.remove_labelled(labels)
            except RuntimeFailure as exc:
                print(f"{name:<16} note: cleanup: {exc}; `bottle cleanup` or label io.bottle.test-run={run_id}")
            runtime.close()
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
