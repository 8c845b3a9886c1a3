"""Counters: sliding windows in memory and in a real redis-server, batching, degrade and recover."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

import pytest
import redis.asyncio as redis

from rules import MemoryCounters, RedisCounters
from rules.counters import Bounded, _sliding
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


def test_memory_counters_stay_bounded_and_keep_what_is_in_use() -> None:
    c = MemoryCounters(max_keys=100)
    for i in range(1000):
        c.hit_now([(f"k{i}", 3600)])
        if i % 20 == 0:
            busy = c.hit_now([("busy", 3600)])[0]
        assert len(c._buckets) <= 100
    assert busy == 50  # the key in use was never forgotten
    assert c.hit_now([("k0", 3600)]) == [1]  # the long-unused one was
    for i in range(1000):
        c.once_now(f"t{i}", 3600)
        assert len(c._seen) <= 100
    assert c.once_now("t999", 3600) is False and c.once_now("t0", 3600) is True


def test_bounded_map_rotates_generations() -> None:
    m: Bounded[str, int] = Bounded(4)
    for i in range(4):
        m[f"k{i}"] = i
    assert len(m) == 4 and m.get("k0") == 0  # k0 read back from the old generation
    m["k4"] = 4  # each rotation drops the generation that went unused longest
    m["k5"] = 5
    assert m.get("k1") is None and m.get("k0") == 0 and m.get("k5") == 5 and len(m) <= 4


async def test_redis_counts_shared_between_instances(redis: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    a = RedisCounters(redis.url, prefix=prefix, sync_interval_s=0.05)
    b = RedisCounters(redis.url, prefix=prefix, sync_interval_s=0.05)
    try:
        assert await a.hit([("ip:x", 600)]) == [1]
        assert await b.hit([("ip:x", 600)]) == [2]  # cold on b: asks Redis, sees a's hit
        (count,) = await a.hit([("ip:x", 600)])  # hot on a: answered locally, b's hit not seen yet
        assert count == 2 and not a.degraded
        await asyncio.sleep(0.2)  # a's write-behind sync has run and brought b's hit back
        assert await a.hit([("ip:x", 600)]) == [4]
        assert await a.once("tok1", 60) is True
        assert await b.once("tok1", 60) is False  # replay seen by another proxy worker
    finally:
        await a.close()
        await b.close()


async def test_redis_hot_keys_cost_no_round_trip_and_are_written_behind(redis_own: RedisServer) -> None:
    probe = redis.Redis.from_url(redis_own.url)
    # A sync interval longer than the test: only the cold first hit and close() talk to Redis.
    c = RedisCounters(redis_own.url, prefix="h:", sync_interval_s=60, fresh_s=60)
    try:
        await c.hit([("warm", 60)])  # loads the script
        calls = (await probe.info("commandstats"))["cmdstat_evalsha"]["calls"]
        assert await c.hit([("form:f", 60)]) == [1]  # cold: one sync
        counts = [(await c.hit([("form:f", 60)]))[0] for _ in range(100)]
        assert counts == list(range(2, 102))
        assert (await probe.info("commandstats"))["cmdstat_evalsha"]["calls"] - calls == 1
        await c.close()  # a stopping worker ships what it counted
        keys = await probe.keys("h:c:form:f:60:*")
        assert [int(await probe.get(k)) for k in keys] == [101]
    finally:
        await c.close()
        await probe.aclose()


@pytest.mark.parametrize("max_keys", [4, 10, 1_000])
async def test_redis_warm_answers_are_what_the_buckets_hold(redis_own: RedisServer,
                                                            max_keys: int) -> None:
    """hit() counts a warm answer as it writes; it must be what _counts() reads back, also when
    a generation turns over mid-call (a tiny `max_keys` makes that happen all the time)."""
    now = [1_700_000_000.5]
    c = RedisCounters(redis_own.url, prefix=f"w{uuid.uuid4().hex[:8]}:", sync_interval_s=60,
                      fresh_s=60, max_keys=max_keys, clock=lambda: now[0])
    try:
        for i in range(300):
            keys = [(f"k{(i * 7 + j) % 13}", (7, 60)[j % 2]) for j in range(1 + i % 4)]
            counts = await c.hit(keys, stale_ok=i % 3 == 0)
            held = [(key, window, int(now[0] // window)) for key, window in keys]
            assert counts == c._counts(held, now[0]), i
            now[0] += (0.0, 0.4, 2.5)[i % 3]
    finally:
        await c.close()


async def test_redis_stale_ok_never_waits_yet_reaches_redis(redis_own: RedisServer) -> None:
    probe = redis.Redis.from_url(redis_own.url)
    a = RedisCounters(redis_own.url, prefix="s:", sync_interval_s=0.05)
    try:
        await a.hit([("warm", 60)])
        calls = (await probe.info("commandstats"))["cmdstat_evalsha"]["calls"]
        assert await a.hit([("rl:new", 60)], stale_ok=True) == [1]  # cold, answered locally
        assert (await probe.info("commandstats"))["cmdstat_evalsha"]["calls"] == calls
        await asyncio.sleep(0.2)
        keys = await probe.keys("s:c:rl:new:60:*")
        assert [int(await probe.get(k)) for k in keys] == [1]  # written behind
    finally:
        await a.close()
        await probe.aclose()


async def test_redis_busy_keys_do_not_queue_behind_a_slow_sync(redis_own: RedisServer) -> None:
    """A Redis round trip slower than `fresh_s` (a stalled server) must not make every busy key
    cold, each post then waiting for it: a key whose hits are in flight is answered locally,
    while a key never seen still waits for what Redis knows."""
    assert redis_own.proc is not None
    c = RedisCounters(redis_own.url, prefix="b:", sync_interval_s=0.05, fresh_s=0.1,
                      timeout_s=1.0)
    try:
        assert await c.hit([("busy", 60)]) == [1]  # cold: waits for one sync
        os.kill(redis_own.proc.pid, signal.SIGSTOP)
        try:
            assert await c.hit([("busy", 60)]) == [2]  # fresh; the next tick's sync now hangs
            await asyncio.sleep(0.3)  # well past fresh_s, that sync still under way
            assert await asyncio.wait_for(c.hit([("busy", 60)]), 0.1) == [3]
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(c.hit([("never-seen", 60)]), 0.1)
        finally:
            os.kill(redis_own.proc.pid, signal.SIGCONT)
        assert not c.degraded  # the stall was shorter than the sync's timeout
    finally:
        await c.close()


async def test_redis_write_behind_reaches_other_workers(redis_own: RedisServer) -> None:
    a = RedisCounters(redis_own.url, prefix="w:", sync_interval_s=0.05)
    b = RedisCounters(redis_own.url, prefix="w:", sync_interval_s=0.05)
    try:
        for _ in range(50):
            await a.hit([("ip:flood", 60)])
        await asyncio.sleep(0.2)
        assert await b.hit([("ip:flood", 60)]) == [51]
    finally:
        await a.close()
        await b.close()


async def test_redis_batches_one_command_per_tick(redis_own: RedisServer) -> None:
    c = RedisCounters(redis_own.url, prefix="t:")
    probe = redis.Redis.from_url(redis_own.url)

    try:
        await c.hit([("warm", 60)])  # loads the script once
        stats = await probe.info("commandstats")
        before = stats["cmdstat_evalsha"]["calls"], stats["cmdstat_incrby"]["calls"]
        results = await asyncio.gather(*(c.hit([("form:f", 60), (f"ip:{i}", 60)])
                                         for i in range(200)))
        stats = await probe.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] - before[0] == 1  # one command for the tick
        assert stats["cmdstat_incrby"]["calls"] - before[1] == 201  # one per distinct counter
        assert all(r == [200, 1] for r in results)  # every post of the tick sees the whole tick
    finally:
        await c.close()
        await probe.aclose()


async def test_redis_down_degrades_to_memory_and_recovers(redis_own: RedisServer) -> None:
    c = RedisCounters(redis_own.url, prefix="f:", retry_after_s=0.2, timeout_s=0.2, fresh_s=0.1)
    try:
        await c.hit([("k", 60)])
        redis_own.stop()
        await asyncio.sleep(0.15)  # the key is no longer fresh: the next hit asks Redis
        counts = await c.hit([("k", 60)])  # answered from memory, no exception
        assert counts == [2.0] and c.degraded
        assert await c.hit([("k", 60)]) == [3.0]  # counting goes on locally
        assert not c._dirty  # an outage's hits are not queued for Redis
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
        # A new e-mail is a cold counter: it has to ask Redis, which is gone.
        verdict = await scorer.score(make_submission(email="someone.else@example.org"))
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


async def test_redis_buckets_are_nothing_for_the_garbage_collector(redis: RedisServer) -> None:
    """A worker holds up to 200k buckets; each full collection walked them all (30-40 ms with
    the event loop stopped) while they were objects. As tuples of numbers they are untracked."""
    import gc

    counters = RedisCounters(redis.url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    try:
        for n in range(300):
            await counters.hit([(f"ip:10.0.{n}.1", 600), (f"email:v{n}@example.org", 3600)])
        await asyncio.sleep(0.2)  # synced: bases and sync times filled in
        gc.collect()
        young = counters._buckets._young
        assert len(young) >= 600
        assert not any(gc.is_tracked(state) for state in young.values())
        assert not any(gc.is_tracked(bucket_id) for bucket_id in young)
    finally:
        await counters.close()
