"""The edge protocol (proxy/protocol.py): head deadline for slow clients, 431 for huge heads."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiohttp.test_utils import TestServer

from proxy.settings import ProxySettings
from rules.engine import Engine
from tests.proxy.conftest import MakeProxy, site_config
from tests.proxy.rawhttp import exchange, status_of
from tests.proxy.test_tls import running


def settings(tmp_path: Path, origin: TestServer, **proxy: object) -> ProxySettings:
    return ProxySettings(
        proxy={"host": "127.0.0.1", "port": 0, "state_dir": str(tmp_path / "s"),
               "render_secret": "s" * 20, **proxy},
        sites=[site_config(str(origin.make_url("")))],
    )


async def test_oversized_header_field_is_431(
    origin: TestServer, engine: Engine, tmp_path: Path
) -> None:
    async with running(settings(tmp_path, origin, max_field_bytes=2048), engine) as ports:
        raw = b"GET /echo HTTP/1.1\r\nHost: site.test\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n"
        resp = await exchange(ports["http"], raw)
        assert status_of(resp) == 431
        assert b"Request Header Fields Too Large" in resp
        many = b"".join(b"X-H%d: 1\r\n" % i for i in range(150))
        resp = await exchange(ports["http"], b"GET / HTTP/1.1\r\nHost: site.test\r\n" + many
                              + b"\r\n")
        assert status_of(resp) == 431


async def test_slow_request_head_gets_408(
    origin: TestServer, engine: Engine, tmp_path: Path
) -> None:
    async with running(settings(tmp_path, origin, header_timeout_s=0.3), engine) as ports:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", ports["http"])
        writer.write(b"GET /echo HTTP/1.1\r\nHost: site.test\r\nX-Slow: ")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert status_of(data) == 408
        assert time.monotonic() - started < 3
        # a client that sends its head in time keeps its keep-alive connection
        reader, writer = await asyncio.open_connection("127.0.0.1", ports["http"])
        for _ in range(2):
            writer.write(b"GET /echo HTTP/1.1\r\nHost: site.test\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            assert status_of(head) == 200
            await asyncio.sleep(0.4)
        writer.close()


async def test_slow_form_body_gets_408(
    origin: TestServer, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy([site_config(str(origin.make_url("")))], body_timeout_s=0.3)
    head = (b"POST /contact HTTP/1.1\r\nHost: site.test\r\nContent-Length: 100\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n\r\nemail=a")
    resp = await exchange(proxy.port, head, wait_s=1)  # aiohttp lingers to avoid a RST
    assert status_of(resp) == 408
