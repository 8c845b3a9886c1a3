"""Snippet challenges: signed, single-use, short-lived tokens with an optional proof-of-work.

Pure logic (no aiohttp): the proxy's snippet routes and token stage use it, and so can the control
API for ingest-only sites, since both only need a secret and a counters store.

The browser snippet asks for a challenge when a form is first used and posts it back, in the one
hidden field ``activelead_token``, as ``<challenge>~<report>``:

* challenge: ``c1.<kid>.<issued ms>.<nonce>.<difficulty>.<site key>.<origin>.<form>.<mac>``
  (origin and form base64url-encoded). The HMAC-SHA256 covers every part, so the token is bound
  to the site key, the page's origin and the form it was issued for; the key id selects the
  signing key, so retired keys keep verifying until their tokens have expired (rotation).
* report: what the browser saw, ``key=value`` pairs of small integers separated by ``,``
  (see REPORT_KEYS). It is the visitor's own claim — only ever a hint, bounded and strictly parsed.
  When the challenge asked for a proof-of-work, ``n`` is the solution: the smallest work the
  snippet found such that SHA-256(``<challenge>:<n>``) starts with `difficulty` zero bits.

Single use is enforced by `verify` through the counters store's ``once()`` (Redis when
configured), so a replayed token is caught by every proxy replica.

Step-up challenges (the proxy's answer to a ``review`` verdict, see proxy/stages/stepup.py) are
the same token with one more signed field and their own version, so nothing can pass one kind as
the other: ``s1.<kid>.<issued ms>.<nonce>.<difficulty>.<site key>.<origin>.<form>.<started ms>.<mac>``.
``started ms`` is when the visitor began the form the first post came from (empty: not known), so
the re-post's time trap measures the person's filling-in, not the interstitial's proof-of-work.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace

from rules.counters import Counters

FIELD = "activelead_token"
"""The hidden form field (and, as `HEADER`, the request header) the snippet fills."""
HEADER = "X-Activelead-Token"

VERSION = "c1"
STEP_UP_VERSION = "s1"
MAX_DIFFICULTY = 26  # ~67M hashes on average: far beyond any sensible step-up, bounds abuse
MAX_VALUE_CHARS = 1024  # the whole field; a real one is ~200 characters
MAX_REPORT_CHARS = 256
MAX_SITE_KEY_CHARS = 64
MAX_ORIGIN_CHARS = 200
MAX_FORM_CHARS = 200
_SITE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
_DIGITS_RE = re.compile(r"^[0-9]{1,10}\Z")
_ORIGIN_RE = re.compile(
    r"^(https?)://([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?/?\Z", re.IGNORECASE
)

# Report keys -> behaviour names (what Signals.behaviour carries; the engine reads keys, pointer
# and pastes). Values are non-negative integers below 2**32.
REPORT_KEYS = {
    "k": "keys",  # keydown events inside protected forms
    "p": "pointer",  # pointer/mouse/touch moves anywhere on the page (sampled)
    "c": "clicks",  # pointer downs
    "v": "pastes",  # paste events inside protected forms
    "f": "focus",  # focus changes between fields
    "i": "firstInteractionMs",  # page start -> first interaction with the form
    "d": "dwellMs",  # first interaction -> submit (browser clock)
    "u": "untrusted",  # synthetic (isTrusted = false) key/pointer events
    "w": "webdriver",  # navigator.webdriver
    "h": "hints",  # bit set of other automation markers (HINT_*)
    "n": "powNonce",  # proof-of-work solution
    "s": "powMs",  # time the proof-of-work took
}
# Automation markers the snippet reports in `h` (documented in plugins/js-snippet/README.md).
HINT_PHANTOM = 1
HINT_NIGHTMARE = 2
HINT_SELENIUM = 4  # selenium / chromedriver ($cdc_) / domAutomation globals
HINT_NO_LANGUAGES = 8
HINT_HEADLESS_UA = 16  # "HeadlessChrome" in navigator.userAgent
HINT_UNTRUSTED = 32  # synthetic key/pointer events were dispatched into the form


class ChallengeKeyError(Exception):
    """No usable challenge key (empty or too short secret)."""


class ChallengeRequestError(ValueError):
    """A challenge request that cannot be served; `code` is stable, str() is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Challenge:
    """What the challenge endpoint hands to the browser."""

    token: str
    difficulty: int
    expires_in_s: int

    def to_json(self) -> dict[str, object]:
        pow_ = {"difficulty": self.difficulty} if self.difficulty else None
        return {"token": self.token, "pow": pow_, "expiresIn": self.expires_in_s}


@dataclass(slots=True)  # not frozen: a frozen __init__ costs microseconds per check
class SnippetCheck:
    """What a posted snippet token says; `reason` explains a non-valid state (logs, debugging)."""

    state: str  # valid | missing | invalid | expired | replayed
    elapsed_ms: float | None = None
    pow_solved: bool = False
    automation: bool = False
    behaviour: dict[str, int] = field(default_factory=dict)
    nonce: str = ""
    site_key: str = ""
    origin: str = ""
    form: str = ""
    reason: str = ""
    difficulty: int = 0  # proof-of-work the challenge asked for (signed), paid or not
    step_up: bool = False  # an `s1` step-up challenge


def _b64e(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _b64d(text: str) -> str:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()


def key_id(secret: bytes) -> str:
    return hashlib.sha256(b"activelead-challenge-kid:" + secret).hexdigest()[:8]


def leading_zero_bits(digest: bytes) -> int:
    bits = 0
    for byte in digest:
        if byte:
            return bits + 8 - byte.bit_length()
        bits += 8
    return bits


def pow_ok(challenge: str, nonce: int, difficulty: int) -> bool:
    """One SHA-256: does `nonce` solve `challenge` at `difficulty` leading zero bits?"""
    digest = hashlib.sha256(f"{challenge}:{nonce}".encode()).digest()
    return leading_zero_bits(digest) >= difficulty


def solve_pow(challenge: str, difficulty: int, limit: int = 1 << 32) -> int | None:
    """Reference solver (tests, benchmarks); the browser's lives in plugins/js-snippet."""
    prefix = f"{challenge}:".encode()
    for n in range(limit):
        if leading_zero_bits(hashlib.sha256(prefix + str(n).encode()).digest()) >= difficulty:
            return n
    return None


def normalise_origin(origin: str) -> str:
    """`scheme://host[:port]`, lowercase, without a default port; '' if it is not an origin."""
    m = _ORIGIN_RE.match(origin)
    if m is None:
        return ""
    scheme, host, port = m.group(1).lower(), m.group(2).lower(), m.group(3)
    if port and int(port) > 65535:
        return ""
    if port and (scheme, int(port)) not in (("http", 80), ("https", 443)):
        return f"{scheme}://{host}:{int(port)}"
    return f"{scheme}://{host}"


def origin_allowed(origin: str, origins: Collection[str], hosts: Collection[str]) -> bool:
    """Is a normalised `origin` one of `origins`, or on one of `hosts` (any scheme and port:
    how the proxy admits its own sites' pages when no origins are listed)?"""
    if origin in origins:
        return True
    if not hosts:
        return False
    host = origin.split("://", 1)[1]
    return (host if host.endswith("]") else host.rsplit(":", 1)[0]) in hosts


def origin_of_url(url: str) -> str:
    """The origin of an absolute http(s) URL (e.g. a submission's pageUrl), or ''."""
    m = re.match(r"^(https?://[^/?#]+)", url, re.IGNORECASE)
    return normalise_origin(m.group(1)) if m else ""


def challenge_secret(render_secret: str) -> str:
    """The proxy's challenge key, derived from its render key: one secret to keep and rotate,
    and still no token of one kind can pass as the other."""
    return hmac.new(render_secret.encode(), b"activelead-challenge-v1", hashlib.sha256).hexdigest()


class ChallengeSigner:
    """Issues and checks challenge tokens; signs with the current key, checks with any known key."""

    def __init__(
        self,
        secret: str,
        previous: Sequence[str] = (),
        *,
        ttl_s: int = 1800,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < 16:
            raise ChallengeKeyError("challenge secret must be at least 16 characters")
        if ttl_s < 10:
            raise ChallengeKeyError("challenge ttl_s must be at least 10 seconds")
        current = secret.encode()
        self._kid = key_id(current)
        self._keys = {key_id(k.encode()): k.encode() for k in previous if k}
        self._keys[self._kid] = current
        self.ttl_s = ttl_s
        self._clock = clock

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    @staticmethod
    def _mac(key: bytes, body: str) -> str:
        return base64.urlsafe_b64encode(hmac.digest(key, body.encode(), "sha256")[:18]).decode()

    def issue(self, site_key: str, origin: str, form: str, difficulty: int = 0) -> Challenge:
        """A fresh challenge; raises ChallengeRequestError for values no real page would send."""
        return self._issue(VERSION, site_key, origin, form, difficulty, ())

    def issue_step_up(
        self, site_key: str, origin: str, form: str, difficulty: int,
        elapsed_ms: float | None = None,
    ) -> Challenge:
        """A step-up challenge (`s1`) for a post that came `elapsed_ms` after the visitor began
        the form (None: not known); the proof-of-work is required (difficulty >= 1)."""
        if not 1 <= difficulty <= MAX_DIFFICULTY:
            raise ChallengeRequestError("invalid_difficulty", f"difficulty must be 1-{MAX_DIFFICULTY}")
        started = "" if elapsed_ms is None else str(self._now_ms() - max(int(elapsed_ms), 0))
        return self._issue(STEP_UP_VERSION, site_key, origin, form, difficulty, (started,))

    def _issue(self, version: str, site_key: str, origin: str, form: str, difficulty: int,
               extra: tuple[str, ...]) -> Challenge:
        if not _SITE_KEY_RE.match(site_key):
            raise ChallengeRequestError("invalid_site", "site key must be 1-64 of A-Z a-z 0-9 _ -")
        norm = normalise_origin(origin)
        if not norm or len(norm) > MAX_ORIGIN_CHARS:
            raise ChallengeRequestError("invalid_origin", "origin must be http(s)://host[:port]")
        if len(form) > MAX_FORM_CHARS or not form.isprintable():
            raise ChallengeRequestError(
                "invalid_form", f"form must be printable and at most {MAX_FORM_CHARS} characters"
            )
        if not 0 <= difficulty <= MAX_DIFFICULTY:
            raise ChallengeRequestError("invalid_difficulty", f"difficulty must be 0-{MAX_DIFFICULTY}")
        body = ".".join((
            version, self._kid, str(self._now_ms()), secrets.token_urlsafe(9), str(difficulty),
            site_key, _b64e(norm), _b64e(form), *extra,
        ))
        return Challenge(f"{body}.{self._mac(self._keys[self._kid], body)}", difficulty, self.ttl_s)

    def check(
        self,
        value: str,
        *,
        site_key: str | None = None,
        origin: str | None = None,
        form: str | Sequence[str] | None = None,
    ) -> SnippetCheck:
        """Signature, binding, age, proof-of-work and report — everything but single use.

        `site_key`, `origin` and `form` are what the verifier knows about the post; each is
        compared with what the token was issued for when given (None: not known, not compared).
        `form` may list several acceptable names (the action path and the form id).
        """
        if not value:
            return SnippetCheck("missing")
        if len(value) > MAX_VALUE_CHARS or not value.isascii():
            return SnippetCheck("invalid", reason="oversized or non-ASCII token")
        challenge, _, report = value.partition("~")
        parts = challenge.split(".")
        if len(parts) == 9 and parts[0] == VERSION:
            _, kid, issued, nonce, diff, tok_site, tok_origin, tok_form, mac = parts
            started = issued
        elif len(parts) == 10 and parts[0] == STEP_UP_VERSION:
            _, kid, issued, nonce, diff, tok_site, tok_origin, tok_form, started, mac = parts
        else:
            return SnippetCheck("invalid", reason="not a challenge token")
        key = self._keys.get(kid)
        if key is None:
            return SnippetCheck("invalid", reason="unknown key id")
        expected = self._mac(key, challenge[: len(challenge) - len(mac) - 1])
        if not hmac.compare_digest(expected, mac):
            return SnippetCheck("invalid", reason="bad signature")
        # Signed by us: the fields below are well-formed unless a key leaked.
        try:
            origin_s, form_s = _b64d(tok_origin), _b64d(tok_form)
            issued_ms, difficulty = int(issued), int(diff)
            started_ms = int(started) if started else None
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return SnippetCheck("invalid", reason="malformed signed fields")
        step_up = parts[0] == STEP_UP_VERSION
        reason = ""
        behaviour: dict[str, int] = {}
        if site_key is not None and tok_site != site_key:
            reason = "issued for another site key"
        elif origin is not None and normalise_origin(origin) != origin_s:
            reason = "issued for another origin"
        elif form is not None and form_s != form and (isinstance(form, str) or form_s not in form):
            reason = "issued for another form"
        else:
            try:
                behaviour = parse_report(report)
            except ValueError as exc:
                reason = f"report: {exc}"
        now = self._now_ms()
        age = now - issued_ms
        if not reason and age < -60_000:  # from the future beyond clock skew
            reason = "issued in the future"
        if reason:
            return SnippetCheck("invalid", nonce=nonce, site_key=tok_site, origin=origin_s,
                                form=form_s, reason=reason, difficulty=difficulty,
                                step_up=step_up)
        state, solved = "valid", False
        if difficulty:
            work = behaviour.get("powNonce")
            if work is None:
                # Asked for and not paid: a real snippet always pays, unless its time budget ran
                # out (~16x the average solve time on a slow phone).
                state, reason = "invalid", "proof-of-work missing"
            elif not pow_ok(challenge, work, difficulty):
                state, reason = "invalid", "proof-of-work wrong"
            else:
                solved = True
        if state == "valid" and age > self.ttl_s * 1000:
            state, reason = "expired", "older than the challenge lifetime"
        # A step-up's time runs from when the visitor began the form (or is not known at all).
        elapsed = None if started_ms is None else float(max(now - started_ms, 0))
        return SnippetCheck(
            state, elapsed, solved,
            bool(behaviour.get("webdriver")) or bool(behaviour.get("hints")),
            behaviour, nonce, tok_site, origin_s, form_s, reason, difficulty, step_up,
        )


_REPORT_RE = re.compile(r"[a-z]=[0-9]{1,10}(?:,[a-z]=[0-9]{1,10})*\Z")


def parse_report(report: str) -> dict[str, int]:
    """The browser's `k=v,k=v` report -> behaviour dict; ValueError on anything unexpected."""
    if not report:
        return {}
    if len(report) > MAX_REPORT_CHARS:
        raise ValueError(f"longer than {MAX_REPORT_CHARS} characters")
    if _REPORT_RE.match(report):  # the usual case: one regex, then no further checks per pair
        out = {}
        for pair in report.split(","):
            name = REPORT_KEYS.get(pair[0])
            value = int(pair[2:])
            if name is None or value >= 1 << 32:
                break
            out[name] = value
        else:
            if len(out) == report.count(",") + 1 and out.get("webdriver", 0) <= 1:
                return out
    return _report_error(report)


def _report_error(report: str) -> dict[str, int]:
    """Says precisely what is wrong with a report the fast path refused."""
    seen: set[str] = set()
    for pair in report.split(","):
        key, sep, raw = pair.partition("=")
        if not sep or key not in REPORT_KEYS:
            raise ValueError(f"unknown entry {pair[:20]!r}")
        if key in seen:
            raise ValueError(f"{key!r} given twice")
        seen.add(key)
        if not _DIGITS_RE.match(raw) or int(raw) >= 1 << 32:
            raise ValueError(f"{key!r} is not a small non-negative integer")
        if key == "w" and int(raw) > 1:
            raise ValueError("'w' must be 0 or 1")
    raise ValueError("malformed")


async def verify(
    signer: ChallengeSigner,
    counters: Counters,
    value: str,
    *,
    site_key: str | None = None,
    origin: str | None = None,
    form: str | Sequence[str] | None = None,
) -> SnippetCheck:
    """`check` plus single use: the first valid post of a challenge wins, later ones are replays."""
    check = signer.check(value, site_key=site_key, origin=origin, form=form)
    if check.state in ("valid", "expired") and not await counters.once(
        f"snip:{check.nonce}", signer.ttl_s + 120
    ):
        return replace(check, state="replayed", pow_solved=False, reason="challenge already used")
    return check


@dataclass(frozen=True, slots=True)
class StepUp:
    """When to ask for proof-of-work: a base difficulty, raised in a risky context.

    Risky: the client asked for more than `rate_limit` challenges in `window_s` (a script
    farming tokens), or its user agent is an automation tool / headless browser. Over
    `hard_limit` the endpoint refuses (429). Difficulty 0 = no proof-of-work.
    """

    base: int = 0
    risky: int = 18  # ~260k hashes: ~0.1-0.3 s in a Web Worker on a laptop, ~1 s on a slow phone
    rate_limit: int = 20
    hard_limit: int = 300
    window_s: int = 600

    def __post_init__(self) -> None:
        for name in ("base", "risky"):
            if not 0 <= getattr(self, name) <= MAX_DIFFICULTY:
                raise ValueError(f"{name}: difficulty must be 0-{MAX_DIFFICULTY}")
        if not 0 < self.rate_limit <= self.hard_limit:
            raise ValueError("rate_limit must be > 0 and <= hard_limit")

    def difficulty(self, recent: float, suspicious_client: bool) -> int:
        if recent > self.rate_limit or suspicious_client:
            return max(self.base, self.risky)
        return self.base
