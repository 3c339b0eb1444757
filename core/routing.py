"""Egress rules: which hosts an agent may reach, and which routes carry a credential.

Two consumers call into this module: the guard (``Allowlist.allows``) and the
egress proxy (``RouteTable.match``, ``render_auth_header``,
``RouteTable.credential_header_names``). Both compare hosts only after
``normalize_host``, so spelling tricks (case, a trailing dot, Unicode vs
punycode, ``0x7f.1`` for ``127.0.0.1``) cannot slip past a pattern or into a
route.

Host patterns (``egress.allow``):

    api.github.com        exactly that host, any port
    *.github.com          any subdomain at any depth (a.github.com,
                          a.b.github.com) but NOT github.com itself: list
                          both when both are wanted
    api.github.com:443    that host, only on port 443
    127.0.0.1, [::1]      that IP address (any spelling of it), nothing else

An IP-literal host never matches a name pattern, and a wildcard needs at
least two labels after ``*.`` (``*.com`` is refused as too broad).
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol
from urllib.parse import urlsplit

import msgspec

from bottle.core.tokenref import parse_token_ref

DEFAULT_HTTPS_PORT = 443
TOKEN_SLOT_PREFIX = "BOTTLE_TOKEN_"

_MAX_HOST_LENGTH = 253
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
_HEX = frozenset("0123456789abcdefABCDEF")
_DIGITS = frozenset("0123456789")
_OCTAL = frozenset("01234567")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# --------------------------------------------------------------------------
# hosts
# --------------------------------------------------------------------------


def _parse_port(text: str, whole: str) -> int:
    if not text or not set(text) <= _DIGITS or len(text) > 5 or not 0 < int(text) <= 65535:
        raise ValueError(f"{whole!r} has an invalid port {text!r}; expected 1-65535")
    return int(text)


def _split_host_port(text: str) -> tuple[str, int | None, bool]:
    """Split ``host[:port]`` / ``[v6][:port]`` / bare ``v6``; the bool says 'was bracketed'."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r} opens '[' without closing it")
        inner, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r} has text after ']' that is not a port")
        port = _parse_port(rest[1:], text) if rest else None
        return inner, port, True
    if text.count(":") == 1:
        host, port_text = text.split(":")
        return host, _parse_port(port_text, text), False
    return text, None, False  # no colon, or an unbracketed IPv6 literal


def _ipv4_number(part: str) -> int | None:
    """One part of a WHATWG IPv4 host (decimal, 0x hex or 0-led octal); None if not a number."""
    if not part:
        return None
    if part[:2] in ("0x", "0X"):
        digits, allowed, radix = part[2:], _HEX, 16
    elif len(part) > 1 and part[0] == "0":
        digits, allowed, radix = part[1:], _OCTAL, 8
    else:
        digits, allowed, radix = part, _DIGITS, 10
    if not digits:
        return 0
    if not set(digits) <= allowed:
        return None
    return int(digits, radix)


def _loose_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """Parse what browsers and curl accept as IPv4 (``127.1``, ``0x7f.0.0.1``, ``2130706433``).

    Follows the WHATWG URL standard: a host whose last label is a number is
    an IPv4 address or is invalid, never a name.
    """
    parts = host.split(".")
    last = parts[-1]
    if not (last and set(last) <= _DIGITS) and _ipv4_number(last) is None:
        return None
    if len(parts) > 4:
        raise ValueError(f"{host!r} ends in a number but is not an IPv4 address")
    numbers = [_ipv4_number(p) for p in parts]
    if any(n is None for n in numbers):
        raise ValueError(f"{host!r} ends in a number but is not an IPv4 address")
    nums = [n for n in numbers if n is not None]
    if any(n > 255 for n in nums[:-1]) or nums[-1] >= 256 ** (5 - len(nums)):
        raise ValueError(f"{host!r} is out of range for an IPv4 address")
    value = nums[-1]
    for i, n in enumerate(nums[:-1]):
        value += n * 256 ** (3 - i)
    return ipaddress.IPv4Address(value)


def _canonical_host(host: str, bracketed: bool, whole: str) -> str:
    if not host:
        raise ValueError(f"{whole!r} has no host")
    if bracketed or ":" in host:
        if "%" in host:
            raise ValueError(f"{whole!r}: IPv6 zone ids are not supported")
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            raise ValueError(f"{whole!r} is not a valid IPv6 address") from None
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    if not host:
        raise ValueError(f"{whole!r} has no host")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError as exc:
            raise ValueError(f"{whole!r} is not a valid international domain name ({exc})") from None
    v4 = _loose_ipv4(host)
    if v4 is not None:
        return str(v4)
    if len(host) > _MAX_HOST_LENGTH:
        raise ValueError(f"{whole!r} is longer than {_MAX_HOST_LENGTH} characters")
    for label in host.split("."):
        if not label:
            raise ValueError(f"{whole!r} has an empty label ('..')")
        if not _LABEL.fullmatch(label):
            raise ValueError(
                f"{whole!r} has an invalid label {label!r}; labels are letters, digits, '-' or '_', "
                "at most 63 characters"
            )
    return host


def _normalize(text: str) -> tuple[str, int | None]:
    if not isinstance(text, str):
        raise ValueError(f"expected a host name, got {type(text).__name__}")
    stripped = text.strip()
    host, port, bracketed = _split_host_port(stripped)
    return _canonical_host(host, bracketed, text), port


def normalize_host(host: str) -> str:
    """The canonical spelling of ``host``, for comparison.

    Strips whitespace and a ``:port`` suffix, lowercases, drops one trailing
    dot, removes the brackets of an IPv6 literal, encodes Unicode labels with
    IDNA (2003, Python's ``idna`` codec: ``bücher.example`` ->
    ``xn--bcher-kva.example``) and writes IP addresses in their standard
    form (``0:0::1`` -> ``::1``, ``127.1`` -> ``127.0.0.1``). Idempotent.

    Raises ``ValueError`` saying why for anything that is not a host name or
    an IP address (empty labels, spaces, ``*``, a bad port, ...).
    """
    return _normalize(host)[0]


def _ip(normalized: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(normalized)
    except ValueError:
        return None


def is_ip_literal(host: str) -> bool:
    """True if ``host`` is an IPv4 or IPv6 address in any spelling; False for names and garbage."""
    try:
        return _ip(normalize_host(host)) is not None
    except ValueError:
        return False


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# --------------------------------------------------------------------------
# patterns and the allowlist
# --------------------------------------------------------------------------


class _Pattern(NamedTuple):
    kind: str  # "exact" | "suffix" | "ip"
    host: str  # normalized; for "suffix" the part after "*."
    ip: IPAddress | None
    port: int | None

    def canonical(self) -> str:
        host = self.host
        if self.port is not None:
            host = f"{_host_for_url(host)}:{self.port}"
        return f"*.{host}" if self.kind == "suffix" else host


@functools.lru_cache(maxsize=4096)
def _parse_pattern(pattern: str) -> _Pattern:
    if not isinstance(pattern, str):
        raise ValueError(f"a host pattern must be a string, got {type(pattern).__name__}")

    def bad(reason: str) -> ValueError:
        return ValueError(f"invalid host pattern {pattern!r}: {reason}")

    text = pattern.strip()
    if not text:
        raise bad("it is empty")
    if any(c.isspace() for c in text):
        raise bad("it contains whitespace")
    if "://" in text:
        raise bad("it is a URL; write only the host, e.g. 'example.com' or '*.example.com'")
    for ch in "/@?#\\":
        if ch in text:
            raise bad(f"{ch!r} is not allowed; write only the host, e.g. 'example.com'")
    wildcard = text.startswith("*.")
    rest = text[2:] if wildcard else text
    if "*" in rest:
        raise bad("'*' may appear only once, as the first label: '*.example.com'")
    if not rest:
        raise bad("'*.' needs a domain after it, e.g. '*.example.com'")
    try:
        host, port, bracketed = _split_host_port(rest)
        host = _canonical_host(host, bracketed, rest)
    except ValueError as exc:
        raise bad(str(exc)) from None
    ip = _ip(host)
    if wildcard:
        if ip is not None:
            raise bad("a wildcard cannot apply to an IP address")
        if "." not in host:
            raise bad(f"'*.{host}' is too broad; name a domain, e.g. '*.example.{host}'")
        return _Pattern("suffix", host, None, port)
    return _Pattern("ip" if ip is not None else "exact", host, ip, port)


def validate_host_pattern(pattern: str) -> str:
    """Check a host pattern and return its canonical form (see the module docstring).

    Raises ``ValueError`` naming the pattern and the reason: empty, ``*``,
    ``*.``, ``*.*.com``, a ``*`` anywhere but a leading ``*.``, ``a..b``,
    a URL (``http://x``), a path, whitespace, a bad port, ``*.com``.
    """
    return _parse_pattern(pattern).canonical()


def _matches(p: _Pattern, host: str, port: int | None) -> bool:
    if p.port is not None and port != p.port:
        return False
    ip = _ip(host)
    if p.kind == "ip":
        return ip is not None and ip == p.ip
    if ip is not None:
        return False
    if p.kind == "exact":
        return host == p.host
    return host.endswith("." + p.host)


def host_matches(pattern: str, host: str, port: int | None = None) -> bool:
    """True if ``host`` (on ``port``) matches ``pattern``.

    ``host`` may carry its own ``:port``, used when ``port`` is None. A
    pattern with a port matches only that port, so a host whose port is
    unknown does not match it. A host that cannot be normalized matches
    nothing. An invalid pattern raises ``ValueError``.
    """
    p = _parse_pattern(pattern)
    try:
        h, embedded = _normalize(host)
    except ValueError:
        return False
    return _matches(p, h, port if port is not None else embedded)


class Allowlist(msgspec.Struct, frozen=True):
    """The hosts an agent may reach: canonical patterns, in declaration order.

    Build one with ``Allowlist.of``; constructing or decoding one directly
    with a pattern that is invalid or not canonical raises ``ValueError``.
    """

    patterns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for pattern in self.patterns:
            if validate_host_pattern(pattern) != pattern:
                raise ValueError(f"host pattern {pattern!r} is not canonical; build with Allowlist.of(...)")

    @classmethod
    def of(cls, patterns: Iterable[str]) -> Allowlist:
        """Validate and normalize ``patterns``, dropping duplicates, keeping first-seen order."""
        seen: dict[str, None] = {}
        for pattern in patterns:
            seen.setdefault(validate_host_pattern(pattern), None)
        return cls(tuple(seen))

    def matching_pattern(self, host: str, port: int | None = None) -> str | None:
        """The first pattern that allows ``host`` on ``port``, or None (denied)."""
        try:
            h, embedded = _normalize(host)
        except ValueError:
            return None
        effective_port = port if port is not None else embedded
        for pattern in self.patterns:
            if _matches(_parse_pattern(pattern), h, effective_port):
                return pattern
        return None

    def allows(self, host: str, port: int | None = None) -> bool:
        """True if some pattern matches ``host`` on ``port``."""
        return self.matching_pattern(host, port) is not None


# --------------------------------------------------------------------------
# routes
# --------------------------------------------------------------------------

AUTH_SCHEMES = ("bearer", "x-api-key", "basic", "header:<Header-Name>")

_HEADER_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Headers that frame or route the request: injecting a secret there would
# break the request or smuggle a second one.
_RESERVED_HEADERS = frozenset(
    {
        "host", "content-length", "content-type", "transfer-encoding", "connection", "upgrade",
        "te", "trailer", "keep-alive", "proxy-connection", "expect",
    }
)
_BASE_CREDENTIAL_HEADERS = frozenset(
    {
        "authorization", "proxy-authorization", "x-api-key", "cookie",
        # common API-key headers (Google, Azure, GitLab, OpenStack)
        "x-goog-api-key", "api-key", "private-token", "x-auth-token",
    }
)

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
_SLASHES = re.compile(r"/{2,}")


class RouteLike(Protocol):
    """What ``build_route_table`` reads from a manifest route."""

    @property
    def upstream(self) -> str: ...

    @property
    def auth_scheme(self) -> str: ...

    @property
    def token_ref(self) -> str: ...


def _decode_unreserved(match: re.Match[str]) -> str:
    ch = chr(int(match.group(1), 16))
    return ch if ch in _UNRESERVED else "%" + match.group(1).upper()


def _remove_dot_segments(path: str) -> str:
    segments = path.split("/")[1:]
    out: list[str] = []
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        elif seg == ".":
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)


def normalize_path(path: str) -> str:
    """The path part of a request target in the form route prefixes are compared with.

    Drops a query and fragment, decodes percent-escapes of unreserved
    characters (``%7E`` -> ``~``, ``%2D`` -> ``-``) and upper-cases the
    others (``%2f`` -> ``%2F``, which stays encoded), collapses ``//`` and
    resolves ``.``/``..`` segments. Always starts with ``/``.
    """
    path = path.split("#", 1)[0].split("?", 1)[0]
    path = _PCT.sub(_decode_unreserved, path)
    if not path.startswith("/"):
        path = "/" + path
    return _remove_dot_segments(_SLASHES.sub("/", path))


def parse_upstream(url: str) -> tuple[str, int, str]:
    """Split a route's ``upstream`` into (normalized host, port, path prefix).

    The port defaults to 443; the prefix is ``""`` or ``/a/b`` (normalized as
    ``normalize_path`` does, no trailing slash). Raises ``ValueError`` for a
    scheme other than https, a ``user:password@``, a query or fragment, or a
    missing or invalid host.
    """
    example = "expected an https URL such as 'https://api.example.com' or 'https://example.com/api/v2'"
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"upstream is empty; {example}")
    text = url.strip()
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"upstream {url!r} contains whitespace or control characters")
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise ValueError(f"upstream {url!r} is not a valid URL ({exc}); {example}") from None
    if parts.scheme.lower() != "https":
        raise ValueError(f"upstream {url!r} must start with https://; {example}")
    if "@" in parts.netloc:
        raise ValueError(
            f"upstream {url!r} contains user information ('...@'); put the credential in token_ref instead"
        )
    if "?" in text or "#" in text:
        raise ValueError(f"upstream {url!r} may not have a query ('?') or fragment ('#')")
    if not parts.netloc:
        raise ValueError(f"upstream {url!r} has no host; {example}")
    try:
        host, port = _normalize(parts.netloc)
    except ValueError as exc:
        raise ValueError(f"upstream {url!r}: {exc}") from None
    prefix = normalize_path(parts.path or "/").rstrip("/")
    return host, port if port is not None else DEFAULT_HTTPS_PORT, prefix


def validate_auth_scheme(scheme: str) -> str:
    """Canonical ``auth_scheme``: ``bearer``, ``x-api-key``, ``basic`` or ``header:<Name>``.

    The keywords are case-insensitive; a named header keeps its spelling.
    Raises ``ValueError`` listing the allowed schemes.
    """
    allowed = ", ".join(AUTH_SCHEMES)
    if not isinstance(scheme, str):
        raise ValueError(f"auth_scheme must be a string; expected one of: {allowed}")
    text = scheme.strip()
    low = text.lower()
    if low in ("bearer", "x-api-key", "basic"):
        return low
    if low.startswith("header:"):
        name = text[len("header:"):].strip()
        if not _HEADER_TOKEN.fullmatch(name):
            raise ValueError(f"auth_scheme {scheme!r}: {name!r} is not a valid HTTP header name")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"auth_scheme {scheme!r}: the {name} header cannot carry a credential")
        return f"header:{name}"
    raise ValueError(f"unknown auth_scheme {scheme!r}; expected one of: {allowed}")


def _header_name(auth_scheme: str) -> str:
    if auth_scheme == "x-api-key":
        return "x-api-key"
    if auth_scheme.startswith("header:"):
        return auth_scheme[len("header:"):]
    return "Authorization"


class Route(msgspec.Struct, frozen=True):
    """One egress-proxy route, resolved.

    ``upstream`` is the canonical URL (``https://host[:port][/prefix]``);
    ``token_slot`` is the environment variable of the egress proxy that
    holds this route's secret.
    """

    host: str
    port: int
    path_prefix: str
    upstream: str
    auth_scheme: str
    header_name: str
    token_ref: str
    token_slot: str

    def allow_pattern(self) -> str:
        """The host pattern that lets traffic reach this route's upstream."""
        if self.port == DEFAULT_HTTPS_PORT:
            return self.host
        return f"{_host_for_url(self.host)}:{self.port}"


def _prefix_matches(prefix: str, path: str) -> bool:
    return not prefix or path == prefix or path.startswith(prefix + "/")


class RouteTable(msgspec.Struct, frozen=True):
    """The egress proxy's routes, in declaration order."""

    routes: tuple[Route, ...] = ()

    def slots(self) -> dict[str, str]:
        """Token slot -> normalized token_ref, one entry per distinct reference."""
        return {r.token_slot: r.token_ref for r in self.routes}

    def match(self, host: str, path: str, port: int = DEFAULT_HTTPS_PORT) -> Route | None:
        """The route for a request to ``host``:``port`` at ``path``, or None.

        The host must equal the route's after normalization (a ``:port`` in
        ``host`` must agree with ``port``). Of the routes whose prefix covers
        the path (``/api`` covers ``/api`` and ``/api/x``, not ``/apix``),
        the longest prefix wins. ``path`` may include a query.
        """
        try:
            h, embedded = _normalize(host)
        except ValueError:
            return None
        if embedded is not None and embedded != port:
            return None
        p = normalize_path(path)
        best: Route | None = None
        for route in self.routes:
            if route.host == h and route.port == port and _prefix_matches(route.path_prefix, p):
                if best is None or len(route.path_prefix) > len(best.path_prefix):
                    best = route
        return best

    def credential_header_names(self) -> frozenset[str]:
        """``credential_headers()`` plus every route's header, lowercased."""
        return credential_headers() | {r.header_name.lower() for r in self.routes}

    def allow_patterns(self) -> tuple[str, ...]:
        """One host pattern per distinct route host (routes are auto-allowed)."""
        return tuple(dict.fromkeys(r.allow_pattern() for r in self.routes))


def build_route_table(routes: Sequence[RouteLike]) -> RouteTable:
    """Resolve manifest routes into a ``RouteTable``.

    Token slots are ``BOTTLE_TOKEN_0``, ``BOTTLE_TOKEN_1``, ... assigned per
    distinct normalized ``token_ref`` in declaration order, so routes that
    share a secret share a slot. Raises ``ValueError`` for a bad upstream,
    auth scheme or token_ref, and for two routes with the same host, port
    and path prefix.
    """
    slot_of: dict[str, str] = {}
    seen: dict[tuple[str, int, str], int] = {}
    built: list[Route] = []
    for index, route in enumerate(routes):
        host, port, prefix = parse_upstream(route.upstream)
        scheme = validate_auth_scheme(route.auth_scheme)
        token_ref = str(parse_token_ref(str(route.token_ref)))
        key = (host, port, prefix)
        upstream = f"https://{_host_for_url(host)}{'' if port == DEFAULT_HTTPS_PORT else f':{port}'}{prefix}"
        if key in seen:
            raise ValueError(f"routes {seen[key]} and {index} both have upstream {upstream!r}; keep one")
        seen[key] = index
        slot = slot_of.setdefault(token_ref, f"{TOKEN_SLOT_PREFIX}{len(slot_of)}")
        built.append(Route(host, port, prefix, upstream, scheme, _header_name(scheme), token_ref, slot))
    return RouteTable(tuple(built))


def render_auth_header(route: Route, token: str) -> tuple[str, str]:
    """The (header name, value) that carries ``token`` to ``route``'s upstream.

    bearer -> ``Authorization: Bearer T``; x-api-key -> ``x-api-key: T``;
    basic -> ``Authorization: Basic base64(T)`` with T stored as
    ``user:password``; ``header:Name`` -> ``Name: T``. Raises ``ValueError``
    (naming the token_ref, never the value) for an empty token or one with
    control characters, which could split the header.
    """
    if not token:
        raise ValueError(f"the secret for {route.token_ref} is empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in token):
        raise ValueError(
            f"the secret for {route.token_ref} contains a control character (a line break?); "
            "it cannot be sent in an HTTP header"
        )
    if route.auth_scheme == "bearer":
        return "Authorization", f"Bearer {token}"
    if route.auth_scheme == "basic":
        return "Authorization", "Basic " + base64.b64encode(token.encode("utf-8")).decode("ascii")
    return route.header_name, token


def credential_headers() -> frozenset[str]:
    """Lowercase names of request headers that carry credentials.

    The egress proxy removes all of these (plus each route's own header, see
    ``RouteTable.credential_header_names``) from the agent's request before
    injecting the real credential.
    """
    return _BASE_CREDENTIAL_HEADERS


def effective_allowlist(allow: Iterable[str], table: RouteTable) -> Allowlist:
    """The manifest's ``egress.allow`` plus every route host, validated and deduplicated."""
    return Allowlist.of([*allow, *table.allow_patterns()])
