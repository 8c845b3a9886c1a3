"""Prometheus metrics of the control API, served at GET /metrics.

A registry per app rather than prometheus-client's global one: tests and `activelead up` build
several apps in one process, and each must count only its own requests. With several workers
(activelead/workers.py sets PROMETHEUS_MULTIPROC_DIR) every worker writes its figures to files
there and whichever worker answers a scrape sums them all.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
)

from activelead.tally import Tally, exposition, flushed_every
from control_api.errors import Handler


class Metrics:
    """The app's counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "activelead_control_api_requests_total",
            "HTTP requests by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "activelead_control_api_request_seconds",
            "Request handling time by route.",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self.decisions = Counter(
            "activelead_control_api_scored_total",
            "Scored submissions by source and decision.",
            ["source", "decision"],
            registry=self.registry,
        )
        self.credits_used = Counter(
            "activelead_control_api_credits_used_total",
            "Credits debited for scoring.",
            registry=self.registry,
        )
        self.webhooks = Counter(
            "activelead_control_api_webhook_attempts_total",
            "Webhook delivery attempts by result.",
            ["result"],
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._scored: dict[tuple[str, str], Any] = {}
        # Increments and observations tallied, added to their children by flush(), which every
        # scrape calls first (activelead/tally.py: a scored call made three locked inc()s).
        self.tally = Tally()
        self._count = self.tally.add
        self.flush = self.tally.flush

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request; the labelled children are looked up once per (method, route,
        status), not per request (`labels()` costs more than the increment)."""
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            if len(self._children) > 10_000:  # arbitrary methods on unknown routes: stay bounded
                self._children.clear()
            children = self._children[key] = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(route),
            )
        self._count(children[0])
        self.tally.observe(children[1], seconds)

    def observe_scored(self, source: str, decision: str) -> None:
        """Count one scored submission (the child looked up once per source and decision)."""
        child = self._scored.get((source, decision))
        if child is None:
            child = self._scored[(source, decision)] = self.decisions.labels(source, decision)
        self._count(child)

    def observe_credit_used(self) -> None:
        self._count(self.credits_used)


METRICS = web.AppKey("metrics", Metrics)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        # The route template, never the raw path: ids in paths would explode cardinality.
        info = request.match_info.route.resource
        route = info.canonical if info is not None else "unmatched"
        request.app[METRICS].observe_request(request.method, route, status, time.perf_counter() - started)


async def metrics_endpoint(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    metrics.flush()
    return web.Response(body=exposition(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def metrics_flush_ctx(app: web.Application) -> AsyncIterator[None]:
    """With several workers a scrape reaches one of them: each adds its tallies to the shared
    files every second, so the sum lags at most that."""
    async with flushed_every(app[METRICS].tally, 1.0):
        yield
