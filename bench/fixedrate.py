"""An open-loop load generator: requests at a fixed, evenly spaced rate, whatever the answers do.

    python bench/fixedrate.py URL --rate 400 --seconds 8 [--post BODY] [--header 'Name: value']
        [--visitors]

--visitors makes every request a new visitor: its own X-Forwarded-For address, and `{n}` in the
body replaced by the request's number (a new e-mail), so no counter key is ever seen twice.

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


def visitor_ip(n: int) -> str:
    """A distinct public-looking IPv4 address for request n (20.0.0.1 onwards)."""
    return f"{20 + (n >> 16) % 180}.{(n >> 8) & 255}.{n & 255}.{1 + n % 250}"


async def run(url: str, rate: float, seconds: float, body: str | None,
              headers: dict[str, str], visitors: bool = False) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=256, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(due: float, n: int) -> None:
            nonlocal errors
            try:
                sent = headers
                data = body
                if visitors:
                    sent = {**headers, "X-Forwarded-For": visitor_ip(n)}
                    data = body.replace("{n}", str(n)) if body is not None else None
                if data is None:
                    ctx = session.get(url, headers=sent)
                else:
                    ctx = session.post(url, data=data, headers=sent)
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
            tasks.append(asyncio.create_task(one(due, i)))
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
    ap.add_argument("--visitors", action="store_true", help="a new visitor per request")
    args = ap.parse_args()
    headers = dict(h.split(": ", 1) for h in args.header)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run(args.url, args.rate, args.seconds, args.post, headers,
                                       args.visitors))))


if __name__ == "__main__":
    main()
