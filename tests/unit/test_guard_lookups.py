"""The guard's lookup cache: one lookup per name however many connections wait, answers kept for their TTL, checked on every use.

Two levels, no timing: a counting lookup function injected into
``CachedResolver`` (with a clock the test moves), and the real
``SystemLookup`` against a DNS stand-in on 127.0.0.1 that counts the
questions it gets. The guard addon runs in mitmproxy's test context, as in
``test_guard_addon.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("mitmproxy")
pytest.importorskip("dns")

from dns_standin import DnsStandIn  # noqa: E402
from mitmproxy import connection  # noqa: E402
from mitmproxy.proxy import server_hooks  # noqa: E402
from mitmproxy.test import tflow  # noqa: E402
from test_guard_addon import ANTHROPIC_KEY, Guard  # noqa: E402

from bottle.core.lookups import LookupLimits, answer_lifetime  # noqa: E402
from bottle.sidecars.guard.resolver import Answer, CachedResolver, SystemLookup, parse_hosts  # noqa: E402

PUBLIC = "151.101.0.223"
OTHER_PUBLIC = "151.101.64.223"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingLookup:
    """A lookup that answers from a table and counts what it was asked; an unknown name fails."""

    def __init__(self, answers: dict[str, Answer]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, name: str) -> Answer:
        self.asked.append(name)
        await asyncio.sleep(0)  # a real lookup waits; the other connections pile up meanwhile
        if name not in self.answers:
            raise OSError(f"{name}: no such name")
        return self.answers[name]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def lookup() -> CountingLookup:
    return CountingLookup({"pypi.org": Answer((PUBLIC,), 60)})


@pytest.fixture
def guard(tmp_path: Path, lookup: CountingLookup, clock: Clock) -> Iterator[Guard]:
    g = Guard(tmp_path, CachedResolver(lookup, clock=clock), {"BOTTLE_TOKEN_0": ANTHROPIC_KEY})
    with g.tctx:
        yield g
    g.addon.done()


def connect(guard: Guard, host: str, port: int = 443) -> connection.Server:
    return connect_many(guard, host, 1, port)[0]


def connect_many(guard: Guard, host: str, count: int, port: int = 443) -> list[connection.Server]:
    """``count`` connections to ``host`` at once through the guard's server_connect hook."""
    servers = [connection.Server(address=(host, port)) for _ in range(count)]

    async def all_at_once() -> None:
        hooks = [guard.addon.server_connect(server_hooks.ServerConnectionHookData(server=s, client=tflow.tclient_conn()))
                 for s in servers]
        await asyncio.gather(*hooks)

    asyncio.run(all_at_once())
    return servers


# -- the policy: core.lookups ----------------------------------------------------------
def test_ttls_are_clamped_to_the_floor_and_the_cap() -> None:
    limits = LookupLimits(floor=5, cap=300, negative=7)
    assert answer_lifetime(0, True, limits) == 5
    assert answer_lifetime(60, True, limits) == 60
    assert answer_lifetime(86400, True, limits) == 300
    assert answer_lifetime(None, True, limits) == 5  # a hosts file entry: no TTL
    assert answer_lifetime(3600, False, limits) == 7  # no address: briefly


@pytest.mark.parametrize("bad", [dict(floor=10, cap=5), dict(floor=-1), dict(negative=-1), dict(entries=0)])
def test_nonsense_limits_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="lookup cache"):
        LookupLimits(**bad)  # type: ignore[arg-type]


# -- the cache, with a counting lookup -------------------------------------------------
def test_fifty_concurrent_connections_make_one_lookup_and_are_all_pinned(guard: Guard, lookup: CountingLookup) -> None:
    servers = connect_many(guard, "pypi.org", 50)
    assert lookup.asked == ["pypi.org"]
    assert all(s.error is None and s.address == (PUBLIC, 443) for s in servers)
    assert [line["address"] for line in guard.audit() if line["event"] == "connect"] == [PUBLIC] * 50


def test_an_answer_is_reused_for_its_ttl_and_looked_up_again_after(guard: Guard, lookup: CountingLookup, clock: Clock) -> None:
    connect(guard, "pypi.org")
    clock.now += 59
    connect(guard, "PyPI.org.")  # the same name, spelled otherwise
    assert lookup.asked == ["pypi.org"]
    clock.now += 2
    lookup.answers["pypi.org"] = Answer((OTHER_PUBLIC,), 60)
    assert connect(guard, "pypi.org").address == (OTHER_PUBLIC, 443)
    assert lookup.asked == ["pypi.org", "pypi.org"]


def test_an_answer_that_changes_to_a_private_address_is_refused(guard: Guard, lookup: CountingLookup, clock: Clock) -> None:
    assert connect(guard, "pypi.org").address == (PUBLIC, 443)
    lookup.answers["pypi.org"] = Answer((PUBLIC, "10.0.0.5"), 60)
    clock.now += 61
    server = connect(guard, "pypi.org")
    assert server.error is not None and "private-address" in server.error
    assert server.address == ("pypi.org", 443)  # never pinned
    assert guard.audit()[-1]["rule"] == "private-address"


def test_a_cached_answer_is_checked_against_the_policy_in_force(guard: Guard, lookup: CountingLookup) -> None:
    guard.write_policy(["pypi.org"], allow_private=("10.0.0.0/8",))
    lookup.answers["pypi.org"] = Answer(("10.0.0.5",), 300)
    assert connect(guard, "pypi.org").address == ("10.0.0.5", 443)
    guard.write_policy(["pypi.org"])  # the exception is withdrawn; the answer is still cached
    server = connect(guard, "pypi.org")
    assert server.error is not None and "private-address" in server.error
    guard.write_policy([])  # the host too: refused before the cache is even asked
    assert "host-not-allowed" in (connect(guard, "pypi.org").error or "")
    assert lookup.asked == ["pypi.org"]


def test_a_name_that_does_not_resolve_is_remembered_briefly_then_asked_again(
    guard: Guard, lookup: CountingLookup, clock: Clock
) -> None:
    guard.write_policy(["new.example"])
    assert "dns-failed" in (connect(guard, "new.example").error or "")
    clock.now += 4
    assert "dns-failed" in (connect(guard, "new.example").error or "")
    assert lookup.asked == ["new.example"]
    clock.now += 2  # past the 5 s of a negative answer
    lookup.answers["new.example"] = Answer((PUBLIC,), 60)
    assert connect(guard, "new.example").address == (PUBLIC, 443)
    assert lookup.asked == ["new.example", "new.example"]


def test_the_cache_is_bounded_and_forgets_the_least_recently_used(clock: Clock) -> None:
    lookup = CountingLookup({f"h{i}.example": Answer((PUBLIC,), 300) for i in range(5)})
    resolver = CachedResolver(lookup, clock=clock, limits=LookupLimits(entries=3))

    async def ask(*names: str) -> None:
        for name in names:
            await resolver(name, 443)

    asyncio.run(ask("h0.example", "h1.example", "h2.example", "h0.example", "h3.example", "h4.example"))
    assert resolver.size == 3
    lookup.asked.clear()
    asyncio.run(ask("h0.example", "h3.example", "h4.example"))  # kept: used most recently
    assert lookup.asked == []
    asyncio.run(ask("h1.example"))  # forgotten
    assert lookup.asked == ["h1.example"]


def test_expired_entries_make_room_before_live_ones(clock: Clock) -> None:
    lookup = CountingLookup({"short.example": Answer((PUBLIC,), 5), "long.example": Answer((PUBLIC,), 300),
                             "third.example": Answer((PUBLIC,), 300)})
    resolver = CachedResolver(lookup, clock=clock, limits=LookupLimits(entries=2))
    asyncio.run(resolver("long.example", 443))
    asyncio.run(resolver("short.example", 443))
    clock.now += 10
    asyncio.run(resolver("third.example", 443))
    lookup.asked.clear()
    asyncio.run(resolver("long.example", 443))  # the older, but live: kept
    assert lookup.asked == []


def test_a_caller_that_goes_away_does_not_cancel_the_lookup_the_others_wait_for(clock: Clock) -> None:
    lookup_started: list[str] = []

    async def scenario() -> tuple[list[str], int]:
        gate = asyncio.Event()

        async def slow_lookup(name: str) -> Answer:
            lookup_started.append(name)
            await gate.wait()
            return Answer((PUBLIC,), 60)

        resolver = CachedResolver(slow_lookup, clock=clock)
        first = asyncio.ensure_future(resolver("pypi.org", 443))
        second = asyncio.ensure_future(resolver("pypi.org", 443))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        first.cancel()
        gate.set()
        return await second, resolver.lookups

    addresses, lookups = asyncio.run(scenario())
    assert addresses == [PUBLIC] and lookups == 1 and lookup_started == ["pypi.org"]


# -- the real lookup against a DNS stand-in on 127.0.0.1 -------------------------------
@pytest.fixture
def dns_server() -> Iterator[DnsStandIn]:
    with DnsStandIn({"pypi.org": ([PUBLIC, "2a04:4e42::223"], 60)}) as server:
        yield server


@pytest.fixture
def system_guard(tmp_path: Path, dns_server: DnsStandIn, clock: Clock) -> Iterator[Guard]:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n172.18.0.4 peer.internal  # a peer Podman wrote\n")
    lookup = SystemLookup(hosts_file=str(hosts), resolv_conf=str(dns_server.write_resolv_conf(tmp_path / "resolv.conf")),
                          port=dns_server.port)
    g = Guard(tmp_path, CachedResolver(lookup, clock=clock), {"BOTTLE_TOKEN_0": ANTHROPIC_KEY})
    with g.tctx:
        yield g
    g.addon.done()


def test_fifty_concurrent_connections_ask_the_name_server_once(system_guard: Guard, dns_server: DnsStandIn) -> None:
    servers = connect_many(system_guard, "pypi.org", 50)
    assert dns_server.asked("pypi.org") == ["A", "AAAA"]  # one lookup: A, then AAAA
    assert all(s.error is None and s.address == (PUBLIC, 443) for s in servers)


def test_the_dns_ttl_decides_when_the_name_server_is_asked_again(
    system_guard: Guard, dns_server: DnsStandIn, clock: Clock
) -> None:
    connect(system_guard, "pypi.org")
    clock.now += 59
    connect(system_guard, "pypi.org")
    assert dns_server.asked("pypi.org") == ["A", "AAAA"]
    dns_server.records["pypi.org"] = (["169.254.169.254"], 60)  # rebinding to the metadata service
    clock.now += 2
    server = connect(system_guard, "pypi.org")
    assert dns_server.asked("pypi.org") == ["A", "AAAA"] * 2
    assert server.error is not None and "private-address" in server.error and server.address == ("pypi.org", 443)


def test_a_zero_ttl_is_kept_for_the_floor(system_guard: Guard, dns_server: DnsStandIn, clock: Clock) -> None:
    dns_server.records["pypi.org"] = ([PUBLIC], 0)
    connect(system_guard, "pypi.org")
    clock.now += 4
    connect(system_guard, "pypi.org")
    assert dns_server.asked("pypi.org") == ["A", "AAAA"]


def test_a_long_ttl_is_cut_to_the_cap(system_guard: Guard, dns_server: DnsStandIn, clock: Clock) -> None:
    dns_server.records["pypi.org"] = ([PUBLIC], 86400)
    connect(system_guard, "pypi.org")
    clock.now += 301
    connect(system_guard, "pypi.org")
    assert dns_server.asked("pypi.org") == ["A", "AAAA"] * 2


def test_no_such_name_is_remembered_briefly(system_guard: Guard, dns_server: DnsStandIn, clock: Clock) -> None:
    system_guard.write_policy(["gone.example"])
    assert "dns-failed" in (connect(system_guard, "gone.example").error or "")
    assert "dns-failed" in (connect(system_guard, "gone.example").error or "")
    asked_once = list(dns_server.queries)
    assert asked_once == [("gone.example", "A"), ("gone.example", "AAAA")]
    clock.now += 6
    dns_server.records["gone.example"] = ([PUBLIC], 60)
    assert connect(system_guard, "gone.example").address == (PUBLIC, 443)


def test_the_hosts_file_answers_before_dns(system_guard: Guard, dns_server: DnsStandIn) -> None:
    system_guard.write_policy(["peer.internal"], allow_private=("172.16.0.0/12",))
    assert connect(system_guard, "peer.internal", 8443).address == ("172.18.0.4", 8443)
    assert dns_server.queries == []


def test_the_search_list_of_resolv_conf_applies(tmp_path: Path, dns_server: DnsStandIn) -> None:
    dns_server.records["registry.corp.test"] = ([PUBLIC], 60)
    conf = dns_server.write_resolv_conf(tmp_path / "resolv.conf", search=["corp.test"])
    lookup = SystemLookup(hosts_file=str(tmp_path / "no-hosts"), resolv_conf=str(conf), port=dns_server.port)
    answer = asyncio.run(lookup("registry"))
    assert answer == Answer((PUBLIC,), 60)
    assert dns_server.queries[0] == ("registry.corp.test", "A")


def test_an_ipv6_only_name_resolves(tmp_path: Path, dns_server: DnsStandIn) -> None:
    dns_server.records["v6.example"] = (["2a04:4e42::223"], 30)
    lookup = SystemLookup(hosts_file=str(tmp_path / "no-hosts"),
                          resolv_conf=str(dns_server.write_resolv_conf(tmp_path / "resolv.conf")), port=dns_server.port)
    assert asyncio.run(lookup("v6.example")) == Answer(("2a04:4e42::223",), 30)


def test_without_a_name_server_nothing_resolves(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# no nameserver line\n")
    lookup = SystemLookup(hosts_file=str(tmp_path / "no-hosts"), resolv_conf=str(conf))
    with pytest.raises(OSError, match="no nameservers"):
        asyncio.run(lookup("pypi.org"))


def test_hosts_file_parsing() -> None:
    text = b"""# comment
127.0.0.1\tlocalhost
::1 localhost ip6-localhost
172.18.0.4 Peer.Internal. alias  # trailing comment
not-an-address somename
10.0.0.1
"""
    assert parse_hosts(text) == {
        "localhost": ("127.0.0.1", "::1"),
        "ip6-localhost": ("::1",),
        "peer.internal": ("172.18.0.4",),
        "alias": ("172.18.0.4",),
    }
