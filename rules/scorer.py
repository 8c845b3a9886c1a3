"""Async scoring: velocity counts from a Counters store, then the pure engine.

The only I/O in scoring is here: one counters call per submission (which the Redis store batches
with every other submission of the same event-loop tick). If the store is degraded the verdict
says so; if it raises, scoring goes on without velocity and is marked degraded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from rules.config import Thresholds
from rules.counters import CounterKey, Counters
from rules.engine import Engine
from rules.model import Submission, Verdict

log = logging.getLogger("activelead.scorer")


@dataclass(slots=True)
class Counted:
    """What one counters call said about a submission."""

    velocity: dict[str, float] | None = None  # dimension -> count; None: nothing counted
    extra: list[float] = field(default_factory=list)  # the caller's own keys' counts, in order
    state: str = "ok"  # ok | degraded (the store is down: local counts) | error (no counts)


class Scorer:
    def __init__(self, engine: Engine, counters: Counters) -> None:
        self.engine = engine
        self.counters = counters

    async def count(self, sub: Submission, engine: Engine | None = None,
                    extra: Sequence[CounterKey] = (), *,
                    timeout_s: float | None = None) -> Counted:
        """Count `sub` in its velocity dimensions and `extra` keys (e.g. the proxy's per-form
        cap) in one counters call. A test submission is not counted in velocity: it must not
        push real visitors over a limit. `timeout_s` bounds the wait: TimeoutError past it, for
        the caller's failure policy; any other failure is logged and gives state `error`."""
        names, keys = ((), ()) if sub.is_test else (engine or self.engine).velocity_plan(sub)
        if extra:
            keys = (*keys, *extra)
        if not keys:
            return Counted()
        try:
            counts = await self.counters.hit(keys, timeout_s=timeout_s)
        except TimeoutError:
            raise
        except Exception:
            log.exception("velocity counters failed; scoring without them")
            return Counted(state="error")
        # (A keyword argument takes zip() off its fast path: strict= cost 0.5 us here; the
        # extra keys' counts come after the velocity ones and are left out.)
        return Counted(dict(zip(names, counts)), counts[len(names):] if extra else [],  # noqa: B905
                       "degraded" if self.counters.degraded else "ok")

    async def score(self, sub: Submission, thresholds: Thresholds | None = None,
                    engine: Engine | None = None, *, timeout_s: float | None = None) -> Verdict:
        """`timeout_s` bounds the wait for the counters (the only I/O): TimeoutError past it,
        for the caller's failure policy. Scoring itself is CPU and is not interrupted."""
        engine = engine or self.engine
        counted = await self.count(sub, engine, timeout_s=timeout_s)
        return engine.score(sub, counted.velocity, thresholds=thresholds,
                            degraded=counted.state != "ok")
