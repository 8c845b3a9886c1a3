"""aiohttp's HTTP/1 protocol with two duties of an internet-facing edge added.

- A deadline for the first request head (slowloris): aiohttp waits for headers forever.
- Oversized request lines / header fields / too many headers answer 431 (RFC 6585) with a
  clear text, where aiohttp says 400.

This subclasses aiohttp internals (`RequestHandler`, `Server`, `AppRunner._make_server`,
`_request_count`); tests/proxy/test_protocol.py pins the behaviour across aiohttp upgrades.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

_TIMEOUT_BODY = b"Request Timeout: the request head did not arrive in time.\n"
TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\nConnection: close\r\n\r\n"
    + _TIMEOUT_BODY
)


class ProxyRequestHandler(RequestHandler):
    """One client connection."""

    def __init__(self, manager: web.Server, *, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head_deadline = asyncio.get_running_loop().call_later(
            self._header_timeout_s, self._head_overdue
        )

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_deadline is not None and self._request_count > 0:
            self._head_deadline.cancel()  # later requests are bounded by keep-alive timeout
            self._head_deadline = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        super().connection_lost(exc)

    def _head_overdue(self) -> None:
        self._head_deadline = None
        transport = self.transport
        if self._request_count == 0 and transport is not None and not transport.is_closing():
            transport.write(TIMEOUT_RESPONSE)
            transport.close()

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, LineTooLong) or (
            isinstance(exc, BadHttpMessage) and "too many headers" in str(exc).lower()
        ):
            status = 431
            message = f"Request Header Fields Too Large: {exc.message}\n"
        return super().handle_error(request, status, exc, message)


class ProxyServer(web.Server):
    """Creates ProxyRequestHandler protocols."""

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s

    def __call__(self) -> RequestHandler:
        return ProxyRequestHandler(
            self, loop=self._loop, header_timeout_s=self._header_timeout_s, **self._kwargs
        )


class ProxyRunner(web.AppRunner):
    """An AppRunner whose server speaks through ProxyRequestHandler."""

    def __init__(self, app: web.Application, *, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout_s = header_timeout_s

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        return ProxyServer(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=base._loop,
            header_timeout_s=self._header_timeout_s,
            **base._kwargs,
        )
