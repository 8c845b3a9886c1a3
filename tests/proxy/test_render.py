"""Render protection: token + honeypot inserted into protected forms of HTML pages."""

from __future__ import annotations

import gzip
import re
import time
import zlib

import aiohttp
import brotli
import pytest
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from proxy import render
from proxy.settings import ProxySettings, compile_sites, default_honeypot_name
from proxy.tokens import TOKEN_FIELD, TokenSigner
from tests.proxy.conftest import PAGE, MakeProxy, site_config

HP = default_honeypot_name("shop")
H = {"Host": "site.test"}


async def get(
    proxy: TestServer, path: str, **headers: str
) -> tuple[int, CIMultiDict[str], bytes]:
    async with aiohttp.ClientSession(auto_decompress=False) as s, s.get(
        f"http://127.0.0.1:{proxy.port}{path}", headers={**H, **headers}
    ) as r:
        return r.status, CIMultiDict(r.headers), await r.read()


@pytest.mark.parametrize("coding", ["", "gzip", "deflate", "br"])
async def test_protected_form_gets_token_and_honeypot(
    origin: TestServer, make_proxy: MakeProxy, coding: str
) -> None:
    proxy = await make_proxy([site_config(str(origin.make_url("")))])
    status, headers, body = await get(proxy, f"/html?coding={coding}")
    assert status == 200
    if coding:
        assert headers["Content-Encoding"] == coding
        body = {"gzip": gzip.decompress, "deflate": zlib.decompress,
                "br": brotli.decompress}[coding](body)
    assert headers["Content-Length"] == str(len(body) if not coding else headers[
        "Content-Length"])
    page = body.decode()
    assert page.count(f'name="{TOKEN_FIELD}"') == 1  # only the POST form to /contact
    assert page.count(f'name="{HP}"') == 1
    hp_tag = re.search(rf'<input type="text" name="{HP}"[^>]*>', page)
    assert hp_tag is not None
    for attr in ('tabindex="-1"', 'autocomplete="off"'):
        assert attr in hp_tag.group(0)
    assert 'aria-hidden="true"' in page
    assert headers["ETag"] == 'W/"v1"'
    assert headers["Cache-Control"] == "no-store, private"
    tok = re.search(rf'name="{TOKEN_FIELD}" value="([^"]+)"', page)
    assert tok is not None
    check = TokenSigner("test-secret-0123456789", [], 7200).verify(
        tok.group(1), "shop", "/contact", HP)
    assert check.state == "valid"


async def test_rendered_token_round_trip(origin: TestServer, make_proxy: MakeProxy) -> None:
    proxy = await make_proxy([site_config(str(origin.make_url(""))),],
                             trusted_proxies=["127.0.0.0/8"])
    _, _, body = await get(proxy, "/html")
    tok = re.search(rf'name="{TOKEN_FIELD}" value="([^"]+)"', body.decode())
    assert tok is not None
    async with aiohttp.ClientSession() as s, s.post(
        f"http://127.0.0.1:{proxy.port}/contact",
        data={"email": "jane.doe@example.org", TOKEN_FIELD: tok.group(1), HP: ""},
        headers={**H, "X-Forwarded-For": "81.2.69.160", "User-Agent": "Mozilla/5.0 (X11; Linux "
                 "x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"},
    ) as r:
        assert r.status == 200  # fast (too_fast adds score) but not blocked
        echo = await r.json()
    labels = next(v for k, v in echo["headers"] if k == "X-Activelead-Labels")
    assert "too_fast" in labels


async def test_non_html_and_unprotected_sites_untouched(
    origin: TestServer, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy([site_config(str(origin.make_url("")), render={"enabled": False})])
    _, headers, body = await get(proxy, "/html")
    assert TOKEN_FIELD.encode() not in body
    assert headers["ETag"] == '"v1"'
    proxy2 = await make_proxy([site_config(str(origin.make_url("")))])
    _, headers, body = await get(proxy2, "/cookies")
    assert body == b"ok"


async def test_large_page_passed_unchanged(origin: TestServer, make_proxy: MakeProxy) -> None:
    origin.app[PAGE][0] += "<!--" + "x" * 5000 + "-->"
    proxy = await make_proxy(
        [site_config(str(origin.make_url("")), render={"max_html_bytes": 2048})])
    _, _, body = await get(proxy, "/html")
    assert TOKEN_FIELD.encode() not in body
    assert body.decode() == origin.app[PAGE][0]


def test_inject_unit_cases() -> None:
    settings = ProxySettings(sites=[site_config("http://127.0.0.1:1")])
    site = compile_sites(settings)["site.test"]
    signer = TokenSigner("k" * 20, [], 60)
    page = (b"<FORM METHOD=POST ACTION='https://site.test/contact?x=1'></FORM>"
            b"<form method=post action=\"https://other.test/contact\"></form>"
            b"<form method=post></form><form method=post action=contact></form></body>")
    out, count = render.inject(page, site=site, signer=signer, page_path="/contact",
                               snippet_src="/__activelead/a.js")
    assert count == 3  # same-host absolute, no action (posts to itself), relative
    assert b"other.test/contact\"></form>" in out
    assert out.endswith(b'<script src="/__activelead/a.js" async></script></body>')


def test_token_rotation_and_tamper() -> None:
    old = TokenSigner("old-secret-000000", [], 60)
    new = TokenSigner("new-secret-000000", ["old-secret-000000"], 60)
    now = int(time.time() * 1000)
    tok = old.sign("shop", "/contact", HP, now_ms=now)
    assert new.verify(tok, "shop", "/contact", HP, now_ms=now + 5000).state == "valid"
    assert TokenSigner("new-secret-000000", [], 60).verify(
        tok, "shop", "/contact", HP).state == "invalid"
    assert new.verify(tok, "shop", "/contact", "other_hp").state == "invalid"
    assert new.verify(tok[:-2] + "AA", "shop", "/contact", HP).state == "invalid"
    assert new.verify(tok, "shop", "/contact", HP, now_ms=now + 61_000).state == "expired"
    assert new.verify("", "shop", "/contact", HP).state == "missing"
