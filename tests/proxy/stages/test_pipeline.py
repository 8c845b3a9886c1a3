"""The pipeline: one declared order, and an earlier decision short-circuits later stages."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from proxy.events import LogReporter
from proxy.stages import build_pipeline, run_pipeline
from proxy.stages.act import Act
from proxy.stages.count import Count
from proxy.stages.flow import Respond
from proxy.stages.match import Match
from proxy.stages.read import Read
from proxy.stages.record import Record, utc_ms
from proxy.stages.score import Score
from proxy.stages.stepup import StepUp
from proxy.stages.token import Token
from proxy.tokens import TokenSigner
from rules import Engine, Scorer
from rules.counters import MemoryCounters
from tests.proxy.stages.conftest import make_flow, make_site


class Collect(LogReporter):
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: Any) -> None:
        self.events.append(dict(event))


def pipeline(engine: Engine, reporter: Collect) -> list[Any]:
    counters = MemoryCounters()
    return build_pipeline(signer=TokenSigner("k" * 20, [], 60), counters=counters,
                          scorer=Scorer(engine, counters), reporter=reporter, token_ttl_s=60)


def test_order_is_declared_once(engine: Engine) -> None:
    kinds = [type(s) for s in pipeline(engine, Collect())]
    assert kinds == [Match, Read, Count, Token, Score, Act, StepUp, Record]


async def test_unprotected_path_is_passthrough(engine: Engine) -> None:
    reporter = Collect()
    flow = await run_pipeline(pipeline(engine, reporter), make_flow(path="/elsewhere"))
    assert flow.passthrough and flow.submission is None and reporter.events == []


async def test_already_decided_skips_scoring_and_records_nothing(engine: Engine) -> None:
    reporter = Collect()
    flow = await run_pipeline(pipeline(engine, reporter),
                              make_flow(body=b"%ff=1"))  # read decides: 400
    assert isinstance(flow.outcome, Respond) and flow.outcome.status == 400
    assert flow.verdict is None and flow.token is None
    assert reporter.events == []


async def test_full_run_records_one_event(engine: Engine) -> None:
    reporter = Collect()
    flow = await run_pipeline(pipeline(engine, reporter), make_flow())
    assert flow.verdict is not None and flow.submission is not None
    assert flow.submission.signals.token_state == "missing"
    assert [e["action"] for e in reporter.events] == [flow.action]


class CountingCalls(MemoryCounters):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []

    async def hit(self, keys: Any, *, stale_ok: bool = False,
                  timeout_s: float | None = None) -> list[float]:
        self.calls.append([key for key, _ in keys])
        return await super().hit(keys, stale_ok=stale_ok, timeout_s=timeout_s)


async def test_one_counters_call_per_post_carries_velocity_and_the_rate_limit(
    engine: Engine,
) -> None:
    """The count stage makes the post's only counters call (with Redis each call costs its own
    Python and may wait for a sync): velocity dimensions and the form's cap together. Its counts
    reach the verdict, and over the cap the post is refused before it is scored."""
    counters = CountingCalls()
    reporter = Collect()
    site = make_site(mode="enforce", forms=[
        {"id": "contact", "path": "/contact", "rate_limit": {"requests": 2, "window_s": 60}}])
    stages = build_pipeline(signer=TokenSigner("k" * 20, [], 60), counters=counters,
                            scorer=Scorer(engine, counters), reporter=reporter, token_ttl_s=60)
    flows = [await run_pipeline(stages, make_flow(site=site)) for _ in range(3)]
    assert len(counters.calls) == 3
    assert all(len(keys) == len(set(keys)) for keys in counters.calls)
    assert [k.split(":")[1] for k in counters.calls[0]] == ["ip", "net", "em", "form", "shop"]
    assert counters.calls[0][-1] == "rl:shop:contact:81.2.69.160"
    assert flows[1].velocity is not None and flows[1].velocity["ip"] == 2.0
    assert flows[1].verdict is not None and flows[1].counted == "ok"
    refused = flows[2]
    assert isinstance(refused.outcome, Respond) and refused.outcome.status == 429
    assert refused.verdict is None and len(reporter.events) == 2


class BrokenCounters(MemoryCounters):
    async def hit(self, keys: Any, *, stale_ok: bool = False,
                  timeout_s: float | None = None) -> list[float]:
        raise ConnectionError("counters store gone")


async def test_a_failing_counters_store_scores_without_velocity(engine: Engine) -> None:
    """A counting failure never stops a person's post: scored without velocity, labelled
    `degraded`, recorded; the cap is not checked (nothing to check it against)."""
    reporter = Collect()
    site = make_site(mode="enforce", forms=[
        {"id": "contact", "path": "/contact", "rate_limit": {"requests": 1, "window_s": 60}}])
    broken = BrokenCounters()
    stages = build_pipeline(signer=TokenSigner("k" * 20, [], 60), counters=broken,
                            scorer=Scorer(engine, broken), reporter=reporter, token_ttl_s=60)
    flows = [await run_pipeline(stages, make_flow(site=site)) for _ in range(2)]
    for flow in flows:
        assert flow.counted == "error" and flow.velocity is None and not flow.score_failed
        assert flow.verdict is not None and flow.verdict.degraded
        assert "degraded" in flow.verdict.labels
        assert not (isinstance(flow.outcome, Respond) and flow.outcome.status == 429)
    assert len(reporter.events) == 2


def test_event_time_matches_datetime_to_the_millisecond() -> None:
    """utc_ms formats the second once and adds the milliseconds: the same text as datetime's
    isoformat, rounding at the microsecond included (x.9999996 is the next second)."""
    rnd = random.Random(3)
    stamps = [0.0, 1.9999996, 1763892000.123, 1763892000.9995, 4102444799.999999]
    stamps += [rnd.uniform(0, 4e9) for _ in range(5000)]
    for unix in stamps:
        want = datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds")
        assert utc_ms(unix) == want.replace("+00:00", "Z"), unix
