"""Fault tests: Redis and the control API die mid-run; the proxy is killed; nothing is lost."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from tests.proxy.conftest import MakeProxy, site_config
from tests.proxy.controlapi import BATCHES, CALLS, FAIL, all_events, control_api_app
from tests.proxy.test_events import link, wait_for
from tests.services import ROOT, RedisServer, free_port, wait_for_port

SPAM = "email=bot%40mailinator.com&message=hi"


async def post(port: int, i: int) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.post(
        f"http://127.0.0.1:{port}/contact", data=f"{SPAM}&i={i}",
        headers={"Host": "site.test", "Content-Type": "application/x-www-form-urlencoded"},
    ) as r:
        return r.status, r.headers.get("X-Activelead-Labels", "")


async def restartable_api(port: int, like: Any = None) -> TestServer:
    app = control_api_app()
    if like is not None:  # the "database" survives the restart, as the real one's would
        app[BATCHES], app[CALLS], app[FAIL] = like[BATCHES], like[CALLS], like[FAIL]
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    return server


@pytest.mark.slow
async def test_redis_and_control_api_die_mid_run(
    origin: TestServer, make_proxy: MakeProxy, redis_own: RedisServer
) -> None:
    api_port = free_port()
    api = await restartable_api(api_port)
    site = site_config(str(origin.make_url("")), result_headers_on_response=True)
    proxy = await make_proxy([site], redis=redis_own.url,
                             control_api=link(f"http://127.0.0.1:{api_port}"))
    results = [await post(proxy.port, i) for i in range(5)]
    assert all(status == 403 and "degraded" not in labels for status, labels in results)

    redis_own.stop()
    await api.close()
    down = [await post(proxy.port, i) for i in range(5, 10)]
    assert [s for s, _ in down] == [403] * 5  # still protecting, never a 500
    assert all("degraded" in labels for _, labels in down)

    redis_own.start()
    api = await restartable_api(api_port, like=api.app)
    try:
        await asyncio.sleep(2.2)  # RedisCounters retries Redis after its pause
        back = [await post(proxy.port, i) for i in range(10, 15)]
        assert [s for s, _ in back] == [403] * 5
        assert "degraded" not in back[-1][1]
        await wait_for(lambda: len(all_events(api.app)) == 15, wait_s=15)
        events = all_events(api.app)
        assert len({e["traceId"] for e in events}) == 15
        degraded = [e for e in events if e["verdict"]["degraded"]]
        assert len(degraded) == 5
    finally:
        await api.close()


@pytest.mark.slow
async def test_killed_proxy_loses_no_event(origin: TestServer, tmp_path: Path) -> None:
    """SIGKILL the real `python -m proxy` process while the control API is down."""
    api_port, port = free_port(), free_port()
    config = tmp_path / "activelead.yaml"
    config.write_text(yaml.safe_dump({
        "proxy": {"port": port, "admin_port": None, "workers": 1,
                  "state_dir": str(tmp_path / "state"), "render_secret": "x" * 20,
                  "control_api": link(f"http://127.0.0.1:{api_port}")},
        "sites": [site_config(str(origin.make_url("")))],
    }))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "proxy", "--config", str(config)],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_for_port(port, 20)
        return proc

    proc = start()
    try:
        statuses = [(await post(port, i))[0] for i in range(6)]
        assert statuses == [403] * 6
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    api = await restartable_api(api_port)
    proc = start()
    try:
        await wait_for(lambda: len(all_events(api.app)) == 6, wait_s=15)
        assert sorted(json.loads(json.dumps(e))["action"] for e in all_events(api.app)) == [
            "blocked"] * 6
    finally:
        proc.terminate()
        proc.wait(10)
        await api.close()
