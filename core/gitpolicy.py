"""Git push policy: spotting a push over HTTP, and deciding which ref updates may land.

The git gate is the only way a push leaves a bottle. The egress proxy and the
guard call ``is_git_push_request`` on every request and refuse a push before
any route or allowlist is consulted; the git gate's pre-receive hook calls
``decide_push`` with the ref updates of a push.

What counts as a push (smart HTTP, ``git-receive-pack``). After undoing every
spelling a client or an intermediary might use — percent-encoding (also
double and deeper), ``+`` for space, letter case, backslashes, repeated or
trailing slashes, ``;`` path parameters, a query embedded in the path — a
request is a push when

- its path contains ``git-receive-pack`` anywhere, or
- any query parameter named ``service`` has a value containing
  ``git-receive-pack`` (what ``GET .../info/refs?service=git-receive-pack``
  sends), whatever the path, order or repetition of parameters.

The method does not matter. This deliberately also blocks pages whose path
merely mentions the word (``/docs/git-receive-pack-explained.html``): a
false alarm costs a documentation page, a miss costs an unscanned push.
Fetches (``git-upload-pack``) are not pushes.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote

import msgspec

_PUSH_SERVICE = "git-receive-pack"
# Deeper nesting than this is no legitimate client's doing.
_MAX_DECODE_ROUNDS = 8
_QUERY_SEPARATORS = re.compile(r"[&;]")


def _decode_fully(text: str, *, plus_is_space: bool) -> str | None:
    """Percent-decode until nothing changes; None if it never settles."""
    for _ in range(_MAX_DECODE_ROUNDS):
        if plus_is_space:
            text = text.replace("+", " ")
        decoded = unquote(text, errors="replace")
        if decoded == text:
            return text
        text = decoded
    return None


def _canonical_path(path: str) -> str | None:
    decoded = _decode_fully(path, plus_is_space=False)
    if decoded is None:
        return None
    return decoded.lower().replace("\\", "/")


def _query_mentions_push(query: str) -> bool | None:
    for pair in _QUERY_SEPARATORS.split(query):
        key, _, value = pair.partition("=")
        key_d = _decode_fully(key, plus_is_space=True)
        value_d = _decode_fully(value, plus_is_space=True)
        if key_d is None or value_d is None:
            return None
        if key_d.strip().lower() == "service" and _PUSH_SERVICE in value_d.lower():
            return True
    return False


def is_git_push_request(method: str, path: str, query: str = "") -> bool:
    """True if an HTTP request is (or could be read by a server as) a smart-HTTP git push.

    ``path`` is the request path as sent (it may still carry ``?query``);
    ``query`` is the query string without ``?``. See the module docstring for
    the exact rule. Input that does not decode to a stable form within a few
    rounds is treated as a push.
    """
    del method  # pushes are refused whatever the method
    raw_path = path or ""
    queries = [query or ""]
    # A query may hide inside the path itself, literally or encoded.
    decoded_path = _canonical_path(raw_path)
    if decoded_path is None:
        return True
    if _PUSH_SERVICE in decoded_path:
        return True
    for piece in (raw_path, decoded_path):
        if "?" in piece:
            queries.append(piece.split("?", 1)[1])
    for q in queries:
        verdict = _query_mentions_push(q.split("#", 1)[0])
        if verdict is None or verdict:
            return True
    return False


# --------------------------------------------------------------------------
# ref updates
# --------------------------------------------------------------------------

HEADS = "refs/heads/"
TAGS = "refs/tags/"


def _is_null_sha(sha: str) -> bool:
    # SHA-1 (40) and SHA-256 (64) repositories both spell "no object" as zeros.
    return bool(sha) and set(sha) == {"0"}


class PushRefUpdate(msgspec.Struct, frozen=True):
    """One line a pre-receive hook reads: ``<old> <new> <ref>``."""

    ref: str
    old_sha: str
    new_sha: str

    @property
    def is_deletion(self) -> bool:
        return _is_null_sha(self.new_sha)

    @property
    def is_creation(self) -> bool:
        return _is_null_sha(self.old_sha)


class BranchRules(msgspec.Struct, frozen=True):
    """Which refs an agent may change.

    Patterns are fnmatch-style (``*`` also matches ``/``). A pattern that
    starts with ``refs/`` is matched against the full ref name; any other
    pattern against the branch name of ``refs/heads/<branch>`` only.

    - ``protected``: branches that may be fast-forwarded (or created) but
      never deleted or rewound. Matched case-insensitively, because a
      case-insensitive server would treat ``Main`` as ``main``.
    - ``allow``: when set, the agent may push only refs matching one of
      these (case-sensitive). None means every branch.
    """

    protected: tuple[str, ...] = ("main", "master")
    allow: tuple[str, ...] | None = None


class PushDecision(msgspec.Struct, frozen=True):
    """The verdict on one ref update. ``rule`` is a stable keyword; ``reason`` is for people."""

    ref: str
    allowed: bool
    rule: str
    reason: str


RULE_OK = "ok"
RULE_INVALID_REF = "invalid-ref"
RULE_NOT_ALLOWED = "not-allowed"
RULE_OTHER_NAMESPACE = "other-namespace"
RULE_PROTECTED_DELETE = "protected-delete"
RULE_PROTECTED_NON_FF = "protected-non-fast-forward"
RULE_TAG_DELETE = "tag-delete"
RULE_TAG_MOVE = "tag-move"


def _matches_any(ref: str, patterns: Iterable[str], *, casefold: bool) -> bool:
    for pattern in patterns:
        if pattern.startswith("refs/"):
            subject = ref
        elif ref.startswith(HEADS):
            subject = ref[len(HEADS):]
        else:
            continue
        if casefold:
            if fnmatch.fnmatchcase(subject.casefold(), pattern.casefold()):
                return True
        elif fnmatch.fnmatchcase(subject, pattern):
            return True
    return False


def _valid_ref(ref: str) -> bool:
    if not ref.startswith("refs/") or len(ref) <= len("refs/"):
        return False
    if ".." in ref or "//" in ref or ref.endswith("/") or ref.endswith(".lock") or "@{" in ref:
        return False
    return not any(ord(c) < 0x20 or ord(c) == 0x7F or c in " ~^:?*[\\" for c in ref)


def _decide_one(update: PushRefUpdate, rules: BranchRules, is_fast_forward: Mapping[str, bool]) -> PushDecision:
    ref = update.ref

    def verdict(allowed: bool, rule: str, reason: str) -> PushDecision:
        return PushDecision(ref, allowed, rule, reason)

    if not _valid_ref(ref):
        return verdict(False, RULE_INVALID_REF, f"{ref!r} is not a valid full ref name (refs/heads/..., refs/tags/...)")
    if rules.allow is not None and not _matches_any(ref, rules.allow, casefold=False):
        return verdict(False, RULE_NOT_ALLOWED, f"{ref} is not in this remote's allowed refs: {', '.join(rules.allow)}")
    if ref.startswith(TAGS):
        if update.is_deletion:
            return verdict(False, RULE_TAG_DELETE, f"deleting tag {ref} is not allowed; tags are immutable here")
        if not update.is_creation:
            return verdict(False, RULE_TAG_MOVE, f"moving existing tag {ref} is not allowed; create a new tag")
        return verdict(True, RULE_OK, f"new tag {ref}")
    if not ref.startswith(HEADS):
        if rules.allow is None:
            return verdict(
                False,
                RULE_OTHER_NAMESPACE,
                f"{ref} is outside refs/heads and refs/tags; list it under the remote's allowed refs to push it",
            )
        return verdict(True, RULE_OK, f"{ref} is explicitly allowed")
    if _matches_any(ref, rules.protected, casefold=True):
        if update.is_deletion:
            return verdict(False, RULE_PROTECTED_DELETE, f"{ref} is protected and cannot be deleted")
        if not update.is_creation and not is_fast_forward.get(ref, False):
            return verdict(
                False,
                RULE_PROTECTED_NON_FF,
                f"{ref} is protected; only fast-forward pushes are accepted (pull and rebase first)",
            )
    return verdict(True, RULE_OK, f"{ref} may be updated")


def decide_push(
    updates: Iterable[PushRefUpdate],
    rules: BranchRules,
    is_fast_forward: Mapping[str, bool],
) -> list[PushDecision]:
    """One decision per ref update, in order. Pure: fast-forwardness is given per ref.

    Checked in this order:

    1. the ref must be a valid full ref name (``refs/...``);
    2. with ``rules.allow`` set, the ref must match one of its patterns;
    3. tags (``refs/tags/``) may be created, never moved or deleted;
    4. refs outside ``refs/heads`` and ``refs/tags`` (notes, ``refs/for/``)
       are refused unless ``rules.allow`` names them;
    5. a protected branch may not be deleted, and an update of an existing
       one must be a fast-forward; a ref missing from ``is_fast_forward``
       counts as not fast-forward.

    Unprotected branches may be created, rewound and deleted.
    """
    return [_decide_one(u, rules, is_fast_forward) for u in updates]


def push_allowed(decisions: Iterable[PushDecision]) -> bool:
    """True if every update may land (a push is accepted or refused as a whole)."""
    return all(d.allowed for d in decisions)
