"""Score stage: asks the engine for a verdict, within the form's time budget."""

from __future__ import annotations

import logging
import time

from proxy import metrics
from proxy.stages.flow import Flow, ScorerLike
from rules.model import Verdict, new_trace_id

log = logging.getLogger("activelead.proxy.score")


def degraded_verdict(blocked: bool, started: float) -> Verdict:
    """The stand-in verdict when scoring failed: says so in its labels, explains nothing else."""
    return Verdict(
        trace_id=new_trace_id(),
        score=0,
        decision="blocked" if blocked else "allowed",
        labels=["degraded"],
        hits=[],
        country_hint=None,
        degraded=True,
        elapsed_us=int((time.perf_counter() - started) * 1e6),
    )


class Score:
    """On failure or timeout applies the form's on_error policy; never raises to the edge."""

    always = False

    def __init__(self, scorer: ScorerLike) -> None:
        self._scorer = scorer

    async def __call__(self, flow: Flow) -> None:
        assert flow.form is not None and flow.submission is not None
        cfg = flow.form.config
        started = time.perf_counter()
        try:
            project = flow.project
            # The budget bounds the one wait in scoring, the counters' (a timer around the
            # whole call would cost every post ~8 us for a wait most posts never make).
            flow.verdict = await self._scorer.score(
                flow.submission,
                thresholds=cfg.thresholds or (project.thresholds if project else None),
                engine=project.engine if project else None,
                timeout_s=cfg.score_timeout_s,
            )
        except Exception as exc:  # any scoring failure: the form's policy, never a 500
            reason = "timeout" if isinstance(exc, TimeoutError) else "error"
            log.error("scoring failed for %s/%s (%s: %s); on_error=%s", flow.site.id,
                      flow.form.id, reason, exc, cfg.on_error)
            metrics.DEGRADED.labels(reason).inc()
            flow.verdict = degraded_verdict(cfg.on_error == "block", started)
            flow.extra["score_failed"] = True
            return
        if flow.verdict.degraded:
            metrics.DEGRADED.labels("counters").inc()
