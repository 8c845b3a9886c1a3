"""Async scoring: velocity counts from a Counters store, then the pure engine.

The only I/O in scoring is here: one counters call per submission (which the Redis store batches
with every other submission of the same event-loop tick). If the store is degraded the verdict
says so; if it raises, scoring goes on without velocity and is marked degraded.
"""

from __future__ import annotations

import logging

from rules.config import Thresholds
from rules.counters import Counters
from rules.engine import Engine
from rules.model import Submission, Verdict

log = logging.getLogger("activelead.scorer")


class Scorer:
    def __init__(self, engine: Engine, counters: Counters) -> None:
        self.engine = engine
        self.counters = counters

    async def score(self, sub: Submission, thresholds: Thresholds | None = None,
                    engine: Engine | None = None, *, timeout_s: float | None = None) -> Verdict:
        """`timeout_s` bounds the wait for the counters (the only I/O): TimeoutError past it,
        for the caller's failure policy. Scoring itself is CPU and is not interrupted."""
        engine = engine or self.engine
        degraded = False
        velocity: dict[str, float] = {}
        if not sub.is_test:  # test submissions must not push real visitors over a limit
            names, keys = engine.velocity_plan(sub)
            try:
                counts = await self.counters.hit(keys, timeout_s=timeout_s)
                velocity = dict(zip(names, counts, strict=True))
            except TimeoutError:
                raise
            except Exception:
                log.exception("velocity counters failed; scoring without them")
                degraded = True
            degraded = degraded or self.counters.degraded
        return engine.score(sub, velocity, thresholds=thresholds, degraded=degraded)
