"""Count stage: the post counted once, in every counter it belongs to, and refused over the form's
per-IP rate limit.

One counters call carries the engine's velocity dimensions (IP, network, e-mail, form) and the
form's rate-limit key: a Redis-backed call costs ~15 us of Python whether it holds one key or
five, and a scored post used to make two. The cap is checked after the bounded body read (the
body came with the headers for nearly every form) and before anything is scored, so a flood
still costs no scoring, origin capacity or credits.
"""

from __future__ import annotations

import math
import time

from proxy import metrics
from proxy.stages.flow import Flow, Respond
from rules.scorer import Scorer


class Count:
    """Enforce mode: 429 with Retry-After over the limit. Monitor mode: counted, forwarded.

    Sets `flow.velocity` and `flow.counted` for the score stage: a timeout (the form's
    score_timeout_s, the one wait in scoring) there applies the form's on_error policy; a
    failing or degraded store scores without (exact) velocity, with the `degraded` label."""

    always = False

    def __init__(self, scorer: Scorer) -> None:
        self._scorer = scorer

    async def __call__(self, flow: Flow) -> None:
        form, sub = flow.form, flow.submission
        assert form is not None and sub is not None
        cfg = form.config
        cap = cfg.rate_limit
        # A flood of test submissions is still a flood: the cap counts them (velocity does not)
        extra = [(f"rl:{flow.site.id}:{form.id}:{flow.client_ip}", cap.window_s)] if cap.requests else []
        try:
            counted = await self._scorer.count(sub, flow.engine, extra,
                                               timeout_s=cfg.score_timeout_s)
        except TimeoutError:
            flow.counted = "timeout"  # the score stage applies on_error; the cap is not checked
            return
        flow.counted = counted.state
        flow.velocity = counted.velocity
        if counted.extra and counted.extra[0] > cap.requests:
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
