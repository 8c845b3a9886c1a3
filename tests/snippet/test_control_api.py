"""The snippet on the control API, for ingest-only sites: project snippet settings, the challenge
endpoint with CORS from those settings, and snippet tokens verified in /v1/ingest."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from control_api.app import create_app
from control_api.snippet import project_of, site_key
from rules.challenge import solve_pow
from tests.control_api.conftest import Account, make_settings, shared_engine, sign_up
from tests.snippet.test_snippet_routes import write_dist

ORIGIN = "https://shop.example"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
REPORT = "k=42,p=300,c=3,v=0,f=4,i=1500,d=9000,u=0,w=0,h=0"


@pytest.fixture
async def api(aiohttp_client: Any, tmp_path: Path) -> TestClient[Any, Any]:
    settings = make_settings(tmp_path, snippet_dist=str(write_dist(tmp_path / "dist")))
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings, engine=shared_engine()))
    return client


async def snippet_project(api: TestClient[Any, Any], **snippet: Any) -> tuple[Account, dict[str, Any], str]:
    owner = await sign_up(api)
    project = await owner.project()
    resp = await api.patch(f"/v1/projects/{project['id']}", headers=owner.h(),
                           json={"snippet": {"allowedOrigins": [ORIGIN], **snippet}})
    assert resp.status == 200, await resp.text()
    return owner, await resp.json(), await owner.key(project["id"])


async def challenge(api: TestClient[Any, Any], site: str, origin: str = ORIGIN,
                    form: str = "/contact") -> Any:
    return await api.post("/__activelead/challenge", data=json.dumps({"site": site, "form": form}),
                          headers={"Content-Type": "text/plain", "Origin": origin, "User-Agent": BROWSER})


async def ingest(api: TestClient[Any, Any], key: str, token: str, page_url: str = ORIGIN + "/contact") -> Any:
    resp = await api.post("/v1/ingest", headers={"Authorization": f"Bearer {key}"}, json={
        "email": "ada.lovelace@example.org", "userAgent": BROWSER, "ip": "81.2.69.160",
        "fields": {"message": "Could you send me a quote for 20 oak chairs?"},
        "pageUrl": page_url, "token": token, "formId": "contact"})
    assert resp.status == 200, await resp.text()
    return await resp.json()


def test_site_keys() -> None:
    assert site_key("prj_0123456789abcdef") == "pk_0123456789abcdef"
    assert project_of("pk_0123456789abcdef") == "prj_0123456789abcdef"
    for bad in ("pk_short", "sk_0123456789abcdef", "pk_0123456789abcdef0", "pk_0123456789abcde!"):
        assert project_of(bad) is None


async def test_project_shows_and_validates_snippet_settings(api: TestClient[Any, Any]) -> None:
    owner, project, _ = await snippet_project(api, powDifficulty=12)
    assert project["snippet"] == {"siteKey": site_key(project["id"]), "allowedOrigins": [ORIGIN],
                                  "powDifficulty": 12, "stepUpDifficulty": 18}
    for body, key in [
        ({"allowedOrigins": ["shop.example"]}, "snippet.allowedOrigins.0"),
        ({"allowedOrigins": "https://a.example"}, "snippet.allowedOrigins"),
        ({"powDifficulty": 40}, "snippet.powDifficulty"),
        ({"powDifficulty": True}, "snippet.powDifficulty"),
        ({"siteKey": "pk_mine"}, "snippet.siteKey"),
        ([], "snippet"),
    ]:
        resp = await api.patch(f"/v1/projects/{project['id']}", headers=owner.h(), json={"snippet": body})
        assert resp.status == 400
        assert key in (await resp.json())["error"]["details"], body


async def test_challenge_follows_the_project_settings(api: TestClient[Any, Any]) -> None:
    owner = await sign_up(api)
    project = await owner.project()
    key = site_key(project["id"])
    assert (await challenge(api, key)).status == 404  # no origin allowed yet: snippet off
    await api.patch(f"/v1/projects/{project['id']}", headers=owner.h(),
                    json={"snippet": {"allowedOrigins": [ORIGIN]}})
    ok = await challenge(api, key)
    assert ok.status == 200 and ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    refused = await challenge(api, key, origin="https://evil.example")
    assert refused.status == 403
    assert (await refused.json())["error"]["code"] == "origin_not_allowed"  # the API's error shape
    assert (await challenge(api, "pk_0000000000000000")).status == 404
    script = await api.get("/__activelead/activelead.js")
    assert script.status == 200


async def test_ingest_verifies_snippet_tokens(api: TestClient[Any, Any]) -> None:
    _, project, key = await snippet_project(api)
    site = project["snippet"]["siteKey"]
    token = (await (await challenge(api, site)).json())["token"]
    value = f"{token}~{REPORT}"
    await asyncio.sleep(0.05)
    first = await ingest(api, key, value)
    assert not set(first["labels"]) & {"token_invalid", "token_replayed", "token_missing"}, first
    assert "too_fast" in first["labels"]  # issued 50 ms before the post
    again = await ingest(api, key, value)
    assert "token_replayed" in again["labels"] and again["decision"] == "blocked"


@pytest.mark.parametrize(("case", "label"), [
    ("other-origin-page", "token_invalid"),
    ("other-project", "token_invalid"),
    ("forged", "token_invalid"),
    ("webdriver", "automation_detected"),
    ("pow", "pow_solved"),
])
async def test_ingest_token_cases(api: TestClient[Any, Any], case: str, label: str) -> None:
    _, project, key = await snippet_project(api, powDifficulty=8 if case == "pow" else 0)
    site = project["snippet"]["siteKey"]
    if case == "other-project":
        other = await sign_up(api, email="other@example.com")
        other_project = await other.project()
        await api.patch(f"/v1/projects/{other_project['id']}", headers=other.h(),
                        json={"snippet": {"allowedOrigins": [ORIGIN]}})
        site = site_key(other_project["id"])
    token = (await (await challenge(api, site)).json())["token"]
    report = {"webdriver": "k=0,w=1,h=16"}.get(case, REPORT)
    if case == "pow":
        report += f",n={solve_pow(token, 8)},s=30"
    value = f"{token}~{report}"
    if case == "forged":
        value = value.replace(token[-4:], "AAAA")
    page = "https://evil.example/contact" if case == "other-origin-page" else ORIGIN + "/contact"
    verdict = await ingest(api, key, value, page_url=page)
    assert label in verdict["labels"], verdict


async def test_other_tokens_are_left_alone(api: TestClient[Any, Any]) -> None:
    _, _, key = await snippet_project(api)
    verdict = await ingest(api, key, "v1.render-token-of-some-plugin")
    assert not {lbl for lbl in verdict["labels"] if lbl.startswith("token_")}
