"""A real Chromium (Debian's, driven by Playwright) fills in and submits the theme's comment form
with the snippet enqueued by the plugin."""

from __future__ import annotations

import uuid

import pytest

from tests.wordpress.site import BROWSER_UA, WordPress, require

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def test_browser_submits_the_comment_form(wp: WordPress) -> None:
    from playwright.sync_api import sync_playwright

    wp.set_settings(snippet_url=f"{wp.url}/activelead-test-snippet.js", site_key="pk_test_site")
    text = f"Written in a real browser, thanks for the article [{uuid.uuid4().hex[:8]}]"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=require("chromium"), headless=True, args=CHROMIUM_ARGS)
        try:
            # Headless Chromium says "HeadlessChrome" in its user agent, which the service rightly
            # scores as automation (held for review); a person's Chrome sends this one.
            page = browser.new_page(user_agent=BROWSER_UA)
            page.goto(f"{wp.url}/?p=1")
            page.wait_for_function("window.activeleadTestSnippet !== undefined")
            assert page.evaluate("window.activeleadTestSnippet") == {"site": "pk_test_site", "async": True}
            assert page.locator("input[name=activelead_website]").count() == 1
            box = page.locator("input[name=activelead_website]").bounding_box()
            assert box is None or box["x"] + box["width"] <= 0  # off-screen: people never see it
            page.fill("#author", "Browser Reader")
            page.fill("#email", "browser.reader@example.org")
            page.fill("#comment", text)
            with page.expect_navigation():
                page.click("#submit")
            assert "#comment-" in page.url
            assert text in page.content()
        finally:
            browser.close()
    comment = wp.comment_by_text(text)
    assert comment is not None and comment["status"] == "approved"
    assert comment["trace"].startswith("tr_")
