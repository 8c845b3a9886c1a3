"""The fast path: plain GET/HEAD pass-through below aiohttp.

aiohttp's server and client cost ~350 us of CPU per proxied request on this hardware; most of a
site's traffic (pages, assets) needs none of what they offer. `FastFront` is the listening
protocol: it reads each request head itself (llhttp via httptools) and, when the request is a
plain GET or HEAD without a body for a configured site, relays it over a pooled raw connection
(proxy/origins.py), with the same header rules (proxy/forward.py), error pages, render
protection and metrics as the aiohttp path. Anything else — a body, websockets, Expect,
`/__activelead/` routes, an unknown host, an HTTPS redirect, a malformed or oversized head —
hands the connection, with every byte read so far, to aiohttp's protocol (proxy/protocol.py),
which then serves it for the rest of its life. Form posts therefore always take the aiohttp
path and its stage pipeline.

One request at a time per connection: a pipelined request waits in the buffer (reading pauses
when it grows) until the previous answer is out.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import logging
import ssl
import time
from collections.abc import Callable
from typing import cast

import httptools
from yarl import URL

from activelead.clientip import ClientIpResolver, joined_lowered
from proxy import metrics, render
from proxy.forward import forward_pairs, response_pairs
from proxy.origins import Framing, OriginAddress, OriginConnection, OriginPool, RawPairs
from proxy.protocol import TIMEOUT_RESPONSE
from proxy.settings import ProxySettings, Site, host_key
from proxy.stages.act import NO_STORE
from proxy.tokens import TokenSigner

log = logging.getLogger("activelead.proxy")

_FAST_METHODS = {b"GET": "GET", b"HEAD": "HEAD"}
# A request carrying any of these needs aiohttp: a body, an upgrade or an expectation.
_HAND_OFF_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"upgrade", b"expect"})
_OWN_ROUTES = b"/__activelead/"
_PAUSE_READING_AT = 64 * 1024  # pipelined bytes buffered while an answer is in flight
BAD_GATEWAY = "Bad Gateway: the site's server could not be reached."
BROKE_OFF = "Bad Gateway: the site's server broke off its answer."
GATEWAY_TIMEOUT = "Gateway Timeout: the site's server took too long to answer."


class FastPath:
    """Per worker: the sites, limits and origin pool the fast protocol needs."""

    def __init__(
        self,
        settings: ProxySettings,
        sites: dict[str, Site],
        resolver: ClientIpResolver,
        signer: TokenSigner,
        origin_ssl: dict[str, ssl.SSLContext | bool],
        fallback: Callable[[], asyncio.Protocol],
    ) -> None:
        pc = settings.proxy
        self.sites = sites
        self.resolver = resolver
        self.signer = signer
        self.fallback = fallback
        self.header_timeout_s = pc.header_timeout_s
        self.keepalive_timeout_s = pc.keepalive_timeout_s
        # Heads near aiohttp's limits go to aiohttp, which answers 431 with its own checks.
        self.max_head = pc.max_field_bytes
        self.max_headers = pc.max_headers
        self.loop = asyncio.get_running_loop()
        self.pool = OriginPool(self.loop)
        self.origins = {s.id: _address(s, origin_ssl[s.id]) for s in sites.values()}
        self.prefixes = {s.id: _path_prefix(s.config.origin) for s in sites.values()}
        self.connections: set[FastFront] = set()
        self.closing = False
        self._drained = asyncio.Event()
        self._date = (0, b"")

    def forget(self, front: FastFront) -> None:
        self.connections.discard(front)
        if self.closing and not self.connections:
            self._drained.set()

    def protocol(self) -> FastFront:
        return FastFront(self)

    def date(self) -> bytes:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, email.utils.formatdate(now, usegmt=True).encode())
        return self._date[1]

    async def drain(self, timeout_s: float) -> None:
        """Stop: idle connections close now, busy ones once their answer is out (or at the
        timeout), then the origin connections."""
        self.closing = True
        for front in list(self.connections):
            if front.exchange is None:
                front.close()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout_s)
        for front in list(self.connections):
            front.abort()
        self.pool.close()


def _address(site: Site, ssl_setting: ssl.SSLContext | bool) -> OriginAddress:
    url = URL(site.config.origin)
    tls = url.scheme == "https"
    ctx = ssl_setting if tls and isinstance(ssl_setting, ssl.SSLContext) else None
    assert url.host is not None and url.port is not None
    return OriginAddress(url.host, url.port, ctx, url.host if tls else None)


def _path_prefix(origin: str) -> bytes:
    """What the aiohttp path puts before the request target: the origin URL's own path."""
    rest = origin.split("://", 1)[1]
    slash = rest.find("/")
    return rest[slash:].encode() if slash >= 0 else b""


class _Head:
    """httptools callbacks collecting one request head; one per connection, reset per head
    (llhttp starts over after each complete message, and only complete body-less heads are
    ever fed to it — anything else hands the connection to aiohttp)."""

    __slots__ = ("complete", "headers", "keep_alive", "parser", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: RawPairs = []
        self.complete = False
        self.keep_alive = False
        self.parser = httptools.HttpRequestParser(self)

    def reset(self) -> None:
        self.url = b""
        self.headers = []
        self.complete = False
        self.keep_alive = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        self.complete = True
        # only valid here: llhttp resets it for the next message once this one is done
        self.keep_alive = self.parser.should_keep_alive()


class FastFront(asyncio.Protocol):
    """One client connection, until it is handed to aiohttp."""

    def __init__(self, fast: FastPath) -> None:
        self.fast = fast
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.peer_ip = ""  # the peer as the resolver writes it: the visitor, unless trusted
        self.secure = False
        self.buf = bytearray()
        self.exchange: Exchange | None = None
        self.served = 0
        self.reading_paused = False
        self.writing_paused = False
        self.timer: asyncio.TimerHandle | None = None
        self.trusted = False  # the peer is a trusted proxy: its client-IP headers count
        self.half_closed = False
        self.head = _Head()

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        self.secure = transport.get_extra_info("sslcontext") is not None
        self.peer_ip, self.trusted = self.fast.resolver.peer(self.peer)
        self.timer = self.fast.loop.call_later(self.fast.header_timeout_s, self._idle_timeout)
        self.fast.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.exchange is None:
            self._next()
        elif len(self.buf) > _PAUSE_READING_AT and not self.reading_paused:
            self.reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        """The visitor is done sending. An answer in flight still goes out (the connection
        stays half-open until then); an idle connection closes now."""
        if self.exchange is None:
            return None
        self.half_closed = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.fast.forget(self)
        self._cancel_timer()
        self.transport = None
        if self.exchange is not None:
            self.exchange.client_gone()
            self.exchange = None

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.exchange is not None:
            self.exchange.pause_upstream()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.exchange is not None:
            self.exchange.resume_upstream()

    # --- used by FastPath and Exchange ---

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def done(self, keep_alive: bool) -> None:
        """The answer is out; the next request may start."""
        self.exchange = None
        self.served += 1
        if self.transport is None:
            return
        if not keep_alive or self.fast.closing or self.half_closed:
            self.transport.close()
            return
        self._cancel_timer()
        self.timer = self.fast.loop.call_later(self.fast.keepalive_timeout_s, self._idle_timeout)
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()
        if self.buf:
            self._next()

    # --- internals ---

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _idle_timeout(self) -> None:
        self.timer = None
        if self.transport is None or self.exchange is not None:
            return
        if self.served == 0:
            self.transport.write(TIMEOUT_RESPONSE)  # slowloris: the first head never came
        self.transport.close()

    def _next(self) -> None:
        """Start the next buffered request, or hand the connection over."""
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self.fast.max_head or buf.find(b"\n\n") >= 0:
                self._hand_off()  # too long, or bare-LF line ends: aiohttp answers
            return
        head_len = end + 4
        if head_len > self.fast.max_head:
            self._hand_off()
            return
        head = self.head
        head.reset()
        parser = head.parser
        try:
            parser.feed_data(bytes(buf[:head_len]))
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._hand_off()  # aiohttp answers malformed input with its own 400
            return
        method = _FAST_METHODS.get(parser.get_method())
        version = parser.get_http_version()
        target = self._eligible(head, method, version)
        if target is None or method is None:
            self._hand_off()
            return
        site, host = target
        del buf[:head_len]
        self._cancel_timer()
        exchange = Exchange(self, site, method, version, head.keep_alive)
        self.exchange = exchange
        exchange.start(head.url, head.headers, host)

    def _eligible(self, head: _Head, method: str | None,
                  version: str) -> tuple[Site, str] | None:
        """The site and Host of a request the fast path serves; None hands it to aiohttp."""
        if (
            method is None
            or not head.complete
            or version not in ("1.1", "1.0")
            or not head.url.startswith(b"/")
            or head.url.startswith(_OWN_ROUTES)
            or len(head.headers) > self.fast.max_headers
        ):
            return None
        host = None
        for name, value in head.headers:
            lname = name.lower()
            if lname in _HAND_OFF_HEADERS:
                return None
            if lname == b"host":
                if host is not None:
                    return None
                host = value
        if host is None:
            return None
        host_text = host.decode("latin-1")
        site = self.fast.sites.get(host_key(host_text))
        if site is None:
            return None
        tls = site.config.tls
        if tls is not None and tls.redirect_http and not self.secure:
            return None
        return site, host_text

    def _hand_off(self) -> None:
        """aiohttp takes the connection from here, starting with the bytes not yet served."""
        transport = self.transport
        if transport is None:
            return
        self._cancel_timer()
        self.fast.forget(self)
        self.transport = None
        protocol = self.fast.fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self.reading_paused:
            transport.resume_reading()
        if self.buf:
            protocol.data_received(bytes(self.buf))
            self.buf.clear()


class Exchange:
    """One request relayed to its origin and the answer relayed back."""

    def __init__(self, front: FastFront, site: Site, method: str, version: str,
                 keep_alive: bool) -> None:
        self.front = front
        self.fast = front.fast
        self.site = site
        self.method = method
        self.version = version
        self.keep_alive = keep_alive
        self.conn: OriginConnection | None = None
        self.upstream_head = b""
        self.path = b""
        self.started = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.head_done = False
        self.finished = False
        self.retried = False
        self.chunked_out = False
        self.status = 0
        self.reason = b""
        self.render_buf: bytearray | None = None  # a page held back for render protection
        self.render_pairs: list[tuple[str, str]] = []
        self.render_lowered: dict[str, str] = {}
        self.render_framing: Framing = "length"
        self.render_until = 0.0  # loop time when a page still arriving is passed on unchanged
        self.out: list[bytes] = []  # written in one go per read from the origin (`flush`)

    # --- request ---

    def start(self, url: bytes, raw: RawPairs, host: str) -> None:
        site = self.site
        cfg = site.config
        fast = self.fast
        front = self.front
        metrics.request(site.id, self.method)
        incoming = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in raw]
        trusted = front.trusted
        client_ip = front.peer_ip
        if trusted:
            client_ip = fast.resolver.resolve(front.peer, joined_lowered(incoming))
        pairs = forward_pairs(
            incoming, peer=front.peer, peer_trusted=trusted, client_ip=client_ip,
            scheme="https" if front.secure else "http", host=host,
            upstream_host=host if cfg.preserve_host else site.origin_host,
        )
        self.path = url
        lines = [self.method.encode(), b" ", fast.prefixes[site.id], url, b" HTTP/1.1\r\n"]
        for name, value in pairs:
            lines += [name.encode("latin-1"), b": ", value.encode("latin-1"), b"\r\n"]
        lines.append(b"\r\n")
        self.upstream_head = b"".join(lines)
        self.started = fast.loop.time()
        conn = fast.pool.take(fast.origins[site.id])
        if conn is not None:
            self._send(conn)
        else:
            fast.loop.create_task(self._connect())

    async def _connect(self) -> None:
        t = self.site.config.timeouts
        try:
            conn = await asyncio.wait_for(
                self.fast.pool.connect(self.fast.origins[self.site.id]),
                min(t.connect_s, t.total_s),
            )
        except TimeoutError:
            self._gateway_error(504, "timeout", GATEWAY_TIMEOUT, "timed out connecting")
            return
        except OSError as exc:
            self._gateway_error(502, "connect", BAD_GATEWAY, f"{type(exc).__name__}: {exc}")
            return
        if self.finished:  # the visitor left while we were connecting
            self.fast.pool.put(conn)
            return
        self._send(conn)

    def _send(self, conn: OriginConnection) -> None:
        self.conn = conn
        conn.send(self.upstream_head, self, head_only=self.method == "HEAD")
        if self.front.writing_paused:
            self.pause_upstream()
        if self.timer is None:
            t = self.site.config.timeouts
            self.timer = self.fast.loop.call_later(min(t.read_s, t.total_s), self._check_timeout)

    def _check_timeout(self) -> None:
        """One timer per exchange, re-armed rather than reset on every read."""
        self.timer = None
        if self.finished:
            return
        t = self.site.config.timeouts
        now = self.fast.loop.time()
        conn = self.conn
        last = max(self.started, conn.last_data if conn is not None else 0.0)
        if self.front.writing_paused:
            last = now  # the visitor is slow, not the origin
        due = last + t.read_s
        if not self.head_done:
            due = min(due, self.started + t.total_s)
        elif self.render_buf is not None:
            if now >= self.render_until:  # still streaming (a progress page?): let it flow
                self._flush_unrendered()
                self.flush()
            else:
                due = min(due, self.render_until)
        if now >= due:
            if self.head_done:
                self._broke_off("read timeout")
            else:
                self._gateway_error(504, "timeout", GATEWAY_TIMEOUT, "timed out")
            return
        self.timer = self.fast.loop.call_later(due - now, self._check_timeout)

    # --- callbacks from the origin connection ---

    def on_head(self, status: int, reason: bytes, headers: RawPairs, framing: Framing) -> None:
        self.head_done = True
        metrics.upstream_latency(self.site.id, self.fast.loop.time() - self.started)
        pairs = response_pairs([(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers])
        if framing in ("chunked", "close"):
            pairs = [(n, v) for n, v in pairs if n.lower() != "content-length"]
        self.status = status
        self.reason = reason
        if self.site.render_enabled:
            lowered = {n.lower(): v for n, v in pairs}
            if render.renderable(self.site, self.method, status, lowered):
                self.render_buf = bytearray()  # the head goes out with the finished page
                self.render_until = self.fast.loop.time() + self.site.config.render.max_hold_s
                if self.timer is not None and self.timer.when() > self.render_until:
                    self.timer.cancel()
                    self.timer = self.fast.loop.call_at(self.render_until, self._check_timeout)
                self.render_pairs = pairs
                self.render_lowered = lowered
                self.render_framing = framing
                return
        self._emit(self._head(pairs, framing))

    def on_body(self, data: bytes) -> None:
        if self.render_buf is not None:
            self.render_buf += data
            if len(self.render_buf) > self.site.config.render.max_html_bytes:
                self._flush_unrendered()  # too big (or endless): passed on unchanged
            return
        if self.chunked_out:
            self._emit(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self._emit(data)

    def on_end(self, reusable: bool) -> None:
        if self.finished:
            return
        conn = self.conn
        self.conn = None
        if conn is not None:
            if reusable:
                self.fast.pool.put(conn)
            else:
                conn.abort()
        if self.render_buf is not None:
            self._write_rendered()
        if self.chunked_out:
            self._emit(b"0\r\n\r\n")
        self.flush()
        self._finish()

    def flush(self) -> None:
        """Everything one read from the origin produced (head, body, terminator): one send."""
        out = self.out
        if out:
            self.front.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def _emit(self, data: bytes) -> None:
        self.out.append(data)

    def on_fail(self, exc: BaseException, got_bytes: bool) -> None:
        if self.finished:
            return
        self.conn = None
        if not self.head_done and not got_bytes and not self.retried:
            # A pooled connection the origin had closed: GET and HEAD are safe to send again.
            self.retried = True
            self.fast.loop.create_task(self._connect())
            return
        if self.head_done:
            self._broke_off(type(exc).__name__)
        else:
            self._gateway_error(502, "connect", BAD_GATEWAY, f"{type(exc).__name__}: {exc}")

    # --- callbacks from the client connection ---

    def client_gone(self) -> None:
        if not self.finished:
            self.finished = True
            self._stop_timer()
            if self.conn is not None:
                self.conn.abort()
                self.conn = None

    def pause_upstream(self) -> None:
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.pause_reading()

    def resume_upstream(self) -> None:
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.resume_reading()

    # --- the visitor's answer ---

    def _head(self, pairs: list[tuple[str, str]], framing: Framing) -> bytes:
        """The response head; decides how the body that follows is framed."""
        status = self.status
        out = [f"HTTP/{self.version} {status} ".encode(), self.reason or _phrase(status), b"\r\n"]
        names = set()
        for name, value in pairs:
            names.add(name.lower())
            out += [name.encode("latin-1"), b": ", value.encode("latin-1"), b"\r\n"]
        if "date" not in names:
            out += [b"Date: ", self.fast.date(), b"\r\n"]
        if "strict-transport-security" not in names:
            out.append(self._hsts())
        if framing in ("chunked", "close"):
            if self.version == "1.1":
                self.chunked_out = True
                out.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.keep_alive = False  # HTTP/1.0: the body ends when we close
        out.append(self._connection())
        out.append(b"\r\n")
        return b"".join(out)

    def _hsts(self) -> bytes:
        tls = self.site.config.tls
        if self.front.secure and tls is not None and tls.hsts_max_age_s:
            return f"Strict-Transport-Security: max-age={tls.hsts_max_age_s}\r\n".encode()
        return b""

    def _connection(self) -> bytes:
        if not self.keep_alive:
            return b"Connection: close\r\n"
        return b"Connection: keep-alive\r\n" if self.version == "1.0" else b""

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _finish(self) -> None:
        self.finished = True
        self._stop_timer()
        self.front.done(self.keep_alive)

    def _gateway_error(self, status: int, kind: str, message: str, detail: str) -> None:
        """A small plain page, like the aiohttp path's ProxyError."""
        if self.finished:
            return
        if self.conn is not None:
            self.conn.abort()
            self.conn = None
        site = self.site
        metrics.UPSTREAM_ERRORS.labels(site.id, kind).inc()
        log.warning("origin of %s failed (%s): %s %s", site.id, detail, self.method,
                    self.path.split(b"?", 1)[0].decode("latin-1"))
        body = (message + "\n").encode()
        head = [f"HTTP/{self.version} {status} ".encode(), _phrase(status), b"\r\n",
                b"Content-Type: text/plain; charset=utf-8\r\n",
                f"Content-Length: {len(body)}\r\nCache-Control: {NO_STORE}\r\n".encode(),
                b"Date: ", self.fast.date(), b"\r\n", self._hsts(), self._connection(), b"\r\n"]
        self._emit(b"".join(head) + (body if self.method != "HEAD" else b""))
        self.flush()
        self._finish()

    def _broke_off(self, why: str) -> None:
        """Headers are gone already: cut the connection, so the visitor sees a truncated body
        instead of a complete-looking wrong one."""
        if self.finished:
            return
        if self.render_buf is not None:
            # The page was held back for rendering: nothing went out, an honest 502 still can.
            self.render_buf = None
            self._gateway_error(502, "body", BROKE_OFF, why)
            return
        if self.conn is not None:
            self.conn.abort()
            self.conn = None
        metrics.UPSTREAM_ERRORS.labels(self.site.id, "body").inc()
        log.warning("origin of %s broke off mid-body: %s", self.site.id, why)
        self.finished = True
        self._stop_timer()
        self.flush()
        self.front.abort()

    # --- render protection ---

    def _flush_unrendered(self) -> None:
        buf = bytes(self.render_buf or b"")
        self.render_buf = None
        self._emit(self._head(self.render_pairs, self.render_framing))
        self.on_body(buf)

    def _write_rendered(self) -> None:
        body = bytes(self.render_buf or b"")
        self.render_buf = None
        h = self.render_lowered
        site = self.site
        page = None
        try:
            page = render.protect_page(
                body, h.get("content-encoding", "").lower(), site=site, signer=self.fast.signer,
                page_path=URL(self.path.decode("latin-1"), encoded=True).path,
            )
        except render.RenderError as exc:
            log.warning("page of %s left unprotected: %s", site.id, exc)
        drop = {"content-length"}
        added: list[tuple[str, str]] = []
        if page is not None:
            body = page
            drop |= {"etag", "content-md5", "cache-control"}
            etag = render.rendered_etag(h.get("etag"))
            if etag:
                added.append(("ETag", etag))
            added.append(("Cache-Control", NO_STORE))  # each visitor gets own token
        added.append(("Content-Length", str(len(body))))
        pairs = [(n, v) for n, v in self.render_pairs if n.lower() not in drop] + added
        self._emit(self._head(pairs, "length") + body)


def _phrase(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"
