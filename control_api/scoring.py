"""The scoring engine, loaded once per process, and a per-project engine for each config version."""

from __future__ import annotations

import asyncio
import logging
import time

from rules import Engine, Scorer, ScoringConfig, Submission, Thresholds, Verdict, new_trace_id
from rules.counters import Counters

log = logging.getLogger("activelead.control_api.scoring")


class ScoringService:
    """Scores a submission with its project's rules and thresholds; never raises."""

    def __init__(self, engine: Engine, counters: Counters) -> None:
        self._engine = engine
        self._scorer = Scorer(engine, counters)
        self._projects: dict[str, tuple[int, Engine]] = {}

    @classmethod
    async def load(cls, base: ScoringConfig, counters: Counters) -> ScoringService:
        # ~0.5 s of data loading: off the event loop, once, before the server accepts requests.
        engine = await asyncio.get_running_loop().run_in_executor(None, Engine.from_config, base)
        return cls(engine, counters)

    def validate(self, config: ScoringConfig) -> None:
        """Raise ConfigError naming the bad key if the engine cannot compile `config`."""
        self._engine.with_config(config, source="project")

    def engine_for(self, project_id: str, version: int, config: ScoringConfig) -> Engine:
        cached = self._projects.get(project_id)
        if cached is not None and cached[0] == version:
            return cached[1]
        engine = self._engine.with_config(config, source=f"project {project_id}")
        self._projects[project_id] = (version, engine)
        return engine

    async def score(self, sub: Submission, engine: Engine, thresholds: Thresholds) -> Verdict:
        started = time.perf_counter()
        try:
            return await self._scorer.score(sub, thresholds=thresholds, engine=engine)
        except Exception:
            # The failure policy for the API: fail open with an explicit `degraded` verdict
            # (never a 500 that a plugin would turn into a broken form); it is not charged.
            log.exception("scoring failed; answering a degraded verdict")
            return Verdict(
                trace_id=new_trace_id(),
                score=0,
                decision="allowed",
                labels=["degraded"],
                hits=[],
                country_hint=None,
                degraded=True,
                elapsed_us=int((time.perf_counter() - started) * 1e6),
                is_test=sub.is_test,
            )
