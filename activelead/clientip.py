"""Which address is the visitor: the socket peer, or — only when the peer is a trusted proxy —
the nearest untrusted hop of a forwarding header. Shared by the proxy and the control API.

Each proxy appends the address it received the request from, so reading a chain from the right
and skipping our own (trusted) proxies gives the first address nobody we trust vouches for: the
visitor. Everything further left was sent by the visitor and is its to forge; a header from an
untrusted peer is ignored whole. Only the configured headers are read, in order, and the first
one present decides: a hop in it that is not an address (garbage, `unknown`, an empty item, a
single-address header sent twice) breaks the chain, and then the peer itself is the answer —
never the next header, which may be one the trusted proxy passed through from the visitor.

Addresses are answered in canonical text, IPv4-mapped IPv6 (`::ffff:a.b.c.d`, what a dual-stack
socket reports for an IPv4 peer) as plain IPv4.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# The forwarding headers a resolver can read (lower-case). X-Forwarded-For and Forwarded are
# chains; the others carry one address, set (overwritten) by the nearest proxy.
SUPPORTED_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip", "cf-connecting-ip", "true-client-ip")

# Addresses remembered by a resolver (see ClientIpResolver._lookup); cleared when full.
SEEN_MAX = 8192

# One parameter of a Forwarded element (RFC 7239 section 4): name "=" (token / quoted-string),
# then the ";" before the next one or the end of the element.
_FORWARDED_PAIR = re.compile(r'\s*([^\s=;,"]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s=;,"]*)\s*(?:;|\Z)')
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_MISS: tuple[str, bool] = ("", False)  # not in ClientIpResolver._seen yet


def check_headers(names: Iterable[str]) -> list[str]:
    """The names lower-cased; ValueError naming the first one no resolver can read."""
    out = [name.lower() for name in names]
    for name in out:
        if name not in SUPPORTED_HEADERS:
            raise ValueError(f"unknown client IP header {name!r}; supported: {', '.join(SUPPORTED_HEADERS)}")
    return out


def parse_network(value: str) -> Network:
    """A CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a single address; ValueError otherwise."""
    net = ipaddress.ip_network(value.strip(), strict=False)
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.subnet_of(_IPV4_MAPPED):
        # Addresses are compared as IPv4 once unmapped (parse_ip), so must such a network be.
        return ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
    return net


def parse_ip(value: str) -> IPAddress | None:
    """An address from a header item: `1.2.3.4`, `1.2.3.4:80`, `[2001:db8::1]:80`, `2001:db8::1`,
    quoted or not; IPv4-mapped IPv6 as IPv4. None for anything else (`unknown`, `_hidden`)."""
    value = value.strip().strip('"').strip()
    if value.startswith("["):  # [v6]:port or [v6]
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:  # v4:port
        value = value.partition(":")[0]
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def joined_lowered(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers as `ClientIpResolver.resolve` (and the form pipeline) read them: lower-case
    names, repeated headers joined with ', ' in order (one list, RFC 9110 5.3)."""
    out: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _forwarded_for(value: str) -> list[str]:
    """The `for=` value of each Forwarded element, left to right; "" (a broken hop) for an
    element that does not parse or has no `for=`, or more than one."""
    out = []
    # Split at every comma, even a quoted one (that element then does not parse): the right-most
    # elements are our own proxies', and a quote the visitor left open further left must not
    # swallow them.
    for element in value.split(","):
        found, count, pos = "", 0, 0
        while pos < len(element):
            pair = _FORWARDED_PAIR.match(element, pos)
            if pair is None:
                count = 0
                break
            if pair.group(1).lower() == "for":
                found, count = pair.group(2), count + 1
            pos = pair.end()
        out.append(found if count == 1 else "")
    return out


class ClientIpResolver:
    """Decides the visitor's IP; built once from the trusted CIDR list and header order."""

    def __init__(self, trusted: Iterable[str], headers: Iterable[str]) -> None:
        self._trusted = tuple(parse_network(c) for c in trusted)
        self._headers = tuple(check_headers(headers))
        # address as sent -> (canonical text, trusted), None when it is not an address. Plain
        # tuples of a str and a bool, which the garbage collector stops tracking: the
        # lru_caches of ipaddress objects this replaced held ~10k tracked objects (cache
        # entries and addresses) that every full collection walked, under a stream of new
        # visitors. Parsing and str() of an address cost ~1 us each; the same few repeat.
        self._seen: dict[str, tuple[str, bool] | None] = {}

    def is_trusted(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self._trusted)

    def _lookup(self, raw: str) -> tuple[str, bool] | None:
        """`_seen`'s entry for `raw`, made on a miss (callers try `_seen.get` first: the hit
        is the hot path, and inlined it saves a method call per hop)."""
        ip = parse_ip(raw)
        found = None if ip is None else (str(ip), self.is_trusted(ip))
        seen = self._seen
        if len(seen) >= SEEN_MAX:
            seen.clear()
        seen[raw] = found
        return found

    def peer(self, peer: str) -> tuple[str, bool]:
        """The socket peer written as addresses are answered (IPv4-mapped IPv6 as IPv4; no
        address, e.g. a Unix socket's, as is), and whether it is a trusted proxy: one lookup
        for the caller that needs both."""
        found = self._seen.get(peer, _MISS)
        if found is _MISS:
            found = self._lookup(peer)
        return (peer, False) if found is None else found

    def peer_trusted(self, peer: str) -> bool:
        """Whether the socket peer is one of the trusted proxies."""
        return self.peer(peer)[1]

    def resolve(self, peer: str | None, headers: Mapping[str, str]) -> str:
        """The visitor's address; `headers` maps lower-case names to values (repeated headers
        joined with ', ', see `joined_lowered`). No peer address (a Unix socket): the peer as is."""
        address, trusted = self.peer(peer or "")
        if not trusted:
            return address
        seen = self._seen
        for name in self._headers:
            raw = headers.get(name)
            if raw is None:
                continue
            hops: Sequence[str]
            if name == "x-forwarded-for":
                hops = raw.split(",")
            elif name == "forwarded":
                hops = _forwarded_for(raw)
            else:  # one address; sent twice it reads "a, b", which is not one
                hops = (raw,)
            origin = address
            for item in reversed(hops):
                hop = seen.get(item, _MISS)
                if hop is _MISS:
                    hop = self._lookup(item)
                if hop is None:
                    # A trusted hop would have written an address: the chain is broken here and
                    # nothing left of it can be believed, nor a later header (the first present
                    # decides).
                    return address
                if not hop[1]:
                    return hop[0]
                origin = hop[0]
            return origin  # every hop is ours (an internal caller): the left-most is the origin
        return address
