"""Header rules of a faithful reverse proxy: hop-by-hop, forwarding headers, client IP."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

# RFC 9110 7.6.1 plus the legacy names; `Expect` is answered here (100-continue), not relayed.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade", "expect",
})
# Set by this proxy from what it saw; a visitor's own values are replaced or dropped. Only a
# trusted proxy in front may send the rest: origins' frameworks read them as the client's
# address, port or path (X-Original-URL rewrites the path in IIS and Symfony: an access-rule
# bypass when a visitor can send it).
FORWARDING = frozenset({
    "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-real-ip",
    "cf-connecting-ip", "true-client-ip", "x-forwarded-port", "x-forwarded-server",
    "x-forwarded-prefix", "x-forwarded-ssl", "x-client-ip", "x-cluster-client-ip",
    "fastly-client-ip", "x-original-url", "x-rewrite-url", "x-original-forwarded-for",
})


Pairs = list[tuple[str, str]]


def connection_tokens(values: Iterable[str]) -> set[str]:
    """Header names listed in `Connection` values: hop-by-hop for this one message."""
    return {token.strip().lower() for value in values for token in value.split(",") if token.strip()}


@functools.lru_cache(maxsize=4096)
def _forwarded_node(ip: str) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return '"_unknown"' if not ip else f'"{ip}"'
    return f'"[{addr}]"' if addr.version == 6 else str(addr)


def forward_pairs(
    incoming: Pairs,
    *,
    peer: str,
    peer_trusted: bool,
    client_ip: str,
    scheme: str,
    host: str,
    upstream_host: str,
    extra: dict[str, str] | None = None,
    hop_by_hop: frozenset[str] = HOP_BY_HOP,
) -> Pairs:
    """Headers for the origin: the visitor's, minus hop-by-hop and spoofable ones, plus ours.

    Plain (name, value) pairs, so the aiohttp path, the fast path (proxy/fastpath.py) and the
    mitmproxy adapter share one set of rules. `hop_by_hop=frozenset()` leaves the connection's
    own headers alone (mitmproxy manages those itself)."""
    lowered = [k.lower() for k, _ in incoming]
    drop = connection_tokens(v for k, (_, v) in zip(lowered, incoming, strict=True)
                             if k == "connection") if hop_by_hop and "connection" in lowered else ()
    out: Pairs = []
    kept: set[str] = set()
    chain: list[str] = []
    prior: list[str] = []
    replaced = {k.lower() for k in extra} if extra else ()
    for lname, (name, value) in zip(lowered, incoming, strict=True):
        if (
            lname in hop_by_hop
            or lname in drop
            or lname == "host"
            or lname.startswith("x-activelead-")
            or lname in replaced
        ):
            continue
        if lname in FORWARDING:
            if not peer_trusted:
                continue
            if lname == "x-forwarded-for":
                chain.append(value)
                continue  # rebuilt below from the trusted chain
            if lname == "forwarded":
                prior.append(value)
                continue
            if lname == "x-real-ip":
                continue
        out.append((name, value))
        kept.add(lname)
    out.append(("Host", upstream_host))
    out.append(("X-Forwarded-For", f"{', '.join(chain)}, {peer}" if chain else peer))
    if "x-forwarded-proto" not in kept:
        out.append(("X-Forwarded-Proto", scheme))
    if "x-forwarded-host" not in kept:
        out.append(("X-Forwarded-Host", host))
    node = f"for={_forwarded_node(peer)};proto={scheme};host=\"{host}\""
    out.append(("Forwarded", f"{', '.join(prior)}, {node}" if prior else node))
    out.append(("X-Real-IP", client_ip))
    if extra:
        out.extend(extra.items())
    return out


def upstream_headers(
    incoming: CIMultiDictProxy[str],
    *,
    peer: str,
    peer_trusted: bool,
    client_ip: str,
    scheme: str,
    host: str,
    upstream_host: str,
    extra: dict[str, str] | None = None,
) -> CIMultiDict[str]:
    """`forward_pairs` for aiohttp's client."""
    return CIMultiDict(forward_pairs(
        list(incoming.items()), peer=peer, peer_trusted=peer_trusted, client_ip=client_ip,
        scheme=scheme, host=host, upstream_host=upstream_host, extra=extra,
    ))


def response_pairs(upstream: Pairs) -> Pairs:
    """The origin's response headers for the visitor, repeated ones (Set-Cookie) kept apart."""
    lowered = [k.lower() for k, _ in upstream]
    if "connection" not in lowered:
        return [p for k, p in zip(lowered, upstream, strict=True) if k not in HOP_BY_HOP]
    drop = connection_tokens(v for k, (_, v) in zip(lowered, upstream, strict=True)
                             if k == "connection")
    return [p for k, p in zip(lowered, upstream, strict=True)
            if k not in HOP_BY_HOP and k not in drop]


def downstream_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """`response_pairs` for aiohttp's server."""
    return CIMultiDict(response_pairs(list(upstream.items())))
