"""Events: store, list with filters and a cursor, fetch, export (streamed), erase, retention purge,
usage per day. Reads are scoped to the key's project or, with a session, the account's projects."""

from __future__ import annotations

import base64
import csv
import functools
import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from control_api import audit, jsonx
from control_api.auth import has_account_token, require_key, require_session
from control_api.errors import ApiError, read_json, require_object
from control_api.sqltypes import Conn, Row, dialect
from control_api.state import SERVICES
from control_api.util import now_ms, parse_rfc3339, rfc3339

routes = web.RouteTableDef()

DECISIONS = ("allowed", "review", "blocked")
MAX_PAGE = 500
EXPORT_PAGE = 500  # rows per read: a few ms on the event loop
PURGE_CHUNK = 2_000  # rows per purge transaction: the event loop is never held for long
CSV_COLUMNS = (
    "traceId",
    "receivedAt",
    "projectId",
    "source",
    "siteId",
    "formId",
    "leadId",
    "ip",
    "email",
    "userAgent",
    "pageUrl",
    "mode",
    "action",
    "decision",
    "score",
    "labels",
    "countryHint",
    "isTest",
    "feedback",
)


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 5x more, per event
class EventRecord:
    """One scored submission as stored (from the ingest API, Akismet or a proxy batch)."""

    trace_id: str
    project_id: str
    account_id: str
    source: str
    received_at: int
    verdict: dict[str, Any]
    site_id: str = ""
    form_id: str = ""
    lead_id: str = ""
    ip: str = ""
    email: str = ""
    user_agent: str = ""
    page_url: str = ""
    mode: str = ""
    action: str = ""
    is_test: bool = False
    charged: bool = False
    scored: bool = True  # False: the proxy's scoring failed and it applied on_error (never charged)

    @property
    def billable(self) -> bool:
        return self.scored and not self.is_test


_INSERT = (
    "INSERT INTO events (trace_id, project_id, account_id, source, received_at, site_id,"
    " form_id, lead_id, ip, email, user_agent, page_url, mode, action, decision, score, labels,"
    " country_hint, is_test, charged, verdict) VALUES"
    " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT(trace_id) DO NOTHING"
)


def _row(ev: EventRecord, charged: bool, verdict_json: str | None = None) -> tuple[Any, ...]:
    verdict = ev.verdict
    return (
        ev.trace_id, ev.project_id, ev.account_id, ev.source, ev.received_at, ev.site_id,
        ev.form_id, ev.lead_id, ev.ip, ev.email.lower(), ev.user_agent, ev.page_url, ev.mode,
        ev.action, verdict.get("decision", "allowed"), int(verdict.get("score", 0)),
        jsonx.dumps(verdict.get("labels", [])), verdict.get("countryHint"), int(ev.is_test),
        int(charged), verdict_json if verdict_json is not None else jsonx.dumps(verdict),
    )  # fmt: skip


def insert(conn: Conn, ev: EventRecord, verdict_json: str | None = None) -> bool:
    """Insert; False if the trace id exists already (a replay), which is not an error.
    `verdict_json`: the verdict already serialised (the ingest answer), to not encode it twice."""
    return conn.execute(_INSERT, _row(ev, ev.charged, verdict_json)).rowcount == 1


def not_stored(conn: Conn, records: list[EventRecord]) -> list[EventRecord]:
    """The records whose trace id is not stored yet (nor repeated earlier in `records`)."""
    ids = [r.trace_id for r in records]
    existing: set[str] = set()
    for start in range(0, len(ids), 900):  # stay under SQLite's bound-parameter limit
        chunk = ids[start : start + 900]
        sql = "SELECT trace_id FROM events WHERE trace_id IN (" + ",".join("?" * len(chunk)) + ")"  # noqa: S608 - placeholders only
        existing.update(row[0] for row in conn.execute(sql, chunk))
    fresh: list[EventRecord] = []
    for rec in records:
        if rec.trace_id not in existing:
            existing.add(rec.trace_id)  # a trace id repeated inside one batch counts once
            fresh.append(rec)
    return fresh


def insert_many(conn: Conn, records: list[EventRecord], charge: int) -> None:
    """Insert new records in one executemany; the first `charge` billable ones are marked
    charged (the ones the credits paid for)."""
    rows = []
    for rec in records:
        paid = charge > 0 and rec.billable
        charge -= paid
        rows.append(_row(rec, paid))
    conn.executemany(_INSERT, rows)


def insert_many_scored(conn: Conn, scored: list[tuple[EventRecord, str]]) -> None:
    """Insert (record, verdict JSON already serialised) pairs in one executemany."""
    conn.executemany(_INSERT, [_row(ev, ev.charged, verdict_json) for ev, verdict_json in scored])


def event_json(row: Row) -> dict[str, Any]:
    return {
        "traceId": row["trace_id"],
        "projectId": row["project_id"],
        "source": row["source"],
        "receivedAt": rfc3339(row["received_at"]),
        "siteId": row["site_id"],
        "formId": row["form_id"],
        "leadId": row["lead_id"],
        "ip": row["ip"],
        "email": row["email"],
        "userAgent": row["user_agent"],
        "pageUrl": row["page_url"],
        "mode": row["mode"],
        "action": row["action"],
        "decision": row["decision"],
        "score": row["score"],
        "labels": json.loads(row["labels"]),
        "countryHint": row["country_hint"],
        "isTest": bool(row["is_test"]),
        "charged": bool(row["charged"]),
        "verdict": json.loads(row["verdict"]),
        "feedback": row["feedback"],
        "feedbackAt": rfc3339(row["feedback_at"]),
    }


@dataclass(frozen=True, slots=True)
class Scope:
    """Which projects a caller may see, and who the caller is (for the audit log)."""

    account_id: str
    project_ids: tuple[str, ...]
    actor: str


async def resolve_scope(request: web.Request) -> Scope:
    """An API key sees its project; a session sees its account's (or `projectId`'s) projects."""
    services = request.app[SERVICES]
    if "Authorization" in request.headers and not has_account_token(request):
        info = await require_key(request, "live")
        return Scope(info.account_id, (info.project_id,), f"key:{info.key_id}")
    session = await require_session(request)
    wanted = request.query.get("projectId")

    def projects(conn: Conn) -> tuple[str, ...]:
        rows = conn.execute("SELECT id FROM projects WHERE account_id = ?", (session.account_id,)).fetchall()
        return tuple(r[0] for r in rows)

    ids = await services.db.read(projects)
    if wanted is not None:
        if wanted not in ids:
            raise ApiError(404, "not_found", "no such project")
        ids = (wanted,)
    return Scope(session.account_id, ids, session.actor)


@dataclass(frozen=True, slots=True)
class Filters:
    """Parsed and validated query-string filters."""

    since: int | None
    until: int | None
    decision: str | None
    label: str | None
    form_id: str | None
    email: str | None
    lead_id: str | None
    limit: int
    cursor: tuple[int, int] | None

    @classmethod
    def parse(cls, query: Any) -> Filters:
        errors: dict[str, str] = {}
        unknown = set(query) - {
            "from",
            "to",
            "decision",
            "label",
            "formId",
            "email",
            "leadId",
            "limit",
            "cursor",
            "projectId",
            "format",
        }
        for key in unknown:
            errors[key] = "unknown parameter"

        def when(name: str) -> int | None:
            raw = query.get(name)
            if raw is None:
                return None
            try:
                return parse_rfc3339(raw)
            except ValueError:
                errors[name] = "must be an RFC 3339 time with offset, e.g. 2026-01-31T00:00:00Z"
                return None

        decision = query.get("decision")
        if decision is not None and decision not in DECISIONS:
            errors["decision"] = f"one of {list(DECISIONS)}"
        limit = 50
        if "limit" in query:
            raw = query["limit"]
            if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
                errors["limit"] = f"an integer 1..{MAX_PAGE}"
            else:
                limit = int(raw)
        cursor = None
        if "cursor" in query:
            cursor = _decode_cursor(query["cursor"])
            if cursor is None:
                errors["cursor"] = "not a cursor from a previous page"
        for name in ("label", "formId", "email", "leadId"):
            if len(query.get(name, "")) > 2048:
                errors[name] = "too long"
        since, until = when("from"), when("to")
        if errors:
            raise ApiError(
                400,
                "invalid_query",
                "; ".join(f"{k}: {v}" for k, v in errors.items()),
                details=errors,
            )
        email = query.get("email")
        return cls(
            since,
            until,
            decision,
            query.get("label"),
            query.get("formId"),
            email.strip().lower() if email else None,
            query.get("leadId"),
            limit,
            cursor,
        )


def _encode_cursor(received_at: int, row_id: int) -> str:
    return base64.urlsafe_b64encode(f"{received_at}:{row_id}".encode()).decode().rstrip("=")


def _decode_cursor(raw: str) -> tuple[int, int] | None:
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
        at, row_id = text.split(":")
        return int(at), int(row_id)
    except (ValueError, UnicodeDecodeError):
        return None


# The few statements that differ between SQLite and PostgreSQL.
_HAS_LABEL = {
    "sqlite": "EXISTS (SELECT 1 FROM json_each(events.labels) WHERE value = ?)",
    "postgres": "EXISTS (SELECT 1 FROM jsonb_array_elements_text(events.labels::jsonb) AS j(value)"
    " WHERE j.value = ?)",
}
_DAY = {
    "sqlite": "date(received_at / 1000, 'unixepoch')",
    "postgres": "to_char(to_timestamp(received_at / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}
_LABELS_TABLE = {
    "sqlite": "json_each(events.labels) AS j",
    "postgres": "jsonb_array_elements_text(events.labels::jsonb) AS j(value)",
}


def _where(scope: Scope, f: Filters, sql: str = "sqlite") -> tuple[str, list[Any]]:
    if not scope.project_ids:
        return "1 = 0", []
    clauses = [f"project_id IN ({','.join('?' * len(scope.project_ids))})"]
    params: list[Any] = list(scope.project_ids)
    for column, value in (
        ("decision", f.decision),
        ("form_id", f.form_id),
        ("email", f.email),
        ("lead_id", f.lead_id),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if f.since is not None:
        clauses.append("received_at >= ?")
        params.append(f.since)
    if f.until is not None:
        clauses.append("received_at < ?")
        params.append(f.until)
    if f.label is not None:
        clauses.append(_HAS_LABEL[sql])
        params.append(f.label)
    return " AND ".join(clauses), params


def query_page(conn: Conn, scope: Scope, f: Filters, cursor: tuple[int, int] | None, limit: int) -> list[Row]:
    where, params = _where(scope, f, dialect(conn))
    if cursor is not None:
        # Keyset pagination: stable under inserts, O(limit) however deep the page.
        where += " AND (received_at < ? OR (received_at = ? AND id < ?))"
        params += [cursor[0], cursor[0], cursor[1]]
    return conn.execute(
        f"SELECT * FROM events WHERE {where} ORDER BY received_at DESC, id DESC LIMIT ?",  # noqa: S608 - placeholders only
        (*params, limit),
    ).fetchall()


@routes.get("/v1/events")
async def list_events(request: web.Request) -> web.Response:
    scope = await resolve_scope(request)
    f = Filters.parse(request.query)
    rows = await request.app[SERVICES].db.read(lambda conn: query_page(conn, scope, f, f.cursor, f.limit + 1))
    more = len(rows) > f.limit
    rows = rows[: f.limit]
    nxt = _encode_cursor(rows[-1]["received_at"], rows[-1]["id"]) if more and rows else None
    return web.json_response({"events": [event_json(r) for r in rows], "next": nxt})


@routes.get("/v1/events/export")
async def export_events(request: web.Request) -> web.StreamResponse:
    scope = await resolve_scope(request)
    f = Filters.parse(request.query)
    fmt = request.query.get("format", "jsonl")
    if fmt not in ("csv", "jsonl"):
        raise ApiError(
            400, "invalid_query", "format must be csv or jsonl", details={"format": "csv or jsonl"}
        )
    services = request.app[SERVICES]
    actor = audit.Actor.of(request, scope.account_id, scope.actor)
    await services.db.write(
        lambda conn: audit.record(
            conn, actor, "events.exported", ",".join(scope.project_ids), {"format": fmt}
        )
    )
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson",
            "Content-Disposition": f'attachment; filename="activelead-events.{fmt}"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    if fmt == "csv":
        await response.write(_csv_line(CSV_COLUMNS))

    def page(conn: Conn, cursor: tuple[int, int] | None) -> list[Row]:
        return query_page(conn, scope, f, cursor, EXPORT_PAGE)

    cursor: tuple[int, int] | None = None
    while True:
        # Page by page: memory stays flat however large the range, and the DB thread is never
        # held for the whole export.
        rows = await services.db.read(functools.partial(page, cursor=cursor))
        if not rows:
            break
        chunk = io.StringIO()
        for row in rows:
            item = event_json(row)
            if fmt == "csv":
                chunk.write(
                    _csv_line(
                        tuple(
                            ";".join(item["labels"]) if c == "labels" else _csv_safe(item[c])
                            for c in CSV_COLUMNS
                        )
                    ).decode()
                )
            else:
                chunk.write(json.dumps(item, ensure_ascii=False) + "\n")
        await response.write(chunk.getvalue().encode())
        cursor = (rows[-1]["received_at"], rows[-1]["id"])
        if len(rows) < EXPORT_PAGE:
            break
    await response.write_eof()
    return response


def _csv_safe(value: Any) -> str:
    text = "" if value is None else str(value)
    # Spreadsheet formula injection: attacker-controlled fields (e-mail, user agent) must not
    # start a cell with a formula character (OWASP CSV injection).
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def _csv_line(values: tuple[str, ...]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerow(values)
    return buf.getvalue().encode()


@routes.get("/v1/events/{trace_id}")
async def get_event(request: web.Request) -> web.Response:
    scope = await resolve_scope(request)
    trace_id = request.match_info["trace_id"]
    row = await request.app[SERVICES].db.read(
        lambda conn: conn.execute("SELECT * FROM events WHERE trace_id = ?", (trace_id,)).fetchone()
    )
    if row is None or row["project_id"] not in scope.project_ids:
        raise ApiError(404, "not_found", "no such event")
    return web.json_response(event_json(row))


@routes.post("/v1/erasure")
async def erase(request: web.Request) -> web.Response:
    """Data-subject erasure: delete every event with this e-mail or lead id in scope."""
    scope = await resolve_scope(request)
    body = require_object(await read_json(request, max_bytes=16 * 1024))
    email, lead_id = body.get("email"), body.get("leadId")
    if (email is None) == (lead_id is None) or not all(
        v is None or (isinstance(v, str) and 0 < len(v) <= 2048) for v in (email, lead_id)
    ):
        raise ApiError(
            400,
            "invalid_body",
            "send exactly one of 'email' or 'leadId' (a string)",
            details={"email": "string", "leadId": "string"},
        )
    column, value = ("email", email.strip().lower()) if isinstance(email, str) else ("lead_id", lead_id)
    services = request.app[SERVICES]
    actor = audit.Actor.of(request, scope.account_id, scope.actor)
    # The audit entry must not re-store what was erased: a salted hash lets the operator prove
    # a given request was carried out without keeping the address.
    digest = hashlib.sha256(f"{services.settings.key_pepper}:{value}".encode()).hexdigest()[:16]

    def run(conn: Conn) -> int:
        marks = ",".join("?" * len(scope.project_ids)) or "''"
        cur = conn.execute(
            f"DELETE FROM events WHERE {column} = ? AND project_id IN ({marks})",  # noqa: S608 - fixed column
            (value, *scope.project_ids),
        )
        audit.record(
            conn,
            actor,
            "events.erased",
            ",".join(scope.project_ids),
            {
                "by": "email" if column == "email" else "leadId",
                "valueHash": digest,
                "deleted": cur.rowcount,
            },
        )
        return cur.rowcount

    deleted = await services.db.write(run)
    return web.json_response({"deleted": deleted})


@routes.get("/v1/usage")
async def usage(request: web.Request) -> web.Response:
    scope = await resolve_scope(request)
    f = Filters.parse(request.query)
    since = f.since if f.since is not None else now_ms() - 30 * 86400_000

    def run(conn: Conn) -> list[dict[str, Any]]:
        marks = ",".join("?" * len(scope.project_ids)) or "''"
        base = f"project_id IN ({marks}) AND received_at >= ? AND received_at < ? AND is_test = 0"
        params = (*scope.project_ids, since, f.until if f.until is not None else 2**62)
        days: dict[tuple[str, str], dict[str, Any]] = {}
        sql = dialect(conn)
        by_decision = (
            f"SELECT project_id, {_DAY[sql]} AS day, decision, COUNT(*) AS n FROM events"  # noqa: S608 - fixed fragments and placeholders
            f" WHERE {base} GROUP BY 1, 2, 3"
        )
        by_label = (
            f"SELECT project_id, {_DAY[sql]} AS day, j.value AS label, COUNT(*) AS n"  # noqa: S608
            f" FROM events, {_LABELS_TABLE[sql]} WHERE {base} GROUP BY 1, 2, 3"
        )
        for row in conn.execute(by_decision, params):
            entry = days.setdefault(
                (row["project_id"], row["day"]),
                {
                    "projectId": row["project_id"],
                    "day": row["day"],
                    "scored": 0,
                    "allowed": 0,
                    "review": 0,
                    "blocked": 0,
                    "byLabel": {},
                },
            )
            entry[row["decision"]] = row["n"]
            entry["scored"] += row["n"]
        for row in conn.execute(by_label, params):
            found = days.get((row["project_id"], row["day"]))
            if found is not None:
                found["byLabel"][row["label"]] = row["n"]
        return sorted(days.values(), key=lambda d: (d["day"], d["projectId"]))

    return web.json_response({"days": await request.app[SERVICES].db.read(run)})


def purge_expired(conn: Conn, idempotency_ttl_s: int = 86400) -> int:
    """Delete events older than their project's retention (and expired idempotency answers);
    return how many events."""
    now = now_ms()
    cur = conn.execute(
        "DELETE FROM events WHERE id IN (SELECT e.id FROM events e JOIN projects p"
        " ON p.id = e.project_id WHERE e.received_at < ? - p.retention_days * 86400000"
        " LIMIT ?)",
        (now, PURGE_CHUNK),
    )
    conn.execute("DELETE FROM idempotency WHERE created_at < ?", (now - idempotency_ttl_s * 1000,))
    return cur.rowcount
