"""Endpoints for proxies (edge token): the versioned project config, and event batches.

A batch is idempotent twice over: the Idempotency-Key replays the stored answer, and events are
keyed by trace id, so even a batch re-sent under a new key stores and charges each event once.
Only newly stored events are charged, and neither test events nor those the proxy could not
score (`"scored": false`: it applied the form's on_error policy instead of a verdict).
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from aiohttp import web

from control_api import credits, webhooks
from control_api.auth import require_key
from control_api.errors import ApiError, read_json_raw, require_object
from control_api.events import DECISIONS, EventRecord, insert_many, not_stored
from control_api.ingest import LOCKS as ingest_locks
from control_api.ingest import enqueue_scored, remember, stored_answer
from control_api.metrics import METRICS
from control_api.projects import MODES
from control_api.sqltypes import Conn, Row
from control_api.state import SERVICES
from control_api.util import parse_rfc3339

routes = web.RouteTableDef()

_STRINGS = {
    "siteId": 256,
    "projectId": 64,
    "formId": 256,
    "leadId": 256,
    "ip": 64,
    "email": 320,
    "userAgent": 2048,
    "pageUrl": 2048,
    "action": 64,
}
EDGE_CHUNK = 250  # events per transaction (~10 ms of SQLite work)
_EVENT_KEYS = {*_STRINGS, "traceId", "receivedAt", "mode", "verdict", "isTest", "scored"}


def config_body(row: Row, balance: int) -> dict[str, Any]:
    return {
        "version": row["version"],
        "projectId": row["id"],
        "mode": row["mode"],
        "thresholds": {"block": row["block_threshold"], "review": row["review_threshold"]},
        "scoring": json.loads(row["scoring"]),
        "flags": json.loads(row["flags"]),
        "outOfCreditsPolicy": row["out_of_credits_policy"],
        "creditsExhausted": balance <= 0,
    }


@routes.get("/v1/edge/config")
async def edge_config(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    info = await require_key(request, "edge")

    def read(conn: Conn) -> dict[str, Any]:
        row = conn.execute("SELECT * FROM projects WHERE id = ?", (info.project_id,)).fetchone()
        if row is None:
            raise ApiError(401, "invalid_key", "the token's project no longer exists")
        return config_body(row, credits.balance(conn, row["account_id"]))

    body = await services.db.read(read)
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    # The ETag covers the whole body, so a change of credit state (not a config version) also
    # reaches the proxy; `version` alone tells humans which config it is.
    etag = '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    inm = request.headers.get("If-None-Match", "")
    if etag in [t.strip().removeprefix("W/") for t in inm.split(",")]:
        return web.Response(status=304, headers=headers)
    return web.Response(text=text, content_type="application/json", headers=headers)


def validate_event(raw: Any, project_id: str, account_id: str) -> tuple[EventRecord | None, dict[str, str]]:
    """(record, {}) or (None, {field: problem})."""
    if not isinstance(raw, dict):
        return None, {"$": "must be an object"}
    errors: dict[str, str] = {k: "unknown key" for k in set(raw) - _EVENT_KEYS}
    values: dict[str, str] = {}
    for key, limit in _STRINGS.items():
        value = raw.get(key, "")
        if value is None:
            value = ""
        if not isinstance(value, str) or len(value) > limit:
            errors[key] = f"a string of at most {limit} characters"
        else:
            values[key] = value
    trace_id = raw.get("traceId")
    if not isinstance(trace_id, str) or not 1 <= len(trace_id) <= 64:
        errors["traceId"] = "a string of 1 to 64 characters"
    received: int | None = None
    try:
        received = parse_rfc3339(raw["receivedAt"])
    except (KeyError, TypeError, ValueError, AttributeError):
        errors["receivedAt"] = "an RFC 3339 time with offset"
    mode = raw.get("mode", "enforce")
    if mode not in MODES:
        errors["mode"] = f"one of {list(MODES)}"
    is_test = raw.get("isTest", False)
    if not isinstance(is_test, bool):
        errors["isTest"] = "true or false"
    scored = raw.get("scored", True)  # false: scoring failed at the edge; stored, not charged
    if not isinstance(scored, bool):
        errors["scored"] = "true or false"
    verdict = raw.get("verdict")
    if not isinstance(verdict, dict):
        errors["verdict"] = "the verdict object"
    else:
        if verdict.get("decision") not in DECISIONS:
            errors["verdict.decision"] = f"one of {list(DECISIONS)}"
        score = verdict.get("score")
        if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= 100:
            errors["verdict.score"] = "an integer 0..100"
        labels = verdict.get("labels", [])
        if (
            not isinstance(labels, list)
            or len(labels) > 100
            or not all(isinstance(x, str) and len(x) <= 64 for x in labels)
        ):
            errors["verdict.labels"] = "a list of label strings"
        hits = verdict.get("hits", [])
        if not isinstance(hits, list) or len(hits) > 200:
            errors["verdict.hits"] = "a list of at most 200 hits"
    if values.get("projectId") and values["projectId"] != project_id:
        errors["projectId"] = "not the edge token's project"
    if errors:
        return None, errors
    assert isinstance(trace_id, str) and isinstance(verdict, dict) and received is not None
    return EventRecord(
        trace_id=trace_id,
        project_id=project_id,
        account_id=account_id,
        source="edge",
        received_at=received,
        verdict=verdict,
        site_id=values["siteId"],
        form_id=values["formId"],
        lead_id=values["leadId"],
        ip=values["ip"],
        email=values["email"],
        user_agent=values["userAgent"],
        page_url=values["pageUrl"],
        mode=str(mode),
        action=values["action"],
        is_test=bool(is_test),
        scored=bool(scored),
    ), {}


@routes.post("/v1/edge/events")
async def edge_events(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    settings = services.settings
    info = await require_key(request, "edge")
    key = request.headers.get("Idempotency-Key")
    if key is None or not 1 <= len(key) <= 255 or not key.isprintable() or not key.isascii():
        raise ApiError(
            400,
            "missing_idempotency_key",
            "send an Idempotency-Key header (1 to 255 ASCII characters) per batch",
        )
    data, raw = await read_json_raw(request, max_bytes=settings.max_batch_bytes)
    body = require_object(data)
    batch_id, items = body.get("batchId"), body.get("events")
    errors = {}
    if not isinstance(batch_id, str) or not 1 <= len(batch_id) <= 255:
        errors["batchId"] = "a string of 1 to 255 characters"
    if not isinstance(items, list):
        errors["events"] = "a list of events"
    elif len(items) > settings.max_batch_events:
        errors["events"] = f"at most {settings.max_batch_events} events per batch"
    errors.update({k: "unknown key" for k in set(body) - {"batchId", "events"}})
    if errors:
        raise ApiError(
            400, "invalid_batch", "; ".join(f"{k}: {v}" for k, v in errors.items()), details=errors
        )
    assert isinstance(items, list)
    # The exact bytes: a spool re-sends the batch it stored, so the same key means the same bytes.
    # Unlike ingest, another body under a known key is not refused (a proxy must never be stuck
    # on a 4xx it cannot fix): it is processed, and per-event dedupe keeps charges exact.
    request_hash = hashlib.sha256(raw).hexdigest()
    stored = await services.db.read(
        lambda conn: stored_answer(conn, info.project_id, "edge", key, request_hash, strict=False)
    )
    if stored is not None:
        return web.Response(
            text=stored[1],
            status=stored[0],
            content_type="application/json",
            headers={"Idempotent-Replayed": "true"},
        )
    records: list[EventRecord] = []
    rejected: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        record, problems = validate_event(item, info.project_id, info.account_id)
        if record is None:
            rejected.append({"index": index, "errors": problems})
        else:
            records.append(record)
    low = settings.low_credit_threshold
    totals = {"accepted": 0, "duplicates": 0, "charged": 0, "uncharged": 0}
    queued = 0

    def store_chunk(conn: Conn, chunk: list[EventRecord], number: int) -> int:
        """Store the chunk's new events and charge them; return webhook rows queued."""
        fresh = not_stored(conn, chunk)
        billable = sum(r.billable for r in fresh)
        outcome = (
            credits.debit(
                conn,
                info.account_id,
                billable,
                low_threshold=low,
                project_id=info.project_id,
                reference=f"edge:{batch_id}:{request_hash[:16]}:{number}",
                partial=True,
            )
            if billable
            else None
        )
        charged = outcome.charged if outcome else 0
        insert_many(conn, fresh, charged)
        added = 0
        if outcome is not None and outcome.crossed_low:
            added += webhooks.enqueue_account(
                conn, info.account_id, "credits.low", {"balance": outcome.balance, "threshold": low}
            )
        hooks = webhooks.active_hooks(conn, info.project_id)
        for rec in fresh if hooks else ():
            added += enqueue_scored(conn, rec, hooks)
        totals["accepted"] += len(fresh)
        totals["duplicates"] += len(chunk) - len(fresh)
        totals["charged"] += charged
        totals["uncharged"] += billable - charged
        return added

    def finish(conn: Conn) -> str:
        again = stored_answer(conn, info.project_id, "edge", key, request_hash, strict=False)
        if again is not None:  # a twin (another process) finished first: one answer for both
            return again[1]
        answer = json.dumps(
            {
                "batchId": batch_id,
                **{k: totals[k] for k in ("accepted", "duplicates")},
                "rejected": rejected,
                **{k: totals[k] for k in ("charged", "uncharged")},
                "creditsExhausted": credits.balance(conn, info.account_id) <= 0,
            }
        )
        remember(conn, info.project_id, "edge", key, request_hash, 200, answer)
        return answer

    # Short transactions of EDGE_CHUNK events each, so a 5000-event batch never holds the event
    # loop (and every ingest call behind it) for long. Safe without one big transaction: events
    # are unique by trace id and only newly stored ones are charged, so a batch cut short by a
    # crash is completed, not double-charged, when the proxy sends it again.
    async with request.app[ingest_locks].get(info.project_id, f"edge:{key}"):
        for number, start in enumerate(range(0, len(records), EDGE_CHUNK)):
            chunk = records[start : start + EDGE_CHUNK]
            queued += await services.db.write(functools.partial(store_chunk, chunk=chunk, number=number))
        answer = await services.db.write(finish)
    if queued:
        services.webhook_wakeup.set()
    request.app[METRICS].credits_used.inc(totals["charged"])
    return web.Response(text=answer, content_type="application/json")
