"""The snippet's HTTP side under the reserved prefix `/__activelead/`: the script and its challenge.

* `GET /__activelead/activelead.js` — the stable name a page's tag points at: revalidated often
  (short max-age, ETag), so a new build reaches pages within minutes.
* `GET /__activelead/activelead.<hash>.js` — the content-hashed build: cached for a year, immutable.
* `GET /__activelead/stepup.<hash>.js` — the proxy's step-up interstitial script (proxy only,
  `register_stepup`): content-hashed and immutable like the snippet's hashed name.
* `POST /__activelead/challenge` — `{"site": "pk_…", "form": "/contact"}` (as `text/plain`, which
  keeps the browser's request "simple": no CORS preflight) → `{"token", "pow", "expiresIn"}`.
  CORS is granted only to the site's allowed origins; anything else is a clear 4xx with a JSON
  body `{"code", "message"}`.

`register(app, ...)` adds the routes to any aiohttp application: the proxy, and the control API
for sites that only use the ingest API. It lives in the wiring package because both services use
it and they never import each other; the token logic itself is rules/challenge.py. Everything
per-request is looked up through callables, so the host application keeps its own state
(counters from its cleanup context, client IP from its trusted-proxy resolver, site keys from its
config or database).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from rules.challenge import (
    MAX_FORM_CHARS,
    ChallengeRequestError,
    ChallengeSigner,
    StepUp,
    normalise_origin,
    origin_allowed,
)
from rules.counters import Counters

log = logging.getLogger("activelead.snippet")

PREFIX = "/__activelead"
MAX_CHALLENGE_BODY = 1024
DEFAULT_DIST = Path(__file__).resolve().parent.parent / "plugins" / "js-snippet" / "dist"
STABLE_CACHE = "public, max-age=300, stale-while-revalidate=86400"
HASHED_CACHE = "public, max-age=31536000, immutable"
NO_STORE = "no-store"
# Clients that say what they are (libraries, headless browsers) get the step-up at once.
_SUSPICIOUS_UA = re.compile(
    r"(?i)^$|curl|wget|python|httpx|aiohttp|go-http|okhttp|axios|node-fetch|undici|java/|"
    r"libwww|scrapy|headless|phantomjs|selenium|webdriver|puppeteer|playwright"
)


@dataclass(frozen=True, slots=True)
class SnippetSite:
    """One site key: the origins its pages are served from, and its step-up policy.

    `allowed_hosts` admits an origin on any scheme and port by its host alone: the proxy's
    default for a site's own host names.
    """

    site_key: str
    allowed_origins: frozenset[str]
    step_up: StepUp = field(default_factory=StepUp)
    allowed_hosts: frozenset[str] = frozenset()

    @classmethod
    def build(cls, site_key: str, origins: list[str], step_up: StepUp | None = None,
              hosts: list[str] | None = None) -> SnippetSite:
        """Validate once, at start-up (a bad origin names itself)."""
        norm = set()
        for i, origin in enumerate(origins):
            value = normalise_origin(origin)
            if not value:
                raise ValueError(f"allowed_origins[{i}]: {origin!r} is not http(s)://host[:port]")
            norm.add(value)
        return cls(site_key, frozenset(norm), step_up or StepUp(),
                   frozenset(h.lower().rstrip(".") for h in hosts or ()))

    def allows(self, origin: str) -> bool:
        """`origin` must be normalised (see normalise_origin)."""
        return origin_allowed(origin, self.allowed_origins, self.allowed_hosts)


SiteLookup = Callable[[str], Awaitable[SnippetSite | None]]


def static_sites(sites: Mapping[str, SnippetSite]) -> SiteLookup:
    """A SiteLookup over a fixed mapping (the proxy's config)."""

    async def lookup(site_key: str) -> SnippetSite | None:
        return sites.get(site_key)

    return lookup


class SnippetNotBuilt(Exception):
    """The built snippet is missing: run scripts/build-snippet."""


@dataclass(frozen=True, slots=True)
class SnippetBundle:
    """The built snippet, read once and kept in memory with its gzip form and ETag."""

    name: str  # activelead.<hash>.js (or stepup.<hash>.js)
    body: bytes
    gzipped: bytes
    etag: str

    @classmethod
    def load(cls, dist_dir: Path = DEFAULT_DIST, entry: str = "activelead") -> SnippetBundle:
        """The built `entry` (`activelead`, or `stepup`: the step-up page's script)."""
        try:
            manifest = json.loads((dist_dir / "manifest.json").read_text("utf-8"))
            name = str(manifest["file"] if entry == "activelead" else manifest[entry]["file"])
            if not re.fullmatch(re.escape(entry) + r"\.[0-9a-f]{8,64}\.js", name):  # not a path
                raise SnippetNotBuilt(f"{dist_dir}/manifest.json: bad file name {name[:80]!r}")
            body = (dist_dir / name).read_bytes()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SnippetNotBuilt(
                f"{dist_dir}: no built snippet ({exc}); run scripts/build-snippet"
            ) from exc
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        return cls(name, body, gzip.compress(body, 9, mtime=0), etag)


@dataclass(frozen=True, slots=True)
class Snippet:
    """What the handlers need; stored on the app under SNIPPET."""

    lookup: SiteLookup
    signer: ChallengeSigner
    counters: Callable[[web.Request], Counters]
    client_ip: Callable[[web.Request], str]
    bundle: SnippetBundle | None
    suspicious: Callable[[web.Request], bool]
    error_body: Callable[[str, str], dict[str, object]]
    observe: Callable[[str], None]


SNIPPET = web.AppKey("snippet", Snippet)
STEPUP: web.AppKey[SnippetBundle | None] = web.AppKey("stepup_bundle")


def _default_ip(request: web.Request) -> str:
    return request.remote or ""


def _default_error_body(code: str, message: str) -> dict[str, object]:
    return {"code": code, "message": message}


def _default_suspicious(request: web.Request) -> bool:
    return bool(_SUSPICIOUS_UA.search(request.headers.get("User-Agent", "")))


def register(
    app: web.Application,
    *,
    lookup: SiteLookup,
    signer: ChallengeSigner,
    counters: Callable[[web.Request], Counters],
    bundle: SnippetBundle | None,
    client_ip: Callable[[web.Request], str] = _default_ip,
    suspicious: Callable[[web.Request], bool] = _default_suspicious,
    prefix: str = PREFIX,
    warn_unbuilt: bool = True,
    other_methods: bool = True,
    error_body: Callable[[str, str], dict[str, object]] = _default_error_body,
    observe: Callable[[str], None] = lambda result: None,
) -> None:
    """Add the snippet routes to `app` (before any catch-all route of the host app).

    `other_methods` adds a JSON 405 for other methods on the challenge path; an app without a
    catch-all route gets aiohttp's own 405 instead. `error_body(code, message)` shapes the JSON
    of 4xx answers like the host app's other errors; `observe(result)` is called once per
    challenge request (`issued`, `stepped_up` or the error code), e.g. for a metrics counter."""
    if bundle is None and warn_unbuilt:
        log.warning("the JS snippet is not built: %s/activelead.js answers 404 "
                    "(run scripts/build-snippet)", prefix)
    app[SNIPPET] = Snippet(lookup, signer, counters, client_ip, bundle, suspicious, error_body,
                           observe)
    app.router.add_get(prefix + "/activelead.js", script)
    app.router.add_get(prefix + r"/activelead.{hash:[0-9a-f]{8,64}}.js", script)
    app.router.add_route("POST", prefix + "/challenge", challenge)
    app.router.add_route("OPTIONS", prefix + "/challenge", preflight)
    if other_methods:
        app.router.add_route("*", prefix + "/challenge", wrong_method)


def register_stepup(app: web.Application, bundle: SnippetBundle | None,
                    prefix: str = PREFIX) -> str | None:
    """Serve the step-up page's script (after `register`); returns its URL, None if not built."""
    app[STEPUP] = bundle
    app.router.add_get(prefix + "/stepup.{hash}.js", stepup_script)
    return f"{prefix}/{bundle.name}" if bundle is not None else None


def _error(request: web.Request, status: int, code: str, message: str,
           headers: dict[str, str] | None = None) -> web.Response:
    resp = web.json_response(request.app[SNIPPET].error_body(code, message), status=status)
    resp.headers["Cache-Control"] = NO_STORE
    resp.headers.update(headers or {})
    return resp


# --- the script -------------------------------------------------------------------------------


async def script(request: web.Request) -> web.Response:
    return _serve(request, request.app[SNIPPET].bundle, "activelead")


async def stepup_script(request: web.Request) -> web.Response:
    return _serve(request, request.app[STEPUP], "stepup")


def _serve(request: web.Request, bundle: SnippetBundle | None, entry: str) -> web.Response:
    if bundle is None:
        # 404, not 503: nothing will appear by retrying; the operator has to build it.
        return _error(request, 404, "snippet_not_built", "the snippet is not built on this server")
    wanted = request.match_info.get("hash")
    if wanted is not None and bundle.name != f"{entry}.{wanted}.js":
        # The page names its build; another one (an old page, a probe) is not served.
        return _error(request, 404, "not_found", f"no such build; the current one is {bundle.name}")
    headers = {
        "Cache-Control": HASHED_CACHE if wanted else STABLE_CACHE,
        "ETag": bundle.etag,
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
        # Public, cookie-free code: any page may load it, also with crossorigin/SRI or COEP.
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
    }
    tags = _etags(request.headers.get("If-None-Match", ""))
    if bundle.etag in tags or "*" in tags:
        return web.Response(status=304, headers=headers)
    body = bundle.body
    if "gzip" in request.headers.get("Accept-Encoding", "").lower():
        body = bundle.gzipped
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=headers, content_type="text/javascript", charset="utf-8")


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


# --- the challenge ----------------------------------------------------------------------------


def _cors(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


async def preflight(request: web.Request) -> web.Response:
    # Only clients sending JSON preflight; the answer on the POST itself still decides, per site
    # key, whether the page may read the challenge.
    origin = normalise_origin(request.headers.get("Origin", ""))
    if not origin:
        return _error(request, 403, "origin_required", "a CORS preflight needs an http(s) Origin")
    return web.Response(status=204, headers={
        **_cors(origin),
        "Access-Control-Allow-Methods": "POST",
        "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Max-Age": "600",
        "Cache-Control": NO_STORE,
    })


async def wrong_method(request: web.Request) -> web.Response:
    return _error(request, 405, "method_not_allowed", "use POST", {"Allow": "POST, OPTIONS"})


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    if (request.content_length or 0) > limit:
        return None
    buf = bytearray()
    async for chunk in request.content.iter_chunked(4096):
        buf += chunk
        if len(buf) > limit:
            return None
    return bytes(buf)


def parse_challenge_body(raw: bytes) -> tuple[str, str]:
    """`{"site": str, "form": str}` → (site, form); ChallengeRequestError on anything else."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ChallengeRequestError("invalid_json", "the body must be a JSON object in UTF-8") from None
    if not isinstance(data, dict):
        raise ChallengeRequestError("invalid_body", "the body must be a JSON object")
    unknown = sorted(set(data) - {"site", "form"})
    if unknown:
        raise ChallengeRequestError("invalid_body", f"unknown key {unknown[0][:40]!r}")
    site, form = data.get("site"), data.get("form", "")
    if not isinstance(site, str) or not site:
        raise ChallengeRequestError("invalid_site", "'site' must be the site key (pk_…)")
    if not isinstance(form, str) or len(form) > MAX_FORM_CHARS or not form.isprintable():
        raise ChallengeRequestError(
            "invalid_form", f"'form' must be printable text of at most {MAX_FORM_CHARS} characters"
        )
    return site, form


async def challenge(request: web.Request) -> web.Response:
    resp, result = await _challenge(request)
    request.app[SNIPPET].observe(result)
    return resp


async def _challenge(request: web.Request) -> tuple[web.Response, str]:
    """The answer and its outcome for `observe`."""

    def fail(status: int, code: str, message: str, headers: dict[str, str] | None = None
             ) -> tuple[web.Response, str]:
        return _error(request, status, code, message, headers), code

    snippet = request.app[SNIPPET]
    if request.content_type not in ("text/plain", "application/json"):
        return fail(415, "unsupported_media_type", "send the JSON body as text/plain or application/json")
    raw = await _read_limited(request, MAX_CHALLENGE_BODY)
    if raw is None:
        return fail(413, "payload_too_large", f"at most {MAX_CHALLENGE_BODY} bytes")
    try:
        site_key, form = parse_challenge_body(raw)
    except ChallengeRequestError as exc:
        return fail(400, exc.code, str(exc))
    origin = normalise_origin(request.headers.get("Origin", ""))
    if not origin:
        return fail(403, "origin_required", "the request must carry the page's http(s) Origin")
    site = await snippet.lookup(site_key)
    if site is None:
        return fail(404, "unknown_site", "no site has this key")
    if not site.allows(origin):
        # No CORS headers: the page cannot even read why. Logged for the site owner instead.
        log.info("challenge for %s refused to origin %s", site_key, origin)
        return fail(403, "origin_not_allowed", "this origin is not allowed for this site key")
    policy = site.step_up
    recent = (await snippet.counters(request).hit(
        [(f"chal:{snippet.client_ip(request)}", policy.window_s)]
    ))[0]
    if recent > policy.hard_limit:
        return fail(429, "rate_limited", "too many challenges from this address",
                    {**_cors(origin), "Retry-After": str(policy.window_s)})
    difficulty = policy.difficulty(recent, snippet.suspicious(request))
    try:
        issued = snippet.signer.issue(site_key, origin, form, difficulty)
    except ChallengeRequestError as exc:
        return fail(400, exc.code, str(exc), _cors(origin))
    resp = web.json_response(issued.to_json())
    resp.headers.update(_cors(origin))
    resp.headers["Cache-Control"] = NO_STORE
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp, ("stepped_up" if difficulty > policy.base else "issued")
