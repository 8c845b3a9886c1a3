"""Activelead's scoring domain: Submission -> facts (enrichers) -> rule hits -> Verdict.

Public API (what proxy/ and control_api/ import):

    from rules import Engine, Scorer, Submission, Signals, SubmissionError, Verdict
    engine = Engine.from_config(scoring_config)         # built once; loads data and rule packs
    verdict = engine.score(submission)                  # pure, synchronous, microseconds
    scorer = Scorer(engine, counters)                   # adds velocity through a Counters store
    verdict = await scorer.score(submission, thresholds=project_thresholds)
"""

from rules.config import ConfigError, ScoringConfig, Thresholds
from rules.counters import Counters, MemoryCounters, RedisCounters
from rules.engine import Engine
from rules.labels import LABELS
from rules.model import Hit, Signals, Submission, SubmissionError, Verdict, new_trace_id
from rules.scorer import Scorer

__all__ = [
    "LABELS",
    "ConfigError",
    "Counters",
    "Engine",
    "Hit",
    "MemoryCounters",
    "RedisCounters",
    "Scorer",
    "ScoringConfig",
    "Signals",
    "Submission",
    "SubmissionError",
    "Thresholds",
    "Verdict",
    "new_trace_id",
]
