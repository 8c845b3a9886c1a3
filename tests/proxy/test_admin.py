"""The admin port: health (liveness + readiness) and Prometheus metrics."""

from __future__ import annotations

import aiohttp
from aiohttp.test_utils import TestServer

from proxy.admin import create_admin_app
from tests.proxy.conftest import MakeProxy, site_config


async def test_health_and_metrics(origin: TestServer, make_proxy: MakeProxy) -> None:
    proxy = await make_proxy([site_config(str(origin.make_url("")))])
    admin = TestServer(create_admin_app(proxy.app), host="127.0.0.1")
    await admin.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"http://127.0.0.1:{proxy.port}/contact",
                              data={"email": "x@mailinator.com"},
                              headers={"Host": "site.test"}) as r:
                assert r.status == 403
            async with s.get(f"http://127.0.0.1:{proxy.port}/echo",
                             headers={"Host": "site.test"}) as r:
                assert r.status == 200
            async with s.get(admin.make_url("/__activelead/health")) as r:
                assert r.status == 200
                body = await r.json()
            assert body == {"status": "ok", "ready": True, "sites": 1,
                            "countersDegraded": False, "spool": None}
            async with s.get(admin.make_url("/metrics")) as r:
                text = await r.text()
        for name in ("activelead_proxy_requests_total", "activelead_proxy_decisions_total",
                     "activelead_proxy_labels_total", "activelead_proxy_scoring_seconds_bucket",
                     "activelead_proxy_upstream_seconds_bucket", "activelead_proxy_spool_events",
                     "activelead_proxy_degraded_total"):
            assert name in text
        assert 'activelead_proxy_labels_total{label="disposable_email",site="shop"}' in text
    finally:
        await admin.close()


def test_tally_reaches_prometheus_on_flush() -> None:
    from proxy import metrics

    before = metrics.LABELS.labels("tally-site", "tally_label")._value.get()
    metrics.labels("tally-site", ["tally_label", "tally_label"])
    assert metrics.LABELS.labels("tally-site", "tally_label")._value.get() == before  # not yet
    text = metrics.render()[0].decode()  # a scrape flushes first
    assert 'activelead_proxy_labels_total{label="tally_label",site="tally-site"} 2.0' in text


def test_tallied_histogram_matches_observe() -> None:
    """The tally fills prometheus_client's buckets itself: the exposition must equal what
    observe() would have produced, boundaries included (a value equal to a bound is in it)."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from proxy import metrics

    registry = CollectorRegistry()
    direct = Histogram("direct", "d", ["site"], buckets=(0.002, 0.005, 0.01), registry=registry)
    tallied = Histogram("tallied", "t", ["site"], buckets=(0.002, 0.005, 0.01), registry=registry)
    values = [0.0, 0.001, 0.002, 0.0021, 0.005, 0.009, 0.01, 0.5, 7.0]
    tally = metrics.Tally()
    for value in values:
        direct.labels("s").observe(value)
        tally.observe(tallied.labels("s"), value)
    assert tallied.labels("s")._sum.get() == 0  # nothing before the flush
    tally.flush()
    text = generate_latest(registry).decode()
    lines = {line.replace("tallied", "direct") for line in text.splitlines()
             if line.startswith("tallied") and "_created" not in line}
    assert lines == {line for line in text.splitlines()
                     if line.startswith("direct") and "_created" not in line}
    assert len(lines) >= 6  # four buckets with +Inf, count and sum
