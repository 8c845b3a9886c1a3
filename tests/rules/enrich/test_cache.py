"""Cached facts: same answers as computing them, held in a form the collector does not walk."""

from __future__ import annotations

import gc
from typing import NamedTuple

from rules.enrich.cache import as_facts, cached_rows
from rules.enrich.ip import IpEnricher


class _Pair(NamedTuple):
    text: str
    size: int = 0
    tags: tuple[str, ...] = ()


def test_cached_facts_are_the_computed_ones_and_computed_once() -> None:
    calls: list[str] = []

    def compute(text: str) -> _Pair:
        calls.append(text)
        return _Pair(text, len(text), ("a", "b"))

    facts = as_facts(cached_rows(compute, maxsize=2), _Pair)
    first = facts("hello")
    assert first == _Pair("hello", 5, ("a", "b")) and isinstance(first, _Pair)
    assert first.size == 5
    assert facts("hello") == first and calls == ["hello"]
    facts("x")
    facts("y")  # "hello" evicted (maxsize 2)
    facts("hello")
    assert calls == ["hello", "x", "y", "hello"]


def test_cached_rows_are_untracked_by_the_collector() -> None:
    ip = IpEnricher(cache_size=1000)
    for n in range(200):
        ip.facts(f"81.2.{n}.160")
    gc.collect()
    rows = [o for o in gc.get_objects() if type(o) is tuple and len(o) == 10 and o[0] is True]
    assert rows == []  # none of the 200 cached rows is on the collector's lists
    assert ip.facts("81.2.7.160") == ip._facts("81.2.7.160")  # and still read as IpFacts
