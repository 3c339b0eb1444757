"""The egress decisions of a bottle: what the guard lets out, what the egress proxy does.

The guard and the egress proxy are mitmproxy addons that only translate flows
into calls of this module; ``bottle egress check`` calls the very same
functions. Everything here is pure: a request description and a policy in,
a decision out.

Guard (``decide_request``, ``decide_connect``, ``decide_body``), in order;
the first rule that denies wins:

    malformed-request    the host is not a host name or IP address
    git-push             smart-HTTP git push in any spelling (the git gate is
                         the only way a push leaves)
    host-not-allowed     the host matches no pattern of the allowlist
                         (``egress.allow`` plus every route host)
    private-address      the host is, or resolves to, a non-public address
                         (loopback, private, link-local, metadata, ...) that
                         the policy does not name explicitly
    host-mismatch        the Host header names another host than the one
                         connected to (domain fronting)
    secret-in-url        a secret in the host name, path or query
    secret-in-header     a secret in a header, except the exact credential
                         header the egress proxy injects on that secret's
                         own route
    secret-in-body       a secret in the body (scanned whole, or streamed)
    body-encoding        a streamed body in a Content-Encoding that cannot be
                         scanned on the fly
    dns-failed           the name does not resolve (connect only)
    not-http             a raw TCP or UDP stream: only HTTP(S) leaves, so SSH
                         or any other protocol through CONNECT is cut
    policy-unavailable   the guard has no valid policy: deny everything

and ``allowed`` otherwise. Reasons never contain a secret: findings are
described by kind, encoding and place only.

Egress proxy (``decide_proxy_request``): ``git-push`` (403 before any route
is looked at), else the route for host + path (strip every credential header
the agent sent, inject the real one), else pass the request on untouched
(minus ``Proxy-Authorization``, which was meant for us).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import urlsplit

import msgspec

from bottle.core.addresses import AddressExceptions, classify, parse_address
from bottle.core.gitpolicy import is_git_push_request
from bottle.core.routing import (
    Allowlist,
    Route,
    RouteTable,
    effective_allowlist,
    is_ip_literal,
    normalize_host,
    render_auth_header,
)
from bottle.core.secretscan import BrokeredSecret, Finding, SecretScanner

RULE_ALLOWED = "allowed"
RULE_MALFORMED = "malformed-request"
RULE_GIT_PUSH = "git-push"
RULE_HOST_NOT_ALLOWED = "host-not-allowed"
RULE_PRIVATE_ADDRESS = "private-address"
RULE_HOST_MISMATCH = "host-mismatch"
RULE_SECRET_URL = "secret-in-url"
RULE_SECRET_HEADER = "secret-in-header"
RULE_SECRET_BODY = "secret-in-body"
RULE_BODY_ENCODING = "body-encoding"
RULE_DNS_FAILED = "dns-failed"
RULE_NOT_HTTP = "not-http"
RULE_POLICY_UNAVAILABLE = "policy-unavailable"
RULE_ROUTE = "route"
RULE_PASS = "pass"
RULE_ROUTE_TOKEN_MISSING = "route-token-missing"

DENY_RULES = (
    RULE_MALFORMED,
    RULE_GIT_PUSH,
    RULE_HOST_NOT_ALLOWED,
    RULE_PRIVATE_ADDRESS,
    RULE_HOST_MISMATCH,
    RULE_SECRET_URL,
    RULE_SECRET_HEADER,
    RULE_SECRET_BODY,
    RULE_BODY_ENCODING,
    RULE_DNS_FAILED,
    RULE_NOT_HTTP,
    RULE_POLICY_UNAVAILABLE,
    RULE_ROUTE_TOKEN_MISSING,
)

_DEFAULT_PORTS = {"http": 80, "https": 443}


class EgressRequest(msgspec.Struct, frozen=True):
    """What the guard knows about one request.

    ``host``/``port`` are where the connection goes (the CONNECT authority,
    or the host of an absolute URL); ``path`` is the request target as sent,
    query included. ``body`` is None when the body is not part of this
    decision (no body, or it is streamed and scanned on its own).
    """

    method: str
    host: str
    port: int
    path: str = "/"
    scheme: str = "https"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None

    @classmethod
    def from_url(
        cls,
        method: str,
        url: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
    ) -> EgressRequest:
        """The request a client such as curl would send for ``url``.

        Adds a ``Host`` header unless one is given, and turns ``user:pass@``
        into ``Authorization: Basic`` as clients do. Raises ``ValueError``
        for a URL that is not http(s) or has no host.
        """
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"{url!r} is not a valid URL ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise ValueError(f"{url!r}: only http:// and https:// URLs go through the guard")
        netloc = parts.netloc.rsplit("@", 1)[-1]
        host = parts.hostname or ""
        if not host:
            raise ValueError(f"{url!r} has no host")
        hdrs = list(headers)
        names = {n.lower() for n, _ in hdrs}
        if "host" not in names:
            hdrs.insert(0, ("Host", netloc))
        if "@" in parts.netloc and "authorization" not in names:
            userinfo = parts.netloc.rsplit("@", 1)[0]
            hdrs.append(("Authorization", "Basic " + base64.b64encode(userinfo.encode()).decode()))
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        return cls(
            method=method.upper(),
            host=host,
            port=port if port is not None else _DEFAULT_PORTS[scheme],
            path=target,
            scheme=scheme,
            headers=tuple(hdrs),
            body=body,
        )

    def url(self) -> str:
        default = _DEFAULT_PORTS.get(self.scheme)
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.path}"


class Verdict(msgspec.Struct, frozen=True):
    """The guard's answer. ``reason`` is for people and never holds a secret."""

    allow: bool
    rule: str
    reason: str
    findings: tuple[Finding, ...] = ()
    route: str = ""


class ConnectDecision(msgspec.Struct, frozen=True):
    """Whether to open a connection, and to which checked address (None when denied)."""

    allow: bool
    rule: str
    reason: str
    address: str | None = None


class ProxyDecision(msgspec.Struct, frozen=True):
    """What the egress proxy does with a request: ``deny``, ``route`` or ``pass``.

    ``strip`` lists the (lowercase) headers to remove before anything is
    injected; ``route`` is set for ``route``.
    """

    action: str
    rule: str
    reason: str
    route: Route | None = None
    strip: tuple[str, ...] = ()


class EgressPolicy:
    """Everything the guard decides with: allowlist, routes, address exceptions, brokered secrets.

    Build it once per policy load (``EgressPolicy.build``); it precomputes
    the scanner and the exact credential header each route gets, and is
    then shared by every request. ``repr`` shows no secret.
    """

    def __init__(
        self,
        allowlist: Allowlist,
        routes: RouteTable | None = None,
        *,
        address_exceptions: AddressExceptions | None = None,
        secrets: Mapping[str, str] | None = None,
        agent: str = "",
    ) -> None:
        self.allowlist = allowlist
        self.routes = routes if routes is not None else RouteTable()
        self.address_exceptions = address_exceptions if address_exceptions is not None else AddressExceptions()
        self.agent = agent
        secrets = dict(secrets or {})
        self.scanner = SecretScanner(BrokeredSecret(slot, value) for slot, value in secrets.items() if value)
        # route -> the exact header the egress proxy injects; only that header
        # may carry that secret, and only to that route.
        self._injected: dict[Route, tuple[str, str]] = {}
        for route in self.routes.routes:
            token = secrets.get(route.token_slot)
            if token:
                name, value = render_auth_header(route, token)
                self._injected[route] = (name.lower(), value)

    @classmethod
    def build(
        cls,
        allow: Iterable[str],
        routes: RouteTable | None = None,
        *,
        allow_private: Iterable[str] = (),
        secrets: Mapping[str, str] | None = None,
        agent: str = "",
    ) -> EgressPolicy:
        """The guard's policy from ``egress.allow``, the route table and explicit address exceptions.

        Route hosts are allowed automatically. An IP address listed in
        ``allow`` is an explicit exception for that address too; networks go
        in ``allow_private`` (``10.0.0.0/8``). ``secrets`` maps token slots
        (``BOTTLE_TOKEN_0``) to values. Raises ``ValueError`` for an invalid
        pattern, address or network.
        """
        table = routes if routes is not None else RouteTable()
        allowlist = effective_allowlist(allow, table)
        private = list(allow_private)
        for pattern in allowlist.patterns:
            if not pattern.startswith("*.") and is_ip_literal(pattern):
                private.append(normalize_host(pattern))
        return cls(
            allowlist,
            table,
            address_exceptions=AddressExceptions.of(private),
            secrets=secrets,
            agent=agent,
        )

    def injected_header(self, route: Route) -> tuple[str, str] | None:
        """(lowercase name, value) of the credential header injected on ``route``, if its secret is known."""
        return self._injected.get(route)

    def __repr__(self) -> str:
        return (
            f"EgressPolicy(allow={list(self.allowlist.patterns)!r}, routes={len(self.routes.routes)}, "
            f"exceptions={list(self.address_exceptions.entries())!r}, secrets={list(self.scanner.slots)!r})"
        )


# --------------------------------------------------------------------------
# guard
# --------------------------------------------------------------------------


def _deny(rule: str, reason: str, findings: Sequence[Finding] = (), route: str = "") -> Verdict:
    return Verdict(False, rule, reason, tuple(findings), route)


def policy_unavailable(why: str) -> Verdict:
    """The verdict for every request while the guard has no valid policy (fail closed)."""
    return _deny(RULE_POLICY_UNAVAILABLE, f"the guard has no valid policy ({why}); everything is denied")


def _split_target(path: str) -> tuple[str, str]:
    p, _, q = path.partition("?")
    return p, q


def _host_rules(host: str, port: int, policy: EgressPolicy) -> tuple[str, str, Verdict | None]:
    """Normalize the host, apply the allowlist and the literal-address rule; (host, pattern, denial)."""
    try:
        h = normalize_host(host)
    except ValueError as exc:
        return host, "", _deny(RULE_MALFORMED, f"the target is not a valid host: {exc}")
    pattern = policy.allowlist.matching_pattern(h, port)
    if pattern is None:
        return h, "", _deny(RULE_HOST_NOT_ALLOWED, f"{_hostport(h, port)} is not on this bottle's egress allowlist")
    if _is_address(h) and not policy.address_exceptions.permits(h):
        return h, pattern, _deny(
            RULE_PRIVATE_ADDRESS,
            f"{h} is a {classify(h)} address; non-public addresses need an explicit exception",
        )
    return h, pattern, None


def _is_address(normalized_host: str) -> bool:
    # normalize_host writes every address in standard form, so only those
    # can parse; the cheap character test skips the parse for most names.
    if not (":" in normalized_host or normalized_host[-1:].isdigit()):
        return False
    try:
        parse_address(normalized_host)
    except ValueError:
        return False
    return True


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _secret_rule(findings: Sequence[Finding]) -> str:
    loc = findings[0].location
    if loc == "body":
        return RULE_SECRET_BODY
    if loc.startswith("header:"):
        return RULE_SECRET_HEADER
    return RULE_SECRET_URL


def _describe_findings(findings: Sequence[Finding]) -> str:
    shown = "; ".join(dict.fromkeys(f.describe() for f in findings[:5]))
    more = f" (and {len(findings) - 5} more)" if len(findings) > 5 else ""
    return f"found {shown}{more}"


def _basic_credentials(value: str) -> str | None:
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "basic" or not rest.strip():
        return None
    try:
        return base64.b64decode(rest.strip(), validate=True).decode("utf-8", "surrogateescape")
    except (binascii.Error, ValueError):
        return None


def scan_request(request: EgressRequest, policy: EgressPolicy, route: Route | None) -> list[Finding]:
    """Secrets in the host, target and headers of ``request`` (not the body).

    The one header the egress proxy injects on ``route`` is skipped when it
    carries exactly the injected value.
    """
    fields: list[tuple[str, str]] = [("host", request.host), ("url", request.path)]
    exempt = policy.injected_header(route) if route is not None else None
    for name, value in request.headers:
        lname = name.lower()
        if exempt is not None and lname == exempt[0] and hmac.compare_digest(value.encode(), exempt[1].encode()):
            continue
        fields.append((f"header:{lname}", value))
        if lname in ("authorization", "proxy-authorization"):
            decoded = _basic_credentials(value)
            if decoded is not None:
                fields.append((f"header:{lname}", decoded))
    return policy.scanner.scan_fields(fields)


def decide_request(request: EgressRequest, policy: EgressPolicy) -> Verdict:
    """The guard's verdict on one request (see the module docstring for the rules and their order).

    With ``request.body`` set the body is scanned too; a streamed body gets
    its own verdict from ``decide_body``.
    """
    path, query = _split_target(request.path)
    if is_git_push_request(request.method, path, query):
        return _deny(RULE_GIT_PUSH, f"{request.method} {_hostport(request.host, request.port)} is a git push over HTTP")
    host, pattern, denied = _host_rules(request.host, request.port, policy)
    if denied is not None:
        return denied
    for name, value in request.headers:
        if name.lower() == "host":
            try:
                named = normalize_host(value)
            except ValueError as exc:
                return _deny(RULE_MALFORMED, f"the Host header is not a valid host: {exc}")
            if named != host:
                return _deny(
                    RULE_HOST_MISMATCH,
                    f"the Host header names {named} but the connection goes to {host}",
                )
    route = policy.routes.match(host, request.path, request.port)
    route_text = route.upstream if route is not None else ""
    findings = scan_request(request, policy, route)
    if findings:
        return _deny(_secret_rule(findings), _describe_findings(findings), findings, route_text)
    if request.body:
        body_findings = policy.scanner.scan(request.body, "body")
        if body_findings:
            return _deny(RULE_SECRET_BODY, _describe_findings(body_findings), body_findings, route_text)
    reason = f"{_hostport(host, request.port)} matches {pattern!r}"
    if route is not None:
        reason += f" (route {route.upstream})"
    return Verdict(True, RULE_ALLOWED, reason, (), route_text)


def decide_body(findings: Sequence[Finding]) -> Verdict:
    """The verdict on a streamed body, from its scanner's findings."""
    if findings:
        return _deny(RULE_SECRET_BODY, _describe_findings(findings), findings)
    return Verdict(True, RULE_ALLOWED, "no secret in the body")


def body_encoding_denied(encoding: str) -> Verdict:
    """A streamed body whose Content-Encoding the guard cannot scan on the fly."""
    return _deny(RULE_BODY_ENCODING, f"a streamed body in Content-Encoding {encoding!r} cannot be scanned")


def decide_target(host: str, port: int, policy: EgressPolicy) -> ConnectDecision:
    """The checks on a connection target that need no DNS: allowlist, literal address, secret in the name.

    Run before resolving, so a name that is not allowed (or that smuggles a
    secret) is never even looked up. An allowed IP literal comes back with
    ``address`` set; an allowed name with ``address`` None (resolve it, then
    call ``decide_connect``).
    """
    h, _, denied = _host_rules(host, port, policy)
    if denied is not None:
        return ConnectDecision(False, denied.rule, denied.reason)
    secrets = policy.scanner.scan(h, "host")
    if secrets:
        return ConnectDecision(False, RULE_SECRET_URL, _describe_findings(secrets))
    if _is_address(h):
        return ConnectDecision(True, RULE_ALLOWED, f"{h} is allowed", h)
    return ConnectDecision(True, RULE_ALLOWED, f"{h} is allowed")


def decide_connect(host: str, port: int, resolved: Sequence[str], policy: EgressPolicy) -> ConnectDecision:
    """Whether the guard may open a connection to ``host``:``port``, and to which address.

    ``resolved`` holds the addresses the name resolved to (ignored for an IP
    literal). Every one of them must be public or explicitly excepted — a
    name that resolves to a mix is refused — so connecting to the returned
    ``address`` (IPv4 preferred) cannot land anywhere unchecked, whatever
    DNS answers next.
    """
    target = decide_target(host, port, policy)
    if not target.allow or target.address is not None:
        return target
    h = normalize_host(host)  # valid: decide_target passed it
    if not resolved:
        return ConnectDecision(False, RULE_DNS_FAILED, f"{h} did not resolve to any address")
    addresses = []
    for text in resolved:
        try:
            addr = parse_address(text)
        except ValueError:
            return ConnectDecision(False, RULE_DNS_FAILED, f"{h} resolved to something that is not an address")
        if not policy.address_exceptions.permits(addr):
            return ConnectDecision(
                False,
                RULE_PRIVATE_ADDRESS,
                f"{h} resolves to {addr}, a {classify(addr)} address; non-public addresses need an explicit exception",
            )
        addresses.append(addr)
    chosen = next((a for a in addresses if a.version == 4), addresses[0])
    return ConnectDecision(True, RULE_ALLOWED, f"{h} resolves to {chosen}", str(chosen))


def address_permitted(address: str, policy: EgressPolicy) -> bool:
    """True if a connection that ended up at ``address`` is allowed (public, or an explicit exception)."""
    try:
        return policy.address_exceptions.permits(address)
    except ValueError:
        return False


# --------------------------------------------------------------------------
# egress proxy
# --------------------------------------------------------------------------


def decide_proxy_request(method: str, host: str, port: int, path: str, routes: RouteTable) -> ProxyDecision:
    """What the egress proxy does with a request (see the module docstring).

    On a route every credential header the agent sent is stripped
    (``RouteTable.credential_header_names``: Authorization, x-api-key,
    Cookie, the route headers, ...); elsewhere only Proxy-Authorization.
    """
    p, q = _split_target(path)
    if is_git_push_request(method, p, q):
        return ProxyDecision("deny", RULE_GIT_PUSH, f"{method} {_hostport(host, port)} is a git push over HTTP")
    route = routes.match(host, path, port)
    if route is None:
        return ProxyDecision("pass", RULE_PASS, "no route; passed on to the guard", strip=("proxy-authorization",))
    return ProxyDecision(
        "route",
        RULE_ROUTE,
        f"route {route.upstream} ({route.auth_scheme}, {route.token_slot})",
        route,
        tuple(sorted(routes.credential_header_names())),
    )


class ChainVerdict(msgspec.Struct, frozen=True):
    """The outcome of a request through the whole chain: which sidecar decided (``stage``) and how."""

    allow: bool
    rule: str
    reason: str
    stage: str  # "egress-proxy" | "guard"
    findings: tuple[Finding, ...] = ()
    route: str = ""
    injected: bool = False


def decide_chain(request: EgressRequest, policy: EgressPolicy, *, via_egress_proxy: bool) -> ChainVerdict:
    """What happens to a request the agent sends, end to end (``bottle egress check``).

    With ``via_egress_proxy`` (a bottle with routes: the agent's proxy is the
    egress proxy) the request first gets the proxy's treatment — git push
    refused, credential headers stripped and, on a route whose secret the
    policy knows, the real header injected — and the guard then judges what
    the proxy would send. Without it, the guard judges the request as sent.
    """
    injected = False
    route_text = ""
    if via_egress_proxy:
        decision = decide_proxy_request(request.method, request.host, request.port, request.path, policy.routes)
        if decision.action == "deny":
            return ChainVerdict(False, decision.rule, decision.reason, "egress-proxy")
        strip = set(decision.strip)
        headers = [(n, v) for n, v in request.headers if n.lower() not in strip]
        if decision.route is not None:
            route_text = decision.route.upstream
            header = policy.injected_header(decision.route)
            if header is not None:
                headers.append(header)
                injected = True
        request = msgspec.structs.replace(request, headers=tuple(headers))
    verdict = decide_request(request, policy)
    return ChainVerdict(
        verdict.allow, verdict.rule, verdict.reason, "guard", verdict.findings, verdict.route or route_text, injected
    )


# --------------------------------------------------------------------------
# what a denied client is told
# --------------------------------------------------------------------------


def access_hint(rule: str, *, host: str = "", agent: str = "") -> str:
    """How to get a request of this kind through, for the 403 body and ``egress check``."""
    who = f" of agent '{agent}'" if agent else ""
    check = f"`bottle egress check {agent or 'AGENT'} URL`"
    if rule == RULE_HOST_NOT_ALLOWED:
        return (
            f"add '{host or 'HOST'}' to bottle.egress.allow{who} in the manifest and start the bottle again "
            f"(try it first with {check}); when the supervise sidecar runs, the agent can propose the host "
            "and a person approves it without a restart"
        )
    if rule == RULE_PRIVATE_ADDRESS:
        return (
            "this is a loopback, private, link-local or cloud-metadata destination; if it really must be "
            f"reachable, list its exact IP address in bottle.egress.allow{who}"
        )
    if rule == RULE_GIT_PUSH:
        return (
            f"push through the git gate: declare the remote under bottle.git{who}; "
            "pushes over HTTPS never leave the bottle any other way"
        )
    if rule in (RULE_SECRET_URL, RULE_SECRET_HEADER, RULE_SECRET_BODY):
        return (
            "remove the secret from the request; credentials for an API are added by the egress proxy "
            f"on its route (bottle.egress_proxy.routes{who}), the agent never needs to send one"
        )
    if rule == RULE_HOST_MISMATCH:
        return "send a Host header naming the host the connection goes to"
    if rule == RULE_BODY_ENCODING:
        return "send the body without Content-Encoding (or small enough to be scanned whole)"
    if rule == RULE_NOT_HTTP:
        return "only HTTP and HTTPS leave a bottle; use git over HTTPS through the git gate instead of SSH"
    if rule == RULE_DNS_FAILED:
        return "check the host name; the guard resolves names itself"
    if rule == RULE_POLICY_UNAVAILABLE:
        return "the guard's policy file is missing or invalid; the operator should look at the guard's log"
    if rule == RULE_ROUTE_TOKEN_MISSING:
        return "the secret for this route was not given to the egress proxy; set its token_ref on the host"
    if rule == RULE_MALFORMED:
        return "send a well-formed request with a valid host"
    return f"try it with {check}"


def denial_text(rule: str, reason: str, *, role: str, host: str = "", agent: str = "") -> str:
    """The body of the 403 a denied client sees: who denied, the rule, why, and how to ask for access."""
    return (
        f"Blocked by bottle's {role}.\n"
        f"rule: {rule}\n"
        f"reason: {reason}\n"
        f"to get access: {access_hint(rule, host=host, agent=agent)}\n"
    )


# --------------------------------------------------------------------------
# the policy file the sidecars read
# --------------------------------------------------------------------------

POLICY_VERSION = 1


class PolicyDocument(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The egress policy file (JSON) the guard and the egress proxy load and reload.

    No secret is in it: routes name their token slot, whose value the
    sidecar gets from its environment. ``allow`` is the effective allowlist
    (route hosts included); ``allow_private`` lists explicitly allowed
    non-public networks.
    """

    version: int
    identity: str = ""
    agent: str = ""
    allow: tuple[str, ...] = ()
    allow_private: tuple[str, ...] = ()
    routes: tuple[Route, ...] = ()


def policy_document(
    allow: Iterable[str],
    routes: RouteTable | None = None,
    *,
    allow_private: Iterable[str] = (),
    identity: str = "",
    agent: str = "",
) -> PolicyDocument:
    """The policy file's content for an agent: its ``egress.allow``, its route table, exceptions.

    Validates everything the sidecars will (``ValueError`` on a bad pattern
    or network), so a document that was written can always be loaded.
    """
    table = routes if routes is not None else RouteTable()
    allowlist = effective_allowlist(allow, table)
    exceptions = AddressExceptions.of(allow_private)
    return PolicyDocument(
        version=POLICY_VERSION,
        identity=identity,
        agent=agent,
        allow=allowlist.patterns,
        allow_private=exceptions.entries(),
        routes=table.routes,
    )


def encode_policy(document: PolicyDocument) -> bytes:
    """The policy file's bytes (indented JSON)."""
    return msgspec.json.format(msgspec.json.encode(document), indent=2) + b"\n"


def decode_policy(data: bytes) -> PolicyDocument:
    """Parse a policy file; ``ValueError`` says what is wrong (the file holds no secret to leak)."""
    try:
        doc = msgspec.json.decode(data, type=PolicyDocument)
    except msgspec.DecodeError as exc:
        raise ValueError(f"the policy file is not valid: {exc}") from None
    if doc.version != POLICY_VERSION:
        raise ValueError(f"the policy file has version {doc.version}; this sidecar reads version {POLICY_VERSION}")
    return doc


def policy_from_document(document: PolicyDocument, secrets: Mapping[str, str] | None = None) -> EgressPolicy:
    """The guard's ``EgressPolicy`` for a loaded document and the sidecar's secrets (slot -> value).

    Raises ``ValueError`` for an invalid pattern or network.
    """
    return EgressPolicy.build(
        document.allow,
        RouteTable(document.routes),
        allow_private=document.allow_private,
        secrets=secrets,
        agent=document.agent,
    )
