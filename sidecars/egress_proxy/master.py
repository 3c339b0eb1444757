"""Running mitmdump with only the addons a bottle proxy needs.

mitmdump loads some 35 addons (replay, map-local, HAR export, sticky
cookies, the flow dumper...), and mitmproxy calls every hook of every
request on each of them: with flow_detail=0 they do nothing, yet the
dispatch alone cost about a third of the egress proxy's CPU per small
request (benchmarks/egress_chain.py). ``run_lean_mitmdump`` builds the same
master as ``bottle.sidecars._mitm.run_mitmdump`` — so every command-line
option still parses — and then drops every addon not in ``KEEP`` from the
hook chain. Their options stay registered and are ignored; none of them is
set by bottle's entrypoints (``scripts``, ``proxyauth``, ``upstream_auth``,
``save_stream_file``, replays and rewrites would silently do nothing).

Pinned to mitmproxy 11.0 like ``_mitm.abort_upstream``: it edits the
addon manager's ``chain`` and ``lookup``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

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


def run_lean_mitmdump(addon_factory: Callable[[], object], args: Sequence[str]) -> None:
    """mitmdump with ``args``, only the ``KEEP`` addons, and ours (added last, so it sees flows after them)."""
    from mitmproxy.tools import cmdline
    from mitmproxy.tools.dump import DumpMaster
    from mitmproxy.tools.main import run

    class LeanMaster(DumpMaster):
        def __init__(self, options, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(options, **kwargs)
            prune_addons(self.addons)
            missing = KEEP - set(self.addons.lookup)
            if missing:
                print(f"bottle: mitmproxy has no addon named {', '.join(sorted(missing))}", file=sys.stderr)
            self.addons.add(addon_factory())

    run(LeanMaster, cmdline.mitmdump, list(args))
