"""Client IP: forwarding headers count only when the peer is a trusted proxy."""

from __future__ import annotations

import gc

import pytest

from proxy import clientip
from proxy.clientip import ClientIpResolver

R = ClientIpResolver(["10.0.0.0/8", "2001:db8::/32"],
                     ["cf-connecting-ip", "x-forwarded-for", "x-real-ip", "forwarded"])


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
