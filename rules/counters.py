"""Shared counters for velocity and single-use tokens: in memory by default, Redis when configured.

Windows are *sliding* (the two-bucket approximation used by Cloudflare's and Redis' rate
limiters): count = current bucket + previous bucket x the part of it still inside the window.
Exact to within one bucket's skew, O(1) memory per key and window.

The Redis implementation never costs one round trip per request per counter: busy keys are
answered from local memory and written behind, and every call that must ask Redis in the same
event-loop tick joins one script call. When Redis fails, counting goes on in local memory,
`degraded` turns true (callers add the `degraded` label), and Redis is tried again after a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

log = logging.getLogger("activelead.counters")

CounterKey = tuple[str, int]  # (key, window in seconds)

# ARGV[1] holds one line per counter: "<bucket name> <hits to add> <expiry s>", the bucket
# being `<prefix>c:<key>:<window>:<n>`; the previous bucket `...:<n-1>` is derived here. One
# string in, one string out ("current previous ..." per line, in order): redis-py spends
# microseconds of Python on every argument it packs and every array element it reads, and these
# were the largest Redis cost of a scored post. (Keys are not declared: counters never run on
# Redis Cluster, where that would matter.)
HIT_SCRIPT = """
local out = {}
for name, hits, expiry in string.gmatch(ARGV[1], '(%S+) (%d+) (%d+)') do
  local current = redis.call('INCRBY', name, hits)
  redis.call('EXPIRE', name, expiry)
  local cut = string.find(name, ':[^:]*$')
  local bucket = tonumber(string.sub(name, cut + 1))
  local previous = redis.call('GET', string.sub(name, 1, cut) .. (bucket - 1))
  out[#out + 1] = current
  out[#out + 1] = tonumber(previous) or 0
end
return table.concat(out, ' ')
"""


K = TypeVar("K")
V = TypeVar("V")


class Bounded(Generic[K, V]):
    """A map of at most `max_items` entries that never stops to sweep.

    Entries live in a young and an old generation. When the young one is full it becomes the
    old one and the previous old one is evicted, so what goes is what went unused longest;
    reading an entry from the old generation moves it back to the young one. The evicted
    generation is freed a few entries per write, not at once: dropping 100k entries in one go
    stalls the event loop ~10 ms. (The sweep this replaced stalled it 140 ms over 200k live
    counters, then had to forget them all.)
    """

    __slots__ = ("_dying", "_half", "_old", "_young", "turns")

    def __init__(self, max_items: int) -> None:
        self._half = max(1, max_items // 2)
        self._young: dict[K, V] = {}
        self._old: dict[K, V] = {}
        self._dying: dict[K, V] = {}
        self.turns = 0  # generations turned over so far

    def get(self, key: K) -> V | None:
        value = self._young.get(key)
        if value is None and self._old:
            value = self._old.pop(key, None)
            if value is not None:
                self[key] = value
        return value

    def __setitem__(self, key: K, value: V) -> None:
        young = self._young
        if len(young) >= self._half and key not in young:
            # The generation before is empty by now: half a generation of writes, 4 freed each.
            self._dying, self._old, self._young = self._old, young, {}
            young = self._young
            self.turns += 1
        young[key] = value
        dying = self._dying
        if dying:
            for _ in range(min(4, len(dying))):
                dying.popitem()

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def clear(self) -> None:
        self._young.clear()
        self._old.clear()
        self._dying.clear()


class Counters(Protocol):
    """What the scorer and the token verifier need from a counter store."""

    @property
    def degraded(self) -> bool: ...

    async def hit(self, keys: Sequence[CounterKey], *, stale_ok: bool = False,
                  timeout_s: float | None = None) -> list[float]:
        """Count one event for each key; return each key's count in its sliding window.

        `stale_ok`: answer from what this process knows now, never wait for a shared store (its
        hits still reach the store); for a backstop that only has to catch floods.
        `timeout_s`: longest wait for a shared store, else TimeoutError. Only a call that has to
        wait sets a timer (one costs ~8 us, more than answering a busy key)."""

    async def once(self, key: str, ttl_s: int) -> bool:
        """True the first time `key` is seen within `ttl_s` seconds, False afterwards."""

    async def close(self) -> None: ...


def _sliding(now: float, window: int, current: int, previous: int) -> float:
    into = (now % window) / window
    return current + previous * (1.0 - into)


class MemoryCounters:
    """Process-local counters; bounded so a flood of distinct keys cannot exhaust memory."""

    def __init__(self, max_keys: int = 200_000, clock: Callable[[], float] = time.time) -> None:
        self._buckets: Bounded[tuple[str, int, int], int] = Bounded(max_keys)
        self._seen: Bounded[str, float] = Bounded(max_keys)
        self._time = clock

    @property
    def degraded(self) -> bool:
        return False

    def hit_now(self, keys: Sequence[CounterKey]) -> list[float]:
        now = self._time()
        buckets = self._buckets
        out = []
        for key, window in keys:
            bucket = int(now // window)
            current_id = (key, window, bucket)
            cur = (buckets.get(current_id) or 0) + 1
            buckets[current_id] = cur
            prev = buckets.get((key, window, bucket - 1)) or 0
            out.append(_sliding(now, window, cur, prev))
        return out

    async def hit(self, keys: Sequence[CounterKey], *, stale_ok: bool = False,
                  timeout_s: float | None = None) -> list[float]:
        return self.hit_now(keys)

    def once_now(self, key: str, ttl_s: int) -> bool:
        now = self._time()
        expires = self._seen.get(key)
        if expires is not None and expires > now:
            return False
        self._seen[key] = now + ttl_s
        return True

    async def once(self, key: str, ttl_s: int) -> bool:
        return self.once_now(key, ttl_s)

    async def close(self) -> None:
        self._buckets.clear()
        self._seen.clear()


# One worker's view of one counter bucket in Redis: (base, inflight, pending, synced_at) —
# the total Redis last reported (our synced hits included), our hits sent in a sync that has not
# answered yet, our hits not sent yet, and the monotonic time of that report. A tuple of plain
# numbers, replaced on every change, because the garbage collector stops tracking those: as
# objects, the buckets of a busy worker were walked by every full collection (tens of ms).
Bucket = tuple[int, int, int, float]
NEW_BUCKET: Bucket = (0, 0, 0, -math.inf)


BucketId = tuple[str, int, int]  # (key, window, bucket number)


class RedisCounters:
    """Redis-backed counters, written behind: hot keys are answered from this worker's memory.

    Every hit is counted locally at once and its delta shipped to Redis by a sync that runs
    every `sync_interval_s` while there is anything to ship; each sync answers with the global
    totals, which become the local base. A key this worker synced within `fresh_s` (a flood, a
    busy form) is therefore answered without any round trip, missing at most the hits other
    workers made since that sync. A cold key (first seen, or quiet for longer) waits for one
    sync, started at once and shared by every request of the event-loop tick, so a visitor's
    first post is counted against what every other proxy saw. A busy key whose hits are in a
    sync still on its way stays answered locally past `fresh_s` (up to the sync's own timeout,
    which decides whether Redis is down): one slow round trip must not turn every busy key
    cold and queue each post behind it. Token replay (`once`) is never
    written behind: single use must hold across workers.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "al:",
        timeout_s: float = 0.25,
        retry_after_s: float = 2.0,
        sync_interval_s: float = 0.05,
        fresh_s: float = 0.25,
        max_keys: int = 32_768,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # `max_keys` bounds this worker's view, not the counts: Redis holds those. An evicted
        # bucket is cold again on its next hit (one sync). 32k keeps every key of the last few
        # thousand visitors, far more than the 0.25 s a key stays "fresh"; with 200k (and 16k
        # entry enrichment caches) a worker under a stream of new visitors grew to 186 MB,
        # with 32k (and 8k caches) it stays at 138 MB (bench/proxy_soak.py).
        import redis.asyncio as aioredis  # imported here: memory-only deployments never need it

        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, protocol=3
        )
        self._prefix = prefix
        self._timeout_s = timeout_s
        self._retry_after_s = retry_after_s
        self._sync_interval_s = sync_interval_s
        self._fresh_s = fresh_s
        self._in_flight_s = fresh_s + timeout_s * 2  # freshness of a key whose sync is under way
        self._time = clock
        self._buckets: Bounded[BucketId, Bucket] = Bounded(max_keys)
        self._dirty: dict[BucketId, None] = {}  # buckets with pending hits (an ordered set)
        self._fallback = MemoryCounters(max_keys=max_keys, clock=clock)  # replay set when down
        self._down_until = 0.0
        self._hit_script = self._redis.register_script(HIT_SCRIPT)
        self._waiters: list[tuple[list[BucketId], float, asyncio.Future[list[float]]]] = []
        self._sync_soon: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False
        self.failures = 0

    @property
    def degraded(self) -> bool:
        return time.monotonic() < self._down_until

    def _mark_down(self, exc: BaseException) -> None:
        if not self.degraded:
            log.error("redis unavailable (%s); counting in local memory", type(exc).__name__)
        self.failures += 1
        self._down_until = time.monotonic() + self._retry_after_s

    async def hit(self, keys: Sequence[CounterKey], *, stale_ok: bool = False,
                  timeout_s: float | None = None) -> list[float]:
        now = self._time()
        mono = time.monotonic()
        if mono < self._down_until:  # self.degraded, without a second clock read
            return self._hit_local(keys, now)
        buckets = self._buckets
        get = buckets.get
        dirty = self._dirty
        # A key is cold when its last sync is older than fresh_s, unless hits of it are in a
        # sync under way that is younger than _in_flight_s (compared as times: no subtraction)
        fresh_since = mono - self._fresh_s
        in_flight_since = mono - self._in_flight_s
        seconds = int(now)  # int(now) // window == int(now // window), at a quarter of the cost
        held: list[BucketId] = []
        counts: list[float] = []
        cold = False
        turns = buckets.turns
        # One pass counts, marks and answers (what _counts does for waiters after a sync): this
        # runs two or three times for every scored post.
        for key, window in keys:
            number = seconds // window
            bucket_id = (key, window, number)
            base, inflight, pending, synced_at = get(bucket_id) or NEW_BUCKET
            buckets[bucket_id] = (base, inflight, pending + 1, synced_at)
            if not pending:  # pending hits mean it is in `dirty` already
                dirty[bucket_id] = None
            if synced_at < fresh_since and not (inflight and synced_at >= in_flight_since):
                cold = True
            held.append(bucket_id)
            current = base + inflight + pending + 1
            prev = get((key, window, number - 1))
            counts.append(_sliding(now, window, current, prev[0] + prev[1] + prev[2] if prev else 0))
        if buckets.turns != turns:  # a bucket of this call may be gone: answer what is held
            counts = self._counts(held, now)
        if self._ticker is None:
            self._start_ticker()
        if not cold or stale_ok:
            return counts
        future: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        self._waiters.append((held, now, future))
        if self._sync_soon is None:
            self._sync_soon = asyncio.get_running_loop().create_task(self._sync_this_tick())
        if timeout_s is None:
            return await future
        return await asyncio.wait_for(future, timeout_s)  # the sync skips a cancelled waiter

    def _hit_local(self, keys: Sequence[CounterKey], now: float) -> list[float]:
        """While Redis is down: counted here only; Redis learns nothing of an outage's hits."""
        buckets = self._buckets
        seconds = int(now)
        held: list[BucketId] = []
        for key, window in keys:
            bucket_id = (key, window, seconds // window)
            base, inflight, pending, synced_at = buckets.get(bucket_id) or NEW_BUCKET
            buckets[bucket_id] = (base + 1, inflight, pending, synced_at)
            held.append(bucket_id)
        if self._ticker is None:
            self._start_ticker()
        return self._counts(held, now)

    def _counts(self, held: Sequence[BucketId], now: float) -> list[float]:
        buckets = self._buckets
        out = []
        for bucket_id in held:
            key, window, number = bucket_id
            cur = buckets.get(bucket_id) or NEW_BUCKET
            prev = buckets.get((key, window, number - 1)) or NEW_BUCKET
            out.append(_sliding(now, window, cur[0] + cur[1] + cur[2], prev[0] + prev[1] + prev[2]))
        return out

    def _start_ticker(self) -> None:
        if self._ticker is None and not self._closed:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        """Ship hot keys' hits every sync interval while there are any."""
        while not self._closed:
            await asyncio.sleep(self._sync_interval_s)
            if self._dirty and not self.degraded:
                await self._sync()

    async def _sync_this_tick(self) -> None:
        await asyncio.sleep(0)  # let every request of this tick join the sync
        self._sync_soon = None
        await self._sync()

    async def _sync(self) -> None:
        """Send every pending hit in one script call; the answers become the local bases."""
        waiters, self._waiters = self._waiters, []
        dirty, self._dirty = self._dirty, {}
        buckets = self._buckets
        sent: list[tuple[BucketId, int]] = []
        for bucket_id in dirty:
            state = buckets.get(bucket_id)
            if state is None or not state[2]:
                continue  # evicted since (16k newer keys within one sync interval): dropped
            base, inflight, pending, synced_at = state
            buckets[bucket_id] = (base, inflight + pending, 0, synced_at)
            sent.append((bucket_id, pending))
        try:
            prefix = self._prefix
            lines = "\n".join([f"{prefix}c:{key}:{window}:{number} {delta} {window * 2 + 1}"
                               for (key, window, number), delta in sent])
            async with asyncio.timeout(self._timeout_s * 2):
                raw = await self._hit_script(args=[lines]) if sent else b""
            replies = [int(x) for x in raw.split()]
            if len(replies) != 2 * len(sent):
                raise ValueError(f"counter script answered {len(replies)} numbers for {len(sent)} keys")
        except Exception as exc:  # any Redis failure: keep counting locally, never fail a request
            self._mark_down(exc)
            for bucket_id, delta in sent:  # ours for good; Redis never saw them
                state = buckets.get(bucket_id)
                if state is not None:
                    base, inflight, pending, synced_at = state
                    buckets[bucket_id] = (base + delta, inflight - delta, pending, synced_at)
        else:
            now = time.monotonic()
            for i, (bucket_id, delta) in enumerate(sent):
                state = buckets.get(bucket_id)
                if state is not None:
                    base, inflight, pending, _ = state
                    buckets[bucket_id] = (max(base, replies[2 * i]), inflight - delta, pending, now)
                key, window, number = bucket_id
                earlier = replies[2 * i + 1]
                previous_id = (key, window, number - 1)
                previous = buckets.get(previous_id)
                if previous is None:
                    if earlier:
                        buckets[previous_id] = (earlier, 0, 0, -math.inf)
                elif not previous[1] and not previous[2] and earlier > previous[0]:
                    buckets[previous_id] = (earlier, 0, 0, previous[3])
        for held, now, future in waiters:
            if not future.done():
                future.set_result(self._counts(held, now))

    async def once(self, key: str, ttl_s: int) -> bool:
        if not self.degraded:
            try:
                async with asyncio.timeout(self._timeout_s * 2):
                    first = await self._redis.set(f"{self._prefix}o:{key}", b"1", ex=ttl_s, nx=True)
                return bool(first)
            except Exception as exc:
                self._mark_down(exc)
        return self._fallback.once_now(key, ttl_s)

    async def close(self) -> None:
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._sync_soon is not None:
            await self._sync_soon
        if self._dirty and not self.degraded:
            await self._sync()  # last hits of a stopping worker still count for the others
        await self._redis.aclose()
