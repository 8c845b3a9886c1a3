"""Edge endpoints for proxies: versioned config with ETag/304, idempotent event batches."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.control_api.conftest import Account, ClientFactory, api_error, sign_up


def event(n: int, **overrides: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "traceId": f"tr_edge_{n:06d}",
        "siteId": "site1",
        "projectId": "",
        "formId": "contact",
        "leadId": f"lead-{n}",
        "receivedAt": "2026-11-20T10:00:00Z",
        "mode": "enforce",
        "action": "forwarded",
        "ip": "81.2.69.160",
        "email": f"u{n}@example.com",
        "userAgent": "Mozilla/5.0",
        "pageUrl": "https://shop.example/contact",
        "verdict": {
            "traceId": f"tr_edge_{n:06d}",
            "score": 10,
            "decision": "allowed",
            "labels": ["free_email"],
            "hits": [],
            "countryHint": "GB",
            "degraded": False,
            "elapsedUs": 100,
            "isTest": False,
        },
        "isTest": False,
    }
    ev.update(overrides)
    return ev


async def edge_setup(client: TestClient[Any, Any]) -> tuple[Account, str, dict[str, str]]:
    owner = await sign_up(client)
    project = await owner.project()
    token = await owner.key(project["id"], "edge")
    return owner, project["id"], {"Authorization": f"Bearer {token}"}


async def test_edge_config_is_versioned_with_etag_and_304(client: TestClient[Any, Any]) -> None:
    owner, pid, auth = await edge_setup(client)
    resp = await client.get("/v1/edge/config", headers=auth)
    assert resp.status == 200
    config = await resp.json()
    assert config["projectId"] == pid and config["version"] == 1
    assert config["mode"] == "enforce" and config["thresholds"] == {"block": 70, "review": 40}
    assert set(config["scoring"]) == {"disabled_rules", "custom_rules", "lists", "velocity", "min_fill_ms"}
    assert config["outOfCreditsPolicy"] == "forward" and config["creditsExhausted"] is False
    etag = resp.headers["ETag"]
    again = await client.get("/v1/edge/config", headers={**auth, "If-None-Match": etag})
    assert again.status == 304 and again.headers["ETag"] == etag
    patch = await client.patch(
        f"/v1/projects/{pid}",
        headers=owner.h(),
        json={
            "thresholds": {"block": 80, "review": 50},
            "mode": "monitor",
            "flags": {"block_disposable_email": True},
            "outOfCreditsPolicy": "block",
        },
    )
    assert patch.status == 200, await patch.text()
    changed = await client.get("/v1/edge/config", headers={**auth, "If-None-Match": etag})
    assert changed.status == 200 and changed.headers["ETag"] != etag
    new = await changed.json()
    assert new["version"] == 2 and new["mode"] == "monitor"
    assert new["thresholds"] == {"block": 80, "review": 50}
    assert new["flags"] == {"block_disposable_email": True}
    assert new["outOfCreditsPolicy"] == "block"


async def test_edge_batch_is_stored_charged_and_replay_safe(client: TestClient[Any, Any]) -> None:
    owner, pid, auth = await edge_setup(client)
    live = {"Authorization": f"Bearer {await owner.key(pid)}"}
    before = (await (await client.get("/v1/credits", headers=live)).json())["balance"]
    batch = {"batchId": "b-1", "events": [event(i) for i in range(5)] + [event(99, isTest=True)]}
    headers = {**auth, "Idempotency-Key": "spool-b-1"}
    resp = await client.post("/v1/edge/events", json=batch, headers=headers)
    assert resp.status == 200, await resp.text()
    out = await resp.json()
    assert (out["accepted"], out["duplicates"], out["charged"], out["rejected"]) == (6, 0, 5, [])
    replay = await client.post("/v1/edge/events", json=batch, headers=headers)
    assert replay.status == 200 and await replay.json() == out
    # The same events under a new key (a spool that lost its bookkeeping): nothing charged twice.
    resent = await client.post(
        "/v1/edge/events", json=batch, headers={**auth, "Idempotency-Key": "spool-b-1-again"}
    )
    assert (await resent.json())["duplicates"] == 6 and (await resent.json())["charged"] == 0
    after = (await (await client.get("/v1/credits", headers=live)).json())["balance"]
    assert after == before - 5
    listed = await (await client.get("/v1/events?limit=500", headers=live)).json()
    assert len(listed["events"]) == 6
    assert {e["source"] for e in listed["events"]} == {"edge"}


async def test_edge_batch_reports_bad_events_and_keeps_good_ones(client: TestClient[Any, Any]) -> None:
    _, _, auth = await edge_setup(client)
    batch = {
        "batchId": "b-2",
        "events": [
            event(1),
            event(2, receivedAt="yesterday"),
            event(3, projectId="prj_someone_else"),
            event(4, verdict={"decision": "maybe", "score": 500}),
            "not an object",
            event(5, email=["a"]),
            event(6, extra=1),
        ],
    }
    resp = await client.post("/v1/edge/events", json=batch, headers={**auth, "Idempotency-Key": "k2"})
    out = await resp.json()
    assert out["accepted"] == 1
    rejected = {r["index"]: r["errors"] for r in out["rejected"]}
    assert set(rejected) == {1, 2, 3, 4, 5, 6}
    assert "receivedAt" in rejected[1] and "projectId" in rejected[2]
    assert {"verdict.decision", "verdict.score"} <= set(rejected[3])
    assert "extra" in rejected[6]


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        ({"batchId": "x", "events": []}, {}, 400, "missing_idempotency_key"),
        ({"events": []}, {"Idempotency-Key": "k"}, 400, "invalid_batch"),
        ({"batchId": "x", "events": {}}, {"Idempotency-Key": "k"}, 400, "invalid_batch"),
        ({"batchId": "x", "events": [{}] * 6001}, {"Idempotency-Key": "k"}, 400, "invalid_batch"),
        ([], {"Idempotency-Key": "k"}, 400, "invalid_body"),
    ],
)
async def test_edge_batch_envelope_errors(
    client: TestClient[Any, Any], body: Any, headers: dict[str, str], status: int, code: str
) -> None:
    _, _, auth = await edge_setup(client)
    resp = await client.post("/v1/edge/events", json=body, headers={**auth, **headers})
    assert resp.status == status
    assert (await api_error(resp))["code"] == code


async def test_edge_batch_when_credits_run_out_stores_all_and_charges_what_is_left(
    make_client: ClientFactory,
) -> None:
    client = await make_client(initial_credits=3)
    _, _, auth = await edge_setup(client)
    resp = await client.post(
        "/v1/edge/events",
        json={"batchId": "b", "events": [event(i) for i in range(5)]},
        headers={**auth, "Idempotency-Key": "k"},
    )
    out = await resp.json()
    assert (out["accepted"], out["charged"], out["uncharged"]) == (5, 3, 2)
    assert out["creditsExhausted"] is True
    config = await (await client.get("/v1/edge/config", headers=auth)).json()
    assert config["creditsExhausted"] is True


async def test_parallel_replays_of_one_batch_charge_once(client: TestClient[Any, Any]) -> None:
    owner, pid, auth = await edge_setup(client)
    live = {"Authorization": f"Bearer {await owner.key(pid)}"}
    before = (await (await client.get("/v1/credits", headers=live)).json())["balance"]
    batch = {"batchId": "b", "events": [event(i) for i in range(20)]}
    results = await asyncio.gather(
        *(
            client.post("/v1/edge/events", json=batch, headers={**auth, "Idempotency-Key": "same"})
            for _ in range(8)
        )
    )
    assert all(r.status == 200 for r in results)
    after = (await (await client.get("/v1/credits", headers=live)).json())["balance"]
    assert before - after == 20


async def test_large_batch_is_stored_in_chunks_and_charged_exactly(client: TestClient[Any, Any]) -> None:
    owner, pid, auth = await edge_setup(client)
    live = {"Authorization": f"Bearer {await owner.key(pid)}"}
    before = (await (await client.get("/v1/credits", headers=live)).json())["balance"]
    first = [event(i) for i in range(300)]
    # A first attempt that got only part of the way (as if the process died after a chunk).
    await client.post(
        "/v1/edge/events",
        json={"batchId": "big", "events": first},
        headers={**auth, "Idempotency-Key": "partial"},
    )
    batch = {"batchId": "big", "events": first + [event(i) for i in range(300, 600)]}
    resp = await client.post("/v1/edge/events", json=batch, headers={**auth, "Idempotency-Key": "big-1"})
    out = await resp.json()
    assert (out["accepted"], out["duplicates"], out["charged"]) == (300, 300, 300)
    after = (await (await client.get("/v1/credits", headers=live)).json())["balance"]
    assert before - after == 600


async def test_reused_batch_key_with_other_events_is_processed_not_refused(
    client: TestClient[Any, Any],
) -> None:
    _, _, auth = await edge_setup(client)
    headers = {**auth, "Idempotency-Key": "segment-7"}
    first = await client.post(
        "/v1/edge/events", json={"batchId": "s7", "events": [event(1)]}, headers=headers
    )
    assert (await first.json())["accepted"] == 1
    other = await client.post(
        "/v1/edge/events", json={"batchId": "s7", "events": [event(1), event(2)]}, headers=headers
    )
    assert other.status == 200
    out = await other.json()
    assert (out["accepted"], out["duplicates"], out["charged"]) == (1, 1, 1)
