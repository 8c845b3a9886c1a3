"""Engine throughput on one core: submissions/s, p50/p99 per submission, start-up time and RSS.

Baseline in the same run: the cost of building the Submission objects alone (JSON -> dataclass),
so the ratio shows what scoring adds. Two workloads: every IP/e-mail/UA distinct (cold caches,
the worst case) and a realistic mix where visitors repeat.

    .venv/bin/python bench/engine_bench.py [--n 20000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import resource
import statistics
import time

SAMPLE_UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "python-requests/2.32.3",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
]
MESSAGES = [
    "Hello, I would like a quote for painting three rooms next month. Thanks!",
    "WINNER!! You have been selected for a £900 prize. To claim call 09061701461 now.",
    "We offer SEO services and backlinks to rank your site on the first page of Google: http://seo.example",
    "Can you call me back about the delivery date? My number is in the form.",
]


def make_json(i: int, distinct: bool) -> dict[str, object]:
    r = random.Random(i)
    n = i if distinct else r.randrange(300)
    return {
        "formId": "contact",
        "ip": f"{(n * 37) % 223 + 1}.{(n * 11) % 250}.{n % 250}.{(n * 7) % 250 + 1}",
        "email": f"user{n}@example{n % 50}.com",
        # user agents repeat in real traffic even when visitors don't: a pool of 600 variants
        "userAgent": SAMPLE_UAS[n % len(SAMPLE_UAS)] + (f" v/{n % 100}" if distinct else ""),
        "fields": {"name": f"Person {n}",
                   "message": MESSAGES[n % len(MESSAGES)] + (f" Ref {n}." if distinct else "")},
    }


def run(n: int, distinct: bool) -> None:
    from rules import Engine, MemoryCounters, Submission

    engine = Engine.from_config()
    counters = MemoryCounters()
    bodies = [make_json(i, distinct) for i in range(n)]
    started = time.perf_counter()
    subs = [Submission.from_json(b) for b in bodies]
    parse_s = time.perf_counter() - started
    times = []
    started = time.perf_counter()
    for sub in subs:
        t = time.perf_counter_ns()
        keys = engine.velocity_keys(sub)
        counts = counters.hit_now([(k, w) for _, k, w in keys])
        engine.score(sub, {name: c for (name, _, _), c in zip(keys, counts, strict=True)})
        times.append(time.perf_counter_ns() - t)
    total = time.perf_counter() - started
    times.sort()
    label = ("distinct visitors, IPs, e-mails and texts" if distinct
             else "repeating visitors (300 distinct)")
    print(f"{label}: {n / total:,.0f} submissions/s; p50 {times[n // 2] / 1000:.1f} us, "
          f"p99 {times[int(n * 0.99)] / 1000:.1f} us, mean {statistics.fmean(times) / 1000:.1f} us")
    print(f"  baseline (parse only): {n / parse_s:,.0f}/s -> scoring costs "
          f"{(total / n) / (parse_s / n):.1f}x the parse")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {0})  # one core, as the target says
    started = time.perf_counter()
    from rules import Engine

    Engine.from_config()
    print(f"start-up (import + load all data + compile rules): {time.perf_counter() - started:.2f} s")
    print(f"RSS after loading all data: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    run(args.n, distinct=True)
    run(args.n, distinct=False)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"max RSS after the runs (includes the {2 * args.n:,} submissions held): {rss:.0f} MB")


if __name__ == "__main__":
    main()
