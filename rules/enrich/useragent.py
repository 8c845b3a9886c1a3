"""User-agent facts: declared crawler, HTTP library / automation client, headless browser, garbled.

The ~1,500 `crawler-user-agents` patterns are compiled into one RE2 *set* (a single automaton that
reports which patterns matched) instead of a Python alternation, which costs ~1 ms per miss; the
few patterns RE2 cannot take run through Python's `re` behind a literal prefilter. Results are
cached per distinct UA, since real traffic repeats a small set of them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import re2

# HTTP libraries, scripting tools and automation frameworks. Scripts that stuff forms use these,
# and crawler lists mostly don't name them. Token-anchored so "curl" does not match "securly".
_AUTOMATION = re.compile(
    r"(?:^|[\s(;/])(?:"
    r"curl|wget|python-requests|python-urllib|python-httpx|python/|aiohttp|httpx|"
    r"go-http-client|go-resty|okhttp|axios|node-fetch|undici|node\.js|got \(|superagent|"
    r"java/|apache-httpclient|jakarta commons-httpclient|guzzlehttp|guzzle|php/|"
    r"libwww-perl|lwp::simple|mechanize|ruby|faraday|rest-client|restsharp|"
    r"postmanruntime|insomnia|httpie|scrapy|winhttp|dart:io|dart/|reqwest|"
    r"pycurl|libcurl|powershell|wordpress/|typhoeus|http_request2|zgrab|masscan|nikto|"
    r"sqlmap|nuclei|headlesschrome|phantomjs|selenium|webdriver|puppeteer|playwright|"
    r"electron-fetch|cypress|htmlunit|slimerjs|lighthouse"
    r")",
    re.IGNORECASE,
)
_HEADLESS = re.compile(r"headless|phantomjs|slimerjs|puppeteer|playwright", re.IGNORECASE)
# Anything with a product/version token or a parenthesised platform is shaped like a client.
_BROWSER_SHAPE = re.compile(r"[A-Za-z][\w.\-]*/\d|\([^)]*;")
# Generic self-descriptions of bots that no list can enumerate (the isbot approach); phone brands
# that end in "bot" (Cubot) are excluded.
_GENERIC_BOT = re.compile(
    r"(?<!cu)(?:[a-z]bot|spider|crawler|scraper)(?:[\s/\-;_),.]|$)|\w+agent/\d|"
    r"\bagent \d|newsgator|feedfetcher|\bholmes/|\bheadless\b",
    re.IGNORECASE,
)

# Crawler families whose network can be checked (see ip.CRAWLER_OWNERS).
_FAMILIES = [
    (re.compile(r"googlebot|google-inspectiontool|adsbot-google|mediapartners-google|"
                r"googleother|google-extended|storebot-google", re.IGNORECASE), "google"),
    (re.compile(r"bingbot|bingpreview|msnbot|adidxbot", re.IGNORECASE), "bing"),
    (re.compile(r"applebot", re.IGNORECASE), "apple"),
    (re.compile(r"yandex", re.IGNORECASE), "yandex"),
    (re.compile(r"baiduspider", re.IGNORECASE), "baidu"),
    (re.compile(r"duckduckbot|duckassistbot", re.IGNORECASE), "duckduckgo"),
]


@dataclass(frozen=True, slots=True)
class UaFacts:
    present: bool
    missing: bool = False  # empty, too short or garbled to be a browser
    crawler: bool = False
    crawler_family: str | None = None
    automation: bool = False
    headless: bool = False
    tool: str | None = None


def _load_patterns() -> list[str]:
    text = (resources.files("crawleruseragents") / "crawler-user-agents.json").read_text("utf-8")
    return [entry["pattern"] for entry in json.loads(text)]


class UserAgentEnricher:
    def __init__(self, cache_size: int = 16_384) -> None:
        self.patterns = _load_patterns()
        options = re2.Options()
        options.case_sensitive = True
        self._set = re2.Set.SearchSet(options)
        self._fallback: list[re.Pattern[str]] = []
        for pattern in self.patterns:
            try:
                self._set.Add(pattern)
            except re2.error:
                self._fallback.append(re.compile(pattern))
        self._set.Compile()
        self.facts = lru_cache(maxsize=cache_size)(self._facts)

    def _is_crawler(self, ua: str) -> bool:
        if self._set.Match(ua) or _GENERIC_BOT.search(ua):
            return True
        return any(p.search(ua) for p in self._fallback)

    def _facts(self, raw: str) -> UaFacts:
        ua = raw.strip()
        if not ua:
            return UaFacts(present=False, missing=True)
        garbled = (
            len(ua) < 10
            or not ua.isprintable()
            or "\ufffd" in ua
            or not any(ch.isalpha() for ch in ua)
        )
        tool_match = _AUTOMATION.search(ua)
        automation = tool_match is not None
        crawler = self._is_crawler(ua)
        family = next((name for rx, name in _FAMILIES if rx.search(ua)), None) if crawler else None
        if not automation and not crawler and not _BROWSER_SHAPE.search(ua):
            garbled = True  # neither a browser, nor a named tool, nor a crawler
        return UaFacts(
            present=True,
            missing=garbled and not automation and not crawler,
            crawler=crawler and not automation,
            crawler_family=family,
            automation=automation,
            headless=bool(_HEADLESS.search(ua)),
            tool=tool_match.group(0).strip(" (;/").lower() if tool_match else None,
        )
