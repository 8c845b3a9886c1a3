"""A small site for browser tests of the snippet alone: the snippet routes plus a form page and
a form handler that verifies the posted token and answers with what it found (JSON)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from activelead.snippet_http import SnippetBundle, SnippetSite, register, static_sites
from rules.challenge import FIELD, HEADER, ChallengeSigner, StepUp, verify
from rules.counters import MemoryCounters
from tests.services import free_port

SEEN = web.AppKey("seen", list)

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Contact</title>{csp}</head>
<body><h1>Contact us</h1>
<form id="contact" method="post" action="/contact">
  <p><label>E-mail <input name="email" id="email" type="email" required></label></p>
  <p><label>Message <textarea name="message" id="message"></textarea></label></p>
  <p><button id="send" name="send" value="1">Send</button></p>
</form>
<form id="search" method="get" action="/search"><input name="q" id="q"></form>
<script src="/__activelead/activelead.js" data-site="{site}" async></script>
</body></html>"""


class MiniSite:
    """Holds the running server and what its form handler saw."""

    def __init__(self, server: TestServer, app: web.Application) -> None:
        self.server = server
        self.app = app

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def url(self, path: str) -> str:
        return self.origin + path

    @property
    def seen(self) -> list[dict[str, Any]]:
        return self.app[SEEN]


async def start_site(bundle: SnippetBundle, difficulties: tuple[int, ...] = ()) -> MiniSite:
    """Site keys: pk_test (no proof-of-work), pk_pow (14 bits), pk_other (another origin only),
    and pk_d<bits> for each of `difficulties` (the benchmark's)."""
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    signer = ChallengeSigner("browser-test-secret-0123456789", ttl_s=600)
    counters = MemoryCounters()
    sites = {
        "pk_test": SnippetSite.build("pk_test", [origin]),
        "pk_pow": SnippetSite.build("pk_pow", [origin], StepUp(base=14)),
        "pk_other": SnippetSite.build("pk_other", ["https://elsewhere.example"]),
        **{f"pk_d{d}": SnippetSite.build(f"pk_d{d}", [origin], StepUp(base=d))
           for d in difficulties},
    }
    app = web.Application()
    app[SEEN] = []
    register(app, lookup=static_sites(sites), signer=signer, counters=lambda r: counters,
             bundle=bundle)

    async def page(request: web.Request) -> web.Response:
        csp = ""
        if request.query.get("csp"):
            csp = ('<meta http-equiv="Content-Security-Policy" content="default-src \'self\'; '
                   'worker-src \'none\'; script-src \'self\'">')
        html = PAGE.replace("{site}", request.query.get("site", "pk_test")).replace("{csp}", csp)
        return web.Response(text=html, content_type="text/html")

    async def contact(request: web.Request) -> web.Response:
        if request.content_type == "application/json":
            fields = dict(await request.json())
        else:
            fields = {k: str(v) for k, v in (await request.post()).items()}
        value = request.headers.get(HEADER) or fields.get(FIELD, "")
        check = await verify(signer, counters, value,
                             origin=request.headers.get("Origin", origin), form=request.path)
        seen = {"state": check.state, "reason": check.reason, "elapsedMs": check.elapsed_ms,
                "powSolved": check.pow_solved, "automation": check.automation,
                "behaviour": check.behaviour, "fields": fields, "cookies": dict(request.cookies),
                "value": value}
        request.app[SEEN].append(seen)
        return web.json_response(seen)

    app.router.add_get("/form", page)
    app.router.add_post("/contact", contact)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    return MiniSite(server, app)
