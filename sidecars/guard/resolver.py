"""The guard's name lookups: one query in flight per name, each answer kept for its TTL.

Why: the guard resolves the upstream's name for every connection it opens,
and clients such as npm open dozens at once. Resolvers that drop parallel
queries (conntrack races in Docker and Kubernetes, and this project's own
CI machines) answer some of them only after a retry time-out of seconds, so
a lookup per connection stalls the client. Squid (ipcache) and Envoy (the
dynamic forward proxy's DNS cache) keep a resolution cache for the same
reason.

- ``CachedResolver`` is what the addon calls (``await resolver(host, port)``
  gives the addresses): concurrent callers for one name share a single
  lookup, and its answer is kept as long as ``bottle.core.lookups`` allows
  (the TTL, clamped; failures briefly; a bounded number of names, least
  recently used out first). It keeps addresses, never a verdict: the addon
  checks them against the policy in force on every use, and pins the
  connection to the address it checked.
- ``SystemLookup`` asks what the container's own configuration says, as
  glibc would with ``hosts: files dns``: ``/etc/hosts`` first (Podman writes
  the bottle's peers there), then the name servers, search list, ``ndots``
  and ``timeout`` of ``/etc/resolv.conf`` (both files re-read when they
  change), through dnspython, because glibc's ``getaddrinfo`` does not tell
  the TTL. A then AAAA, one after the other: glibc sends the two at once
  from one socket, which is exactly what such resolvers drop.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from bottle.core.lookups import LookupLimits, answer_lifetime
from bottle.core.routing import normalize_host
from bottle.sidecars._shared import WatchedFile

HOSTS_FILE = "/etc/hosts"
RESOLV_CONF = "/etc/resolv.conf"


class Answer(NamedTuple):
    """The addresses a name resolved to, and for how many seconds the source said they hold (None: it did not say)."""

    addresses: tuple[str, ...]
    ttl: float | None = None


Lookup = Callable[[str], Awaitable[Answer]]


class _Entry(NamedTuple):
    addresses: tuple[str, ...]
    expires: float


class CachedResolver:
    """``await resolver(host, port)``: the addresses of ``host``, from a lookup shared by concurrent callers and kept for its TTL.

    ``lookup(name)`` does the real lookup of a normalised name; any exception
    it raises counts as "no address" (kept for ``limits.negative`` seconds).
    ``clock`` gives monotonic seconds. The port plays no part: a name's
    addresses do not depend on it. ``lookups`` counts the lookups made.
    """

    def __init__(self, lookup: Lookup, *, clock: Callable[[], float] = time.monotonic,
                 limits: LookupLimits | None = None) -> None:
        self._lookup = lookup
        self._clock = clock
        self._limits = limits or LookupLimits()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[tuple[str, ...]]] = {}
        self.lookups = 0

    @property
    def size(self) -> int:
        """How many names are cached (expired ones included until they are dropped)."""
        return len(self._entries)

    async def __call__(self, host: str, port: int) -> list[str]:
        try:
            name = normalize_host(host)
        except ValueError as exc:
            raise OSError(f"not a host name: {exc}") from None
        entry = self._entries.get(name)
        if entry is not None and self._clock() < entry.expires:
            self._entries.move_to_end(name)
            return list(entry.addresses)
        pending = self._inflight.get(name)
        if pending is None:
            pending = asyncio.ensure_future(self._resolve(name))
            self._inflight[name] = pending
        # Shielded: a caller that goes away (its client hung up) does not
        # cancel the lookup the others wait for.
        return list(await asyncio.shield(pending))

    async def _resolve(self, name: str) -> tuple[str, ...]:
        self.lookups += 1
        try:
            answer = await self._lookup(name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not isinstance(exc, (OSError, dns.exception.DNSException)):
                print(f"bottle guard: looking up {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            answer = Answer(())
        finally:
            self._inflight.pop(name, None)
        self._store(name, answer)
        return answer.addresses

    def _store(self, name: str, answer: Answer) -> None:
        now = self._clock()
        lifetime = answer_lifetime(answer.ttl, bool(answer.addresses), self._limits)
        self._entries.pop(name, None)
        if len(self._entries) >= self._limits.entries:
            for stale in [n for n, e in self._entries.items() if e.expires <= now]:
                del self._entries[stale]
        while len(self._entries) >= self._limits.entries:
            self._entries.popitem(last=False)
        self._entries[name] = _Entry(answer.addresses, now + lifetime)


def parse_hosts(data: bytes) -> dict[str, tuple[str, ...]]:
    """A hosts file as {normalised name: its addresses, in file order}; lines that are not ``address name...`` are skipped."""
    table: dict[str, list[str]] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        try:
            address = str(ipaddress.ip_address(fields[0]))
        except ValueError:
            continue
        for alias in fields[1:]:
            try:
                name = normalize_host(alias)
            except ValueError:
                continue
            addresses = table.setdefault(name, [])
            if address not in addresses:
                addresses.append(address)
    return {name: tuple(addresses) for name, addresses in table.items()}


def _resolver_from(data: bytes, port: int) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=False)
    try:
        resolver.read_resolv_conf(io.StringIO(data.decode("utf-8", "replace")))
    except dns.exception.DNSException as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None
    resolver.port = port
    return resolver


class SystemLookup:
    """Look a name up as the container's ``/etc/hosts`` and ``/etc/resolv.conf`` say (see the module docstring).

    ``port`` is the name servers' port (53; another only for stand-ins in
    tests and benchmarks). A query that gets no answer is sent again after
    dnspython's 2 s (or resolv.conf's ``timeout``), and the lookup gives up
    after 5 s in all. Raises ``OSError`` or a ``dns.exception.DNSException``
    when the name servers cannot be asked or do not answer.
    """

    def __init__(self, *, hosts_file: str = HOSTS_FILE, resolv_conf: str = RESOLV_CONF, port: int = 53) -> None:
        self._hosts = WatchedFile(hosts_file, parse_hosts)
        self._conf = WatchedFile(resolv_conf, lambda data: _resolver_from(data, port))

    async def __call__(self, name: str) -> Answer:
        hosts, _ = self._hosts.get()  # no hosts file: no entries, as with glibc
        if hosts and name in hosts:
            return Answer(hosts[name])
        resolver, error = self._conf.get()
        if resolver is None:
            raise OSError(error)
        v4 = await _query(resolver, name, dns.rdatatype.A, search=True)
        try:
            # The AAAA question for the name the A question settled on.
            if v4 is not None:
                v6 = await _query(resolver, v4.qname, dns.rdatatype.AAAA, search=False)
            else:
                v6 = await _query(resolver, name, dns.rdatatype.AAAA, search=True)
        except dns.exception.DNSException:
            # A resolver that fumbles AAAA must not hide the IPv4 answer;
            # the guard only ever connects to an address it has checked.
            if v4 is None or v4.rrset is None:
                raise
            v6 = None
        addresses: list[str] = []
        ttls: list[float] = []
        for answer in (v4, v6):
            if answer is not None and answer.rrset is not None:
                addresses += [str(rdata.address) for rdata in answer.rrset]
                ttls.append(answer.chaining_result.minimum_ttl)
        return Answer(tuple(dict.fromkeys(addresses)), min(ttls) if ttls else None)


async def _query(resolver: dns.asyncresolver.Resolver, name: str | dns.name.Name, rdtype: dns.rdatatype.RdataType,
                 search: bool) -> dns.resolver.Answer | None:
    """The answer (possibly without records), or None for a name that does not exist."""
    try:
        return await resolver.resolve(name, rdtype, search=search, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return None


def system_resolver() -> CachedResolver:
    """The guard's resolver: the container's configuration, through the lookup cache."""
    return CachedResolver(SystemLookup())
