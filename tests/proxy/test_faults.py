"""Fault tests: Redis and the real control API die mid-run; the proxy (and the control API) are
SIGKILLed; nothing is lost and nothing is charged twice, as the control API itself reports."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from tests.proxy.conftest import MakeProxy
from tests.proxy.controlplane import (
    ControlApiProcess,
    InProcessControlApi,
    Tenant,
    provision,
    wait_port,
)
from tests.proxy.faultrelay import FaultRelay
from tests.proxy.test_events import link, site, spooled, wait_for
from tests.services import ROOT, RedisServer, free_port

SPAM = "email=bot%40mailinator.com&message=hi"


async def post(port: int, i: int) -> tuple[int, str, str]:
    """(status, labels, trace id) of one spam submission."""
    async with aiohttp.ClientSession() as s, s.post(
        f"http://127.0.0.1:{port}/contact", data=f"{SPAM}&i={i}",
        headers={"Host": "site.test", "Content-Type": "application/x-www-form-urlencoded"},
    ) as r:
        return (r.status, r.headers.get("X-Activelead-Labels", ""),
                r.headers.get("X-Activelead-Trace-Id", ""))


class ProxyProcess:
    """The real `python -m proxy` as a child process, so a test can SIGKILL it."""

    def __init__(self, tmp_path: Path, origin_url: str, tenant: Tenant, api_url: str) -> None:
        self.port = free_port()
        self.dir = tmp_path / "proxy"
        self.dir.mkdir()
        self.config = self.dir / "activelead.yaml"
        self.config.write_text(yaml.safe_dump({
            "proxy": {"port": self.port, "admin_port": None, "workers": 1,
                      "state_dir": str(self.dir / "state"), "render_secret": "x" * 20,
                      "control_api": link(api_url, tenant.edge_token)},
            "sites": [site(origin_url, tenant)],
        }))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def spawn(self) -> None:
        assert self.proc is None
        self.starts += 1
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with (self.dir / f"log-{self.starts}.txt").open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "proxy", "--config", str(self.config)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    async def start(self) -> None:
        self.spawn()
        try:
            await wait_port(self.port, 20)
        except TimeoutError:
            self.kill()
            raise

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the child by its PID and reap it; SIGKILL if a SIGTERM is not obeyed in 10 s."""
        if self.proc is not None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def spooled(self) -> int:
        return spooled(self.dir / "state")


@pytest.mark.slow
async def test_redis_and_control_api_die_mid_run(
    origin: TestServer, make_proxy: MakeProxy, redis_own: RedisServer, tmp_path: Path
) -> None:
    api = InProcessControlApi(tmp_path)
    await api.start()
    try:
        tenant = await provision(api.url)
        proxy = await make_proxy([site(str(origin.make_url("")), tenant)], redis=redis_own.url,
                                 control_api=link(api.url, tenant.edge_token))
        results = [await post(proxy.port, i) for i in range(5)]
        assert all(status == 403 and "degraded" not in labels for status, labels, _ in results)
        await tenant.wait_events(5)  # shipped and stored before the lights go out

        redis_own.stop()
        await api.stop()
        await asyncio.sleep(0.3)  # past the counters' 0.25 s freshness: the next post asks Redis
        down = [await post(proxy.port, i) for i in range(5, 10)]
        assert [s for s, _, _ in down] == [403] * 5  # still protecting, never a 500
        assert all("degraded" in labels for _, labels, _ in down)

        redis_own.start()
        await api.start()  # same SQLite file: the first 5 events and the account are still there
        assert len(await tenant.events()) >= 5
        await asyncio.sleep(2.2)  # RedisCounters retries Redis after its pause
        back = [await post(proxy.port, i) for i in range(10, 15)]
        assert [s for s, _, _ in back] == [403] * 5
        assert "degraded" not in back[-1][1]
        await tenant.wait_events(15)
        sent = {trace for _, _, trace in results + down + back}
        assert len(sent) == 15
        events = await tenant.assert_stored_once(sent)  # each once, 15 credits, no more
        degraded = [e for e in events if e["verdict"]["degraded"]]
        assert len(degraded) == 5
        assert {e["traceId"] for e in degraded} == {trace for _, _, trace in down}
        assert all("degraded" in e["labels"] for e in degraded)
    finally:
        await api.stop()


@pytest.mark.slow
async def test_killed_proxy_loses_no_event(origin: TestServer, tmp_path: Path) -> None:
    """SIGKILL the real `python -m control_api`, then the real `python -m proxy` while the
    control API is down; both restart on their own files and every event arrives once."""
    api = ControlApiProcess(tmp_path)
    await api.start()
    proxy: ProxyProcess | None = None
    try:
        tenant = await provision(api.url)
        proxy = ProxyProcess(tmp_path, str(origin.make_url("")), tenant, api.url)
        await proxy.start()
        first = [await post(proxy.port, i) for i in range(3)]
        await tenant.wait_events(3)
        await wait_for(lambda: proxy is not None and proxy.spooled() == 0)  # acknowledged too

        api.kill()  # the control API crashes ...
        later = [await post(proxy.port, i) for i in range(3, 6)]
        statuses = [status for status, _, _ in first + later]
        assert statuses == [403] * 6
        proxy.kill()  # ... and so does the proxy, with 3 events not shipped
        assert proxy.spooled() == 3

        # Both come back (at once, to save a few seconds), each on its own files. The first 3
        # events left the proxy's spool before the crash, so only the control API's SQLite
        # file still has them: the check below also proves they survived its SIGKILL.
        await asyncio.gather(api.start(), proxy.start())
        await tenant.wait_events(6)
        await wait_for(lambda: proxy is not None and proxy.spooled() == 0)
        await asyncio.sleep(0.3)
        events = await tenant.assert_stored_once({trace for _, _, trace in first + later})
        assert sorted(e["action"] for e in events) == ["blocked"] * 6
    finally:
        if proxy is not None:
            proxy.kill(signal.SIGTERM)
        api.kill()


@pytest.mark.slow
async def test_proxy_killed_while_a_stored_batch_is_unacknowledged(
    origin: TestServer, tmp_path: Path
) -> None:
    """The control API stored a batch but the proxy never heard back, and then the proxy is
    SIGKILLed: after the restart it sends that batch again, and it is stored and charged once."""
    api = InProcessControlApi(tmp_path)
    await api.start()
    relay = FaultRelay(api.port)
    await relay.start()
    proxy: ProxyProcess | None = None
    try:
        tenant = await provision(api.url)
        relay.drop_answers = 10**6  # every answer is lost
        proxy = ProxyProcess(tmp_path, str(origin.make_url("")), tenant, relay.url)
        await proxy.start()
        results = [await post(proxy.port, i) for i in range(4)]
        assert [s for s, _, _ in results] == [403] * 4
        sent = {trace for _, _, trace in results}
        # The control API stored (and charged) the first batch, and the proxy resent it twice
        # more without hearing back, so it still has all 4 events in its spool.
        await wait_for(lambda: len([ex for ex in relay.batches() if ex.dropped]) >= 3)
        assert all(ex.status == 200 for ex in relay.batches() if ex.dropped)
        stored = await tenant.events()
        assert stored and {e["traceId"] for e in stored} <= sent
        await tenant.assert_stored_once({e["traceId"] for e in stored})

        proxy.kill()
        assert proxy.spooled() == 4
        unacknowledged = set(relay.keys())
        seen = len(relay.batches())
        relay.drop_answers = 0
        await proxy.start()
        await wait_for(lambda: proxy is not None and proxy.spooled() == 0)
        await asyncio.sleep(0.3)
        await tenant.assert_stored_once(sent)  # all 4, once each, 4 credits
        # after the restart the batch the control API already had was sent again under the same
        # id, and answered from the control API's idempotency record
        resent = [ex for ex in relay.batches()[seen:] if ex.key in unacknowledged]
        assert resent and resent[0].status == 200 and not resent[0].dropped
        assert resent[0].answer_headers is not None
        assert resent[0].answer_headers.get("idempotent-replayed") == "true"
    finally:
        if proxy is not None:
            proxy.kill(signal.SIGTERM)
        await relay.close()
        await api.stop()
