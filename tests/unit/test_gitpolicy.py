"""Git push policy: every spelling of a smart-HTTP push is caught; ref updates are judged."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bottle.core.gitpolicy import (
    BranchRules,
    PushDecision,
    PushRefUpdate,
    decide_push,
    is_git_push_request,
    push_allowed,
)

PUSH_SPELLINGS = [
    # (method, path, query)
    ("POST", "/owner/repo.git/git-receive-pack", ""),
    ("POST", "/owner/repo/git-receive-pack", ""),
    ("GET", "/owner/repo.git/git-receive-pack", ""),
    ("PUT", "/git-receive-pack", ""),
    ("GET", "/owner/repo.git/info/refs", "service=git-receive-pack"),
    ("GET", "/owner/repo.git/info/refs?service=git-receive-pack", ""),
    # case
    ("post", "/owner/repo.git/GIT-RECEIVE-PACK", ""),
    ("GET", "/owner/repo.git/INFO/REFS", "SERVICE=Git-Receive-Pack"),
    # percent-encoding, single, double and triple
    ("POST", "/owner/repo.git/git%2Dreceive%2Dpack", ""),
    ("POST", "/owner/repo.git/git%2dreceive%2dpack", ""),
    ("POST", "/owner/repo.git/%67%69%74-receive-pack", ""),
    ("POST", "/owner/repo.git/git%252Dreceive%252Dpack", ""),
    ("POST", "/owner/repo.git/git%25252Dreceive-pack", ""),
    ("GET", "/owner/repo.git/info/refs", "service=git%2Dreceive%2Dpack"),
    ("GET", "/owner/repo.git/info/refs", "service=git%252Dreceive%252Dpack"),
    ("GET", "/owner/repo.git/info/refs", "%73ervice=git-receive-pack"),
    ("GET", "/owner/repo.git/info/refs%3Fservice%3Dgit-receive-pack", ""),
    ("GET", "/owner/repo.git/info%2Frefs", "service=git-receive-pack"),
    # slashes
    ("POST", "//owner//repo.git///git-receive-pack", ""),
    ("POST", "/owner/repo.git/git-receive-pack/", ""),
    ("POST", "/owner/repo.git/git-receive-pack//", ""),
    ("POST", "\\owner\\repo.git\\git-receive-pack", ""),
    ("POST", "/owner/repo.git%2Fgit-receive-pack", ""),
    # path parameters and suffixes
    ("POST", "/owner/repo.git/git-receive-pack;jsessionid=1", ""),
    ("POST", "/owner/repo.git;v=1/git-receive-pack", ""),
    ("POST", "/owner/repo.git/git-receive-pack.php", ""),
    # query order, repeats, separators, plus and spaces
    ("GET", "/owner/repo.git/info/refs", "a=1&service=git-receive-pack"),
    ("GET", "/owner/repo.git/info/refs", "service=git-upload-pack&service=git-receive-pack"),
    ("GET", "/owner/repo.git/info/refs", "service=git-receive-pack&service=git-upload-pack"),
    ("GET", "/owner/repo.git/info/refs", "a=1;service=git-receive-pack"),
    ("GET", "/owner/repo.git/info/refs", "service=+git-receive-pack+"),
    ("GET", "/owner/repo.git/info/refs", "service=%20git-receive-pack%20"),
    ("GET", "/owner/repo.git/info/refs", "+service+=git-receive-pack"),
    ("GET", "/owner/repo.git/info/refs", "service=git-receive-pack#frag"),
    ("GET", "/owner/repo.git/info/refs?a=1", "service=git-receive-pack"),
    ("GET", "/owner/repo.git/info/refs?service=git-receive-pack", "service=git-upload-pack"),
    # absolute-form request target (sent to a proxy)
    ("POST", "https://github.com/owner/repo.git/git-receive-pack", ""),
    # documented choice: any mention in the path is blocked
    ("GET", "/docs/git-receive-pack-explained.html", ""),
    # decoding that never settles is treated as a push
    ("GET", "/%" + "25" * 12 + "41", ""),
]

NOT_PUSHES = [
    ("POST", "/owner/repo.git/git-upload-pack", ""),
    ("GET", "/owner/repo.git/info/refs", "service=git-upload-pack"),
    ("GET", "/owner/repo.git/info/refs", ""),
    ("GET", "/owner/repo", ""),
    ("GET", "/", ""),
    ("GET", "", ""),
    ("POST", "/v1/messages", "beta=true"),
    ("GET", "/search", "q=receive+pack"),
    ("GET", "/search", "q=git-receive-pac"),
    ("GET", "/owner/repo.git/info/refs", "services=git-upload-pack"),
    ("GET", "/simple/git-receive/", ""),
]


@pytest.mark.parametrize(("method", "path", "query"), PUSH_SPELLINGS)
def test_push_spellings_are_pushes(method: str, path: str, query: str) -> None:
    assert is_git_push_request(method, path, query)


@pytest.mark.parametrize(("method", "path", "query"), NOT_PUSHES)
def test_fetches_and_ordinary_requests_are_not_pushes(method: str, path: str, query: str) -> None:
    assert not is_git_push_request(method, path, query)


segments = st.from_regex(r"[A-Za-z0-9._~-]{0,10}", fullmatch=True)
methods = st.sampled_from(["GET", "POST", "PUT", "get", "PATCH", "OPTIONS"])


@st.composite
def disguised(draw: st.DrawFn, text: str) -> str:
    """``text`` with random case changes and percent-encodings (up to three times)."""
    out = []
    for ch in text:
        if draw(st.booleans()):
            ch = ch.upper()
        for _ in range(draw(st.integers(0, 3))):
            # encode the leading character; again on the result gives %25..
            ch = f"%{ord(ch[0]):02X}{ch[1:]}"
        out.append(ch)
    return "".join(out)


@given(
    methods,
    st.lists(segments, max_size=3),
    disguised("git-receive-pack"),
    st.sampled_from(["", "/", "//", ";x=1", "?a=b"]),
    st.sampled_from(["/", "//", "\\", "%2F"]),
)
def test_disguised_receive_pack_path_is_a_push(
    method: str, prefix: list[str], word: str, suffix: str, sep: str
) -> None:
    path = sep + sep.join([*prefix, word]) + suffix
    assert is_git_push_request(method, path, "")


@given(
    methods,
    st.lists(st.tuples(segments, segments), max_size=3),
    st.lists(st.tuples(segments, segments), max_size=3),
    disguised("service"),
    disguised("git-receive-pack"),
    st.sampled_from(["&", ";"]),
)
def test_service_receive_pack_anywhere_in_the_query_is_a_push(
    method: str,
    before: list[tuple[str, str]],
    after: list[tuple[str, str]],
    key: str,
    value: str,
    sep: str,
) -> None:
    pairs = [f"{k}={v}" for k, v in before] + [f"{key}={value}"] + [f"{k}={v}" for k, v in after]
    query = sep.join(pairs)
    assert is_git_push_request(method, "/owner/repo.git/info/refs", query)
    assert is_git_push_request(method, "/owner/repo.git/info/refs?" + query, "")


@given(methods, st.lists(segments, max_size=4), disguised("git-upload-pack"))
def test_disguised_upload_pack_is_never_a_push(method: str, prefix: list[str], word: str) -> None:
    path = "/" + "/".join([*prefix, word])
    assert not is_git_push_request(method, path, "")
    assert not is_git_push_request(method, "/r.git/info/refs", "service=" + word)


# --------------------------------------------------------------------------
# ref updates
# --------------------------------------------------------------------------

ZERO = "0" * 40
A = "a" * 40
B = "b" * 40


def decide_one(
    ref: str, old: str = A, new: str = B, *, ff: bool | None = True, rules: BranchRules | None = None
) -> PushDecision:
    fast_forward = {} if ff is None else {ref: ff}
    [decision] = decide_push([PushRefUpdate(ref, old, new)], rules or BranchRules(), fast_forward)
    assert decision.ref == ref
    return decision


@pytest.mark.parametrize(
    ("ref", "old", "new", "ff", "allowed", "rule"),
    [
        # protected branches: fast-forward and creation yes; rewrite and deletion no
        ("refs/heads/main", A, B, True, True, "ok"),
        ("refs/heads/main", A, B, False, False, "protected-non-fast-forward"),
        ("refs/heads/main", A, B, None, False, "protected-non-fast-forward"),
        ("refs/heads/main", A, ZERO, True, False, "protected-delete"),
        ("refs/heads/main", ZERO, B, None, True, "ok"),
        ("refs/heads/master", A, B, False, False, "protected-non-fast-forward"),
        ("refs/heads/Main", A, B, False, False, "protected-non-fast-forward"),
        ("refs/heads/MASTER", A, ZERO, True, False, "protected-delete"),
        # other branches: anything goes
        ("refs/heads/feature/x", A, B, False, True, "ok"),
        ("refs/heads/feature/x", A, ZERO, None, True, "ok"),
        ("refs/heads/maintenance", A, B, False, True, "ok"),
        # tags: create only
        ("refs/tags/v1.0", ZERO, B, None, True, "ok"),
        ("refs/tags/v1.0", A, B, True, False, "tag-move"),
        ("refs/tags/v1.0", A, ZERO, None, False, "tag-delete"),
        # other namespaces need an explicit allow
        ("refs/notes/commits", A, B, True, False, "other-namespace"),
        ("refs/for/main", ZERO, B, None, False, "other-namespace"),
        # invalid refs
        ("main", A, B, True, False, "invalid-ref"),
        ("refs/", A, B, True, False, "invalid-ref"),
        ("refs/heads/a..b", A, B, True, False, "invalid-ref"),
        ("refs/heads/x y", A, B, True, False, "invalid-ref"),
        ("refs/heads/x.lock", A, B, True, False, "invalid-ref"),
        ("refs/heads/x\n", A, B, True, False, "invalid-ref"),
    ],
)
def test_default_rules(ref: str, old: str, new: str, ff: bool | None, allowed: bool, rule: str) -> None:
    decision = decide_one(ref, old, new, ff=ff)
    assert (decision.allowed, decision.rule) == (allowed, rule)
    assert decision.reason


def test_sha256_null_object_counts_as_deletion() -> None:
    assert decide_one("refs/heads/main", "a" * 64, "0" * 64).rule == "protected-delete"


@pytest.mark.parametrize(
    ("ref", "allowed", "rule"),
    [
        ("refs/heads/agent/fix-1", True, "ok"),
        ("refs/heads/agent/deep/fix", True, "ok"),
        ("refs/heads/Agent/fix", False, "not-allowed"),
        ("refs/heads/feature", False, "not-allowed"),
        ("refs/heads/main", False, "not-allowed"),
        ("refs/tags/v1", False, "not-allowed"),
        ("refs/tags/agent-v1", True, "ok"),
        ("refs/for/main", True, "ok"),
        ("refs/notes/x", False, "not-allowed"),
    ],
)
def test_allow_list(ref: str, allowed: bool, rule: str) -> None:
    rules = BranchRules(allow=("agent/*", "refs/tags/agent-*", "refs/for/*"))
    decision = decide_one(ref, ZERO, B, rules=rules)
    assert (decision.allowed, decision.rule) == (allowed, rule)
    if rule == "not-allowed":
        assert "agent/*" in decision.reason


def test_protected_applies_within_the_allow_list() -> None:
    rules = BranchRules(protected=("release/*",), allow=("release/*",))
    assert decide_one("refs/heads/release/1", ff=False, rules=rules).rule == "protected-non-fast-forward"
    assert decide_one("refs/heads/release/1", ff=True, rules=rules).allowed
    # main is no longer protected by these rules, but not allowed either
    assert decide_one("refs/heads/main", rules=rules).rule == "not-allowed"


def test_no_protected_branches() -> None:
    assert decide_one("refs/heads/main", A, ZERO, rules=BranchRules(protected=())).allowed


def test_decisions_keep_order_and_push_is_all_or_nothing() -> None:
    updates = [
        PushRefUpdate("refs/heads/feature", A, B),
        PushRefUpdate("refs/heads/main", A, B),
        PushRefUpdate("refs/tags/v1", ZERO, B),
    ]
    decisions = decide_push(updates, BranchRules(), {"refs/heads/main": False})
    assert [d.ref for d in decisions] == [u.ref for u in updates]
    assert [d.allowed for d in decisions] == [True, False, True]
    assert not push_allowed(decisions)
    assert push_allowed(decisions[:1] + decisions[2:])
    assert push_allowed([])


branch_names = st.from_regex(r"[a-z][a-z0-9/_-]{0,15}", fullmatch=True).filter(
    lambda s: "//" not in s and not s.endswith("/")
)


@given(branch_names, st.booleans(), st.booleans(), st.booleans())
def test_protected_branch_is_never_deleted_or_rewound(name: str, deletion: bool, creation: bool, ff: bool) -> None:
    ref = f"refs/heads/{name}"
    rules = BranchRules(protected=(name,))
    update = PushRefUpdate(ref, ZERO if creation else A, ZERO if deletion else B)
    [decision] = decide_push([update], rules, {ref: ff})
    if decision.allowed:
        assert not deletion
        assert creation or ff


@given(branch_names, st.lists(branch_names, min_size=1, max_size=3))
def test_allow_list_admits_only_matching_refs(name: str, allow: list[str]) -> None:
    ref = f"refs/heads/{name}"
    [decision] = decide_push([PushRefUpdate(ref, ZERO, B)], BranchRules(protected=(), allow=tuple(allow)), {})
    assert decision.allowed is any(fnmatch.fnmatchcase(name, p) for p in allow)
