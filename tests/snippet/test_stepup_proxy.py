"""The step-up round through the real proxy app and a real origin, spoken in plain HTTP: the
interstitial and the 428, the second post, replays, a client that never pays, hostile input.
(In Chromium: tests/snippet/test_e2e_proxy.py.)

The review band used here is the instant submit: a valid render token and snippet token, posted
at once (too_fast, 45, + private_ip, 5 = 50). Paid, the same post scores 25 (500111 instead of
500110) and is allowed.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.app import create_app
from proxy.settings import ProxySettings
from rules.challenge import solve_pow
from rules.engine import Engine
from tests.services import free_port
from tests.snippet.browser import PERSON_UA, built_bundle

DIFFICULTY = 12  # the site's step_up_difficulty here: fast to solve in Python
FORM_PAGE = """<!doctype html><html><body>
<form method="post" action="/contact"><input name="email"><textarea name="message"></textarea></form>
<form method="post" action="/lenient"><input name="email"></form>
</body></html>"""
RECEIVED = web.AppKey("received", list)


def origin_app() -> web.Application:
    app = web.Application()
    app[RECEIVED] = []

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=FORM_PAGE, content_type="text/html")

    async def post(request: web.Request) -> web.Response:
        raw = await request.read()
        got = {"path": request.path_qs, "body": raw.decode("utf-8", "replace"),
               "decision": request.headers.get("X-Activelead-Decision", ""),
               "labels": request.headers.get("X-Activelead-Labels", "").split(",")}
        request.app[RECEIVED].append(got)
        return web.json_response({"ok": True})

    app.router.add_get("/form", page)
    app.router.add_post("/{tail:.*}", post)
    return app


class Stack:
    def __init__(self, origin: TestServer, proxy: TestServer, http: aiohttp.ClientSession) -> None:
        self.origin, self.proxy, self.http = origin, proxy, http
        self.url = f"http://127.0.0.1:{proxy.port}"

    @property
    def received(self) -> list[dict[str, Any]]:
        return self.origin.app[RECEIVED]

    async def page(self, action: str = "/contact") -> dict[str, str]:
        """GET the form page through the proxy: the render token it added to `action`'s form."""
        async with self.http.get(self.url + "/form", headers={"User-Agent": PERSON_UA}) as r:
            html = await r.text()
        m = re.search(f'action="{action}"><input type="hidden" name="_al_token" value="([^"]+)"',
                      html)
        return {"_al_token": m.group(1)} if m else {}

    async def challenge(self, form: str = "/contact") -> str:
        async with self.http.post(self.url + "/__activelead/challenge",
                                  data=json.dumps({"site": "pk_demo", "form": form}),
                                  headers={"Content-Type": "text/plain", "Origin": self.url,
                                           "User-Agent": PERSON_UA}) as r:
            body = await r.json()
        assert r.status == 200 and body["pow"] is None, body
        return f"{body['token']}~k=0,p=0,c=0,v=0,f=0,i=10,d=5,u=0,w=0,h=0"

    async def post(self, path: str, fields: dict[str, str] | list[tuple[str, str]] | bytes, *,
                   ctype: str = "application/x-www-form-urlencoded", mode: str = "navigate",
                   headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
        body = fields if isinstance(fields, bytes) else urlencode(fields).encode()
        h = {"Content-Type": ctype, "Origin": self.url, "User-Agent": PERSON_UA,
             "Sec-Fetch-Mode": mode, **(headers or {})}
        resp = await self.http.post(self.url + path, data=body, headers=h)
        await resp.read()
        return resp

    async def instant_post(self, path: str = "/contact", **extra: str) -> aiohttp.ClientResponse:
        """A person's browser that submits at once: both tokens valid, too fast."""
        fields = {**await self.page(path), "activelead_token": await self.challenge(path),
                  "email": "ada@example.org", "message": "Twenty oak chairs, please.", **extra}
        return await self.post(path, fields)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.from_config()


@pytest.fixture
async def stack(engine: Engine, tmp_path: Path) -> AsyncIterator[Stack]:
    built_bundle()
    origin = TestServer(origin_app(), host="127.0.0.1")
    await origin.start_server()
    settings = ProxySettings(
        proxy={"state_dir": str(tmp_path / "state"), "render_secret": "stepup-render-secret-0123"},
        sites=[{
            "id": "demo", "hosts": ["127.0.0.1"], "origin": f"http://127.0.0.1:{origin.port}",
            "result_headers_on_response": True,
            "snippet": {"site_key": "pk_demo", "step_up_difficulty": DIFFICULTY},
            "forms": [{"id": "contact", "path": "/contact"},
                      {"id": "api", "path": "/api/contact"},
                      # a paid post still in review here: forwarded as review, never a loop
                      {"id": "lenient", "path": "/lenient", "thresholds": {"review": 20, "block": 90}},
                      {"id": "small", "path": "/small", "max_body_bytes": 2048}],
        }, {
            # the snippet alone, no render protection (so no require_token block behind it)
            "id": "bare", "hosts": ["localhost"], "origin": f"http://127.0.0.1:{origin.port}",
            "result_headers_on_response": True, "render": {"enabled": False},
            "snippet": {"site_key": "pk_bare", "step_up_difficulty": DIFFICULTY},
            "forms": [{"id": "contact", "path": "/contact"}],
        }],
    )
    proxy = TestServer(create_app(settings, engine=engine), host="127.0.0.1", port=free_port())
    await proxy.start_server()
    async with aiohttp.ClientSession() as http:
        yield Stack(origin, proxy, http)
    await proxy.close()
    await origin.close()


def page_data(html: str) -> dict[str, Any]:
    m = re.search(r'id="activelead-stepup-data">(.*?)</script>', html, re.S)
    assert m, html
    data: dict[str, Any] = json.loads(m.group(1))
    return data


def paid(token: str, report: str = "w=0,h=0") -> str:
    return f"{token}~{report},n={solve_pow(token, DIFFICULTY)},s=30"


def labels(resp: aiohttp.ClientResponse) -> set[str]:
    return set(filter(None, resp.headers.get("X-Activelead-Labels", "").split(",")))


async def test_page_round_trip_reaches_the_origin_once_with_pow_solved(stack: Stack) -> None:
    first = await stack.instant_post("/contact", interest="chairs")
    assert first.status == 200, first.headers
    assert first.headers["X-Activelead-Decision"] == "review" and "too_fast" in labels(first)
    assert first.headers["Cache-Control"] == "no-store, private"
    assert first.content_type == "text/html"
    assert stack.received == []  # held: the origin has seen nothing
    data = page_data(await first.text())
    assert data["difficulty"] == DIFFICULTY
    names = [name for name, _ in data["fields"]]
    assert names == ["email", "message", "interest"]  # the proxy's own fields are not echoed
    # what stepup.js does: the same fields again, plus the paid token, to the same URL
    second = await stack.post("/contact", [*map(tuple, data["fields"]),
                                           ("activelead_token", paid(data["token"]))])
    assert second.status == 200, second.headers
    assert second.headers["X-Activelead-Decision"] == "allowed"
    assert {"pow_solved", "too_fast"} <= labels(second)  # 500111 (20) instead of 500110 (45)
    assert not labels(second) & {"token_missing", "token_invalid", "token_replayed"}
    assert len(stack.received) == 1
    got = stack.received[0]
    assert got["decision"] == "allowed" and "pow_solved" in got["labels"]
    assert got["body"] == "email=ada%40example.org&message=Twenty+oak+chairs%2C+please.&interest=chairs"


async def test_a_replayed_step_up_is_refused(stack: Stack) -> None:
    data = page_data(await (await stack.instant_post()).text())
    fields = [*map(tuple, data["fields"]), ("activelead_token", paid(data["token"]))]
    assert (await stack.post("/contact", fields)).status == 200
    replay = await stack.post("/contact", fields)
    assert replay.status == 403
    assert "token_replayed" in labels(replay) and replay.headers["X-Activelead-Decision"] == "blocked"
    assert len(stack.received) == 1


@pytest.mark.parametrize("token", [
    None,  # a client that read the page and posted the fields back without running it
    "unpaid",  # the step-up token without its proof-of-work
    "garbage",
    "oversized",
    "non-ascii",
])
async def test_a_client_that_does_not_pay_never_reaches_the_origin(stack: Stack,
                                                                    token: str | None) -> None:
    data = page_data(await (await stack.instant_post()).text())
    fields = list(map(tuple, data["fields"]))
    value = {None: None, "unpaid": data["token"] + "~w=0,h=0", "garbage": "c1.x.y~k=1",
             "oversized": paid(data["token"]) + ",k=1" * 500,
             "non-ascii": paid(data["token"]).replace("w=0", "w=\u0660")}[token]
    if value is not None:
        fields.append(("activelead_token", value))
    resp = await stack.post("/contact", fields)
    assert resp.status == 403, resp.headers  # no valid token at all: require_token's block
    assert labels(resp) & {"token_missing", "token_invalid"}
    assert stack.received == []


async def test_without_render_protection_an_unpaid_post_is_held_again(stack: Stack) -> None:
    """A forged token puts the post in review (token_invalid 60 + private_ip 5); posting the
    fields back with the step-up token unpaid is the same review, held again — never forwarded."""
    bare = {"Host": f"localhost:{stack.proxy.port}", "Origin": f"http://localhost:{stack.proxy.port}"}
    fields = {"email": "ada@example.org", "activelead_token": "c1.forged~k=1"}
    first = await stack.post("/contact", fields, headers=bare)
    assert (first.status, first.headers["X-Activelead-Decision"]) == (200, "review")
    data = page_data(await first.text())
    unpaid = [*map(tuple, data["fields"]), ("activelead_token", data["token"] + "~w=0,h=0")]
    again = await stack.post("/contact", unpaid, headers=bare)
    assert again.status == 200 and again.content_type == "text/html"
    assert "token_invalid" in labels(again) and "activelead-stepup-data" in await again.text()
    assert stack.received == []
    data = page_data(await again.text())
    done = await stack.post("/contact", [*map(tuple, data["fields"]),
                                         ("activelead_token", paid(data["token"]))], headers=bare)
    assert done.headers["X-Activelead-Decision"] == "allowed" and "pow_solved" in labels(done)
    assert len(stack.received) == 1


async def test_still_review_after_paying_is_forwarded_once(stack: Stack) -> None:
    first = await stack.instant_post("/lenient")
    assert (first.status, first.headers["X-Activelead-Decision"]) == (200, "review")
    data = page_data(await first.text())
    second = await stack.post("/lenient", [*map(tuple, data["fields"]),
                                           ("activelead_token", paid(data["token"]))])
    assert second.content_type == "application/json"  # the origin's answer, not another page
    assert second.headers["X-Activelead-Decision"] == "review" and "pow_solved" in labels(second)
    assert [r["decision"] for r in stack.received] == ["review"]


async def test_blocked_is_still_blocked(stack: Stack) -> None:
    resp = await stack.instant_post(email="x@mailinator.com", message="cheap viagra casino")
    assert resp.status == 403 and resp.headers["X-Activelead-Decision"] == "blocked"
    assert stack.received == []


async def test_ajax_gets_a_428_and_its_retry_is_forwarded(stack: Stack) -> None:
    body = json.dumps({"email": "ada@example.org", "message": "Twenty oak chairs, please."})
    token = await stack.challenge("/api/contact")
    first = await stack.post("/api/contact", body.encode(), ctype="application/json", mode="cors",
                             headers={"X-Activelead-Token": token})
    assert first.status == 428, first.headers
    assert first.headers["Access-Control-Allow-Origin"] == stack.url
    answer = await first.json()
    assert answer["error"]["code"] == "step_up_required"
    step = answer["stepUp"]
    assert step["pow"] == {"difficulty": DIFFICULTY} and step["header"] == "X-Activelead-Token"
    assert stack.received == []
    retry_headers = {"X-Activelead-Token": paid(step["token"])}
    retry = await stack.post("/api/contact", body.encode(), ctype="application/json", mode="cors",
                             headers=retry_headers)
    assert retry.status == 200, retry.headers
    assert "pow_solved" in labels(retry) and retry.headers["X-Activelead-Decision"] == "allowed"
    assert json.loads(stack.received[0]["body"]) == json.loads(body)
    again = await stack.post("/api/contact", body.encode(), ctype="application/json", mode="cors",
                             headers=retry_headers)
    assert again.status == 403 and "token_replayed" in labels(again)
    assert len(stack.received) == 1


@pytest.mark.parametrize(("path", "body", "ctype", "status", "says"), [
    ("/contact", b"email=%FF%FE", "application/x-www-form-urlencoded", 400, "not valid utf-8"),
    ("/contact", b"email=a", "application/x-www-form-urlencoded; charset=no-such", 400,
     "unsupported charset"),
    ("/api/contact", b'{"email": ', "application/json", 400, "invalid JSON"),
    ("/api/contact", "{\"e\": \"\u00e9\"}".encode("latin-1"), "application/json", 400,
     "not valid utf-8"),
    ("/small", b"message=" + b"x" * 4000, "application/x-www-form-urlencoded", 413, "at most 2048"),
])
async def test_hostile_bodies_get_a_clear_error_not_a_page(stack: Stack, path: str, body: bytes,
                                                           ctype: str, status: int, says: str) -> None:
    resp = await stack.post(path, body, ctype=ctype)
    assert resp.status == status
    assert says in await resp.text()
    assert stack.received == []


async def test_the_step_up_script_is_served_by_its_hash_only(stack: Stack) -> None:
    data_html = await (await stack.instant_post()).text()
    src = re.search(r'<script src="(/__activelead/stepup\.[0-9a-f]+\.js)" defer>', data_html)
    assert src, data_html
    async with stack.http.get(stack.url + src.group(1), headers={"Accept-Encoding": "gzip"}) as r:
        assert r.status == 200 and r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert r.content_type == "text/javascript" and b"activelead-stepup-data" in await r.read()
    for bad in ("/__activelead/stepup.0123456789ab.js", "/__activelead/stepup.zz%00.js",
                "/__activelead/stepup." + "a" * 300 + ".js"):
        async with stack.http.get(stack.url + bad) as r:
            assert r.status == 404, bad
            assert (await r.json())["code"] == "not_found"
