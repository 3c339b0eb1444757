"""Classifying IP addresses for the guard's SSRF rules."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bottle.core.addresses import (
    AddressClass,
    AddressExceptions,
    classify,
    embedded_ipv4,
    is_public,
    parse_address,
    parse_network,
)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("169.254.169.254", AddressClass.METADATA),
        ("fd00:ec2::254", AddressClass.METADATA),
        ("169.254.170.2", AddressClass.METADATA),
        ("100.100.100.200", AddressClass.METADATA),
        ("168.63.129.16", AddressClass.METADATA),
        ("0.0.0.0", AddressClass.UNSPECIFIED),
        ("::", AddressClass.UNSPECIFIED),
        ("127.0.0.1", AddressClass.LOOPBACK),
        ("127.255.3.4", AddressClass.LOOPBACK),
        ("::1", AddressClass.LOOPBACK),
        ("169.254.1.1", AddressClass.LINK_LOCAL),
        ("fe80::1", AddressClass.LINK_LOCAL),
        ("224.0.0.251", AddressClass.MULTICAST),
        ("ff02::1", AddressClass.MULTICAST),
        ("100.64.0.1", AddressClass.CGNAT),
        ("100.127.255.254", AddressClass.CGNAT),
        ("10.1.2.3", AddressClass.PRIVATE),
        ("172.16.0.1", AddressClass.PRIVATE),
        ("172.31.255.255", AddressClass.PRIVATE),
        ("192.168.1.1", AddressClass.PRIVATE),
        ("fc00::1", AddressClass.UNIQUE_LOCAL),
        ("fd12:3456::1", AddressClass.UNIQUE_LOCAL),
        ("255.255.255.255", AddressClass.RESERVED),
        ("240.0.0.1", AddressClass.RESERVED),
        ("0.1.2.3", AddressClass.RESERVED),
        ("192.0.2.10", AddressClass.RESERVED),
        ("198.18.0.1", AddressClass.RESERVED),
        ("2001:db8::1", AddressClass.RESERVED),
        ("fec0::1", AddressClass.RESERVED),
        ("8.8.8.8", AddressClass.PUBLIC),
        ("172.32.0.1", AddressClass.PUBLIC),
        ("100.128.0.1", AddressClass.PUBLIC),
        ("2606:4700::1111", AddressClass.PUBLIC),
    ],
)
def test_classify_names_the_kind_of_place(address: str, expected: AddressClass) -> None:
    assert classify(address) is expected


@pytest.mark.parametrize(
    ("wrapped", "inner_class"),
    [
        ("::ffff:127.0.0.1", AddressClass.LOOPBACK),  # IPv4-mapped
        ("::ffff:169.254.169.254", AddressClass.METADATA),
        ("::ffff:10.0.0.1", AddressClass.PRIVATE),
        ("::127.0.0.1", AddressClass.LOOPBACK),  # IPv4-compatible
        ("64:ff9b::a9fe:a9fe", AddressClass.METADATA),  # NAT64 of 169.254.169.254
        ("2002:7f00:0001::", AddressClass.LOOPBACK),  # 6to4 of 127.0.0.1
        ("2002:0a00:0001::1", AddressClass.PRIVATE),
        ("::ffff:8.8.8.8", AddressClass.PUBLIC),
    ],
)
def test_ipv6_wrappers_are_judged_by_the_ipv4_address_inside(wrapped: str, inner_class: AddressClass) -> None:
    assert classify(wrapped) is inner_class


def test_parse_address_accepts_brackets_and_zone_ids_only() -> None:
    assert parse_address("[::1]") == ipaddress.ip_address("::1")
    assert parse_address("fe80::1%eth0") == ipaddress.ip_address("fe80::1")
    for bad in ("", "localhost", "1.2.3", "127.1", "::g", "1.2.3.4.5"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_embedded_ipv4_is_none_for_plain_addresses() -> None:
    assert embedded_ipv4(ipaddress.ip_address("1.2.3.4")) is None
    assert embedded_ipv4(ipaddress.ip_address("2606:4700::1111")) is None
    assert embedded_ipv4(ipaddress.ip_address("::1")) is None


def test_parse_network_accepts_addresses_and_networks_but_not_host_bits() -> None:
    assert str(parse_network("10.0.0.0/8")) == "10.0.0.0/8"
    assert str(parse_network("10.0.0.5")) == "10.0.0.5/32"
    assert str(parse_network("[fd00::]/8")) == "fd00::/8"
    with pytest.raises(ValueError, match="10.0.0.1/8"):
        parse_network("10.0.0.1/8")
    with pytest.raises(ValueError):
        parse_network("example.com")


def test_exceptions_open_only_what_they_name() -> None:
    ex = AddressExceptions.of(["172.16.0.0/12", "127.0.0.1"])
    assert ex.permits("172.18.0.5")
    assert ex.permits("127.0.0.1")
    assert ex.permits("::ffff:172.18.0.5")  # the same host, IPv4-mapped
    assert not ex.permits("127.0.0.2")
    assert not ex.permits("10.0.0.1")
    assert ex.permits("8.8.8.8")  # public needs no exception


def test_metadata_needs_an_exception_naming_exactly_it() -> None:
    assert not AddressExceptions.of(["169.254.0.0/16"]).permits("169.254.169.254")
    assert AddressExceptions.of(["169.254.0.0/16"]).permits("169.254.1.1")
    assert AddressExceptions.of(["169.254.169.254"]).permits("169.254.169.254")
    assert not AddressExceptions.of(["0.0.0.0/0"]).permits("169.254.169.254")


@given(st.ip_addresses())
def test_every_address_gets_exactly_one_class_and_only_public_is_public(addr: ipaddress._BaseAddress) -> None:
    cls = classify(addr)  # type: ignore[arg-type]
    assert isinstance(cls, AddressClass)
    assert is_public(addr) == (cls is AddressClass.PUBLIC)  # type: ignore[arg-type]
    if cls is AddressClass.PUBLIC:
        assert addr.is_global or addr.version == 6  # type: ignore[attr-defined]


@given(st.ip_addresses(v=4))
def test_ipv4_mapped_form_is_classified_like_the_ipv4_address(addr: ipaddress.IPv4Address) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{addr}")
    assert classify(mapped) is classify(addr)
