"""The packed ASN table answers exactly as geoip2fast itself does, in a fraction of the memory."""

from __future__ import annotations

import ipaddress
import random

import pytest
from geoip2fast import GeoIP2Fast

from rules.enrich.asn import AsnTable, AsnTableError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@pytest.fixture(scope="module")
def both() -> tuple[AsnTable, GeoIP2Fast]:
    return AsnTable(), GeoIP2Fast(geoip2fast_data_file="geoip2fast-asn-ipv6.dat.gz",
                                  verbose=False)


def reference(geo: GeoIP2Fast, addr: Address) -> tuple[str, bool]:
    """geoip2fast's own answer and whether its network holds the address. (With the IPv6 data
    file it skips the end-of-network check for IPv4: it names the network below a gap.)"""
    name, cidr = geo._asn_lookup(int(addr))
    if not cidr:
        return "", False
    inside = addr in ipaddress.ip_network(cidr)
    return ("" if name == "<unknown>" else str(name)), inside


def packed(table: AsnTable, addr: Address) -> str:
    name = table.owner(addr.version, int(addr))
    return "" if name == "<unknown>" else name


def test_same_owner_as_geoip2fast_for_random_and_edge_addresses(
    both: tuple[AsnTable, GeoIP2Fast],
) -> None:
    table, geo = both
    rng = random.Random(20261123)
    addrs: list[Address] = [
        ipaddress.ip_address(x) for x in (
            "8.8.8.8", "1.1.1.1", "52.95.110.1", "20.33.0.1", "81.2.69.160", "0.0.0.1",
            "255.255.255.254", "2001:4860:4860::8888", "2606:4700:4700::1111",
            "2a03:2880:f10c:83:face:b00c:0:25de", "::2", "ffff:ffff::1",
        )
    ]
    addrs += [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(4000)]
    # IPv6 from allocated space (2000::/3), where the database has networks to find
    addrs += [ipaddress.IPv6Address((1 << 125) | rng.getrandbits(125)) for _ in range(2000)]
    # both ends of networks and the address after, where an off-by-one would show
    for start, netlen in rng.sample(list(zip(table._v4_start, table._v4_len, strict=True)), 300):
        end = start + (1 << (32 - netlen)) - 1
        addrs += [ipaddress.IPv4Address(start), ipaddress.IPv4Address(end)]
        if end + 1 < 1 << 32:
            addrs.append(ipaddress.IPv4Address(end + 1))
    six = list(zip(table._v6_high, table._v6_low, table._v6_len, strict=True))
    for high, low, netlen in rng.sample(six, 300) + [r for r in six if r[2] > 64][:100]:
        start = (high << 64) | low
        end = start + (1 << (128 - netlen)) - 1
        addrs += [ipaddress.IPv6Address(start), ipaddress.IPv6Address(end)]
        if end + 1 < 1 << 128:
            addrs.append(ipaddress.IPv6Address(end + 1))
    mismatches = []
    for a in addrs:
        mine, (theirs, inside) = packed(table, a), reference(geo, a)
        if inside:
            expected = theirs  # inside a network: exactly geoip2fast's owner
        elif a.version == 4:  # in a gap: the network below, if it starts in the same /16
            below = ipaddress.ip_network(geo._asn_lookup(int(a))[1] or "0.0.0.0/32")
            expected = theirs if int(below.network_address) >> 16 == int(a) >> 16 else ""
        else:
            continue  # geoip2fast names no network below an IPv6 gap to compare with
        if mine != expected:
            mismatches.append((str(a), mine, expected))
    assert sum(1 for a in addrs if packed(table, a)) > 1000  # the comparison compared something
    assert len(table) > 600_000


def test_far_from_any_network_there_is_no_owner() -> None:
    table = AsnTable()
    for text in ("2001:db8::1", "3fff:ffff::1", "fe80::1"):
        addr = ipaddress.ip_address(text)
        assert table.owner(addr.version, int(addr)) in ("", "<unknown>"), text


def test_a_missing_or_foreign_data_file_is_a_clear_error() -> None:
    with pytest.raises(AsnTableError, match="cannot read"):
        AsnTable("no-such-file.dat.gz")
    with pytest.raises(AsnTableError, match="unknown layout"):
        AsnTable("geoip2fast.dat.gz")  # the country-only file of the same package
