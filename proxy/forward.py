"""Header rules of a faithful reverse proxy: hop-by-hop, forwarding headers, client IP."""

from __future__ import annotations

import functools
import ipaddress

from multidict import CIMultiDict, CIMultiDictProxy

# RFC 9110 7.6.1 plus the legacy names; `Expect` is answered here (100-continue), not relayed.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade", "expect",
})
# Set by this proxy from what it saw; a visitor's own values are replaced or dropped.
FORWARDING = frozenset({
    "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-real-ip",
    "cf-connecting-ip", "true-client-ip",
})


def connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    return {
        token.strip().lower()
        for value in headers.getall("Connection", ())
        for token in value.split(",")
        if token.strip()
    }


@functools.lru_cache(maxsize=4096)
def _forwarded_node(ip: str) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return '"_unknown"' if not ip else f'"{ip}"'
    return f'"[{addr}]"' if addr.version == 6 else str(addr)


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
    """Headers for the origin: the visitor's, minus hop-by-hop and spoofable ones, plus ours."""
    drop = connection_tokens(incoming)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lname = name.lower()
        if (
            lname in HOP_BY_HOP
            or lname in drop
            or lname == "host"
            or lname.startswith("x-activelead-")
        ):
            continue
        if lname in FORWARDING and not peer_trusted:
            continue
        if lname in ("x-forwarded-for", "forwarded", "x-real-ip"):
            continue  # rebuilt below from the trusted chain
        out.add(name, value)
    out["Host"] = upstream_host
    chain = ", ".join(incoming.getall("X-Forwarded-For", ())) if peer_trusted else ""
    out["X-Forwarded-For"] = f"{chain}, {peer}" if chain else peer
    if "X-Forwarded-Proto" not in out:
        out["X-Forwarded-Proto"] = scheme
    if "X-Forwarded-Host" not in out:
        out["X-Forwarded-Host"] = host
    prior = ", ".join(incoming.getall("Forwarded", ())) if peer_trusted else ""
    node = f"for={_forwarded_node(peer)};proto={scheme};host=\"{host}\""
    out["Forwarded"] = f"{prior}, {node}" if prior else node
    out["X-Real-IP"] = client_ip
    if extra:
        out.update(extra)
    return out


def downstream_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The origin's response headers for the visitor, repeated ones (Set-Cookie) kept apart."""
    drop = connection_tokens(upstream)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.items():
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in drop:
            continue
        out.add(name, value)
    return out
