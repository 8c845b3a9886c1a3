"""The built snippet in a real Chromium against the real snippet routes (tests/snippet/site.py).

What the snippet does in a browser: challenge on first interaction, the behaviour it reports, the
held submit, proof-of-work in a Worker (and without one), AJAX, failure paths, no cookies and no
requests to anyone but its own server. The proxy end to end is in test_e2e_proxy.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from activelead.snippet_http import SnippetBundle
from tests.snippet.browser import bounded, built_bundle, launch, screenshot_path, type_like_a_person
from tests.snippet.site import MiniSite, start_site

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle() -> SnippetBundle:
    return built_bundle()


@pytest.fixture
async def site(bundle: SnippetBundle) -> AsyncIterator[MiniSite]:
    s = await start_site(bundle)
    yield s
    await s.server.close()


async def open_form(context: Any, site: MiniSite, query: str = "") -> Any:
    page = await context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.requests = requests
    await page.goto(site.url("/form" + query))
    await page.wait_for_function("window.activelead && window.activelead.v === 1")
    return page


async def submitted(page: Any) -> dict[str, Any]:
    await page.wait_for_load_state()
    answer: dict[str, Any] = json.loads(await page.inner_text("body"))
    return answer


@bounded()
async def test_person_typing(site: MiniSite) -> None:
    async with launch(person=True) as context:
        page = await open_form(context, site)
        assert await page.input_value("#contact input[name=activelead_token]") == ""
        assert await page.locator("#search input[name=activelead_token]").count() == 0
        await type_like_a_person(page, "#email", "ada@example.org")
        await type_like_a_person(page, "#message", "Hello, I would like a quote for 20 chairs.")
        await page.screenshot(path=screenshot_path("mini-person-before"))
        async with page.expect_navigation():
            await page.click("#send")
        seen = await submitted(page)
        await page.screenshot(path=screenshot_path("mini-person-after"))
    assert seen["state"] == "valid", seen["reason"]
    b = seen["behaviour"]
    assert b["keys"] >= 50 and b["focus"] >= 2 and b["pointer"] > 0 and b["clicks"] >= 2
    assert b["webdriver"] == 0 and b["hints"] == 0 and b["untrusted"] == 0
    assert b["dwellMs"] > 2000 and seen["elapsedMs"] > 2000
    assert not seen["automation"] and not seen["powSolved"]
    assert seen["fields"]["send"] == "1" and seen["fields"]["email"] == "ada@example.org"
    assert seen["cookies"] == {}
    # nothing but the page's own server was asked for anything
    assert all(u.startswith(site.origin + "/") for u in page.requests), page.requests


@bounded()
async def test_instant_submit_is_held_for_its_token(site: MiniSite) -> None:
    async with launch(person=True) as context:
        page = await open_form(context, site)
        await page.fill("#email", "x@example.org")  # fill: no key events, like a form-stuffing script
        async with page.expect_navigation():
            await page.evaluate("document.getElementById('contact').requestSubmit()")
        seen = await submitted(page)
    assert seen["state"] == "valid"
    assert seen["elapsedMs"] < 2000  # the engine's too_fast
    assert seen["behaviour"]["keys"] == 0


@bounded()
async def test_headless_automation_is_reported(site: MiniSite) -> None:
    async with launch(person=False) as context:
        page = await open_form(context, site)
        await page.type("#email", "bot@example.org")
        async with page.expect_navigation():
            await page.click("#send")
        seen = await submitted(page)
    assert seen["automation"]
    assert seen["behaviour"]["webdriver"] == 1
    assert seen["behaviour"]["hints"] & 16  # HeadlessChrome in navigator.userAgent


@bounded()
async def test_proof_of_work_in_a_worker(site: MiniSite) -> None:
    async with launch(person=True) as context:
        page = await open_form(context, site, "?site=pk_pow")
        workers: list[Any] = []
        page.on("worker", lambda w: workers.append(w))
        # Registered before the click (and resolved on errors too), so no outcome can be missed.
        await page.evaluate("""() => { window.__ready = new Promise(r => activelead.config({
            onReady: (info) => r(info), onError: (e) => r({error: String(e)})})); }""")
        await page.click("#email")
        info = await asyncio.wait_for(page.evaluate("window.__ready"), 30)
        assert info.get("pow") is True, info
        assert workers, "the proof-of-work ran on the main thread"
        await page.keyboard.type("ada@example.org", delay=30)
        async with page.expect_navigation():
            await page.click("#send")
        seen = await submitted(page)
    assert seen["state"] == "valid" and seen["powSolved"], seen["reason"]
    assert seen["behaviour"]["powMs"] >= 0


@bounded()
async def test_proof_of_work_without_workers(site: MiniSite) -> None:
    """A page whose CSP forbids workers: the snippet solves on the main thread in slices."""
    async with launch(person=True) as context:
        page = await open_form(context, site, "?site=pk_pow&csp=1")
        await page.click("#email")
        await page.keyboard.type("ada@example.org", delay=30)
        async with page.expect_navigation():
            await page.click("#send")
        seen = await submitted(page)
    assert seen["state"] == "valid" and seen["powSolved"], seen["reason"]


@bounded()
async def test_form_submit_and_formdata_carry_the_token(site: MiniSite) -> None:
    async with launch(person=True) as context:
        page = await open_form(context, site)
        await type_like_a_person(page, "#email", "ada@example.org")
        await page.wait_for_function(
            "document.querySelector('#contact [name=activelead_token]').value !== ''")
        keys = await page.evaluate("""() => {
            const v = new FormData(document.getElementById('contact')).get('activelead_token');
            return +v.split('~')[1].split(',').find(p => p.startsWith('k=')).slice(2);
        }""")
        assert keys == len("ada@example.org")
        await page.click("#message")
        await page.keyboard.type("hi", delay=30)
        async with page.expect_navigation():  # no submit event: only "formdata" sees this one
            await page.evaluate("HTMLFormElement.prototype.submit.call(document.getElementById('contact'))")
        seen = await submitted(page)
    assert seen["state"] == "valid"  # reading FormData does not use the challenge up
    assert seen["behaviour"]["keys"] == len("ada@example.org") + 2


@bounded()
async def test_ajax_with_the_token_api(site: MiniSite) -> None:
    async with launch(person=True) as context:
        page = await open_form(context, site)
        answers = await page.evaluate("""async () => {
            const form = document.getElementById('contact');
            const out = [];
            for (let i = 0; i < 2; i++) {
                const t = await activelead.token(form);
                const r = await fetch('/contact', {method: 'POST',
                    headers: {...t.headers, 'Content-Type': 'application/json'},
                    body: JSON.stringify({email: 'ajax@example.org'})});
                out.push(await r.json());
            }
            return out;
        }""")
    assert [a["state"] for a in answers] == ["valid", "valid"]  # a fresh challenge per call


@bounded()
async def test_unreachable_endpoint_never_blocks_the_form(site: MiniSite) -> None:
    async with launch(person=True) as context:
        page = await context.new_page()
        async def unreachable(route: Any) -> None:
            await route.abort()

        await page.route("**/__activelead/challenge", unreachable)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(site.url("/form"))
        await page.wait_for_function("!!window.activelead")
        await type_like_a_person(page, "#email", "ada@example.org")
        async with page.expect_navigation():
            await page.click("#send")
        seen = await submitted(page)
    assert seen["state"] == "missing"
    assert errors == []


@bounded()
async def test_challenge_refused_to_another_origin(site: MiniSite) -> None:
    async with launch(person=True) as context:
        page = await open_form(context, site, "?site=pk_other")
        warned: list[str] = []
        page.on("console", lambda m: warned.append(m.text))
        await type_like_a_person(page, "#email", "ada@example.org")
        async with page.expect_navigation():
            await page.click("#send")
        seen = await submitted(page)
        await asyncio.sleep(0)
    assert seen["state"] == "missing"
    assert any(w.startswith("Activelead:") for w in warned), warned
