"""Webhooks: signed deliveries to a real receiver, retries with backoff, delivery log,
redelivery, SSRF guard, and the documented verification test vector."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from control_api.webhooks import address_allowed, sign, verify
from tests.control_api.conftest import Account, ClientFactory, api_error, sign_up
from tests.control_api.test_ingest import SPAM
from tests.control_api.test_keys import GOOD

# The README's test vector (Standard Webhooks format).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_standard_webhooks_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIG
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": f"v1,bogus {VECTOR_SIG}",
    }
    assert verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TS + 10)
    assert not verify(VECTOR_SECRET, headers, VECTOR_BODY + b" ", now=VECTOR_TS)
    assert not verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TS + 3600)  # too old


@pytest.mark.parametrize(
    ("ip", "allowed"),
    [
        ("8.8.8.8", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("::1", False),
        ("fe80::1", False),
        ("::ffff:127.0.0.1", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("2001:4860:4860::8888", True),
    ],
)
def test_ssrf_guard_address_policy(ip: str, allowed: bool) -> None:
    assert address_allowed(ip, allow_private=False) is allowed


class Receiver:
    """A real HTTP endpoint that records what it gets; fails the first `fail` requests."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((dict(request.headers), body))
        self.arrived.set()
        if self.fail > 0:
            self.fail -= 1
            return web.Response(status=503)
        return web.Response(text="ok")


async def start_receiver(aiohttp_server: Any, receiver: Receiver) -> TestServer:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server: TestServer = await aiohttp_server(app)
    return server


async def hooked_project(
    client: TestClient[Any, Any], url: str, **extra: Any
) -> tuple[Account, str, dict[str, Any], dict[str, str]]:
    owner = await sign_up(client)
    pid = (await owner.project())["id"]
    resp = await client.post(f"/v1/projects/{pid}/webhooks", headers=owner.h(), json={"url": url, **extra})
    assert resp.status == 201, await resp.text()
    hook = await resp.json()
    return owner, pid, hook, {"Authorization": f"Bearer {await owner.key(pid)}"}


async def wait_for(predicate: Any) -> None:
    async with asyncio.timeout(5.0):
        while not predicate():  # noqa: ASYNC110 - polls state another server task changes
            await asyncio.sleep(0.02)


async def test_lead_scored_is_delivered_signed(make_client: ClientFactory, aiohttp_server: Any) -> None:
    receiver = Receiver()
    srv = await start_receiver(aiohttp_server, receiver)
    client = await make_client(webhook_allow_private=True, webhook_poll_s=0.05)
    _, _, hook, auth = await hooked_project(
        client, f"http://127.0.0.1:{srv.port}/hook", decisions=["blocked"]
    )
    assert hook["secret"].startswith("whsec_")
    await client.post("/v1/ingest", json=GOOD, headers=auth)  # allowed: filtered out
    verdict = await (await client.post("/v1/ingest", json=SPAM, headers=auth)).json()
    await wait_for(lambda: receiver.received)
    await asyncio.sleep(0.2)
    assert len(receiver.received) == 1
    headers, body = receiver.received[0]
    lowered = {k.lower(): v for k, v in headers.items()}
    assert verify(hook["secret"], lowered, body)
    payload = json.loads(body)
    assert payload["type"] == "lead.scored"
    assert payload["data"]["traceId"] == verdict["traceId"]
    assert payload["data"]["decision"] == "blocked"


async def test_failed_delivery_is_retried_logged_and_redeliverable(
    make_client: ClientFactory, aiohttp_server: Any
) -> None:
    receiver = Receiver(fail=1)
    srv = await start_receiver(aiohttp_server, receiver)
    client = await make_client(webhook_allow_private=True, webhook_poll_s=0.05, webhook_backoff_s=[1, 1])
    owner, pid, hook, auth = await hooked_project(client, f"http://127.0.0.1:{srv.port}/hook")
    await client.post("/v1/ingest", json=GOOD, headers=auth)
    await wait_for(lambda: len(receiver.received) >= 2)
    url = f"/v1/projects/{pid}/webhooks/{hook['id']}/deliveries"

    async def deliveries() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = (await (await client.get(url)).json())["deliveries"]
        return out

    for _ in range(100):
        (delivery,) = await deliveries()
        if delivery["status"] == "delivered":
            break
        await asyncio.sleep(0.05)
    assert delivery["attempts"] == 2 and delivery["lastStatusCode"] == 200
    assert [a["statusCode"] for a in delivery["log"]] == [503, 200]
    assert all(a["responseMs"] is not None for a in delivery["log"])
    # The retry carried the same message id (receivers dedupe on it).
    assert receiver.received[0][0]["webhook-id"] == receiver.received[1][0]["webhook-id"]
    resp = await client.post(f"{url}/{delivery['id']}/redeliver", headers=owner.h())
    assert resp.status == 202
    await wait_for(lambda: len(receiver.received) >= 3)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "https://127.0.0.1/hook",
        "https://[::1]/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.8/",
        "ftp://example.com/",
        "https://user:pw@example.com/",
        "http://example.com/plain-http",
        "not a url",
        42,
    ],
)
async def test_webhook_urls_to_private_targets_are_refused(
    client: TestClient[Any, Any], owner: Account, url: Any
) -> None:
    pid = (await owner.project())["id"]
    resp = await client.post(f"/v1/projects/{pid}/webhooks", headers=owner.h(), json={"url": url})
    assert resp.status == 400
    assert (await api_error(resp))["code"] == "invalid_url"


async def test_hostname_resolving_to_loopback_is_refused_at_delivery(
    make_client: ClientFactory, aiohttp_server: Any
) -> None:
    receiver = Receiver()
    srv = await start_receiver(aiohttp_server, receiver)
    client = await make_client(webhook_poll_s=0.05, webhook_backoff_s=[60])
    _, pid, hook, auth = await hooked_project(client, f"https://localhost:{srv.port}/hook")
    await client.post("/v1/ingest", json=GOOD, headers=auth)
    url = f"/v1/projects/{pid}/webhooks/{hook['id']}/deliveries"
    for _ in range(100):
        (delivery,) = (await (await client.get(url)).json())["deliveries"]
        if delivery["attempts"]:
            break
        await asyncio.sleep(0.05)
    assert delivery["status"] == "pending" and "refused" in delivery["lastError"]
    assert receiver.received == []


async def test_credits_low_event_fires_once(make_client: ClientFactory, aiohttp_server: Any) -> None:
    receiver = Receiver()
    srv = await start_receiver(aiohttp_server, receiver)
    client = await make_client(
        webhook_allow_private=True, webhook_poll_s=0.05, initial_credits=5, low_credit_threshold=3
    )
    _, _, _, auth = await hooked_project(client, f"http://127.0.0.1:{srv.port}/hook", events=["credits.low"])
    for _ in range(4):
        await client.post("/v1/ingest", json=GOOD, headers=auth)
    await wait_for(lambda: receiver.received)
    await asyncio.sleep(0.2)
    assert len(receiver.received) == 1
    payload = json.loads(receiver.received[0][1])
    assert payload["type"] == "credits.low" and payload["data"] == {"balance": 3, "threshold": 3}
