"""The proxy's form pipeline alone (no HTTP): µs per scored post, per stage, warm and cold cache.

    .venv/bin/python bench/pipeline_bench.py [--posts 3000] [--evict-mb 4]

Runs the worker's real stages (match -> ... -> record: default rules, Redis counters on a
redis-server started here, events spooled to a temporary directory) over one visitor's post,
the bench's usual form body. Twice: back to back (caches warm: the figure a profiler in a tight
loop sees) and with `--evict-mb` of memory written between two posts (caches cold: what a
serving worker sees, where aiohttp, uvloop and the kernel run between two posts). Compare the
cold figure with `activelead_proxy_scoring_seconds` (sum / count) of a worker under load.
Prints medians of five rounds. Not a test: figures, no assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from activelead.clientip import joined_lowered
from bench.proxy_bench import POST_BODY, UA, Procs, proxy_config, start_redis
from proxy.app import build_routing
from proxy.events import Spool, SpoolReporter
from proxy.settings import load_settings
from proxy.stages import Stage, build_pipeline, run_pipeline
from proxy.stages.flow import Flow
from rules import Engine, Scorer
from rules.counters import RedisCounters
from tests.services import free_port

BODY = POST_BODY.encode()
HEADERS = [("Host", "site.test"), ("Content-Type", "application/x-www-form-urlencoded"),
           ("User-Agent", UA), ("Accept-Language", "en-GB,en;q=0.9"), ("Accept", "*/*"),
           ("Content-Length", str(len(BODY)))]


class Timed:
    """A stage that adds its own duration to `spent` (per stage name)."""

    def __init__(self, stage: Stage, spent: dict[str, float]) -> None:
        self.stage, self.spent, self.always = stage, spent, stage.always
        self.name = type(stage).__name__

    async def __call__(self, flow: Flow) -> None:
        started = time.perf_counter()
        await self.stage(flow)
        self.spent[self.name] += time.perf_counter() - started


async def measure(stages: list[Stage], make: Callable[[], Flow], posts: int,
                  evict: Callable[[], None] | None) -> float:
    """µs per post over `posts` posts, the flows built and the eviction done off the clock."""
    total = 0.0
    for _ in range(posts):
        if evict is not None:
            evict()
        flow = make()
        started = time.perf_counter()
        await run_pipeline(stages, flow)
        total += time.perf_counter() - started
    return total / posts * 1e6


async def bench(redis_port: int, work: Path, posts: int, evict_mb: int) -> None:
    cfg = proxy_config(work / "pipeline.yaml", port=free_port(), workers=1, state=work / "state",
                       origin_port=free_port(), redis_port=redis_port)
    settings = load_settings(cfg)
    routing = build_routing(settings)
    site = routing.sites["site.test"]
    form = site.match("POST", "/contact")
    assert form is not None
    engine = Engine.from_config(settings.scoring)
    assert settings.redis.url
    counters = RedisCounters(settings.redis.url)
    reporter = SpoolReporter(Spool(work / "spool", 500), url="http://127.0.0.1:9", edge_token="x",
                             fsync_interval_s=1.0, flush_interval_s=3600.0, timeout_s=1.0,
                             max_backoff_s=1.0)
    stages = build_pipeline(signer=routing.signer, counters=counters,
                            scorer=Scorer(engine, counters), reporter=reporter, token_ttl_s=3600,
                            challenges=routing.challenges)
    lowered = joined_lowered(HEADERS)

    async def read_body(limit: int) -> bytes:
        return BODY

    def make() -> Flow:
        return Flow(site=site, method="POST", path="/contact", scheme="http", host="site.test",
                    client_ip="81.2.69.160", headers=lowered, read_body=read_body, form=form)

    junk = bytearray(evict_mb * 1024 * 1024)
    lines = len(junk[::64])

    def evict() -> None:
        junk[::64] = bytes(lines)  # one write per 64-byte cache line

    flow = await run_pipeline(stages, make())  # first post: cold keys, one Redis sync
    assert flow.verdict is not None
    print(f"one visitor's post: action {flow.action}, score {flow.verdict.score}, "
          f"labels {', '.join(flow.verdict.labels)}")
    for _ in range(posts):
        await run_pipeline(stages, make())
    for label, evicting in (("warm cache", None), (f"cold cache ({evict_mb} MB evicted)", evict)):
        rounds = [await measure(stages, make, posts, evicting) for _ in range(5)]
        spent: dict[str, float] = defaultdict(float)
        timed: list[Stage] = [Timed(stage, spent) for stage in stages]
        await measure(timed, make, posts, evicting)
        per_stage = ", ".join(f"{name} {seconds / posts * 1e6:.1f}"
                              for name, seconds in spent.items())
        print(f"  {label:<26} {statistics.median(rounds):7.1f} µs per post "
              f"(rounds {', '.join(f'{r:.0f}' for r in sorted(rounds))})")
        print(f"    per stage, µs (timed separately): {per_stage}")
    await counters.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posts", type=int, default=3000)
    ap.add_argument("--evict-mb", type=int, default=4,
                    help="memory written between posts in the cold run (L2 here: 1 MB a core)")
    args = ap.parse_args()
    procs = Procs()
    with tempfile.TemporaryDirectory(prefix="activelead-pipeline-") as tmp:
        work = Path(tmp)
        try:
            asyncio.run(bench(start_redis(procs, work, None), work, args.posts, args.evict_mb))
        finally:
            procs.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
