"""Egress rules: host normalization, allowlist patterns, the route table, auth headers."""

from __future__ import annotations

import base64

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bottle.core.routing import (
    Allowlist,
    Route,
    RouteTable,
    build_route_table,
    credential_headers,
    effective_allowlist,
    host_matches,
    is_ip_literal,
    normalize_host,
    normalize_path,
    parse_upstream,
    render_auth_header,
    validate_auth_scheme,
    validate_host_pattern,
)


class R(msgspec.Struct, frozen=True):
    """A manifest route as the manifest module hands it over."""

    upstream: str
    auth_scheme: str = "bearer"
    token_ref: str = "TOKEN"


# --------------------------------------------------------------------------
# normalize_host
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("example.com", "example.com"),
        ("EXAMPLE.com.", "example.com"),
        ("  Example.COM  ", "example.com"),
        ("example.com:443", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example.", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.EXAMPLE", "xn--bcher-kva.example"),
        ("bücher。example", "xn--bcher-kva.example"),  # ideographic full stop is a dot in IDNA
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1:8080", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("[::1]", "::1"),
        ("[::1]:443", "::1"),
        ("::1", "::1"),
        ("0:0::1", "::1"),
        ("[0:0:0:0:0:0:0:1]", "::1"),
        ("[2001:DB8::1]", "2001:db8::1"),
        ("my_host.internal", "my_host.internal"),
    ],
)
def test_normalize_host(raw: str, normalized: str) -> None:
    assert normalize_host(raw) == normalized


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        ".",
        "a..b",
        "a b.com",
        "*.example.com",
        "example.com:",
        "example.com:0",
        "example.com:65536",
        "example.com:http",
        "[::1",
        "[::1]x",
        "[example.com]",
        "[fe80::1%eth0]",
        "1.2.3.4.5",
        "256.0.0.1",
        "example.123",
        "evil.com@good.com",
        "a" * 64 + ".com",
        ("a" * 60 + ".") * 5 + "com",
        "good\n.com",
    ],
)
def test_normalize_host_rejects(raw: str) -> None:
    with pytest.raises(ValueError):
        normalize_host(raw)


def test_normalize_host_rejects_non_strings() -> None:
    with pytest.raises(ValueError):
        normalize_host(None)  # type: ignore[arg-type]


hosts = st.one_of(
    st.text(max_size=30),
    st.from_regex(r"[A-Za-z0-9üé_-]{1,12}(\.[A-Za-z0-9üé_-]{1,12}){0,3}\.?(:[0-9]{1,5})?", fullmatch=True),
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]:443"),
)


@given(hosts)
def test_normalize_host_is_idempotent(raw: str) -> None:
    try:
        once = normalize_host(raw)
    except ValueError:
        return
    assert normalize_host(once) == once


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("[::1]", True),
        ("::1", True),
        ("10.0.0.1:80", True),
        ("0x7f.1", True),
        ("example.com", False),
        ("localhost", False),
        ("not a host", False),
        ("", False),
    ],
)
def test_is_ip_literal(host: str, expected: bool) -> None:
    assert is_ip_literal(host) is expected


# --------------------------------------------------------------------------
# patterns
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "port", "expected"),
    [
        # exact
        ("api.github.com", "api.github.com", None, True),
        ("api.github.com", "API.GitHub.com.", None, True),
        ("API.GITHUB.COM.", "api.github.com", None, True),
        ("api.github.com", "github.com", None, False),
        ("api.github.com", "x.api.github.com", None, False),
        ("api.github.com", "api.github.com.evil.com", None, False),
        # wildcard: any depth of subdomain, never the bare suffix
        ("*.github.com", "api.github.com", None, True),
        ("*.github.com", "a.b.github.com", None, True),
        ("*.github.com", "github.com", None, False),
        ("*.github.com", "evilgithub.com", None, False),
        ("*.github.com", "github.com.evil.com", None, False),
        ("*.GitHub.Com.", "API.github.com", None, True),
        # IDNA on either side
        ("bücher.example", "xn--bcher-kva.example", None, True),
        ("xn--bcher-kva.example", "BÜCHER.example", None, True),
        ("*.bücher.example", "shop.xn--bcher-kva.example", None, True),
        # IP literals
        ("127.0.0.1", "127.0.0.1", None, True),
        ("127.0.0.1", "127.1", None, True),
        ("127.0.0.1", "127.0.0.2", None, False),
        ("[::1]", "::1", None, True),
        ("::1", "[0:0::1]", None, True),
        ("::1", "127.0.0.1", None, False),
        ("localhost", "127.0.0.1", None, False),
        ("*.0.0.1.example", "127.0.0.1", None, False),
        # an IP host never matches a name pattern, even one spelled like a number
        ("*.in-addr.arpa", "1.0.0.127", None, False),
        # ports
        ("api.github.com:443", "api.github.com", 443, True),
        ("api.github.com:443", "api.github.com", 80, False),
        ("api.github.com:443", "api.github.com", None, False),
        ("api.github.com:443", "api.github.com:443", None, True),
        ("api.github.com:443", "api.github.com:8443", None, False),
        ("api.github.com", "api.github.com", 8443, True),
        ("*.github.com:443", "a.github.com", 443, True),
        ("*.github.com:443", "a.github.com", 22, False),
        ("[::1]:8080", "::1", 8080, True),
        ("[::1]:8080", "[::1]:8081", None, False),
        # hosts that are not hosts match nothing
        ("api.github.com", "api.github.com/x", None, False),
        ("api.github.com", "", None, False),
    ],
)
def test_host_matches(pattern: str, host: str, port: int | None, expected: bool) -> None:
    assert host_matches(pattern, host, port) is expected


@pytest.mark.parametrize(
    ("pattern", "canonical"),
    [
        ("api.github.com", "api.github.com"),
        (" API.GitHub.com. ", "api.github.com"),
        ("*.GitHub.com", "*.github.com"),
        ("*.bücher.example", "*.xn--bcher-kva.example"),
        ("api.github.com:443", "api.github.com:443"),
        ("[::1]", "::1"),
        ("[0::1]:443", "[::1]:443"),
        ("127.1", "127.0.0.1"),
    ],
)
def test_validate_host_pattern_normalizes(pattern: str, canonical: str) -> None:
    assert validate_host_pattern(pattern) == canonical
    assert validate_host_pattern(canonical) == canonical


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("", "empty"),
        ("*", "'\\*'"),
        ("*.", "needs a domain"),
        ("a..b", "empty label"),
        ("http://x", "URL"),
        ("https://api.github.com", "URL"),
        ("api.github.com/path", "'/'"),
        ("user@api.github.com", "'@'"),
        ("api github.com", "whitespace"),
        ("*.*.com", "only once"),
        ("a.*.com", "only once"),
        ("*a.com", "only once"),
        ("api*.github.com", "only once"),
        ("*.com", "too broad"),
        ("*.127.0.0.1", "IP address"),
        ("example.com:99999", "port"),
        ("[::1", "'\\['"),
    ],
)
def test_validate_host_pattern_rejects_with_reason(pattern: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as info:
        validate_host_pattern(pattern)
    assert repr(pattern) in str(info.value)


def test_host_matches_rejects_an_invalid_pattern() -> None:
    with pytest.raises(ValueError):
        host_matches("*", "example.com")


# --------------------------------------------------------------------------
# Allowlist
# --------------------------------------------------------------------------


def test_allowlist_of_normalizes_dedupes_and_keeps_order() -> None:
    allow = Allowlist.of(["PyPI.org", "*.github.com", "pypi.org.", "files.pythonhosted.org", "*.GITHUB.com"])
    assert allow.patterns == ("pypi.org", "*.github.com", "files.pythonhosted.org")


def test_allowlist_of_names_the_bad_pattern() -> None:
    with pytest.raises(ValueError, match="'http://pypi.org'"):
        Allowlist.of(["pypi.org", "http://pypi.org"])


def test_allowlist_rejects_uncanonical_patterns_when_built_directly() -> None:
    with pytest.raises(ValueError, match="Allowlist.of"):
        Allowlist(("PyPI.org",))
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"patterns": ["*"]}', type=Allowlist)


def test_allowlist_decision() -> None:
    allow = Allowlist.of(["pypi.org", "*.github.com", "internal.example:8443"])
    assert allow.allows("PYPI.org.")
    assert allow.matching_pattern("codeload.github.com") == "*.github.com"
    assert not allow.allows("github.com")
    assert not allow.allows("evil.com")
    assert allow.allows("internal.example", 8443)
    assert not allow.allows("internal.example", 443)
    assert not allow.allows("internal.example")
    assert not allow.allows("not a host")
    assert not Allowlist().allows("pypi.org")


def test_allowlist_round_trips_through_json() -> None:
    allow = Allowlist.of(["pypi.org", "*.github.com"])
    assert msgspec.json.decode(msgspec.json.encode(allow), type=Allowlist) == allow


name_patterns = st.from_regex(r"(\*\.)?[a-c]{1,3}(\.[a-c]{1,3}){1,2}", fullmatch=True)
query_hosts = st.from_regex(r"[a-cA-C]{1,3}(\.[a-cA-C]{1,3}){0,3}\.?", fullmatch=True)


@given(st.lists(name_patterns, max_size=5), query_hosts)
def test_allowlist_never_allows_a_host_no_pattern_matches(patterns: list[str], host: str) -> None:
    allow = Allowlist.of(patterns)
    host_n = normalize_host(host)
    matched = [p for p in allow.patterns if host_n == p or (p.startswith("*.") and host_n.endswith(p[1:]))]
    assert allow.allows(host) is bool(matched)
    assert allow.allows(host) is any(host_matches(p, host) for p in patterns)


# --------------------------------------------------------------------------
# routes
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.anthropic.com", ("api.anthropic.com", 443, "")),
        ("https://api.anthropic.com/", ("api.anthropic.com", 443, "")),
        ("HTTPS://API.Anthropic.com.", ("api.anthropic.com", 443, "")),
        ("https://example.com/api/v2", ("example.com", 443, "/api/v2")),
        ("https://example.com/api/v2/", ("example.com", 443, "/api/v2")),
        ("https://example.com//api//v2//", ("example.com", 443, "/api/v2")),
        ("https://example.com/%61pi", ("example.com", 443, "/api")),
        ("https://example.com:8443/x", ("example.com", 8443, "/x")),
        ("https://[::1]:8443", ("::1", 8443, "")),
        ("https://bücher.example/x", ("xn--bcher-kva.example", 443, "/x")),
    ],
)
def test_parse_upstream(url: str, expected: tuple[str, int, str]) -> None:
    assert parse_upstream(url) == expected


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://api.anthropic.com", "https://"),
        ("api.anthropic.com", "https://"),
        ("ftp://x.example", "https://"),
        ("https://user:pw@api.example.com", "user information"),
        ("https://api.example.com/?x=1", "query"),
        ("https://api.example.com/#frag", "fragment"),
        ("https://api.example.com?", "query"),
        ("https://", "no host"),
        ("https:///path", "no host"),
        ("https://a..b/", "empty label"),
        ("https://api.example.com:99999", "port"),
        ("https://api example.com", "whitespace"),
        ("", "empty"),
    ],
)
def test_parse_upstream_rejects(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_upstream(url)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("bearer", "bearer"),
        ("Bearer", "bearer"),
        ("X-API-Key", "x-api-key"),
        ("basic", "basic"),
        ("header:X-Custom-Token", "header:X-Custom-Token"),
        ("HEADER: PRIVATE-TOKEN", "header:PRIVATE-TOKEN"),
    ],
)
def test_validate_auth_scheme(raw: str, canonical: str) -> None:
    assert validate_auth_scheme(raw) == canonical


@pytest.mark.parametrize("raw", ["token", "", "header:", "header:Bad Header", "header:Host", "header:Content-Length"])
def test_validate_auth_scheme_rejects(raw: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_auth_scheme(raw)
    if not raw.startswith("header:"):
        assert "bearer, x-api-key, basic, header:<Header-Name>" in str(info.value)


def test_route_table_resolves_routes_and_shares_slots_per_token_ref() -> None:
    table = build_route_table(
        [
            R("https://api.anthropic.com", "x-api-key", "ANTHROPIC_API_KEY"),
            R("https://api.github.com", "bearer", "env:GITHUB_TOKEN"),
            R("https://uploads.github.com/", "bearer", " GITHUB_TOKEN "),
            R("https://git.example.com/api/v1", "header:Private-Token", "file:~/.tokens/gitea"),
            R("https://registry.example.com:8443", "basic", "REG_AUTH"),
        ]
    )
    routes = table.routes
    assert [r.token_slot for r in routes] == [
        "BOTTLE_TOKEN_0", "BOTTLE_TOKEN_1", "BOTTLE_TOKEN_1", "BOTTLE_TOKEN_2", "BOTTLE_TOKEN_3",
    ]
    assert table.slots() == {
        "BOTTLE_TOKEN_0": "env:ANTHROPIC_API_KEY",
        "BOTTLE_TOKEN_1": "env:GITHUB_TOKEN",
        "BOTTLE_TOKEN_2": "file:~/.tokens/gitea",
        "BOTTLE_TOKEN_3": "env:REG_AUTH",
    }
    assert [r.header_name for r in routes] == [
        "x-api-key", "Authorization", "Authorization", "Private-Token", "Authorization",
    ]
    assert routes[3] == Route(
        host="git.example.com",
        port=443,
        path_prefix="/api/v1",
        upstream="https://git.example.com/api/v1",
        auth_scheme="header:Private-Token",
        header_name="Private-Token",
        token_ref="file:~/.tokens/gitea",
        token_slot="BOTTLE_TOKEN_2",
    )
    assert routes[4].upstream == "https://registry.example.com:8443"


@pytest.mark.parametrize(
    ("routes", "reason"),
    [
        ([R("https://a.example"), R("https://A.example./")], "routes 0 and 1"),
        ([R("https://a.example/x"), R("https://a.example//x/")], "routes 0 and 1"),
        ([R("http://a.example")], "https://"),
        ([R("https://a.example", auth_scheme="oauth")], "auth_scheme"),
        ([R("https://a.example", token_ref="not a name")], "environment variable"),
    ],
)
def test_build_route_table_rejects(routes: list[R], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        build_route_table(routes)


def test_same_host_different_port_or_prefix_is_not_a_duplicate() -> None:
    table = build_route_table([R("https://a.example"), R("https://a.example:8443"), R("https://a.example/api")])
    assert len(table.routes) == 3


@pytest.fixture
def table() -> RouteTable:
    return build_route_table(
        [
            R("https://example.com", token_ref="ROOT"),
            R("https://example.com/api", token_ref="API"),
            R("https://example.com/api/v2", token_ref="V2"),
            R("https://other.example:8443/x", token_ref="OTHER"),
            R("https://bücher.example", token_ref="BOOKS"),
        ]
    )


@pytest.mark.parametrize(
    ("host", "path", "port", "token_ref"),
    [
        ("example.com", "/", 443, "env:ROOT"),
        ("example.com", "", 443, "env:ROOT"),
        ("example.com", "/apix", 443, "env:ROOT"),
        ("example.com", "/api", 443, "env:API"),
        ("example.com", "/api/", 443, "env:API"),
        ("example.com", "/api/x?y=1", 443, "env:API"),
        ("example.com", "/api/v2", 443, "env:V2"),
        ("example.com", "/api/v2/models", 443, "env:V2"),
        ("example.com", "/api/v20", 443, "env:API"),
        ("EXAMPLE.com.", "/api//v2//models", 443, "env:V2"),
        ("example.com", "/%61pi/v%32", 443, "env:V2"),
        ("example.com", "/api/v2/../../admin", 443, "env:ROOT"),
        ("example.com", "/API", 443, "env:ROOT"),  # paths are case-sensitive
        ("example.com:443", "/api", 443, "env:API"),
        ("other.example", "/x/y", 8443, "env:OTHER"),
        ("xn--bcher-kva.example", "/", 443, "env:BOOKS"),
        ("BÜCHER.example", "/", 443, "env:BOOKS"),
    ],
)
def test_route_table_match(table: RouteTable, host: str, path: str, port: int, token_ref: str) -> None:
    route = table.match(host, path, port)
    assert route is not None and route.token_ref == token_ref


@pytest.mark.parametrize(
    ("host", "path", "port"),
    [
        ("example.com", "/api", 80),
        ("example.com:8443", "/api", 443),
        ("www.example.com", "/", 443),
        ("other.example", "/x", 443),
        ("other.example", "/xy", 8443),
        ("other.example", "/", 8443),
        ("other.example", "/%78", 443),
        ("not a host", "/", 443),
    ],
)
def test_route_table_no_match(table: RouteTable, host: str, path: str, port: int) -> None:
    assert table.match(host, path, port) is None


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("", "/"),
        ("/", "/"),
        ("a/b", "/a/b"),
        ("//a///b/", "/a/b/"),
        ("/a/./b/../c", "/a/c"),
        ("/a/%2e%2E/b", "/b"),
        ("/%7Euser", "/~user"),
        ("/a%2fb", "/a%2Fb"),
        ("/a?x=/b#c", "/a"),
    ],
)
def test_normalize_path(raw: str, normalized: str) -> None:
    assert normalize_path(raw) == normalized


def _route(auth_scheme: str) -> Route:
    return build_route_table([R("https://a.example", auth_scheme, "TOK")]).routes[0]


@pytest.mark.parametrize(
    ("scheme", "header"),
    [
        ("bearer", ("Authorization", "Bearer s3cr3t")),
        ("x-api-key", ("x-api-key", "s3cr3t")),
        ("header:Private-Token", ("Private-Token", "s3cr3t")),
    ],
)
def test_render_auth_header(scheme: str, header: tuple[str, str]) -> None:
    assert render_auth_header(_route(scheme), "s3cr3t") == header


def test_render_basic_auth_header() -> None:
    name, value = render_auth_header(_route("basic"), "user:pässword")
    assert name == "Authorization"
    assert value.startswith("Basic ")
    assert base64.b64decode(value[len("Basic "):]).decode() == "user:pässword"


@pytest.mark.parametrize("token", ["", "abc\r\nX-Evil: 1", "abc\n", "a\x00b"])
def test_render_auth_header_refuses_bad_tokens_without_echoing_them(token: str) -> None:
    with pytest.raises(ValueError) as info:
        render_auth_header(_route("bearer"), token)
    message = str(info.value)
    assert "env:TOK" in message
    if token:
        assert token not in message and "abc" not in message


def test_credential_headers() -> None:
    base = credential_headers()
    assert {"authorization", "proxy-authorization", "x-api-key", "cookie"} <= base
    assert all(h == h.lower() for h in base)
    table = build_route_table([R("https://a.example", "header:X-Custom-Token", "TOK"), R("https://b.example")])
    assert table.credential_header_names() == base | {"x-custom-token"}


def test_effective_allowlist_adds_route_hosts_once() -> None:
    table = build_route_table(
        [
            R("https://api.anthropic.com"),
            R("https://API.anthropic.com/v2"),
            R("https://registry.example:8443"),
            R("https://pypi.org/simple"),
        ]
    )
    allow = effective_allowlist(["pypi.org", "*.pythonhosted.org"], table)
    assert allow.patterns == ("pypi.org", "*.pythonhosted.org", "api.anthropic.com", "registry.example:8443")
    assert allow.allows("api.anthropic.com", 443)
    assert allow.allows("registry.example", 8443)
    assert not allow.allows("registry.example", 443)


def test_effective_allowlist_without_routes_is_the_manifest_list() -> None:
    assert effective_allowlist(["PyPI.org"], RouteTable()) == Allowlist(("pypi.org",))
