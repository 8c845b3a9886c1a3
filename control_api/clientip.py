"""The client's IP address of a control API request, decided by the shared resolver
(activelead/clientip.py: the TCP peer, or — only when the peer is in `trusted_proxies` — the
right-most untrusted hop of the first header of `client_ip_headers` present)."""

from __future__ import annotations

from aiohttp import web

from activelead.clientip import joined_lowered
from control_api.state import CLIENT_IP, SERVICES


def client_ip(request: web.Request) -> str:
    """The request's client address; computed once per request."""
    ip = request.get(CLIENT_IP)
    if ip is None:
        resolver = request.app[SERVICES].client_ips
        peer = request.remote or ""
        ip, trusted = resolver.peer(peer)
        if trusted:  # headers are read only from a trusted proxy: gathered for no one else
            ip = resolver.resolve(peer, joined_lowered(request.headers.items()))
        request[CLIENT_IP] = ip
    return ip
