"""Prometheus metrics of the proxy (served on the admin port).

Module-level, as prometheus-client intends: one registry per process. With several workers the
supervisor sets PROMETHEUS_MULTIPROC_DIR before they start and the admin endpoint aggregates.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
)

from activelead.tally import Tally, exposition

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


TALLY = Tally()


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
    return exposition(), CONTENT_TYPE_LATEST
