#!/usr/bin/env python3
"""bottle-propose: file supervise proposals from inside a bottle (Python 3 standard library only).

Fetch it from the sidecar and run it, in any agent image with python3:

    curl -s "$BOTTLE_SUPERVISE_URL/client.py" -o /tmp/bottle-propose
    python3 /tmp/bottle-propose allow-host pypi.org --reason "install the test deps"
    python3 /tmp/bottle-propose wait 1

Commands:
    allow-host HOST --reason R
    route UPSTREAM --token-ref REF [--auth-scheme S] --reason R
    capability DOCKERFILE_PATH --reason R      (- reads stdin)
    status ID | wait ID [--timeout S] | ls

Exit codes: 0 filed / applied / pending status shown; 1 refused or failed;
3 rejected; 4 still pending when ``wait`` timed out; 2 usage.
Without curl: ``python3 -c "import urllib.request as u; print(u.urlopen('http://supervise:8080/client.py').read().decode())"``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://supervise:8080"
# The sidecar sits on the bottle's internal network: never through the proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _call(base: str, method: str, path: str, body: dict | None = None, timeout: float = 30) -> tuple[int, dict | list]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base.rstrip("/") + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, {"error": f"HTTP {exc.code}"}


def _show(proposal: dict) -> str:
    line = f"proposal {proposal['id']} ({proposal['kind']}): {proposal['status']}"
    if proposal.get("note"):
        line += f" - {proposal.get('decided_by', '')}: {proposal['note']}"
    if proposal.get("error"):
        line += f" - error: {proposal['error']}"
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bottle-propose", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("BOTTLE_SUPERVISE_URL") or DEFAULT_URL)
    parser.add_argument("--json", action="store_true", help="print the proposal as JSON")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("allow-host")
    p.add_argument("host")
    p.add_argument("--reason", required=True)
    p = sub.add_parser("route")
    p.add_argument("upstream")
    p.add_argument("--token-ref", required=True)
    p.add_argument("--auth-scheme", default="bearer")
    p.add_argument("--reason", required=True)
    p = sub.add_parser("capability")
    p.add_argument("dockerfile")
    p.add_argument("--reason", required=True)
    for name in ("status", "wait"):
        p = sub.add_parser(name)
        p.add_argument("id", type=int)
        if name == "wait":
            p.add_argument("--timeout", type=float, default=300)
    sub.add_parser("ls")
    args = parser.parse_args(argv)

    if args.command == "allow-host":
        status, out = _call(args.url, "POST", "/proposals", {"kind": "allow-host", "host": args.host, "reason": args.reason})
    elif args.command == "route":
        status, out = _call(args.url, "POST", "/proposals", {
            "kind": "add-route", "upstream": args.upstream, "token_ref": args.token_ref,
            "auth_scheme": args.auth_scheme, "reason": args.reason,
        })
    elif args.command == "capability":
        text = sys.stdin.read() if args.dockerfile == "-" else open(args.dockerfile, encoding="utf-8").read()
        status, out = _call(args.url, "POST", "/proposals", {"kind": "capability-change", "dockerfile": text, "reason": args.reason})
    elif args.command == "status":
        status, out = _call(args.url, "GET", f"/proposals/{args.id}")
    elif args.command == "wait":
        status, out = _call(args.url, "GET", f"/proposals/{args.id}/wait?timeout={args.timeout}", timeout=args.timeout + 30)
    else:
        status, out = _call(args.url, "GET", "/proposals")
        if isinstance(out, list):
            print(json.dumps(out, indent=2) if args.json else "\n".join(_show(p) for p in out) or "no proposals")
            return 0
    if status >= 400 or not isinstance(out, dict) or "error" in out:
        message = out.get("error") if isinstance(out, dict) else f"HTTP {status}"
        hint = out.get("hint") if isinstance(out, dict) else None
        print(f"bottle-propose: {message}" + (f"\nhint: {hint}" if hint else ""), file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2) if args.json else _show(out))
    if args.command == "wait":
        return {"applied": 0, "rejected": 3, "failed": 1}.get(out["status"], 4)
    return 0


if __name__ == "__main__":
    sys.exit(main())
