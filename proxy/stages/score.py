"""Score stage: the engine's verdict on the submission, with the counts the count stage made."""

from __future__ import annotations

import logging
import time

from proxy import metrics
from proxy.stages.flow import Flow
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
    """On failure (or counters past the form's time budget) applies the form's on_error
    policy; never raises to the edge. The engine is pure CPU: nothing here waits."""

    always = False

    async def __call__(self, flow: Flow) -> None:
        form, sub, engine = flow.form, flow.submission, flow.engine
        assert form is not None and sub is not None and engine is not None
        cfg = form.config
        started = time.perf_counter()
        counted = flow.counted
        try:
            if counted == "timeout":
                raise TimeoutError(f"counters took longer than {cfg.score_timeout_s} s")
            project = flow.project
            flow.verdict = engine.score(
                sub, flow.velocity,
                thresholds=cfg.thresholds or (project.thresholds if project else None),
                degraded=counted in ("degraded", "error"),
            )
        except Exception as exc:  # any scoring failure: the form's policy, never a 500
            reason = "timeout" if isinstance(exc, TimeoutError) else "error"
            log.error("scoring failed for %s/%s (%s: %s); on_error=%s", flow.site.id,
                      form.id, reason, exc, cfg.on_error)
            metrics.DEGRADED.labels(reason).inc()
            flow.verdict = degraded_verdict(cfg.on_error == "block", started)
            flow.score_failed = True
            return
        if flow.verdict.degraded:
            metrics.DEGRADED.labels("counters").inc()
