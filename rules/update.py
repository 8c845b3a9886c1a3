"""`activelead data update`: refresh data snapshots from their publishers' official URLs.

Each source is fetched, parsed and written atomically to the override data directory with a
header naming source, licence and date; a failed or malformed download keeps the previous file.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import ipaddress
import json
import os
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MAX_DOWNLOAD_BYTES = 32 * 1024 * 1024


def _tor(body: bytes) -> list[str]:
    out = []
    for line in body.decode("utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(str(ipaddress.ip_address(line)))
    return out


def _google_json(name: str) -> Callable[[bytes], list[str]]:
    def parse(body: bytes) -> list[str]:
        data = json.loads(body)
        return [f"{name} {p.get('ipv4Prefix') or p['ipv6Prefix']}" for p in data["prefixes"]]
    return parse


def _aws(body: bytes) -> list[str]:
    data = json.loads(body)
    prefixes = [p["ip_prefix"] for p in data["prefixes"]]
    prefixes += [p["ipv6_prefix"] for p in data.get("ipv6_prefixes", [])]
    return [f"aws {p}" for p in sorted(set(prefixes))]


def _oracle(body: bytes) -> list[str]:
    data = json.loads(body)
    return [f"oracle {c['cidr']}" for r in data["regions"] for c in r["cidrs"]]


def _digitalocean(body: bytes) -> list[str]:
    rows = csv.reader(io.StringIO(body.decode("utf-8")))
    return [f"digitalocean {row[0]}" for row in rows if row and "/" in row[0]]


@dataclass(frozen=True)
class Source:
    name: str  # also the key for --source overrides
    file: str
    url: str
    parse: Callable[[bytes], list[str]]
    licence: str


SOURCES = [
    Source("tor", "tor_exits.txt", "https://check.torproject.org/torbulkexitlist", _tor,
           "public data published by The Tor Project"),
    Source("googlebot", "crawler_ranges.txt",
           "https://developers.google.com/static/search/apis/ipranges/googlebot.json",
           _google_json("google"), "public data published by Google"),
    Source("bingbot", "crawler_ranges.txt", "https://www.bing.com/toolbox/bingbot.json",
           _google_json("bing"), "public data published by Microsoft"),
    Source("aws", "cloud_ranges.txt", "https://ip-ranges.amazonaws.com/ip-ranges.json", _aws,
           "provider-published data"),
    Source("google-cloud", "cloud_ranges.txt", "https://www.gstatic.com/ipranges/cloud.json",
           _google_json("google-cloud"), "provider-published data"),
    Source("oracle", "cloud_ranges.txt",
           "https://docs.oracle.com/iaas/tools/public_ip_ranges.json", _oracle,
           "provider-published data"),
    Source("digitalocean", "cloud_ranges.txt", "https://www.digitalocean.com/geo/google.csv",
           _digitalocean, "provider-published data"),
]


def fetch(url: str, timeout_s: float) -> bytes:
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"{url}: only http(s) URLs are fetched")
    # the scheme is checked above, so file:// and friends never reach the opener
    request = urllib.request.Request(url, headers={"User-Agent": "activelead-data-update/1"})  # noqa: S310
    opener = urllib.request.build_opener()
    with opener.open(request, timeout=timeout_s) as response:
        body: bytes = response.read(MAX_DOWNLOAD_BYTES + 1)
    if len(body) > MAX_DOWNLOAD_BYTES:
        raise ValueError(f"{url}: larger than {MAX_DOWNLOAD_BYTES} bytes")
    return body


def update(target: Path, overrides: dict[str, str] | None = None, only: set[str] | None = None,
           timeout_s: float = 30.0) -> list[tuple[str, str]]:
    """Fetch every source (or `only` those); return (source, result) lines for the report."""
    overrides = overrides or {}
    target.mkdir(parents=True, exist_ok=True)
    today = dt.date.today().isoformat()
    by_file: dict[str, list[tuple[Source, list[str], str]]] = {}
    report: list[tuple[str, str]] = []
    for source in SOURCES:
        if only and source.name not in only:
            continue
        url = overrides.get(source.name, source.url)
        try:
            lines = source.parse(fetch(url, timeout_s))
            if not lines:
                raise ValueError("no entries")
        except Exception as exc:  # report and keep the previous file
            report.append((source.name, f"FAILED ({type(exc).__name__}: {exc}); kept previous data"))
            continue
        by_file.setdefault(source.file, []).append((source, lines, url))
        report.append((source.name, f"{len(lines)} entries from {url}"))
    for file, parts in by_file.items():
        header = [
            f"# {file}: refreshed by `activelead data update`",
            "# source: " + ", ".join(url for _, _, url in parts),
            "# licence: " + "; ".join(sorted({s.licence for s, _, _ in parts})),
            f"# date: {today}",
        ]
        body = "\n".join(header + [line for _, lines, _ in parts for line in lines]) + "\n"
        tmp = target / f".{file}.tmp"
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, target / file)
    return report
