"""The address classification behind the source policy, one address form at a time."""

from __future__ import annotations

import ipaddress

import pytest

from capability_service.sources.errors import SourceError
from capability_service.sources.netguard import AddressPolicy, parse_address, parse_networks, refused_kind


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.0.0.5", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "shared (carrier-grade NAT)"),
        ("100.127.255.255", "shared (carrier-grade NAT)"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("255.255.255.255", "reserved"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.10", "reserved (documentation)"),
        ("198.18.0.1", "reserved (benchmarking)"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fe80::1%2", "link-local"),
        ("fd12:3456::1", "private"),
        ("fc00::1", "private"),
        ("fec0::1", "private (site-local)"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "reserved (documentation)"),
        ("100::1", "reserved (discard)"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:10.0.0.5", "private"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::127.0.0.1", "loopback"),  # IPv4-compatible (deprecated)
        ("64:ff9b::10.0.0.5", "private"),  # NAT64 well-known prefix
        ("64:ff9b::127.0.0.1", "loopback"),
        ("64:ff9b:1::8.8.8.8", "private (local NAT64)"),
        ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::", "link-local"),  # 6to4 of 169.254.169.254
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "reserved (Teredo)"),
        ("3fff::1", "reserved (documentation)"),
        ("3fff:1000::1", None),  # global unicast just past the documentation block
        ("4000::1", "reserved"),
    ],
)
def test_refused_kinds(address: str, kind: str | None) -> None:
    assert refused_kind(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "100.63.255.255",
        "100.128.0.1",
        "172.32.0.1",
        "2606:4700:4700::1111",
        "2a00:1450:4001:80b::200e",
        "::ffff:8.8.8.8",
        "64:ff9b::8.8.8.8",
        "2002:808:808::1",
    ],
)
def test_public_addresses_pass(address: str) -> None:
    assert refused_kind(ipaddress.ip_address(address)) is None
    AddressPolicy().check(address, ipaddress.ip_address(address))


def test_policy_messages_name_host_kind_and_address() -> None:
    policy = AddressPolicy()
    with pytest.raises(SourceError) as by_name:
        policy.check("intranet.example", ipaddress.ip_address("10.0.0.5"))
    assert str(by_name.value) == "intranet.example resolves to a private address 10.0.0.5"
    assert by_name.value.rule == "private-address"
    mapped_address = ipaddress.ip_address("::ffff:a00:5")
    with pytest.raises(SourceError) as mapped:
        policy.check("::ffff:a00:5", mapped_address)
    # Python 3.13 writes an IPv4-mapped address as ::ffff:10.0.0.5, 3.11 and 3.12 as ::ffff:a00:5.
    assert str(mapped_address) in {"::ffff:a00:5", "::ffff:10.0.0.5"}
    assert str(mapped.value).startswith(f"{mapped_address} (IPv4 10.0.0.5) is a private address")


def test_allow_private_and_exemptions() -> None:
    loopback = ipaddress.ip_address("127.0.0.1")
    AddressPolicy(allow_private=True).check("localhost", loopback)
    exempt = AddressPolicy(exempt=parse_networks(["10.1.0.0/16"]))
    exempt.check("images.internal", ipaddress.ip_address("10.1.2.3"))
    with pytest.raises(SourceError):
        exempt.check("other.internal", ipaddress.ip_address("10.2.0.1"))
    with pytest.raises(ValueError, match="not an IP network"):
        parse_networks(["10.0.0.0/33"])


def test_parse_address() -> None:
    assert parse_address("[::1]") == ipaddress.ip_address("::1")
    assert parse_address("127.0.0.1") == ipaddress.ip_address("127.0.0.1")
    assert parse_address("localhost") is None
