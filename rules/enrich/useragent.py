"""User-agent facts: declared crawler, HTTP library / automation client, headless browser, garbled.

The ~1,500 `crawler-user-agents` patterns are compiled into one RE2 *set* (a single automaton that
reports which patterns matched) instead of a Python alternation, which costs ~1 ms per miss; the
few patterns RE2 cannot take run through Python's `re` behind a literal prefilter. Results are
cached per distinct UA, since real traffic repeats a small set of them.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import NamedTuple

import re2

from rules.enrich.cache import as_facts, cached_rows

# HTTP libraries, scripting tools and automation frameworks. Scripts that stuff forms use these,
# and crawler lists mostly don't name them. Token-anchored so "curl" does not match "securly".
_AUTOMATION_TOOLS = (
    "curl wget python-requests python-urllib python-httpx python/ aiohttp httpx go-http-client "
    "go-resty okhttp axios node-fetch undici node.js superagent java/ apache-httpclient "
    "jakarta commons-httpclient|guzzlehttp guzzle php/ libwww-perl lwp::simple mechanize ruby "
    "faraday rest-client restsharp postmanruntime insomnia httpie scrapy winhttp dart:io dart/ "
    "reqwest pycurl libcurl powershell wordpress/ typhoeus http_request2 zgrab masscan nikto "
    "sqlmap nuclei headlesschrome phantomjs selenium webdriver puppeteer playwright "
    "electron-fetch cypress htmlunit slimerjs lighthouse"
).replace("jakarta commons-httpclient|", "jakarta_commons-httpclient ").split()
_AUTOMATION_PATTERNS = [
    r"(?i)(?:^|[\s(;/])" + re.escape(tool.replace("_", " ")) for tool in _AUTOMATION_TOOLS
]
_HEADLESS_TOOLS = frozenset({"headlesschrome", "phantomjs", "slimerjs", "puppeteer", "playwright"})
# Anything with a product/version token or a parenthesised platform is shaped like a client.
_BROWSER_SHAPE = re.compile(r"[A-Za-z][\w.\-]*/\d|\([^)]*;")
# Generic self-descriptions of bots that no list can enumerate (the isbot approach); phone brands
# that end in "bot" (Cubot) are excluded.
_GENERIC_BOT = (
    r"(?i)(?:[a-z]bot|spider|crawler|scraper)(?:[\s/\-;_),.]|$)|agent[/ ]\d|"
    r"newsgator|feedfetcher|\bholmes/|\bheadless\b"
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


# A tuple of plain values, untracked by the garbage collector (see IpFacts).
class UaFacts(NamedTuple):
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
    def __init__(self, cache_size: int = 8_192) -> None:
        self.patterns = _load_patterns()
        options = re2.Options()
        options.case_sensitive = True
        options.max_mem = 256 << 20  # room for the DFA of 1,500 patterns, else RE2 falls back to NFA
        self._set = re2.Set.SearchSet(options)
        self._fallback: list[re.Pattern[str]] = []
        for pattern in self.patterns:
            try:
                self._set.Add(pattern)
            except re2.error:
                self._fallback.append(re.compile(pattern))
        # Generic bot self-descriptions join the same automaton (one pass per user agent).
        self._generic_index = self._set.Add(_GENERIC_BOT)
        self._set.Compile()
        self._tools = re2.Set.SearchSet(re2.Options())
        for pattern in _AUTOMATION_PATTERNS:
            self._tools.Add(pattern)
        self._tools.Compile()
        self.rows = cached_rows(self._facts, cache_size)  # the facts as plain tuples
        self.facts = as_facts(self.rows, UaFacts)

    def _is_crawler(self, ua: str) -> bool:
        if "ubot" in ua.lower():  # the Cubot phone brand is not a "...bot"
            ua = re.sub("(?i)cubot", "Cu-phone", ua)
        if self._set.Match(ua):
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
        tools = self._tools.Match(ua)
        automation = tools is not None
        tool = _AUTOMATION_TOOLS[min(tools)].replace("_", " ").rstrip("/") if tools else None
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
            headless=tool in _HEADLESS_TOOLS,
            tool=tool,
        )
