"""Render protection: token + honeypot inserted into protected forms of HTML pages."""

from __future__ import annotations

import asyncio
import gzip
import re
import time
import tracemalloc
import zlib

import aiohttp
import brotli
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from proxy import render
from proxy.settings import ProxySettings, compile_sites, default_honeypot_name
from proxy.tokens import TOKEN_FIELD, TokenSigner
from tests.proxy.conftest import PAGE, MakeProxy, serving, site_config

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


def _bomb(coding: str, mib: int) -> bytes:
    """A small page that inflates to `mib` MiB of spaces after its form."""
    head, block = b"<html><body><form method=post action=/contact></form>", b" " * (1 << 20)
    if coding == "br":
        packer = brotli.Compressor(quality=1)
        return b"".join([packer.process(head), *(packer.process(block) for _ in range(mib)),
                         packer.finish()])
    zipper = zlib.compressobj(1, zlib.DEFLATED, 31 if coding == "gzip" else 15)
    return b"".join([zipper.compress(head), *(zipper.compress(block) for _ in range(mib)),
                     zipper.flush()])


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
def test_decoding_stops_at_the_limit(coding: str) -> None:
    """A decompression bomb is never inflated past max_html_bytes: the page is left alone."""
    bomb = _bomb(coding, 64)
    assert len(bomb) < 1 << 20
    tracemalloc.start()
    try:
        assert render.decode(bomb, coding, 1 << 20) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # what inflating it whole took: 64 MiB and more
    page = b"<p>" + b"x" * 997
    packed = {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress}[coding](page)
    assert render.decode(packed, coding, 1000) == page  # exactly the limit still decodes
    assert render.decode(packed, coding, 999) is None
    with pytest.raises(render.RenderError, match="cut short"):
        render.decode(packed[: len(packed) // 2], coding, 1000)
    with pytest.raises(render.RenderError):
        render.decode(b"not compressed at all", coding, 1000)


def test_decoding_reads_every_gzip_member_and_raw_deflate() -> None:
    assert render.decode(gzip.compress(b"<p>a") + gzip.compress(b"b</p>"), "gzip", 100) == (
        b"<p>ab</p>")
    raw = zlib.compressobj(5, zlib.DEFLATED, -15)
    assert render.decode(raw.compress(b"<p>raw</p>") + raw.flush(), "deflate", 100) == b"<p>raw</p>"
    assert render.decode(b"<p>plain</p>", "", 100) == b"<p>plain</p>"
    assert render.decode(b"<p>plain</p>", "", 5) is None


def _gzip_page_origin(body: bytes) -> web.Application:
    """An origin answering GET /page with `body` as gzip-encoded HTML, whatever it holds."""

    async def page(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/html",
                            headers={"Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_get("/page", page)
    return app


@pytest.mark.parametrize("fast_path", [True, False])
async def test_compressed_bomb_from_the_origin_is_passed_on_unchanged(
    make_proxy: MakeProxy, fast_path: bool
) -> None:
    bomb = _bomb("gzip", 256)  # 256 MiB decoded; max_html_bytes is 2 MiB
    async with serving(_gzip_page_origin(bomb)) as origin:
        proxy = await make_proxy([site_config(str(origin.make_url("")))], fast_path=fast_path)
        tracemalloc.start()  # proxy, origin and client share this process
        try:
            status, headers, body = await get(proxy, "/page")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 32 << 20  # inflating it whole to look for forms took 256 MiB
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert body == bomb  # as the origin sent it: not inflated, not rendered


def _streaming_origin(pieces: int, gap_s: float, **headers: str) -> web.Application:
    """An HTML page with a protected form, sent in `pieces` parts `gap_s` apart (chunked)."""

    async def page(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/html", **headers})
        await resp.prepare(request)
        await resp.write(b"<html><body><form method=post action=/contact></form>")
        for i in range(pieces):
            await asyncio.sleep(gap_s)
            await resp.write(b"<p>line %d</p>" % i)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/stream", page)
    return app


async def _first_bytes_after(proxy: TestServer) -> tuple[float, bytes]:
    """Seconds until the first body bytes arrive, and the whole body."""
    started = time.monotonic()
    async with aiohttp.ClientSession() as s, s.get(
        f"http://127.0.0.1:{proxy.port}/stream", headers=H
    ) as r:
        first = await r.content.readany()
        took = time.monotonic() - started
        return took, first + await r.read()


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize(("headers", "hold_s", "passed_on_within_s"), [
    ({}, 0.5, 1.5),  # still streaming after max_hold_s: let go, unchanged
    ({"X-Accel-Buffering": "no"}, 30, 0.4),  # the origin says it streams: never held
])
async def test_streaming_html_is_not_held(
    make_proxy: MakeProxy, fast_path: bool, headers: dict[str, str], hold_s: float,
    passed_on_within_s: float,
) -> None:
    async with serving(_streaming_origin(12, 0.25, **headers)) as origin:
        proxy = await make_proxy([site_config(str(origin.make_url("")),
                                              render={"max_hold_s": hold_s})], fast_path=fast_path)
        took, body = await _first_bytes_after(proxy)
    assert took < passed_on_within_s  # the whole page takes 3 s
    assert body.endswith(b"<p>line 11</p>")
    assert TOKEN_FIELD.encode() not in body  # passed on as sent


@pytest.mark.parametrize("fast_path", [True, False])
async def test_a_page_that_arrives_within_max_hold_s_is_rendered(
    make_proxy: MakeProxy, fast_path: bool
) -> None:
    async with serving(_streaming_origin(3, 0.2)) as origin:
        proxy = await make_proxy([site_config(str(origin.make_url("")),
                                              render={"max_hold_s": 5})], fast_path=fast_path)
        took, body = await _first_bytes_after(proxy)
    assert took > 0.5  # held until the end
    assert body.count(TOKEN_FIELD.encode()) == 1


@pytest.mark.parametrize("fast_path", [True, False])
async def test_a_page_cut_off_while_held_is_an_honest_502(
    make_proxy: MakeProxy, fast_path: bool
) -> None:
    """Nothing went out while the page was held: the visitor gets a 502 page, not a 500 and not
    a truncated page that looks whole."""

    async def page(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        await resp.prepare(request)
        await resp.write(b"<html><body><form method=post action=/contact>")
        assert request.transport is not None
        request.transport.abort()  # no last chunk
        return resp

    app = web.Application()
    app.router.add_get("/cut", page)
    async with serving(app) as origin:
        proxy = await make_proxy([site_config(str(origin.make_url("")))], fast_path=fast_path)
        status, _, body = await get(proxy, "/cut")
    assert status == 502
    assert b"broke off its answer" in body


@pytest.mark.parametrize("fast_path", [True, False])
async def test_a_corrupt_compressed_page_is_passed_on_as_sent(
    make_proxy: MakeProxy, fast_path: bool, caplog: pytest.LogCaptureFixture
) -> None:
    corrupt = gzip.compress(b"<html><body><form method=post action=/contact></form>")[:-12]
    async with serving(_gzip_page_origin(corrupt)) as origin:
        proxy = await make_proxy([site_config(str(origin.make_url("")))], fast_path=fast_path)
        status, headers, body = await get(proxy, "/page")
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert body == corrupt
    assert any("left unprotected: cannot decode" in r.getMessage() for r in caplog.records)


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
