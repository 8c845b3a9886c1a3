"""The browser snippet for sites that use the ingest API only (no proxy in front of them).

The control API serves the same `/__activelead/activelead.js` and `/__activelead/challenge` as the
proxy. A project's public site key is `pk_` + its id's random part, and its snippet settings
(`allowedOrigins`, `powDifficulty`, `stepUpDifficulty`) are set with PATCH /v1/projects/{id}
`{"snippet": {...}}`; the snippet is off until at least one origin is allowed. The page's form
sends the snippet's `activelead_token` field to the integrator's backend, which passes it on as
the ingest body's `token` (the WordPress plugin does); ingest verifies it here and the verdict
gets the facts (token state, timing, behaviour, automation, proof-of-work) as rule inputs.

This module imports the snippet's pure challenge logic and its aiohttp handlers from
`rules.challenge` / `activelead.snippet_http` — the one place the control API uses proxy code. Both
are leaf modules (they import nothing from the proxy but each other); they belong in a shared
package, which is a move for the maintainers to make (see plugins/js-snippet/README.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from activelead.snippet_http import (
    DEFAULT_DIST,
    SnippetBundle,
    SnippetNotBuilt,
    SnippetSite,
    register,
)
from control_api.clientip import client_ip
from control_api.errors import ApiError, error_body
from control_api.settings import ControlApiSettings
from control_api.sqltypes import Row
from control_api.state import SERVICES
from rules import Submission
from rules.challenge import (
    MAX_DIFFICULTY,
    ChallengeSigner,
    StepUp,
    normalise_origin,
    origin_of_url,
    verify,
)

log = logging.getLogger("activelead.control_api.snippet")

MAX_ORIGINS = 50
DEFAULTS: dict[str, Any] = {"allowedOrigins": [], "powDifficulty": 0, "stepUpDifficulty": 18}
_KEY_RE = re.compile(r"pk_([0-9A-Za-z]{16})\Z")
_CACHE_TTL_S = 2.0  # a changed allow-list reaches other processes within this


def site_key(project_id: str) -> str:
    return "pk_" + project_id.removeprefix("prj_")


def project_of(key: str) -> str | None:
    match = _KEY_RE.match(key)
    return f"prj_{match.group(1)}" if match else None


def snippet_json(row: Row) -> dict[str, Any]:
    """What project_json shows: the site key and the snippet settings."""
    return {"siteKey": site_key(row["id"]), **DEFAULTS, **json.loads(row["snippet"] or "{}")}


def validate_snippet(raw: object) -> str:
    """The `snippet` value of a project PATCH → the column's JSON; ApiError naming the bad key."""

    def bad(key: str, problem: str) -> ApiError:
        return ApiError(400, "invalid_field", f"{key}: {problem}", details={key: problem})

    if not isinstance(raw, dict):
        raise bad("snippet", "must be an object")
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise bad(f"snippet.{unknown[0]}", "unknown key")
    out = dict(DEFAULTS)
    if "allowedOrigins" in raw:
        origins = raw["allowedOrigins"]
        if not isinstance(origins, list) or len(origins) > MAX_ORIGINS:
            raise bad("snippet.allowedOrigins", f"must be a list of at most {MAX_ORIGINS} origins")
        norm = []
        for i, origin in enumerate(origins):
            value = normalise_origin(origin) if isinstance(origin, str) else ""
            if not value:
                raise bad(f"snippet.allowedOrigins.{i}", "must be http(s)://host[:port]")
            norm.append(value)
        out["allowedOrigins"] = sorted(set(norm))
    for key in ("powDifficulty", "stepUpDifficulty"):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DIFFICULTY:
                raise bad(f"snippet.{key}", f"must be an integer 0..{MAX_DIFFICULTY}")
            out[key] = value
    return json.dumps(out, sort_keys=True)


def challenge_secret(settings: ControlApiSettings) -> str:
    """The configured secret; else one derived from key_pepper; else a key file beside the
    SQLite database (shared by restarts); else, for an in-memory database, a random one."""
    if settings.challenge_secret:
        return settings.challenge_secret
    if settings.key_pepper:
        return hmac.new(settings.key_pepper.encode(), b"activelead-challenge-v1", hashlib.sha256).hexdigest()
    db = str(settings.db)
    if db == ":memory:" or "://" in db:
        log.warning(
            "no challenge_secret or key_pepper: snippet challenges use a random key "
            "and do not survive a restart or reach other processes"
        )
        return secrets.token_urlsafe(32)
    path = Path(db + ".challenge.key")
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{secrets.token_hex(4)}")
            tmp.write_text(secrets.token_urlsafe(32))
            tmp.chmod(0o600)
            try:
                path.hardlink_to(tmp)  # atomic; a concurrent starter's key wins quietly
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return path.read_text().strip()
    except OSError as exc:
        raise RuntimeError(f"{path}: cannot keep the challenge key: {exc}") from exc


class Snippets:
    """The signer and a short cache of project snippet settings by site key."""

    def __init__(self, settings: ControlApiSettings) -> None:
        self.signer = ChallengeSigner(
            challenge_secret(settings),
            settings.challenge_previous_secrets,
            ttl_s=settings.challenge_ttl_s,
        )
        self._cache: dict[str, tuple[float, SnippetSite | None]] = {}

    def forget(self, key: str) -> None:
        self._cache.pop(key, None)

    async def lookup(self, app: web.Application, key: str) -> SnippetSite | None:
        project_id = project_of(key)
        if project_id is None:
            return None
        hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < _CACHE_TTL_S:
            return hit[1]
        row = await app[SERVICES].db.read(
            lambda conn: conn.execute(
                "SELECT id, snippet FROM projects WHERE id = ?", (project_id,)
            ).fetchone()
        )
        site = None
        if row is not None:
            cfg = snippet_json(row)
            if cfg["allowedOrigins"]:
                site = SnippetSite.build(
                    key,
                    cfg["allowedOrigins"],
                    StepUp(
                        base=cfg["powDifficulty"], risky=max(cfg["stepUpDifficulty"], cfg["powDifficulty"])
                    ),
                )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (time.monotonic(), site)
        return site


SNIPPET = web.AppKey("control_snippet", Snippets)


def forget(app: web.Application, project_id: str) -> None:
    """Drop a project's cached snippet settings (after a PATCH, in this process at once)."""
    snippets = app.get(SNIPPET)
    if snippets is not None:
        snippets.forget(site_key(project_id))


def setup(app: web.Application, settings: ControlApiSettings) -> None:
    """Add /__activelead/activelead.js and /__activelead/challenge to the control API."""
    snippets = Snippets(settings)
    app[SNIPPET] = snippets
    bundle = None
    try:
        bundle = SnippetBundle.load(settings.snippet_dist or DEFAULT_DIST)
    except SnippetNotBuilt as exc:
        log.info("%s", exc)  # sites may load the snippet from a proxy or a CDN instead

    async def lookup(key: str) -> SnippetSite | None:
        return await snippets.lookup(app, key)

    register(
        app,
        lookup=lookup,
        signer=snippets.signer,
        counters=lambda request: request.app[SERVICES].counters,
        bundle=bundle,
        client_ip=client_ip,
        warn_unbuilt=False,
        other_methods=False,
        error_body=lambda code, message: error_body(code, message, None, None),
    )


async def check_token(app: web.Application, sub: Submission) -> None:
    """Verify a snippet token sent as the ingest `token` and put what it says into the signals.

    Other tokens (none, or another kind) are left alone: the integrator's own signals stand."""
    if not sub.token.startswith("c1."):
        return
    snippets = app[SNIPPET]
    check = await verify(
        snippets.signer,
        app[SERVICES].counters,
        sub.token,
        site_key=site_key(sub.project_id),
        origin=origin_of_url(sub.page_url) or None,
    )
    sig = sub.signals
    sig.token_state = check.state
    if sig.elapsed_ms is None and check.state in ("valid", "replayed"):
        sig.elapsed_ms = check.elapsed_ms
    sig.pow_solved = sig.pow_solved or check.pow_solved
    sig.automation = sig.automation or check.automation
    if check.behaviour and not sig.behaviour:
        sig.behaviour = dict(check.behaviour)
