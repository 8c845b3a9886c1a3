"""Running the proxy: listeners (HTTP, HTTPS with SNI, admin) and N worker processes.

Each worker is a process of its own with its own uvloop event loop and its own listening socket
bound with SO_REUSEPORT, so the kernel spreads connections over workers without a shared accept
lock. The supervisor only starts, watches and stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from activelead.workers import multiprocess_metrics, supervise
from proxy.admin import create_admin_app
from proxy.app import ROUTING, create_app
from proxy.events import log_events_to_stdout
from proxy.fastpath import FastPath
from proxy.protocol import ProxyRunner
from proxy.settings import ProxySettings, load_settings
from proxy.tls import SniContexts
from rules.engine import Engine

log = logging.getLogger("activelead.proxy")

# Nearly all of a worker's garbage is freed by reference counting. The collector's young
# generation instead fills with the objects of requests still in flight (a scored post holds
# ~100), so at Python's default threshold (2,000) a worker under scored load ran 9-19 young
# collections a second, ~0.8 ms each, that found nothing to free: 7-16 us of every scored post
# and a pause each time (measured with gc.callbacks). At 10,000 none ran in 12 s of one-visitor
# scored load. Under new visitors (every post adds cache entries, which do reach the collector)
# the collector's share of the CPU fell from 2.6 % to 0.65 %, in fewer, longer pauses: ~9 ms,
# a few times a minute. 20,000 saved no more CPU and doubled those pauses (~19 ms; new
# visitors' p99 at half saturation 6.9 against 5.4-5.6 ms).
YOUNG_GC_THRESHOLD = 10_000


@contextlib.asynccontextmanager
async def listeners(app: web.Application, settings: ProxySettings) -> AsyncIterator[dict[str, int]]:
    """The public listeners of one worker: HTTP, and HTTPS with SNI when configured. Yields the
    bound ports. A connection starts on the fast path (proxy/fastpath.py) when it is on and
    moves to aiohttp's protocol for anything the fast path does not serve."""
    pc = settings.proxy
    runner = ProxyRunner(
        app, access_log=None, handle_signals=False, header_timeout_s=pc.header_timeout_s,
        keepalive_timeout=pc.keepalive_timeout_s,
    )
    await runner.setup()
    aiohttp_protocol = runner.server
    assert aiohttp_protocol is not None
    fast: FastPath | None = None
    factory: Callable[[], asyncio.BaseProtocol] = aiohttp_protocol
    if pc.fast_path:
        routing = app[ROUTING]
        fast = FastPath(settings, routing.sites, routing.resolver, routing.signer,
                        routing.origin_ssl, aiohttp_protocol)
        factory = fast.protocol
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    tasks: list[asyncio.Task[None]] = []
    ports: dict[str, int] = {}
    try:
        http = await loop.create_server(factory, pc.host, pc.port, reuse_port=True, backlog=1024)
        servers.append(http)
        ports["http"] = http.sockets[0].getsockname()[1]
        if pc.tls_port is not None:
            sni = SniContexts(settings)
            https = await loop.create_server(factory, pc.host, pc.tls_port, ssl=sni.listener,
                                             reuse_port=True, backlog=1024)
            servers.append(https)
            ports["https"] = https.sockets[0].getsockname()[1]
            tasks.append(asyncio.create_task(_reload_tls(sni, pc.tls_reload_interval_s)))
        yield ports
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for server in servers:
            server.close()
        if fast is not None:
            await fast.drain(timeout_s=10.0)
        await runner.cleanup()


async def serve(
    settings: ProxySettings,
    *,
    worker: int = 0,
    admin: bool = True,
    started: Callable[[dict[str, int]], None] | None = None,
    stop: asyncio.Event | None = None,
    engine: Engine | None = None,
) -> None:
    """Run one worker until `stop` is set (or SIGTERM/SIGINT when no event is given)."""
    pc = settings.proxy
    engine = engine or Engine.from_config(settings.scoring)
    app = create_app(settings, engine=engine, worker=worker)
    async with contextlib.AsyncExitStack() as stack:
        ports = dict(await stack.enter_async_context(listeners(app, settings)))
        # Everything built so far (engine data, rules, lists) lives as long as the worker: moved
        # out of the collector's sight, so no full collection ever walks it mid-request.
        gc.collect()
        gc.freeze()
        previous = gc.get_threshold()
        gc.set_threshold(YOUNG_GC_THRESHOLD, *previous[1:])
        stack.callback(gc.set_threshold, *previous)
        if admin and pc.admin_port is not None:
            admin_runner = web.AppRunner(create_admin_app(app), access_log=None,
                                         handle_signals=False)
            await admin_runner.setup()
            stack.push_async_callback(admin_runner.cleanup)
            admin_site = web.TCPSite(admin_runner, pc.admin_host, pc.admin_port)
            await admin_site.start()
            ports["admin"] = _port(admin_site)
        log.info("worker %d serving %s", worker, ports)
        if started is not None:
            started(ports)
        if stop is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def _port(site: web.TCPSite) -> int:
    server = site._server  # aiohttp keeps the loop's server here; the port may have been 0
    sockets = getattr(server, "sockets", None)
    assert sockets, "listener has no socket"
    return int(sockets[0].getsockname()[1])


async def _reload_tls(sni: SniContexts, interval_s: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval_s)
        await loop.run_in_executor(None, sni.reload)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _worker_main(
    config: str | None, overrides: dict[str, Any], worker: int, engine: Engine | None = None
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log_events_to_stdout()
    settings = load_settings(config, **overrides)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(settings, worker=worker, admin=worker == 0, engine=engine))


def run_workers(config: str | None, overrides: dict[str, Any]) -> int:
    """Start the workers and wait; SIGTERM/SIGINT stop them all. Returns an exit code."""
    settings = load_settings(config, **overrides)  # fail here, once, on a bad config
    workers = settings.proxy.worker_count
    if workers == 1:
        _worker_main(config, overrides, 0)
        return 0
    multiprocess_metrics()  # the admin endpoint sums every worker's metrics
    if not settings.proxy.render_secret:
        from proxy.tokens import load_or_create_secret

        load_or_create_secret(Path(settings.proxy.state_dir))  # one key for every worker
    # The engine's data (~100 MB) is loaded once here and the workers are forked from it, so
    # they share those pages copy-on-write; gc.freeze keeps the collector from touching them.
    engine = Engine.from_config(settings.scoring)
    gc.freeze()
    return supervise(_worker_main, lambda i: (config, overrides, i, engine), workers, "activelead")
