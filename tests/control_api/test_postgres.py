"""The same control API on a real PostgreSQL server: accounts, ingest, credits under parallel
load from two app instances (two connections), edge replay, events, usage, erasure, tenancy."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from tests.control_api.conftest import ClientFactory, sign_up
from tests.control_api.test_edge import event
from tests.control_api.test_ingest import SPAM
from tests.control_api.test_keys import GOOD


async def test_full_flow_on_postgres(make_client: ClientFactory, pg_url: str, aiohttp_client: Any) -> None:
    client = await make_client(db=pg_url)
    owner = await sign_up(client)
    pid = (await owner.project())["id"]
    auth = {"Authorization": f"Bearer {await owner.key(pid)}"}
    edge = {"Authorization": f"Bearer {await owner.key(pid, 'edge')}"}

    blocked = await (
        await client.post(
            "/v1/ingest", json={**SPAM, "leadId": "L1"}, headers={**auth, "Idempotency-Key": "k1"}
        )
    ).json()
    again = await client.post(
        "/v1/ingest", json={**SPAM, "leadId": "L1"}, headers={**auth, "Idempotency-Key": "k1"}
    )
    assert (await again.json())["traceId"] == blocked["traceId"]
    await client.post("/v1/ingest", json=GOOD, headers=auth)
    batch = {"batchId": "b", "events": [event(i) for i in range(300)]}
    out = await (
        await client.post("/v1/edge/events", json=batch, headers={**edge, "Idempotency-Key": "b"})
    ).json()
    assert (out["accepted"], out["charged"]) == (300, 300)
    resent = await (
        await client.post("/v1/edge/events", json=batch, headers={**edge, "Idempotency-Key": "b2"})
    ).json()
    assert (resent["duplicates"], resent["charged"]) == (300, 0)

    credits = await (await client.get("/v1/credits", headers=auth)).json()
    assert credits["balance"] == 1000 - 2 - 300 and credits["used"] == 302

    labelled = await (await client.get("/v1/events?label=disposable_email", headers=auth)).json()
    assert [e["traceId"] for e in labelled["events"]] == [blocked["traceId"]]
    page = await (await client.get("/v1/events?limit=100", headers=auth)).json()
    assert len(page["events"]) == 100 and page["next"]
    usage = (await (await client.get("/v1/usage?from=2026-01-01T00:00:00Z", headers=auth)).json())["days"]
    assert sum(d["scored"] for d in usage) == 302
    assert any("free_email" in d["byLabel"] for d in usage)
    erased = await client.post("/v1/erasure", json={"leadId": "L1"}, headers=auth)
    assert (await erased.json())["deleted"] == 1

    other: TestClient[Any, Any] = await aiohttp_client(client.server)
    mallory = await sign_up(other, "mallory@example.com")
    assert (await other.get(f"/v1/projects/{pid}")).status == 404
    assert (await other.get("/v1/events")).status == 200
    del mallory


async def test_parallel_debits_from_two_instances_never_overdraw(
    make_client: ClientFactory, pg_url: str
) -> None:
    first = await make_client(db=pg_url, initial_credits=60)
    second = await make_client(db=pg_url)  # a second app: its own connection and thread
    owner = await sign_up(first)
    auth = {"Authorization": f"Bearer {await owner.key((await owner.project())['id'])}"}
    responses = await asyncio.gather(
        *((first if i % 2 else second).post("/v1/ingest", json=GOOD, headers=auth) for i in range(150))
    )
    statuses = [r.status for r in responses]
    assert statuses.count(200) == 60 and statuses.count(402) == 90
    credits = await (await first.get("/v1/credits", headers=auth)).json()
    assert credits["balance"] == 0 and credits["used"] == 60
    events = await (await first.get("/v1/events?limit=500", headers=auth)).json()
    assert sum(e["charged"] for e in events["events"]) == 60


async def test_data_survives_restart_on_postgres(make_client: ClientFactory, pg_url: str) -> None:
    client = await make_client(db=pg_url)
    owner = await sign_up(client)
    key = await owner.key((await owner.project())["id"])
    verdict = await (
        await client.post("/v1/ingest", json=GOOD, headers={"Authorization": f"Bearer {key}"})
    ).json()
    await client.close()
    restarted = await make_client(db=pg_url)
    resp = await restarted.get(f"/v1/events/{verdict['traceId']}", headers={"Authorization": f"Bearer {key}"})
    assert resp.status == 200


async def test_two_instances_deliver_each_webhook_once(
    make_client: ClientFactory, pg_url: str, aiohttp_server: Any
) -> None:
    from tests.control_api.test_webhooks import Receiver, start_receiver

    receiver = Receiver()
    srv = await start_receiver(aiohttp_server, receiver)
    opts = {"db": pg_url, "webhook_allow_private": True, "webhook_poll_s": 0.05}
    first, second = await make_client(**opts), await make_client(**opts)
    owner = await sign_up(first)
    pid = (await owner.project())["id"]
    await first.post(
        f"/v1/projects/{pid}/webhooks", headers=owner.h(), json={"url": f"http://127.0.0.1:{srv.port}/hook"}
    )
    auth = {"Authorization": f"Bearer {await owner.key(pid)}"}
    await asyncio.gather(*(c.post("/v1/ingest", json=GOOD, headers=auth) for c in [first, second] * 10))
    async with asyncio.timeout(10):
        while len(receiver.received) < 20:  # noqa: ASYNC110 - polls the receiver's state
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # any duplicate would arrive by now
    ids = [headers["webhook-id"] for headers, _ in receiver.received]
    assert len(ids) == len(set(ids)) == 20


async def test_racing_sign_ups_on_two_instances_create_one_account(
    make_client: ClientFactory, pg_url: str
) -> None:
    first, second = await make_client(db=pg_url), await make_client(db=pg_url)
    answers = await asyncio.gather(
        *(
            (first if i % 2 else second).post(
                "/v1/accounts", json={"email": "race@example.com", "password": f"password {i:04d}"}
            )
            for i in range(8)
        )
    )
    assert [a.status for a in answers] == [202] * 8
    signed_in = [
        (
            await first.post(
                "/v1/session", json={"email": "race@example.com", "password": f"password {i:04d}"}
            )
        ).status
        for i in range(8)
    ]
    assert sorted(signed_in) == [200] + [401] * 7  # one account, with the winner's password
