"""The egress proxy: the agent's HTTP(S) proxy when its bottle has routes.

A mitmproxy addon (hooks only; decisions come from
``bottle.core.egress_policy.decide_proxy_request``). mitmproxy runs it in
upstream mode, so everything it forwards goes on through the guard, whose CA
it trusts.

- ``requestheaders``  git push -> 403 before any route is looked at; a
                      tunnel the guard just refused -> the guard's own
                      answer (its 403 and body naming the rule) instead of
                      mitmproxy's 502 (see ``refusal``); on a route, every
                      credential header the agent sent is removed and the
                      real one (from ``BOTTLE_TOKEN_<n>``) injected;
                      elsewhere only Proxy-Authorization goes. Request
                      bodies stream: the guard scans them.
- ``responseheaders`` responses stream; on a route, the injected secret is
                      masked wherever the upstream echoes it back.
- ``tcp_start``/``udp_start``  only HTTP(S) is proxied.

The routes come from the same policy file the guard reads, reloaded when it
changes; a missing or invalid file means every request is refused.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Mapping
from datetime import datetime
from urllib.parse import quote

from mitmproxy import ctx, http, tcp, udp

from bottle.core.audit import audit_record, encode_audit_line
from bottle.core.egress_policy import (
    RULE_NOT_HTTP,
    RULE_POLICY_UNAVAILABLE,
    RULE_ROUTE_TOKEN_MISSING,
    decode_policy,
    decide_proxy_request,
)
from bottle.core.naming import ROLE_EGRESS_PROXY
from bottle.core.routing import Route, RouteTable, render_auth_header
from bottle.core.secretscan import BrokeredSecret, SecretScanner
from bottle.sidecars._mitm import RULE_HEADER, deny_response, now
from bottle.sidecars._shared import DEFAULT_POLICY_FILE, AuditLog, WatchedFile, load_tokens
from bottle.sidecars.egress_proxy.refusal import GuardRefusal, ask_guard
from bottle.sidecars.egress_proxy.scrub import Masker

_ROUTE = "bottle.route"
# The audit rule of a relayed refusal that does not name one of the guard's rules.
RULE_GUARD_REFUSED = "guard-refused"


class _Routes:
    """What one policy load gives the proxy: the table, and the agent's name for 403 texts."""

    def __init__(self, table: RouteTable, agent: str) -> None:
        self.table = table
        self.agent = agent


def _parse_routes(data: bytes) -> _Routes:
    doc = decode_policy(data)
    return _Routes(RouteTable(doc.routes), doc.agent)


class EgressProxyAddon:
    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._environ = environ if environ is not None else os.environ
        self._clock = clock or now
        self._routes_file: WatchedFile[_Routes] | None = None
        self._tokens: dict[str, str] = {}
        self._scanner = SecretScanner()
        self._audit: AuditLog | None = None
        self._setup_error: str | None = "not configured yet"

    def load(self, loader) -> None:  # type: ignore[no-untyped-def]
        loader.add_option("bottle_policy", str, DEFAULT_POLICY_FILE, "Egress policy file (JSON) with the routes.")
        loader.add_option("bottle_secrets_file", str, "", "Optional JSON file of BOTTLE_TOKEN_<n> secrets.")
        loader.add_option("bottle_audit_log", str, "", "Audit log (JSONL); empty writes to stdout.")
        loader.add_option("bottle_identity", str, "", "The bottle identity, for audit lines.")

    def configure(self, updated: set[str]) -> None:
        errors = []
        if updated & {"bottle_policy", "bottle_secrets_file"} or self._routes_file is None:
            self._routes_file = WatchedFile(ctx.options.bottle_policy, _parse_routes)
            try:
                self._tokens = load_tokens(self._environ, ctx.options.bottle_secrets_file or None)
            except ValueError as exc:
                self._tokens = {}
                errors.append(str(exc))
            # The audit lines must not carry the secrets this proxy injects.
            self._scanner = SecretScanner(BrokeredSecret(slot, v) for slot, v in self._tokens.items())
        if "bottle_audit_log" in updated or self._audit is None:
            if self._audit is not None:
                self._audit.close()
            try:
                self._audit = AuditLog(ctx.options.bottle_audit_log or None)
            except OSError as exc:
                self._audit = None
                errors.append(f"cannot open the audit log {ctx.options.bottle_audit_log}: {exc.strerror or exc}")
        self._setup_error = "; ".join(errors) or None
        if errors:
            print(f"bottle egress proxy: refusing every request: {self._setup_error}", file=sys.stderr)

    def _current(self) -> tuple[_Routes | None, str]:
        if self._setup_error is not None:
            return None, self._setup_error
        assert self._routes_file is not None
        routes, error = self._routes_file.get()
        return routes, error or ""

    def _audit_flow(self, flow: http.HTTPFlow, allow: bool, rule: str, reason: str, route: str = "", status: int = 0) -> bool:
        req = flow.request
        record = audit_record(
            now=self._clock(),
            identity=ctx.options.bottle_identity,
            role=ROLE_EGRESS_PROXY,
            event="request",
            allow=allow,
            rule=rule,
            reason=reason,
            method=req.method,
            scheme=req.scheme,
            host=req.host,
            port=req.port,
            path=req.path,
            route=route,
            status=status,
        )
        return self._audit is not None and self._audit.write(encode_audit_line(record, self._scanner))

    def _deny(self, flow: http.HTTPFlow, rule: str, reason: str, agent: str = "") -> None:
        self._audit_flow(flow, False, rule, reason, status=403)
        flow.response = deny_response(rule, reason, role="egress proxy", host=flow.request.host, agent=agent)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.error is not None:
            return
        routes, why = self._current()
        if routes is None:
            self._deny(flow, RULE_POLICY_UNAVAILABLE, f"the egress proxy has no valid policy ({why})")
            return
        req = flow.request
        decision = decide_proxy_request(req.method, req.host, req.port, req.path, routes.table)
        if decision.action == "deny":
            self._deny(flow, decision.rule, decision.reason, routes.agent)
            return
        if _tunnel_not_established(flow):
            refusal = await self._guard_refusal(flow)
            if refusal is not None:
                self._relay(flow, refusal)
                return
        for name in decision.strip:
            req.headers.pop(name, None)
        route = decision.route
        if route is not None:
            token = self._tokens.get(route.token_slot)
            if not token:
                self._deny(
                    flow,
                    RULE_ROUTE_TOKEN_MISSING,
                    f"route {route.upstream} has no secret ({route.token_slot} is not set in the egress proxy)",
                    routes.agent,
                )
                return
            name, value = render_auth_header(route, token)
            req.headers[name] = value
            flow.metadata[_ROUTE] = route
        if not self._audit_flow(flow, True, decision.rule, decision.reason, route.upstream if route else ""):
            self._deny(flow, RULE_POLICY_UNAVAILABLE, "the audit log cannot be written")
            return
        # The guard scans bodies; here they only pass through, without buffering.
        req.stream = True

    async def _guard_refusal(self, flow: http.HTTPFlow) -> GuardRefusal | None:
        via = flow.server_conn.via
        assert via is not None
        try:
            return await ask_guard(via[1], flow.request.host, flow.request.port)
        except (OSError, ValueError, asyncio.TimeoutError):
            # The guard cannot be asked: mitmproxy's own attempt fails with a 502, which is right then.
            return None

    def _relay(self, flow: http.HTTPFlow, refusal: GuardRefusal) -> None:
        rule = refusal.header(RULE_HEADER) or RULE_GUARD_REFUSED
        req = flow.request
        reason = f"the guard refused CONNECT {req.host}:{req.port} with {refusal.status} {refusal.reason}".rstrip()
        self._audit_flow(flow, False, rule, reason, status=refusal.status)
        headers = http.Headers([(k.encode("latin-1"), v.encode("latin-1")) for k, v in refusal.headers])
        flow.response = http.Response.make(refusal.status, refusal.body, headers)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None:
            return
        route: Route | None = flow.metadata.get(_ROUTE)
        if route is None:
            response.stream = True
            return
        token = self._tokens.get(route.token_slot, "")
        needles = _echo_forms(route, token)
        if needles:
            fields = []
            for key, value in response.headers.fields:
                for needle in needles:
                    value = value.replace(needle, b"*" * len(needle))
                fields.append((key, value))
            response.headers.fields = tuple(fields)
        encoding = response.headers.get("content-encoding", "").strip().lower()
        response.stream = Masker(needles).stream if encoding in ("", "identity") else True

    def tcp_start(self, flow: tcp.TCPFlow) -> None:
        self._refuse(flow, "a raw TCP stream (not HTTP)")

    def udp_start(self, flow: udp.UDPFlow) -> None:
        self._refuse(flow, "a UDP stream")

    def _refuse(self, flow: tcp.TCPFlow | udp.UDPFlow, what: str) -> None:
        server = flow.server_conn
        record = audit_record(
            now=self._clock(),
            identity=ctx.options.bottle_identity,
            role=ROLE_EGRESS_PROXY,
            event="connect",
            allow=False,
            rule=RULE_NOT_HTTP,
            reason=f"{what}; only HTTP and HTTPS leave a bottle",
            host=str(server.address[0]) if server.address else "",
            port=int(server.address[1]) if server.address else 0,
        )
        if self._audit is not None:
            self._audit.write(encode_audit_line(record, self._scanner))
        if flow.killable:
            flow.kill()

    def done(self) -> None:
        if self._audit is not None:
            self._audit.close()


def _tunnel_not_established(flow: http.HTTPFlow) -> bool:
    """Whether forwarding ``flow`` needs a new CONNECT to the guard.

    mitmproxy opens the tunnel when the agent's TLS handshake starts; a
    tunnel the guard refused is closed and never reached TLS. A connection
    that carried requests and then closed is reopened by mitmproxy without
    asking here (the guard answers that CONNECT; a refusal then is a 502).
    """
    server = flow.server_conn
    return (
        flow.request.scheme == "https"
        and server.via is not None
        and not server.connected
        and server.timestamp_tls_setup is None
    )


def _echo_forms(route: Route, token: str) -> list[bytes]:
    if not token:
        return []
    _, header_value = render_auth_header(route, token)
    forms = {token, header_value, quote(token, safe="")}
    return [f.encode("utf-8", "surrogateescape") for f in forms if f]


addons = [EgressProxyAddon()]
