"""Fixtures for proxy tests: a real origin server and the real proxy app, both on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import brotli
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from proxy.app import create_app
from proxy.server import listeners
from proxy.settings import ProxySettings
from rules.engine import Engine

SEEN = web.AppKey("seen", list)
PAGE = web.AppKey("page", list)  # [html]; a list so tests can change it while serving

FORM_PAGE = """<!doctype html><html><head><title>t</title></head><body>
<form method="post" action="/contact"><input name="email"><textarea name="message"></textarea>
<button>Send</button></form>
<form method="get" action="/search"><input name="q"></form>
<form method="POST" action="/unprotected"><input name="x"></form>
</body></html>"""


@pytest.fixture(scope="session")
def engine() -> Engine:
    """The real scoring engine with built-in rules; loaded once (it takes about a second)."""
    return Engine.from_config()


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    request.app[SEEN].append((request.method, request.path_qs, body))
    return web.json_response({
        "method": request.method,
        "path": request.raw_path,
        "headers": [[k, v] for k, v in request.headers.items()],
        "body": body.decode("latin-1"),
        "sha256": hashlib.sha256(body).hexdigest(),
        "length": len(body),
    })


async def _status(request: web.Request) -> web.Response:
    return web.Response(status=int(request.match_info["code"]), text="status page")


async def _cookies(request: web.Request) -> web.Response:
    resp = web.Response(text="ok")
    resp.headers.add("Set-Cookie", "a=1; Path=/; HttpOnly")
    resp.headers.add("Set-Cookie", "b=2; Path=/")
    resp.headers.add("X-Multi", "one")
    resp.headers.add("X-Multi", "two")
    return resp


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("s", "5")))
    return web.Response(text="late")


async def _big(request: web.Request) -> web.StreamResponse:
    mib = int(request.query.get("mib", "8"))
    resp = web.StreamResponse()
    resp.content_length = mib * 1024 * 1024
    resp.content_type = "application/octet-stream"
    await resp.prepare(request)
    if request.method == "HEAD":
        return resp
    block = b"x" * 1024 * 1024
    for _ in range(mib):
        await resp.write(block)
    return resp


async def _html(request: web.Request) -> web.Response:
    page = request.app[PAGE][0].encode()
    coding = request.query.get("coding", "")
    encoded = {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress}.get(
        coding, lambda b: b)(page)
    resp = web.Response(body=encoded, content_type="text/html", charset="utf-8")
    if coding:
        resp.headers["Content-Encoding"] = coding
    resp.headers["ETag"] = '"v1"'
    return resp


async def _ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("chat",))
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == web.WSMsgType.TEXT:
            await ws.send_str("echo:" + msg.data)
        elif msg.type == web.WSMsgType.BINARY:
            await ws.send_bytes(msg.data[::-1])
    return ws


def origin_app() -> web.Application:
    app = web.Application(client_max_size=1024**3)
    app[SEEN] = []
    app[PAGE] = [FORM_PAGE]
    app.router.add_get("/status/{code}", _status)
    app.router.add_get("/cookies", _cookies)
    app.router.add_get("/slow", _slow)
    app.router.add_get("/big", _big)
    app.router.add_get("/html", _html)
    app.router.add_get("/page", _html)
    app.router.add_get("/ws", _ws)
    app.router.add_route("*", "/{tail:.*}", _echo)
    return app


@pytest.fixture
async def origin() -> Any:
    server = TestServer(origin_app(), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[TestServer]:
    """A test's own origin on 127.0.0.1, stopped when the block ends."""
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


def site_config(origin_url: str, **overrides: Any) -> dict[str, Any]:
    site: dict[str, Any] = {
        "id": "shop",
        "hosts": ["site.test", "127.0.0.1"],
        "origin": origin_url,
        "project_id": "prj_1",
        "forms": [
            {"id": "contact", "path": "/contact"},
            {"id": "signup", "path": "/signup", "require_token": False},
        ],
    }
    site.update(overrides)
    return site


class RunningProxy:
    """The real proxy app behind the real listeners (fast path first, as `serve()` runs it)."""

    def __init__(self, app: web.Application, stack: contextlib.AsyncExitStack, port: int) -> None:
        self.app = app
        self.port = port
        self.host = "127.0.0.1"
        self._stack = stack

    def make_url(self, path: str) -> URL:
        return URL(f"http://127.0.0.1:{self.port}{path}")

    async def close(self) -> None:
        await self._stack.aclose()


MakeProxy = Callable[..., Awaitable[RunningProxy]]


@pytest.fixture
async def make_proxy(engine: Engine, tmp_path: Path) -> Any:
    """Start the real proxy on a free port; keyword args become the settings."""
    proxies: list[RunningProxy] = []

    async def start(sites: list[dict[str, Any]], **proxy: Any) -> RunningProxy:
        proxy.setdefault("state_dir", str(tmp_path / "state"))
        proxy.setdefault("render_secret", "test-secret-0123456789")
        proxy.setdefault("host", "127.0.0.1")
        proxy.setdefault("port", 0)
        redis = proxy.pop("redis", None)
        settings = ProxySettings(proxy=proxy, sites=sites, redis={"url": redis})
        app = create_app(settings, engine=engine)
        stack = contextlib.AsyncExitStack()
        ports = await stack.enter_async_context(listeners(app, settings))
        running = RunningProxy(app, stack, ports["http"])
        proxies.append(running)
        return running

    yield start
    for running in proxies:
        await running.close()


def echoed(data: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(data)
    return parsed


def header_values(echo: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in echo["headers"] if k.lower() == name.lower()]
