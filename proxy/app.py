"""The aiohttp edge: `create_app(settings)` builds the reverse proxy application.

Every request is matched to a site by Host. Protected form routes run the stage pipeline
(proxy/stages); everything else streams through untouched. HTML pages of protected sites get
render protection on the way back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from activelead import snippet_http as snippet_routes
from activelead.clientip import ClientIpResolver, joined_lowered
from activelead.tally import flushed_every
from proxy import metrics, render
from proxy.events import LogReporter, Spool, SpoolReporter
from proxy.fastpath import BAD_GATEWAY, BROKE_OFF, GATEWAY_TIMEOUT
from proxy.forward import downstream_headers, upstream_headers
from proxy.remote_config import ProjectConfig, RemoteConfig
from proxy.settings import ProxySettings, Site, compile_sites, host_key
from proxy.stages import Stage, build_pipeline, run_pipeline
from proxy.stages.act import NO_STORE
from proxy.stages.flow import BodyTimeout, BodyTooLarge, Flow, Forward, Respond
from proxy.stages.match import ProjectLookup
from proxy.tokens import TokenSigner, load_or_create_secret
from rules.challenge import ChallengeSigner, StepUp, challenge_secret
from rules.counters import Counters, MemoryCounters, RedisCounters
from rules.engine import Engine
from rules.scorer import Scorer

log = logging.getLogger("activelead.proxy")

CHUNK = 64 * 1024
SMALL_BODY = 64 * 1024
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True, slots=True)
class Routing:
    """Everything per-request code looks up, built once from settings."""

    sites: dict[str, Site]
    resolver: ClientIpResolver
    signer: TokenSigner
    origin_ssl: dict[str, ssl.SSLContext | bool]
    upstream_timeouts: dict[str, aiohttp.ClientTimeout]  # by site id, built once
    worker: int
    challenges: ChallengeSigner
    snippet_sites: dict[str, snippet_routes.SnippetSite]  # by site key


SETTINGS = web.AppKey("settings", ProxySettings)
ROUTING = web.AppKey("routing", Routing)
UPSTREAM = web.AppKey("upstream", aiohttp.ClientSession)
COUNTERS: web.AppKey[Counters] = web.AppKey("counters")
ENGINE = web.AppKey("engine", Engine)
REPORTER: web.AppKey[LogReporter | SpoolReporter] = web.AppKey("reporter")
PIPELINE: web.AppKey[list[Stage]] = web.AppKey("pipeline")
LOWERED = web.RequestKey("lowered_headers", dict[str, str])
REMOTE: web.AppKey[RemoteConfig | None] = web.AppKey("remote_config")
STEP_UP_SCRIPT: web.AppKey[str | None] = web.AppKey("step_up_script")


BODY_STALLED = "Request Timeout: the request body stopped arriving."


class ProxyError(Exception):
    """A request the proxy answers itself with a small plain page (4xx/5xx)."""

    def __init__(self, status: int, message: str, *, spent: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.spent = spent  # the rest of the request body is unread: no keep-alive after this

    def response(self) -> web.Response:
        resp = web.Response(status=self.status, text=self.message + "\n", content_type="text/plain")
        resp.headers["Cache-Control"] = NO_STORE
        if self.spent:
            resp.force_close()
        return resp


def _origin_ssl(site: Site) -> ssl.SSLContext | bool:
    cfg = site.config.origin_tls
    if not site.config.origin.startswith("https://"):
        return True  # unused for plain http
    ctx = ssl.create_default_context()
    if not cfg.verify:  # a context that checks nothing (both the aiohttp and the fast path use it)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if cfg.ca_file is not None:
        ctx.load_verify_locations(cafile=str(cfg.ca_file))
    return ctx


def _upstream_timeout(site: Site) -> aiohttp.ClientTimeout:
    # `total` is enforced around the wait for the response head (see _forward), so that a long
    # download is bounded by `read_s` between reads, not by a total.
    t = site.config.timeouts
    return aiohttp.ClientTimeout(total=None, connect=t.connect_s, sock_connect=t.connect_s,
                                 sock_read=t.read_s)


def _snippet_sites(sites: dict[str, Site]) -> dict[str, snippet_routes.SnippetSite]:
    out = {}
    for site in {s.id: s for s in sites.values()}.values():
        cfg = site.config.snippet
        if cfg.site_key:
            out[cfg.site_key] = snippet_routes.SnippetSite.build(
                cfg.site_key, cfg.allowed_origins,
                StepUp(base=cfg.pow_difficulty, risky=cfg.step_up_difficulty,
                       rate_limit=cfg.step_up_rate, hard_limit=cfg.max_rate),
                hosts=[] if cfg.allowed_origins else site.config.hosts,
            )
    return out


def build_routing(settings: ProxySettings, worker: int = 0) -> Routing:
    pc = settings.proxy
    secret = pc.render_secret or load_or_create_secret(pc.state_dir)
    sites = compile_sites(settings)
    return Routing(
        sites=sites,
        resolver=ClientIpResolver(pc.trusted_proxies, pc.client_ip_headers),
        signer=TokenSigner(secret, pc.render_previous_secrets, pc.token_ttl_s),
        origin_ssl={s.id: _origin_ssl(s) for s in sites.values()},
        upstream_timeouts={s.id: _upstream_timeout(s) for s in sites.values()},
        worker=worker,
        challenges=ChallengeSigner(
            challenge_secret(secret),
            [challenge_secret(p) for p in pc.render_previous_secrets if p],
            ttl_s=pc.challenge_ttl_s,
        ),
        snippet_sites=_snippet_sites(sites),
    )


# --- cleanup contexts: one per resource -----------------------------------------------------


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
    session = aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,  # bytes pass through as the origin encoded them
        cookie_jar=aiohttp.DummyCookieJar(),  # cookies are the visitor's, never the proxy's
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        timeout=aiohttp.ClientTimeout(total=None),
    )
    app[UPSTREAM] = session
    yield
    await session.close()


async def _counters_ctx(app: web.Application) -> AsyncIterator[None]:
    url = app[SETTINGS].redis.url
    counters: Counters = RedisCounters(url) if url else MemoryCounters()
    app[COUNTERS] = counters
    yield
    await counters.close()


async def _reporter_ctx(app: web.Application) -> AsyncIterator[None]:
    pc = app[SETTINGS].proxy
    link = pc.control_api
    reporter: LogReporter | SpoolReporter
    if link.url:
        root = pc.state_dir / "spool"
        worker = app[ROUTING].worker
        spool = Spool(root / f"w{worker}", link.batch_max_events)
        if worker == 0:
            orphans = [d for d in root.glob("w*") if d.name[1:].isdigit()
                       and int(d.name[1:]) >= pc.worker_count]
            if spool.adopt(orphans):
                log.info("adopted spooled events of %d retired worker(s)", len(orphans))
        reporter = SpoolReporter(
            spool, url=link.url, edge_token=link.edge_token,
            fsync_interval_s=pc.spool_fsync_interval_s, flush_interval_s=link.flush_interval_s,
            timeout_s=link.timeout_s, max_backoff_s=link.max_backoff_s,
        )
    else:
        reporter = LogReporter()
    await reporter.start()
    app[REPORTER] = reporter
    yield
    await reporter.close()


async def _remote_config_ctx(app: web.Application) -> AsyncIterator[None]:
    """Pull the project's config from the control API when connected; poll in the background."""
    pc = app[SETTINGS].proxy
    link = pc.control_api
    if not (link.url and link.edge_token):
        app[REMOTE] = None
        yield
        return
    remote = RemoteConfig(
        url=link.url, edge_token=link.edge_token, base=app[ENGINE],
        cache_file=pc.state_dir / f"edge-config-w{app[ROUTING].worker}.json",
        interval_s=link.config_poll_s, max_backoff_s=link.max_backoff_s, timeout_s=link.timeout_s,
    )
    remote.load_cache()
    app[REMOTE] = remote
    session = aiohttp.ClientSession()
    task = asyncio.get_running_loop().create_task(remote.run(session))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await session.close()


def _project_lookup(app: web.Application) -> ProjectLookup | None:
    remote = app[REMOTE]
    if remote is None:
        return None

    def project_for(site: Site) -> ProjectConfig | None:
        # The edge token belongs to one project: its config applies to the sites of that project
        # (or to every site when a site names no project).
        current = remote.current
        if current is None or site.config.project_id not in ("", current.project_id):
            return None
        return current

    return project_for


async def _pipeline_ctx(app: web.Application) -> AsyncIterator[None]:
    app[PIPELINE] = build_pipeline(
        signer=app[ROUTING].signer,
        counters=app[COUNTERS],
        scorer=Scorer(app[ENGINE], app[COUNTERS]),
        reporter=app[REPORTER],
        token_ttl_s=app[SETTINGS].proxy.token_ttl_s,
        challenges=app[ROUTING].challenges,
        project_for=_project_lookup(app),
        step_up_script=app[STEP_UP_SCRIPT],
    )
    async with flushed_every(metrics.TALLY, 1.0):
        yield


def create_app(
    settings: ProxySettings, *, engine: Engine | None = None, worker: int = 0
) -> web.Application:
    """The proxy application. `engine` may be shared (tests, workers built from one config)."""
    app = web.Application(client_max_size=1024**3, handler_args={
        "max_line_size": settings.proxy.max_field_bytes,
        "max_field_size": settings.proxy.max_field_bytes,
        "max_headers": settings.proxy.max_headers,
    })
    app[SETTINGS] = settings
    app[ROUTING] = build_routing(settings, worker)
    app[ENGINE] = engine or Engine.from_config(settings.scoring)
    app.cleanup_ctx.extend(
        [_upstream_ctx, _counters_ctx, _reporter_ctx, _remote_config_ctx, _pipeline_ctx]
    )
    _register_snippet(app)
    app.router.add_route("*", "/{tail:.*}", handle, expect_handler=expect_handler)
    app.on_response_prepare.append(_add_hsts)
    return app


def _register_snippet(app: web.Application) -> None:
    """The snippet and its challenge under /__activelead/ (before the catch-all route)."""
    routing = app[ROUTING]
    bundle = stepup = None
    if routing.snippet_sites:
        dist = app[SETTINGS].proxy.snippet_dist or snippet_routes.DEFAULT_DIST
        try:
            bundle = snippet_routes.SnippetBundle.load(dist)
        except snippet_routes.SnippetNotBuilt as exc:
            log.error("%s", exc)  # challenges still work for a snippet served from elsewhere
        try:
            stepup = snippet_routes.SnippetBundle.load(dist, "stepup")
        except snippet_routes.SnippetNotBuilt as exc:
            log.error("no step-up page, review-band form posts are forwarded: %s", exc)
    snippet_routes.register(
        app, lookup=snippet_routes.static_sites(routing.snippet_sites),
        signer=routing.challenges, counters=lambda request: request.app[COUNTERS],
        bundle=bundle, client_ip=lambda request: _client(request).ip,
        warn_unbuilt=bool(routing.snippet_sites),
        observe=lambda result: metrics.SNIPPET_CHALLENGES.labels(result).inc(),
    )
    app[STEP_UP_SCRIPT] = snippet_routes.register_stepup(app, stepup)


async def _add_hsts(request: web.Request, response: web.StreamResponse) -> None:
    """HSTS on every HTTPS answer of a site that asks for it: relayed, blocked or an error."""
    if not request.secure:
        return
    try:
        tls = _site_for(request).config.tls
    except ProxyError:
        return
    if tls is not None and tls.hsts_max_age_s:
        response.headers.setdefault("Strict-Transport-Security", f"max-age={tls.hsts_max_age_s}")


# --- request handling -----------------------------------------------------------------------


def _site_for(request: web.Request) -> Site:
    host = host_key(request.host or "")
    site = request.app[ROUTING].sites.get(host)
    if site is None:
        raise ProxyError(421, f"Misdirected Request: no site is configured for host {host!r}.")
    return site


def _target(request: web.Request) -> str:
    """The request target as the origin should see it: byte-exact origin-form, or the path and
    query of an absolute-form target (`GET http://host/path`, whose host chose the site)."""
    raw = request.raw_path
    return raw if raw.startswith("/") else request.rel_url.raw_path_qs


def _body_limit(site: Site, request: web.Request) -> int:
    form = site.match(request.method, request.path)
    if form is not None and form.mode != "off":
        return form.config.max_body_bytes
    return site.max_body_bytes


def _too_large(limit: int) -> ProxyError:
    return ProxyError(413, f"Request body too large: at most {limit} bytes are accepted here.")


async def expect_handler(request: web.Request) -> web.StreamResponse | None:
    """Answer `Expect: 100-continue` only for a request we will actually take."""
    expect = request.headers.get("Expect", "").lower()
    if expect != "100-continue":
        return ProxyError(417, f"Unsupported Expect: {expect!r}.").response()
    try:
        site = _site_for(request)
        limit = _body_limit(site, request)
        if limit and (request.content_length or 0) > limit:
            raise _too_large(limit)
    except ProxyError as exc:
        resp = exc.response()
        resp.force_close()  # the body was never sent; the connection cannot be reused
        return resp
    if request.version >= aiohttp.HttpVersion11:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return None


async def handle(request: web.Request) -> web.StreamResponse:
    try:
        site = _site_for(request)
        metrics.request(site.id, request.method)
        tls = site.config.tls
        if tls is not None and tls.redirect_http and not request.secure:
            raise web.HTTPPermanentRedirect(f"https://{request.host}{_target(request)}")
        client = _client(request)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await _websocket(request, site, client)
        if request.method in BODY_METHODS and site.forms:
            return await _protected(request, site, client)
        return await _forward(request, site, client)
    except ProxyError as exc:
        return exc.response()


@dataclass(frozen=True, slots=True)
class Client:
    """Who sent the request: the socket peer, whether we believe its headers, the visitor IP."""

    peer: str
    trusted: bool
    ip: str


def _client(request: web.Request) -> Client:
    resolver = request.app[ROUTING].resolver
    peer = request.remote or ""
    address, trusted = resolver.peer(peer)
    if not trusted:
        return Client(peer, False, address)  # nobody in front of us: the peer is the visitor
    return Client(peer, True, resolver.resolve(peer, _lowered(request)))


def _lowered(request: web.Request) -> dict[str, str]:
    """Lower-case header names, repeats joined; built once per request (client IP resolution
    and the form pipeline both read it)."""
    lowered = request.get(LOWERED)
    if lowered is None:
        lowered = joined_lowered(request.headers.items())
        request[LOWERED] = lowered
    return lowered


class _LimitedBody:
    """Streams the visitor's body to the origin, failing once it passes the site's limit.

    A long upload is not held to `total_s`: every chunk moved on pushes the deadline to `read_s`
    from now (silence on either side: the visitor sending nothing, or the origin taking
    nothing), and the last one gives the origin `total_s` to answer. Whether the wait was for
    the visitor tells a 408 from a 504."""

    def __init__(self, content: aiohttp.StreamReader, limit: int) -> None:
        self.content = content
        self.limit = limit
        self.exceeded = False
        self.waiting_for_visitor = False
        self._deadline: asyncio.Timeout | None = None
        self._idle_s = self._answer_s = 0.0

    def bound(self, deadline: asyncio.Timeout, idle_s: float, answer_s: float) -> None:
        self._deadline, self._idle_s, self._answer_s = deadline, idle_s, answer_s

    def _push(self, seconds: float) -> None:
        if self._deadline is not None:
            self._deadline.reschedule(asyncio.get_running_loop().time() + seconds)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        chunks = self.content.iter_chunked(CHUNK).__aiter__()
        while True:
            self.waiting_for_visitor = True
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                break
            finally:
                self.waiting_for_visitor = False
            seen += len(chunk)
            if self.limit and seen > self.limit:
                self.exceeded = True
                raise BodyTooLarge(self.limit)
            self._push(self._idle_s)
            yield chunk
        self._push(self._answer_s)


async def _forward(
    request: web.Request,
    site: Site,
    client: Client,
    *,
    body: bytes | None = None,
    extra: dict[str, str] | None = None,
    scored: bool = False,
) -> web.StreamResponse:
    """Send the request to the origin and stream its answer back."""
    cfg = site.config
    headers = upstream_headers(
        request.headers, peer=client.peer, peer_trusted=client.trusted, client_ip=client.ip,
        scheme=request.scheme, host=request.host,
        upstream_host=request.host if cfg.preserve_host else site.origin_host, extra=extra,
    )
    data: Any = None
    limited: _LimitedBody | None = None
    if body is not None:
        data = body
        headers["Content-Length"] = str(len(body))
    elif request.body_exists:
        if site.max_body_bytes and (request.content_length or 0) > site.max_body_bytes:
            raise _too_large(site.max_body_bytes)
        limited = _LimitedBody(request.content, site.max_body_bytes)
        data = limited.__aiter__()
        if request.content_length is not None:
            headers["Content-Length"] = str(request.content_length)
    t = cfg.timeouts
    routing = request.app[ROUTING]
    started = time.perf_counter()
    session = request.app[UPSTREAM]
    try:
        async with asyncio.timeout(t.total_s) as deadline:
            if limited is not None:
                limited.bound(deadline, t.read_s, t.total_s)
            upstream = await session.request(
                request.method, URL(cfg.origin + _target(request), encoded=True),
                headers=headers, data=data, allow_redirects=False,
                ssl=routing.origin_ssl[site.id], timeout=routing.upstream_timeouts[site.id],
            )
    except BodyTooLarge as exc:
        raise _too_large(exc.limit) from None
    except (TimeoutError, aiohttp.ServerTimeoutError):
        if limited is not None and limited.exceeded:
            raise _too_large(site.max_body_bytes) from None
        if limited is not None and limited.waiting_for_visitor:
            log.info("visitor's body stalled: %s %s %s", site.id, request.method, request.path)
            raise ProxyError(408, BODY_STALLED, spent=True) from None
        metrics.UPSTREAM_ERRORS.labels(site.id, "timeout").inc()
        log.warning("origin of %s timed out: %s %s", site.id, request.method, request.path)
        raise ProxyError(504, GATEWAY_TIMEOUT) from None
    except (aiohttp.ClientError, OSError) as exc:
        if limited is not None and limited.exceeded:
            raise _too_large(site.max_body_bytes) from None
        metrics.UPSTREAM_ERRORS.labels(site.id, "connect").inc()
        log.warning("origin of %s failed: %s: %s", site.id, type(exc).__name__, exc)
        raise ProxyError(502, BAD_GATEWAY) from None
    metrics.upstream_latency(site.id, time.perf_counter() - started)
    try:
        return await _relay(request, site, upstream, scored=scored, extra_down=extra)
    finally:
        upstream.release()


async def _relay(
    request: web.Request,
    site: Site,
    upstream: aiohttp.ClientResponse,
    *,
    scored: bool,
    extra_down: dict[str, str] | None,
) -> web.StreamResponse:
    headers = downstream_headers(upstream.headers)
    if scored:
        headers["Cache-Control"] = NO_STORE  # a scored answer belongs to one visitor only
        if site.config.result_headers_on_response and extra_down:
            headers.update(extra_down)
    if render.renderable(site, request.method, upstream.status, upstream.headers):
        resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        resp.headers.extend(headers)
        return await _relay_rendered(request, site, upstream, resp)
    length = upstream.content_length
    if length is not None and length <= SMALL_BODY and request.method != "HEAD":
        # Small bodies of known size go out in one write: streaming them chunk by chunk costs
        # more than the copy. Anything larger or of unknown size is streamed below.
        try:
            body = await upstream.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _broke_off(site, exc) from None
        small = web.Response(status=upstream.status, reason=upstream.reason, body=body)
        small.headers.extend((k, v) for k, v in headers.items() if k.lower() != "content-length")
        return small
    resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    resp.headers.extend(headers)
    await resp.prepare(request)
    if request.method == "HEAD":
        return resp
    return await _stream_rest(request, site, upstream, resp)


def _broke_off(site: Site, exc: BaseException) -> ProxyError:
    """Log and count an origin that broke off its answer; the 502 page, if not too late."""
    log.warning("origin of %s broke off mid-body: %s", site.id, type(exc).__name__)
    metrics.UPSTREAM_ERRORS.labels(site.id, "body").inc()
    return ProxyError(502, BROKE_OFF)


async def _stream_rest(request: web.Request, site: Site, upstream: aiohttp.ClientResponse,
                       resp: web.StreamResponse) -> web.StreamResponse:
    """The rest of the origin's body, as it comes, to a response already prepared."""
    try:
        async for chunk in upstream.content.iter_any():
            await resp.write(chunk)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        # Headers are gone already: the only honest signal left is to cut the connection, so
        # the visitor sees a truncated body instead of a complete-looking wrong one.
        _broke_off(site, exc)  # logged and counted; its 502 is too late here
        if request.transport is not None:
            request.transport.abort()
        return resp
    await resp.write_eof()
    return resp


async def _relay_rendered(
    request: web.Request, site: Site, upstream: aiohttp.ClientResponse, resp: web.StreamResponse
) -> web.StreamResponse:
    cfg = site.config.render
    buf = bytearray()
    complete = True
    hold = asyncio.timeout(cfg.max_hold_s)
    try:
        async with hold:
            async for chunk in upstream.content.iter_any():
                buf += chunk
                if len(buf) > cfg.max_html_bytes:  # too big: pass on what we have, unchanged
                    complete = False
                    break
    except TimeoutError as exc:
        if not hold.expired():  # the origin fell silent for read_s; nothing was sent yet
            raise _broke_off(site, exc) from None
        complete = False  # still streaming (a progress page?): passed on as it comes
    except (aiohttp.ClientError, OSError) as exc:
        raise _broke_off(site, exc) from None
    body = bytes(buf)
    if complete:
        coding = upstream.headers.get("Content-Encoding", "").lower()
        try:
            page = render.protect_page(body, coding, site=site, signer=request.app[ROUTING].signer,
                                       page_path=request.path)
        except render.RenderError as exc:
            log.warning("page of %s left unprotected: %s", site.id, exc)
            page = None
        if page is not None:
            body = page
            etag = render.rendered_etag(resp.headers.get("ETag"))
            if etag:
                resp.headers["ETag"] = etag
            resp.headers.popall("Content-MD5", None)
            resp.headers["Cache-Control"] = NO_STORE  # each visitor gets own token
        resp.content_length = len(body)
    await resp.prepare(request)
    await resp.write(body)
    if complete:
        await resp.write_eof()
        return resp
    return await _stream_rest(request, site, upstream, resp)


async def _protected(request: web.Request, site: Site, client: Client) -> web.StreamResponse:
    """A request that may be a protected form post: the stage pipeline decides."""
    form = site.match(request.method, request.path)
    if form is None:
        return await _forward(request, site, client)  # cheap exit before building a Flow

    body_timeout_s = request.app[SETTINGS].proxy.body_timeout_s

    async def read_body(limit: int) -> bytes:
        if (request.content_length or 0) > limit:
            raise BodyTooLarge(limit)
        content = request.content
        if content.is_eof():  # the whole body came with the headers (most forms): no timer
            body = content.read_nowait(-1)
            if len(body) > limit:
                raise BodyTooLarge(limit)
            return body
        buf = bytearray()
        try:
            async with asyncio.timeout(body_timeout_s):  # a slow client holds no slot forever
                async for chunk in request.content.iter_chunked(CHUNK):
                    buf += chunk
                    if len(buf) > limit:
                        raise BodyTooLarge(limit)
        except TimeoutError:
            raise BodyTimeout from None
        return bytes(buf)

    flow = Flow(
        site=site,
        method=request.method,
        path=request.path,
        scheme=request.scheme,
        host=request.host,
        client_ip=client.ip,
        headers=_lowered(request),
        read_body=read_body,
        form=form,
    )
    try:
        await run_pipeline(request.app[PIPELINE], flow)
    except aiohttp.ClientPayloadError:
        raise ProxyError(400, "Bad Request: the request body was cut short.") from None
    except Exception:
        # A bug or an input no stage foresaw: the form's failure policy still holds, and the
        # visitor never sees a 500 from us.
        log.exception("protection pipeline failed for %s %s", site.id, request.path)
        metrics.DEGRADED.labels("pipeline").inc()
        if flow.form is not None and flow.form.config.on_error == "forward" and flow.parsed:
            return await _forward(  # the body was read whole: it can still go through as sent
                request, site, client, body=flow.body,
                extra={"X-Activelead-Labels": "degraded"}, scored=True,
            )
        return _pipeline_failed(flow)
    if flow.passthrough:
        return await _forward(request, site, client)
    outcome = flow.outcome
    if isinstance(outcome, Respond):
        resp = web.Response(
            status=outcome.status, text=outcome.body, content_type=outcome.content_type
        )
        resp.headers.update(outcome.headers)
        resp.headers.setdefault("Cache-Control", NO_STORE)
        if outcome.status in (408, 413):
            resp.force_close()  # the rest of the body is unread; the connection is spent
        return resp
    assert isinstance(outcome, Forward)
    return await _forward(
        request, site, client, body=outcome.body, extra=outcome.headers, scored=True
    )


def _pipeline_failed(flow: Flow) -> web.StreamResponse:
    form = flow.form
    if form is not None and form.config.on_error == "block":
        resp = web.Response(status=form.config.block_status, text=form.config.block_page,
                            content_type="text/html")
    else:
        resp = web.Response(
            status=503, text="Service Unavailable: this form could not be checked; "
            "please try again.\n", content_type="text/plain"
        )
    resp.headers["Cache-Control"] = NO_STORE
    return resp


# --- websockets -----------------------------------------------------------------------------


_WS_SKIP = frozenset({
    "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
    "sec-websocket-protocol",
})


async def _websocket(request: web.Request, site: Site, client: Client) -> web.StreamResponse:
    cfg = site.config
    headers = upstream_headers(
        request.headers, peer=client.peer, peer_trusted=client.trusted, client_ip=client.ip,
        scheme=request.scheme, host=request.host,
        upstream_host=request.host if cfg.preserve_host else site.origin_host,
    )
    for name in list(headers):
        if name.lower() in _WS_SKIP:
            headers.popall(name, None)
    protocols = [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]
    try:
        upstream = await request.app[UPSTREAM].ws_connect(
            URL(cfg.origin + _target(request), encoded=True), headers=headers, protocols=protocols,
            ssl=request.app[ROUTING].origin_ssl[site.id], autoping=True,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=cfg.timeouts.connect_s),
        )
    except aiohttp.WSServerHandshakeError as exc:
        if 400 <= exc.status < 600:  # the origin's own refusal (401, 403, 404...): its status
            raise ProxyError(exc.status, f"The site refused the websocket ({exc.status}).") from None
        raise ProxyError(  # it answered, but not as a websocket (a 200 page, a bad handshake)
            502, f"Bad Gateway: the site did not accept the websocket ({exc.status})."
        ) from None
    except (aiohttp.ClientError, OSError, TimeoutError):
        raise ProxyError(502, BAD_GATEWAY) from None
    down = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else ())
    await down.prepare(request)

    async def pump(
        src: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        dst: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    ) -> None:
        async for msg in src:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
            else:
                break
        await dst.close(code=src.close_code or aiohttp.WSCloseCode.OK)

    tasks = [asyncio.create_task(pump(down, upstream)), asyncio.create_task(pump(upstream, down))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await upstream.close()
        await down.close()
    return down

