"""IP facts: validity, private/bogon, country, hosting provider, Tor exit, privacy relay, crawler net.

Sources, all offline and loaded once:
- country: `iptocc` (RIR delegation data, maintained on PyPI);
- network owner (ASN name): `geoip2fast`'s bundled ASN database, packed by rules.enrich.asn;
  hosting is recognised from the owner's name, so every cloud and VPS provider is covered,
  not only those that publish lists;
- provider-published ranges (`activelead data update` fetches AWS, Google Cloud, Oracle, ...);
- Tor exits and crawler networks: bundled snapshots (rules/data), refreshable.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, NamedTuple

import iptocc

from rules.datasets import DataFile, DataFileError, package_version, read_data_file
from rules.enrich.asn import AsnTable
from rules.enrich.cache import as_facts, cached_rows
from rules.enrich.ranges import RangeTable

# Owners (ASN names) whose address space is hosting, cloud or VPS: traffic from there is a server,
# a proxy or a VPN, not a person at home. Matched case-insensitively against the ASN name.
_HOSTING_OWNERS: list[tuple[str, str]] = [
    (r"amazon|aws", "aws"),
    (r"google-cloud|google cloud", "google-cloud"),
    (r"^google", "google"),
    (r"microsoft", "microsoft"),
    (r"digitalocean", "digitalocean"),
    (r"\bovh", "ovh"),
    (r"hetzner", "hetzner"),
    (r"linode", "linode"),
    (r"oracle", "oracle"),
    (r"alibaba|aliyun|alicloud", "alibaba"),
    (r"tencent", "tencent"),
    (r"huawei cloud|huawei-cloud|huaweicloud", "huawei-cloud"),
    (r"choopa|vultr", "vultr"),
    (r"contabo", "contabo"),
    (r"scaleway|online s\.a\.s", "scaleway"),
    (r"leaseweb", "leaseweb"),
    (r"m247", "m247"),
    (r"hostinger", "hostinger"),
    (r"ionos|1&1", "ionos"),
    (r"quadranet", "quadranet"),
    (r"colocrossing", "colocrossing"),
    (r"hostwinds", "hostwinds"),
    (r"psychz", "psychz"),
    (r"datacamp|cdn77", "datacamp"),
    (r"g-core|gcore", "gcore"),
    (r"zenlayer", "zenlayer"),
    (r"selectel", "selectel"),
    (r"timeweb", "timeweb"),
    (r"dreamhost", "dreamhost"),
    (r"liquid ?web", "liquidweb"),
    (r"rackspace", "rackspace"),
    (r"softlayer|ibm", "ibm-cloud"),
    (r"kamatera", "kamatera"),
    (r"upcloud", "upcloud"),
    (r"frantech|ponynet|buyvm", "frantech"),
    (r"worldstream", "worldstream"),
    (r"serverius", "serverius"),
    (r"netcup", "netcup"),
    (r"interserver", "interserver"),
    (r"nforce", "nforce"),
    (r"stark industries", "stark-industries"),
    (r"aeza", "aeza"),
    (r"hostkey", "hostkey"),
    (r"hosting|hoster|\bvps\b|server|datacenter|data center|colo\b|cloud", "hosting"),
]
_HOSTING_RE = [(re.compile(p, re.IGNORECASE), name) for p, name in _HOSTING_OWNERS]

# CDN networks whose only end-user traffic is privacy relays (iCloud Private Relay egress runs on
# Akamai, Cloudflare and Fastly; Cloudflare WARP). Real browsers: informative, never "datacenter".
_RELAY_OWNERS = [
    (re.compile(r"^akamai(?!.*linode)", re.IGNORECASE), "akamai"),
    (re.compile(r"cloudflare", re.IGNORECASE), "cloudflare"),
    (re.compile(r"fastly", re.IGNORECASE), "fastly"),
]

# Which network owner may legitimately run which crawler (the "reverse DNS check" done offline).
CRAWLER_OWNERS: dict[str, re.Pattern[str]] = {
    "google": re.compile(r"^google", re.IGNORECASE),
    "bing": re.compile(r"microsoft", re.IGNORECASE),
    "apple": re.compile(r"apple", re.IGNORECASE),
    "yandex": re.compile(r"yandex", re.IGNORECASE),
    "baidu": re.compile(r"baidu", re.IGNORECASE),
    "duckduckgo": re.compile(r"duckduckgo|microsoft", re.IGNORECASE),
}


# Special-purpose (non-global) space, IANA registries; one table lookup instead of ipaddress'
# is_global, which walks a dozen networks per call.
_NON_GLOBAL = [
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "::/127", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "fc00::/7",
    "fe80::/10", "ff00::/8",
]
_V4_NET_MASK = (1 << 32) - (1 << 8)  # /24
_V6_NET_MASK = (1 << 128) - (1 << 80)  # /48


# A tuple of plain values: the garbage collector stops tracking it, so the tens of thousands
# cached per worker cost full collections nothing (as slotted objects they made each one
# stall the event loop for tens of ms).
class IpFacts(NamedTuple):
    valid: bool
    version: int = 0
    private: bool = False
    country: str | None = None
    owner: str = ""
    provider: str | None = None
    tor: bool = False
    relay: str | None = None
    crawler_net: str | None = None
    network: str = ""


def _table(data: DataFile, *, named: bool) -> RangeTable:
    """Build a range table from "<cidr>" or "<name> <cidr>" lines; a bad line names file and line."""
    rows: list[tuple[str, str]] = []
    for number, line in enumerate(data.lines, start=1):
        parts = line.split()
        try:
            name, cidr = (parts[0], parts[1]) if named else ("x", parts[0])
            if len(parts) != (2 if named else 1):
                raise ValueError("wrong number of columns")
            ipaddress.ip_network(cidr, strict=False)
        except (ValueError, IndexError) as exc:
            raise DataFileError(f"{data.path}: entry {number} {line!r}: {exc}") from exc
        rows.append((cidr, name))
    return RangeTable(rows)


class IpEnricher:
    """Built once; `facts(ip)` is cached per address (bursts repeat the same IPs)."""

    # 8k entries: repeats come in bursts; at 65k the IP and e-mail caches grew a proxy worker
    # by ~50 MB under a million distinct visitors (bench/proxy_soak.py).
    def __init__(self, cache_size: int = 8_192) -> None:
        self._asn = AsnTable()  # ~0.5 s to load; once per process, before workers fork
        self.tor_file = read_data_file("tor_exits.txt")
        self._tor = _table(self.tor_file, named=False)
        self.crawler_file = read_data_file("crawler_ranges.txt")
        self._crawlers = _table(self.crawler_file, named=True)
        self.cloud_file: DataFile | None
        try:
            self.cloud_file = read_data_file("cloud_ranges.txt")
        except DataFileError:  # optional: only present after `activelead data update`
            self.cloud_file = None
        self._cloud = _table(self.cloud_file, named=True) if self.cloud_file else RangeTable()
        self._bogons = RangeTable((cidr, "bogon") for cidr in _NON_GLOBAL)
        self._provider_by_owner: dict[str, str | None] = {}
        self.rows = cached_rows(self._facts, cache_size)  # the facts as plain tuples
        self.facts = as_facts(self.rows, IpFacts)

    def _hosting(self, owner: str) -> str | None:
        # Few distinct owners recur across millions of IPs: run the name patterns once per owner.
        if owner not in self._provider_by_owner:
            if len(self._provider_by_owner) > 100_000:
                self._provider_by_owner.clear()
            self._provider_by_owner[owner] = next(
                (name for rx, name in _HOSTING_RE if rx.search(owner)), None
            ) if owner else None
        return self._provider_by_owner[owner]

    def _facts(self, raw: str) -> IpFacts:
        text = raw.strip().strip("[]")
        if "%" in text:  # IPv6 zone ids never reach a public form
            return IpFacts(valid=False)
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            return IpFacts(valid=False)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        as_int = int(addr)
        if addr.version == 4:
            network = f"{ipaddress.IPv4Address(as_int & _V4_NET_MASK)}/24"
        else:
            network = f"{ipaddress.IPv6Address(as_int & _V6_NET_MASK)}/48"
        if self._bogons.lookup(addr.version, as_int) is not None:
            return IpFacts(valid=True, version=addr.version, private=True, network=network)
        text = str(addr)
        owner = self._asn.owner(addr.version, as_int)
        crawler_net = self._crawlers.lookup(addr.version, as_int)
        tor = self._tor.lookup(addr.version, as_int) is not None
        # Provider-published ranges are authoritative; otherwise classify by network owner.
        provider = self._cloud.lookup(addr.version, as_int)
        relay = None
        if provider is None:
            relay = next((name for rx, name in _RELAY_OWNERS if rx.search(owner)), None)
            if relay is None:
                provider = self._hosting(owner)
        return IpFacts(
            valid=True,
            version=addr.version,
            country=iptocc.country_code(text),
            owner=owner,
            provider=provider,
            tor=tor,
            relay=relay,
            crawler_net=crawler_net,
            network=network,
        )

    def describe(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [
            {"name": "ip-country", "source": "iptocc (PyPI)", "date": package_version("iptocc"),
             "size": None},
            {"name": "ip-owner (ASN)", "source": "geoip2fast asn database (PyPI)",
             "date": package_version("geoip2fast"), "size": None},
        ]
        for f, size in ((self.tor_file, self._tor.size), (self.crawler_file, self._crawlers.size),
                        (self.cloud_file, self._cloud.size)):
            if f is not None:
                out.append({"name": f.name, "source": f.source, "date": f.date, "size": size,
                            "path": str(f.path)})
        return out
