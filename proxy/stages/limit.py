"""Limit stage: a hard per-IP cap on posts to a form, before any body is read or scored.

Velocity rules in the engine raise the score of a busy IP; this stage is the cheap backstop that
keeps a flood from costing origin capacity, scoring CPU and the customer's credits. It counts in
the same store as everything else (Redis across workers and proxies when configured).
"""

from __future__ import annotations

import logging
import math
import time

from proxy import metrics
from proxy.stages.flow import Flow, Respond
from rules.counters import Counters

log = logging.getLogger("activelead.proxy.limit")


class Limit:
    """Enforce mode: 429 with Retry-After over the limit. Monitor mode: counted, forwarded."""

    always = False

    def __init__(self, counters: Counters) -> None:
        self._counters = counters

    async def __call__(self, flow: Flow) -> None:
        form = flow.form
        assert form is not None
        cfg = form.config.rate_limit
        if not cfg.requests:
            return
        key = f"rl:{flow.site.id}:{form.id}:{flow.client_ip}"
        try:
            # Never waits for Redis: answered from this worker's view, which each sync (50 ms
            # after a hit) brings up to date. A cap is a flood backstop, so missing the other
            # workers' hits since this worker's last sync of the key (one or two posts) is a
            # fair price for no round trip before the body is read; velocity rules count exactly.
            [count] = await self._counters.hit([(key, cfg.window_s)], stale_ok=True)
        except Exception as exc:  # a counting failure must never stop a person's post
            log.warning("rate limit not checked for %s/%s: %s", flow.site.id, form.id,
                        type(exc).__name__)
            metrics.DEGRADED.labels("rate_limit").inc()
            return
        if count <= cfg.requests:
            return
        metrics.rate_limited(flow.site.id, form.id)
        if (flow.mode or form.mode) != "enforce":
            return
        # The sliding count falls as the previous window ages out; the end of the current one
        # is a safe, simple promise.
        retry_after = max(1, math.ceil(cfg.window_s - time.time() % cfg.window_s))
        flow.action = "rate_limited"
        flow.outcome = Respond(
            429,
            f"Too Many Requests: at most {cfg.requests} posts per {cfg.window_s} s are accepted "
            f"here; please try again in {retry_after} s.\n",
            "text/plain",
            {"Retry-After": str(retry_after)},
        )
