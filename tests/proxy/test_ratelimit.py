"""Per-IP rate limits on protected forms: 429 + Retry-After before anything is scored, nothing
scored or recorded, per client IP and per form, shared through Redis by several proxies."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.proxy.conftest import SEEN, MakeProxy, site_config
from tests.services import RedisServer

UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari"
BODY = "email=jane.doe%40example.org&message=Hello%2C+a+quote+please."


def limited_site(origin: TestServer, requests: int = 3, **extra: Any) -> dict[str, Any]:
    forms = [
        {"id": "contact", "path": "/contact", "require_token": False,
         "rate_limit": {"requests": requests, "window_s": 60}},
        {"id": "signup", "path": "/signup", "require_token": False,
         "rate_limit": {"requests": requests, "window_s": 60}},
        {"id": "open", "path": "/open", "require_token": False, "rate_limit": {"requests": 0}},
    ]
    return site_config(str(origin.make_url("")), forms=forms, **{"mode": "monitor", **extra})


async def post(port: int, path: str = "/contact", ip: str = "81.2.69.160",
               body: str = BODY) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as s, s.post(
        f"http://127.0.0.1:{port}{path}", data=body,
        headers={"Host": "site.test", "User-Agent": UA, "X-Forwarded-For": ip,
                 "Content-Type": "application/x-www-form-urlencoded"},
    ) as r:
        return r.status, dict(r.headers), await r.text()


async def test_over_the_limit_gets_429_with_retry_after_and_reaches_nobody(
    origin: TestServer, make_proxy: MakeProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="activelead.events")
    proxy = await make_proxy([limited_site(origin, mode="enforce")],
                             trusted_proxies=["127.0.0.0/8"])
    answers = [await post(proxy.port) for _ in range(5)]
    assert [status for status, _, _ in answers] == [200, 200, 200, 429, 429]
    _, headers, text = answers[3]
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert headers["Cache-Control"].startswith("no-store")
    assert "at most 3 posts per 60 s" in text
    assert "X-Activelead-Trace-Id" not in headers  # never scored
    assert len(origin.app[SEEN]) == 3  # the origin saw only the allowed ones
    events = [r for r in caplog.records if r.name == "activelead.events"]
    assert len(events) == 3  # rate-limited posts are not events (and cost no credit)


async def test_limits_are_per_ip_and_per_form_and_can_be_off(
    origin: TestServer, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy([limited_site(origin, requests=2, mode="enforce")],
                             trusted_proxies=["127.0.0.0/8"])
    assert [(await post(proxy.port))[0] for _ in range(3)] == [200, 200, 429]
    assert (await post(proxy.port, ip="81.2.69.161"))[0] == 200  # another visitor
    assert (await post(proxy.port, path="/signup"))[0] == 200  # another form
    bodies = [f"email=person{i}%40example.org&message=Hello" for i in range(6)]
    assert [(await post(proxy.port, path="/open", body=b))[0] for b in bodies] == [200] * 6
    # the visitor cannot dodge it with a spoofed header when the peer is not trusted
    spoofing = await make_proxy([limited_site(origin, requests=2, mode="enforce")])
    statuses = [(await post(spoofing.port, ip=f"198.51.100.{i}"))[0] for i in range(3)]
    assert statuses == [200, 200, 429]


async def test_monitor_mode_counts_and_forwards(
    origin: TestServer, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy([limited_site(origin, requests=1)], trusted_proxies=["127.0.0.0/8"],
                             admin_port=0)
    assert [(await post(proxy.port))[0] for _ in range(3)] == [200, 200, 200]
    assert len(origin.app[SEEN]) == 3


async def test_hostile_limit_settings_are_refused(make_proxy: MakeProxy,
                                                  origin: TestServer) -> None:
    for bad in ({"requests": -1}, {"window_s": 0}, {"requests": "many"}, {"burst": 3}):
        site = limited_site(origin)
        site["forms"][0]["rate_limit"] = bad
        with pytest.raises(ValueError, match="rate_limit"):
            await make_proxy([site])


async def test_two_proxies_share_the_limit_through_redis(
    origin: TestServer, make_proxy: MakeProxy, redis: RedisServer, tmp_path: Any
) -> None:
    a = await make_proxy([limited_site(origin, requests=4, mode="enforce")],
                         trusted_proxies=["127.0.0.0/8"], redis=redis.url,
                         state_dir=str(tmp_path / "a"))
    b = await make_proxy([limited_site(origin, requests=4, mode="enforce")],
                         trusted_proxies=["127.0.0.0/8"], redis=redis.url,
                         state_dir=str(tmp_path / "b"))
    ip = "81.2.69.170"
    statuses = []
    for port in (a.port, b.port) * 4:
        statuses.append((await post(port, ip=ip))[0])
        await asyncio.sleep(0.2)  # each proxy's write-behind sync has run
    # The cap is answered from each proxy's own view, synced 50 ms after every hit: it may miss
    # the other proxy's posts since its last sync, here at most one. Then both refuse.
    assert statuses[:4] == [200] * 4 and statuses.count(200) <= 5
    assert statuses[-2:] == [429, 429], statuses
