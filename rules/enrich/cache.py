"""A per-worker cache of facts that the garbage collector does not have to walk."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any, NamedTuple, TypeVar

Facts = TypeVar("Facts", bound=NamedTuple)


def cached_rows(compute: Callable[..., tuple[Any, ...]],
                maxsize: int) -> Callable[..., tuple[Any, ...]]:
    """`compute` behind an LRU cache that holds its results as plain tuples.

    CPython's collector stops tracking a tuple of plain values (numbers, strings, None, tuples
    of those) once it has looked at it — but only an exact tuple, never a NamedTuple. Kept as
    NamedTuples (or slotted objects), the ~60k facts a worker caches under a stream of new
    visitors were walked by every full collection: 30-40 ms with the event loop stopped."""
    rows: Callable[..., tuple[Any, ...]] = lru_cache(maxsize=maxsize)(
        lambda *args: tuple(compute(*args))
    )
    return rows


def as_facts(rows: Callable[..., tuple[Any, ...]], kind: type[Facts]) -> Callable[..., Facts]:
    """`rows` answering `kind` NamedTuples: a hit costs one tuple rebuild (~0.3 us), which is
    why the engine's hot path unpacks the rows themselves."""
    make = kind._make

    def facts(*args: Any) -> Facts:
        return make(rows(*args))

    return facts
