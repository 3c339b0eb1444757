"""The guard's and the egress proxy's decisions, as pure functions."""

from __future__ import annotations

import base64

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bottle.core.egress_policy import (
    DENY_RULES,
    RULE_ALLOWED,
    RULE_DNS_FAILED,
    RULE_GIT_PUSH,
    RULE_HOST_MISMATCH,
    RULE_HOST_NOT_ALLOWED,
    RULE_MALFORMED,
    RULE_PASS,
    RULE_POLICY_UNAVAILABLE,
    RULE_PRIVATE_ADDRESS,
    RULE_ROUTE,
    RULE_SECRET_BODY,
    RULE_SECRET_HEADER,
    RULE_SECRET_URL,
    EgressPolicy,
    EgressRequest,
    access_hint,
    decide_body,
    decide_chain,
    decide_connect,
    decide_proxy_request,
    decide_request,
    decide_target,
    decode_policy,
    denial_text,
    encode_policy,
    policy_document,
    policy_from_document,
    policy_unavailable,
)
from bottle.core.routing import build_route_table, render_auth_header

ANTHROPIC_KEY = "sk-ant-api03-" + "Qw3rTy7UiOp1AsDfGh5JkLz" * 4
GITHUB_TOKEN = "ghp_" + "Zx9Cv8Bn7Mq6Wr5Et4Yu3Io2Pa1Sd0Fg9Hj8K"


class R(msgspec.Struct, frozen=True):
    upstream: str
    auth_scheme: str = "bearer"
    token_ref: str = "TOKEN"


TABLE = build_route_table(
    [
        R("https://api.anthropic.com", "x-api-key", "ANTHROPIC_API_KEY"),
        R("https://api.github.com/repos", "bearer", "GITHUB_TOKEN"),
    ]
)
SECRETS = {"BOTTLE_TOKEN_0": ANTHROPIC_KEY, "BOTTLE_TOKEN_1": GITHUB_TOKEN}
POLICY = EgressPolicy.build(
    ["pypi.org", "*.pythonhosted.org", "10.9.8.7", "internal.example:8443"],
    TABLE,
    allow_private=["172.16.0.0/12"],
    secrets=SECRETS,
    agent="impl",
)


def verdict(method: str, url: str, headers=(), body=None, policy: EgressPolicy = POLICY):  # type: ignore[no-untyped-def]
    return decide_request(EgressRequest.from_url(method, url, headers, body), policy)


# -- allowlist and hosts --------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://pypi.org/simple/requests/",
        "https://files.pythonhosted.org/packages/x.whl",
        "https://PyPI.org./simple/",
        "https://api.anthropic.com/v1/messages",  # route hosts are allowed
        "http://10.9.8.7/",  # an IP listed in allow is an explicit exception
        "https://internal.example:8443/x",
    ],
)
def test_allowed_hosts_pass(url: str) -> None:
    v = verdict("GET", url)
    assert (v.allow, v.rule) == (True, RULE_ALLOWED), v.reason


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/",
        "https://pythonhosted.org/",  # *.x does not cover x itself
        "https://pypi.org.evil.example/",
        "https://internal.example:9443/x",  # pattern with a port allows only that port
        "http://127.0.0.1/",
        "http://2130706433/",  # 127.0.0.1 spelled as a number
        "http://0x7f.1/",
        "http://[::1]/",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
def test_hosts_not_on_the_allowlist_are_denied(url: str) -> None:
    v = verdict("GET", url)
    assert (v.allow, v.rule) == (False, RULE_HOST_NOT_ALLOWED)


def test_private_ip_literal_on_the_allowlist_still_needs_an_exception() -> None:
    policy = EgressPolicy(POLICY.allowlist.of(["127.0.0.1"]), TABLE)
    v = verdict("GET", "http://127.0.0.1/", policy=policy)
    assert (v.allow, v.rule) == (False, RULE_PRIVATE_ADDRESS)
    assert "loopback" in v.reason
    assert verdict("GET", "http://127.0.0.1/", policy=EgressPolicy.build(["127.0.0.1"])).allow


def test_host_header_must_name_the_host_connected_to() -> None:
    v = verdict("GET", "https://pypi.org/", [("Host", "evil.example")])
    assert (v.allow, v.rule) == (False, RULE_HOST_MISMATCH)
    assert verdict("GET", "https://pypi.org/", [("Host", "PYPI.org:443")]).allow
    assert verdict("GET", "https://pypi.org/", [("Host", "bad host!")]).rule == RULE_MALFORMED


# -- git push ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("POST", "https://pypi.org/o/r.git/git-receive-pack"),
        ("GET", "https://pypi.org/o/r.git/info/refs?service=git-receive-pack"),
        ("GET", "https://pypi.org/o/r.git/info/refs?x=1&SERVICE=Git-Receive-Pack"),
        ("POST", "https://pypi.org/o/r.git/git%2Dreceive%2Dpack"),
        ("POST", "https://pypi.org/o/r.git//GIT-RECEIVE-PACK/"),
        ("GET", "https://evil.example/r.git/info/refs?service=git-receive-pack"),
    ],
)
def test_git_push_is_refused_before_anything_else(method: str, url: str) -> None:
    v = verdict(method, url)
    assert (v.allow, v.rule) == (False, RULE_GIT_PUSH)


def test_git_fetch_is_not_a_push() -> None:
    assert verdict("GET", "https://pypi.org/o/r.git/info/refs?service=git-upload-pack").allow
    assert verdict("POST", "https://pypi.org/o/r.git/git-upload-pack").allow


# -- secrets ---------------------------------------------------------------------


def test_known_token_in_query_is_denied_and_the_reason_holds_no_secret() -> None:
    v = verdict("GET", "https://pypi.org/simple/?k=AKIAIOSFODNN7EXAMPLE")
    assert (v.allow, v.rule) == (False, RULE_SECRET_URL)
    assert "AWS access key id" in v.reason
    assert "AKIAIOSFODNN7EXAMPLE" not in v.reason + repr(v.findings)


def test_secret_in_the_host_name_is_denied() -> None:
    policy = EgressPolicy.build(["*.exfil.example"])
    v = verdict("GET", "https://akiaiosfodnn7example.exfil.example/", policy=policy)
    assert v.allow  # lowercased by DNS rules: no longer an AWS key id
    v = decide_target(f"{GITHUB_TOKEN.lower()[:30]}.exfil.example", 443, EgressPolicy.build(["*.exfil.example"], secrets={"BOTTLE_TOKEN_0": GITHUB_TOKEN.lower()[:30]}))
    assert (v.allow, v.rule) == (False, RULE_SECRET_URL)


def test_brokered_secret_is_allowed_only_in_the_injected_header_of_its_own_route() -> None:
    name, value = render_auth_header(TABLE.routes[0], ANTHROPIC_KEY)
    assert verdict("POST", "https://api.anthropic.com/v1/messages", [(name, value)]).allow
    # the same header to another host
    v = verdict("POST", "https://pypi.org/", [(name, value)])
    assert (v.allow, v.rule) == (False, RULE_SECRET_HEADER)
    # the right host, the wrong header
    v = verdict("POST", "https://api.anthropic.com/v1/messages", [("Authorization", f"Bearer {ANTHROPIC_KEY}")])
    assert (v.allow, v.rule) == (False, RULE_SECRET_HEADER)
    # the right header and host, plus the secret in the body
    v = verdict("POST", "https://api.anthropic.com/v1/messages", [(name, value)], ANTHROPIC_KEY.encode())
    assert (v.allow, v.rule) == (False, RULE_SECRET_BODY)
    # the github token on its route but outside the route's path prefix
    gh_name, gh_value = render_auth_header(TABLE.routes[1], GITHUB_TOKEN)
    assert verdict("GET", "https://api.github.com/repos/o/r", [(gh_name, gh_value)]).allow
    v = verdict("GET", "https://api.github.com/user", [(gh_name, gh_value)])
    assert (v.allow, v.rule) == (False, RULE_SECRET_HEADER)


@pytest.mark.parametrize(
    "encode",
    [
        lambda s: s,
        lambda s: base64.b64encode(s.encode()).decode(),
        lambda s: base64.b64encode(b"{" + s.encode()).decode(),
        lambda s: s.encode().hex(),
        lambda s: "".join(f"%{b:02x}" for b in s.encode()),
    ],
)
def test_brokered_secret_in_any_encoding_in_a_url_header_or_body_is_denied(encode) -> None:  # type: ignore[no-untyped-def]
    enc = encode(ANTHROPIC_KEY)
    assert verdict("GET", f"https://pypi.org/x?d={enc}").rule == RULE_SECRET_URL
    assert verdict("GET", "https://pypi.org/", [("X-Data", enc)]).rule == RULE_SECRET_HEADER
    assert verdict("POST", "https://pypi.org/", [], b'{"v": "' + enc.encode() + b'"}').rule == RULE_SECRET_BODY


def test_basic_auth_credentials_are_decoded_and_scanned() -> None:
    header = "Basic " + base64.b64encode(f"x-access-token:{GITHUB_TOKEN}".encode()).decode()
    v = verdict("GET", "https://pypi.org/", [("Authorization", header)], policy=EgressPolicy.build(["pypi.org"]))
    assert (v.allow, v.rule) == (False, RULE_SECRET_HEADER)


def test_decide_body_for_streams() -> None:
    assert decide_body([]).allow
    findings = POLICY.scanner.scan(GITHUB_TOKEN, "body")
    v = decide_body(findings)
    assert (v.allow, v.rule) == (False, RULE_SECRET_BODY)
    assert GITHUB_TOKEN not in v.reason


# -- connections ---------------------------------------------------------------------


def test_connect_pins_a_checked_public_address_preferring_ipv4() -> None:
    d = decide_connect("pypi.org", 443, ["2a04:4e42::223", "151.101.0.223"], POLICY)
    assert (d.allow, d.address) == (True, "151.101.0.223")
    d = decide_connect("pypi.org", 443, ["2a04:4e42::223"], POLICY)
    assert (d.allow, d.address) == (True, "2a04:4e42::223")


@pytest.mark.parametrize(
    "resolved",
    [
        ["127.0.0.1"],
        ["151.101.0.223", "10.0.0.1"],  # a mix is refused
        ["169.254.169.254"],
        ["::ffff:169.254.169.254"],
        ["fd00:ec2::254"],
        ["100.64.1.1"],
        ["0.0.0.0"],
    ],
)
def test_connect_refuses_names_resolving_to_non_public_addresses(resolved: list[str]) -> None:
    d = decide_connect("pypi.org", 443, resolved, POLICY)
    assert (d.allow, d.rule, d.address) == (False, RULE_PRIVATE_ADDRESS, None)


def test_connect_accepts_excepted_private_networks_and_refuses_unresolved_or_unlisted() -> None:
    assert decide_connect("pypi.org", 443, ["172.18.0.5"], POLICY).allow
    assert decide_connect("pypi.org", 443, [], POLICY).rule == RULE_DNS_FAILED
    assert decide_connect("evil.example", 443, ["1.2.3.4"], POLICY).rule == RULE_HOST_NOT_ALLOWED
    assert decide_connect("10.9.8.7", 80, [], POLICY).address == "10.9.8.7"


def test_target_checks_need_no_dns_and_do_not_ask_for_it_when_denied() -> None:
    assert decide_target("evil.example", 443, POLICY).allow is False
    d = decide_target("pypi.org", 443, POLICY)
    assert (d.allow, d.address) == (True, None)  # resolve, then decide_connect


# -- egress proxy -------------------------------------------------------------------------


def test_proxy_refuses_git_push_before_looking_at_routes() -> None:
    d = decide_proxy_request("POST", "api.github.com", 443, "/repos/o/r.git/git-receive-pack", TABLE)
    assert (d.action, d.rule) == ("deny", RULE_GIT_PUSH)


def test_proxy_routes_strip_every_credential_header() -> None:
    d = decide_proxy_request("POST", "api.anthropic.com", 443, "/v1/messages", TABLE)
    assert (d.action, d.rule) == ("route", RULE_ROUTE)
    assert d.route == TABLE.routes[0]
    assert {"authorization", "x-api-key", "proxy-authorization", "cookie"} <= set(d.strip)
    d = decide_proxy_request("GET", "pypi.org", 443, "/simple/", TABLE)
    assert (d.action, d.rule, d.strip) == ("pass", RULE_PASS, ("proxy-authorization",))


def test_chain_strips_the_agents_credential_and_injects_the_real_one() -> None:
    request = EgressRequest.from_url(
        "POST", "https://api.anthropic.com/v1/messages", [("x-api-key", "placeholder"), ("Authorization", f"Bearer {GITHUB_TOKEN}")]
    )
    v = decide_chain(request, POLICY, via_egress_proxy=True)
    assert (v.allow, v.stage, v.injected) == (True, "guard", True)
    direct = decide_chain(request, POLICY, via_egress_proxy=False)
    assert (direct.allow, direct.rule) == (False, RULE_SECRET_HEADER)
    push = decide_chain(EgressRequest.from_url("GET", "https://pypi.org/r/info/refs?service=git-receive-pack"), POLICY, via_egress_proxy=True)
    assert (push.allow, push.stage, push.rule) == (False, "egress-proxy", RULE_GIT_PUSH)


# -- fail closed, texts, files --------------------------------------------------------------


def test_policy_unavailable_denies() -> None:
    v = policy_unavailable("the file is missing")
    assert (v.allow, v.rule) == (False, RULE_POLICY_UNAVAILABLE)


@pytest.mark.parametrize("rule", DENY_RULES)
def test_every_deny_rule_has_a_specific_hint(rule: str) -> None:
    hint = access_hint(rule, host="h.example", agent="impl")
    assert hint != access_hint("no-such-rule", host="h.example", agent="impl")
    text = denial_text(rule, "because", role="guard", host="h.example", agent="impl")
    assert f"rule: {rule}" in text and "to get access:" in text


def test_host_not_allowed_text_tells_how_to_ask_for_access() -> None:
    text = denial_text(RULE_HOST_NOT_ALLOWED, "x", role="guard", host="evil.example", agent="impl")
    assert "bottle.egress.allow" in text and "'evil.example'" in text and "supervise" in text


def test_policy_document_round_trips_and_rebuilds_the_same_decisions() -> None:
    doc = policy_document(["pypi.org"], TABLE, allow_private=["172.16.0.0/12"], identity="impl-abcde", agent="impl")
    data = encode_policy(doc)
    assert ANTHROPIC_KEY.encode() not in data
    back = decode_policy(data)
    assert back == doc
    policy = policy_from_document(back, SECRETS)
    name, value = render_auth_header(TABLE.routes[0], ANTHROPIC_KEY)
    req = EgressRequest.from_url("POST", "https://api.anthropic.com/v1/messages", [(name, value)])
    assert decide_request(req, policy).allow
    assert "api.anthropic.com" in back.allow


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"[]", b'{"version": 2}', b'{"version": 1, "allow": ["*"]}', b'{"version": 1, "bogus": 1}'],
)
def test_bad_policy_files_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        policy_from_document(decode_policy(data))


def test_policy_repr_shows_no_secret() -> None:
    assert ANTHROPIC_KEY not in repr(POLICY) and GITHUB_TOKEN not in repr(POLICY)


@settings(max_examples=150)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    path=st.text(max_size=200),
    header=st.text(max_size=100),
    body=st.binary(max_size=500),
)
def test_decide_request_never_raises_and_never_reveals_a_secret(method: str, path: str, header: str, body: bytes) -> None:
    request = EgressRequest(method, "pypi.org", 443, "/" + path, headers=(("X-Any", header),), body=body)
    v = decide_request(request, POLICY)
    assert v.rule in DENY_RULES or v.rule == RULE_ALLOWED
    assert ANTHROPIC_KEY not in v.reason and GITHUB_TOKEN not in v.reason
