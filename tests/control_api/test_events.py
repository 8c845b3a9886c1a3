"""Events: filters, cursor pages, export (CSV / JSON lines), erasure, retention purge, usage."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.control_api.conftest import Account, ClientFactory, api_error, sign_up
from tests.control_api.test_edge import event


async def seeded(client: TestClient[Any, Any], n: int = 12) -> tuple[Account, str, dict[str, str]]:
    """`n` events via an edge batch: alternating decisions, two forms, hours apart."""
    owner = await sign_up(client)
    pid = (await owner.project())["id"]
    edge = {"Authorization": f"Bearer {await owner.key(pid, 'edge')}", "Idempotency-Key": "seed"}
    events = []
    for i in range(n):
        decision = ("allowed", "review", "blocked")[i % 3]
        events.append(
            event(
                i,
                receivedAt=f"2026-11-{10 + i // 6:02d}T{i % 24:02d}:00:00Z",
                formId="signup" if i % 2 else "contact",
                email='=HYPERLINK("http://x")@evil.example' if i == 0 else f"u{i}@example.com",
                verdict={
                    "score": 10 * (i % 3) * 4,
                    "decision": decision,
                    "labels": ["tor_exit"] if decision == "blocked" else [],
                },
            )
        )
    resp = await client.post("/v1/edge/events", json={"batchId": "seed", "events": events}, headers=edge)
    assert (await resp.json())["accepted"] == n
    return owner, pid, {"Authorization": f"Bearer {await owner.key(pid)}"}


async def test_filters_and_cursor_pagination(client: TestClient[Any, Any]) -> None:
    _, _, auth = await seeded(client)
    seen: list[str] = []
    url: str | None = "/v1/events?limit=5"
    while url:
        page = await (await client.get(url, headers=auth)).json()
        seen += [e["traceId"] for e in page["events"]]
        url = f"/v1/events?limit=5&cursor={page['next']}" if page["next"] else None
    assert len(seen) == len(set(seen)) == 12
    assert seen[0] == "tr_edge_000011"  # newest first

    async def count(query: str) -> int:
        resp = await client.get(f"/v1/events?{query}", headers=auth)
        assert resp.status == 200, await resp.text()
        return len((await resp.json())["events"])

    assert await count("decision=blocked") == 4
    assert await count("label=tor_exit") == 4
    assert await count("formId=signup") == 6
    assert await count("email=U3@example.com") == 1
    assert await count("leadId=lead-7") == 1
    assert await count("from=2026-11-11T00:00:00Z") == 6
    assert await count("from=2026-11-10T00:00:00Z&to=2026-11-10T03:00:00Z") == 3


@pytest.mark.parametrize(
    "query",
    [
        "decision=maybe",
        "limit=0",
        "limit=501",
        "limit=abc",
        "cursor=%%%",
        "cursor=bm9wZQ",
        "from=yesterday",
        "from=2026-11-10T00:00:00",
        "colour=red",
        "email=" + "x" * 3000,
    ],
)
async def test_bad_event_queries_are_400(client: TestClient[Any, Any], query: str) -> None:
    _, _, auth = await seeded(client, 1)
    resp = await client.get(f"/v1/events?{query}", headers=auth)
    assert resp.status == 400
    body = await api_error(resp)
    assert body["code"] == "invalid_query" and body["details"]


async def test_get_unknown_event_is_404(client: TestClient[Any, Any]) -> None:
    _, _, auth = await seeded(client, 1)
    resp = await client.get("/v1/events/tr_nope", headers=auth)
    assert resp.status == 404 and (await api_error(resp))["code"] == "not_found"


async def test_export_csv_and_jsonl_are_streamed_complete_and_formula_safe(
    client: TestClient[Any, Any],
) -> None:
    owner, _, auth = await seeded(client)
    resp = await client.get("/v1/events/export?format=csv", headers=auth)
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
    assert "Content-Length" not in resp.headers  # streamed
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert len(rows) == 12
    injected = next(r for r in rows if r["traceId"] == "tr_edge_000000")
    assert injected["email"].startswith("'=")
    resp = await client.get("/v1/events/export?format=jsonl&decision=review", headers=auth)
    lines = [json.loads(x) for x in (await resp.text()).splitlines()]
    assert len(lines) == 4 and {x["decision"] for x in lines} == {"review"}
    assert (await client.get("/v1/events/export?format=xml", headers=auth)).status == 400
    actions = [e["action"] for e in (await (await client.get("/v1/audit")).json())["entries"]]
    assert actions.count("events.exported") == 2
    del owner


async def test_erasure_by_email_and_lead_id_is_audited_without_the_address(
    client: TestClient[Any, Any],
) -> None:
    _, _, auth = await seeded(client)
    resp = await client.post("/v1/erasure", json={"email": "U4@example.com"}, headers=auth)
    assert (await resp.json())["deleted"] == 1
    resp = await client.post("/v1/erasure", json={"leadId": "lead-5"}, headers=auth)
    assert (await resp.json())["deleted"] == 1
    assert len((await (await client.get("/v1/events?limit=50", headers=auth)).json())["events"]) == 10
    entries = (await (await client.get("/v1/audit")).json())["entries"]
    erased = [e for e in entries if e["action"] == "events.erased"]
    assert len(erased) == 2 and erased[-1]["actor"].startswith("key:")
    assert "u4@example.com" not in json.dumps(entries)
    for bad in ({}, {"email": "a@b.c", "leadId": "x"}, {"email": 5}, {"leadId": ""}):
        assert (await client.post("/v1/erasure", json=bad, headers=auth)).status == 400


async def test_retention_purge_deletes_old_events(make_client: ClientFactory) -> None:
    client = await make_client(purge_interval_s=1)
    owner = await sign_up(client)
    pid = (await owner.project())["id"]
    edge = {"Authorization": f"Bearer {await owner.key(pid, 'edge')}", "Idempotency-Key": "r"}
    now = datetime.now(UTC)
    old = [event(i, receivedAt=(now - timedelta(days=3)).isoformat()) for i in range(3)]
    new = [event(9, receivedAt=(now - timedelta(hours=1)).isoformat())]
    await client.post("/v1/edge/events", json={"batchId": "r", "events": old + new}, headers=edge)
    auth = {"Authorization": f"Bearer {await owner.key(pid)}"}
    assert len((await (await client.get("/v1/events", headers=auth)).json())["events"]) == 4
    await client.patch(f"/v1/projects/{pid}", json={"retentionDays": 2}, headers=owner.h())
    for _ in range(100):  # the scheduled job runs every second here
        left = (await (await client.get("/v1/events", headers=auth)).json())["events"]
        if len(left) == 1:
            break
        await asyncio.sleep(0.05)
    assert [e["traceId"] for e in left] == ["tr_edge_000009"]


async def test_usage_per_day(client: TestClient[Any, Any]) -> None:
    _, pid, auth = await seeded(client)
    resp = await client.get("/v1/usage?from=2026-11-01T00:00:00Z", headers=auth)
    days = (await resp.json())["days"]
    assert [d["day"] for d in days] == ["2026-11-10", "2026-11-11"]
    first = days[0]
    assert first["projectId"] == pid
    assert (first["scored"], first["allowed"], first["review"], first["blocked"]) == (6, 2, 2, 2)
    assert first["byLabel"] == {"tor_exit": 2}


async def test_export_spans_many_pages(client: TestClient[Any, Any]) -> None:
    owner = await sign_up(client)
    pid = (await owner.project())["id"]
    edge = {"Authorization": f"Bearer {await owner.key(pid, 'edge')}", "Idempotency-Key": "many"}
    await client.post(
        "/v1/edge/events", json={"batchId": "many", "events": [event(i) for i in range(1234)]}, headers=edge
    )
    auth = {"Authorization": f"Bearer {await owner.key(pid)}"}
    text = await (await client.get("/v1/events/export?format=jsonl", headers=auth)).text()
    ids = [json.loads(line)["traceId"] for line in text.splitlines()]
    assert len(ids) == len(set(ids)) == 1234
