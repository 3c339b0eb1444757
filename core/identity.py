"""Bottle identities: ``<slug>-<xxxxx>``, new for every launch.

The slug comes from the agent's name so people can tell bottles apart in
``docker ps``; the five random base36 characters make two launches of the
same agent in the same directory distinct. ``resume`` reuses a recorded
identity, so identities given back by a user are validated here.

Every identity is safe inside a container or network name on Docker and
Podman (``[a-zA-Z0-9][a-zA-Z0-9_.-]*``) and short enough that
``bottle-<role>-<identity>`` stays one DNS label (at most 63 characters):
containers reach each other by that name.
"""

from __future__ import annotations

import re
import unicodedata

from bottle.ports.clock import Randomness
from bottle.ports.errors import InputError

IDENTITY_SUFFIX_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
IDENTITY_SUFFIX_LENGTH = 5

# 63 (one DNS label) - len("bottle-egress-proxy-") - len("-xxxxx") = 37; 32
# leaves room for a role name a few characters longer than today's longest.
SLUG_MAX_LENGTH = 32
# Cutting a long name at a word boundary reads better, unless the boundary
# is so early that most of the name would be lost.
_MIN_BOUNDARY_CUT = SLUG_MAX_LENGTH // 2

FALLBACK_SLUG = "agent"

_SLUG_RUNS = re.compile(r"-{2,}")
_IDENTITY = re.compile(
    r"(?P<slug>[a-z0-9]+(?:-[a-z0-9]+)*)-(?P<suffix>[0-9a-z]{%d})" % IDENTITY_SUFFIX_LENGTH
)


class InvalidIdentity(InputError, ValueError):
    """A text given as a bottle identity is not one."""


def slugify(agent_name: str) -> str:
    """A name-safe slug of ``agent_name``: ``[a-z0-9]`` words joined by single ``-``.

    - Letters with accents lose them (NFKD: ``Café`` -> ``cafe``); other
      non-ASCII letters and symbols (``日本``, ``ß``, emoji) are dropped.
    - Whitespace, ASCII punctuation (``_``, ``.``, ``/``, ...) and Unicode
      punctuation/separators split words.
    - At most ``SLUG_MAX_LENGTH`` characters, cut at a word boundary when
      one falls in the second half of the limit, else mid-word.
    - Never empty (``"agent"``), never starting or ending with ``-``.
    """
    out: list[str] = []
    for ch in unicodedata.normalize("NFKD", agent_name):
        if ch.isascii():
            if ch.isalnum():
                out.append(ch.lower())
            else:
                out.append("-")
        elif unicodedata.combining(ch):
            continue
        elif ch.isspace() or unicodedata.category(ch)[0] in "PZ":
            out.append("-")
        # anything else non-ASCII has no ASCII spelling: dropped
    slug = _SLUG_RUNS.sub("-", "".join(out)).strip("-")
    if len(slug) > SLUG_MAX_LENGTH:
        head = slug[:SLUG_MAX_LENGTH]
        if slug[SLUG_MAX_LENGTH] != "-":
            boundary = head.rfind("-")
            if boundary >= _MIN_BOUNDARY_CUT:
                head = head[:boundary]
        slug = head.strip("-")
    return slug or FALLBACK_SLUG


def new_identity(agent_name: str, rng: Randomness) -> str:
    """A fresh identity ``<slugify(agent_name)>-<5 base36 characters from rng>``.

    Raises ``ValueError`` if ``rng`` returns something other than five
    characters of ``IDENTITY_SUFFIX_ALPHABET`` (a broken randomness port).
    """
    suffix = rng.choice(IDENTITY_SUFFIX_ALPHABET, IDENTITY_SUFFIX_LENGTH)
    if len(suffix) != IDENTITY_SUFFIX_LENGTH or any(c not in IDENTITY_SUFFIX_ALPHABET for c in suffix):
        raise ValueError(
            f"randomness port returned {suffix!r}; expected {IDENTITY_SUFFIX_LENGTH} characters of [0-9a-z]"
        )
    return f"{slugify(agent_name)}-{suffix}"


def is_identity(text: str) -> bool:
    """True if ``text`` is exactly an identity ``new_identity`` could have made."""
    if not isinstance(text, str):
        return False
    m = _IDENTITY.fullmatch(text)
    return m is not None and len(m.group("slug")) <= SLUG_MAX_LENGTH


def parse_identity(text: str) -> str:
    """Return ``text`` (surrounding whitespace removed) if it is an identity.

    Raises ``InvalidIdentity`` (an ``InputError``, exit code 2) otherwise.
    """
    candidate = text.strip() if isinstance(text, str) else text
    if isinstance(candidate, str) and is_identity(candidate):
        return candidate
    shown = repr(candidate) if not isinstance(candidate, str) or len(candidate) <= 80 else repr(candidate[:77] + "...")
    raise InvalidIdentity(
        f"{shown} is not a bottle identity",
        hint="an identity looks like 'implementer-k3x9q' (agent slug, '-', five characters "
        "of [0-9a-z]); `bottle ls` lists the bottles that have state",
    )
