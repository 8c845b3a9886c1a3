"""Factories for stage tests: a Flow over a compiled site, without any HTTP."""

from __future__ import annotations

from typing import Any

from proxy.settings import ProxySettings, Site, compile_sites
from proxy.stages.flow import Flow
from rules.model import Verdict


def make_site(**site: Any) -> Site:
    cfg: dict[str, Any] = {"id": "shop", "hosts": ["site.test"], "origin": "http://127.0.0.1:1",
                           "forms": [{"id": "contact", "path": "/contact"}]}
    cfg.update(site)
    return compile_sites(ProxySettings(sites=[cfg]))["site.test"]


def make_flow(body: bytes = b"email=a%40example.org", site: Site | None = None,
              **overrides: Any) -> Flow:
    async def read_body(limit: int) -> bytes:
        return body

    values: dict[str, Any] = {
        "site": site or make_site(), "method": "POST", "path": "/contact", "scheme": "http",
        "host": "site.test", "client_ip": "81.2.69.160",
        "headers": {"content-type": "application/x-www-form-urlencoded",
                    "user-agent": "Mozilla/5.0"},
        "read_body": read_body,
    }
    values.update(overrides)
    return Flow(**values)


def make_verdict(decision: str = "allowed", **overrides: Any) -> Verdict:
    values: dict[str, Any] = {"trace_id": "tr_1", "score": 0, "decision": decision,
                              "labels": [], "hits": [], "country_hint": None,
                              "degraded": False, "elapsed_us": 1}
    values.update(overrides)
    return Verdict(**values)
