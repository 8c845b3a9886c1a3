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
        peer = request.remote
        # Headers are read only from a trusted proxy: don't gather them for anyone else.
        headers = joined_lowered(request.headers.items()) if resolver.peer_trusted(peer or "") else {}
        ip = request[CLIENT_IP] = resolver.resolve(peer, headers)
    return ip
