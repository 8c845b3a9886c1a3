"""The floor under `activelead proxy`: the least an aiohttp reverse proxy can do per request.

    python bench/aiohttp_floor.py <listen port> <origin url>

One process, uvloop, a pooled client session, the body read whole and passed on with the
headers as they came: none of the faithfulness, limits or protection of the real proxy.
bench/proxy_bench.py runs it beside the others so the cost of those is visible.
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import uvloop
from aiohttp import web

SKIP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


async def main(port: int, origin: str) -> None:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                    auto_decompress=False)

    async def relay(request: web.Request) -> web.Response:
        body = await request.read() if request.body_exists else None
        async with session.request(request.method, origin + request.raw_path,
                                   headers=request.headers, data=body) as upstream:
            payload = await upstream.read()
            headers = {k: v for k, v in upstream.headers.items() if k.lower() not in SKIP}
            return web.Response(status=upstream.status, body=payload, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", relay)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2]))
