"""What kind of place an IP address is: the guard's SSRF rules.

The guard refuses to connect to anything that is not a public unicast
address unless the policy names it explicitly: a bottle must not reach the
host's services, the container networks, the cloud metadata service or the
LAN just because some allowed name resolves there (DNS rebinding) or because
the agent typed an address.

Classes, checked in this order (first match wins):

    metadata       cloud instance metadata endpoints (169.254.169.254,
                   fd00:ec2::254, 169.254.170.2, 100.100.100.200, 168.63.129.16)
    unspecified    0.0.0.0, ::  (Linux connects these to the local host)
    loopback       127.0.0.0/8, ::1
    link-local     169.254.0.0/16, fe80::/10
    multicast      224.0.0.0/4, ff00::/8
    cgnat          100.64.0.0/10 (carrier-grade NAT, also used by VPNs)
    private        10/8, 172.16/12, 192.168/16
    unique-local   fc00::/7
    reserved       every other special-purpose range (0/8, 240/4, broadcast,
                   documentation, benchmarking, 6to4 relays, site-local, ...)
    public         anything else

IPv6 addresses that carry an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``,
IPv4-compatible ``::a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``)
are classified by the IPv4 address inside, because that is where a packet
ends up. Pure: only ``ipaddress``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from enum import Enum

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressClass(str, Enum):
    PUBLIC = "public"
    METADATA = "metadata"
    UNSPECIFIED = "unspecified"
    LOOPBACK = "loopback"
    LINK_LOCAL = "link-local"
    MULTICAST = "multicast"
    CGNAT = "cgnat"
    PRIVATE = "private"
    UNIQUE_LOCAL = "unique-local"
    RESERVED = "reserved"

    def __str__(self) -> str:
        return self.value


METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
        "169.254.170.2",  # AWS ECS task metadata / credentials
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wireserver (a public-looking address)
    )
)

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

_ORDERED: tuple[tuple[AddressClass, tuple[IPNetwork, ...]], ...] = (
    (AddressClass.UNSPECIFIED, (_V4("0.0.0.0/32"), _V6("::/128"))),
    (AddressClass.LOOPBACK, (_V4("127.0.0.0/8"), _V6("::1/128"))),
    (AddressClass.LINK_LOCAL, (_V4("169.254.0.0/16"), _V6("fe80::/10"))),
    (AddressClass.MULTICAST, (_V4("224.0.0.0/4"), _V6("ff00::/8"))),
    (AddressClass.CGNAT, (_V4("100.64.0.0/10"),)),
    (AddressClass.PRIVATE, (_V4("10.0.0.0/8"), _V4("172.16.0.0/12"), _V4("192.168.0.0/16"))),
    (AddressClass.UNIQUE_LOCAL, (_V6("fc00::/7"),)),
    (
        AddressClass.RESERVED,
        (
            _V4("0.0.0.0/8"),  # "this network"
            _V4("192.0.0.0/24"),  # IETF protocol assignments
            _V4("192.0.2.0/24"),  # TEST-NET-1
            _V4("192.88.99.0/24"),  # 6to4 relay anycast
            _V4("198.18.0.0/15"),  # benchmarking
            _V4("198.51.100.0/24"),  # TEST-NET-2
            _V4("203.0.113.0/24"),  # TEST-NET-3
            _V4("240.0.0.0/4"),  # reserved, includes 255.255.255.255
            _V6("::/96"),  # IPv4-compatible leftovers that are not a v4 address
            _V6("100::/64"),  # discard prefix
            _V6("2001::/23"),  # IETF protocol assignments (Teredo, ORCHIDv2, ...)
            _V6("2001:db8::/32"),  # documentation
            _V6("fec0::/10"),  # deprecated site-local
        ),
    ),
)

_IPV4_MAPPED = _V6("::ffff:0:0/96")
_IPV4_COMPATIBLE = _V6("::/96")
_NAT64 = _V6("64:ff9b::/96")
_NAT64_LOCAL = _V6("64:ff9b:1::/48")
_SIX_TO_FOUR = _V6("2002::/16")


def parse_address(text: str) -> IPAddress:
    """Parse an IP address in standard notation; brackets (``[::1]``) and zone ids are accepted.

    Raises ``ValueError`` for anything else. (Loose IPv4 spellings such as
    ``127.1`` are a host-name concern: ``bottle.core.routing.normalize_host``
    turns them into standard notation first.)
    """
    if not isinstance(text, str):
        raise ValueError(f"expected an IP address, got {type(text).__name__}")
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    # A zone id only selects the interface of a link-local address.
    t = t.split("%", 1)[0]
    try:
        return ipaddress.ip_address(t)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


def embedded_ipv4(addr: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address a packet to ``addr`` really goes to, if ``addr`` is an IPv6 wrapper of one."""
    if isinstance(addr, ipaddress.IPv4Address):
        return None
    if addr in _IPV4_MAPPED or addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((int(addr) >> 80) & 0xFFFFFFFF)
    if addr in _IPV4_COMPATIBLE and int(addr) > 1:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def classify(address: IPAddress | str) -> AddressClass:
    """The class of ``address`` (see the module docstring). Strings are parsed with ``parse_address``."""
    addr = parse_address(address) if isinstance(address, str) else address
    inner = embedded_ipv4(addr)
    if inner is not None:
        # Wrapper or translation prefix: the IPv4 host behind it is the destination.
        return classify(inner)
    if addr in METADATA_ADDRESSES:
        return AddressClass.METADATA
    if addr in _NAT64_LOCAL:
        return AddressClass.RESERVED
    for cls, networks in _ORDERED:
        if any(addr.version == n.version and addr in n for n in networks):
            return cls
    return AddressClass.PUBLIC


def is_public(address: IPAddress | str) -> bool:
    """True if ``address`` is ordinary public unicast (the only class reachable without an exception)."""
    return classify(address) is AddressClass.PUBLIC


def parse_network(text: str) -> IPNetwork:
    """Parse ``10.0.0.0/8``, ``fd00::/8`` or a single address (as a /32 or /128).

    Host bits must be zero (``10.0.0.1/8`` is refused, it is probably a typo).
    Raises ``ValueError`` saying what is expected.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("expected an IP address or network such as '10.0.0.5' or '172.16.0.0/12'")
    t = text.strip()
    if t.startswith("[") and "]" in t:
        t = t[1 : t.index("]")] + t[t.index("]") + 1 :]
    try:
        return ipaddress.ip_network(t, strict=True)
    except ValueError as exc:
        raise ValueError(
            f"{text!r} is not an IP address or network ({exc}); expected e.g. '10.0.0.5' or '172.16.0.0/12'"
        ) from None


class AddressExceptions:
    """The non-public addresses a policy explicitly allows.

    Built from address and network entries. A metadata address is only ever
    allowed by an entry naming exactly that address: a broad
    ``169.254.0.0/16`` never opens the metadata service by accident.
    """

    __slots__ = ("networks",)

    def __init__(self, networks: Iterable[IPNetwork] = ()) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(networks)

    @classmethod
    def of(cls, entries: Iterable[str]) -> AddressExceptions:
        """Parse entries with ``parse_network``; ``ValueError`` names the first bad one."""
        return cls(parse_network(e) for e in entries)

    def entries(self) -> tuple[str, ...]:
        return tuple(str(n) for n in self.networks)

    def permits(self, address: IPAddress | str) -> bool:
        """True if ``address`` is public, or non-public but covered by an exception."""
        addr = parse_address(address) if isinstance(address, str) else address
        cls = classify(addr)
        if cls is AddressClass.PUBLIC:
            return True
        candidates = [addr]
        inner = embedded_ipv4(addr)
        if inner is not None:
            candidates.append(inner)
        for net in self.networks:
            for cand in candidates:
                if cand.version != net.version or cand not in net:
                    continue
                if cls is AddressClass.METADATA and net.num_addresses != 1:
                    continue
                return True
        return False

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __repr__(self) -> str:
        return f"AddressExceptions({list(self.entries())!r})"
