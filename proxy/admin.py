"""The admin port: liveness/readiness at /__activelead/health and Prometheus /metrics."""

from __future__ import annotations

from aiohttp import web

from proxy import metrics

PROXY_APP = web.AppKey("proxy_app", web.Application)


async def health(request: web.Request) -> web.Response:
    from proxy.app import COUNTERS, PIPELINE, REPORTER, ROUTING
    from proxy.events import SpoolReporter

    app = request.app[PROXY_APP]
    ready = PIPELINE in app  # cleanup contexts ran: session, counters, reporter, stages
    body: dict[str, object] = {"status": "ok" if ready else "starting", "ready": ready}
    if ready:
        counters = app[COUNTERS]
        reporter = app[REPORTER]
        body.update(
            sites=len({s.id for s in app[ROUTING].sites.values()}),
            countersDegraded=counters.degraded,
            spool=reporter.spool.depth() if isinstance(reporter, SpoolReporter) else None,
        )
        if counters.degraded:
            body["status"] = "degraded"  # still serving: counters fell back to local memory
    return web.json_response(body, status=200 if ready else 503)


async def metrics_view(request: web.Request) -> web.Response:
    data, content_type = metrics.render()
    return web.Response(body=data, headers={"Content-Type": content_type})


def create_admin_app(proxy_app: web.Application) -> web.Application:
    app = web.Application()
    app[PROXY_APP] = proxy_app
    app.router.add_get("/__activelead/health", health)
    app.router.add_get("/metrics", metrics_view)
    return app
