"""An open-loop load generator: requests at a fixed, evenly spaced rate, whatever the answers do.

    python bench/fixedrate.py URL --rate 400 --seconds 8 [--post BODY] [--header 'Name: value']

Latency is counted from when a request was *due*, not when it went out, so a stalled server
cannot hide its queue (no coordinated omission). wrk holds connections busy instead of a rate,
and hey's workers fire in lockstep (bursts of -c requests), which measures queueing behind the
burst rather than the server. Prints one JSON line: rate achieved, p50, p90, p99 (ms), errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import aiohttp


async def run(url: str, rate: float, seconds: float, body: str | None,
              headers: dict[str, str]) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=256, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(due: float) -> None:
            nonlocal errors
            try:
                if body is None:
                    ctx = session.get(url, headers=headers)
                else:
                    ctx = session.post(url, data=body, headers=headers)
                async with ctx as resp:
                    await resp.read()
                    if resp.status >= 400:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
                return
            latencies.append((time.perf_counter() - due) * 1000)

        total = int(rate * seconds)
        start = time.perf_counter() + 0.05
        tasks = []
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {"rate": round(len(latencies) / elapsed, 1), "p50": round(q[49], 3),
            "p90": round(q[89], 3), "p99": round(q[98], 3), "errors": errors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--post")
    ap.add_argument("--header", action="append", default=[])
    args = ap.parse_args()
    headers = dict(h.split(": ", 1) for h in args.header)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run(args.url, args.rate, args.seconds, args.post, headers))))


if __name__ == "__main__":
    main()
