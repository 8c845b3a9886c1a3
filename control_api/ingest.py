"""`POST /v1/ingest` and `POST /v1/feedback`: score one submission for an integrator.

One request = at most one DB write transaction: the credit debit, the event, the idempotency
record and the webhook outbox rows commit together, so a verdict is never charged without being
stored, and a replayed Idempotency-Key gets the stored answer without a second charge.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from control_api import credits, jsonx, snippet, webhooks
from control_api.auth import require_key
from control_api.clientip import client_ip
from control_api.context import Services
from control_api.db import DatabaseBusy
from control_api.errors import ApiError, read_json, require_object
from control_api.events import EventRecord, insert, insert_many_scored
from control_api.keys import KeyInfo
from control_api.metrics import METRICS
from control_api.projects import scoring_config
from control_api.sqltypes import Conn
from control_api.state import SERVICES
from control_api.util import now_ms
from rules import Engine, ScoringConfig, Submission, SubmissionError, Thresholds, Verdict

log = logging.getLogger("activelead.control_api")
routes = web.RouteTableDef()

_IDEMPOTENCY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
_PROJECT_TTL_S = 2.0  # config changes reach other processes within this; in-process at once


@dataclass(frozen=True, slots=True)
class ProjectView:
    """What scoring needs from a project row, cached for a moment."""

    id: str
    account_id: str
    version: int
    mode: str
    thresholds: Thresholds
    scoring: ScoringConfig
    policy: str


async def project_view(services: Services, project_id: str) -> ProjectView:
    cached = services.project_cache.get(project_id)
    if cached is not None and time.monotonic() - cached[0] < _PROJECT_TTL_S:
        view: ProjectView = cached[1]
        return view
    row = await services.db.read(
        lambda conn: conn.execute("SELECT * FROM projects WHERE id = ?", (project_id,)).fetchone()
    )
    if row is None:
        raise ApiError(401, "invalid_key", "the key's project no longer exists")
    config = scoring_config(row)
    view = ProjectView(
        row["id"],
        row["account_id"],
        row["version"],
        row["mode"],
        config.thresholds,
        config,
        row["out_of_credits_policy"],
    )
    services.project_cache[project_id] = (time.monotonic(), view)
    return view


def engine_for(services: Services, view: ProjectView) -> Engine:
    assert services.scoring is not None
    return services.scoring.engine_for(view.id, view.version, view.scoring)


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _IDEMPOTENCY_RE.match(key):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )
    return key


def stored_answer(
    conn: Conn, project_id: str, scope: str, key: str, request_hash: str, *, strict: bool = True
) -> tuple[int, str] | None:
    """The stored (status, answer) for this key, None if there is none. Another body under the
    same key is a 422 when `strict`, else treated as no answer (the caller processes it)."""
    row = conn.execute(
        "SELECT request_hash, status, response FROM idempotency WHERE project_id = ? AND scope = ?"
        " AND key = ?",
        (project_id, scope, key),
    ).fetchone()
    if row is None:
        return None
    if row["request_hash"] != request_hash:
        if not strict:
            return None
        raise ApiError(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request body",
        )
    return int(row["status"]), str(row["response"])


def remember(
    conn: Conn,
    project_id: str,
    scope: str,
    key: str,
    request_hash: str,
    status: int,
    response: str,
) -> None:
    """Store the answer under the key (the latest body's answer wins if a key is reused)."""
    conn.execute(
        "INSERT INTO idempotency (project_id, scope, key, request_hash, status, response,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (project_id, scope, key) DO UPDATE"
        " SET request_hash = excluded.request_hash, status = excluded.status,"
        " response = excluded.response, created_at = excluded.created_at",
        (project_id, scope, key, request_hash, status, response, now_ms()),
    )


class IdempotencyLocks:
    """Serialises concurrent requests with the same key in this process, so a double-click
    does not score twice while the first is in flight."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def get(self, project_id: str, key: str) -> asyncio.Lock:
        lock = self._locks.get((project_id, key))
        if lock is None:
            if len(self._locks) > 10_000:
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            lock = self._locks[(project_id, key)] = asyncio.Lock()
        return lock


LOCKS = web.AppKey("idempotency_locks", IdempotencyLocks)


@dataclass(slots=True)
class _Scored:
    record: EventRecord
    answer: str
    future: asyncio.Future[int]


class IngestWriter:
    """Stores the scored calls (without Idempotency-Key) that arrive together in one unit of
    work: one debit per account (still one ledger entry per call), one multi-row insert of the
    events, one webhook lookup per project — instead of the same statements once per call.

    A batch is taken at the end of the tick its first call came in, but no sooner than
    `ingest_batch_interval_ms` after the previous batch: a transaction's fixed cost (locks, and
    the ~10 pages every commit appends to the WAL) is then shared by the calls of a few ms under
    load, while an idle server stores a lone call at once. A call the balance cannot pay is
    answered 402 alone (the first calls of the batch are paid first). Should the batch fail as a
    whole, every call is retried in a unit of its own, so one bad call cannot fail the others."""

    def __init__(self) -> None:
        self._pending: list[_Scored] = []
        self._task: asyncio.Task[None] | None = None
        self._last_batch = -math.inf  # loop time the latest batch was taken

    async def store(self, services: Services, record: EventRecord, answer: str) -> int:
        """Charge (if `record.charged`) and store; the number of webhook rows queued. Raises
        the 402 ApiError when the account has no credit left for this call."""
        loop = asyncio.get_running_loop()
        item = _Scored(record, answer, loop.create_future())
        self._pending.append(item)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._flush(services))
        return await item.future

    async def _flush(self, services: Services) -> None:
        loop = asyncio.get_running_loop()
        interval_s = services.settings.ingest_batch_interval_ms / 1000
        while self._pending:
            # Wait for the end of this tick (every call scored in it joins the batch) and, under
            # load, until the interval since the previous batch is over, so that the calls
            # arriving in between share this one.
            await asyncio.sleep(max(0.0, self._last_batch + interval_s - loop.time()))
            self._last_batch = loop.time()
            batch, self._pending = self._pending, []
            low = services.settings.low_credit_threshold
            outcomes: list[int | BaseException]
            try:
                outcomes = await services.db.write(functools.partial(store_scored, batch=batch, low=low))
            except DatabaseBusy as exc:
                # Another process held the lock past the wait: one by one, each call would
                # wait that long again. Every call gets its 503 now; nothing was stored.
                outcomes = [DatabaseBusy(str(exc)) for _ in batch]
            except Exception:
                log.warning("batched ingest write failed; storing its %d calls one by one", len(batch))
                outcomes = []
                for item in batch:
                    try:
                        outcomes += await services.db.write(
                            functools.partial(store_scored, batch=[item], low=low)
                        )
                    except Exception as exc:
                        outcomes.append(exc)
            for item, outcome in zip(batch, outcomes, strict=True):
                if item.future.done():  # the caller went away; what it sent is stored regardless
                    continue
                if isinstance(outcome, BaseException):
                    item.future.set_exception(outcome)
                else:
                    item.future.set_result(outcome)

    async def drain(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)


WRITER = web.AppKey("ingest_writer", IngestWriter)


def store_scored(conn: Conn, batch: list[_Scored], low: int) -> list[int | BaseException]:
    """The unit of work behind IngestWriter: per call, the webhook rows queued or the 402."""
    refused: dict[int, BaseException] = {}
    queued = [0] * len(batch)
    by_account: dict[str, list[int]] = {}
    for index, item in enumerate(batch):
        if item.record.charged:
            by_account.setdefault(item.record.account_id, []).append(index)
    for account_id, indexes in by_account.items():
        paid, outcome = credits.debit_calls(
            conn, account_id, [batch[i].record.project_id for i in indexes], low_threshold=low
        )
        for i in indexes[paid:]:
            refused[i] = credits.exhausted_error(0)
        if outcome.crossed_low:
            queued[indexes[paid - 1]] += webhooks.enqueue_account(
                conn, account_id, "credits.low", {"balance": outcome.balance, "threshold": low}
            )
    stored = [i for i in range(len(batch)) if i not in refused]
    insert_many_scored(conn, [(batch[i].record, batch[i].answer) for i in stored])
    hooks_of: dict[str, list[tuple[str, list[str], list[str]]]] = {}
    for i in stored:
        record = batch[i].record
        hooks = hooks_of.get(record.project_id)
        if hooks is None:
            hooks = hooks_of[record.project_id] = webhooks.active_hooks(conn, record.project_id)
        if hooks:  # most projects have none: build the payload only when it is sent
            queued[i] += enqueue_scored(conn, record, hooks)
    return [refused.get(i, queued[i]) for i in range(len(batch))]


async def score_and_record(
    request: web.Request,
    info: KeyInfo,
    sub: Submission,
    *,
    source: str,
    idem: tuple[str, str, str] | None,
) -> tuple[Verdict, str]:
    """Score, then charge + store in one transaction. Returns (verdict, response JSON text).
    `idem` is (scope, key, request hash). Raises ApiError(402) when out of credits."""
    services = request.app[SERVICES]
    view = await project_view(services, info.project_id)
    sub.project_id = view.id  # the key decides the project, whatever the body says
    assert services.scoring is not None
    verdict = await services.scoring.score(sub, engine_for(services, view), view.thresholds)
    verdict_json = verdict.to_json()
    answer = jsonx.dumps(verdict_json)
    charge = not sub.is_test and not verdict.degraded
    low = services.settings.low_credit_threshold
    record = EventRecord(
        trace_id=verdict.trace_id,
        project_id=view.id,
        account_id=view.account_id,
        source=source,
        received_at=now_ms(),
        verdict=verdict_json,
        form_id=sub.form_id,
        lead_id=sub.lead_id,
        ip=sub.ip,
        email=sub.email,
        user_agent=sub.user_agent,
        page_url=sub.page_url,
        mode=view.mode,
        action="scored",
        is_test=sub.is_test,
        charged=charge,
    )

    def commit(conn: Conn) -> tuple[str | None, int]:
        """(an earlier answer to the same Idempotency-Key, or None; webhook rows queued)."""
        queued = 0
        if idem is not None:
            # Another process may have answered the same key since our read: its answer wins
            # and nothing is charged or stored twice.
            earlier = stored_answer(conn, view.id, idem[0], idem[1], idem[2])
            if earlier is not None:
                return earlier[1], 0
        if charge:
            try:
                outcome = credits.debit(
                    conn, view.account_id, 1, low_threshold=low, project_id=view.id, reference=None
                )
            except credits.InsufficientCredits as exc:
                raise credits.exhausted_error(exc.balance) from exc
            if outcome.crossed_low:
                queued += webhooks.enqueue_account(
                    conn,
                    view.account_id,
                    "credits.low",
                    {"balance": outcome.balance, "threshold": low},
                )
        insert(conn, record, verdict_json=answer)
        hooks = webhooks.active_hooks(conn, view.id)
        if hooks:  # most projects have none: build the payload only when it is sent
            queued += webhooks.enqueue(
                conn, view.id, "lead.scored", event_summary(record), decision=verdict.decision, hooks=hooks
            )
        if idem is not None:
            remember(conn, view.id, idem[0], idem[1], idem[2], 200, answer)
        return None, queued

    if idem is None:
        queued = await request.app[WRITER].store(services, record, answer)
    else:
        earlier, queued = await services.db.write(commit)
        if earlier is not None:
            return verdict, earlier
    if queued:  # wake the worker only when there is something to send
        services.webhook_wakeup.set()
    metrics = request.app[METRICS]
    metrics.observe_scored(source, verdict.decision)
    if charge:
        metrics.observe_credit_used()
    return verdict, answer


def enqueue_scored(conn: Conn, record: EventRecord, hooks: list[tuple[str, list[str], list[str]]]) -> int:
    """Queue `lead.scored` for a stored event to the project's active webhooks (`hooks`)."""
    return webhooks.enqueue(conn, record.project_id, "lead.scored", event_summary(record),
                            decision=str(record.verdict.get("decision")), hooks=hooks)


def event_summary(ev: EventRecord) -> dict[str, Any]:
    return {
        "traceId": ev.trace_id,
        "projectId": ev.project_id,
        "formId": ev.form_id,
        "leadId": ev.lead_id,
        "source": ev.source,
        "decision": ev.verdict.get("decision"),
        "score": ev.verdict.get("score"),
        "labels": ev.verdict.get("labels", []),
        "isTest": ev.is_test,
    }


@routes.post("/v1/ingest")
async def ingest(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    info = await require_key(request, "live")
    await services.limiter.hit(f"ingest:{info.key_id}", services.settings.ingest_rate_per_key, 60)
    key = idempotency_key(request)
    data = await read_json(request, max_bytes=services.settings.max_body_bytes)
    try:
        sub = Submission.from_json(data)
    except SubmissionError as exc:
        raise ApiError(400, "invalid_submission", str(exc), details=exc.errors) from exc
    if not sub.ip:
        sub.ip = client_ip(request)
    sub.project_id = info.project_id  # the key decides the project (the snippet's site key too)
    await snippet.check_token(request.app, sub)
    if key is None:
        _, answer = await score_and_record(request, info, sub, source="ingest", idem=None)
        return web.Response(text=answer, content_type="application/json")
    request_hash = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    async with request.app[LOCKS].get(info.project_id, key):
        stored = await services.db.read(
            lambda conn: stored_answer(conn, info.project_id, "ingest", key, request_hash)
        )
        if stored is not None:
            return web.Response(
                text=stored[1],
                status=stored[0],
                content_type="application/json",
                headers={"Idempotent-Replayed": "true"},
            )
        _, answer = await score_and_record(
            request, info, sub, source="ingest", idem=("ingest", key, request_hash)
        )
    return web.Response(text=answer, content_type="application/json")


@routes.post("/v1/feedback")
async def feedback(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    info = await require_key(request, "live")
    body = require_object(await read_json(request, max_bytes=16 * 1024))
    trace_id, verdict = body.get("traceId"), body.get("verdict")
    errors = {}
    if not isinstance(trace_id, str) or not 1 <= len(trace_id) <= 64:
        errors["traceId"] = "a trace id string"
    if verdict not in ("spam", "ham"):
        errors["verdict"] = "'spam' or 'ham'"
    errors.update({k: "unknown key" for k in set(body) - {"traceId", "verdict"}})
    if errors:
        raise ApiError(400, "invalid_body", "; ".join(f"{k}: {v}" for k, v in errors.items()), details=errors)
    found = await services.db.write(
        lambda conn: record_feedback(conn, info.project_id, str(trace_id), str(verdict))
    )
    if not found:
        raise ApiError(404, "not_found", "no event with this trace id in the key's project")
    return web.json_response({"traceId": trace_id, "feedback": verdict})


def record_feedback(conn: Conn, project_id: str, trace_id: str, verdict: str) -> bool:
    cur = conn.execute(
        "UPDATE events SET feedback = ?, feedback_at = ? WHERE trace_id = ? AND project_id = ?",
        (verdict, now_ms(), trace_id, project_id),
    )
    return cur.rowcount == 1


async def _drain_writer(app: web.Application) -> None:
    await app[WRITER].drain()


def setup(app: web.Application) -> None:
    app[LOCKS] = IdempotencyLocks()
    app[WRITER] = IngestWriter()
    app.on_shutdown.append(_drain_writer)
    app.router.add_routes(routes)
