"""Property-based API test: schemathesis generates requests from /v1/openapi.json and sends them
to a running control API; no operation may answer 5xx, whatever it is sent.

The server runs in a thread with its own event loop (schemathesis' client is synchronous).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from control_api import cli
from control_api.app import create_app
from control_api.db import Database
from control_api.keys import KeyStore
from control_api.openapi import DOCUMENT
from tests.control_api.conftest import make_settings, shared_engine
from tests.services import free_port

# A test dependency; skip (with the reason shown) rather than fail collection where it is absent.
schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a test dependency")
from hypothesis import HealthCheck, settings  # noqa: E402 - after the skip guard
from schemathesis.checks import not_a_server_error  # noqa: E402

schema = schemathesis.openapi.from_dict(DOCUMENT)


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    config = make_settings(tmp, initial_credits=100_000)
    demo = cli.bootstrap_demo(config, credits_amount=100_000)
    db = Database(config.db)
    token, _ = db.run_sync(
        lambda conn: KeyStore(config.key_pepper).create_account_token(
            conn, account_id=demo["accountId"], name="fuzz"
        )
    )
    db.close_sync()
    port = free_port()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(create_app(config, engine=shared_engine()))
    asyncio.run_coroutine_threadsafe(runner.setup(), loop).result()
    site = web.TCPSite(runner, "127.0.0.1", port)
    asyncio.run_coroutine_threadsafe(site.start(), loop).result()
    try:
        yield {
            "url": f"http://127.0.0.1:{port}",
            "key": demo["apiKey"],
            "edge": demo["edgeToken"],
            "token": token,
        }
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def credential(path: str, api: dict[str, Any]) -> dict[str, str]:
    if path.startswith("/v1/edge/"):
        return {"Authorization": f"Bearer {api['edge']}"}
    if path.startswith(
        ("/v1/ingest", "/v1/feedback", "/v1/events", "/v1/credits", "/v1/usage", "/v1/erasure")
    ):
        return {"Authorization": f"Bearer {api['key']}"}
    if path.startswith(("/1.", "/healthz", "/metrics", "/v1/openapi", "/v1/accounts", "/v1/session")):
        return {}
    return {"Authorization": f"Bearer {api['token']}"}


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
def test_no_operation_answers_5xx(case: Any, live_api: dict[str, Any]) -> None:
    case.call_and_validate(
        base_url=live_api["url"],
        headers=credential(case.path, live_api),
        checks=[not_a_server_error],
        timeout=10,
    )
