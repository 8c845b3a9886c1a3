"""The same protection as a mitmproxy addon, for operators who want mitmproxy's TLS or HTTP/2.

`run_mitmdump()` (the `activelead mitm` command) starts `mitmdump` in reverse-proxy mode in front
of one site's origin, with this file as its script. The addon runs the very stages of
proxy/stages over mitmproxy's flows; only the adaptation to mitmproxy's request/response objects
lives here. mitmproxy buffers bodies itself, so `read_body` only enforces the limit.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from mitmproxy import ctx, http

from activelead.clientip import ClientIpResolver
from proxy import render
from proxy.events import LogReporter, Spool, SpoolReporter, log_events_to_stdout
from proxy.forward import forward_pairs
from proxy.settings import ProxySettings, Site, compile_sites, load_settings
from proxy.stages import Stage, build_pipeline, run_pipeline
from proxy.stages.act import NO_STORE
from proxy.stages.flow import BodyTooLarge, Flow, Forward, Respond
from proxy.tokens import TokenSigner, load_or_create_secret
from rules.challenge import ChallengeSigner, challenge_secret
from rules.counters import Counters, MemoryCounters, RedisCounters

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SCORED = "activelead_scored"

log = logging.getLogger("activelead.proxy")


class ActiveleadMitm:
    """mitmproxy addon: match -> read -> count -> token -> score -> act -> record on each request."""

    def __init__(self) -> None:
        self.settings: ProxySettings | None = None
        self.site: Site | None = None
        self.stages: list[Stage] = []
        self.counters: Counters | None = None
        self.reporter: LogReporter | SpoolReporter | None = None
        self.signer: TokenSigner | None = None
        self.challenges: ChallengeSigner | None = None
        self.resolver: ClientIpResolver | None = None

    def load(self, loader: Any) -> None:
        loader.add_option("activelead_config", str, "", "Path of activelead.yaml.")
        loader.add_option("activelead_site", str, "", "Site id to protect (default: first).")

    def configure(self, updated: set[str]) -> None:
        if "activelead_config" not in updated and self.settings is not None:
            return
        settings = load_settings(ctx.options.activelead_config or None)
        sites = {s.id: s for s in compile_sites(settings).values()}
        if not sites:
            raise ValueError("activelead: the config has no sites")
        wanted = ctx.options.activelead_site or settings.sites[0].id
        if wanted not in sites:
            raise ValueError(f"activelead: no site {wanted!r} in the config")
        self.settings, self.site = settings, sites[wanted]
        pc = settings.proxy
        secret = pc.render_secret or load_or_create_secret(pc.state_dir)
        self.signer = TokenSigner(secret, pc.render_previous_secrets, pc.token_ttl_s)
        # Snippet tokens from a sibling aiohttp proxy (same render key) verify here too; this
        # adapter serves no /__activelead/ routes itself.
        self.challenges = ChallengeSigner(
            challenge_secret(secret),
            [challenge_secret(p) for p in pc.render_previous_secrets if p],
            ttl_s=pc.challenge_ttl_s,
        )
        self.resolver = ClientIpResolver(pc.trusted_proxies, pc.client_ip_headers)

    async def running(self) -> None:
        from rules.engine import Engine
        from rules.scorer import Scorer

        assert self.settings is not None and self.signer is not None
        pc = self.settings.proxy
        url = self.settings.redis.url
        self.counters = RedisCounters(url) if url else MemoryCounters()
        link = pc.control_api
        if link.url:
            self.reporter = SpoolReporter(
                Spool(pc.state_dir / "spool" / "mitm", link.batch_max_events),
                url=link.url, edge_token=link.edge_token,
                fsync_interval_s=pc.spool_fsync_interval_s,
                flush_interval_s=link.flush_interval_s, timeout_s=link.timeout_s,
                max_backoff_s=link.max_backoff_s,
            )
        else:
            log_events_to_stdout()  # mitmdump -q would swallow them
            self.reporter = LogReporter()
        await self.reporter.start()
        engine = Engine.from_config(self.settings.scoring)
        self.stages = build_pipeline(
            signer=self.signer, counters=self.counters, scorer=Scorer(engine, self.counters),
            reporter=self.reporter, token_ttl_s=pc.token_ttl_s, challenges=self.challenges,
        )

    async def done(self) -> None:
        if self.reporter is not None:
            await self.reporter.close()
        if self.counters is not None:
            await self.counters.close()

    async def request(self, flow: http.HTTPFlow) -> None:
        req = flow.request
        assert self.resolver is not None
        headers = {k.lower(): ", ".join(req.headers.get_all(k)) for k in req.headers}
        peer = flow.client_conn.peername[0] if flow.client_conn.peername else ""
        address, trusted = self.resolver.peer(peer)
        client_ip = self.resolver.resolve(peer, headers) if trusted else address
        # The forwarding headers as `activelead proxy` sends them (a visitor's X-Activelead-*
        # and spoofed forwarding headers dropped); mitmproxy keeps the connection's own.
        host = req.host_header or req.pretty_host
        req.headers = http.Headers([
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in forward_pairs(
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in req.headers.fields
                 if k.lower() != b"host"],
                peer=peer, peer_trusted=trusted, client_ip=client_ip,
                scheme="https" if flow.client_conn.tls_established else "http",
                host=host, upstream_host=host, hop_by_hop=frozenset(),
            )
        ])
        site = self.site
        if site is None or not self.stages or req.method not in BODY_METHODS or not site.forms:
            return
        body = req.raw_content or b""

        async def read_body(limit: int) -> bytes:
            if len(body) > limit:
                raise BodyTooLarge(limit)
            return body

        state = Flow(
            site=site, method=req.method, path=req.path.split("?", 1)[0], scheme=req.scheme,
            host=host, client_ip=client_ip, headers=headers, read_body=read_body,
        )
        await run_pipeline(self.stages, state)
        outcome = state.outcome
        if state.passthrough or outcome is None:
            return
        if isinstance(outcome, Respond):
            out_headers = {"Content-Type": f"{outcome.content_type}; charset=utf-8",
                           "Cache-Control": NO_STORE, **outcome.headers}
            flow.response = http.Response.make(outcome.status, outcome.body.encode(), out_headers)
            return
        assert isinstance(outcome, Forward)
        req.raw_content = outcome.body
        req.headers["content-length"] = str(len(outcome.body))
        for name, value in outcome.headers.items():
            req.headers[name] = value
        flow.metadata[SCORED] = outcome.headers

    def response(self, flow: http.HTTPFlow) -> None:
        resp, site = flow.response, self.site
        if resp is None or site is None:
            return
        scored = flow.metadata.get(SCORED)
        if scored is not None:
            resp.headers["Cache-Control"] = NO_STORE
            if site.config.result_headers_on_response:
                resp.headers.update(scored)
            return
        if self.signer is None or not render.renderable(  # mitmproxy's headers: any case
            site, flow.request.method, resp.status_code, resp.headers
        ):
            return
        # The same checks and bounded decoding as the aiohttp proxy (no-transform, ranges,
        # size, decompression bombs), on the body as the origin encoded it.
        try:
            page = render.protect_page(
                resp.raw_content or b"", resp.headers.get("content-encoding", "").lower(),
                site=site, signer=self.signer, page_path=flow.request.path.split("?", 1)[0],
            )
        except render.RenderError as exc:
            log.warning("page of %s left unprotected: %s", site.id, exc)
            return
        if page is not None:
            resp.raw_content = page
            if "transfer-encoding" not in resp.headers:
                resp.headers["content-length"] = str(len(page))
            etag = render.rendered_etag(resp.headers.get("etag"))
            if etag:
                resp.headers["etag"] = etag
            resp.headers.pop("content-md5", None)
            resp.headers["Cache-Control"] = NO_STORE  # each visitor gets own token


addons = [ActiveleadMitm()]


def mitmdump_command(
    *, config: str | None, site: str | None, host: str, port: int, extra: list[str] | None = None
) -> list[str]:
    """The mitmdump command line for reverse mode in front of the site's origin."""
    settings = load_settings(config)
    sites = {s.id: s for s in settings.sites}
    if not sites:
        raise ValueError("the config has no sites")
    chosen = sites[site] if site else settings.sites[0]
    exe = shutil.which("mitmdump", path=str(Path(sys.executable).parent)) or "mitmdump"
    cmd = [
        exe, "--mode", f"reverse:{chosen.origin}@{port}", "--listen-host", host,
        "--set", "keep_host_header=true", "--set", "connection_strategy=lazy",
        "-s", str(Path(__file__).resolve()),
        "--set", f"activelead_site={chosen.id}", "-q",
    ]
    if config:
        cmd += ["--set", f"activelead_config={Path(config).resolve()}"]
    return cmd + list(extra or [])


def run_mitmdump(
    *, config: str | None, site: str | None, host: str, port: int, extra: list[str] | None = None
) -> int:
    """Run mitmdump with the addon until it exits; returns its exit code. Signals sent to this
    process (a service manager's SIGTERM) are passed on, and mitmdump is told to stop if this
    process dies without one: it must never outlive us holding the port."""
    cmd = mitmdump_command(config=config, site=site, host=host, port=port, extra=extra)
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    child = subprocess.Popen(cmd, env=env, preexec_fn=_stop_with_parent)

    def pass_on(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, pass_on)
    return child.wait()


def _stop_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
