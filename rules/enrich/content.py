"""Content facts from the free-text fields: spam phrases, links, markup, injection payloads, shouting.

All phrase and payload patterns run through RE2 sets (one automaton pass per text, linear time:
a hostile field cannot trigger catastrophic backtracking).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import NamedTuple

import re2

from rules.datasets import read_data_file
from rules.enrich.cache import as_facts, cached_rows

# A link is a scheme/www prefix or a bare domain with a TLD spammers favour; the pattern starts
# with literals so the scan is cheap (this runs on every protected post).
_URL = re.compile(
    r"(?:https?://|www\.)[^\s<>\"']+"
    r"|\.(?:com|net|org|info|biz|ru|xyz|top|online|site|shop|club|io|co|store|live|click|link|"
    r"pro|vip|icu|cn|tk|ml|ga|cf|gq|in|us|uk|de|me|ly|gl)\b(?!\.\w)",
    re.IGNORECASE,
)
_UPPER = bytes(range(65, 91))
_LETTERS = bytes(range(65, 91)) + bytes(range(97, 123))
_MARKUP_LINK = re.compile(r"\[url[=\]]|\[link[=\]]|<a\s[^>]*href|\[/url\]", re.IGNORECASE)
_HTML_TAG = re.compile(r"</?[a-z][a-z0-9]*(?:\s[^<>]*)?>", re.IGNORECASE)

# Payloads people (and scanners) type into form fields. Grouped by kind for the explanation.
_INJECTION: list[tuple[str, str]] = [
    ("sql", r"(?i)['\"]\s*(?:or|and|\|\||&&)\s*(?:['\"]?\w*['\"]?\s*(?:=|like|<|>|[-*&^|])|\d|true|not\b)"),
    ("sql", r"(?i)['\"]\)+\s*(?:or|and)\s*\(+\s*['\"]|(?:^|\s)or\s+(?:true|false|\d)\s*(?:--|#|/\*)|/\*!\d*|['\"]\s*/\*"),
    ("sql", r"(?i)\b(?:admin|root|user)['\"]\)?\s*(?:--|#|/\*|or\b)"),
    ("sql", r"(?i)\b(?:or|and)\s+\d+\s*=\s*\d+"),
    ("sql", r"(?i)\bunion\b(?:\s|/\*.*?\*/|%20|\+)+(?:all\s+|distinct\s+)?select\b"),
    ("sql", r"(?i)\bselect\b.{1,80}\bfrom\b.{1,80}\b(?:where|information_schema|dual)\b"),
    ("sql", r"(?i)(?:;|')\s*(?:drop|delete|insert|update|alter|create|truncate|exec|shutdown|declare)\s+\w"),
    ("sql", r"(?i)\b(?:sleep|benchmark|pg_sleep|dbms_pipe\.receive_message)\s*\(|waitfor\s+delay\s+'"),
    ("sql", r"(?i)@@version|information_schema|xp_cmdshell|load_file\s*\(|into\s+(?:out|dump)file|\bchar\s*\(\s*\d+\s*(?:,|\))"),
    ("sql", r"(?i)'\s*(?:--|#|/\*)|\b(?:admin|root|user)'\s*(?:--|#)|'\s*\)\s*(?:or|and|;|--)"),
    ("sql", r"(?i)(?:^|\s)(?:or|and)\s+(?:'[^']*'|\"[^\"]*\")\s*=\s*(?:'[^']*'|\"[^\"]*\")"),
    ("sql", r"(?i)\border\s+by\s+\d+\s*(?:--|#|$)|\bhaving\s+\d+\s*=\s*\d+|\bgroup\s+by\s+.+\bhaving\b"),
    ("xss", r"(?i)<\s*/?\s*(?:script|iframe|svg|object|embed|applet|meta|base|frameset|math|xss|marquee|isindex|xml|import|form|body|img|video|audio|style|link|details|input|image|frame|layer|bgsound|title|textarea|keygen|html|div|a)\b[^>]*(?:>|$|\s(?:on|src|href|style|data|formaction|xlink))"),
    ("xss", r"(?i)(?:java|vb|live)\s*script\s*:|data\s*:\s*text/html|expression\s*\("),
    ("xss", r"(?i)\bon(?:error|load|mouse\w+|focus\w*|blur|click|dblclick|key\w+|submit|change|input|toggle|animation\w+|transition\w+|pageshow|begin|end|start|finish|wheel|drag\w*|drop|copy|paste|cut|scroll|resize|unload|beforeunload|hashchange|message|popstate|readystatechange|pointer\w+|touch\w+|auxclick|contextmenu|show|search|select|invalid|afterprint|beforeprint)\s*=\s*\S"),
    ("xss", r"(?i)\b(?:alert|prompt|confirm|eval|settimeout|setinterval)\s*(?:\(|`|&#|\\u00)|document\s*\.\s*(?:cookie|domain|write|location)|window\s*\.\s*location|string\s*\.\s*fromcharcode|\.innerhtml\s*="),
    ("xss", r"(?i)&#x?0*(?:3c|60|58|22|27|3e|6a|28);?|\\x3c|\\u003c|%3c\s*script|<!\[cdata\[|-->\s*<"),
    ("nosql", r"(?i)[\[{\"']\s*\$(?:ne|gt|gte|lt|lte|regex|where|exists|nin|in|or|and|not|elemmatch|expr|function)\b"),
    ("nosql", r"(?i)\[\s*\$\w+\s*\]|\|\|\s*'?1'?\s*==\s*'?1|;\s*return\s+(?:true|1)\b|\bthis\.\w+\s*(?:==|!=|\.match)|db\.\w+\.(?:find|drop|insert|remove)"),
    ("nosql", r"(?i)'\s*&&\s*this\.|\btrue\s*,\s*\$where\b|\bsleep\s*\(\s*\d+\s*\)"),
    ("nosql", r"(?i)\$(?:where|comment|function|accumulator)\s*:|;\s*return\s*\(?\s*(?:true|1)\b|\bwhile\s*\([^)]*\)\s*;|this\.\w+\.match\s*\("),
    ("xss", r"(?i)<[a-z][\w:-]*(?:[\s/\"']|%0[9acd]|%20)[^>]*?(?:\bon|%6f%6e|o%6e|%6fn)[a-z%0-9]*\s*="),
    ("template", r"\{\{.{1,80}\}\}|\$\{.{1,80}\}|<%.{1,80}%>|#\{.{1,80}\}|\{%.{1,80}%\}"),
    ("command", r"(?i)(?:;|\|\|?|&&|`|\$\()\s*(?:cat|ls|id|whoami|uname|wget|curl|nc|ncat|bash|sh|ping|nslookup|sleep|echo|rm|chmod|python|perl|php)\b"),
    ("path", r"(?i)(?:\.\./){2,}|(?:\.\.\\){2,}|/etc/(?:passwd|shadow|hosts)|c:\\windows\\|%2e%2e%2f|\x00"),
]


# A tuple of plain values, untracked by the garbage collector (see IpFacts).
class ContentFacts(NamedTuple):
    chars: int = 0
    words: int = 0
    links: int = 0
    link_density: float = 0.0  # links per 100 words
    markup_links: bool = False
    html: bool = False
    spam_score: int = 0
    spam_categories: tuple[str, ...] = ()
    injection: str | None = None
    mixed_scripts: bool = False
    caps_ratio: float = 0.0
    repeated: bool = False


def _script(ch: str) -> str | None:
    if not ch.isalpha():
        return None
    name = unicodedata.name(ch, "")
    for script in ("LATIN", "CYRILLIC", "GREEK"):
        if name.startswith(script):
            return script
    return "OTHER"


def has_mixed_script_word(text: str) -> bool:
    """A word mixing Latin with Cyrillic/Greek letters is a homoglyph trick ('раypal')."""
    if text.isascii():
        return False
    for word in text.split():
        if word.isascii() or len(word) < 3:
            continue
        scripts = {s for s in map(_script, word) if s is not None}
        if "LATIN" in scripts and scripts & {"CYRILLIC", "GREEK"}:
            return True
    return False


def _count_links(text: str) -> int:
    links = 0
    in_url_until = -1
    for m in _URL.finditer(text):
        if m.start() < in_url_until:  # the .com inside an already counted http:// URL
            continue
        links += 1
        if m.group(0)[0] != ".":
            in_url_until = m.end()
    return links


def _repeated(text: str, words: list[str]) -> bool:
    if text.count("\n") >= 2:
        lines = [ln.strip().lower() for ln in text.splitlines() if len(ln.strip()) > 8]
        if lines and max(Counter(lines).values()) >= 3:
            return True
    if len(words) >= 20 and len(set(words)) < len(words) * 0.4:
        # few distinct words: confirm one of them dominates (cheap test first; Counter is slow)
        top = Counter(w.lower() for w in words if len(w) > 2).most_common(1)
        if top and top[0][1] / len(words) > 0.3:
            return True
    return False


class ContentEnricher:
    def __init__(self) -> None:
        self.phrases_file = read_data_file("spam_phrases.txt")
        options = re2.Options()
        options.case_sensitive = False
        options.max_mem = 64 << 20
        self._phrases = re2.Set.SearchSet(options)
        self._phrase_meta: list[tuple[int, str]] = []
        for line in self.phrases_file.lines:
            weight, category, pattern = line.split(" ", 2)
            self._phrases.Add(pattern)
            self._phrase_meta.append((int(weight), category))
        self._phrases.Compile()
        inj_options = re2.Options()
        inj_options.max_mem = 64 << 20
        self._injection = re2.Set.SearchSet(inj_options)
        self._injection_kinds: list[str] = []
        for kind, pattern in _INJECTION:
            self._injection.Add(pattern)
            self._injection_kinds.append(kind)
        self._injection.Compile()
        # Spam campaigns repeat their text verbatim: remember recent results. Keyed by the
        # prose alone: the text of all fields (for injections) holds the e-mail address, so
        # with it in the key every new visitor missed and paid the whole analysis again.
        self.prose_rows = cached_rows(self._facts, 8192)  # _facts() as plain tuples
        self._prose_facts = as_facts(self.prose_rows, ContentFacts)

    def facts(self, text: str, injection_text: str | None = None) -> ContentFacts:
        """Facts about `text` (prose); injection is looked for in `injection_text` (all fields)
        when given, else in `text`."""
        prose = self._prose_facts(text)
        kind = self.injection(text, injection_text, prose.injection)
        return prose if kind == prose.injection else prose._replace(injection=kind)

    def injection(self, text: str, injection_text: str | None, text_kind: str | None) -> str | None:
        """The injection fact, given `text_kind`, the one found in `text` itself."""
        if not injection_text or injection_text == text:
            return text_kind
        return self.injection_kind(injection_text)

    def injection_kind(self, text: str) -> str | None:
        hits = self._injection.Match(text)
        return self._injection_kinds[min(hits)] if hits else None

    def _facts(self, text: str) -> ContentFacts:
        """Facts about `text` (prose), injection looked for in `text` itself."""
        if not text.strip():
            return ContentFacts()
        words = text.split()
        links = _count_links(text)
        ascii_bytes = text.encode("ascii", "ignore")
        letters = len(ascii_bytes) - len(ascii_bytes.translate(None, _LETTERS))
        upper = len(ascii_bytes) - len(ascii_bytes.translate(None, _UPPER))
        caps = upper / letters if letters >= 20 else 0.0
        score = 0
        categories: list[str] = []
        for i in sorted(self._phrases.Match(text) or ()):
            weight, category = self._phrase_meta[i]
            score += weight
            if category not in categories:
                categories.append(category)
        return ContentFacts(
            chars=len(text),
            words=len(words),
            links=links,
            link_density=100.0 * links / max(len(words), 1),
            markup_links=bool(_MARKUP_LINK.search(text)),
            html=bool(_HTML_TAG.search(text)),
            spam_score=score,
            spam_categories=tuple(categories),
            injection=self.injection_kind(text),
            mixed_scripts=has_mixed_script_word(text),
            caps_ratio=round(caps, 3),
            repeated=_repeated(text, words),
        )
