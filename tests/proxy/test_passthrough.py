"""Pass-through must be a faithful reverse proxy: everything unprotected streams untouched."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from tests.proxy.conftest import SEEN, MakeProxy, echoed, header_values, serving, site_config
from tests.proxy.rawhttp import exchange, status_of

H = {"Host": "site.test"}


def url(server: TestServer, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


async def test_get_keeps_path_query_and_headers(origin: TestServer, make_proxy: MakeProxy) -> None:
    proxy = await make_proxy([site_config(str(origin.make_url("")))])
    async with aiohttp.ClientSession() as s, s.get(
        URL(url(proxy, "/a/b%20c?x=1&x=2&y=%2F"), encoded=True),
        headers={**H, "Accept": "text/x-test", "X-Custom": "kept", "Cookie": "sid=1; b=2"},
    ) as r:
        assert r.status == 200
        echo = echoed(await r.read())
    assert echo["method"] == "GET"
    assert echo["path"] == "/a/b%20c?x=1&x=2&y=%2F"
    assert header_values(echo, "Host") == ["site.test"]
    assert header_values(echo, "X-Custom") == ["kept"]
    assert header_values(echo, "Accept") == ["text/x-test"]
    assert header_values(echo, "Cookie") == ["sid=1; b=2"]
    assert header_values(echo, "User-Agent") == header_values(echo, "User-Agent")[:1]
    assert header_values(echo, "X-Forwarded-Host") == ["site.test"]
    assert header_values(echo, "X-Forwarded-Proto") == ["http"]
    assert header_values(echo, "X-Forwarded-For") == ["127.0.0.1"]
    assert header_values(echo, "Forwarded") == ['for=127.0.0.1;proto=http;host="site.test"']


async def test_hop_by_hop_spoofed_and_activelead_headers_are_removed(
    origin: TestServer, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy([site_config(str(origin.make_url("")))])
    raw = (
        b"GET /echo HTTP/1.1\r\nHost: site.test\r\nConnection: close, X-Hop\r\nX-Hop: secret\r\n"
        b"TE: trailers\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic eDp5\r\n"
        b"X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nCF-Connecting-IP: 6.6.6.6\r\n"
        b"Forwarded: for=6.6.6.6\r\nX-Activelead-Score: 0\r\nx-activelead-decision: allowed\r\n\r\n"
    )
    resp = await exchange(proxy.port, raw)
    assert status_of(resp) == 200
    echo = echoed(resp.split(b"\r\n\r\n", 1)[1])
    names = {k.lower() for k, _ in echo["headers"]}
    for gone in ("x-hop", "te", "keep-alive", "proxy-authorization", "cf-connecting-ip",
                 "x-activelead-score", "x-activelead-decision"):
        assert gone not in names
    assert header_values(echo, "X-Forwarded-For") == ["127.0.0.1"]
    assert header_values(echo, "X-Real-IP") == ["127.0.0.1"]
    assert "6.6.6.6" not in str(echo["headers"])


async def test_trusted_proxy_chain_is_extended(origin: TestServer, make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(
        [site_config(str(origin.make_url("")))], trusted_proxies=["127.0.0.0/8"]
    )
    async with aiohttp.ClientSession() as s, s.get(
        url(proxy, "/echo"),
        headers={**H, "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https",
                 "Forwarded": "for=203.0.113.7;proto=https"},
    ) as r:
        echo = echoed(await r.read())
    assert header_values(echo, "X-Forwarded-For") == ["203.0.113.7, 127.0.0.1"]
    assert header_values(echo, "X-Real-IP") == ["203.0.113.7"]
    assert header_values(echo, "X-Forwarded-Proto") == ["https"]
    assert header_values(echo, "Forwarded")[0].startswith("for=203.0.113.7;proto=https, for=")


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"])
async def test_methods_and_bodies_pass_unchanged(
    origin: TestServer, make_proxy: MakeProxy, method: str
) -> None:
    proxy = await make_proxy([site_config(str(origin.make_url("")))])
    body = bytes(range(256)) * 40
    async with aiohttp.ClientSession() as s, s.request(
        method, url(proxy, "/echo"), data=body,
        headers={**H, "Content-Type": "application/x-binary"},
    ) as r:
        echo = echoed(await r.read())
    assert echo["method"] == method
    assert echo["sha256"] == hashlib.sha256(body).hexdigest()
    assert header_values(echo, "Content-Type") == ["application/x-binary"]
    assert header_values(echo, "Content-Length") == [str(len(body))]


async def test_head_keeps_content_length(origin: TestServer, make_proxy: MakeProxy) -> None:
    proxy = await make_proxy([site_config(str(origin.make_url("")))])
    async with aiohttp.ClientSession() as s, s.head(url(proxy, "/big?mib=1"), headers=H) as r:
        assert r.status == 200
        assert r.headers["Content-Length"] == str(1024 * 1024)


@pytest.mark.parametrize("code", [201, 204, 301, 304, 404, 410, 500, 503])
async def test_status_codes_pass(origin: TestServer, make_proxy: MakeProxy, code: int) -> None:
    proxy = await make_proxy([site_config(str(origin.make_url("")))])
    async with aiohttp.ClientSession() as s, s.get(
        url(proxy, f"/status/{code}"), headers=H, allow_redirects=False
    ) as r:
        assert r.status == code


async def test_repeated_headers_and_cookies_kept(origin: TestServer, make_proxy: MakeProxy) -> None:
    proxy = await make_proxy([site_config(str(origin.make_url("")))])
    async with aiohttp.ClientSession() as s, s.get(url(proxy, "/cookies"), headers=H) as r:
        assert r.headers.getall("Set-Cookie") == ["a=1; Path=/; HttpOnly", "b=2; Path=/"]
        assert r.headers.getall("X-Multi") == ["one", "two"]


async def test_chunked_upload_streams(origin: TestServer, make_proxy: MakeProxy) -> None:
    proxy = await make_proxy([site_config(str(origin.make_url("")))])
    digest = hashlib.sha256()

    async def gen() -> AsyncIterator[bytes]:
        for i in range(64):
            block = bytes([i]) * 256 * 1024
            digest.update(block)
            yield block

    async with aiohttp.ClientSession() as s, s.put(url(proxy, "/upload"), data=gen(),
                                                    headers=H) as r:
        echo = echoed(await r.read())
    assert echo["length"] == 64 * 256 * 1024
    assert echo["sha256"] == digest.hexdigest()
    assert header_values(echo, "Transfer-Encoding") == ["chunked"]


async def _chunked_put(port: int, pieces: list[bytes], gap_s: float, answer_within_s: float,
                       finish: bool = True) -> tuple[bytes, float]:
    """PUT `pieces` as chunks `gap_s` apart (and the last chunk, if `finish`), then wait for the
    answer; (answer, seconds from the last byte sent to the answer's first)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"PUT /upload HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n"
                     b"Connection: close\r\n\r\n")
        for piece in pieces:
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(gap_s)
        if finish:
            writer.write(b"0\r\n\r\n")
        sent = time.monotonic()
        async with asyncio.timeout(answer_within_s):
            head = await reader.readuntil(b"\r\n\r\n")
        waited = time.monotonic() - sent
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        async with asyncio.timeout(5):  # (a stalled visitor's connection lingers: not awaited)
            return head + await reader.readexactly(length), waited
    finally:
        writer.close()


async def test_slow_upload_is_not_cut_by_total_s(origin: TestServer, make_proxy: MakeProxy) -> None:
    """total_s bounds the origin's answer, not the visitor's upload: 3 s of trickle, total_s 0.5."""
    proxy = await make_proxy(
        [site_config(str(origin.make_url("")), timeouts={"total_s": 0.5, "read_s": 1.0})]
    )
    pieces = [bytes([i]) * 1000 for i in range(10)]
    resp, _ = await _chunked_put(proxy.port, pieces, 0.3, answer_within_s=5)
    assert status_of(resp) == 200
    echo = echoed(resp.split(b"\r\n\r\n", 1)[1])
    assert echo["sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()


async def test_stalled_upload_is_408_after_read_s(origin: TestServer, make_proxy: MakeProxy) -> None:
    """A visitor who stops sending mid-body gets 408 (not the origin's 504) after read_s."""
    proxy = await make_proxy(
        [site_config(str(origin.make_url("")), timeouts={"total_s": 30, "read_s": 0.5})]
    )
    resp, waited = await _chunked_put(proxy.port, [b"a" * 1000, b"b" * 1000], 0.05,
                                      answer_within_s=3, finish=False)
    assert status_of(resp) == 408
    assert b"the request body stopped arriving" in resp
    assert waited < 2
    assert origin.app[SEEN] == []  # the origin's handler never got a complete body


@pytest.mark.parametrize("fast_path", [True, False])
async def test_large_bodies_stream_through_in_bounded_memory(
    make_proxy: MakeProxy, fast_path: bool
) -> None:
    """64 MiB up and 64 MiB down through the aiohttp path (uploads always take it) with a
    fraction of that allocated: the proxy holds chunks, not bodies."""
    from aiohttp import web

    mib = 64
    block = bytes(range(256)) * 4096  # 1 MiB

    async def sink(request: web.Request) -> web.Response:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.content.iter_chunked(1 << 16):
            digest.update(chunk)
            size += len(chunk)
        return web.json_response({"sha256": digest.hexdigest(), "length": size})

    async def source(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = mib * len(block)
        await resp.prepare(request)
        for _ in range(mib):
            await resp.write(block)
        return resp

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(mib):
            yield block

    app = web.Application()
    app.router.add_post("/sink", sink)
    app.router.add_get("/source", source)
    expected = hashlib.sha256()
    for _ in range(mib):
        expected.update(block)
    async with serving(app) as origin:
        proxy = await make_proxy([site_config(str(origin.make_url("")))], fast_path=fast_path)
        tracemalloc.start()  # proxy, origin and client share this process
        try:
            async with aiohttp.ClientSession() as s:
                async with s.post(url(proxy, "/sink"), data=upload(), headers=H) as r:
                    got = await r.json()
                down, size = hashlib.sha256(), 0
                async with s.get(url(proxy, "/source"), headers=H) as r:
                    async for chunk in r.content.iter_chunked(1 << 16):
                        down.update(chunk)
                        size += len(chunk)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert got == {"sha256": expected.hexdigest(), "length": mib * len(block)}
    assert size == mib * len(block) and down.hexdigest() == expected.hexdigest()
    assert peak < 24 << 20, peak  # a buffered body alone would be 64 MiB


async def test_large_download_streams(origin: TestServer, make_proxy: MakeProxy) -> None:
    proxy = await make_proxy([site_config(str(origin.make_url("")))])
    async with aiohttp.ClientSession() as s, s.get(url(proxy, "/big?mib=32"), headers=H) as r:
        assert r.headers["Content-Length"] == str(32 * 1024 * 1024)
        total = 0
        async for chunk in r.content.iter_any():
            total += len(chunk)
    assert total == 32 * 1024 * 1024


async def test_unknown_host_is_421(origin: TestServer, make_proxy: MakeProxy) -> None:
    proxy = await make_proxy([site_config(str(origin.make_url("")))])
    async with aiohttp.ClientSession() as s, s.get(
        url(proxy, "/"), headers={"Host": "evil.test"}
    ) as r:
        assert r.status == 421
        assert "no site is configured for host 'evil.test'" in await r.text()


async def test_origin_down_is_502(make_proxy: MakeProxy) -> None:
    from tests.services import free_port

    proxy = await make_proxy([site_config(f"http://127.0.0.1:{free_port()}")])
    async with aiohttp.ClientSession() as s, s.get(url(proxy, "/"), headers=H) as r:
        assert r.status == 502
        assert r.headers["Content-Type"].startswith("text/plain")
        assert "Bad Gateway" in await r.text()


async def test_origin_too_slow_is_504(origin: TestServer, make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(
        [site_config(str(origin.make_url("")), timeouts={"total_s": 0.3, "read_s": 0.3})]
    )
    async with aiohttp.ClientSession() as s, s.get(url(proxy, "/slow?s=3"), headers=H) as r:
        assert r.status == 504
        assert "Gateway Timeout" in await r.text()


async def test_post_is_never_retried(make_proxy: MakeProxy) -> None:
    """An origin that drops every request: the POST must reach it exactly once (502)."""
    seen: list[bytes] = []

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        proxy = await make_proxy([site_config(f"http://127.0.0.1:{port}")])
        async with aiohttp.ClientSession() as s:
            async with s.get(url(proxy, "/warm"), headers=H) as r:
                assert r.status == 502
            seen.clear()
            async with s.post(url(proxy, "/order"), data=b"buy=1", headers=H) as r:
                assert r.status == 502
        assert len(seen) == 1
    finally:
        server.close()
        await server.wait_closed()


async def test_body_over_content_length_limit_is_413(
    origin: TestServer, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy([site_config(str(origin.make_url("")), max_body_bytes=1024)])
    async with aiohttp.ClientSession() as s, s.post(
        url(proxy, "/echo"), data=b"x" * 2048, headers=H
    ) as r:
        assert r.status == 413
        assert "at most 1024 bytes" in await r.text()
    assert origin.app[SEEN] == []


async def test_chunked_body_over_limit_is_413(origin: TestServer, make_proxy: MakeProxy) -> None:
    proxy = await make_proxy([site_config(str(origin.make_url("")), max_body_bytes=100_000)])

    async def gen() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 50_000

    async with aiohttp.ClientSession() as s, s.post(url(proxy, "/echo"), data=gen(),
                                                     headers=H) as r:
        assert r.status == 413
    assert all(len(body) <= 100_000 for _, _, body in origin.app[SEEN])


async def test_expect_100_continue(origin: TestServer, make_proxy: MakeProxy) -> None:
    proxy = await make_proxy([site_config(str(origin.make_url("")), max_body_bytes=1000)])
    head = (b"POST /echo HTTP/1.1\r\nHost: site.test\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
    resp = await exchange(proxy.port, head, then=b"hello")
    assert resp.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200")
    assert b'"body": "hello"' in resp
    big = (b"POST /echo HTTP/1.1\r\nHost: site.test\r\nContent-Length: 5000\r\n"
           b"Expect: 100-continue\r\n\r\n")
    resp = await exchange(proxy.port, big, wait_s=1)  # aiohttp lingers to avoid a RST
    assert status_of(resp) == 413
    assert b"100 Continue" not in resp


async def test_websocket_round_trip(origin: TestServer, make_proxy: MakeProxy) -> None:
    proxy = await make_proxy([site_config(str(origin.make_url("")))])
    async with aiohttp.ClientSession() as s, s.ws_connect(
        url(proxy, "/ws"), headers=H, protocols=("chat",)
    ) as ws:
        assert ws.protocol == "chat"
        await ws.send_str("hi")
        assert (await ws.receive_str()) == "echo:hi"
        await ws.send_bytes(b"\x01\x02\x03")
        assert (await ws.receive_bytes()) == b"\x03\x02\x01"


async def test_websocket_closes_and_refusals_pass_through(make_proxy: MakeProxy) -> None:
    """Either side's close code reaches the other; an origin's refusal keeps its status, an
    answer that is no websocket is a 502."""
    from aiohttp import web

    closed_by_visitor: list[int | None] = []

    async def ws(request: web.Request) -> web.StreamResponse:
        if request.query.get("refuse"):
            return web.Response(status=403, text="no")
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        msg = await sock.receive()
        if msg.type == aiohttp.WSMsgType.TEXT and msg.data == "bye":
            await sock.close(code=4001, message=b"origin says bye")
        else:
            closed_by_visitor.append(sock.close_code)
        return sock

    async def plain(_: web.Request) -> web.Response:
        return web.Response(text="not a websocket")

    app = web.Application()
    app.router.add_get("/ws", ws)
    app.router.add_get("/plain", plain)
    async with serving(app) as origin:
        proxy = await make_proxy([site_config(str(origin.make_url("")))])
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(url(proxy, "/ws"), headers=H) as sock:
                await sock.send_str("bye")
                msg = await sock.receive(timeout=5)
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4001
            async with s.ws_connect(url(proxy, "/ws"), headers=H) as sock:
                await sock.close(code=4002)
            for _ in range(50):
                if closed_by_visitor:
                    break
                await asyncio.sleep(0.05)
            assert closed_by_visitor == [4002]
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await s.ws_connect(url(proxy, "/ws?refuse=1"), headers=H)
            assert refused.value.status == 403  # the origin's refusal, as it gave it
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await s.ws_connect(url(proxy, "/plain"), headers=H)
            assert refused.value.status == 502  # a page, not a websocket


SMUGGLING: list[tuple[str, bytes]] = [
    ("cl-and-te", b"POST /echo HTTP/1.1\r\nHost: site.test\r\nContent-Length: 4\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n"),
    ("two-cl", b"POST /echo HTTP/1.1\r\nHost: site.test\r\nContent-Length: 4\r\n"
               b"Content-Length: 6\r\n\r\nabcdef"),
    ("te-obfuscated", b"POST /echo HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: xchunked\r\n"
                      b"\r\n0\r\n\r\n"),
    ("te-space-before-colon", b"POST /echo HTTP/1.1\r\nHost: site.test\r\n"
                              b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
    ("obs-fold", b"GET /echo HTTP/1.1\r\nHost: site.test\r\nX-A: one\r\n two\r\n\r\n"),
    ("nul-in-header", b"GET /echo HTTP/1.1\r\nHost: site.test\r\nX-A: a\x00b\r\n\r\n"),
    ("bare-cr", b"GET /echo HTTP/1.1\r\nHost: site.test\r\nX-A: a\rb\r\n\r\n"),
    ("bad-cl", b"POST /echo HTTP/1.1\r\nHost: site.test\r\nContent-Length: +4\r\n\r\nabcd"),
    ("bad-chunk-size", b"POST /echo HTTP/1.1\r\nHost: site.test\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabcd\r\n0\r\n\r\n"),
]


@pytest.mark.parametrize(("name", "raw"), SMUGGLING, ids=[n for n, _ in SMUGGLING])
async def test_smuggling_attempts_are_400(
    origin: TestServer, make_proxy: MakeProxy, name: str, raw: bytes
) -> None:
    proxy = await make_proxy([site_config(str(origin.make_url("")))])
    resp = await exchange(proxy.port, raw)
    assert status_of(resp) in (400, 501), resp[:200]
    assert resp.count(b"HTTP/1.") == 1  # nothing smuggled behind it
    assert origin.app[SEEN] == []


async def test_oversized_header_is_rejected(origin: TestServer, make_proxy: MakeProxy) -> None:
    proxy = await make_proxy([site_config(str(origin.make_url("")))], max_field_bytes=2048)
    raw = b"GET /echo HTTP/1.1\r\nHost: site.test\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n"
    resp = await exchange(proxy.port, raw)
    assert status_of(resp) in (400, 413, 431)
    assert b"2048" in resp
    assert origin.app[SEEN] == []


def _unused(*_: Any) -> None:
    return None


@pytest.mark.parametrize("path", ["/contact", "/upload"])
async def test_truncated_body_reaches_nobody(
    origin: TestServer, make_proxy: MakeProxy, path: str
) -> None:
    """The client promises 1000 bytes, sends 10 and hangs up: no half request at the origin."""
    proxy = await make_proxy([site_config(str(origin.make_url("")))])
    _reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(f"POST {path} HTTP/1.1\r\nHost: site.test\r\nContent-Length: 1000\r\n"
                 "Content-Type: application/x-www-form-urlencoded\r\n\r\nemail=a%40".encode())
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    await asyncio.sleep(0.3)
    assert origin.app[SEEN] == []
    # the proxy is fine afterwards
    async with aiohttp.ClientSession() as s, s.get(url(proxy, "/echo"), headers=H) as r:
        assert r.status == 200
