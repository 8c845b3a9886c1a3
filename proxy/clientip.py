"""Client IP from the socket peer, believing forwarding headers only from trusted proxies."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_FORWARDED_FOR = re.compile(r'for=("?)(\[?[0-9A-Fa-f:.]+\]?)(?::\d+)?\1', re.IGNORECASE)


# Addresses remembered by a resolver (see ClientIpResolver._lookup); cleared when full.
SEEN_MAX = 8192


def parse_ip(value: str) -> IPAddress | None:
    value = value.strip().strip('"')
    if value.startswith("["):  # [v6]:port or [v6]
        value = value[1:].split("]", 1)[0]
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def joined_lowered(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers as `ClientIpResolver.resolve` (and the form pipeline) read them: lower-case
    names, repeated headers joined with ', ' in order."""
    out: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


class ClientIpResolver:
    """Decides the visitor's IP; built once from the trusted CIDR list and header order."""

    def __init__(self, trusted: Iterable[str], headers: Iterable[str]) -> None:
        self._trusted = tuple(ipaddress.ip_network(c, strict=False) for c in trusted)
        self._headers = tuple(h.lower() for h in headers)
        # address as sent -> (canonical text, trusted), None when it is not an address. Plain
        # tuples of a str and a bool, which the garbage collector stops tracking: the
        # lru_caches of ipaddress objects this replaced held ~10k tracked objects (cache
        # entries and addresses) that every full collection walked, under a stream of new
        # visitors. Parsing and str() of an address cost ~1 us each; the same few repeat.
        self._seen: dict[str, tuple[str, bool] | None] = {}

    def is_trusted(self, ip: IPAddress | None) -> bool:
        return ip is not None and any(ip in net for net in self._trusted)

    def _lookup(self, raw: str) -> tuple[str, bool] | None:
        seen = self._seen
        if raw in seen:
            return seen[raw]
        ip = parse_ip(raw)
        found = None if ip is None else (str(ip), self.is_trusted(ip))
        if len(seen) >= SEEN_MAX:
            seen.clear()
        seen[raw] = found
        return found

    def peer_trusted(self, peer: str) -> bool:
        """Whether the socket peer is one of the trusted proxies."""
        if not self._trusted or not peer:
            return False
        found = self._lookup(peer)
        return found is not None and found[1]

    def resolve(self, peer: str | None, headers: Mapping[str, str]) -> str:
        """`headers` maps lowercase names to values (repeated headers joined with ', ')."""
        found = self._lookup(peer or "")
        if found is None:
            return peer or ""
        if not found[1]:
            return found[0]
        for name in self._headers:
            raw = headers.get(name)
            if not raw:
                continue
            if name == "x-forwarded-for":
                chain = [self._lookup(p) for p in raw.split(",")]
            elif name == "forwarded":
                chain = [self._lookup(m.group(2)) for m in _FORWARDED_FOR.finditer(raw)]
            else:
                chain = [self._lookup(raw)]
            # Walk from the nearest hop outwards: every trusted hop may have appended, the first
            # untrusted address is the visitor. Anything further left is the visitor's to forge.
            for hop in reversed(chain):
                if hop is None:
                    break
                if not hop[1]:
                    return hop[0]
            else:
                if chain and chain[0] is not None:
                    return chain[0][0]  # the whole chain is trusted: leftmost is the origin
        return found[0]
