"""Benchmark: control API ingest throughput and latency against a bare-aiohttp baseline, and
edge batch ingestion of 100k events. Prints figures; not part of the test suite.

    .venv/bin/python bench/control_api_bench.py [--duration 10] [--concurrency 32] [--rate 1500]
                                                [--repeat 3] [--postgres] [--workers 2]

Both servers run as their own processes on 127.0.0.1 (one core each at most, like the target
"2 cores" box: server + load generator); the baseline answers the same verdict JSON from a
plain aiohttp handler, so the difference is the cost of auth, scoring, credits and storage.
`--workers 2` (the default) also runs the control API with two worker processes on the same
database (and a throwaway redis-server for their shared counters); 1 skips that.

Two measurements per target: saturation (closed loop: `--concurrency` connections, each sending
its next request when the last is answered — latency there is mostly queueing, ≈ concurrency /
throughput), and a steady offered load of `--rate` requests/s (wrk with a Lua schedule), which is
what "N req/s with p99 under X ms" means. `--repeat` runs everything again on a fresh database
and prints medians; the 1-minute load average is printed around each run, since other work on
the box moves the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

# the repository root, for the tests' own port helpers (free_port, wait_for_port)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.services import free_port, spawn_control_api, wait_for_port

ROOT = Path(__file__).resolve().parent.parent

BODY = {
    "email": "jane.doe@example.org",
    "ip": "81.2.69.160",
    "userAgent": "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0",
    "formId": "contact",
    "fields": {"name": "Jane", "message": "Hello, could you send me a quote for 20 units?"},
}
VERDICT = {
    "traceId": "tr_0123456789abcdef01234567",
    "score": 0,
    "decision": "allowed",
    "labels": [],
    "hits": [],
    "countryHint": "GB",
    "degraded": False,
    "elapsedUs": 80,
    "isTest": False,
}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live children (workers) so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return total + sum(cpu_seconds(int(child)) for child in children)


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

    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=uvloop.new_event_loop())


async def load(
    url: str, headers: dict[str, str], duration: float, concurrency: int, body: dict[str, Any]
) -> dict[str, float]:
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
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "errors": errors,
    }


WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("AL_KEY")
if key and key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end
wrk.body = [[BODY]]
"""

# Appended for --rate: a global schedule hands out send times RATE per second apart to whichever
# connection asks next (wrk calls delay() before each request and times the request itself from
# when it is sent), so the server sees a steady offered load instead of a closed loop's convoy.
WRK_RATE_LUA = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_usec; } al_timeval;
int gettimeofday(al_timeval *tv, void *tz);
]]
local tv = ffi.new("al_timeval")
local function now_ms()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) * 1000 + tonumber(tv.tv_usec) / 1000
end
local interval = 1000 / RATE
local next_at = nil
function delay()
  local t = now_ms()
  if next_at == nil or next_at < t - 100 then next_at = t end  -- behind: no catch-up burst
  next_at = next_at + interval
  local wait = next_at - t
  if wait < 1 then return 0 end
  return math.floor(wait)
end
"""


def wrk_load(url: str, key: str, duration: float, concurrency: int, rate: float = 0) -> dict[str, float]:
    """The same measurement with wrk (C, one thread): far cheaper than a Python client, so the
    server gets the CPU the Python generator would take. `rate` > 0: a steady offered load of
    that many requests/s (latency at that load) instead of as fast as the server answers."""
    script = Path(tempfile.mkdtemp(prefix="al-wrk-")) / "post.lua"
    lua = WRK_LUA.replace("BODY", json.dumps(BODY))
    if rate > 0:
        lua += WRK_RATE_LUA.replace("RATE", repr(float(rate)))
    script.write_text(lua)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{int(duration)}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "AL_KEY": key},
    ).stdout

    def ms(label: str) -> float:
        value = next(line.split()[1] for line in out.splitlines() if line.strip().startswith(label))
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
        unit = value.lstrip("0123456789.")
        return float(value[: -len(unit)]) * scale[unit]

    rps = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")))
    total = int(next(line.split()[0] for line in out.splitlines() if "requests in" in line))
    errors = next((int(line.split()[-1]) for line in out.splitlines() if "Non-2xx" in line), 0)
    return {"requests": total, "rps": rps, "p50_ms": ms("50%"), "p99_ms": ms("99%"), "errors": errors}


def edge_bodies(total: int, per_batch: int, run: int = 0) -> list[bytes]:
    """The batches a proxy's spool would send, encoded up front: the load generator's own JSON
    work is not part of the ingestion being timed."""
    bodies = []
    for b in range(total // per_batch):
        events = []
        for i in range(per_batch):
            trace = f"tr_bench{run}_{b:05d}_{i:05d}"
            n = b * per_batch + i
            events.append(
                {
                    "traceId": trace,
                    "siteId": "s",
                    "formId": "contact",
                    "leadId": f"l{n}",
                    "receivedAt": f"2026-11-20T{10 + n // 3_600_000:02d}:{n // 60_000 % 60:02d}:"
                    f"{n // 1000 % 60:02d}.{n % 1000:03d}Z",
                    "mode": "enforce",
                    "action": "forwarded",
                    "ip": "81.2.69.160",
                    "email": f"u{n}@example.org",
                    "userAgent": "Mozilla/5.0",
                    "pageUrl": "https://shop.example/contact",
                    "verdict": {**VERDICT, "traceId": trace},
                    "isTest": False,
                }
            )
        bodies.append(json.dumps({"batchId": f"b{b}", "events": events}).encode())
    return bodies


async def edge_batches(base: str, token: str, bodies: list[bytes], per_batch: int) -> float:
    """Seconds to send every batch (4 in flight, like a proxy draining its spool)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    started = time.perf_counter()
    async with aiohttp.ClientSession() as s:
        sem = asyncio.Semaphore(4)

        async def send(b: int, body: bytes) -> None:
            async with (
                sem,
                s.post(
                    f"{base}/v1/edge/events", data=body, headers={**headers, "Idempotency-Key": f"bench-{b}"}
                ) as r,
            ):
                answer = await r.json()
                assert r.status == 200 and answer["accepted"] == per_batch, answer

        await asyncio.gather(*(send(b, body) for b, body in enumerate(bodies)))
    return time.perf_counter() - started


def fresh_pg_db(pg: Any, run: int) -> str:
    """A new empty database on the bench's PostgreSQL server (one per run)."""
    import psycopg

    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE bench{run}")
    return str(pg.url(f"bench{run}"))


def start_control_api(
    db: str, tmp: Path, workers: int = 1, redis_url: str | None = None
) -> tuple[subprocess.Popen[bytes], int, dict[str, Any]]:
    """A control API process on `db` (SQLite path or postgresql:// URL) with a demo tenant;
    with `workers` > 1, its counters in Redis at `redis_url` (required then)."""
    from control_api import cli
    from control_api.settings import ControlApiSettings

    port = free_port()
    settings = ControlApiSettings(db=db, port=port, ingest_rate_per_key=10_000_000, key_pepper="bench")
    demo = cli.bootstrap_demo(settings, credits_amount=50_000_000)
    config = tmp / f"activelead-{port}.yaml"
    config.write_text(
        f"control_api:\n  port: {port}\n  db: '{db}'\n  key_pepper: bench\n  ingest_rate_per_key: 10000000\n"
        f"  workers: {workers}\n" + (f"  redis_url: '{redis_url}'\n" if redis_url else "")
    )
    proc = spawn_control_api(config)
    wait_for_port(port, timeout_s=30.0)
    if workers > 1:  # the port answers when the first worker listens; let the others start
        deadline = time.monotonic() + 30
        while len(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()) < workers:
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.1)
        time.sleep(2.0)
    return proc, port, demo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--rate",
        type=float,
        default=1500.0,
        help="also measure latency at this steady offered load (req/s; wrk only; 0 = skip)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run everything this many times (a fresh control API each time) and report medians",
    )
    parser.add_argument("--edge-events", type=int, default=100_000)
    parser.add_argument(
        "--python-client",
        action="store_true",
        help="use the Python load generator even when wrk is installed",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="also run against a throwaway PostgreSQL server (Debian binaries)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="also run SQLite with this many control API workers (counters in a throwaway "
        "redis-server, as several workers require); 1 = skip",
    )
    parser.add_argument("--serve-baseline", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline)
        return 0

    import uvloop

    tmp = Path(tempfile.mkdtemp(prefix="al-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIVELEAD_")}
    base_port = free_port()
    baseline = subprocess.Popen(
        [sys.executable, __file__, "--serve-baseline", str(base_port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    use_wrk = shutil.which("wrk") is not None and not args.python_client
    generator = "wrk" if use_wrk else "python aiohttp client"
    rate = args.rate if use_wrk else 0

    def measure(port: int, key: str, proc: subprocess.Popen[bytes], at_rate: float = 0) -> dict[str, float]:
        url = f"http://127.0.0.1:{port}/v1/ingest"
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        uvloop.run(load(url, headers, 1, 4, BODY))  # warm-up: pools, first project compile
        cpu0 = cpu_seconds(proc.pid)
        if use_wrk:
            result = wrk_load(url, key, args.duration, args.concurrency, at_rate)
        else:
            result = uvloop.run(load(url, headers, args.duration, args.concurrency, BODY))
        result["cpu_ms"] = (cpu_seconds(proc.pid) - cpu0) * 1000 / max(result["requests"], 1)
        return result

    loads = [os.getloadavg()]
    rows: dict[str, list[dict[str, float]]] = {}
    edges: dict[str, list[tuple[float, float]]] = {}
    pg: Any = None
    redis: Any = None
    try:
        wait_for_port(base_port, timeout_s=30.0)
        targets = [("SQLite", "sqlite", 1)]
        if args.workers > 1 and shutil.which("redis-server"):
            from tests.services import RedisServer

            redis = RedisServer()
            redis.start()
            targets.append((f"SQLite, {args.workers} workers", "sqlite", args.workers))
        if args.postgres:
            from tests.control_api.pgserver import PostgresServer

            pg = PostgresServer()
            pg.start()
            targets.append(("PostgreSQL", "postgres", 1))
            if redis is not None:
                targets.append((f"PostgreSQL, {args.workers} workers", "postgres", args.workers))
        for run in range(args.repeat):
            rows.setdefault("baseline (bare aiohttp)", []).append(measure(base_port, "", baseline))
            if rate:
                rows.setdefault(f"baseline @ {rate:.0f}/s", []).append(measure(base_port, "", baseline, rate))
            for name, kind, workers in targets:
                db = (
                    str(tmp / f"bench-{run}-{workers}.sqlite3") if kind == "sqlite"
                    else fresh_pg_db(pg, run * 100 + workers)
                )
                proc, port, demo = start_control_api(
                    db, tmp, workers, redis.url if workers > 1 and redis else None
                )
                try:
                    rows.setdefault(f"/v1/ingest, {name}", []).append(measure(port, demo["apiKey"], proc))
                    if rate:
                        rows.setdefault(f"/v1/ingest, {name} @ {rate:.0f}/s", []).append(
                            measure(port, demo["apiKey"], proc, rate)
                        )
                    bodies = edge_bodies(args.edge_events, 1000, run)
                    cpu0 = cpu_seconds(proc.pid)
                    seconds = uvloop.run(
                        edge_batches(f"http://127.0.0.1:{port}", demo["edgeToken"], bodies, 1000)
                    )
                    edges.setdefault(name, []).append((seconds, cpu_seconds(proc.pid) - cpu0))
                finally:
                    proc.terminate()
                    proc.wait(timeout=10)
            loads.append(os.getloadavg())
    finally:
        baseline.terminate()
        baseline.wait(timeout=10)
        if pg is not None:
            pg.stop()
        if redis is not None:
            redis.stop()
    load_text = " → ".join(f"{x[0]:.2f}" for x in loads)
    print(
        f"cpus={os.cpu_count()} concurrency={args.concurrency} duration={args.duration}s "
        f"repeat={args.repeat} (medians) load generator: {generator}; each server in its own "
        f"process; 1-min load average before/after each run: {load_text}"
    )
    print(
        f"{'target':<40}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        f"{'server CPU ms/req':>19}   runs (req/s, p99 ms)"
    )

    def med(results: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in results)

    for name, results in rows.items():
        runs = " ".join(f"{r['rps']:.0f}/{r['p99_ms']:.1f}" for r in results)
        print(
            f"{name:<40}{med(results, 'rps'):>9.0f}{med(results, 'p50_ms'):>9.2f}"
            f"{med(results, 'p99_ms'):>9.2f}{med(results, 'errors'):>8.0f}"
            f"{med(results, 'cpu_ms'):>19.3f}   {runs}"
        )
    base = rows["baseline (bare aiohttp)"]
    for name, results in rows.items():
        if name.startswith("/v1/ingest") and "@" not in name:
            cpu = med(results, "cpu_ms")
            print(
                f"{name}: {med(results, 'rps') / med(base, 'rps'):.2f} of baseline throughput; "
                f"one core would serve ~{1000 / cpu:.0f} req/s (server CPU only, no load "
                f"generator)"
            )
    for name, timings in edges.items():
        wall = statistics.median(t[0] for t in timings)
        cpu = statistics.median(t[1] for t in timings)
        runs = " ".join(f"{t[0]:.2f}" for t in timings)
        print(
            f"edge batches, {name}: {args.edge_events} events in {wall:.2f} s median "
            f"({args.edge_events / wall:.0f} events/s, batches of 1000; server CPU {cpu:.2f} s; "
            f"runs: {runs})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
