"""Benchmark: the snippet's server side (challenge issue + verify) and its proof-of-work in Chromium.
Prints figures; not part of the test suite.

    .venv/bin/python bench/snippet_bench.py [--seconds 2] [--samples 12] [--difficulties 8,12,14,16,18,20]

1. In process, one core: ChallengeSigner.issue, check, verify (with single use through the
   memory counters), and the proof-of-work check alone.
2. Over HTTP: POST /__activelead/challenge on the real aiohttp routes, 32 concurrent clients
   from the same process (so the figure includes the client's cost too).
3. Debian's Chromium (headless, Playwright): the built snippet solving challenges at each
   difficulty, in its Web Worker, as `activelead.token()` does for a page; time per solve as the
   snippet itself reports it (`s` in the token), plus the implied hash rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from activelead.snippet_http import SnippetSite  # noqa: E402
from rules.challenge import ChallengeSigner, StepUp, solve_pow, verify  # noqa: E402
from rules.counters import MemoryCounters  # noqa: E402
from tests.snippet.browser import built_bundle, launch  # noqa: E402
from tests.snippet.site import start_site  # noqa: E402

ORIGIN = "https://shop.example"
REPORT = "k=31,p=120,c=2,v=0,f=3,i=900,d=6000,u=0,w=0,h=0"


def rate(fn: Any, seconds: float) -> tuple[float, float]:
    """(operations per second, microseconds per operation)."""
    n, started = 0, time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(200):
            fn()
        n += 200
    took = time.perf_counter() - started
    return n / took, took / n * 1e6


async def in_process(seconds: float) -> None:
    signer = ChallengeSigner("bench-secret-0123456789")
    counters = MemoryCounters(max_keys=10_000_000)
    print("== server, in process (one core) ==")
    ops, us = rate(lambda: signer.issue("pk_live_1", ORIGIN, "/contact"), seconds)
    print(f"issue              {ops:>10,.0f}/s  {us:6.1f} us")
    values = [f"{signer.issue('pk_live_1', ORIGIN, '/contact').token}~{REPORT}" for _ in range(2000)]
    it = iter(values * 1000)
    ops, us = rate(lambda: signer.check(next(it), site_key="pk_live_1", origin=ORIGIN,
                                        form="/contact"), seconds)
    print(f"check              {ops:>10,.0f}/s  {us:6.1f} us   (signature, binding, report)")
    fresh = [f"{signer.issue('pk_live_1', ORIGIN, '/contact').token}~{REPORT}"
             for _ in range(int(60_000 * seconds))]
    started = time.perf_counter()
    for value in fresh:
        await verify(signer, counters, value, site_key="pk_live_1", origin=ORIGIN, form="/contact")
    took = time.perf_counter() - started
    print(f"verify (+once)     {len(fresh) / took:>10,.0f}/s  {took / len(fresh) * 1e6:6.1f} us"
          "   (memory counters; Redis adds a round trip, pipelined per tick)")
    token = signer.issue("pk_live_1", ORIGIN, "/contact", 16).token
    value = f"{token}~{REPORT},n={solve_pow(token, 16)},s=50"
    ops, us = rate(lambda: signer.check(value), seconds)
    print(f"check with PoW 16  {ops:>10,.0f}/s  {us:6.1f} us   (one SHA-256 more)")


async def over_http(seconds: float, concurrency: int = 32) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from activelead.snippet_http import register, static_sites

    counters = MemoryCounters(max_keys=10_000_000)
    app = web.Application()
    sites = {"pk_live_1": SnippetSite.build(
        "pk_live_1", [ORIGIN], StepUp(rate_limit=10**9, hard_limit=10**9))}
    register(app, lookup=static_sites(sites), signer=ChallengeSigner("bench-secret-0123456789"),
             counters=lambda r: counters, bundle=None, warn_unbuilt=False)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = server.make_url("/__activelead/challenge")
    body = json.dumps({"site": "pk_live_1", "form": "/contact"})
    headers = {"Content-Type": "text/plain", "Origin": ORIGIN, "User-Agent": "Mozilla/5.0 Chrome/126"}
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client(http: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            async with http.post(url, data=body, headers=headers) as resp:
                await resp.read()
                assert resp.status == 200
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    took = time.perf_counter() - started
    await server.close()
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    print(f"\n== POST /__activelead/challenge over HTTP ({concurrency} clients, same process) ==")
    print(f"{len(latencies) / took:,.0f} req/s   p50 {p50 * 1000:.2f} ms   p99 {p99 * 1000:.2f} ms")


async def in_chromium(difficulties: list[int], samples: int) -> None:
    print("\n== proof-of-work in Chromium (headless, Web Worker), ms per solve ==")
    print(f"{'bits':>4} {'expected hashes':>16} {'median':>8} {'mean':>8} {'p90':>8} {'max':>8}"
          f" {'Mhash/s':>8}")
    site = await start_site(built_bundle(), tuple(difficulties))
    try:
        async with launch(person=True) as context:
            page = await context.new_page()
            await page.goto(site.url("/form"))
            await page.wait_for_function("!!(window.activelead && window.activelead.v)")
            for d in difficulties:
                n = max(3, samples if d <= 16 else samples // 2)
                times = await page.evaluate("""async ([site, n]) => {
                    const out = [];
                    for (let i = 0; i < n; i++) {
                        const t = await activelead.token({site, form: 'bench', budget: 120000});
                        const s = t.token.split('~')[1].split(',').find(p => p.startsWith('s='));
                        out.push(s ? +s.slice(2) : -1);
                    }
                    return out;
                }""", [f"pk_d{d}", n])
                solved = [t for t in times if t >= 0]
                if not solved:
                    print(f"{d:>4} no solution within the budget")
                    continue
                solved.sort()
                mean = statistics.mean(solved)
                print(f"{d:>4} {2 ** d:>16,} {statistics.median(solved):>8.1f} {mean:>8.1f} "
                      f"{solved[int(len(solved) * 0.9) - 1 if len(solved) > 1 else 0]:>8.1f} "
                      f"{solved[-1]:>8.1f} {2 ** d / max(mean, 0.001) / 1000:>8.2f}")
    finally:
        await site.server.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--difficulties", default="8,12,14,16,18,20")
    args = parser.parse_args()
    await in_process(args.seconds)
    await over_http(args.seconds * 2)
    await in_chromium([int(d) for d in args.difficulties.split(",")], args.samples)


if __name__ == "__main__":
    asyncio.run(main())
