"""The proxy's side of the origin exchange: retries, pooling, forwarding headers, hop-by-hop
response headers and timeouts, on both ways to the origin.

GET/HEAD take the raw fast path (proxy/fastpath.py, pooled by proxy/origins.py); every other
method takes aiohttp's client (`_forward` in proxy/app.py). The origins here are raw asyncio
servers, so each test controls the bytes on the wire and sees every connection and request.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.fastpath import BROKE_OFF, GATEWAY_TIMEOUT
from tests.proxy.conftest import MakeProxy, echoed, header_values, site_config
from tests.proxy.rawhttp import exchange, status_of

H = {"Host": "site.test"}
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r]*chunked", re.IGNORECASE)


@dataclass(frozen=True)
class Seen:
    conn: int  # the origin's connection number, from 1 in accept order
    method: str
    path: str
    body: bytes


Handler = Callable[["RawOrigin", int, asyncio.StreamReader, asyncio.StreamWriter],
                   Awaitable[None]]


class RawOrigin:
    """An asyncio origin that numbers its connections and records each request it reads."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.seen: list[Seen] = []
        self.accepted = 0
        self.url = ""
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self.url

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        try:
            await self.handler(self, self.accepted, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the proxy closed the connection
        finally:
            writer.close()

    async def request(self, conn: int, reader: asyncio.StreamReader) -> Seen:
        """Read one whole request (Content-Length or chunked body) and record it."""
        head = await reader.readuntil(b"\r\n\r\n")
        body = b""
        if _CHUNKED.search(head):
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                body += await reader.readexactly(size)
                await reader.readexactly(2)
            await reader.readuntil(b"\r\n\r\n")  # no trailers here: the terminating empty line
        elif match := _LENGTH.search(head):
            body = await reader.readexactly(int(match[1]))
        method, path, _ = head.decode("latin-1").split(" ", 2)
        seen = Seen(conn, method, path, body)
        self.seen.append(seen)
        return seen

    def paths(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()  # ends handlers left waiting on a silent proxy
        if self._server is not None:
            await asyncio.wait_for(self._server.wait_closed(), 5)


@pytest.fixture
async def raw_origin() -> AsyncIterator[Callable[[Handler], Awaitable[RawOrigin]]]:
    async with contextlib.AsyncExitStack() as stack:

        async def start(handler: Handler) -> RawOrigin:
            origin = RawOrigin(handler)
            await origin.start()
            stack.push_async_callback(origin.close)
            return origin

        yield start


async def visit(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """One request from a fresh visitor connection: the status and body it got."""
    async with aiohttp.ClientSession() as s, s.request(
        method, f"http://127.0.0.1:{port}{path}", data=body, headers=H
    ) as r:
        return r.status, await r.read()


async def until_cut(port: int, data: bytes, wait_s: float = 4.0) -> tuple[bytes, str, float]:
    """Send `data`, read until the proxy ends the connection: what came, how it ended ("eof",
    "reset", or "timeout" if it never did) and after how many seconds."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(data)
    out = b""
    how = "eof"
    try:
        async with asyncio.timeout(wait_s):
            while chunk := await reader.read(65536):
                out += chunk
    except TimeoutError:
        how = "timeout"
    except ConnectionResetError:
        how = "reset"
    finally:
        writer.close()
    return out, how, time.monotonic() - started


def parse(response: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")[1:]
    pairs = [(k.strip(), v.strip()) for k, v in (x.split(":", 1) for x in lines)]
    return status_of(response), pairs, body


def raw_request(method: str, path: str, body: bytes = b"", extra: bytes = b"") -> bytes:
    """A request that asks the proxy to close after answering, so `exchange` sees its end."""
    framing = f"Content-Length: {len(body)}\r\n".encode() if method != "GET" else b""
    return (f"{method} {path} HTTP/1.1\r\nHost: site.test\r\n".encode() + framing + extra
            + b"Connection: close\r\n\r\n" + body)


# --- 1. retries -----------------------------------------------------------------------------


async def _answers_once_per_connection(
    origin: RawOrigin, conn: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """The first request of a connection gets a keep-alive 200; the second is read whole and
    recorded, then the connection is closed without a byte of answer."""
    await origin.request(conn, reader)
    writer.write(OK)
    await writer.drain()
    await origin.request(conn, reader)


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_non_idempotent_request_on_a_dropped_pooled_connection_is_not_retried(
    raw_origin: Callable[[Handler], Awaitable[RawOrigin]], make_proxy: MakeProxy, method: str
) -> None:
    """The origin got the whole request before it dropped: re-sending would order twice."""
    origin = await raw_origin(_answers_once_per_connection)
    proxy = await make_proxy([site_config(origin.url)])
    assert await visit(proxy.port, method, "/warm", b"warm=1") == (200, b"ok")
    status, body = await visit(proxy.port, method, "/order", b"buy=1")
    await asyncio.sleep(0.3)  # room for a late retry to arrive
    assert status == 502
    assert b"Bad Gateway" in body
    warm, = origin.paths("/warm")
    assert origin.paths("/order") == [Seen(warm.conn, method, "/order", b"buy=1")]
    assert origin.accepted == 1


async def test_get_on_a_dropped_pooled_connection_is_retried_once_on_a_new_one(
    raw_origin: Callable[[Handler], Awaitable[RawOrigin]], make_proxy: MakeProxy
) -> None:
    """The same origin, GET on the fast path: no answer byte came, so it is sent again (once),
    over a fresh connection, and the visitor never notices."""
    origin = await raw_origin(_answers_once_per_connection)
    proxy = await make_proxy([site_config(origin.url)])
    assert await visit(proxy.port, "GET", "/warm") == (200, b"ok")
    assert await visit(proxy.port, "GET", "/again") == (200, b"ok")
    await asyncio.sleep(0.2)
    warm, = origin.paths("/warm")
    first, retry = origin.paths("/again")
    assert first.conn == warm.conn  # the pooled connection the origin dropped
    assert retry.conn not in (warm.conn, first.conn)
    assert origin.accepted == 2


# --- 2. pooling -----------------------------------------------------------------------------


def answering(answer: bytes) -> Handler:
    """A keep-alive origin giving every request on a connection the same `answer`."""

    async def handler(origin: RawOrigin, conn: int, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        while True:
            await origin.request(conn, reader)
            writer.write(answer)
            await writer.drain()

    return handler


async def test_sequential_requests_share_one_origin_connection(
    raw_origin: Callable[[Handler], Awaitable[RawOrigin]], make_proxy: MakeProxy
) -> None:
    """Each visitor on its own connection, yet both paths reuse one kept-alive origin
    connection each instead of connecting per request."""
    origin = await raw_origin(answering(OK))
    proxy = await make_proxy([site_config(origin.url)])
    for n in range(5):
        assert await visit(proxy.port, "GET", f"/get?n={n}") == (200, b"ok")
    for n in range(5):
        assert await visit(proxy.port, "POST", f"/post?n={n}", b"x=1") == (200, b"ok")
    gets = {s.conn for s in origin.seen if s.method == "GET"}
    posts = {s.conn for s in origin.seen if s.method == "POST"}
    assert [s.method for s in origin.seen] == ["GET"] * 5 + ["POST"] * 5
    assert len(gets) == 1, gets
    assert len(posts) == 1, posts
    assert origin.accepted == 2


# --- 3. forwarding headers from an untrusted visitor ----------------------------------------


SPOOFED = (b"X-Forwarded-Host: evil.test\r\nX-Forwarded-Proto: https\r\n"
           b"True-Client-IP: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-For: 6.6.6.6\r\n"
           b"x-forwarded-host: evil2.test\r\nForwarded: for=6.6.6.6;host=evil;proto=https\r\n"
           b"X-Forwarded-Port: 443\r\nX-Forwarded-Prefix: /evil\r\nX-Forwarded-Ssl: on\r\n"
           b"X-Client-IP: 6.6.6.6\r\nX-Cluster-Client-IP: 6.6.6.6\r\nFastly-Client-IP: 6.6.6.6\r\n"
           b"X-Original-URL: /evil/admin\r\nX-Rewrite-URL: /evil/admin\r\n"
           b"X-Forwarded-Server: evil.test\r\n")


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_spoofed_forwarding_headers_are_replaced(
    origin: TestServer, make_proxy: MakeProxy, method: str
) -> None:
    """Without trusted_proxies the visitor's forwarding headers are lies: the origin must see
    only what the proxy itself observed."""
    proxy = await make_proxy([site_config(str(origin.make_url("")))])
    body = b"a=1" if method == "POST" else b""
    resp = await exchange(proxy.port, raw_request(method, "/echo", body, SPOOFED))
    assert status_of(resp) == 200
    echo = echoed(resp.split(b"\r\n\r\n", 1)[1])
    assert echo["method"] == method
    assert header_values(echo, "X-Forwarded-Host") == ["site.test"] == header_values(echo, "Host")
    assert header_values(echo, "X-Forwarded-Proto") == ["http"]
    assert header_values(echo, "X-Forwarded-For") == ["127.0.0.1"]
    assert header_values(echo, "X-Real-IP") == ["127.0.0.1"]
    assert header_values(echo, "True-Client-IP") == []
    assert header_values(echo, "Forwarded") == ['for=127.0.0.1;proto=http;host="site.test"']
    text = str(echo["headers"])
    assert "6.6.6.6" not in text and "evil" not in text and "https" not in text
    for gone in ("X-Forwarded-Port", "X-Forwarded-Ssl", "X-Original-URL", "X-Rewrite-URL"):
        assert header_values(echo, gone) == []


# --- 4. hop-by-hop response headers ---------------------------------------------------------


HOP_ANSWER = (b"HTTP/1.1 200 OK\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\n"
              b"Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nTrailer: X-T\r\n"
              b"Upgrade: h2c\r\nX-Kept: yes\r\nContent-Type: text/plain\r\n"
              b"Content-Length: 5\r\n\r\nhello")


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_hop_by_hop_response_headers_do_not_reach_the_visitor(
    raw_origin: Callable[[Handler], Awaitable[RawOrigin]], make_proxy: MakeProxy, method: str
) -> None:
    """They describe the origin-to-proxy hop (and `Connection` names more of them): passing
    them on would leak X-Secret and mislead the visitor's client about its own connection."""
    origin = await raw_origin(answering(HOP_ANSWER))
    proxy = await make_proxy([site_config(origin.url)])
    body = b"a=1" if method == "POST" else b""
    resp = await exchange(proxy.port, raw_request(method, "/hop", body))
    status, pairs, got = parse(resp)
    assert (status, got) == (200, b"hello")
    names = {k.lower() for k, _ in pairs}
    assert "x-kept" in names  # an end-to-end header still passes
    for gone in ("x-secret", "keep-alive", "proxy-authenticate", "trailer", "upgrade"):
        assert gone not in names, (gone, pairs)
    assert [v.lower() for k, v in pairs if k.lower() == "connection"] == ["close"]  # ours
    assert b"x-secret" not in resp.lower()
    assert [s.method for s in origin.seen] == [method]


# --- 5. timeouts ----------------------------------------------------------------------------


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose accept queue is full: Linux drops further SYNs, so a connect hangs instead
    of being refused, like an origin behind a firewall that drops packets."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        for _ in range(8):
            probe = socket.socket()
            probe.settimeout(0.2)
            try:
                probe.connect(("127.0.0.1", port))
            except TimeoutError:
                probe.close()
                break
            fillers.append(probe)
        else:
            pytest.skip("the accept queue never filled: a connect cannot be made to hang here")
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_connect_timeout_is_a_504(
    unanswered_port: int, make_proxy: MakeProxy, method: str
) -> None:
    proxy = await make_proxy([site_config(
        f"http://127.0.0.1:{unanswered_port}",
        timeouts={"connect_s": 0.5, "total_s": 5, "read_s": 5},
    )])
    body = b"a=1" if method == "POST" else b""
    resp, how, elapsed = await until_cut(proxy.port, raw_request(method, "/x", body))
    status, pairs, text = parse(resp)
    assert (status, text) == (504, GATEWAY_TIMEOUT.encode() + b"\n"), resp
    assert dict((k.lower(), v) for k, v in pairs)["content-type"].startswith("text/plain")
    assert how == "eof"
    assert 0.4 <= elapsed < 2.0, elapsed  # connect_s, not total_s nor a refusal


async def _reads_then_hangs(
    origin: RawOrigin, conn: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await origin.request(conn, reader)
    await reader.read()  # silent until the proxy gives up and closes


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_origin_silent_after_the_request_is_a_504(
    raw_origin: Callable[[Handler], Awaitable[RawOrigin]], make_proxy: MakeProxy, method: str
) -> None:
    """total_s bounds the wait for the response head, even with a long read_s; the request
    that timed out is not sent again."""
    origin = await raw_origin(_reads_then_hangs)
    proxy = await make_proxy([site_config(origin.url, timeouts={"total_s": 0.5, "read_s": 5})])
    body = b"order=1" if method == "POST" else b""
    resp, how, elapsed = await until_cut(proxy.port, raw_request(method, "/order", body))
    assert (status_of(resp), how) == (504, "eof"), resp
    assert b"Gateway Timeout" in resp
    assert 0.4 <= elapsed < 2.0, elapsed
    await asyncio.sleep(0.2)
    assert [(s.method, s.body) for s in origin.seen] == [(method, body)]


def _half_a_body(size: int) -> Handler:
    async def handler(
        origin: RawOrigin, conn: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await origin.request(conn, reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Length: %d\r\n\r\n" % size + b"x" * (size // 2))
        await writer.drain()
        await reader.read()  # silent from here on

    return handler


@pytest.mark.parametrize(("method", "fast_path", "size"), [
    ("GET", True, 256 * 1024),
    ("GET", True, 1000),  # the fast path streams even a small body: cut as well
    ("GET", False, 256 * 1024),
    ("POST", True, 256 * 1024),
], ids=["get-fast", "get-fast-small", "get-aiohttp", "post"])
async def test_origin_silent_mid_body_cuts_the_visitor(
    raw_origin: Callable[[Handler], Awaitable[RawOrigin]], make_proxy: MakeProxy,
    method: str, fast_path: bool, size: int,
) -> None:
    """The head is gone already: after read_s of silence the visitor's connection is cut, so
    it sees a body shorter than announced, never a complete-looking one."""
    origin = await raw_origin(_half_a_body(size))
    proxy = await make_proxy([site_config(origin.url, timeouts={"read_s": 0.5})],
                             fast_path=fast_path)
    body = b"a=1" if method == "POST" else b""
    resp, how, elapsed = await until_cut(proxy.port, raw_request(method, "/file", body))
    status, pairs, got = parse(resp)
    assert status == 200
    assert [v for k, v in pairs if k.lower() == "content-length"] == [str(size)]
    assert how in ("eof", "reset")
    assert 0 < len(got) < size
    assert 0.4 <= elapsed < 2.0, elapsed
    assert len(origin.seen) == 1


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_origin_silent_mid_small_body_on_the_aiohttp_path_is_a_502(
    raw_origin: Callable[[Handler], Awaitable[RawOrigin]], make_proxy: MakeProxy, method: str
) -> None:
    """aiohttp reads a small body whole before answering: nothing went out yet, so the honest
    answer is still a complete 502 page rather than a cut."""
    origin = await raw_origin(_half_a_body(1000))
    proxy = await make_proxy([site_config(origin.url, timeouts={"read_s": 0.5})],
                             fast_path=False)
    body = b"a=1" if method == "POST" else b""
    resp, how, elapsed = await until_cut(proxy.port, raw_request(method, "/file", body))
    status, _, text = parse(resp)
    assert (status, text, how) == (502, BROKE_OFF.encode() + b"\n", "eof")
    assert 0.4 <= elapsed < 2.0, elapsed
