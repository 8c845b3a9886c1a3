"""One account can never read or change another's data (tried endpoint by endpoint)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from control_api.keys import parse_key
from tests.control_api.conftest import Account, api_error, sign_up
from tests.control_api.test_keys import GOOD


async def test_account_b_cannot_touch_account_a(
    client: TestClient[Any, Any], owner: Account, aiohttp_client: Any
) -> None:
    project = await owner.project("A's site")
    pid = project["id"]
    key_a = await owner.key(pid)
    _, key_id, _ = parse_key(key_a)
    hook = await client.post(
        f"/v1/projects/{pid}/webhooks", headers=owner.h(), json={"url": "https://hooks.example.com/a"}
    )
    hook_id = (await hook.json())["id"]
    scored = await (
        await client.post("/v1/ingest", json=GOOD, headers={"Authorization": f"Bearer {key_a}"})
    ).json()

    other = await aiohttp_client(client.server)
    b = await sign_up(other, "mallory@example.com")
    key_b = await b.key((await b.project())["id"])
    h = b.h()
    attempts = [
        other.get(f"/v1/projects/{pid}"),
        other.patch(f"/v1/projects/{pid}", json={"mode": "off"}, headers=h),
        other.delete(f"/v1/projects/{pid}", headers=h),
        other.get(f"/v1/projects/{pid}/keys"),
        other.post(f"/v1/projects/{pid}/keys", json={"name": "x"}, headers=h),
        other.delete(f"/v1/projects/{pid}/keys/{key_id}", headers=h),
        other.get(f"/v1/projects/{pid}/webhooks"),
        other.post(f"/v1/projects/{pid}/webhooks", json={"url": "https://x.example"}, headers=h),
        other.delete(f"/v1/projects/{pid}/webhooks/{hook_id}", headers=h),
        other.get(f"/v1/projects/{pid}/webhooks/{hook_id}/deliveries"),
        other.get(f"/v1/events?projectId={pid}"),
        other.get(f"/v1/events/{scored['traceId']}"),
        other.get(f"/v1/events/{scored['traceId']}", headers={"Authorization": f"Bearer {key_b}"}),
        other.post(
            "/v1/feedback",
            json={"traceId": scored["traceId"], "verdict": "spam"},
            headers={"Authorization": f"Bearer {key_b}"},
        ),
        other.get(f"/v1/events/export?projectId={pid}"),
        other.get(f"/v1/usage?projectId={pid}"),
    ]
    for attempt in attempts:
        resp = await attempt
        assert resp.status == 404, (resp.method, resp.url, resp.status, await resp.text())
        assert (await api_error(resp))["code"] == "not_found"

    # B's own listings show nothing of A's.
    assert [p["name"] for p in (await (await other.get("/v1/projects")).json())["projects"]] == ["site"]
    assert (await (await other.get("/v1/events")).json())["events"] == []
    erased = await other.post("/v1/erasure", json={"email": GOOD["email"]}, headers=h)
    assert (await erased.json())["deleted"] == 0

    # A's data is intact.
    resp = await client.get(f"/v1/projects/{pid}")
    assert resp.status == 200 and (await resp.json())["mode"] == "enforce"
    resp = await client.get(f"/v1/events/{scored['traceId']}", headers={"Authorization": f"Bearer {key_a}"})
    assert resp.status == 200 and (await resp.json())["feedback"] is None
