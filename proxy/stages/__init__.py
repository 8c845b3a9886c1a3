"""The protected-form pipeline: small stages over one shared Flow, in one declared order.

match -> read -> count -> token -> score -> act -> stepup -> record. A stage that decides (a Respond
outcome, or pass-through) short-circuits the rest, except stages marked `always` (record).
"""

from __future__ import annotations

import time
from typing import Protocol

from proxy import metrics
from proxy.stages.act import Act
from proxy.stages.count import Count
from proxy.stages.flow import Flow, Respond
from proxy.stages.match import Match, ProjectLookup
from proxy.stages.read import Read
from proxy.stages.record import Record, Reporter
from proxy.stages.score import Score
from proxy.stages.stepup import StepUp
from proxy.stages.token import Token
from proxy.tokens import TokenSigner
from rules.challenge import ChallengeSigner
from rules.counters import Counters
from rules.scorer import Scorer


class Stage(Protocol):
    always: bool

    async def __call__(self, flow: Flow) -> None: ...


def build_pipeline(
    *, signer: TokenSigner, counters: Counters, scorer: Scorer, reporter: Reporter,
    token_ttl_s: int, challenges: ChallengeSigner | None = None,
    project_for: ProjectLookup | None = None, step_up_script: str | None = None,
) -> list[Stage]:
    """The one place the order of stages is written down. `step_up_script`: URL of the built
    step-up script; without it review-band form posts from pages are forwarded, not held."""
    return [
        Match(scorer.engine, project_for),
        Read(),
        Count(scorer),
        Token(signer, counters, token_ttl_s, challenges),
        Score(),
        Act(),
        StepUp(challenges, step_up_script),
        Record(reporter),
    ]


async def run_pipeline(stages: list[Stage], flow: Flow) -> Flow:
    started = time.perf_counter()
    remaining = iter(stages)
    for stage in remaining:
        await stage(flow)
        if flow.passthrough:
            return flow
        if type(flow.outcome) is Respond:  # decided: only the stages that always run
            for later in remaining:
                if later.always:
                    await later(flow)
    metrics.TALLY.observe(metrics.SCORING_LATENCY, time.perf_counter() - started)
    return flow
