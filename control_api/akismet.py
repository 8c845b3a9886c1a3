"""Akismet-compatible endpoints: existing Akismet clients work by changing the host.

Same form fields, same plain-text answers ("valid"/"invalid", "true"/"false", the submit thank-you
line), `X-akismet-pro-tip: discard` for blocked, the trace id in `X-akismet-guid`. The Akismet key
is an Activelead API key (al_live_…). Out of credits answers "false" (fail open, as a WordPress
site needs) with Akismet's alert headers saying why.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from control_api import credits
from control_api.auth import verify_key
from control_api.clientip import client_ip
from control_api.errors import ApiError, read_bounded
from control_api.ingest import record_feedback, score_and_record
from control_api.keys import KeyInfo
from control_api.sqltypes import Conn
from control_api.state import SERVICES
from rules import Signals, Submission

routes = web.RouteTableDef()

THANKS = "Thanks for making the web a better place."
_MAX_FORM_BYTES = 256 * 1024
_FORM_TYPES = ("application/x-www-form-urlencoded", "")


def _text(body: str, **headers: str) -> web.Response:
    return web.Response(text=body, content_type="text/plain", headers=headers)


async def read_form(request: web.Request) -> dict[str, str]:
    """The urlencoded body (and query) as a dict; strict UTF-8, bounded size."""
    form = dict(request.query)
    if request.method == "GET":
        return form
    if request.content_type not in _FORM_TYPES:
        raise ApiError(415, "unsupported_media_type", "send the fields as application/x-www-form-urlencoded")
    raw = await read_bounded(request, _MAX_FORM_BYTES)
    try:
        pairs = parse_qsl(
            raw.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=500,
        )
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_encoding", "the form is not valid UTF-8 / urlencoded") from exc
    except ValueError as exc:
        raise ApiError(400, "invalid_form", str(exc)) from exc
    form.update(pairs)
    return form


async def _key(request: web.Request, form: dict[str, str]) -> KeyInfo | None:
    token = form.get("api_key") or form.get("key") or ""
    if not token:
        return None
    try:
        return await verify_key(request, token, "live")
    except ApiError as exc:
        if exc.status in (401, 403):
            return None
        raise


def _invalid() -> web.Response:
    return _text(
        "invalid",
        **{
            "X-akismet-debug-help": "The API key is not a valid Activelead "
            "API key (al_live_…) or was revoked."
        },
    )


@routes.post("/1.1/verify-key")
async def verify(request: web.Request) -> web.Response:
    form = await read_form(request)
    return _text("valid") if await _key(request, form) is not None else _invalid()


def submission_from_form(form: dict[str, str], remote: str) -> Submission:
    fields = {
        name: form[name][:64_000]
        for name in (
            "comment_author",
            "comment_author_url",
            "comment_content",
            "comment_type",
            "user_role",
            "blog_lang",
        )
        if form.get(name)
    }
    signals = Signals()
    honeypot = form.get("honeypot_field_name")
    if honeypot:
        signals.honeypot_filled = bool(form.get(honeypot))
    return Submission(
        form_id=(form.get("comment_type") or "comment")[:256],
        ip=(form.get("user_ip") or remote)[:64],
        email=form.get("comment_author_email", "")[:320],
        user_agent=form.get("user_agent", "")[:2048],
        referrer=form.get("referrer", "")[:2048],
        page_url=form.get("permalink", "")[:2048],
        fields=fields,
        headers={"user-agent": form.get("user_agent", "")[:2048]},
        metadata={"blog": form.get("blog", "")[:2048], "via": "akismet"},
        signals=signals,
        is_test=form.get("is_test", "").lower() in ("1", "true", "yes"),
    )


@routes.post("/1.1/comment-check")
async def comment_check(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    form = await read_form(request)
    info = await _key(request, form)
    if info is None:
        return _invalid()
    await services.limiter.hit(f"ingest:{info.key_id}", services.settings.ingest_rate_per_key, 60)
    sub = submission_from_form(form, client_ip(request))
    try:
        verdict, _ = await score_and_record(request, info, sub, source="akismet", idem=None)
    except ApiError as exc:
        if exc.code != "credits_exhausted":
            raise
        return _text(
            "false",
            **{
                "X-akismet-alert-code": "10402",
                "X-akismet-alert-msg": "Activelead credits exhausted; comments are not being checked.",
                "X-Activelead-Credits": "exhausted",
            },
        )
    headers = {"X-akismet-guid": verdict.trace_id}
    if verdict.decision == "blocked":
        headers["X-akismet-pro-tip"] = "discard"
    return _text("false" if verdict.decision == "allowed" else "true", **headers)


async def _submit(request: web.Request, label: str) -> web.Response:
    services = request.app[SERVICES]
    form = await read_form(request)
    info = await _key(request, form)
    if info is None:
        return _invalid()
    guid = form.get("guid", "")
    ip, email = form.get("user_ip", ""), form.get("comment_author_email", "").lower()

    def mark(conn: Conn) -> None:
        # Akismet clients may not send the guid; then the latest matching event is meant.
        if guid and record_feedback(conn, info.project_id, guid, label):
            return
        row = conn.execute(
            "SELECT trace_id FROM events WHERE project_id = ? AND source = 'akismet' AND ip = ?"
            " AND email = ? ORDER BY received_at DESC, id DESC LIMIT 1",
            (info.project_id, ip, email),
        ).fetchone()
        if row is not None:
            record_feedback(conn, info.project_id, row[0], label)

    await services.db.write(mark)
    return _text(THANKS)


@routes.post("/1.1/submit-spam")
async def submit_spam(request: web.Request) -> web.Response:
    return await _submit(request, "spam")


@routes.post("/1.1/submit-ham")
async def submit_ham(request: web.Request) -> web.Response:
    return await _submit(request, "ham")


@routes.get("/1.2/usage-limit")
@routes.post("/1.2/usage-limit")
async def usage_limit(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    form = await read_form(request)
    info = await _key(request, form)
    if info is None:
        return _invalid()
    low = services.settings.low_credit_threshold
    summary: dict[str, Any] = await services.db.read(lambda conn: credits.summary(conn, info.account_id, low))
    used, balance = summary["used"], summary["balance"]
    limit = used + balance
    return web.json_response(
        {
            "limit": limit,
            "usage": used,
            "percentage": f"{(100.0 * used / limit) if limit else 100.0:.2f}",
            "throttled": balance <= 0,
        }
    )
