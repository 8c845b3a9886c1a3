"""The proxy follows its project's config from the real control API: mode, thresholds, flags and
the out-of-credits policy, with the header that says so."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from control_api.app import create_app
from tests.control_api.conftest import Account, db_rows, make_settings, shared_engine, sign_up
from tests.proxy.conftest import MakeProxy, echoed, header_values, site_config
from tests.proxy.test_forms import good_form, post

BOT_FORM = "email=x%40mailinator.com&message=cheap+viagra+http%3A%2F%2Fspam.example"


@pytest.fixture
async def control(aiohttp_client: Any, tmp_path: Path) -> dict[str, Any]:
    settings = make_settings(tmp_path / "api", initial_credits=1000)
    (tmp_path / "api").mkdir()
    client = await aiohttp_client(create_app(settings, engine=shared_engine()))
    owner = await sign_up(client)
    project = await owner.project()
    edge = await owner.key(project["id"], kind="edge")
    return {"client": client, "owner": owner, "project": project, "edge": edge,
            "url": str(client.make_url("/")).rstrip("/"), "db": settings.db}


async def connected_proxy(make_proxy: MakeProxy, origin: TestServer,
                          control: dict[str, Any]) -> TestServer:
    site = site_config(str(origin.make_url("")), project_id=control["project"]["id"])
    return await make_proxy([site], trusted_proxies=["127.0.0.0/8"], control_api={
        "url": control["url"], "edge_token": control["edge"], "config_poll_s": 0.1,
        "flush_interval_s": 0.1})


async def patch(owner: Account, project_id: str, body: dict[str, Any]) -> None:
    resp = await owner.client.patch(f"/v1/projects/{project_id}", json=body, headers=owner.h())
    assert resp.status == 200, await resp.text()


async def until(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_dashboard_mode_thresholds_and_flags_reach_the_proxy(
        origin: TestServer, make_proxy: MakeProxy, control: dict[str, Any]) -> None:
    proxy = await connected_proxy(make_proxy, origin, control)
    status, _, _ = await post(proxy, "/contact", BOT_FORM, **{"User-Agent": "curl/8.5"})
    assert status == 403  # enforce by default

    await patch(control["owner"], control["project"]["id"], {"mode": "monitor"})

    async def forwarded() -> bool:
        status, _, body = await post(proxy, "/contact", BOT_FORM, **{"User-Agent": "curl/8.5"})
        return status == 200 and header_values(echoed(body), "X-Activelead-Decision") == [
            "blocked"]
    await until(forwarded)  # monitor: forwarded, and the origin is told it would be blocked

    await patch(control["owner"], control["project"]["id"], {
        "mode": "enforce", "flags": {"block_disposable_email": True}})
    person_with_disposable = good_form(email="anna@mailinator.com")

    async def blocked() -> bool:
        status, _, _ = await post(proxy, "/contact", person_with_disposable)
        return status == 403
    await until(blocked)  # the flag from the dashboard made the engine block it


async def test_out_of_credits_follows_the_policy_and_says_so(
        origin: TestServer, make_proxy: MakeProxy, control: dict[str, Any]) -> None:
    account_id = control["owner"].account_id
    # spend the balance the way an operator would see it: the ledger says zero
    from control_api import credits
    from control_api.db import Database

    db = Database(control["db"])
    try:
        db.run_sync(lambda conn: credits.add_entry(conn, account_id, "usage", -1000,
                                                   note="test: drain"))
    finally:
        db.close_sync()
    assert db_rows(control["db"], "SELECT balance FROM credit_balances WHERE account_id = ?",
                   account_id) == [(0,)]
    proxy = await connected_proxy(make_proxy, origin, control)

    async def exhausted_forward() -> bool:
        status, _, body = await post(proxy, "/contact", BOT_FORM, **{"User-Agent": "curl/8.5"})
        return status == 200 and header_values(echoed(body), "X-Activelead-Credits") == [
            "exhausted; policy=forward"]
    await until(exhausted_forward)  # policy forward: nothing is blocked, and the origin knows why

    await patch(control["owner"], control["project"]["id"], {"outOfCreditsPolicy": "block"})

    async def exhausted_block() -> bool:
        status, headers, _ = await post(proxy, "/contact", good_form())
        return status == 403 and headers.get("X-Activelead-Credits") == "exhausted; policy=block"
    await until(exhausted_block)  # policy block: even a person's post is refused, saying why
