"""Counters: sliding windows in memory and in a real redis-server, batching, degrade and recover."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as redis

from rules import MemoryCounters, RedisCounters
from rules.counters import _sliding
from tests.services import RedisServer


def test_sliding_window_weights_previous_bucket() -> None:
    assert _sliding(now=1000.0, window=100, current=3, previous=10) == 13.0  # start of bucket
    assert _sliding(now=1050.0, window=100, current=3, previous=10) == 8.0   # halfway
    assert _sliding(now=1099.0, window=100, current=3, previous=10) == pytest.approx(3.1)


async def test_memory_counts_and_once() -> None:
    c = MemoryCounters()
    counts = [(await c.hit([("ip:a", 60), ("ip:b", 60)])) for _ in range(3)]
    assert [x[0] for x in counts] == [1, 2, 3]
    assert await c.once("tok", 60) is True
    assert await c.once("tok", 60) is False


def test_memory_counters_stay_bounded() -> None:
    c = MemoryCounters(max_keys=100)
    for i in range(1000):
        c.hit_now([(f"k{i}", 60)])
    assert len(c._buckets) <= 101


async def test_redis_counts_shared_between_instances(redis: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    a, b = RedisCounters(redis.url, prefix=prefix), RedisCounters(redis.url, prefix=prefix)
    try:
        await a.hit([("ip:x", 600)])
        await b.hit([("ip:x", 600)])
        (count,) = await a.hit([("ip:x", 600)])
        assert count >= 3 and not a.degraded
        assert await a.once("tok1", 60) is True
        assert await b.once("tok1", 60) is False  # replay seen by another proxy worker
    finally:
        await a.close()
        await b.close()


async def test_redis_batches_one_command_per_tick(redis_own: RedisServer) -> None:
    c = RedisCounters(redis_own.url, prefix="t:")
    probe = redis.Redis.from_url(redis_own.url)

    try:
        await c.hit([("warm", 60)])  # loads the script once
        stats = await probe.info("commandstats")
        before = stats["cmdstat_evalsha"]["calls"], stats["cmdstat_incr"]["calls"]
        results = await asyncio.gather(*(c.hit([("form:f", 60), (f"ip:{i}", 60)])
                                         for i in range(200)))
        stats = await probe.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] - before[0] == 1  # one command for the tick
        assert stats["cmdstat_incr"]["calls"] - before[1] == 400  # 200 requests x 2 counters
        assert sorted(r[0] for r in results) == list(range(1, 201))
        assert all(r[1] == 1 for r in results)
    finally:
        await c.close()
        await probe.aclose()


async def test_redis_down_degrades_to_memory_and_recovers(redis_own: RedisServer) -> None:
    c = RedisCounters(redis_own.url, prefix="f:", retry_after_s=0.2, timeout_s=0.2)
    try:
        await c.hit([("k", 60)])
        redis_own.stop()
        counts = await c.hit([("k", 60)])  # answered from memory, no exception
        assert counts == [1.0] and c.degraded
        assert await c.once("tok", 60) is True
        redis_own.start()
        await asyncio.sleep(0.3)
        counts = await c.hit([("k", 60)])
        assert not c.degraded and counts[0] >= 1
    finally:
        await c.close()


async def test_scorer_marks_degraded_when_redis_is_gone(redis_own: RedisServer) -> None:
    from rules import Engine, Scorer
    from tests.rules.conftest import make_submission

    engine = Engine.from_config()
    counters = RedisCounters(redis_own.url, prefix="s:", retry_after_s=5, timeout_s=0.2)
    scorer = Scorer(engine, counters)
    try:
        assert not (await scorer.score(make_submission())).degraded
        redis_own.stop()
        verdict = await scorer.score(make_submission())
        assert verdict.degraded and "degraded" in verdict.labels
    finally:
        await counters.close()


async def test_scorer_velocity_trips_after_limit() -> None:
    from rules import Engine, Scorer
    from tests.rules.conftest import make_submission

    scorer = Scorer(Engine.from_config(), MemoryCounters())
    labels = [(await scorer.score(make_submission(email="same@example.org"))).labels
              for _ in range(5)]
    assert "velocity_email" not in labels[2] and "velocity_email" in labels[3]
    test_run = await scorer.score(make_submission(email="same@example.org", isTest=True))
    assert "velocity_email" not in test_run.labels  # test submissions are not counted
