"""The shared client-IP resolver (activelead/clientip.py): forwarding headers count only from a
trusted peer, and then only their right-most untrusted hop; spoofing attempts land on the real
address, and a broken chain on the peer."""

from __future__ import annotations

import gc

import pytest
from pydantic import ValidationError

from activelead import clientip
from activelead.clientip import (
    SUPPORTED_HEADERS,
    ClientIpResolver,
    check_headers,
    joined_lowered,
    parse_ip,
    parse_network,
)
from control_api.settings import ControlApiSettings
from proxy.settings import ProxyConfig

# -- the proxy's table: every header it reads, headers as the proxy hands them over ------------

PROXY_ORDER = ["cf-connecting-ip", "x-forwarded-for", "x-real-ip", "forwarded"]
R = ClientIpResolver(["10.0.0.0/8", "2001:db8::/32"], PROXY_ORDER)


@pytest.mark.parametrize(("peer", "headers", "expected"), [
    ("203.0.113.9", {"x-forwarded-for": "1.2.3.4"}, "203.0.113.9"),  # untrusted peer: spoof
    ("10.1.1.1", {"x-forwarded-for": "1.2.3.4"}, "1.2.3.4"),
    ("10.1.1.1", {"x-forwarded-for": "6.6.6.6, 1.2.3.4, 10.2.2.2"}, "1.2.3.4"),
    ("10.1.1.1", {"cf-connecting-ip": "5.6.7.8", "x-forwarded-for": "1.2.3.4"}, "5.6.7.8"),
    ("10.1.1.1", {"x-real-ip": "9.9.9.9"}, "9.9.9.9"),
    ("10.1.1.1", {"forwarded": 'for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711"'},
     "192.0.2.60"),  # the v6 hop is a trusted proxy; the one before it is the client
    ("10.1.1.1", {"forwarded": 'for="[2001:dead::1]:80"'}, "2001:dead::1"),
    ("10.1.1.1", {"x-forwarded-for": "garbage"}, "10.1.1.1"),
    ("10.1.1.1", {}, "10.1.1.1"),
    ("10.1.1.1", {"x-forwarded-for": "10.3.3.3"}, "10.3.3.3"),  # whole chain trusted
    ("2001:db8::5", {"x-forwarded-for": "1.2.3.4:5678"}, "1.2.3.4"),
])
def test_resolve(peer: str, headers: dict[str, str], expected: str) -> None:
    assert R.resolve(peer, headers) == expected


# -- the control API's table: header lines as sent, joined as client_ip(request) joins them -----

PROXY = "10.0.0.1"
ALL = ("X-Forwarded-For", "Forwarded", "X-Real-IP")
XFF = "X-Forwarded-For"


@pytest.mark.parametrize(
    ("trusted", "peer", "sent", "names", "expected"),
    [
        # No trusted proxies: headers are never read.
        ([], PROXY, [(XFF, "81.2.69.160")], ALL, PROXY),
        # An untrusted peer cannot choose its address.
        (["10.0.0.0/8"], "203.0.113.9", [(XFF, "81.2.69.160")], ALL, "203.0.113.9"),
        (["10.0.0.0/8"], "203.0.113.9", [("X-Real-IP", "81.2.69.160")], ALL, "203.0.113.9"),
        # A trusted peer: the address it appended.
        (["10.0.0.0/8"], PROXY, [(XFF, "81.2.69.160")], ALL, "81.2.69.160"),
        # The client forged entries on the left: the proxy's own entry (right-most) wins.
        (["10.0.0.0/8"], PROXY, [(XFF, "1.1.1.1, 8.8.8.8, 81.2.69.160")], ALL, "81.2.69.160"),
        # Two of our proxies in a row: skip every trusted hop from the right.
        (["10.0.0.0/8"], PROXY, [(XFF, "6.6.6.6, 81.2.69.160, 10.0.0.7")], ALL, "81.2.69.160"),
        # The client claims to be one of our proxies: still only the proxy's entry counts.
        (["10.0.0.0/8"], PROXY, [(XFF, "10.9.9.9, 81.2.69.160")], ALL, "81.2.69.160"),
        # Several header lines are one list, in order.
        (["10.0.0.0/8"], PROXY, [(XFF, "6.6.6.6"), (XFF, "81.2.69.160")], ALL, "81.2.69.160"),
        # Garbage where a trusted hop should have written an address: believe nothing, use the peer.
        (["10.0.0.0/8"], PROXY, [(XFF, "81.2.69.160, not-an-ip")], ALL, PROXY),
        (["10.0.0.0/8"], PROXY, [(XFF, "")], ALL, PROXY),
        # Every hop is ours (an internal caller): the left-most is the origin.
        (["10.0.0.0/8"], PROXY, [(XFF, "10.1.2.3, 10.0.0.7")], ALL, "10.1.2.3"),
        # Ports, brackets and IPv6.
        (["10.0.0.0/8"], PROXY, [(XFF, "81.2.69.160:51234")], ALL, "81.2.69.160"),
        (["10.0.0.0/8"], PROXY, [(XFF, "[2001:db8::7]:443")], ALL, "2001:db8::7"),
        (["2001:db8:ffff::/48"], "2001:db8:ffff::1", [(XFF, "2001:db8::7")], ALL, "2001:db8::7"),
        # A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d: still the IPv4 proxy.
        (["10.0.0.0/8"], "::ffff:10.0.0.1", [(XFF, "81.2.69.160")], ALL, "81.2.69.160"),
        # Forwarded (RFC 7239): quoted, bracketed, with other parameters; right-most untrusted.
        (
            ["10.0.0.0/8"],
            PROXY,
            [("Forwarded", 'for=6.6.6.6;proto=http, for="[2001:db8::7]:443";proto=https;by=10.0.0.1')],
            ("Forwarded",),
            "2001:db8::7",
        ),
        (["10.0.0.0/8"], PROXY, [("Forwarded", "For=81.2.69.160")], ("Forwarded",), "81.2.69.160"),
        (["10.0.0.0/8"], PROXY, [("Forwarded", "for=unknown")], ("Forwarded",), PROXY),
        (["10.0.0.0/8"], PROXY, [("Forwarded", "proto=https")], ("Forwarded",), PROXY),
        # X-Real-IP: one address, from the nearest proxy.
        (["10.0.0.0/8"], PROXY, [("X-Real-IP", "81.2.69.160")], ("X-Real-IP",), "81.2.69.160"),
        # Only configured headers are read: a header the proxy passes through is the client's.
        (["10.0.0.0/8"], PROXY, [("X-Real-IP", "6.6.6.6")], (XFF,), PROXY),
        (["10.0.0.0/8"], PROXY, [("Forwarded", "for=6.6.6.6"), (XFF, "81.2.69.160")], (XFF,), "81.2.69.160"),
        # The first configured header present decides.
        (
            ["10.0.0.0/8"],
            PROXY,
            [("X-Real-IP", "81.2.69.160"), (XFF, "6.6.6.6")],
            ("X-Real-IP", XFF),
            "81.2.69.160",
        ),
        # No peer address (a Unix socket): nothing to resolve.
        (["10.0.0.0/8"], None, [(XFF, "81.2.69.160")], ALL, ""),
    ],
)
def test_resolver(
    trusted: list[str], peer: str | None, sent: list[tuple[str, str]], names: tuple[str, ...], expected: str
) -> None:
    assert ClientIpResolver(trusted, names).resolve(peer, joined_lowered(sent)) == expected


# -- where the proxy's and the control API's resolvers disagreed: the stricter way won ---------


@pytest.mark.parametrize(
    ("peer", "sent", "expected"),
    [
        # A broken chain falls back to the peer; it does not move on to the next configured header
        # (the proxy's did), which may be one the trusted proxy passed through from the visitor.
        (PROXY, [("CF-Connecting-IP", "garbage"), (XFF, "6.6.6.6")], PROXY),
        (PROXY, [(XFF, "6.6.6.6, not-an-ip"), ("X-Real-IP", "6.6.6.6")], PROXY),
        # A header present but empty is present: it decides (the proxy's skipped it).
        (PROXY, [("CF-Connecting-IP", ""), (XFF, "6.6.6.6")], PROXY),
        # A Forwarded element without a usable `for=` is a broken hop, not skipped: skipping it
        # made the visitor's forged element the answer in the proxy's.
        (PROXY, [("Forwarded", "for=6.6.6.6, for=unknown")], PROXY),
        (PROXY, [("Forwarded", 'for=6.6.6.6, for="_hidden"')], PROXY),
        (PROXY, [("Forwarded", "for=6.6.6.6, proto=https")], PROXY),
        (PROXY, [("Forwarded", "for=6.6.6.6, proto=http;xfor=81.2.69.160")], PROXY),
        # A `for=` inside a quoted value (a Host header the visitor chose, echoed) is not a hop.
        (PROXY, [("Forwarded", 'for=81.2.69.160;host="x;for=6.6.6.6;y"')], "81.2.69.160"),
        # Two `for=` in one element, an open quote, trailing junk: malformed, so broken.
        (PROXY, [("Forwarded", "for=81.2.69.160;for=6.6.6.6")], PROXY),
        (PROXY, [("Forwarded", 'for="81.2.69.160')], PROXY),
        (PROXY, [("Forwarded", "for=81.2.69.160 junk")], PROXY),
        # A single-address header sent twice is not one address (the control API's took the last).
        (PROXY, [("X-Real-IP", "6.6.6.6"), ("X-Real-IP", "81.2.69.160")], PROXY),
        # IPv4-mapped IPv6 is IPv4, as a peer, as a hop and as the answer (the proxy's kept it
        # mapped, so a mapped peer was never trusted and answered as ::ffff:a.b.c.d).
        ("::ffff:10.0.0.1", [(XFF, "81.2.69.160")], "81.2.69.160"),
        (PROXY, [(XFF, "81.2.69.160, ::ffff:10.0.0.7")], "81.2.69.160"),
        (PROXY, [(XFF, "::ffff:81.2.69.160")], "81.2.69.160"),
        ("::ffff:203.0.113.9", [(XFF, "81.2.69.160")], "203.0.113.9"),
        # Headers only the proxy's knew: CF-Connecting-IP, True-Client-IP.
        (PROXY, [("True-Client-IP", "81.2.69.160"), (XFF, "6.6.6.6")], "81.2.69.160"),
    ],
)
def test_reconciled_edge_cases(peer: str, sent: list[tuple[str, str]], expected: str) -> None:
    names = ("cf-connecting-ip", "true-client-ip", "x-forwarded-for", "x-real-ip", "forwarded")
    assert ClientIpResolver(["10.0.0.0/8"], names).resolve(peer, joined_lowered(sent)) == expected


def test_ipv4_mapped_networks_trust_ipv4_peers() -> None:
    resolver = ClientIpResolver(["::ffff:10.0.0.0/104"], ["x-forwarded-for"])
    assert resolver.peer_trusted("10.0.0.1") and resolver.peer_trusted("::ffff:10.0.0.1")
    assert resolver.resolve("10.0.0.1", {"x-forwarded-for": "81.2.69.160"}) == "81.2.69.160"
    assert str(parse_network("::ffff:10.0.0.0/104")) == "10.0.0.0/8"
    assert str(parse_network(" 2001:db8::1 ")) == "2001:db8::1/128"


def test_parse_ip_forms() -> None:
    assert str(parse_ip(' "81.2.69.160:80" ')) == "81.2.69.160"
    assert str(parse_ip("[::1]")) == "::1"
    assert str(parse_ip("::ffff:1.2.3.4")) == "1.2.3.4"
    assert parse_ip("_hidden") is None and parse_ip("1.2.3.4.5") is None


def test_remembered_addresses_are_bounded_and_not_tracked_by_the_garbage_collector() -> None:
    """A stream of new visitors must not leave objects for every full collection to walk (the
    ipaddress objects cached before made such collections take tens of ms under load)."""
    resolver = ClientIpResolver(["10.0.0.0/8"], ["X-Forwarded-For"])
    for n in range(clientip.SEEN_MAX + 500):
        visitor = f"203.0.{n // 256 % 256}.{n % 256}"
        assert resolver.resolve("10.1.2.3", {"x-forwarded-for": f"{visitor}, 10.9.9.9"}) == visitor
    gc.collect()
    remembered = resolver._seen
    assert 0 < len(remembered) <= clientip.SEEN_MAX
    assert not any(gc.is_tracked(v) for v in remembered.values())
    assert resolver.peer_trusted("10.1.2.3") and not resolver.peer_trusted("203.0.0.1")
    assert not resolver.peer_trusted("") and not resolver.peer_trusted("garbage")
    assert not ClientIpResolver([], ["x-forwarded-for"]).peer_trusted("10.1.2.3")


# -- header names: one list, checked in one place, by both services' settings -------------------


def test_header_names_are_checked_in_one_place() -> None:
    assert check_headers(["X-Forwarded-For", "CF-Connecting-IP"]) == ["x-forwarded-for", "cf-connecting-ip"]
    with pytest.raises(ValueError, match="unknown client IP header 'x-client-ip'"):
        check_headers(["x-forwarded-for", "X-Client-IP"])
    with pytest.raises(ValueError, match="x-client-ip"):
        ClientIpResolver([], ["X-Client-IP"])


@pytest.mark.parametrize("name", [*SUPPORTED_HEADERS, "X-Forwarded-For", "True-Client-IP"])
def test_both_services_accept_every_supported_header(name: str) -> None:
    assert ProxyConfig.model_validate({"client_ip_headers": [name]}).client_ip_headers == [name.lower()]
    assert ControlApiSettings(client_ip_headers=[name]).client_ip_headers == [name]


def test_both_services_refuse_an_unknown_header() -> None:
    with pytest.raises(ValidationError, match="unknown client IP header 'x-client-ip'"):
        ProxyConfig.model_validate({"client_ip_headers": ["X-Client-IP"]})
    with pytest.raises(ValidationError, match="unknown client IP header 'x-client-ip'"):
        ControlApiSettings(client_ip_headers=["X-Client-IP"])


def test_default_headers_ignore_a_visitors_cdn_header_passed_through() -> None:
    """By default only X-Forwarded-For counts, which every proxy appends to: a CF-Connecting-IP
    or X-Real-IP that a (non-Cloudflare) trusted proxy passed through from the visitor does not
    choose the address."""
    for defaults in (ProxyConfig().client_ip_headers,
                     ControlApiSettings().client_ip_headers):
        resolver = ClientIpResolver(["10.0.0.0/8"], defaults)
        sent = {"cf-connecting-ip": "6.6.6.6", "x-real-ip": "6.6.6.6", "true-client-ip": "6.6.6.6",
                "forwarded": "for=6.6.6.6", "x-forwarded-for": "6.6.6.6, 81.2.69.160"}
        assert resolver.resolve("10.1.1.1", sent) == "81.2.69.160"
