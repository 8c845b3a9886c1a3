"""`control-api` with `workers: 2`: two processes share the port and one SQLite file. Every call
is charged exactly once, an Idempotency-Key holds across workers, /metrics adds them up."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.mmap_dict import MmapedDict

from control_api.cli import DEMO_CREDITS, bootstrap_demo
from control_api.settings import load_settings
from tests.proxy.test_events import wait_for
from tests.proxy.test_workers import process_env, worker_pids
from tests.services import RedisServer, free_port, spawn_control_api, wait_for_port

CALLS = 120


def served_by(metrics_dir: Path, pid: str) -> float:
    db = MmapedDict(str(metrics_dir / f"counter_{pid}.db"), read_mode=True)
    try:
        return sum(v for key, v, _ in db.read_all_values()
                   if "activelead_control_api_requests_total" in key and "/v1/ingest" in key)
    finally:
        db.close()


async def call(base: str, key: str, body: dict[str, Any], **headers: str) -> tuple[int, str]:
    # A connection per call, so that the kernel spreads the calls over both workers.
    async with aiohttp.ClientSession() as s, s.post(
        f"{base}/v1/ingest", json=body, headers={"Authorization": f"Bearer {key}", **headers}
    ) as resp:
        return resp.status, await resp.text()


def alive(pid: str) -> bool:
    return Path(f"/proc/{pid}").exists()


def write_config(tmp_path: Path, redis: RedisServer, port: int) -> Path:
    config = tmp_path / "activelead.yaml"
    config.write_text(yaml.safe_dump({
        "redis": {"url": redis.url},  # the top-level section both services read
        "control_api": {
            "port": port, "db": str(tmp_path / "control.sqlite3"), "workers": 2,
            "key_pepper": "test-pepper", "argon2_time_cost": 1, "argon2_memory_kib": 1024,
            "argon2_parallelism": 1,
        },
    }))
    return config


async def both_serving(log_path: Path, port: int) -> None:
    """The port answers as soon as the first worker listens: wait for both to say so."""
    wait_for_port(port, timeout_s=30)
    await wait_for(lambda: log_path.read_text().count(" serving on ") == 2, wait_s=30)


@pytest.mark.slow
async def test_two_workers_share_port_database_and_credits(tmp_path: Path, redis: RedisServer) -> None:
    port = free_port()
    config = write_config(tmp_path, redis, port)
    demo = bootstrap_demo(load_settings(config))
    key = demo["apiKey"]
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "control_api.log"
    log = log_path.open("wb")
    proc = spawn_control_api(config, log)  # no PROMETHEUS_MULTIPROC_DIR: it sets one up itself
    metrics_dir: Path | None = None
    try:
        await both_serving(log_path, port)
        limit = asyncio.Semaphore(8)

        async def one(i: int) -> int:
            async with limit:
                status, _ = await call(base, key, {"email": f"lead{i}@example.org", "ip": "81.2.69.160",
                                                   "fields": {"message": f"quote {i}"}})
                return status

        assert await asyncio.gather(*(one(i) for i in range(CALLS))) == [200] * CALLS
        # The same Idempotency-Key from twelve connections at once: one verdict, one charge.
        same = await asyncio.gather(*(
            call(base, key, {"email": "twice@example.org"}, **{"Idempotency-Key": "order-17"})
            for _ in range(12)
        ))
        assert {status for status, _ in same} == {200}
        assert len({re.search(r'"traceId":"(\w+)"', text).group(1) for _, text in same}) == 1  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as s, s.get(
            f"{base}/v1/credits", headers={"Authorization": f"Bearer {key}"}
        ) as resp:
            assert (await resp.json())["balance"] == DEMO_CREDITS - CALLS - 1

        await asyncio.sleep(1.5)  # each worker adds its tallies to the shared files every second
        children = worker_pids(proc.pid)
        assert len(children) == 2
        metrics_dir = Path(process_env(proc.pid)["PROMETHEUS_MULTIPROC_DIR"])
        served = {pid: served_by(metrics_dir, pid) for pid in children}
        assert all(n > 0 for n in served.values()), served  # both workers answered calls
        assert sum(served.values()) == CALLS + 12
        async with aiohttp.ClientSession() as s, s.get(f"{base}/metrics") as resp:
            text = await resp.text()
        scored = sum(float(v) for v in re.findall(
            r'activelead_control_api_scored_total\{[^}]*\} (\S+)', text))
        assert scored == CALLS + 1  # the idempotent replays were answered, not scored again
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        log.close()
    assert metrics_dir is not None and not await asyncio.to_thread(metrics_dir.exists)


@pytest.mark.slow
async def test_a_dying_worker_takes_the_others_down(tmp_path: Path, redis: RedisServer) -> None:
    """Not only worker 0 is watched: the last worker dying stops the service with an error,
    for the service manager to restart it whole (rather than run on one worker unnoticed)."""
    port = free_port()
    config = write_config(tmp_path, redis, port)
    log_path = tmp_path / "control_api.log"
    log = log_path.open("wb")
    proc = spawn_control_api(config, log)
    try:
        await both_serving(log_path, port)
        children = worker_pids(proc.pid)
        assert len(children) == 2
        os.kill(int(children[-1]), signal.SIGKILL)
        assert await asyncio.to_thread(proc.wait, 20) == 1
        assert not any(alive(pid) for pid in children)  # worker 0 was stopped and reaped too
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
