"""Benchmark: control API ingest throughput and latency against a bare-aiohttp baseline, and
edge batch ingestion of 100k events. Prints figures; not part of the test suite.

    .venv/bin/python bench/control_api_bench.py [--duration 10] [--concurrency 32]

Both servers run as their own processes on 127.0.0.1 (one core each at most, like the target
"2 cores" box: server + load generator); the baseline answers the same verdict JSON from a
plain aiohttp handler, so the difference is the cost of auth, scoring, credits and storage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BODY = {
    "email": "jane.doe@example.org",
    "ip": "81.2.69.160",
    "userAgent": "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0",
    "formId": "contact",
    "fields": {"name": "Jane", "message": "Hello, could you send me a quote for 20 units?"},
}
VERDICT = {"traceId": "tr_0123456789abcdef01234567", "score": 0, "decision": "allowed",
           "labels": [], "hits": [], "countryHint": "GB", "degraded": False, "elapsedUs": 80,
           "isTest": False}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} not listening")


def serve_baseline(port: int) -> None:
    from aiohttp import web

    text = json.dumps(VERDICT)

    async def handle(request: web.Request) -> web.Response:
        await request.json()
        return web.Response(text=text, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/ingest", handle)
    # Same event loop as the control API (uvloop) so the comparison is like for like; the
    # baseline has no access log, so the control API's includes that cost.
    import uvloop

    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None,
                loop=uvloop.new_event_loop())


async def load(url: str, headers: dict[str, str], duration: float, concurrency: int,
               body: dict[str, Any]) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    payload = json.dumps(body).encode()
    hdrs = {**headers, "Content-Type": "application/json"}
    stop = time.perf_counter() + duration
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                async with s.post(url, data=payload, headers=hdrs) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    return {"requests": len(latencies), "rps": len(latencies) / elapsed, "p50_ms": q[49] * 1000,
            "p99_ms": q[98] * 1000, "errors": errors}


WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("AL_KEY")
if key and key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end
wrk.body = [[BODY]]
"""


def wrk_load(url: str, key: str, duration: float, concurrency: int) -> dict[str, float]:
    """The same measurement with wrk (C, one thread): far cheaper than a Python client, so the
    server gets the CPU the Python generator would take."""
    script = Path(tempfile.mkdtemp(prefix="al-wrk-")) / "post.lua"
    script.write_text(WRK_LUA.replace("BODY", json.dumps(BODY)))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{int(duration)}s", "--latency", "-s", str(script),
         url], capture_output=True, text=True, check=True, env={**os.environ, "AL_KEY": key},
    ).stdout

    def ms(label: str) -> float:
        value = next(line.split()[1] for line in out.splitlines()
                     if line.strip().startswith(label))
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
        unit = value.lstrip("0123456789.")
        return float(value[: -len(unit)]) * scale[unit]

    rps = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")))
    total = int(next(line.split()[0] for line in out.splitlines() if "requests in" in line))
    errors = next((int(line.split()[-1]) for line in out.splitlines() if "Non-2xx" in line), 0)
    return {"requests": total, "rps": rps, "p50_ms": ms("50%"), "p99_ms": ms("99%"),
            "errors": errors}


async def edge_batches(base: str, token: str, total: int, per_batch: int) -> float:
    headers = {"Authorization": f"Bearer {token}"}
    started = time.perf_counter()
    async with aiohttp.ClientSession() as s:
        sem = asyncio.Semaphore(4)

        async def send(b: int) -> None:
            events = [{
                "traceId": f"tr_bench_{b:05d}_{i:05d}", "siteId": "s", "formId": "contact",
                "leadId": f"l{i}", "receivedAt": "2026-11-20T10:00:00Z", "mode": "enforce",
                "action": "forwarded", "ip": "81.2.69.160", "email": f"u{i}@example.org",
                "userAgent": "Mozilla/5.0", "pageUrl": "https://shop.example/contact",
                "verdict": {**VERDICT, "traceId": f"tr_bench_{b:05d}_{i:05d}"}, "isTest": False,
            } for i in range(per_batch)]
            async with sem, s.post(f"{base}/v1/edge/events",
                                   json={"batchId": f"b{b}", "events": events},
                                   headers={**headers, "Idempotency-Key": f"bench-{b}"}) as r:
                body = await r.json()
                assert r.status == 200 and body["accepted"] == per_batch, body

        await asyncio.gather(*(send(b) for b in range(total // per_batch)))
    return time.perf_counter() - started


def start_control_api(db: str, tmp: Path) -> tuple[subprocess.Popen[bytes], int, dict[str, Any]]:
    """A control API process on `db` (SQLite path or postgresql:// URL) with a demo tenant."""
    from control_api import cli
    from control_api.settings import ControlApiSettings

    port = free_port()
    settings = ControlApiSettings(db=db, port=port, ingest_rate_per_key=10_000_000,
                                  key_pepper="bench")
    demo = cli.bootstrap_demo(settings, credits_amount=50_000_000)
    config = tmp / f"activelead-{port}.yaml"
    config.write_text(
        f"control_api:\n  port: {port}\n  db: '{db}'\n  key_pepper: bench\n"
        f"  ingest_rate_per_key: 10000000\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIVELEAD_")}
    proc = subprocess.Popen([sys.executable, "-m", "control_api", "--config", str(config)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, port, demo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--edge-events", type=int, default=100_000)
    parser.add_argument("--python-client", action="store_true",
                        help="use the Python load generator even when wrk is installed")
    parser.add_argument("--postgres", action="store_true",
                        help="also run against a throwaway PostgreSQL server (Debian binaries)")
    parser.add_argument("--serve-baseline", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline)
        return 0

    import uvloop

    tmp = Path(tempfile.mkdtemp(prefix="al-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIVELEAD_")}
    base_port = free_port()
    baseline = subprocess.Popen([sys.executable, __file__, "--serve-baseline", str(base_port)],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    use_wrk = shutil.which("wrk") is not None and not args.python_client
    generator = "wrk" if use_wrk else "python aiohttp client"

    def measure(port: int, key: str, proc: subprocess.Popen[bytes]) -> dict[str, float]:
        url = f"http://127.0.0.1:{port}/v1/ingest"
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        uvloop.run(load(url, headers, 1, 4, BODY))  # warm-up: pools, first project compile
        cpu0 = cpu_seconds(proc.pid)
        if use_wrk:
            result = wrk_load(url, key, args.duration, args.concurrency)
        else:
            result = uvloop.run(load(url, headers, args.duration, args.concurrency, BODY))
        result["cpu_ms"] = (cpu_seconds(proc.pid) - cpu0) * 1000 / max(result["requests"], 1)
        return result

    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rows: list[tuple[str, dict[str, float]]] = []
    edges: list[tuple[str, float]] = []
    pg: Any = None
    try:
        wait_port(base_port)
        rows.append(("baseline (bare aiohttp)", measure(base_port, "", baseline)))
        targets = [("SQLite", str(tmp / "bench.sqlite3"))]
        if args.postgres:
            from tests.control_api.pgserver import PostgresServer

            pg = PostgresServer()
            pg.start()
            targets.append(("PostgreSQL", pg.url()))
        for name, db in targets:
            proc, port, demo = start_control_api(db, tmp)
            try:
                rows.append((f"/v1/ingest, {name}", measure(port, demo["apiKey"], proc)))
                edges.append((name, uvloop.run(edge_batches(
                    f"http://127.0.0.1:{port}", demo["edgeToken"], args.edge_events, 1000))))
            finally:
                proc.terminate()
                proc.wait(timeout=10)
    finally:
        baseline.terminate()
        baseline.wait(timeout=10)
        if pg is not None:
            pg.stop()
    print(f"cpus={os.cpu_count()} concurrency={args.concurrency} duration={args.duration}s "
          f"load generator: {generator}; each server in its own process; "
          f"load average before: {load_before}")
    print(f"{'target':<28}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}"
          f"{'server CPU ms/req':>20}")
    for name, r in rows:
        print(f"{name:<28}{r['rps']:>10.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}"
              f"{r['errors']:>8.0f}{r['cpu_ms']:>20.3f}")
    base = rows[0][1]
    for name, r in rows[1:]:
        print(f"{name}: {r['rps'] / base['rps']:.2f} of baseline throughput; one core would "
              f"serve ~{1000 / r['cpu_ms']:.0f} req/s (server CPU only, no load generator)")
    for name, seconds in edges:
        print(f"edge batches, {name}: {args.edge_events} events in {seconds:.2f} s "
              f"({args.edge_events / seconds:.0f} events/s, batches of 1000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
