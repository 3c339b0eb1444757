"""How fast the egress core decides, in-process on one core (issue 4's decision benchmark).

    .venv/bin/python benchmarks/egress_decisions.py [--runs 3000]

Times the same functions the guard calls, with a policy shaped like a real
bottle's (a dozen allow patterns, two routes, two brokered secrets):

- a URL decision: ``decide_request`` on a typical API URL with 8 headers
  (allowlist, git-push check, Host check, secret scan of host, path, query
  and headers) — target median <= 100 us;
- a 10 KB body scan: ``SecretScanner.scan`` of a JSON request body, and of a
  base64-heavy one (the slow path: every run is decoded) — target <= 2 ms;
- streaming: ``StreamScan`` throughput over a 16 MiB body in 64 KiB chunks.

Prints medians and decisions per second. Figures only; nothing passes or fails.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable

from bottle.core.egress_policy import EgressPolicy, EgressRequest, decide_request
from bottle.core.routing import build_route_table

URL_TARGET_US = 100.0
BODY_TARGET_US = 2000.0


class _Route:
    def __init__(self, upstream: str, auth_scheme: str, token_ref: str) -> None:
        self.upstream, self.auth_scheme, self.token_ref = upstream, auth_scheme, token_ref


def policy() -> EgressPolicy:
    table = build_route_table(
        [
            _Route("https://api.anthropic.com", "x-api-key", "ANTHROPIC_API_KEY"),
            _Route("https://api.github.com/repos", "bearer", "GITHUB_TOKEN"),
        ]
    )
    allow = [
        "pypi.org", "files.pythonhosted.org", "*.pythonhosted.org", "registry.npmjs.org", "deb.debian.org",
        "security.debian.org", "github.com", "codeload.github.com", "objects.githubusercontent.com",
        "*.crates.io", "proxy.golang.org", "sum.golang.org",
    ]
    secrets = {
        "BOTTLE_TOKEN_0": "sk-ant-api03-" + "".join(random.Random(1).choices("abcdefghijkABCDEFGHIJK0123456789_-", k=95)),
        "BOTTLE_TOKEN_1": "ghp_" + "".join(random.Random(2).choices("abcdefghijkABCDEFGHIJK0123456789", k=36)),
    }
    return EgressPolicy.build(allow, table, secrets=secrets, agent="claude")


def url_request() -> EgressRequest:
    headers = (
        ("Host", "registry.npmjs.org"),
        ("User-Agent", "npm/10.8.2 node/v22.11.0 linux x64 workspaces/false"),
        ("Accept", "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("npm-command", "install"),
        ("npm-session", "5f3c2a1b9e8d7c6a"),
        ("Connection", "keep-alive"),
        ("Authorization", "Bearer bottle-placeholder-not-a-secret"),
    )
    return EgressRequest(
        method="GET",
        host="registry.npmjs.org",
        port=443,
        path="/@anthropic-ai%2fclaude-code/-/claude-code-1.0.128.tgz?cache=force&integrity=sha512-abc",
        headers=headers,
    )


def json_body(size: int) -> bytes:
    text = open(__file__, encoding="utf-8").read()
    content = (text * (size // len(text) + 1))[: size - 200]
    body = json.dumps({"model": "claude-sonnet", "max_tokens": 4096, "messages": [{"role": "user", "content": content}]})
    return body.encode()[:size]


def b64_body(size: int) -> bytes:
    blob = base64.b64encode(os.urandom(size)).decode()[: size - 40]
    return json.dumps({"image": blob}).encode()[:size]


def median_us(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """(median, p99) of single calls in microseconds, after a warm-up."""
    for _ in range(min(200, runs)):
        fn()
    gc.disable()
    try:
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            fn()
            samples.append((time.perf_counter_ns() - t0) / 1000)
    finally:
        gc.enable()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3000)
    args = parser.parse_args()

    pol = policy()
    req = url_request()
    verdict = decide_request(req, pol)
    if not verdict.allow:
        print(f"unexpected verdict on the benchmark URL: {verdict.rule}: {verdict.reason}", file=sys.stderr)
        return 1

    url_med, url_p99 = median_us(lambda: decide_request(req, pol), args.runs)
    print(f"URL decision (8 headers)      median {url_med:8.1f} us  p99 {url_p99:8.1f} us  "
          f"{1e6 / url_med:10,.0f} decisions/s  target <= {URL_TARGET_US:.0f} us: {'met' if url_med <= URL_TARGET_US else 'MISSED'}")

    body_runs = max(200, args.runs // 5)
    for label, body in (("10 KB JSON body scan", json_body(10 * 1024)), ("10 KB base64 body scan", b64_body(10 * 1024))):
        med, p99 = median_us(lambda b=body: pol.scanner.scan(b, "body"), body_runs)
        print(f"{label:<29} median {med:8.1f} us  p99 {p99:8.1f} us  {1e6 / med:10,.0f} scans/s      "
              f"target <= {BODY_TARGET_US:.0f} us: {'met' if med <= BODY_TARGET_US else 'MISSED'}")

    with_body = EgressRequest(method="POST", host="api.anthropic.com", port=443, path="/v1/messages",
                              headers=req.headers[1:], body=json_body(10 * 1024))
    med, _ = median_us(lambda: decide_request(with_body, pol), body_runs)
    print(f"request + 10 KB body decision median {med:8.1f} us")

    chunk = json_body(64 * 1024)
    total = 16 * 1024 * 1024
    scan = pol.scanner.stream("body")
    t0 = time.perf_counter()
    for _ in range(total // len(chunk)):
        scan.feed(chunk)
    scan.finish()
    seconds = time.perf_counter() - t0
    print(f"streamed body scan            {total / seconds / 1e6:8.1f} MB/s (64 KiB chunks, 16 MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
