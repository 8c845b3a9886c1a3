"""Rate limits on the shared counters store (memory, or Redis when configured).

Reuses rules.counters' sliding windows so the proxy, the scorer and the control API count the same
way, and several control-API processes share limits through Redis.
"""

from __future__ import annotations

import math

from control_api.errors import ApiError
from rules.counters import Counters


class RateLimiter:
    """`check(key, limit, window)` raises a 429 ApiError with Retry-After once over the limit."""

    def __init__(self, counters: Counters) -> None:
        self._counters = counters

    async def hit(self, key: str, limit: int, window_s: int) -> None:
        (count,) = await self._counters.hit([(f"rl:{key}", window_s)])
        if count > limit:
            raise _limited(window_s)


def _limited(window_s: int) -> ApiError:
    # A sliding window frees capacity gradually; one bucket length is an honest upper bound.
    retry = max(1, math.ceil(window_s / 2))
    return ApiError(
        429,
        "rate_limited",
        f"too many requests; retry in {retry} s",
        headers={"Retry-After": str(retry)},
    )
