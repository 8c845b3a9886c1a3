"""create_app(settings): the control API's aiohttp application, wired with one cleanup context
per resource (database, counters, scoring engine, webhook worker, retention purge)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator

from aiohttp import web

from activelead.workers import METRICS_DIR
from control_api import (
    accounts,
    akismet,
    credits,
    edge,
    events,
    ingest,
    openapi,
    projects,
    snippet,
    webhooks,
)
from control_api.context import Services
from control_api.db import Database
from control_api.errors import error_middleware
from control_api.metrics import (
    METRICS,
    Metrics,
    metrics_endpoint,
    metrics_flush_ctx,
    metrics_middleware,
)
from control_api.scoring import ScoringService
from control_api.settings import ControlApiSettings
from control_api.state import SERVICES
from rules import Engine, ScoringConfig
from rules.counters import Counters, MemoryCounters, RedisCounters

log = logging.getLogger("activelead.control_api")


def create_app(
    settings: ControlApiSettings, *, engine: Engine | None = None, worker: int = 0
) -> web.Application:
    """The app; nothing is opened until it starts (so tests and `run_app` share one path).

    `engine` lets a process that already loaded the scoring data (tests, `activelead up`, the
    workers' supervisor) share it; otherwise it is loaded once at start-up. `worker`: this
    process's number among `settings.workers`; worker 0 alone runs the retention purge and the
    SQLite checkpoints."""
    # Fail at construction, not on the first request, if the base scoring config is invalid.
    base_scoring = ScoringConfig.model_validate(settings.scoring_config)
    app = web.Application(
        # metrics outermost: it sees the final status the error middleware produced.
        middlewares=[metrics_middleware, error_middleware],
        # Bodies are also bounded per endpoint; this is the outer limit (edge batches are biggest).
        client_max_size=max(settings.max_body_bytes, settings.max_batch_bytes),
    )

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        db = Database(settings.db, checkpoint=worker == 0)
        await db.open()
        counters: Counters = RedisCounters(settings.redis_url) if settings.redis_url else MemoryCounters()
        services = Services(settings=settings, db=db, counters=counters)
        await services.prepare()
        app[SERVICES] = services
        yield
        await services.drain()
        await counters.close()
        await db.close()

    async def scoring_ctx(app: web.Application) -> AsyncIterator[None]:
        services = app[SERVICES]
        if engine is not None:
            services.scoring = ScoringService(engine.with_config(base_scoring), services.counters)
        else:
            services.scoring = await ScoringService.load(base_scoring, services.counters)
        yield

    async def purge_ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_purge_loop(app), name="retention-purge")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.extend([services_ctx, scoring_ctx, webhooks.webhook_worker_ctx])
    if worker == 0:
        app.cleanup_ctx.append(purge_ctx)
    app[METRICS] = Metrics()
    if os.environ.get(METRICS_DIR):  # several workers (activelead/workers.py)
        app.cleanup_ctx.append(metrics_flush_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_routes(accounts.routes)
    app.router.add_routes(projects.routes)
    app.router.add_routes(webhooks.routes)
    app.router.add_routes(credits.routes)
    app.router.add_routes(events.routes)
    ingest.setup(app)
    app.router.add_routes(edge.routes)
    app.router.add_routes(akismet.routes)
    app.router.add_routes(openapi.routes)
    snippet.setup(app, settings)
    return app


async def healthz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    await services.db.read(lambda conn: conn.execute("SELECT 1").fetchone())
    return web.json_response({"ok": True, "degraded": services.counters.degraded})


async def _purge_loop(app: web.Application) -> None:
    services = app[SERVICES]
    while True:
        ttl = services.settings.idempotency_ttl_s
        try:
            total = 0
            while True:
                deleted = await services.db.write(
                    functools.partial(events.purge_expired, idempotency_ttl_s=ttl)
                )
                total += deleted
                if deleted < events.PURGE_CHUNK:
                    break
            if total:
                log.info("retention purge deleted %d events", total)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("retention purge failed")
        await asyncio.sleep(services.settings.purge_interval_s)
