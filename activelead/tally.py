"""Prometheus updates of a hot path, batched: used by the proxy and the control API."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess

from activelead.workers import METRICS_DIR


class Tally:
    """Counter increments and histogram observations kept in plain dicts and added to their
    Prometheus children in one go by `flush()`: a counter child's `inc()` takes a lock (~1.8 us)
    and a histogram's `observe()` two (~3 us), and every request made several. The owner flushes
    before every scrape (and the proxy's workers every second), so figures lag at most that."""

    def __init__(self) -> None:
        self._pending: dict[Any, int] = {}
        self._observed: dict[Any, list[float]] = {}  # child -> [sum, count per bucket...]

    def add(self, child: Any) -> None:
        pending = self._pending
        pending[child] = pending.get(child, 0) + 1

    def observe(self, child: Any, value: float) -> None:
        """A histogram observation, counted in the bucket `observe()` would count it in (the
        first upper bound >= value; the last bound is +Inf)."""
        row = self._observed.get(child)
        if row is None:
            row = self._observed[child] = [0.0] * (len(child._upper_bounds) + 1)
        row[0] += value
        row[1 + bisect.bisect_left(child._upper_bounds, value)] += 1

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for child, n in pending.items():
            child.inc(n)
        observed, self._observed = self._observed, {}
        for child, row in observed.items():
            # prometheus_client's own fields (pinned by tests/proxy/test_admin.py)
            child._sum.inc(row[0])
            for bucket, count in zip(child._buckets, row[1:], strict=True):
                if count:
                    bucket.inc(count)


@contextlib.asynccontextmanager
async def flushed_every(tally: Tally, interval_s: float = 1.0) -> AsyncIterator[None]:
    """Flush `tally` every `interval_s` while inside, and once more on the way out. With several
    workers a scrape reaches one of them; the others' figures are what they last flushed."""

    async def flush_loop() -> None:
        while True:
            await asyncio.sleep(interval_s)
            tally.flush()

    task = asyncio.create_task(flush_loop(), name="metrics-flush")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        tally.flush()


def exposition(registry: CollectorRegistry = REGISTRY) -> bytes:
    """The /metrics text of `registry`; with several workers (PROMETHEUS_MULTIPROC_DIR set by
    activelead/workers.py) the sum of every worker's figures instead."""
    if os.environ.get(METRICS_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)
