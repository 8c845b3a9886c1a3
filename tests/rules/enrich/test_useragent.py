from __future__ import annotations

import pytest

from rules.enrich.useragent import UserAgentEnricher

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/126.0.0.0 Safari/537.36")


@pytest.fixture(scope="module")
def uas() -> UserAgentEnricher:
    return UserAgentEnricher()


@pytest.mark.parametrize(
    ("ua", "kind"),
    [
        (CHROME, "browser"),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
         "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1", "browser"),
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "crawler"),
        ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", "crawler"),
        ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", "crawler"),
        ("python-requests/2.32.3", "automation"),
        ("curl/8.5.0", "automation"),
        ("Go-http-client/2.0", "automation"),
        ("okhttp/4.12.0", "automation"),
        ("axios/1.7.2", "automation"),
        ("Java/17.0.2", "automation"),
        ("GuzzleHttp/7", "automation"),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
         "HeadlessChrome/126.0.0.0 Safari/537.36", "automation"),
        ("", "missing"),
        ("-", "missing"),
        ("12345678901234", "missing"),
        ("\x00\x01binary", "missing"),
        ("hello there friend", "missing"),
    ],
)
def test_kinds(uas: UserAgentEnricher, ua: str, kind: str) -> None:
    f = uas.facts(ua)
    got = ("automation" if f.automation else "crawler" if f.crawler
           else "missing" if f.missing else "browser")
    assert got == kind


def test_crawler_family_and_tool(uas: UserAgentEnricher) -> None:
    assert uas.facts("Mozilla/5.0 (compatible; Googlebot/2.1)").crawler_family == "google"
    assert uas.facts("python-requests/2.32.3").tool == "python-requests"
    assert uas.facts("Mozilla/5.0 (securly classroom) Chrome/1").automation is False
