"""What the chain tests and benchmark run inside a client container: HTTPS requests, one JSON line out.

Python's standard library only (the client image has python3 and nothing
else of ours). The proxy comes from ``HTTPS_PROXY`` unless ``--direct``;
the CA bundle from ``SSL_CERT_FILE``.

    egress_client.py request METHOD URL [--header 'Name: value']... [--data TEXT]
        -> {"status", "headers", "body"}; a tunnel the proxy refuses is a status too
    egress_client.py small URL COUNT [--direct]
        -> {"count", "seconds", "latencies_ms"}: COUNT GETs on one keep-alive connection
    egress_client.py download URL [--direct]
        -> {"bytes", "seconds"}: one GET, body read and dropped in 1 MiB pieces
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import sys
import time
from urllib.parse import urlsplit


def connect(url: str, direct: bool, timeout: float = 60) -> tuple[http.client.HTTPSConnection, str]:
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    # EGRESS_CLIENT_PROXY / EGRESS_CLIENT_CA: another proxy (the guard alone) and the CA it signs with.
    context = ssl.create_default_context(cafile=os.environ.get("EGRESS_CLIENT_CA") or os.environ.get("SSL_CERT_FILE") or None)
    proxy = "" if direct else (os.environ.get("EGRESS_CLIENT_PROXY") or os.environ.get("HTTPS_PROXY")
                               or os.environ.get("https_proxy") or "")
    if proxy:
        p = urlsplit(proxy)
        conn = http.client.HTTPSConnection(p.hostname or "", p.port or 8080, context=context, timeout=timeout)
        conn.set_tunnel(host, port)
    else:
        conn = http.client.HTTPSConnection(host, port, context=context, timeout=timeout)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return conn, target


def request(args: argparse.Namespace) -> dict[str, object]:
    conn, target = connect(args.url, args.direct)
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    body = args.data.encode() if args.data is not None else None
    try:
        conn.request(args.method, target, body=body, headers=headers)
        response = conn.getresponse()
        return {"status": response.status, "headers": [list(h) for h in response.getheaders()],
                "body": response.read().decode("latin-1")}
    except OSError as exc:
        # http.client reports a refused CONNECT as "Tunnel connection failed: 403 Forbidden".
        text = str(exc)
        code = next((int(w) for w in text.split() if w.isdigit() and len(w) == 3), 0)
        return {"status": code, "headers": [], "body": text, "error": True}
    finally:
        conn.close()


def small(args: argparse.Namespace) -> dict[str, object]:
    conn, target = connect(args.url, args.direct)
    latencies = []
    start = time.perf_counter()
    for _ in range(args.count):
        t0 = time.perf_counter()
        conn.request("GET", target)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"status {response.status}")
        latencies.append((time.perf_counter() - t0) * 1000)
    seconds = time.perf_counter() - start
    conn.close()
    return {"count": args.count, "seconds": seconds, "latencies_ms": latencies}


def download(args: argparse.Namespace) -> dict[str, object]:
    conn, target = connect(args.url, args.direct, timeout=600)
    start = time.perf_counter()
    conn.request("GET", target)
    response = conn.getresponse()
    if response.status != 200:
        raise SystemExit(f"status {response.status}: {response.read(500)!r}")
    total = 0
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    while True:
        n = response.readinto(view)
        if not n:
            break
        total += n
    seconds = time.perf_counter() - start
    conn.close()
    return {"bytes": total, "seconds": seconds}


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("request")
    r.add_argument("method")
    r.add_argument("url")
    r.add_argument("--header", action="append", default=[])
    r.add_argument("--data")
    r.add_argument("--direct", action="store_true")
    s = sub.add_parser("small")
    s.add_argument("url")
    s.add_argument("count", type=int)
    s.add_argument("--direct", action="store_true")
    d = sub.add_parser("download")
    d.add_argument("url")
    d.add_argument("--direct", action="store_true")
    args = parser.parse_args()
    result = {"request": request, "small": small, "download": download}[args.cmd](args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
