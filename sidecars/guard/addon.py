"""The guard: the only container of a bottle with a way out for HTTP(S).

A mitmproxy addon made of hooks only; every decision is a call into
``bottle.core.egress_policy``:

- ``http_connect``     CONNECT target: allowlist, literal address, secret in
                       the name, then the addresses the name resolves to.
- ``server_connect``   the authoritative check, right before mitmproxy
                       connects: resolve, check every address, and *pin* the
                       connection to the checked address (and the TLS name to
                       the checked host), so DNS answering differently a
                       moment later (rebinding) changes nothing.
- ``server_connected`` the address actually connected must be one the policy
                       permits; otherwise every request on it is refused.
- ``requestheaders``   git push, allowlist, Host header, secrets in host,
                       path, query and headers; then the body plan: small
                       bodies are buffered and scanned whole, larger ones
                       stream through a chunk scanner with bounded memory.
- ``request``          the verdict on a buffered body.
- ``responseheaders``  responses stream (the guard does not buffer them).

Fail closed: no policy (missing, unreadable, invalid), unreadable secrets or
an unwritable audit log mean every request is denied. Every decision writes
one audit line.

Live policy: a background task checks the policy file and the grants file
beside it (``grants.json``, temporary host grants from approved proposals)
every ``POLICY_POLL_SECONDS``, not only when a request comes, and writes a
``policy-loaded`` audit line naming the digests of the files it loaded.
``bottle proposals approve`` waits for that line: an approval is
acknowledged only once the guard enforces it. Grants are enforced here,
where every request passes and the clock is at hand, so a grant ends even
if no host process is left to withdraw it: a ``duration`` grant stops at its
``expires_at``; a ``single-use`` grant is spent by the first request it
admits (audited as ``grant-used``; the host drops it from the file later).
At start the guard reads the ``grant-used`` lines of its own audit log back,
so a grant spent before a restart stays spent; a log it cannot read back
denies everything.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from mitmproxy import ctx, exceptions, http, tcp, udp
from mitmproxy.proxy import server_hooks

from bottle.core.audit import audit_record, encode_audit_line
from bottle.core.egress_policy import (
    RULE_NOT_HTTP,
    RULE_POLICY_UNAVAILABLE,
    RULE_PRIVATE_ADDRESS,
    ConnectDecision,
    EgressPolicy,
    EgressRequest,
    PolicyDocument,
    Verdict,
    address_permitted,
    body_encoding_denied,
    decide_body,
    decide_connect,
    decide_request,
    decide_target,
    decode_policy,
    policy_from_document,
    policy_unavailable,
)
from bottle.core.naming import ROLE_GUARD
from bottle.core.proposals import (
    GRANTS_FILE,
    GrantsDocument,
    HostGrant,
    decode_grants,
    digest,
    grant_route,
    live_grants,
    policy_loaded_reason,
    policy_with_grants,
)
from bottle.core.routing import is_ip_literal, normalize_host
from bottle.core.secretscan import Finding, SecretScanner, StreamScan
from bottle.sidecars._mitm import abort_upstream, deny_response, now, request_headers
from bottle.sidecars._shared import DEFAULT_POLICY_FILE, AuditLog, WatchedFile, load_tokens
from bottle.sidecars.guard.bodies import content_codings, decode_body
from bottle.sidecars.guard.resolver import system_resolver
from bottle.sidecars.guard.spent import RULE_GRANT_USED, read_spent_grants

DEFAULT_BODY_BUFFER = 1 << 20
# How often the policy and grants files are checked without a request.
POLICY_POLL_SECONDS = 0.1
RULE_POLICY_LOADED = "policy-loaded"
RULE_GRANT_EXPIRED = "grant-expired"
# A decoded (decompressed) buffered body may grow this much before it is refused.
DECODE_FACTOR = 8

Resolver = Callable[[str, int], Awaitable[list[str]]]

_POLICY = "bottle.policy"
_STREAM = "bottle.stream"
_AUDITED = "bottle.audited"


class GuardAddon:
    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        resolver: Resolver | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._environ = environ if environ is not None else os.environ
        self._resolver = resolver or system_resolver()
        self._clock = clock or now
        self._policy_file: WatchedFile[tuple[PolicyDocument, str]] | None = None
        self._grants_file: WatchedFile[tuple[GrantsDocument, str]] | None = None
        # The policy built from the document and the live grants, and what it was built from.
        self._built: EgressPolicy | None = None
        self._built_key: tuple[object, ...] | None = None
        self._built_error: str = ""
        self._grant_patterns: dict[str, HostGrant] = {}
        self._live_ids: set[int] = set()
        self._used: set[int] = set()
        self._seen_loads: tuple[object, ...] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._secrets: dict[str, str] = {}
        self._setup_error: str | None = "not configured yet"
        self._audit: AuditLog | None = None
        # Redacts audit lines while there is no policy (and so no scanner of brokered secrets).
        self._bare_scanner = SecretScanner()
        # server connection id -> the host name it was opened for / the address it was pinned to
        self._origin: dict[str, str] = {}
        self._pinned: dict[str, str] = {}
        self._tainted: set[str] = set()

    # -- options ----------------------------------------------------------------
    def load(self, loader) -> None:  # type: ignore[no-untyped-def]
        loader.add_option("bottle_policy", str, DEFAULT_POLICY_FILE, "Egress policy file (JSON); reloaded on change.")
        loader.add_option("bottle_secrets_file", str, "", "Optional JSON file of BOTTLE_TOKEN_<n> secrets.")
        loader.add_option(
            "bottle_grants", str, "", "Temporary host grants (JSON); default: grants.json beside the policy file."
        )
        loader.add_option("bottle_audit_log", str, "", "Audit log (JSONL); empty writes to stdout.")
        loader.add_option("bottle_identity", str, "", "The bottle identity, for audit lines.")
        loader.add_option(
            "bottle_body_buffer",
            int,
            DEFAULT_BODY_BUFFER,
            "Request bodies up to this many bytes are buffered and scanned whole; larger ones stream.",
        )

    def configure(self, updated: set[str]) -> None:
        if "bottle_body_buffer" in updated and ctx.options.bottle_body_buffer < 0:
            raise exceptions.OptionsError("bottle_body_buffer must be 0 or more")
        errors = []
        if updated & {"bottle_policy", "bottle_secrets_file"} or self._policy_file is None:
            try:
                self._secrets = load_tokens(self._environ, ctx.options.bottle_secrets_file or None)
            except ValueError as exc:
                self._secrets = {}
                errors.append(str(exc))
            self._policy_file = WatchedFile(ctx.options.bottle_policy, lambda data: (decode_policy(data), digest(data)))
            grants_path = ctx.options.bottle_grants or os.path.join(
                os.path.dirname(ctx.options.bottle_policy) or ".", GRANTS_FILE
            )
            self._grants_file = WatchedFile(grants_path, lambda data: (decode_grants(data), digest(data)))
            self._built_key = None
        if "bottle_audit_log" in updated or self._audit is None:
            if self._audit is not None:
                self._audit.close()
                self._audit = None
            path = ctx.options.bottle_audit_log
            try:
                # Spent single-use grants stay spent across a restart. Read
                # before opening for append: a FIFO there must not block the start.
                self._used |= read_spent_grants(path) if path else set()
            except (OSError, ValueError) as exc:
                why = exc.strerror or exc if isinstance(exc, OSError) else exc
                errors.append(f"cannot read the spent grants back from the audit log {path}: {why}")
            else:
                try:
                    self._audit = AuditLog(path or None)
                except OSError as exc:
                    errors.append(f"cannot open the audit log {path}: {exc.strerror or exc}")
        self._setup_error = "; ".join(errors) or None
        if errors:
            print(f"bottle guard: denying everything: {self._setup_error}", file=sys.stderr)

    def _current(self) -> tuple[EgressPolicy | None, str]:
        if self._setup_error is not None:
            return None, self._setup_error
        if self._policy_file is None:
            return None, "no policy configured"
        loaded, error = self._policy_file.get()
        if loaded is None:
            return None, error or "no policy"
        document, policy_digest = loaded
        grants, grants_digest, grants_error = self._grants()
        live = live_grants(grants, self._clock(), self._used)
        key = (policy_digest, grants_digest, grants_error, tuple(g.proposal for g in live))
        if key != self._built_key:
            self._rebuild(key, document, grants, live)
        if self._built is None:
            return None, self._built_error
        return self._built, ""

    def _grants(self) -> tuple[GrantsDocument, str, str]:
        """The grants document, its digest, and why it is ignored ('' when it is not)."""
        assert self._grants_file is not None
        loaded, error = self._grants_file.get()
        if loaded is not None:
            return loaded[0], loaded[1], ""
        if not os.path.lexists(self._grants_file.path):
            return GrantsDocument(), digest(None), ""
        # An unreadable grants file grants nothing (closed); the policy still holds.
        return GrantsDocument(), "", error or "invalid grants file"

    def _rebuild(
        self, key: tuple[object, ...], document: PolicyDocument, grants: GrantsDocument, live: tuple[HostGrant, ...]
    ) -> None:
        timed = {g.proposal for g in grants.grants if g.mode == "duration"}
        expired = (self._live_ids & timed) - {g.proposal for g in live}
        try:
            policy = policy_from_document(policy_with_grants(document, live), self._secrets)
        except ValueError as exc:
            self._built, self._built_error = None, f"{ctx.options.bottle_policy}: {exc}"
        else:
            self._built, self._built_error = policy, ""
        self._built_key = key
        self._grant_patterns = {g.pattern: g for g in live if g.pattern not in document.allow}
        self._live_ids = {g.proposal for g in live}
        for proposal in sorted(expired):
            self._audit_line(
                self._built, event="grant", allow=False, rule=RULE_GRANT_EXPIRED,
                reason=f"the timed grant of proposal {proposal} expired", route=grant_route(proposal),
            )

    def poll_policy(self) -> None:
        """Look at the policy and grants files now; audit a (re)load, with the digests, or a failure."""
        if self._policy_file is None or self._grants_file is None:
            return
        policy, why = self._current()
        loads = (self._policy_file.loads, self._grants_file.loads, os.path.lexists(self._grants_file.path))
        if loads == self._seen_loads:
            return
        self._seen_loads = loads
        if policy is None or self._built_key is None:
            self._audit_line(None, event="policy", allow=False, rule=RULE_POLICY_UNAVAILABLE, reason=why)
            return
        policy_digest, grants_digest, grants_error = self._built_key[:3]
        if grants_error:
            self._audit_line(policy, event="policy", allow=False, rule="grants-unavailable", reason=str(grants_error))
            return
        self._audit_line(
            policy, event="policy", allow=True, rule=RULE_POLICY_LOADED,
            reason=policy_loaded_reason(str(policy_digest), str(grants_digest)),
        )

    async def _watch(self) -> None:
        while True:
            try:
                self.poll_policy()
            except Exception as exc:  # the watcher must outlive any one bad file
                print(f"bottle guard: policy watch: {type(exc).__name__}: {exc}", file=sys.stderr)
            await asyncio.sleep(POLICY_POLL_SECONDS)

    def running(self) -> None:
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    def _spend_grant(self, policy: EgressPolicy, host: str, port: int) -> None:
        """A single-use grant is spent by the first request it admits."""
        pattern = policy.allowlist.matching_pattern(host, port)
        grant = self._grant_patterns.get(pattern or "")
        if grant is None or grant.mode != "single-use" or grant.proposal in self._used:
            return
        self._used.add(grant.proposal)
        self._audit_line(
            policy, event="grant", allow=True, rule=RULE_GRANT_USED,
            reason=f"the single-use grant of proposal {grant.proposal} ({grant.pattern}) was used",
            host=host, port=port, route=grant_route(grant.proposal),
        )

    # -- audit -----------------------------------------------------------------
    def _audit_line(self, policy: EgressPolicy | None, **fields: object) -> bool:
        scanner = policy.scanner if policy is not None else self._bare_scanner
        record = audit_record(now=self._clock(), identity=ctx.options.bottle_identity, role=ROLE_GUARD, **fields)  # type: ignore[arg-type]
        line = encode_audit_line(record, scanner)
        return self._audit is not None and self._audit.write(line)

    def _audit_flow(
        self,
        flow: http.HTTPFlow,
        policy: EgressPolicy | None,
        event: str,
        allow: bool,
        rule: str,
        reason: str,
        findings: tuple[Finding, ...] = (),
        route: str = "",
        host: str | None = None,
        status: int = 0,
    ) -> bool:
        req = flow.request
        return self._audit_line(
            policy,
            event=event,
            allow=allow,
            rule=rule,
            reason=reason,
            method=req.method,
            scheme=req.scheme,
            host=host if host is not None else req.host,
            port=req.port,
            path=req.path if req.method != "CONNECT" else "",
            findings=findings,
            route=route,
            status=status,
        )

    def _deny(
        self,
        flow: http.HTTPFlow,
        policy: EgressPolicy | None,
        verdict: Verdict | ConnectDecision,
        *,
        event: str,
        host: str,
    ) -> None:
        findings = getattr(verdict, "findings", ())
        flow.metadata[_AUDITED] = True
        if event == "request" and flow.response is None and _body_too_big_to_refuse(flow):
            # A 403 here would make mitmproxy read the whole body into memory
            # first; cut the request off instead.
            self._audit_flow(flow, policy, event, False, verdict.rule, verdict.reason, findings, host=host)
            if flow.killable:
                flow.kill()
            return
        self._audit_flow(flow, policy, event, False, verdict.rule, verdict.reason, findings, host=host, status=403)
        agent = policy.agent if policy is not None else ""
        flow.response = deny_response(verdict.rule, verdict.reason, role="guard", host=host, agent=agent)

    # -- connections -------------------------------------------------------------
    async def _connect_decision(self, host: str, port: int, policy: EgressPolicy) -> ConnectDecision:
        target = decide_target(host, port, policy)
        if not target.allow or target.address is not None:
            return target
        try:
            addresses = await self._resolver(host, port)
        except OSError:
            addresses = []
        return decide_connect(host, port, addresses, policy)

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        policy, why = self._current()
        host = flow.request.host
        if policy is None:
            self._deny(flow, None, policy_unavailable(why), event="connect", host=host)
            return
        decision = await self._connect_decision(host, flow.request.port, policy)
        if not decision.allow:
            self._deny(flow, policy, decision, event="connect", host=host)

    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        server = data.server
        if server.via is not None or not server.address:
            return
        host, port = server.address[0], server.address[1]
        policy, why = self._current()
        if policy is None:
            verdict = policy_unavailable(why)
            self._audit_line(None, event="connect", allow=False, rule=verdict.rule, reason=verdict.reason, host=host, port=port)
            server.error = f"bottle guard: {verdict.rule}: {verdict.reason}"
            return
        decision = await self._connect_decision(host, port, policy)
        self._audit_line(
            policy,
            event="connect",
            allow=decision.allow,
            rule=decision.rule,
            reason=decision.reason,
            host=host,
            port=port,
            address=decision.address or "",
        )
        if not decision.allow or decision.address is None:
            server.error = f"bottle guard: {decision.rule}: {decision.reason}"
            return
        if not is_ip_literal(host):
            name = normalize_host(host)
            self._origin[server.id] = name
            # Verify the upstream certificate against the name that was
            # checked, not whatever SNI the client chose (domain fronting).
            if server.sni is None:
                server.sni = name
        server.address = (decision.address, port)
        self._pinned[server.id] = decision.address

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        server = data.server
        if server.via is not None or not server.peername:
            return
        peer = str(server.peername[0])
        policy, _ = self._current()
        pinned = self._pinned.get(server.id)
        ok = policy is not None and address_permitted(peer, policy)
        if pinned is not None:
            try:
                ok = ok and normalize_host(peer) == normalize_host(pinned)
            except ValueError:
                ok = False
        if not ok:
            self._tainted.add(server.id)
            self._audit_line(
                policy,
                event="connect",
                allow=False,
                rule=RULE_PRIVATE_ADDRESS,
                reason=f"connected to {peer}, which the policy does not permit",
                host=self._origin.get(server.id, str(server.address[0]) if server.address else ""),
                port=int(server.address[1]) if server.address else 0,
                address=peer,
            )

    def server_disconnected(self, data: server_hooks.ServerConnectionHookData) -> None:
        sid = data.server.id
        self._origin.pop(sid, None)
        self._pinned.pop(sid, None)
        self._tainted.discard(sid)

    # -- requests ----------------------------------------------------------------
    def _target_host(self, flow: http.HTTPFlow) -> str:
        # Inside a CONNECT tunnel mitmproxy names the request after the
        # server address, which server_connect replaced by the pinned IP.
        return self._origin.get(flow.server_conn.id, flow.request.host)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.error is not None:
            return
        host = self._target_host(flow)
        policy, why = self._current()
        if policy is None:
            self._deny(flow, None, policy_unavailable(why), event="request", host=host)
            return
        if flow.server_conn.id in self._tainted:
            verdict = Verdict(False, RULE_PRIVATE_ADDRESS, f"the connection to {host} ended at an address the policy does not permit")
            self._deny(flow, policy, verdict, event="request", host=host)
            return
        req = flow.request
        request = EgressRequest(
            method=req.method,
            host=host,
            port=req.port,
            path=req.path,
            scheme=req.scheme,
            headers=request_headers(flow),
        )
        verdict = decide_request(request, policy)
        if verdict.allow and self._grant_patterns:
            # Spent before any await, so two requests racing cannot both use it.
            self._spend_grant(policy, host, req.port)
        if verdict.allow and flow.server_conn.peername is None:
            # Not connected yet (plain HTTP, or a lazy connection): check the
            # name's addresses now to answer with a 403, not a 502 later.
            # server_connect still has the last word.
            connect = await self._connect_decision(host, req.port, policy)
            if not connect.allow:
                verdict = Verdict(False, connect.rule, connect.reason)
        if not verdict.allow:
            self._deny(flow, policy, verdict, event="request", host=host)
            return
        flow.metadata[_POLICY] = (policy, verdict)
        self._plan_body(flow, policy, host)

    def _plan_body(self, flow: http.HTTPFlow, policy: EgressPolicy, host: str) -> None:
        headers = flow.request.headers
        length_text = headers.get("content-length")
        length: int | None = None
        if length_text is not None and length_text.strip().isdigit():
            length = int(length_text.strip())
        if length is not None and length <= ctx.options.bottle_body_buffer:
            return  # buffered by mitmproxy, scanned whole in `request`
        codings = content_codings(headers.get("content-encoding"))
        if codings:
            self._deny(flow, policy, body_encoding_denied(",".join(codings)), event="request", host=host)
            return
        verdict = flow.metadata[_POLICY][1]
        if not self._audit_flow(flow, policy, "request", True, verdict.rule, verdict.reason, route=verdict.route, host=host):
            # No audit line, no request: fail closed.
            self._deny(flow, policy, policy_unavailable("the audit log cannot be written"), event="request", host=host)
            return
        scan = policy.scanner.stream("body")
        flow.metadata[_STREAM] = scan
        flow.request.stream = self._stream(flow, policy, scan, host)

    def _stream(self, flow: http.HTTPFlow, policy: EgressPolicy, scan: StreamScan, host: str) -> Callable[[bytes], bytes]:
        state = {"denied": False}

        def forward(chunk: bytes) -> bytes:
            if state["denied"]:
                return b""
            if chunk == b"":
                return scan.finish()
            out, new = scan.feed(chunk)
            if not new:
                return out
            state["denied"] = True
            verdict = decide_body(scan.findings)
            self._audit_flow(flow, policy, "body", False, verdict.rule, verdict.reason, verdict.findings, host=host)
            flow.metadata[_AUDITED] = True
            # Nothing more leaves: withhold the rest (and the bytes held
            # back, which hold the secret), drop the chunked terminator, and
            # cut the upstream connection so the server sees an aborted request.
            flow.request.headers.pop("transfer-encoding", None)
            abort_upstream(flow)
            if flow.killable:
                flow.kill()
            return b""

        return forward

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.metadata.get(_AUDITED):
            return
        held = flow.metadata.get(_POLICY)
        if held is None:
            return
        policy, verdict = held
        host = self._target_host(flow)
        if flow.metadata.get(_STREAM) is not None:
            return  # audited before the body started to stream; a finding is audited where it is found
        raw = flow.request.raw_content or b""
        try:
            body = decode_body(
                raw,
                flow.request.headers.get("content-encoding"),
                max(ctx.options.bottle_body_buffer, len(raw)) * DECODE_FACTOR,
            )
        except ValueError as exc:
            self._deny(flow, policy, body_encoding_denied(str(exc)), event="request", host=host)
            return
        findings = policy.scanner.scan(body, "body") if body else []
        body_verdict = decide_body(findings) if findings else Verdict(True, verdict.rule, verdict.reason)
        if not body_verdict.allow:
            self._deny(flow, policy, body_verdict, event="request", host=host)
            return
        if not self._audit_flow(flow, policy, "request", True, verdict.rule, verdict.reason, route=verdict.route, host=host):
            # No audit line, no request: fail closed.
            self._deny(flow, policy, policy_unavailable("the audit log cannot be written"), event="request", host=host)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            flow.response.stream = True

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        # The upgrade request passed the rules; its messages are scanned like bodies.
        if flow.websocket is None or not flow.websocket.messages:
            return
        message = flow.websocket.messages[-1]
        if not message.from_client:
            return
        policy, why = self._current()
        findings = policy.scanner.scan(message.content, "body") if policy is not None else []
        if policy is not None and not findings:
            return
        verdict = decide_body(findings) if policy is not None else policy_unavailable(why)
        self._audit_flow(flow, policy, "body", False, verdict.rule, verdict.reason, verdict.findings, host=self._target_host(flow))
        message.drop()
        if flow.killable:
            flow.kill()

    def tcp_start(self, flow: tcp.TCPFlow) -> None:
        self._refuse_stream(flow, "a raw TCP stream (not HTTP)")

    def udp_start(self, flow: udp.UDPFlow) -> None:
        self._refuse_stream(flow, "a UDP stream")

    def _refuse_stream(self, flow: tcp.TCPFlow | udp.UDPFlow, what: str) -> None:
        # Only HTTP(S) leaves through the guard: anything else (SSH to a git
        # host through CONNECT, say) would pass unscanned.
        policy, _ = self._current()
        server = flow.server_conn
        host = self._origin.get(server.id, str(server.address[0]) if server.address else "")
        self._audit_line(
            policy,
            event="connect",
            allow=False,
            rule=RULE_NOT_HTTP,
            reason=f"{what}; only HTTP and HTTPS leave a bottle",
            host=host,
            port=int(server.address[1]) if server.address else 0,
        )
        if flow.killable:
            flow.kill()

    def done(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        if self._audit is not None:
            self._audit.close()


def _body_too_big_to_refuse(flow: http.HTTPFlow) -> bool:
    headers = flow.request.headers
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return True
    length = headers.get("content-length", "").strip()
    return length.isdigit() and int(length) > ctx.options.bottle_body_buffer


addons = [GuardAddon()]
