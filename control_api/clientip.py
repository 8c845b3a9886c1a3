"""The client's IP address: the TCP peer, or — only when the peer is a trusted reverse proxy —
the right-most untrusted address of the forwarding header.

Each proxy appends the address it received the request from, so reading the chain from the right
and skipping our own (trusted) proxies gives the first address nobody we trust vouches for: the
client. Everything further left was sent by the client and is its to forge. A header from an
untrusted peer is ignored whole.

Only the headers named in `client_ip_headers` are read, in that order, the first present one
deciding: list only headers your proxy sets or overwrites — a header it passes through unchanged
is the client's to write.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable

from aiohttp import web
from multidict import CIMultiDictProxy

from control_api.state import CLIENT_IP, SERVICES

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SUPPORTED_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")
# One `for=` parameter of a Forwarded element (RFC 7239): a token or a quoted string.
_FORWARDED_FOR = re.compile(r'(?:^|;)\s*for\s*=\s*("[^"]*"|[^;,\s]*)', re.IGNORECASE)


def parse_network(value: str) -> Network:
    """A CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a single address; ValueError otherwise."""
    return ipaddress.ip_network(value.strip(), strict=False)


@functools.lru_cache(maxsize=4096)  # the same few peers and clients repeat
def parse_ip(value: str) -> IPAddress | None:
    """An address from a header item: `1.2.3.4`, `1.2.3.4:80`, `[2001:db8::1]:80`, `2001:db8::1`,
    quoted or not; IPv4-mapped IPv6 as IPv4. None for anything else (`unknown`, `_hidden`)."""
    value = value.strip().strip('"').strip()
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _forwarded_chain(values: list[str]) -> list[IPAddress | None]:
    """The `for=` address of each element of Forwarded headers, left to right; an element without
    a usable one is None."""
    chain: list[IPAddress | None] = []
    for value in values:
        for element in value.split(","):
            match = _FORWARDED_FOR.search(element)
            chain.append(parse_ip(match.group(1)) if match else None)
    return chain


class ClientIpResolver:
    """Built once from `trusted_proxies` and `client_ip_headers`."""

    def __init__(self, trusted: Iterable[str], headers: Iterable[str] = ("X-Forwarded-For",)) -> None:
        self._trusted = tuple(parse_network(c) for c in trusted)
        self._headers = tuple(h.lower() for h in headers)
        unknown = set(self._headers) - set(SUPPORTED_HEADERS)
        if unknown:
            raise ValueError(f"unsupported client IP header(s): {', '.join(sorted(unknown))}")

    def is_trusted(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self._trusted)

    def resolve(self, peer: str | None, headers: CIMultiDictProxy[str]) -> str:
        peer_ip = parse_ip(peer or "")
        if peer_ip is None:  # a Unix socket or no peer at all: nothing to reason about
            return peer or ""
        if not self._trusted or not self.is_trusted(peer_ip):
            return str(peer_ip)
        for name in self._headers:
            values = headers.getall(name, [])
            if not values:
                continue
            chain: list[IPAddress | None]
            if name == "x-forwarded-for":
                # Several header lines are one comma-separated list, in order (RFC 9110 5.3).
                chain = [parse_ip(item) for value in values for item in value.split(",")]
            elif name == "forwarded":
                chain = _forwarded_chain(values)
            else:  # x-real-ip: one address, set (overwritten) by the nearest proxy
                chain = [parse_ip(values[-1])]
            return str(self._rightmost_untrusted(chain, peer_ip))
        return str(peer_ip)

    def _rightmost_untrusted(self, chain: list[IPAddress | None], peer_ip: IPAddress) -> IPAddress:
        for ip in reversed(chain):
            if ip is None:
                # A trusted hop would have written a real address: the chain is broken here, so
                # nothing left of it can be believed. Fall back to the peer.
                return peer_ip
            if not self.is_trusted(ip):
                return ip
        # Every hop is ours (an internal caller behind the proxy): the left-most is the origin.
        return chain[0] if chain and chain[0] is not None else peer_ip


def client_ip(request: web.Request) -> str:
    """The request's client address (see the module docstring); computed once per request."""
    ip = request.get(CLIENT_IP)
    if ip is None:
        ip = request[CLIENT_IP] = request.app[SERVICES].client_ips.resolve(request.remote, request.headers)
    return ip
