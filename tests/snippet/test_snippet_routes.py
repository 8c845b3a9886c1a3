"""activelead/snippet_http.py: the script with its caching, and the challenge endpoint's 4xx paths."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from activelead.snippet_http import (
    HASHED_CACHE,
    STABLE_CACHE,
    SnippetBundle,
    SnippetNotBuilt,
    SnippetSite,
    register,
    static_sites,
)
from rules.challenge import ChallengeSigner, StepUp
from rules.counters import MemoryCounters

ORIGIN = "https://shop.example"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
SIGNER = ChallengeSigner("route-secret-0123456789")
OBSERVED = web.AppKey("observed", list)
CODE = b"(()=>{window.activelead=1})();\n"


def write_dist(root: Path, code: bytes = CODE, name: str = "activelead.0123456789ab.js") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(code)
    (root / "activelead.js").write_bytes(code)
    (root / "manifest.json").write_text(json.dumps({"file": name}))
    return root


def make_app(tmp_path: Path, *, built: bool = True, step_up: StepUp | None = None) -> web.Application:
    app = web.Application()
    counters = MemoryCounters()
    sites = {"pk_live_1": SnippetSite.build("pk_live_1", [ORIGIN, "http://127.0.0.1:8080"], step_up)}
    app[OBSERVED] = []
    register(
        app, lookup=static_sites(sites), signer=SIGNER, counters=lambda request: counters,
        bundle=SnippetBundle.load(write_dist(tmp_path / "dist")) if built else None,
        observe=app[OBSERVED].append,
    )

    async def catch_all(request: web.Request) -> web.Response:
        return web.Response(text="origin")

    app.router.add_route("*", "/{tail:.*}", catch_all)  # like the proxy's: registered after
    return app


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path) -> TestClient[Any, Any]:
    c: TestClient[Any, Any] = await aiohttp_client(make_app(tmp_path))
    return c


def body(site: str = "pk_live_1", form: str = "/contact") -> str:
    return json.dumps({"site": site, "form": form})


async def ask(client: TestClient[Any, Any], data: str | bytes | None = None, *, origin: str | None = ORIGIN,
              ctype: str = "text/plain", **headers: str) -> Any:
    h = {"Content-Type": ctype, "User-Agent": BROWSER, **headers}
    if origin is not None:
        h["Origin"] = origin
    return await client.post("/__activelead/challenge", data=body() if data is None else data, headers=h)


# --- script ------------------------------------------------------------------------------------


async def test_stable_script_is_revalidated(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/__activelead/activelead.js", headers={"Accept-Encoding": "identity"})
    assert resp.status == 200
    assert await resp.read() == CODE
    assert resp.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert resp.headers["Cache-Control"] == STABLE_CACHE
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "Set-Cookie" not in resp.headers
    etag = resp.headers["ETag"]
    again = await client.get("/__activelead/activelead.js", headers={"If-None-Match": etag})
    assert again.status == 304 and await again.read() == b""
    weak = await client.get("/__activelead/activelead.js", headers={"If-None-Match": f'"x", W/{etag}'})
    assert weak.status == 304


async def test_hashed_script_is_immutable(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/__activelead/activelead.0123456789ab.js")
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == HASHED_CACHE
    other = await client.get("/__activelead/activelead.ffffffffffff.js")
    assert other.status == 404
    assert (await other.json())["code"] == "not_found"


async def test_script_is_sent_gzipped_when_accepted(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/__activelead/activelead.js", headers={"Accept-Encoding": "gzip, br"},
                            auto_decompress=False)
    assert resp.headers["Content-Encoding"] == "gzip"
    assert resp.headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(await resp.read()) == CODE


async def test_head_of_script(client: TestClient[Any, Any]) -> None:
    resp = await client.head("/__activelead/activelead.js")
    assert resp.status == 200 and resp.headers["ETag"]


async def test_unbuilt_snippet_is_404_and_the_rest_still_works(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(make_app(tmp_path, built=False))
    resp = await client.get("/__activelead/activelead.js")
    assert resp.status == 404
    assert (await resp.json())["code"] == "snippet_not_built"
    assert (await ask(client)).status == 200


def test_bundle_load_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(SnippetNotBuilt, match="scripts/build-snippet"):
        SnippetBundle.load(tmp_path / "nowhere")
    bad = write_dist(tmp_path / "bad")
    (bad / "manifest.json").write_text(json.dumps({"file": "../activelead.js"}))
    with pytest.raises(SnippetNotBuilt, match="bad file name"):
        SnippetBundle.load(tmp_path / "bad")


def test_site_origins_are_validated_once() -> None:
    with pytest.raises(ValueError, match=r"allowed_origins\[1\]"):
        SnippetSite.build("pk_1", [ORIGIN, "shop.example"])


async def test_other_paths_reach_the_host_app(client: TestClient[Any, Any]) -> None:
    assert await (await client.get("/__activelead/other")).text() == "origin"
    assert await (await client.get("/contact")).text() == "origin"


# --- challenge ---------------------------------------------------------------------------------


async def test_challenge_for_an_allowed_origin(client: TestClient[Any, Any]) -> None:
    resp = await ask(client)
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert resp.headers["Vary"] == "Origin"
    assert resp.headers["Cache-Control"] == "no-store"
    assert "Access-Control-Allow-Credentials" not in resp.headers
    data = await resp.json()
    assert data["pow"] is None and data["expiresIn"] == SIGNER.ttl_s
    check = SIGNER.check(data["token"], site_key="pk_live_1", origin=ORIGIN, form="/contact")
    assert check.state == "valid"


async def test_json_content_type_and_preflight(client: TestClient[Any, Any]) -> None:
    pre = await client.options("/__activelead/challenge", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert pre.status == 204
    assert pre.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    resp = await ask(client, ctype="application/json; charset=utf-8")
    assert resp.status == 200


@pytest.mark.parametrize(("data", "ctype", "origin", "status", "code"), [
    (None, "text/plain", "https://evil.example", 403, "origin_not_allowed"),
    (None, "text/plain", "http://shop.example", 403, "origin_not_allowed"),  # scheme matters
    (None, "text/plain", None, 403, "origin_required"),
    (None, "text/plain", "null", 403, "origin_required"),  # sandboxed iframe, file://
    (body(site="pk_unknown"), "text/plain", ORIGIN, 404, "unknown_site"),
    ("{", "text/plain", ORIGIN, 400, "invalid_json"),
    (b"\xff\xfe{}", "text/plain", ORIGIN, 400, "invalid_json"),
    ("[]", "text/plain", ORIGIN, 400, "invalid_body"),
    ('{"site": "pk_live_1", "x": 1}', "text/plain", ORIGIN, 400, "invalid_body"),
    ('{"form": "/contact"}', "text/plain", ORIGIN, 400, "invalid_site"),
    ('{"site": 5}', "text/plain", ORIGIN, 400, "invalid_site"),
    (body(form="/c\u0000"), "text/plain", ORIGIN, 400, "invalid_form"),
    (body(form="/" * 201), "text/plain", ORIGIN, 400, "invalid_form"),
    ('{"site": "pk_live_1", "form": ["/a"]}', "text/plain", ORIGIN, 400, "invalid_form"),
    (body(site="pk live"), "text/plain", ORIGIN, 404, "unknown_site"),
    ("x" * 2000, "text/plain", ORIGIN, 413, "payload_too_large"),
    (None, "application/x-www-form-urlencoded", ORIGIN, 415, "unsupported_media_type"),
    (None, "multipart/form-data; boundary=x", ORIGIN, 415, "unsupported_media_type"),
])
async def test_bad_challenge_requests(client: TestClient[Any, Any], data: str | bytes | None, ctype: str,
                                      origin: str | None, status: int, code: str) -> None:
    resp = await ask(client, data, ctype=ctype, origin=origin)
    assert resp.status == status
    assert client.app[OBSERVED] == [code]
    answer = await resp.json()
    assert answer["code"] == code and answer["message"]
    assert "Access-Control-Allow-Origin" not in resp.headers or origin == ORIGIN


async def test_oversized_chunked_body_is_413(client: TestClient[Any, Any]) -> None:
    async def chunks() -> Any:
        for _ in range(64):
            yield b"x" * 100

    resp = await client.post("/__activelead/challenge", data=chunks(),
                             headers={"Content-Type": "text/plain", "Origin": ORIGIN})
    assert resp.status == 413


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_other_methods(client: TestClient[Any, Any], method: str) -> None:
    resp = await client.request(method, "/__activelead/challenge")
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST, OPTIONS"


async def test_step_up_for_scripts_and_floods(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(make_app(tmp_path, step_up=StepUp(risky=8, rate_limit=3, hard_limit=5)))
    first = await (await ask(client)).json()
    assert first["pow"] is None
    scripted = await (await ask(client, **{"User-Agent": "python-requests/2.32"})).json()
    assert scripted["pow"] == {"difficulty": 8}
    assert SIGNER.check(scripted["token"]).reason == "proof-of-work missing"
    answers = [await ask(client) for _ in range(4)]  # requests 3 to 6 from this address
    assert [(await a.json())["pow"] for a in answers[:3]] == [None, {"difficulty": 8}, {"difficulty": 8}]
    assert answers[-1].status == 429  # over 5
    assert answers[-1].headers["Retry-After"] == "600"
    assert (await answers[-1].json())["code"] == "rate_limited"
