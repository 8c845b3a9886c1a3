"""Sorted IP range tables: O(log n) membership with a value per range, built once."""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable


class RangeTable:
    """Maps IP addresses to the value of the range that contains them.

    Ranges are merged into disjoint sorted intervals per address family, so a lookup is one
    bisect on a list of ints. Overlaps resolve to the range added first.
    """

    def __init__(self, ranges: Iterable[tuple[str, str]] = ()) -> None:
        self._pending: list[tuple[int, int, int, str]] = []
        for cidr, value in ranges:
            self.add(cidr, value)
        self._build()

    def add(self, cidr: str, value: str) -> None:
        net = ipaddress.ip_network(cidr, strict=False)
        self._pending.append(
            (net.version, int(net.network_address), int(net.broadcast_address), value)
        )

    def _build(self) -> None:
        self._starts: dict[int, list[int]] = {4: [], 6: []}
        self._ends: dict[int, list[int]] = {4: [], 6: []}
        self._values: dict[int, list[str]] = {4: [], 6: []}
        for version, start, end, value in sorted(self._pending, key=lambda r: (r[0], r[1])):
            starts, ends, values = self._starts[version], self._ends[version], self._values[version]
            if starts and start <= ends[-1]:  # overlap: keep the earlier range, extend if longer
                if end > ends[-1]:
                    starts.append(ends[-1] + 1)
                    ends.append(end)
                    values.append(value)
                continue
            starts.append(start)
            ends.append(end)
            values.append(value)
        self.size = len(self._pending)
        del self._pending

    def lookup(self, version: int, address: int) -> str | None:
        starts = self._starts[version]
        i = bisect.bisect_right(starts, address) - 1
        if i >= 0 and address <= self._ends[version][i]:
            return self._values[version][i]
        return None
