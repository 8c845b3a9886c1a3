"""Network owner (ASN name) by IP address, from geoip2fast's bundled database, packed.

geoip2fast keeps its 644k networks as Python lists of ints: ~2 million objects, over 100 MB per
process, which every proxy worker paid. Here the same data (read from the package's own data
file) is packed into typed arrays: ~10 MB, the same owner for every address inside a network
(tests compare the two); gaps between networks are handled as `owner` says. IPv4 starts fit 32
bits; IPv6 starts are split into high and low 64-bit halves, searched on the high half.

The file is a gzip'd pickle shipped inside the geoip2fast package from PyPI, which the project
already trusts as code; it is never read from anywhere else.
"""

from __future__ import annotations

import gc
import gzip
import pickle
from array import array
from bisect import bisect_right
from importlib import resources

DATA_FILE = "geoip2fast-asn-ipv6.dat.gz"
_V4_SPAN = 1 << 32
_LOW64 = (1 << 64) - 1


class AsnTableError(Exception):
    """geoip2fast's data file is missing or not in the layout this module knows."""


class AsnTable:
    """`owner(version, as_int)` -> the ASN name of the network holding the address, or ""."""

    def __init__(self, data_file: str = DATA_FILE) -> None:
        try:
            with resources.files("geoip2fast").joinpath(data_file).open("rb") as raw, \
                    gzip.open(raw) as fh:
                version, info, _, database = pickle.load(fh)  # noqa: S301 - the package's own file
        except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise AsnTableError(f"cannot read geoip2fast's {data_file}: {exc}") from exc
        if version not in (120, 121) or not (info.get("country") and info.get("asn")) \
                or info.get("city") or len(database) != 10:
            raise AsnTableError(f"{data_file}: unknown layout (version {version}, {info})")
        # (index, index ASN, country names, ASN names, first IPs, first IPs ASN, country ids,
        #  ASN ids, netlengths, netlengths ASN): only the ASN half is kept.
        names, firsts, ids, lengths = database[3], database[5], database[7], database[9]
        self.names: list[str] = list(names)
        self._v4_start, self._v4_id, self._v4_len = array("I"), array("I"), array("B")
        self._v6_high, self._v6_low = array("Q"), array("Q")
        self._v6_id, self._v6_len = array("I"), array("B")
        for chunk_first, chunk_id, chunk_len in zip(firsts, ids, lengths, strict=True):
            for start, asn_id, netlen in zip(chunk_first, chunk_id, chunk_len, strict=True):
                if start < _V4_SPAN:
                    self._v4_start.append(start)
                    self._v4_id.append(asn_id)
                    self._v4_len.append(netlen)
                else:
                    self._v6_high.append(start >> 64)
                    self._v6_low.append(start & _LOW64)
                    self._v6_id.append(asn_id)
                    self._v6_len.append(netlen)
        del database, names, firsts, ids, lengths
        gc.collect()  # hand the unpickled lists' memory back before the process forks workers

    def __len__(self) -> int:
        return len(self._v4_start) + len(self._v6_high)

    def owner(self, version: int, as_int: int) -> str:
        """The owner of the network holding the address; in a gap between networks, the owner
        of the network just below when it lies in the same /16 (IPv4) or /32 (IPv6): the
        database lags new announcements, and space next to a provider's is mostly that
        provider's (on the providers' published ranges: 65% recall, 51% with exact matches only)."""
        if version == 4:
            i = bisect_right(self._v4_start, as_int) - 1
            if i < 0:
                return ""
            start = self._v4_start[i]
            if as_int >= start + (1 << (32 - self._v4_len[i])) and start >> 16 != as_int >> 16:
                return ""
            return self.names[self._v4_id[i]]
        high, low = as_int >> 64, as_int & _LOW64
        i = bisect_right(self._v6_high, high) - 1
        while i >= 0 and self._v6_high[i] == high and self._v6_low[i] > low:
            i -= 1  # networks longer than /64 share a high half: step back to the one below
        if i < 0:
            return ""
        start = (self._v6_high[i] << 64) | self._v6_low[i]
        if as_int >= start + (1 << (128 - self._v6_len[i])) and start >> 96 != as_int >> 96:
            return ""
        return self.names[self._v6_id[i]]
