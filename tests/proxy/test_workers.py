"""`--workers N`: N processes share the port with SO_REUSEPORT; metrics add up over workers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer
from prometheus_client.mmap_dict import MmapedDict

from tests.proxy.conftest import site_config
from tests.proxy.test_events import wait_for
from tests.services import ROOT, free_port, wait_for_port


def spawn(cmd: list[str], env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def process_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def worker_pids(pid: int) -> list[str]:
    """Worker processes of the supervisor (forked: same command line as the supervisor)."""
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


@pytest.mark.slow
async def test_two_workers_share_the_port(origin: TestServer, tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    config = tmp_path / "activelead.yaml"
    config.write_text(yaml.safe_dump({
        "proxy": {"host": "127.0.0.1", "port": port, "admin_port": admin,
                  "state_dir": str(tmp_path / "state")},
        "sites": [site_config(str(origin.make_url("")))],
    }))
    # No PROMETHEUS_MULTIPROC_DIR from outside: the supervisor must set it up by itself.
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = str(ROOT)
    log = (tmp_path / "proxy.log").open("wb")
    proc = spawn([sys.executable, "-m", "proxy", "--config", str(config), "--workers", "2"],
                 env, log)
    try:
        wait_for_port(port, 30)
        wait_for_port(admin, 30)
        await wait_for(lambda: (tmp_path / "proxy.log").read_text().count(" serving ") == 2,
                       wait_s=30)  # the port answers as soon as the first worker listens
        n = 60
        for _ in range(n):  # a new connection each time, so the kernel spreads them
            async with aiohttp.ClientSession() as s, s.get(
                f"http://127.0.0.1:{port}/echo", headers={"Host": "site.test"}
            ) as r:
                assert r.status == 200
        await asyncio.sleep(1.5)  # each worker flushes its tallied request counts every second
        children = worker_pids(proc.pid)
        assert len(children) == 2
        metrics_dir = Path(process_env(proc.pid)["PROMETHEUS_MULTIPROC_DIR"])
        served = {}
        for pid in children:
            db = MmapedDict(str(metrics_dir / f"counter_{pid}.db"), read_mode=True)
            served[pid] = sum(v for key, v, _ in db.read_all_values()
                              if "activelead_proxy_requests_total" in key)
            db.close()
        assert all(count > 0 for count in served.values()), served  # both workers served
        async with aiohttp.ClientSession() as s, s.get(
            f"http://127.0.0.1:{admin}/metrics"
        ) as r:
            text = await r.text()
        total = re.search(r'activelead_proxy_requests_total\{kind="GET",site="shop"\} (\S+)', text)
        assert total is not None and float(total.group(1)) == n
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        log.close()
    assert not await asyncio.to_thread(metrics_dir.exists)  # the supervisor's own directory goes with it


async def test_a_serving_worker_collects_young_garbage_rarely(
    origin: TestServer, tmp_path: Path
) -> None:
    """serve() raises the young generation's threshold while it runs (the objects of requests
    in flight are no garbage; collecting them every 2,000 allocations cost scored posts 7-16 us)
    and puts Python's back when it stops."""
    import gc

    from proxy.server import YOUNG_GC_THRESHOLD, serve
    from proxy.settings import ProxySettings
    from rules.engine import Engine

    before = gc.get_threshold()
    assert before[0] < YOUNG_GC_THRESHOLD
    settings = ProxySettings.model_validate({
        "proxy": {"host": "127.0.0.1", "port": 0, "admin_port": None, "workers": 1,
                  "state_dir": str(tmp_path / "state"), "render_secret": "test-secret-0123456789"},
        "sites": [site_config(str(origin.make_url("")))],
    })
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(settings, started=lambda _: ready.set(), stop=stop,
                                     engine=Engine.from_config(), admin=False))
    async with asyncio.timeout(20):
        await ready.wait()
    try:
        assert gc.get_threshold() == (YOUNG_GC_THRESHOLD, *before[1:])
    finally:
        stop.set()
        await task
    assert gc.get_threshold() == before
