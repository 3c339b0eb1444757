"""How long the guard may reuse the addresses a name resolved to: the policy of its lookup cache.

The guard resolves the name of every upstream it connects to, checks every
address against the egress policy and connects to the one it checked. Looking
the name up again for each connection is correct but slow: clients such as
npm open dozens of connections at once, and resolvers that drop parallel
queries (conntrack races in Docker and Kubernetes, some home routers) answer
some of them only after their retry time-out of several seconds. So the guard
keeps each answer for its DNS TTL, within these limits:

- ``floor``: an answer with a TTL of 0 (or a file answer, which has none) is
  still kept this long, so a burst of connections makes one lookup;
- ``cap``: a long TTL is cut to this, so a changed address is seen soon;
- ``negative``: a name that did not resolve (no such name, no address, or
  the resolver failed) is asked again after this long;
- ``entries``: at most this many names are kept; the least recently used
  goes first (a ``*.suffix`` pattern can allow any number of names).

A cached answer holds addresses only, never a verdict: the guard checks them
against the policy in force every time it uses them.

Pure: numbers in, numbers out. The lookups and the cache itself live in
``bottle.sidecars.guard.resolver``.
"""

from __future__ import annotations

import msgspec


class LookupLimits(msgspec.Struct, frozen=True):
    """Bounds of the guard's lookup cache, in seconds and entries (see the module docstring)."""

    floor: float = 5.0
    cap: float = 300.0
    negative: float = 5.0
    entries: int = 1024

    def __post_init__(self) -> None:
        if not 0 <= self.floor <= self.cap:
            raise ValueError(f"lookup cache: need 0 <= floor <= cap, got floor {self.floor}, cap {self.cap}")
        if self.negative < 0:
            raise ValueError(f"lookup cache: negative lifetime must be 0 or more, got {self.negative}")
        if self.entries < 1:
            raise ValueError(f"lookup cache: entries must be at least 1, got {self.entries}")


def answer_lifetime(ttl: float | None, found: bool, limits: LookupLimits) -> float:
    """How many seconds an answer may be reused: its TTL clamped to the limits.

    ``found`` is False for a name that gave no address (the ``negative``
    lifetime applies); ``ttl`` None means the source gave none (a hosts file
    entry), which is kept for ``floor``.
    """
    if not found:
        return limits.negative
    if ttl is None:
        return limits.floor
    return min(max(float(ttl), limits.floor), limits.cap)
