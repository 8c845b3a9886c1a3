"""Client IP from the socket peer, believing forwarding headers only from trusted proxies."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_FORWARDED_FOR = re.compile(r'for=("?)(\[?[0-9A-Fa-f:.]+\]?)(?::\d+)?\1', re.IGNORECASE)


@functools.lru_cache(maxsize=8192)  # hot path: the same few peers and clients repeat
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


@functools.lru_cache(maxsize=8192)
def _text(ip: IPAddress) -> str:
    """The canonical text of an address; str() of an ipaddress object costs ~1 us."""
    return str(ip)


class ClientIpResolver:
    """Decides the visitor's IP; built once from the trusted CIDR list and header order."""

    def __init__(self, trusted: Iterable[str], headers: Iterable[str]) -> None:
        self._trusted = tuple(ipaddress.ip_network(c, strict=False) for c in trusted)
        self._headers = tuple(h.lower() for h in headers)

    @property
    def has_trusted(self) -> bool:
        return bool(self._trusted)

    def is_trusted(self, ip: IPAddress | None) -> bool:
        return ip is not None and any(ip in net for net in self._trusted)

    def resolve(self, peer: str | None, headers: Mapping[str, str]) -> str:
        """`headers` maps lowercase names to values (repeated headers joined with ', ')."""
        peer_ip = parse_ip(peer or "")
        if peer_ip is None:
            return peer or ""
        if not self.is_trusted(peer_ip):
            return _text(peer_ip)
        for name in self._headers:
            raw = headers.get(name)
            if not raw:
                continue
            if name == "x-forwarded-for":
                chain = [parse_ip(p) for p in raw.split(",")]
            elif name == "forwarded":
                chain = [parse_ip(m.group(2)) for m in _FORWARDED_FOR.finditer(raw)]
            else:
                chain = [parse_ip(raw)]
            # Walk from the nearest hop outwards: every trusted hop may have appended, the first
            # untrusted address is the visitor. Anything further left is the visitor's to forge.
            for ip in reversed(chain):
                if ip is None:
                    break
                if not self.is_trusted(ip):
                    return _text(ip)
            else:
                if chain and chain[0] is not None:
                    return _text(chain[0])  # the whole chain is trusted: leftmost is the origin
        return _text(peer_ip)
