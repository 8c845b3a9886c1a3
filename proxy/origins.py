"""Keep-alive HTTP/1.1 connections to origins, for the fast path (proxy/fastpath.py).

One exchange at a time per connection. The response is parsed by llhttp (httptools) and handed
to the exchange's callbacks as it arrives, so bodies stream and back-pressure is the caller's
`pause_reading()` on the connection's transport. Idle connections wait in a LIFO per origin
(the most recently used one is the least likely to have been closed by the origin).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Literal, Protocol, cast

import httptools

# How the response body ends: its Content-Length, the chunked terminator, the origin closing
# the connection, or there is none (HEAD, 204, 304).
Framing = Literal["length", "chunked", "close", "none"]
RawPairs = list[tuple[bytes, bytes]]


class ExchangeCallbacks(Protocol):
    def on_head(self, status: int, reason: bytes, headers: RawPairs, framing: Framing) -> None: ...
    def on_body(self, data: bytes) -> None: ...
    def on_end(self, reusable: bool) -> None: ...
    def on_fail(self, exc: BaseException, got_bytes: bool) -> None: ...
    def flush(self) -> None: ...


@dataclass(frozen=True, slots=True)
class OriginAddress:
    host: str
    port: int
    ssl: ssl.SSLContext | None
    server_hostname: str | None


class OriginConnection(asyncio.Protocol):
    """One connection to an origin; `send()` starts an exchange, callbacks report its progress."""

    def __init__(self, pool: OriginPool, address: OriginAddress) -> None:
        self.pool = pool
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.exchange: ExchangeCallbacks | None = None
        self.last_data = 0.0  # loop time of the last bytes from the origin
        self.idle_since = 0.0
        self._parser: httptools.HttpResponseParser | None = None
        self._head_only = False
        self._got_bytes = False
        self._informational = False
        self._head_sent = False
        self._framing: Framing = "none"
        self._reason = b""
        self._headers: RawPairs = []

    # --- used by the exchange ---

    def send(self, head: bytes, exchange: ExchangeCallbacks, *, head_only: bool) -> None:
        assert self.transport is not None
        self.exchange = exchange
        self._parser = httptools.HttpResponseParser(self)
        self._head_only = head_only
        self._got_bytes = False
        self._informational = False
        self._head_sent = False
        self._framing = "none"
        self._reason = b""
        self._headers = []
        self.last_data = self.pool.loop.time()
        self.transport.write(head)

    def abort(self) -> None:
        """Drop the connection (an exchange given up half-way cannot be reused)."""
        self.exchange = None
        if self.transport is not None:
            self.transport.abort()

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if self.exchange is None or parser is None:
            self.abort()  # bytes nobody asked for: the connection is out of step
            return
        self._got_bytes = True
        self.last_data = self.pool.loop.time()
        exchange = self.exchange
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)
        exchange.flush()  # what this read produced goes out in one send

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.forget(self)
        self.transport = None
        exchange = self.exchange
        if exchange is None:
            return
        if self._head_sent and self._framing == "close":
            self.exchange = None
            exchange.on_end(False)  # a body delimited by the origin closing: it is complete
            return
        self._fail(exc or ConnectionResetError("origin closed the connection"))

    # --- httptools callbacks ---

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None and self.exchange is not None
        status = self._parser.get_status_code()
        if status < 200:
            if status == 101:
                raise ConnectionError("origin switched protocols on a plain request")
            self._informational = True  # 1xx (e.g. 103 Early Hints): wait for the final answer
            self._headers = []
            self._reason = b""
            return
        self._framing = _framing(status, self._headers, self._head_only)
        self._head_sent = True
        self.exchange.on_head(status, self._reason, self._headers, self._framing)
        if self._head_only and self.exchange is not None:
            self._complete()  # a HEAD answer has no body, whatever its Content-Length says

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.on_body(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        if self.exchange is not None:
            self._complete()

    # --- internals ---

    def _complete(self) -> None:
        exchange = self.exchange
        parser = self._parser
        assert exchange is not None and parser is not None
        self.exchange = None
        reusable = self._framing != "close" and parser.should_keep_alive()
        exchange.on_end(reusable and self.transport is not None
                        and not self.transport.is_closing())

    def _fail(self, exc: BaseException) -> None:
        exchange = self.exchange
        self.exchange = None
        if self.transport is not None:
            self.transport.abort()
        if exchange is not None:
            exchange.on_fail(exc, self._got_bytes)


def _framing(status: int, headers: RawPairs, head_only: bool) -> Framing:
    if head_only or status in (204, 304):
        return "none"
    for name, value in headers:
        lname = name.lower()
        if lname == b"transfer-encoding" and b"chunked" in value.lower():
            return "chunked"
        if lname == b"content-length":
            return "length"
    return "close"


class OriginPool:
    """Idle keep-alive connections per origin."""

    def __init__(self, loop: asyncio.AbstractEventLoop, idle_timeout_s: float = 30.0) -> None:
        self.loop = loop
        self.idle_timeout_s = idle_timeout_s
        self._idle: dict[OriginAddress, list[OriginConnection]] = {}
        self._all: set[OriginConnection] = set()

    def take(self, address: OriginAddress) -> OriginConnection | None:
        idle = self._idle.get(address)
        if not idle:
            return None
        too_old = self.loop.time() - self.idle_timeout_s
        while idle:
            conn = idle.pop()
            transport = conn.transport
            if transport is not None and not transport.is_closing() and conn.idle_since > too_old:
                return conn
            conn.abort()
        return None

    def put(self, conn: OriginConnection) -> None:
        conn.idle_since = self.loop.time()
        self._idle.setdefault(conn.address, []).append(conn)

    async def connect(self, address: OriginAddress) -> OriginConnection:
        _, conn = await self.loop.create_connection(
            lambda: OriginConnection(self, address), address.host, address.port,
            ssl=address.ssl, server_hostname=address.server_hostname,
        )
        self._all.add(conn)
        return conn

    def forget(self, conn: OriginConnection) -> None:
        self._all.discard(conn)
        idle = self._idle.get(conn.address)
        if idle and conn in idle:
            idle.remove(conn)

    def close(self) -> None:
        for conn in list(self._all):
            conn.abort()
        self._idle.clear()
