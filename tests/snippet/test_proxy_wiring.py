"""The snippet wired into the proxy: routes on the proxy app, default origins, settings
validation, the tag in rendered pages, and the challenge key following the render key."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from proxy import render
from proxy.app import build_routing, challenge_secret, create_app
from proxy.settings import ProxySettings, compile_sites, load_settings
from proxy.tokens import TokenSigner
from rules.challenge import ChallengeSigner
from rules.config import ConfigError
from rules.engine import Engine
from tests.snippet.test_snippet_routes import CODE, write_dist

PAGE = ("<!doctype html><html><body><form method=post action=/contact><input name=email>"
        "</form></body></html>")


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.from_config()


def site(origin: str, **snippet: Any) -> dict[str, Any]:
    return {"id": "shop", "hosts": ["127.0.0.1", "shop.test"], "origin": origin,
            "snippet": {"site_key": "pk_shop", **snippet},
            "forms": [{"id": "contact", "path": "/contact"}]}


@pytest.fixture
async def origin() -> AsyncIterator[TestServer]:
    app = web.Application()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app.router.add_get("/page", page)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
async def proxy(engine: Engine, origin: TestServer, tmp_path: Path) -> AsyncIterator[TestServer]:
    settings = ProxySettings(
        proxy={"state_dir": str(tmp_path / "state"), "render_secret": "wiring-secret-0123456789",
               "snippet_dist": str(write_dist(tmp_path / "dist"))},
        sites=[site(f"http://127.0.0.1:{origin.port}")],
    )
    server = TestServer(create_app(settings, engine=engine), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


async def test_the_proxy_serves_the_snippet(proxy: TestServer) -> None:
    async with ClientSession() as http:
        resp = await http.get(proxy.make_url("/__activelead/activelead.js"))
        assert resp.status == 200 and await resp.read() == CODE


@pytest.mark.parametrize(("page_origin", "status"), [
    ("http://127.0.0.1:9999", 200),  # the site's own host, any port
    ("https://shop.test", 200),
    ("https://other.test", 403),
])
async def test_default_allowed_origins_are_the_site_hosts(proxy: TestServer, page_origin: str,
                                                          status: int) -> None:
    async with ClientSession() as http:
        resp = await http.post(proxy.make_url("/__activelead/challenge"),
                               data=json.dumps({"site": "pk_shop", "form": "/contact"}),
                               headers={"Content-Type": "text/plain", "Origin": page_origin,
                                        "User-Agent": "Mozilla/5.0 (X11; Linux) Chrome/126.0"})
        assert resp.status == status
        if status == 200:
            assert resp.headers["Access-Control-Allow-Origin"] == page_origin


def challenge_count(result: str) -> float:
    from proxy import metrics

    text = metrics.render()[0].decode()
    line = f'activelead_proxy_snippet_challenges_total{{result="{result}"}} '
    return sum(float(row.split()[-1]) for row in text.splitlines() if row.startswith(line))


async def test_challenge_outcomes_are_counted(proxy: TestServer) -> None:
    before = {r: challenge_count(r) for r in ("issued", "stepped_up", "origin_not_allowed")}
    async with ClientSession() as http:
        for origin, ua in [("https://shop.test", "Mozilla/5.0 (X11; Linux) Chrome/126.0"),
                           ("https://shop.test", "curl/8.5"), ("https://other.test", "curl/8.5")]:
            await http.post(proxy.make_url("/__activelead/challenge"),
                            data=json.dumps({"site": "pk_shop", "form": "/contact"}),
                            headers={"Content-Type": "text/plain", "Origin": origin, "User-Agent": ua})
    assert {r: challenge_count(r) - n for r, n in before.items()} == {
        "issued": 1, "stepped_up": 1, "origin_not_allowed": 1}


async def test_rendered_page_gets_the_tag_with_its_site_key(proxy: TestServer) -> None:
    async with ClientSession() as http:
        body = await (await http.get(proxy.make_url("/page"))).text()
    assert '<script src="/__activelead/activelead.js" data-site="pk_shop" async></script></body>' in body
    assert 'name="_al_token"' in body


def test_inject_keeps_a_tag_the_page_has() -> None:
    sites = compile_sites(ProxySettings(sites=[site("http://127.0.0.1:1")]))
    shop = sites["shop.test"]
    own = PAGE.replace("</body>", '<script src="https://cdn.test/__activelead/activelead.0123abcd.js" '
                                  'data-site="pk_shop" async></script></body>').encode()
    out, count = render.inject(own, site=shop, signer=TokenSigner("k" * 20, [], 60),
                               page_path="/", snippet_src=shop.snippet_src, snippet_site="pk_shop")
    assert count == 1 and out.count(b"<script") == 1


def test_no_snippet_key_no_tag() -> None:
    cfg = site("http://127.0.0.1:1")
    cfg["snippet"] = {}
    assert compile_sites(ProxySettings(sites=[cfg]))["shop.test"].snippet_src is None


def test_challenge_key_follows_the_render_key(tmp_path: Path) -> None:
    def routing(secret: str, previous: list[str]) -> ChallengeSigner:
        settings = ProxySettings(proxy={"render_secret": secret, "render_previous_secrets": previous,
                                        "state_dir": str(tmp_path)}, sites=[site("http://127.0.0.1:1")])
        return build_routing(settings).challenges

    old = routing("old-render-secret-0123", [])
    token = old.issue("pk_shop", "https://shop.test", "/contact").token
    assert routing("new-render-secret-0123", ["old-render-secret-0123"]).check(token).state == "valid"
    assert routing("new-render-secret-0123", []).check(token).state == "invalid"
    assert challenge_secret("a" * 20) != "a" * 20  # never the render key itself


@pytest.mark.parametrize(("snippet", "key"), [
    ({"site_key": "pk shop"}, "sites.0.snippet.site_key"),
    ({"site_key": "pk_1", "allowed_origins": ["shop.test"]}, "sites.0.snippet.allowed_origins"),
    ({"site_key": "pk_1", "pow_difficulty": 27}, "sites.0.snippet.pow_difficulty"),
    ({"site_key": "pk_1", "step_up_rate": 500}, "sites.0.snippet"),
])
def test_bad_snippet_config_names_the_key(tmp_path: Path, snippet: dict[str, Any], key: str) -> None:
    cfg = tmp_path / "activelead.yaml"
    cfg.write_text(json.dumps({"sites": [{**site("http://127.0.0.1:1"), "snippet": snippet}]}))
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert key in str(err.value)


def test_site_keys_are_unique(tmp_path: Path) -> None:
    one = site("http://127.0.0.1:1")
    two = {**site("http://127.0.0.1:2"), "id": "other", "hosts": ["other.test"]}
    cfg = tmp_path / "activelead.yaml"
    cfg.write_text(json.dumps({"sites": [one, two]}))
    with pytest.raises(ConfigError, match="pk_shop"):
        load_settings(cfg)
