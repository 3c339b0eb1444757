"""The guard's lookup cache against a resolver that drops parallel queries: concurrent connections, cache off and on.

    .venv/bin/python benchmarks/guard_lookups.py [--connections 32] [--rounds 3] [--busy-ms 2]

Everything runs on 127.0.0.1, in this process: the guard addon in a
mitmproxy master (as in its sidecar, without the container), a plain-HTTP
upstream, and the DNS stand-in of ``tests/unit/dns_standin.py`` answering
for the upstream's name. The stand-in drops parallel queries on purpose:
each answer takes ``--busy-ms``, and a query that arrives meanwhile is lost,
so the client only gets it answered when it retries (dnspython: after 2 s,
giving up after 5 s) — what resolvers behind conntrack races do (glibc:
after 5 s).

Each round opens ``--connections`` proxy connections at once, one request
each (``Connection: close``), so the guard opens as many upstream
connections, each needing the name's addresses:

- ``cache off``: every connection looks the name up itself (what the guard
  did before the cache; it looked up twice for plain HTTP, once before the
  request and once before connecting);
- ``cache on``: the guard's ``CachedResolver``; the cache starts empty in
  every round, so each round pays one real lookup.

Prints, per mode, the best and the worst round's wall time, the requests
that failed, and the DNS queries the stand-in got (and dropped). Nothing
passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "unit"))

from dns_standin import DnsStandIn  # noqa: E402
from mitmproxy import options  # noqa: E402
from mitmproxy.tools.dump import DumpMaster  # noqa: E402

from bottle.core.egress_policy import encode_policy, policy_document  # noqa: E402
from bottle.core.routing import normalize_host  # noqa: E402
from bottle.sidecars._mitm import prune_addons  # noqa: E402
from bottle.sidecars.guard.addon import GuardAddon, Resolver  # noqa: E402
from bottle.sidecars.guard.resolver import CachedResolver, SystemLookup  # noqa: E402

NAME = "registry.bench.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Uncached:
    """The guard before the cache: a lookup for every question, failures as no address."""

    def __init__(self, lookup: SystemLookup) -> None:
        self._lookup = lookup

    async def __call__(self, host: str, port: int) -> list[str]:
        try:
            return list((await self._lookup(normalize_host(host))).addresses)
        except Exception as exc:
            raise OSError(str(exc)) from None


class ColdStart:
    """The resolver the guard uses, made anew by ``reset`` (so every round starts with an empty cache)."""

    def __init__(self, make: Callable[[], Resolver]) -> None:
        self._make = make
        self.reset()

    def reset(self) -> None:
        self._current = self._make()

    async def __call__(self, host: str, port: int) -> list[str]:
        return await self._current(host, port)


async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def one_request(proxy_port: int, upstream_port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
        target = f"{NAME}:{upstream_port}"
        writer.write(f"GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        return answer.startswith(b"HTTP/1.1 200")
    except (OSError, asyncio.TimeoutError):
        return False


async def run_mode(cached: bool, work: Path, dns_server: DnsStandIn, args: argparse.Namespace) -> dict[str, float]:
    lookup = SystemLookup(hosts_file=str(work / "hosts"), resolv_conf=str(work / "resolv.conf"), port=dns_server.port)
    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    upstream_port = server.sockets[0].getsockname()[1]
    policy = work / "policy" / "egress.json"
    policy.parent.mkdir(exist_ok=True)
    policy.write_bytes(encode_policy(policy_document([NAME], allow_private=("127.0.0.0/8",), identity="bench", agent="bench")))
    proxy_port = free_port()
    master = DumpMaster(options.Options(listen_host="127.0.0.1", listen_port=proxy_port, confdir=str(work / "mitmproxy")),
                        with_termlog=False, with_dumper=False)
    prune_addons(master.addons)
    resolver = ColdStart((lambda: CachedResolver(lookup)) if cached else (lambda: Uncached(lookup)))
    master.addons.add(GuardAddon(environ={}, resolver=resolver))
    master.options.update(bottle_policy=str(policy), bottle_audit_log=str(work / f"audit-{cached}.jsonl"),
                          bottle_identity="bench")
    running = asyncio.ensure_future(master.run())
    for _ in range(200):
        if await one_request(proxy_port, upstream_port) or running.done():
            break
        await asyncio.sleep(0.05)
    times, failed = [], 0
    queries_before, dropped_before = len(dns_server.queries), dns_server.dropped
    for _ in range(args.rounds):
        resolver.reset()
        start = time.perf_counter()
        results = await asyncio.gather(*(one_request(proxy_port, upstream_port) for _ in range(args.connections)))
        times.append(time.perf_counter() - start)
        failed += results.count(False)
    master.shutdown()
    await running
    server.close()
    return {"best": min(times), "worst": max(times), "failed": failed,
            "queries": (len(dns_server.queries) - queries_before) / args.rounds,
            "dropped": (dns_server.dropped - dropped_before) / args.rounds}


async def main_async(args: argparse.Namespace, work: Path) -> None:
    (work / "hosts").write_text("127.0.0.1 localhost\n")
    with DnsStandIn({NAME: (["127.0.0.1"], 60)}, busy=args.busy_ms / 1000, drop_parallel=True) as dns_server:
        dns_server.write_resolv_conf(work / "resolv.conf")
        results = {}
        for cached in (False, True):
            results[cached] = await run_mode(cached, work, dns_server, args)
    print(f"guard lookups: {args.connections} connections at once, {args.rounds} rounds, a resolver that drops "
          f"parallel queries ({args.busy_ms} ms per answer)")
    print(f"{'':10} {'best s':>8} {'worst s':>8} {'failed':>7} {'DNS queries/round':>18} {'dropped/round':>14}")
    for cached, r in results.items():
        label = "cache on" if cached else "cache off"
        print(f"{label:10} {r['best']:8.3f} {r['worst']:8.3f} {r['failed']:7d} {r['queries']:18.1f} {r['dropped']:14.1f}")
    off, on = results[False], results[True]
    print(f"speed-up (best rounds): {off['best'] / on['best']:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--busy-ms", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bottle-bench-lookups-") as tmp:
        asyncio.run(main_async(args, Path(tmp)))


if __name__ == "__main__":
    main()
