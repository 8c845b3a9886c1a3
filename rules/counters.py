"""Shared counters for velocity and single-use tokens: in memory by default, Redis when configured.

Windows are *sliding* (the two-bucket approximation used by Cloudflare's and Redis' rate
limiters): count = current bucket + previous bucket x the part of it still inside the window.
Exact to within one bucket's skew, O(1) memory per key and window.

The Redis implementation never costs one round trip per request per counter: every call made in
the same event-loop tick joins one script call. When Redis fails, calls fall back to local memory,
`degraded` turns true (callers add the `degraded` label), and Redis is tried again after a pause.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

log = logging.getLogger("activelead.counters")

CounterKey = tuple[str, int]  # (key, window in seconds)

# KEYS[i] is a current bucket `<prefix>c:<key>:<window>:<n>`, ARGV[i] its expiry; the previous
# bucket `...:<n-1>` is derived here. Returns "current previous ..." for each key, in order: one
# string is one read for the client, where an array costs redis-py a read per element.
HIT_SCRIPT = """
local out = {}
for i, name in ipairs(KEYS) do
  local current = redis.call('INCR', name)
  redis.call('EXPIRE', name, ARGV[i])
  local cut = string.find(name, ':[^:]*$')
  local bucket = tonumber(string.sub(name, cut + 1))
  local previous = redis.call('GET', string.sub(name, 1, cut) .. (bucket - 1))
  out[#out + 1] = current
  out[#out + 1] = tonumber(previous) or 0
end
return table.concat(out, ' ')
"""


class Counters(Protocol):
    """What the scorer and the token verifier need from a counter store."""

    @property
    def degraded(self) -> bool: ...

    async def hit(self, keys: Sequence[CounterKey]) -> list[float]:
        """Count one event for each key; return each key's count in its sliding window."""

    async def once(self, key: str, ttl_s: int) -> bool:
        """True the first time `key` is seen within `ttl_s` seconds, False afterwards."""

    async def close(self) -> None: ...


def _sliding(now: float, window: int, current: int, previous: int) -> float:
    into = (now % window) / window
    return current + previous * (1.0 - into)


class MemoryCounters:
    """Process-local counters; bounded so a flood of distinct keys cannot exhaust memory."""

    def __init__(self, max_keys: int = 200_000, clock: Callable[[], float] = time.time) -> None:
        self._buckets: dict[tuple[str, int, int], int] = {}
        self._seen: dict[str, float] = {}
        self._max_keys = max_keys
        self._time = clock

    @property
    def degraded(self) -> bool:
        return False

    def hit_now(self, keys: Sequence[CounterKey]) -> list[float]:
        now = self._time()
        if len(self._buckets) > self._max_keys:
            self._evict(now)
        out = []
        for key, window in keys:
            bucket = int(now // window)
            cur = self._buckets.get((key, window, bucket), 0) + 1
            self._buckets[(key, window, bucket)] = cur
            prev = self._buckets.get((key, window, bucket - 1), 0)
            out.append(_sliding(now, window, cur, prev))
        return out

    async def hit(self, keys: Sequence[CounterKey]) -> list[float]:
        return self.hit_now(keys)

    def once_now(self, key: str, ttl_s: int) -> bool:
        now = self._time()
        if len(self._seen) > self._max_keys:
            self._seen = {k: exp for k, exp in self._seen.items() if exp > now}
        expires = self._seen.get(key)
        if expires is not None and expires > now:
            return False
        self._seen[key] = now + ttl_s
        return True

    async def once(self, key: str, ttl_s: int) -> bool:
        return self.once_now(key, ttl_s)

    def _evict(self, now: float) -> None:
        # Keep only buckets that can still contribute to a window (current or previous).
        self._buckets = {
            k: v for k, v in self._buckets.items() if k[2] >= int(now // k[1]) - 1
        }
        if len(self._buckets) > self._max_keys:  # still too many live keys: start afresh
            log.warning("memory counters over %d live keys; resetting", self._max_keys)
            self._buckets.clear()

    async def close(self) -> None:
        self._buckets.clear()
        self._seen.clear()


class RedisCounters:
    """Redis-backed counters with per-tick pipelining and a memory fallback."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "al:",
        timeout_s: float = 0.25,
        retry_after_s: float = 2.0,
    ) -> None:
        import redis.asyncio as aioredis  # imported here: memory-only deployments never need it

        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, protocol=3
        )
        self._prefix = prefix
        self._timeout_s = timeout_s
        self._retry_after_s = retry_after_s
        self._fallback = MemoryCounters()
        self._down_until = 0.0
        self._hit_script = self._redis.register_script(HIT_SCRIPT)
        self._pending: list[tuple[Sequence[CounterKey], asyncio.Future[list[float]]]] = []
        self._flushing: asyncio.Task[None] | None = None
        self.failures = 0

    @property
    def degraded(self) -> bool:
        return time.monotonic() < self._down_until

    def _mark_down(self, exc: BaseException) -> None:
        if not self.degraded:
            log.error("redis unavailable (%s); counting in local memory", type(exc).__name__)
        self.failures += 1
        self._down_until = time.monotonic() + self._retry_after_s

    async def hit(self, keys: Sequence[CounterKey]) -> list[float]:
        if self.degraded:
            return self._fallback.hit_now(keys)
        future: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        self._pending.append((keys, future))
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let every request of this tick join the batch
        batch, self._pending = self._pending, []
        self._flushing = None
        now = time.time()
        names: list[str] = []
        expiries: list[int] = []
        for keys, _ in batch:
            for key, window in keys:
                names.append(f"{self._prefix}c:{key}:{window}:{int(now // window)}")
                expiries.append(window * 2 + 1)
        try:
            async with asyncio.timeout(self._timeout_s * 2):
                # One command for the whole tick: redis-py spends several microseconds of Python
                # on every command it packs and parses, and three commands per key per request
                # were the largest cost of a scored post (18% of the proxy's CPU, measured).
                raw = await self._hit_script(keys=names, args=expiries) if names else b""
            replies = [int(x) for x in raw.split()]
            if len(replies) != 2 * len(names):
                raise ValueError(f"counter script answered {len(replies)} numbers for {len(names)} keys")
        except Exception as exc:  # any Redis failure: degrade, never fail the request
            self._mark_down(exc)
            for keys, future in batch:
                if not future.done():
                    future.set_result(self._fallback.hit_now(keys))
            return
        i = 0
        for keys, future in batch:
            counts = []
            for _, window in keys:
                counts.append(_sliding(now, window, replies[i], replies[i + 1]))
                i += 2
            if not future.done():
                future.set_result(counts)

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
        if self._flushing is not None:
            await self._flushing
        await self._redis.aclose()
