"""The fast path (proxy/fastpath.py): plain GET/HEAD below aiohttp, everything else handed over.

The pass-through tests (test_passthrough.py, test_render.py) already run through it; these pin
what is particular to it: hand-over mid-connection, pipelining, response framing, pooled
connections the origin dropped, odd origins — and that it answers exactly like the aiohttp path.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from proxy.app import ROUTING
from proxy.stages.act import NO_STORE
from tests.proxy.conftest import SEEN, MakeProxy, echoed, header_values, site_config
from tests.proxy.rawhttp import exchange, status_of
from tests.proxy.test_workers import spawn
from tests.services import ROOT, free_port, wait_for_port

H = {"Host": "site.test"}
POST = (b"POST /contact HTTP/1.1\r\nHost: site.test\r\nContent-Type: application/x-www-form-"
        b"urlencoded\r\nContent-Length: 28\r\n\r\nemail=jane%40example.org&x=1")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response off a kept-alive connection (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:] if x)}
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        await reader.readexactly(2)
    else:
        body = await reader.read()
    return status, headers, body


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_origin() -> AsyncIterator[Callable[[RawHandler], Awaitable[str]]]:
    """An origin speaking whatever bytes a test writes: for behaviour aiohttp would not produce."""
    servers: list[asyncio.Server] = []

    async def start(handler: RawHandler) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await handler(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass  # the proxy closed a pooled connection
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def test_one_connection_moves_from_fast_path_to_aiohttp_and_keeps_working(
    origin: TestServer, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy([site_config(str(origin.make_url("")), mode="monitor",
                                          forms=[{"id": "c", "path": "/contact",
                                                  "require_token": False}])])
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"GET /echo?n=1 HTTP/1.1\r\nHost: site.test\r\n\r\n")
        status, _, body = await read_response(reader)
        assert status == 200 and echoed(body)["path"] == "/echo?n=1"
        writer.write(POST)  # a form post: the connection goes to aiohttp and its pipeline
        status, _, body = await read_response(reader)
        assert status == 200
        assert echoed(body)["body"] == "email=jane%40example.org&x=1"
        writer.write(b"GET /echo?n=2 HTTP/1.1\r\nHost: site.test\r\n\r\n")
        status, _, body = await read_response(reader)
        assert status == 200 and echoed(body)["path"] == "/echo?n=2"
    finally:
        writer.close()
    assert [path for _, path, _ in origin.app[SEEN]] == ["/echo?n=1", "/contact", "/echo?n=2"]


async def test_pipelined_requests_are_answered_in_order(
    origin: TestServer, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy([site_config(str(origin.make_url("")))])
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"".join(
            b"GET /echo?n=%d HTTP/1.1\r\nHost: site.test\r\n\r\n" % n for n in range(5)
        ) + b"HEAD /big?mib=1 HTTP/1.1\r\nHost: site.test\r\n\r\n"
          + b"GET /echo?n=last HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
        for n in range(5):
            status, _, body = await read_response(reader)
            assert status == 200 and echoed(body)["path"] == f"/echo?n={n}"
        head = await read_head(reader)  # HEAD: the length of the GET, no body
        assert b"Content-Length: 1048576" in head
        status, headers, body = await read_response(reader)
        assert echoed(body)["path"] == "/echo?n=last"
        assert headers["connection"] == "close"
        assert await reader.read() == b""  # closed, as asked
    finally:
        writer.close()


async def test_chunked_and_close_delimited_origin_bodies(
    raw_origin: Callable[[RawHandler], Awaitable[str]], make_proxy: MakeProxy
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        if b"/chunked" in head:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        else:  # HTTP/1.0 style: the body ends when the origin closes
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
            await writer.drain()
            writer.close()
            return
        await writer.drain()
        await read_head(reader)  # keep-alive: wait for a next request that never comes

    proxy = await make_proxy([site_config(await raw_origin(handler))])
    for path, text in (("/chunked", b"hello world"), ("/close", b"until the end")):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: site.test\r\n\r\n".encode())
        status, headers, body = await read_response(reader)
        assert (status, body) == (200, text)
        assert headers["transfer-encoding"] == "chunked"  # re-framed for a 1.1 client
        writer.close()
        # An HTTP/1.0 client cannot take chunks: the body ends with the connection.
        raw = await exchange(proxy.port, f"GET {path} HTTP/1.0\r\nHost: site.test\r\n\r\n"
                             .encode())
        head, body = raw.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.0 200") and body == text
        assert b"chunked" not in head.lower() and b"connection: close" in head.lower()


async def test_a_pooled_connection_the_origin_dropped_is_retried_for_get(
    raw_origin: Callable[[RawHandler], Awaitable[str]], make_proxy: MakeProxy
) -> None:
    served: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        served.append(1)
        # says keep-alive, then drops the connection shortly after: a stale pooled connection
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()

    proxy = await make_proxy([site_config(await raw_origin(handler))])
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            async with s.get(f"http://127.0.0.1:{proxy.port}/", headers=H) as r:
                assert (r.status, await r.read()) == (200, b"ok")
            await asyncio.sleep(0.15)  # the origin has closed the pooled connection by now
    assert len(served) == 3


async def test_informational_answers_are_skipped_and_garbage_is_a_502(
    raw_origin: Callable[[RawHandler], Awaitable[str]], make_proxy: MakeProxy
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        if b"/hints" in head:
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                         b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
        elif b"/two-lengths" in head:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
                         b"hello!")
        else:
            writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        writer.close()

    proxy = await make_proxy([site_config(await raw_origin(handler))])
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{proxy.port}/hints", headers=H) as r:
            assert (r.status, await r.read()) == (200, b"final")
        for path in ("/two-lengths", "/garbage"):
            async with s.get(f"http://127.0.0.1:{proxy.port}{path}", headers=H) as r:
                assert r.status == 502, path
                assert "could not be reached" in await r.text()
                assert r.headers["Cache-Control"] == NO_STORE


async def test_large_download_streams_with_bounded_memory(
    origin: TestServer, make_proxy: MakeProxy
) -> None:
    """A slow reader of a big body: the proxy pauses the origin instead of buffering it all."""
    proxy = await make_proxy([site_config(str(origin.make_url("")))])
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port, limit=2**16)
    writer.write(b"GET /big?mib=64 HTTP/1.1\r\nHost: site.test\r\n\r\n")
    await read_head(reader)
    await asyncio.sleep(0.5)  # not reading: the proxy must stop pulling from the origin
    front = next(iter(_fast(proxy).connections))
    pending = front.transport.get_write_buffer_size() if front.transport else 0
    assert pending < 8 * 1024 * 1024, pending  # far below the 64 MiB body
    got = 0
    while chunk := await reader.read(1 << 20):
        got += len(chunk)
        if got >= 64 * 1024 * 1024:
            break
    writer.close()
    assert got == 64 * 1024 * 1024


def _fast(proxy: Any) -> Any:
    """The worker's FastPath, found through its listening protocol factory."""
    import gc

    from proxy.fastpath import FastPath

    return next(o for o in gc.get_objects() if isinstance(o, FastPath)
                and o.sites is proxy.app[ROUTING].sites)


async def test_fast_path_answers_like_the_aiohttp_path(
    origin: TestServer, make_proxy: MakeProxy
) -> None:
    """The same requests with the fast path on and off: the origin sees the same request and
    the visitor the same answer (Date and the aiohttp-only Server header aside)."""
    site = site_config(str(origin.make_url("")))
    requests = [
        b"GET /echo?a=1 HTTP/1.1\r\nHost: site.test\r\nCookie: a=1\r\nCookie: b=2\r\n"
        b"Connection: X-Drop\r\nX-Drop: 1\r\nX-Forwarded-For: 203.0.113.9\r\n"
        b"X-Activelead-Score: 0\r\nAccept: */*\r\n\r\n",
        b"GET /cookies HTTP/1.1\r\nHost: SITE.test:80\r\n\r\n",
        b"HEAD /status/404 HTTP/1.1\r\nHost: site.test\r\n\r\n",
        b"GET /status/204 HTTP/1.0\r\nHost: site.test\r\nConnection: keep-alive\r\n\r\n",
        b"GET /html HTTP/1.1\r\nHost: site.test\r\n\r\n",
    ]
    answers = {}
    for fast_path in (True, False):
        proxy = await make_proxy([site], fast_path=fast_path, trusted_proxies=["127.0.0.0/8"])
        seen = []
        for raw in requests:
            origin.app[SEEN].clear()
            resp = await exchange(proxy.port, raw + b"GET /status/200 HTTP/1.1\r\nHost: "
                                  b"site.test\r\nConnection: close\r\n\r\n")
            answers_ = [part.partition(b"\r\n\r\n")
                        for part in re.split(rb"(?=HTTP/1\.[01] \d{3} )", resp) if part]
            seen.append(([(_normal_head(head), _normal_body(body)) for head, _, body in answers_],
                         list(origin.app[SEEN])))
        answers[fast_path] = seen
        await proxy.close()
    for fast, slow in zip(answers[True], answers[False], strict=True):
        assert fast == slow


def _normal_body(rest: bytes) -> Any:
    """An echo as a sorted header list (the two clients order headers differently); a page
    without its per-visitor token; anything else as it came."""
    if rest.startswith(b'{"method"'):
        echo = echoed(rest)
        return sorted(tuple(h) for h in echo["headers"]), echo["path"]
    if b"<form" in rest:
        return re.sub(rb'value="[^"]{20,}"', b"", rest)
    return rest


def _normal_head(head: bytes) -> list[str]:
    lines = head.decode("latin-1").split("\r\n")
    kept = (x.lower() for x in lines[1:] if not x.lower().startswith(("date:", "server:")))
    return [lines[0], *sorted(kept)]


async def test_echoed_request_headers_match(origin: TestServer, make_proxy: MakeProxy) -> None:
    """What the origin receives, header by header, is the same on both paths."""
    site = site_config(str(origin.make_url("")))
    echoes = []
    for fast_path in (True, False):
        proxy = await make_proxy([site], fast_path=fast_path, trusted_proxies=["127.0.0.0/8"])
        raw = (b"GET /echo HTTP/1.1\r\nHost: site.test\r\nX-Forwarded-For: 203.0.113.9\r\n"
               b"Forwarded: for=203.0.113.9\r\nX-Multi: 1\r\nX-Multi: 2\r\nConnection: close\r\n"
               b"\r\n")
        resp = await exchange(proxy.port, raw)
        echo = echoed(resp.split(b"\r\n\r\n", 1)[1])
        echoes.append(sorted(tuple(h) for h in echo["headers"]))
        assert header_values(echo, "X-Forwarded-For") == ["203.0.113.9, 127.0.0.1"]
        await proxy.close()
    assert echoes[0] == echoes[1]


async def test_heads_it_does_not_serve_get_the_aiohttp_answers(
    origin: TestServer, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy([site_config(str(origin.make_url("")))], max_field_bytes=2048)
    cases = {
        b"GET / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n": 421,  # unknown site
        b"GET / HTTP/1.1\r\nHost: site.test\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n": 431,
        b"GET / HTTP/1.1\r\nHost: site.test\r\nBad Header: x\r\n\r\n": 400,
        b"GET / HTTP/1.1\r\nHost: site.test\r\nHost: other.test\r\n\r\n": 400,
        b"GET / HTTP/1.1\r\nHost: site.test\r\nContent-Length: 1\r\nTransfer-Encoding: "
        b"chunked\r\n\r\n0\r\n\r\n": 400,  # smuggling attempt
        b"GET / HTTP/1.1\nHost: site.test\n\n": 400,  # bare LF: refused at once, not at a timeout
        b"GET http://site.test/echo HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n": 200,
    }
    for raw, expected in cases.items():
        resp = await exchange(proxy.port, raw, wait_s=2.0)
        assert status_of(resp) == expected, (raw[:60], resp[:200])


async def test_uvloop_worker_hands_over_and_pipelines(origin: TestServer, tmp_path: Path) -> None:
    """The same hand-over on the production event loop (uvloop), in a real `activelead proxy`."""
    port = free_port()
    config = tmp_path / "activelead.yaml"
    config.write_text(yaml.safe_dump({
        "proxy": {"host": "127.0.0.1", "port": port, "admin_port": None, "workers": 1,
                  "state_dir": str(tmp_path / "state")},
        "sites": [site_config(str(origin.make_url("")), mode="monitor",
                              forms=[{"id": "c", "path": "/contact", "require_token": False}])],
    }))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with (tmp_path / "proxy.log").open("wb") as log:
        proc = spawn([sys.executable, "-m", "proxy", "--config", str(config)], env, log)
    try:
        wait_for_port(port, 30)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /echo?n=1 HTTP/1.1\r\nHost: site.test\r\n\r\n"
                     b"GET /echo?n=2 HTTP/1.1\r\nHost: site.test\r\n\r\n" + POST
                     + b"GET /echo?n=3 HTTP/1.1\r\nHost: site.test\r\n\r\n")
        paths = []
        for _ in range(4):
            status, _, body = await read_response(reader)
            assert status == 200
            paths.append(json.loads(body)["path"])
        writer.close()
        assert paths == ["/echo?n=1", "/echo?n=2", "/contact", "/echo?n=3"]
    finally:
        proc.terminate()
        proc.wait(10)
    assert b"Traceback" not in (tmp_path / "proxy.log").read_bytes()


async def test_a_client_that_half_closes_still_gets_its_answer(
    origin: TestServer, make_proxy: MakeProxy
) -> None:
    """`printf 'GET …' | nc` style: the request, then EOF, while the origin is still busy."""
    proxy = await make_proxy([site_config(str(origin.make_url("")))])
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /slow?s=0.2 HTTP/1.1\r\nHost: site.test\r\n\r\n")
    writer.write_eof()
    resp = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert status_of(resp) == 200 and resp.endswith(b"late")

