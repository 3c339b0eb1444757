"""The few mitmproxy-facing helpers both egress addons need (no decisions here)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

from mitmproxy import ctx, http

from bottle.core.egress_policy import denial_text

DENIED_BY_HEADER = "X-Bottle-Denied-By"
RULE_HEADER = "X-Bottle-Rule"


def now() -> datetime:
    return datetime.now(timezone.utc)


def deny_response(rule: str, reason: str, *, role: str, host: str = "", agent: str = "") -> http.Response:
    """The 403 a denied client gets: the rule, the (secret-free) reason and how to ask for access."""
    body = denial_text(rule, reason, role=role, host=host, agent=agent)
    return http.Response.make(
        403,
        body.encode("utf-8"),
        {
            "Content-Type": "text/plain; charset=utf-8",
            DENIED_BY_HEADER: role,
            RULE_HEADER: rule,
            "Cache-Control": "no-store",
        },
    )


def request_headers(flow: http.HTTPFlow) -> tuple[tuple[str, str], ...]:
    """The request's headers as (name, value) pairs, duplicates kept, with HTTP/2's authority as Host."""
    req = flow.request
    pairs = list(req.headers.items(multi=True))
    if not any(name.lower() == "host" for name, _ in pairs) and req.host_header:
        pairs.insert(0, ("Host", req.host_header))
    return tuple(pairs)


def abort_upstream(flow: http.HTTPFlow) -> bool:
    """Cut the flow's server connection now, mid-request; True if it was found and closed.

    mitmproxy 11 cannot kill a flow whose body is already streaming
    (mitmproxy issue 4711): the rest of the body would be withheld, but the
    end of the message (a chunked terminator) would still be sent and the
    server would act on a truncated request. Closing the connection makes
    the server see an aborted request instead. Uses the proxy server's
    connection table, which is not a public API: pinned to mitmproxy 11.0.
    """
    try:
        proxyserver = ctx.master.addons.get("proxyserver")
        handler = proxyserver.connections.get(flow.client_conn.id) if proxyserver is not None else None
        if handler is None or flow.server_conn not in handler.transports:
            return False
        handler.close_connection(flow.server_conn)
        return True
    except (AttributeError, KeyError, RuntimeError):
        return False


# What a bottle proxy runs on: option handling, the proxy server and its
# layers, TLS interception, the block of non-local clients, refusal of h2c
# upgrades, startup error reporting and warnings to stderr.
KEEP = frozenset({"core", "block", "proxyserver", "nextlayer", "tlsconfig", "disableh2c", "errorcheck", "termlog"})


def prune_addons(manager: object, keep: frozenset[str] = KEEP) -> list[str]:
    """Remove every addon whose name is not in ``keep`` from ``manager``'s hook chain; the removed names."""
    from mitmproxy.addonmanager import _get_name

    chain = list(manager.chain)  # type: ignore[attr-defined]
    removed = [_get_name(a) for a in chain if _get_name(a) not in keep]
    manager.chain = [a for a in chain if _get_name(a) in keep]  # type: ignore[attr-defined]
    for name in removed:
        manager.lookup.pop(name, None)  # type: ignore[attr-defined]
    return removed


def run_mitmdump(addon_factory: Callable[[], object], args: Sequence[str]) -> None:
    """Run mitmdump with ``args``, only the ``KEEP`` addons, and ours loaded before the options are parsed.

    Loading the addon into the master (rather than with ``-s script.py``)
    means its ``--set bottle_*`` options exist when the command line is read,
    and no script file is watched for changes. mitmdump's other 35 or so
    addons (replay, map-local, HAR export, the flow dumper...) stay out of
    the hook chain: with flow_detail=0 they do nothing, yet dispatching
    every hook to them cost about a third of a proxy's CPU per small request
    (benchmarks/egress_chain.py). Their options still parse and are ignored;
    no entrypoint sets one. Pinned to mitmproxy 11.0: it edits the addon
    manager's ``chain`` and ``lookup``.
    """
    from mitmproxy.tools import cmdline
    from mitmproxy.tools.dump import DumpMaster
    from mitmproxy.tools.main import run

    class BottleMaster(DumpMaster):
        def __init__(self, options, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(options, **kwargs)
            prune_addons(self.addons)
            missing = KEEP - set(self.addons.lookup)
            if missing:
                print(f"bottle: mitmproxy has no addon named {', '.join(sorted(missing))}", file=sys.stderr)
            self.addons.add(addon_factory())

    run(BottleMaster, cmdline.mitmdump, list(args))
