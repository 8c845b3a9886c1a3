"""Count stage: the post counted once, in every counter it belongs to, and refused over the form's
per-IP rate limit.

One counters call carries the engine's velocity dimensions (IP, network, e-mail, form) and the
form's rate-limit key: a Redis-backed call costs ~15 us of Python whether it holds one key or
five, and a scored post used to make two. The cap is checked after the bounded body read (the
body came with the headers for nearly every form) and before anything is scored, so a flood
still costs no scoring, origin capacity or credits.
"""

from __future__ import annotations

import logging
import math
import time

from proxy import metrics
from proxy.stages.flow import Flow, Respond
from rules.counters import Counters

log = logging.getLogger("activelead.proxy.count")


class Count:
    """Enforce mode: 429 with Retry-After over the limit. Monitor mode: counted, forwarded.

    Sets `flow.velocity` and `flow.counted` for the score stage: a timeout (the form's
    score_timeout_s, the one wait in scoring) there applies the form's on_error policy; a
    failing or degraded store scores without (exact) velocity, with the `degraded` label."""

    always = False

    def __init__(self, counters: Counters) -> None:
        self._counters = counters

    async def __call__(self, flow: Flow) -> None:
        form, sub, engine = flow.form, flow.submission, flow.engine
        assert form is not None and sub is not None and engine is not None
        cfg = form.config
        cap = cfg.rate_limit
        # Test submissions must not push real visitors over a velocity limit; a flood of them
        # is still a flood, so the cap counts them.
        names, keys = ((), ()) if sub.is_test else engine.velocity_plan(sub)
        if cap.requests:
            keys = (*keys, (f"rl:{flow.site.id}:{form.id}:{flow.client_ip}", cap.window_s))
        if not keys:
            flow.counted = "ok"
            return
        try:
            counts = await self._counters.hit(keys, timeout_s=cfg.score_timeout_s)
        except TimeoutError:
            flow.counted = "timeout"  # the score stage applies on_error; the cap is not checked
            return
        except Exception as exc:  # a counting failure must never stop a person's post
            log.warning("counters failed for %s/%s (%s); scoring without velocity",
                        flow.site.id, form.id, type(exc).__name__)
            flow.counted = "error"
            return
        flow.counted = "degraded" if self._counters.degraded else "ok"
        # The cap's count comes last and is left out. (A keyword argument takes zip() off its
        # fast path: strict=False cost 0.5 us here.)
        flow.velocity = dict(zip(names, counts))  # noqa: B905
        if cap.requests and counts[-1] > cap.requests:
            self._over(flow, cap.requests, cap.window_s)

    @staticmethod
    def _over(flow: Flow, requests: int, window_s: int) -> None:
        assert flow.form is not None
        metrics.rate_limited(flow.site.id, flow.form.id)
        if (flow.mode or flow.form.mode) != "enforce":
            return
        # The sliding count falls as the previous window ages out; the end of the current one
        # is a safe, simple promise.
        retry_after = max(1, math.ceil(window_s - time.time() % window_s))
        flow.action = "rate_limited"
        flow.outcome = Respond(
            429,
            f"Too Many Requests: at most {requests} posts per {window_s} s are accepted "
            f"here; please try again in {retry_after} s.\n",
            "text/plain",
            {"Retry-After": str(retry_after)},
        )
