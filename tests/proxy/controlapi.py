"""A stand-in for the control API's edge endpoint, run as a real HTTP server in tests.

It implements the contract the proxy relies on (bearer auth, Idempotency-Key dedupe, 2xx on a
replayed batch) and can be told to fail, so outages can be staged without touching control_api/.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

BATCHES = web.AppKey("batches", dict)  # batch id -> events (deduplicated)
CALLS = web.AppKey("calls", list)  # every call, including replays and refused ones
FAIL = web.AppKey("fail", list)  # [status] while failing; [] when healthy
TOKEN = "edge-token-1"


async def edge_events(request: web.Request) -> web.Response:
    key = request.headers.get("Idempotency-Key", "")
    request.app[CALLS].append(key)
    if request.headers.get("Authorization") != f"Bearer {TOKEN}":
        return web.json_response({"code": "unauthorized", "message": "bad token"}, status=401)
    body: dict[str, Any] = await request.json()
    if not key or body.get("batchId") != key:
        return web.json_response({"code": "bad_batch", "message": "key mismatch"}, status=400)
    if request.app[FAIL]:
        status = request.app[FAIL][0]
        if status == 599:  # stored, but the answer is "lost": the proxy must retry safely
            request.app[BATCHES].setdefault(key, body["events"])
            raise ConnectionResetError
        return web.json_response({"code": "down", "message": "unavailable"}, status=status)
    replay = key in request.app[BATCHES]
    request.app[BATCHES].setdefault(key, body["events"])
    return web.json_response({"accepted": len(body["events"]), "replay": replay}, status=200)


def control_api_app() -> web.Application:
    app = web.Application()
    app[BATCHES] = {}
    app[CALLS] = []
    app[FAIL] = []
    app.router.add_post("/v1/edge/events", edge_events)
    return app


def all_events(app: web.Application) -> list[dict[str, Any]]:
    return [ev for events in app[BATCHES].values() for ev in events]
