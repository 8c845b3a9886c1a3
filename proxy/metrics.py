"""Prometheus metrics of the proxy (served on the admin port).

Module-level, as prometheus-client intends: one registry per process. With several workers the
supervisor sets PROMETHEUS_MULTIPROC_DIR before they start and the admin endpoint aggregates.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import os
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

REQUESTS = Counter(
    "activelead_proxy_requests_total", "Requests handled, by site and kind.", ["site", "kind"]
)
UPSTREAM_ERRORS = Counter(
    "activelead_proxy_upstream_errors_total", "Origin failures, by site and kind.", ["site", "kind"]
)
UPSTREAM_LATENCY = Histogram(
    "activelead_proxy_upstream_seconds",
    "Time until the origin's response headers arrived.",
    ["site"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DECISIONS = Counter(
    "activelead_proxy_decisions_total", "Scored submissions, by site, form and action.",
    ["site", "form", "action"],
)
LABELS = Counter(
    "activelead_proxy_labels_total", "Labels on scored submissions.", ["site", "label"]
)
SCORING_LATENCY = Histogram(
    "activelead_proxy_scoring_seconds",
    "Time spent in the stages of a protected request (read to record).",
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
DEGRADED = Counter(
    "activelead_proxy_degraded_total", "Submissions scored degraded or failed open.", ["reason"]
)
SPOOL_DEPTH = Gauge(
    "activelead_proxy_spool_events", "Events in the local spool not yet accepted upstream.",
    multiprocess_mode="livesum",
)
RATE_LIMITED = Counter(
    "activelead_proxy_rate_limited_total", "Posts over a form's per-IP rate limit.",
    ["site", "form"],
)
SHIP_FAILURES = Counter("activelead_proxy_ship_failures_total", "Failed event batch uploads.")
DEAD_LETTERED = Counter(
    "activelead_proxy_dead_lettered_events_total",
    "Events the control API refused for good, kept in <state_dir>/rejected/ for an operator.",
)
SNIPPET_CHALLENGES = Counter(
    "activelead_proxy_snippet_challenges_total",
    "Snippet challenge requests by outcome: issued, stepped_up, or the error code "
    "(origin_not_allowed usually means snippet.allowed_origins misses a page's origin).",
    ["result"],
)


_KINDS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@functools.lru_cache(maxsize=1024)
def _request_child(site: str, kind: str) -> Any:
    return REQUESTS.labels(site, kind)


def request(site: str, method: str) -> None:
    """Count one request; label children are cached (labels() costs a lock and a lookup)."""
    TALLY.add(_request_child(site, method if method in _KINDS else "other"))


class Tally:
    """Metric updates of the hot paths, kept in plain dicts and added to their Prometheus
    children in one go by `flush()`: a counter child's `inc()` takes a lock (~1.8 us) and a
    histogram's `observe()` two (~3 us), and every request made several. Flushed before every
    scrape of this process and every second by each worker (`flush_every`), so other workers'
    figures are at most that late."""

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


TALLY = Tally()


async def flush_every(interval_s: float = 1.0) -> None:
    """Runs for the life of a worker; the caller cancels it (and flushes once more)."""
    while True:
        await asyncio.sleep(interval_s)
        TALLY.flush()


@functools.lru_cache(maxsize=4096)
def _label_child(site: str, label: str) -> Any:
    return LABELS.labels(site, label)


def labels(site: str, names: Iterable[str]) -> None:
    add = TALLY.add
    for name in names:
        add(_label_child(site, name))


@functools.lru_cache(maxsize=4096)
def _decision_child(site: str, form: str, action: str) -> Any:
    return DECISIONS.labels(site, form, action)


def decision(site: str, form: str, action: str) -> None:
    TALLY.add(_decision_child(site, form, action))


@functools.lru_cache(maxsize=1024)
def _upstream_child(site: str) -> Any:
    return UPSTREAM_LATENCY.labels(site)


def upstream_latency(site: str, seconds: float) -> None:
    TALLY.observe(_upstream_child(site), seconds)


def rate_limited(site: str, form: str) -> None:
    _rate_limited_child(site, form).inc()


@functools.lru_cache(maxsize=4096)
def _rate_limited_child(site: str, form: str) -> Any:
    return RATE_LIMITED.labels(site, form)


def render() -> tuple[bytes, str]:
    """The exposition text for /metrics (aggregated over workers in multiprocess mode)."""
    TALLY.flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
