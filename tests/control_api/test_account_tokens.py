"""Account tokens (al_acct_…): management without a cookie, scoped, revocable, not all-powerful."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.control_api.conftest import Account, api_error, sign_up
from tests.control_api.test_keys import GOOD


async def test_account_token_manages_projects_without_cookie_or_csrf(
    client: TestClient[Any, Any], owner: Account, aiohttp_client: Any
) -> None:
    resp = await client.post("/v1/account/tokens", json={"name": "ci"}, headers=owner.h())
    assert resp.status == 201 and resp.headers["Cache-Control"] == "no-store"
    created = await resp.json()
    token = created["token"]
    assert token.startswith("al_acct_")
    bare = await aiohttp_client(client.server)  # no cookies at all
    auth = {"Authorization": f"Bearer {token}"}
    project = await bare.post("/v1/projects", json={"name": "from ci"}, headers=auth)
    assert project.status == 201
    pid = (await project.json())["id"]
    key = await bare.post(f"/v1/projects/{pid}/keys", json={"name": "k"}, headers=auth)
    assert key.status == 201
    assert (await bare.get("/v1/events", headers=auth)).status == 200
    assert "ledger" in await (await bare.get("/v1/credits", headers=auth)).json()
    # Not for: minting more tokens, changing the password, signing out.
    for method, path in (
        ("POST", "/v1/account/tokens"),
        ("POST", "/v1/account/password"),
        ("DELETE", "/v1/session"),
    ):
        resp = await bare.request(method, path, json={"name": "x"}, headers=auth)
        assert resp.status == 403, path
        assert (await api_error(resp))["code"] == "session_required"
    entries = (await (await client.get("/v1/audit")).json())["entries"]
    assert any(e["actor"] == f"token:{created['id']}" and e["action"] == "project.created" for e in entries)
    listed = (await (await client.get("/v1/account/tokens")).json())["tokens"]
    assert [t["id"] for t in listed] == [created["id"]] and token not in str(listed)
    # Revoked: refused at once.
    resp = await client.delete(f"/v1/account/tokens/{created['id']}", headers=owner.h())
    assert resp.status == 200
    resp = await bare.get("/v1/projects", headers=auth)
    assert resp.status == 401 and (await api_error(resp))["code"] == "invalid_key"


async def test_account_token_is_scoped_to_its_account_and_not_an_api_key(
    client: TestClient[Any, Any], owner: Account, aiohttp_client: Any
) -> None:
    pid_a = (await owner.project())["id"]
    other = await aiohttp_client(client.server)
    mallory = await sign_up(other, "mallory@example.com")
    token = (await (await other.post("/v1/account/tokens", json={}, headers=mallory.h())).json())["token"]
    auth = {"Authorization": f"Bearer {token}"}
    bare = await aiohttp_client(client.server)
    assert (await bare.get(f"/v1/projects/{pid_a}", headers=auth)).status == 404
    assert (await bare.get("/v1/projects", headers=auth)).status == 200
    resp = await bare.post("/v1/ingest", json=GOOD, headers=auth)
    assert resp.status == 403 and (await api_error(resp))["code"] == "wrong_key_kind"
    live = await owner.key(pid_a)
    resp = await bare.get("/v1/projects", headers={"Authorization": f"Bearer {live}"})
    assert resp.status == 403 and (await api_error(resp))["code"] == "wrong_key_kind"
