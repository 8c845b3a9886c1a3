from __future__ import annotations

import pytest

from rules.enrich.ip import IpEnricher


@pytest.fixture(scope="module")
def ips() -> IpEnricher:
    return IpEnricher()


@pytest.mark.parametrize(
    ("ip", "expect"),
    [
        ("81.2.69.142", {"valid": True, "country": "GB", "provider": None, "tor": False}),
        ("3.5.140.2", {"provider": "aws"}),
        ("159.89.1.1", {"provider": "digitalocean"}),
        ("2a05:d018::1", {"provider": "aws", "version": 6}),
        ("::ffff:3.5.140.2", {"provider": "aws", "version": 4}),
        ("185.220.101.1", {"tor": True}),
        ("172.224.226.10", {"relay": "akamai", "provider": None}),
        ("104.28.1.1", {"relay": "cloudflare", "provider": None}),
        ("66.249.66.1", {"crawler_net": "google"}),
        ("10.0.0.1", {"private": True, "country": None}),
        ("127.0.0.1", {"private": True}),
        ("100.64.1.1", {"private": True}),
        ("fe80::1", {"private": True}),
        ("2001:db8::1", {"private": True}),
        ("[2a05:d018::1]", {"valid": True}),
        ("fe80::1%eth0", {"valid": False}),
        ("999.1.1.1", {"valid": False}),
        ("", {"valid": False}),
        ("1.2.3.4/24", {"valid": False}),
        ("' OR 1=1 --", {"valid": False}),
    ],
)
def test_ip_facts(ips: IpEnricher, ip: str, expect: dict[str, object]) -> None:
    facts = ips.facts(ip)
    assert {k: getattr(facts, k) for k in expect} == expect


def test_network_keys(ips: IpEnricher) -> None:
    assert ips.facts("81.2.69.142").network == "81.2.69.0/24"
    assert ips.facts("2a05:d018:1:2::1").network == "2a05:d018:1::/48"
