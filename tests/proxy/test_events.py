"""Reporting: durable spool, batched idempotent shipping, outages and crashes lose nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from proxy.events import Spool
from tests.proxy.conftest import MakeProxy, site_config
from tests.proxy.controlapi import BATCHES, CALLS, FAIL, TOKEN, all_events, control_api_app
from tests.services import free_port

SPAM = "email=bot%40mailinator.com&message=hi"


async def post_n(proxy: TestServer, n: int, body: str = SPAM) -> list[int]:
    out = []
    async with aiohttp.ClientSession() as s:
        for i in range(n):
            async with s.post(
                f"http://127.0.0.1:{proxy.port}/contact", data=f"{body}&i={i}",
                headers={"Host": "site.test",
                         "Content-Type": "application/x-www-form-urlencoded"},
            ) as r:
                out.append(r.status)
    return out


def link(url: str, **extra: Any) -> dict[str, Any]:
    return {"url": url, "edge_token": TOKEN, "flush_interval_s": 0.05, "max_backoff_s": 0.2,
            "timeout_s": 2, **extra}


async def wait_for(predicate: Any, wait_s: float = 10.0) -> None:
    """Poll `predicate` (state owned by another server, so no event to wait on)."""
    async with asyncio.timeout(wait_s):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_events_are_shipped_in_idempotent_batches(
    origin: TestServer, make_proxy: MakeProxy
) -> None:
    api = TestServer(control_api_app(), host="127.0.0.1")
    await api.start_server()
    try:
        proxy = await make_proxy([site_config(str(origin.make_url("")))],
                                 control_api=link(str(api.make_url("")), batch_max_events=3))
        assert await post_n(proxy, 7) == [403] * 7
        await wait_for(lambda: len(all_events(api.app)) == 7)
        assert len(api.app[BATCHES]) >= 3  # at most 3 events per batch
        assert all(len(evs) <= 3 for evs in api.app[BATCHES].values())
        ev = all_events(api.app)[0]
        assert set(ev) == {"traceId", "siteId", "projectId", "formId", "leadId", "receivedAt",
                           "mode", "action", "ip", "email", "userAgent", "pageUrl", "verdict",
                           "isTest"}
        assert ev["verdict"]["decision"] == "blocked"
        assert len({e["traceId"] for e in all_events(api.app)}) == 7
    finally:
        await api.close()


async def test_outage_then_recovery_loses_nothing_and_counts_once(
    origin: TestServer, make_proxy: MakeProxy
) -> None:
    api = TestServer(control_api_app(), host="127.0.0.1")
    await api.start_server()
    api.app[FAIL].append(503)
    try:
        proxy = await make_proxy([site_config(str(origin.make_url("")))],
                                 control_api=link(str(api.make_url(""))))
        await post_n(proxy, 5)
        await wait_for(lambda: len(api.app[CALLS]) >= 3)  # refused, retried with backoff
        assert all_events(api.app) == []
        api.app[FAIL][:] = [599]  # stored, but the answer never arrives
        await wait_for(lambda: len(api.app[BATCHES]) >= 1)
        api.app[FAIL].clear()
        await wait_for(lambda: len(all_events(api.app)) == 5)
        await asyncio.sleep(0.3)
        assert len(all_events(api.app)) == 5
        # the very same batch id was sent again after the lost answer
        ids = api.app[CALLS]
        assert len(set(ids)) < len(ids)
    finally:
        await api.close()


async def test_control_api_unreachable_keeps_events_in_spool(
    origin: TestServer, make_proxy: MakeProxy, tmp_path: Path
) -> None:
    port = free_port()
    proxy = await make_proxy([site_config(str(origin.make_url("")))],
                             control_api=link(f"http://127.0.0.1:{port}"),
                             state_dir=str(tmp_path / "s"))
    await post_n(proxy, 4)
    await asyncio.sleep(0.3)
    spool = tmp_path / "s" / "spool" / "w0"
    lines = [ln for p in spool.iterdir() for ln in p.read_bytes().splitlines()]
    assert len(lines) == 4
    assert all(json.loads(ln)["action"] == "blocked" for ln in lines)


def test_spool_recovers_open_segments_after_a_crash(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_events=100)
    for i in range(3):
        spool.append({"traceId": f"t{i}"})
    # no seal, no close: the process "died" here. A torn last line from a power cut is skipped.
    open_file = next(tmp_path.glob("*.open"))
    with open_file.open("ab") as fh:
        fh.write(b'{"traceId": "t')
    again = Spool(tmp_path, max_events=100)
    ready = again.ready()
    assert [p.suffix for p in ready] == [".ready"]
    assert [e["traceId"] for e in Spool.read(ready[0])] == ["t0", "t1", "t2"]


def test_worker_zero_adopts_segments_of_retired_workers(tmp_path: Path) -> None:
    old = Spool(tmp_path / "w5", max_events=10)
    old.append({"traceId": "t-old"})  # worker 5 died (or workers went from 6 to 2)
    new = Spool(tmp_path / "w0", max_events=10)
    assert new.adopt([tmp_path / "w5"]) == 1
    assert [e["traceId"] for p in new.ready() for e in Spool.read(p)] == ["t-old"]
