"""Reporting: durable spool, batched idempotent shipping to the real control API, outages and
lost answers lose nothing and charge nothing twice (checked through the control API's own read
API: `GET /v1/events` and `GET /v1/credits`)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.events import Spool, SpoolReporter
from tests.proxy.conftest import MakeProxy, site_config
from tests.proxy.controlplane import INITIAL_CREDITS, InProcessControlApi, Tenant, provision
from tests.proxy.faultrelay import FaultRelay
from tests.services import free_port

SPAM = "email=bot%40mailinator.com&message=hi"
WIRE_KEYS = {"traceId", "siteId", "projectId", "formId", "leadId", "receivedAt", "mode", "action",
             "ip", "email", "userAgent", "pageUrl", "verdict", "isTest", "scored"}


async def post_n(proxy_port: int, n: int, first: int = 0) -> list[tuple[int, str]]:
    """POST n spam submissions; (status, trace id) of each, as the visitor sees them."""
    out = []
    async with aiohttp.ClientSession() as s:
        for i in range(first, first + n):
            async with s.post(
                f"http://127.0.0.1:{proxy_port}/contact", data=f"{SPAM}&i={i}",
                headers={"Host": "site.test",
                         "Content-Type": "application/x-www-form-urlencoded"},
            ) as r:
                out.append((r.status, r.headers.get("X-Activelead-Trace-Id", "")))
    return out


def statuses(results: list[tuple[int, str]]) -> list[int]:
    return [status for status, _ in results]


def traces(results: list[tuple[int, str]]) -> set[str]:
    ids = {trace for _, trace in results}
    assert len(ids) == len(results) and "" not in ids, results
    return ids


def link(url: str, edge_token: str, **extra: Any) -> dict[str, Any]:
    return {"url": url, "edge_token": edge_token, "flush_interval_s": 0.05,
            "max_backoff_s": 0.2, "timeout_s": 2, **extra}


def site(origin_url: str, tenant: Tenant | None = None, **extra: Any) -> dict[str, Any]:
    """The test site, reporting to the tenant's project; trace ids on the block response."""
    project = {"project_id": tenant.project_id} if tenant else {}
    return site_config(origin_url, result_headers_on_response=True, **project, **extra)


def spooled(state_dir: Path) -> int:
    """Events still in the proxy's spool (open or sealed segments, all workers)."""
    return sum(len(p.read_bytes().splitlines())
               for p in (state_dir / "spool").glob("w*/*") if p.suffix in (".open", ".ready"))


async def wait_for(predicate: Any, wait_s: float = 10.0) -> None:
    """Poll `predicate` (state owned by another server, so no event to wait on)."""
    async with asyncio.timeout(wait_s):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


@pytest.fixture
async def control_api(tmp_path: Path) -> AsyncIterator[InProcessControlApi]:
    api = InProcessControlApi(tmp_path)
    await api.start()
    yield api
    await api.stop()


@pytest.fixture
async def tenant(control_api: InProcessControlApi) -> Tenant:
    return await provision(control_api.url)


@pytest.fixture
async def relay(control_api: InProcessControlApi) -> AsyncIterator[FaultRelay]:
    relay = FaultRelay(control_api.port)
    await relay.start()
    yield relay
    await relay.close()


async def test_events_are_shipped_in_idempotent_batches(
    origin: TestServer, make_proxy: MakeProxy, tenant: Tenant, relay: FaultRelay,
    tmp_path: Path,
) -> None:
    proxy = await make_proxy([site(str(origin.make_url("")), tenant)],
                             control_api=link(relay.url, tenant.edge_token, batch_max_events=3))
    results = await post_n(proxy.port, 7)
    assert statuses(results) == [403] * 7
    sent = traces(results)
    await tenant.wait_events(7)
    await wait_for(lambda: spooled(tmp_path / "state") == 0
                   and all(ex.status is not None for ex in relay.batches()))

    # On the wire (the relay only passes it on): batches of at most 3, each sent once, keyed by
    # its batch id, every one answered 200 by the control API.
    uploads = relay.batches()
    assert len(uploads) >= 3
    assert all(ex.status == 200 and not ex.dropped for ex in uploads)
    assert len(set(relay.keys())) == len(uploads)
    batches = [ex.json() for ex in uploads]
    assert [b["batchId"] for b in batches] == relay.keys()
    assert all(1 <= len(b["events"]) <= 3 for b in batches)
    ev = batches[0]["events"][0]
    assert set(ev) == WIRE_KEYS
    assert ev["verdict"]["decision"] == "blocked"
    assert {e["traceId"] for b in batches for e in b["events"]} == sent

    # The control API's view: exactly these 7 events, stored and charged once each ...
    events = await tenant.assert_stored_once(sent)
    for e in events:
        assert (e["source"], e["siteId"], e["projectId"], e["formId"]) == (
            "edge", "shop", tenant.project_id, "contact")
        assert e["decision"] == "blocked" and e["action"] == "blocked"
        assert e["email"] == "bot@mailinator.com" and "disposable_email" in e["labels"]
    # ... with one usage entry per batch, each naming its batch.
    usage = [e for e in await tenant.ledger() if e["kind"] == "usage"]
    assert sorted(e["reference"].split(":")[1] for e in usage) == sorted(relay.keys())
    assert all(-3 <= e["amount"] <= -1 for e in usage)


async def test_outage_then_recovery_loses_nothing_and_counts_once(
    origin: TestServer, make_proxy: MakeProxy, control_api: InProcessControlApi, tenant: Tenant,
    relay: FaultRelay, tmp_path: Path,
) -> None:
    await control_api.stop()  # the real control API goes down
    proxy = await make_proxy([site(str(origin.make_url("")), tenant)],
                             control_api=link(relay.url, tenant.edge_token))
    results = await post_n(proxy.port, 5)
    assert statuses(results) == [403] * 5
    sent = traces(results)
    await wait_for(lambda: len(relay.batches()) >= 3)  # refused, retried with backoff
    assert all(ex.status is None for ex in relay.log)  # nothing reached a control API
    assert spooled(tmp_path / "state") == 5  # all kept by the proxy meanwhile

    relay.drop_answers = 1  # it comes back, but its first answer is lost on the way
    await control_api.start()  # same SQLite file, same port
    await wait_for(lambda: any(ex.dropped for ex in relay.batches()))
    lost = next(ex for ex in relay.batches() if ex.dropped)
    assert lost.status == 200  # the control API did store that batch
    await tenant.wait_events(5)
    await wait_for(lambda: spooled(tmp_path / "state") == 0)
    await asyncio.sleep(0.3)  # any late retry would land now
    await tenant.assert_stored_once(sent)

    # the very same batch (id and bytes) was sent again after the lost answer, and the control
    # API answered it from its idempotency record instead of storing it again
    ids = relay.keys()
    assert len(set(ids)) < len(ids)
    uploads = relay.batches()
    again = [ex for ex in uploads[uploads.index(lost) + 1:] if ex.key == lost.key]
    assert again and again[0].body == lost.body and again[0].status == 200
    assert again[0].answer_headers is not None
    assert again[0].answer_headers.get("idempotent-replayed") == "true"


async def test_answers_lost_repeatedly_are_retried_with_the_same_key_and_charged_once(
    origin: TestServer, make_proxy: MakeProxy, tenant: Tenant, relay: FaultRelay,
    tmp_path: Path,
) -> None:
    relay.drop_answers = 4  # stored four times over, as far as the proxy can tell never
    proxy = await make_proxy([site(str(origin.make_url("")), tenant)],
                             control_api=link(relay.url, tenant.edge_token, batch_max_events=2))
    results = await post_n(proxy.port, 6)
    assert statuses(results) == [403] * 6
    await tenant.wait_events(6)
    await wait_for(lambda: spooled(tmp_path / "state") == 0)
    await asyncio.sleep(0.3)
    await tenant.assert_stored_once(traces(results))
    uploads = relay.batches()
    dropped = [ex for ex in uploads if ex.dropped]
    assert len(dropped) == 4 and all(ex.status == 200 for ex in dropped)
    for ex in dropped:  # each lost answer was followed by a successful resend of that batch
        assert any(o.key == ex.key and o.status == 200 and not o.dropped for o in uploads)
    usage = [e for e in await tenant.ledger() if e["kind"] == "usage"]
    assert len(usage) == len(set(relay.keys()))  # one debit per batch, none per resend


async def test_control_api_unreachable_keeps_events_in_spool(
    origin: TestServer, make_proxy: MakeProxy, tmp_path: Path
) -> None:
    port = free_port()
    proxy = await make_proxy([site_config(str(origin.make_url("")))],
                             control_api=link(f"http://127.0.0.1:{port}", "al_edge_x"),
                             state_dir=str(tmp_path / "s"))
    await post_n(proxy.port, 4)
    await asyncio.sleep(0.3)
    spool = tmp_path / "s" / "spool" / "w0"
    lines = [ln for p in spool.iterdir() for ln in p.read_bytes().splitlines()]
    assert len(lines) == 4
    assert all(json.loads(ln)["action"] == "blocked" for ln in lines)


async def test_standalone_mode_logs_json_lines_and_spools_nothing(
    origin: TestServer, make_proxy: MakeProxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="activelead.events")
    proxy = await make_proxy([site(str(origin.make_url("")))], state_dir=str(tmp_path / "s"))
    results = await post_n(proxy.port, 3)
    assert statuses(results) == [403] * 3
    lines = [r.getMessage() for r in caplog.records if r.name == "activelead.events"]
    events = [json.loads(line) for line in lines]
    assert all("\n" not in line for line in lines)
    assert {e["traceId"] for e in events} == traces(results)
    assert all(set(e) == WIRE_KEYS and e["action"] == "blocked" for e in events)
    assert not (tmp_path / "s" / "spool").exists()


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


def test_spool_depth_counts_each_sealed_segment_once_and_follows_the_directory(
        tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_events=3)
    for i in range(7):  # two sealed segments of 3, one open event
        spool.append({"traceId": f"t{i}"})
    assert spool.depth() == 7
    assert len(spool.ready_names()) == 2 and spool.ready_names() == sorted(spool.ready_names())
    first, second = spool.ready()
    first.unlink()  # shipped
    assert spool.depth() == 4
    (tmp_path / "b_0_torn.ready").write_bytes(b'{"traceId":"x"}\n{"traceId":')  # a torn tail
    (tmp_path / "notes.txt").write_bytes(b"not a segment\n")
    assert spool.depth() == 6
    assert [p.name for p in spool.ready()] == ["b_0_torn.ready", second.name]
    second.write_bytes(b"")  # never happens to a sealed segment: counted once, as it was
    assert spool.depth() == 6


def test_worker_zero_adopts_segments_of_retired_workers(tmp_path: Path) -> None:
    old = Spool(tmp_path / "w5", max_events=10)
    old.append({"traceId": "t-old"})  # worker 5 died (or workers went from 6 to 2)
    new = Spool(tmp_path / "w0", max_events=10)
    assert new.adopt([tmp_path / "w5"]) == 1
    assert [e["traceId"] for p in new.ready() for e in Spool.read(p)] == ["t-old"]


def wire_event(tenant: Tenant, n: int, **changes: Any) -> dict[str, Any]:
    """An event as the record stage writes it (the control API validates every key)."""
    event = {
        "traceId": f"dl-{n:04d}", "siteId": "shop", "projectId": tenant.project_id,
        "formId": "contact", "leadId": "", "receivedAt": "2026-11-23T10:00:00.000Z",
        "mode": "enforce", "action": "blocked", "ip": "198.51.100.7", "email": f"u{n}@example.com",
        "userAgent": "curl/8", "pageUrl": "", "isTest": False,
        "verdict": {"decision": "blocked", "score": 90, "labels": ["spam_content"], "hits": []},
    }
    event.update(changes)
    return event


def sealed(spool: Spool, events: list[dict[str, Any]]) -> None:
    for event in events:
        spool.append(event)
    spool.seal()


async def test_refused_events_and_oversized_batches_never_hold_up_later_batches(
    tmp_path: Path,
) -> None:
    # A control API that takes at most 4 events or 8 KiB per batch (the proxy's batches are
    # bigger): splitting and dead-lettering must get every acceptable event through, in order.
    api = InProcessControlApi(tmp_path, max_batch_events=4, max_batch_bytes=8192)
    await api.start()
    try:
        tenant = await provision(api.url)
        spool = Spool(tmp_path / "spool" / "w0", max_events=100)
        foreign = wire_event(tenant, 1, projectId="p_someone_else")
        huge = wire_event(tenant, 2, userAgent="x" * 2000, pageUrl="y" * 2000,
                          leadId="z" * 250, verdict={"decision": "blocked", "score": 90,
                                                     "labels": ["l" * 60] * 90, "hits": []})
        sealed(spool, [wire_event(tenant, 0), foreign])        # one refused inside a 200
        sealed(spool, [huge])                                  # 413 whatever we do
        sealed(spool, [wire_event(tenant, n) for n in range(10, 19)])  # 9 > 4: split, twice
        sealed(spool, [wire_event(tenant, 99)])                # behind all of them
        reporter = SpoolReporter(spool, url=api.url, edge_token=tenant.edge_token,
                                 fsync_interval_s=1, flush_interval_s=1, timeout_s=5,
                                 max_backoff_s=1)
        await reporter.start()
        try:
            await reporter.ship_ready()
        finally:
            await reporter.close()

        assert spool.ready() == []  # nothing stuck
        stored = await tenant.assert_stored_once(
            {"dl-0000", "dl-0099", *(f"dl-{n:04d}" for n in range(10, 19))})
        assert len(stored) == 11
        assert (await tenant.credits())["balance"] == INITIAL_CREDITS - 11

        letters = {p.name: [json.loads(line) for line in p.read_text().splitlines()]
                   for p in (tmp_path / "spool" / "rejected").iterdir()}
        assert len(letters) == 2
        refused = [entry for entries in letters.values() for entry in entries]
        by_trace = {entry["event"]["traceId"]: entry["refused"] for entry in refused}
        assert set(by_trace) == {"dl-0001", "dl-0002"}  # each kept whole, with the reason
        assert by_trace["dl-0001"]["errors"] == {"projectId": "not the edge token's project"}
        assert by_trace["dl-0002"]["status"] == 413
    finally:
        await api.stop()


async def test_auth_and_server_errors_keep_the_batch_for_later(tmp_path: Path) -> None:
    api = InProcessControlApi(tmp_path)
    await api.start()
    try:
        tenant = await provision(api.url)
        spool = Spool(tmp_path / "spool" / "w0", max_events=100)
        sealed(spool, [wire_event(tenant, 0)])
        reporter = SpoolReporter(spool, url=api.url, edge_token="al_edge_revoked_or_wrong",
                                 fsync_interval_s=1, flush_interval_s=1, timeout_s=5,
                                 max_backoff_s=1)
        await reporter.start()
        try:
            with pytest.raises(Exception, match="HTTP 401"):
                await reporter.ship_ready()
        finally:
            await reporter.close()
        assert len(spool.ready()) == 1  # kept: a fixed token ships it
        assert not (tmp_path / "spool" / "rejected").exists()
    finally:
        await api.stop()


def test_sealing_leaves_the_fsync_to_the_background_and_leaks_no_descriptor(
    tmp_path: Path,
) -> None:
    def open_fds() -> int:
        return len(list(Path("/proc/self/fd").iterdir()))

    before = open_fds()
    spool = Spool(tmp_path, max_events=2)
    for i in range(100):  # 50 segments sealed from the "event loop": none fsync'd there
        spool.append({"traceId": f"t{i}"})
    assert len(spool.ready()) == 50
    assert open_fds() >= before + 50  # each kept open until the background fsync
    spool.sync()  # what the fsync thread does every spool_fsync_interval_s
    assert open_fds() == before
    assert [e["traceId"] for p in spool.ready() for e in Spool.read(p)] == [
        f"t{i}" for i in range(100)]


async def test_unscored_events_are_stored_but_never_charged(
    origin: TestServer, make_proxy: MakeProxy, tenant: Tenant, control_api: InProcessControlApi,
) -> None:
    """Scoring that fails (a Redis that accepts and never answers) leaves the form's on_error
    to decide: that event is reported `scored: false` and costs nothing. Once the counters
    have fallen back to memory, posts are scored again (label `degraded`) and charged."""
    hung: list[asyncio.StreamWriter] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hung.append(writer)

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    try:
        form = {"id": "contact", "path": "/contact", "score_timeout_s": 0.1}
        proxy = await make_proxy(
            [site(str(origin.make_url("")), tenant, forms=[form], render={"enabled": False})],
            control_api=link(control_api.url, tenant.edge_token),
            redis=f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0")
        before = (await tenant.credits())["balance"]
        [(status, trace)] = await post_n(proxy.port, 1)
        assert status == 200  # on_error: forward
        await asyncio.sleep(0.6)  # the counters give up on Redis and count in memory
        [(_, trace2)] = await post_n(proxy.port, 1, first=1)
        events = {e["traceId"]: e for e in await tenant.wait_events(2)}
        assert events[trace]["charged"] is False and events[trace]["action"] == "error_forwarded"
        assert events[trace2]["charged"] is True and "degraded" in events[trace2]["labels"]
        assert (await tenant.credits())["balance"] == before - 1
    finally:
        for writer in hung:
            writer.close()
        server.close()
