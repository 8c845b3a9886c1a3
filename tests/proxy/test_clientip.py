"""Client IP: forwarding headers count only when the peer is a trusted proxy."""

from __future__ import annotations

import pytest

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
