"""Real Chromium for the snippet tests: Debian's /usr/bin/chromium driven by Playwright (async).

`person()` launches it the way a person's browser looks (no `navigator.webdriver`, a normal
Chrome user agent); `robot()` as Playwright leaves it (webdriver on, "HeadlessChrome").
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from activelead.snippet_http import DEFAULT_DIST, SnippetBundle
from tests.services import ROOT

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
PERSON_UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
             "Chrome/126.0.0.0 Safari/537.36")
ARTIFACTS = ROOT / "test-artifacts" / "snippet"


AsyncTest = Callable[..., Awaitable[None]]


def bounded(seconds: float = 120) -> Callable[[AsyncTest], AsyncTest]:
    """Fail a browser test that waits longer than `seconds` (with the stack of the wait) instead
    of hanging the run: page.evaluate() of a promise has no timeout of its own."""

    def wrap(test: AsyncTest) -> AsyncTest:
        @functools.wraps(test)
        async def run(*args: object, **kwargs: object) -> None:
            async with asyncio.timeout(seconds):
                await test(*args, **kwargs)

        return run

    return wrap


def built_bundle() -> SnippetBundle:
    """Build the snippet (cheap when nothing changed) and load it as the servers do."""
    if shutil.which("npm") is None:
        pytest.fail("npm is not installed: the snippet cannot be built (Node.js >= 20.19 needed)")
    subprocess.run([str(ROOT / "scripts" / "build-snippet")], check=True, capture_output=True)
    return SnippetBundle.load(DEFAULT_DIST)


def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is not installed (apt-get install chromium)")
    return CHROMIUM


@asynccontextmanager
async def launch(*, person: bool, javascript: bool = True) -> AsyncIterator[Any]:
    """A browser context; a person's has no automation flag and a normal user agent."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        kw: dict[str, Any] = {}
        args = list(ARGS)
        if person:
            kw["ignore_default_args"] = ["--enable-automation"]
            args.append("--disable-blink-features=AutomationControlled")
        browser = await p.chromium.launch(executable_path=chromium(), headless=True, args=args, **kw)
        try:
            context = await browser.new_context(user_agent=PERSON_UA if person else None,
                                                java_script_enabled=javascript)
            yield context
        finally:
            await browser.close()


async def type_like_a_person(page: Any, selector: str, text: str) -> None:
    await page.hover(selector)
    await page.mouse.move(40, 60, steps=8)
    await page.click(selector)
    await page.keyboard.type(text, delay=45)


def screenshot_path(name: str) -> str:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return str(ARTIFACTS / f"{name}.png")
