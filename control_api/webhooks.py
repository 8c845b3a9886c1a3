"""Outbound webhooks: Standard-Webhooks signatures, an outbox table, a retrying worker, SSRF guard.

Deliveries are written in the same transaction as the event that causes them (the outbox pattern),
so a crash can delay a webhook but never lose or invent one. The worker posts each due delivery,
records every attempt (status, response time, error) and reschedules failures on the configured
backoff (default ~27 h). Targets are checked after DNS resolution by the connector's resolver, so
a hostname that resolves to 127.0.0.1 or 169.254.169.254 is refused; redirects are not followed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from control_api import audit
from control_api.auth import require_session
from control_api.errors import ApiError, read_json, require_object
from control_api.metrics import METRICS
from control_api.projects import load_project
from control_api.sqltypes import Conn, Row
from control_api.state import SERVICES
from control_api.util import new_id, now_ms, rfc3339

log = logging.getLogger("activelead.control_api.webhooks")
routes = web.RouteTableDef()

EVENT_TYPES = ("lead.scored", "credits.low")
MAX_WEBHOOKS_PER_PROJECT = 10


class BlockedTarget(OSError):
    """The webhook URL resolves to an address we refuse to call (SSRF guard)."""

    def __init__(self, message: str) -> None:
        # errno + strerror: aiohttp's connector error shows strerror in the delivery log.
        super().__init__(errno.EACCES, message)


# -- signing (Standard Webhooks v1) -------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`; key = base64 part of whsec_."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify(
    secret: str,
    headers: dict[str, str],
    body: bytes,
    tolerance_s: int = 300,
    now: float | None = None,
) -> bool:
    """The receiver's check (documented in README with test vectors)."""
    msg_id = headers.get("webhook-id", "")
    try:
        timestamp = int(headers.get("webhook-timestamp", ""))
    except ValueError:
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_s:
        return False  # replay protection
    expected = sign(secret, msg_id, timestamp, body).split(",", 1)[1]
    return any(
        hmac.compare_digest(expected, sig.split(",", 1)[1])
        for sig in headers.get("webhook-signature", "").split()
        if sig.startswith("v1,")
    )


# -- SSRF guard --------------------------------------------------------------------------------


def address_allowed(ip: str, allow_private: bool) -> bool:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if allow_private:
        return not (addr.is_multicast or addr.is_unspecified)
    return addr.is_global and not addr.is_multicast


class GuardedResolver(AbstractResolver):
    """Resolves like the default resolver, then drops every address the guard refuses."""

    def __init__(self, allow_private: bool) -> None:
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, family=family
        )
        out: list[ResolveResult] = []
        for fam, _, proto, _, sockaddr in infos:
            ip = str(sockaddr[0])
            if not address_allowed(ip, self._allow_private):
                continue
            out.append(
                ResolveResult(
                    hostname=host,
                    host=ip,
                    port=int(sockaddr[1]),
                    family=fam,
                    proto=proto,
                    flags=socket.AI_NUMERICHOST,
                )
            )
        if not out:
            raise BlockedTarget(f"{host} resolves only to refused (private/loopback) addresses")
        return out

    async def close(self) -> None:
        return None


def check_url(url: object, allow_private: bool) -> str:
    """Validate a webhook URL syntactically (the resolver re-checks at delivery time)."""
    if not isinstance(url, str) or len(url) > 2048:
        raise ApiError(
            400,
            "invalid_url",
            "url must be a string up to 2048 characters",
            details={"url": "string"},
        )
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.username:
        raise ApiError(
            400,
            "invalid_url",
            "url must be http(s)://host/... without credentials",
            details={"url": "http(s) URL"},
        )
    if parts.scheme == "http" and not allow_private:
        raise ApiError(400, "invalid_url", "webhook URLs must use https", details={"url": "https"})
    with contextlib.suppress(ValueError):
        if not address_allowed(parts.hostname, allow_private):
            raise ApiError(
                400,
                "invalid_url",
                "private, loopback and link-local targets are refused",
                details={"url": "refused address"},
            )
    return url


# -- outbox ------------------------------------------------------------------------------------


def active_hooks(conn: Conn, project_id: str) -> list[tuple[str, list[str], list[str]]]:
    """(id, events, decisions) of the project's active webhooks."""
    return [
        (row[0], json.loads(row[1]), json.loads(row[2]))
        for row in conn.execute(
            "SELECT id, events, decisions FROM webhooks WHERE project_id = ? AND active = 1",
            (project_id,),
        )
    ]


def enqueue(
    conn: Conn,
    project_id: str,
    event_type: str,
    data: dict[str, Any],
    decision: str | None = None,
    hooks: list[tuple[str, list[str], list[str]]] | None = None,
) -> int:
    """Queue a delivery for each active webhook of the project subscribed to this event
    (`hooks` from active_hooks() when one transaction enqueues many)."""
    if hooks is None:
        hooks = active_hooks(conn, project_id)
    count = 0
    now = now_ms()
    for hook_id, events, decisions in hooks:
        if event_type not in events:
            continue
        if decision is not None and decisions and decision not in decisions:
            continue
        msg_id = new_id("msg")
        payload = json.dumps({"type": event_type, "timestamp": rfc3339(now), "data": data})
        conn.execute(
            "INSERT INTO webhook_deliveries (id, webhook_id, project_id, event_type, payload,"
            " status, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
            (msg_id, hook_id, project_id, event_type, payload, now, now),
        )
        count += 1
    return count


def enqueue_account(conn: Conn, account_id: str, event_type: str, data: dict[str, Any]) -> int:
    """Account-wide events (credits.low) go to every project's subscribed webhooks."""
    rows = conn.execute("SELECT id FROM projects WHERE account_id = ?", (account_id,)).fetchall()
    return sum(enqueue(conn, row[0], event_type, data) for row in rows)


class WebhookWorker:
    """Delivers due webhooks; one instance per app, started and stopped by a cleanup context."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._services = app[SERVICES]
        settings = self._services.settings
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                resolver=GuardedResolver(settings.webhook_allow_private),
                limit=50,
                use_dns_cache=False,
            ),
            timeout=aiohttp.ClientTimeout(total=settings.webhook_timeout_s),
            headers={"User-Agent": "Activelead-Webhooks/1"},
        )

    async def run(self) -> None:
        services = self._services
        while True:
            try:
                delivered = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook worker pass failed")
                delivered = 0
            if delivered == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(services.webhook_wakeup.wait(), services.settings.webhook_poll_s)
                services.webhook_wakeup.clear()

    async def run_once(self) -> int:
        lease_ms = int((self._services.settings.webhook_timeout_s + 30) * 1000)

        def claim(conn: Conn) -> list[dict[str, Any]]:
            # Claim by moving next_attempt_at past the attempt's lease, guarded by its old value:
            # with several processes (PostgreSQL) each delivery goes to exactly one worker, and
            # a worker that dies mid-attempt leaves it to be retried once the lease runs out.
            now = now_ms()
            rows = conn.execute(
                "SELECT d.id, d.payload, d.attempts, d.next_attempt_at, w.url, w.secret"
                " FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id"
                " WHERE d.status = 'pending' AND d.next_attempt_at <= ?"
                " ORDER BY d.next_attempt_at LIMIT 50",
                (now,),
            ).fetchall()
            claimed = []
            for row in rows:
                cur = conn.execute(
                    "UPDATE webhook_deliveries SET next_attempt_at = ? WHERE id = ?"
                    " AND status = 'pending' AND next_attempt_at = ?",
                    (now + lease_ms, row["id"], row["next_attempt_at"]),
                )
                if cur.rowcount == 1:
                    claimed.append({k: row[k] for k in ("id", "payload", "attempts", "url", "secret")})
            return claimed

        due = await self._services.db.write(claim)
        await asyncio.gather(*(self._deliver(row) for row in due))
        return len(due)

    async def _deliver(self, row: dict[str, Any]) -> None:
        body = row["payload"].encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": row["id"],
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(row["secret"], row["id"], timestamp, body),
        }
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            async with self._session.post(
                row["url"], data=body, headers=headers, allow_redirects=False
            ) as resp:
                status = resp.status
                await resp.content.read(4096)  # a little, to reuse the connection; never all
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        elapsed = int((time.perf_counter() - started) * 1000)
        ok = status is not None and 200 <= status < 300
        self._app[METRICS].webhooks.labels("ok" if ok else "error").inc()
        if not ok and error is None:
            error = f"HTTP {status}"
        backoff = self._services.settings.webhook_backoff_s
        attempts = row["attempts"] + 1

        def record(conn: Conn) -> None:
            conn.execute(
                "INSERT INTO webhook_attempts (delivery_id, attempted_at, status_code, response_ms,"
                " error) VALUES (?, ?, ?, ?, ?)",
                (row["id"], now_ms(), status, elapsed, error),
            )
            if ok:
                conn.execute(
                    "UPDATE webhook_deliveries SET status = 'delivered', attempts = ?,"
                    " last_status_code = ?, last_error = NULL, last_response_ms = ?,"
                    " delivered_at = ?, next_attempt_at = NULL WHERE id = ?",
                    (attempts, status, elapsed, now_ms(), row["id"]),
                )
            else:
                failed = attempts > len(backoff)
                delay = backoff[min(attempts, len(backoff)) - 1] if not failed else 0
                conn.execute(
                    "UPDATE webhook_deliveries SET status = ?, attempts = ?, last_status_code = ?,"
                    " last_error = ?, last_response_ms = ?, next_attempt_at = ? WHERE id = ?",
                    (
                        "failed" if failed else "pending",
                        attempts,
                        status,
                        error,
                        elapsed,
                        None if failed else now_ms() + delay * 1000,
                        row["id"],
                    ),
                )

        await self._services.db.write(record)

    async def close(self) -> None:
        await self._session.close()


async def webhook_worker_ctx(app: web.Application) -> AsyncIterator[None]:
    worker = WebhookWorker(app)
    task = asyncio.create_task(worker.run(), name="webhook-worker")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await worker.close()


# -- management endpoints (session) ------------------------------------------------------------


def _hook_json(row: Row, secret: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row["id"],
        "projectId": row["project_id"],
        "url": row["url"],
        "events": json.loads(row["events"]),
        "decisions": json.loads(row["decisions"]),
        "active": bool(row["active"]),
        "createdAt": rfc3339(row["created_at"]),
    }
    if secret is not None:
        out["secret"] = secret
    return out


def _validate_hook(body: dict[str, Any], allow_private: bool) -> tuple[str, list[str], list[str]]:
    unknown = set(body) - {"url", "events", "decisions"}
    if unknown:
        raise ApiError(
            400,
            "invalid_field",
            f"unknown key {sorted(unknown)[0]!r}",
            details={k: "unknown key" for k in unknown},
        )
    url = check_url(body.get("url"), allow_private)
    events = body.get("events", list(EVENT_TYPES))
    if not isinstance(events, list) or not events or not all(e in EVENT_TYPES for e in events):
        raise ApiError(
            400,
            "invalid_field",
            f"events must be a non-empty subset of {list(EVENT_TYPES)}",
            details={"events": f"subset of {list(EVENT_TYPES)}"},
        )
    decisions = body.get("decisions", [])
    if not isinstance(decisions, list) or not all(d in ("allowed", "review", "blocked") for d in decisions):
        raise ApiError(
            400,
            "invalid_field",
            "decisions must be a subset of allowed/review/blocked",
            details={"decisions": "subset of allowed, review, blocked"},
        )
    return url, sorted(set(events)), sorted(set(decisions))


@routes.get("/v1/projects/{project_id}/webhooks")
async def list_webhooks(request: web.Request) -> web.Response:
    session = await require_session(request)
    pid = request.match_info["project_id"]

    def read(conn: Conn) -> list[dict[str, Any]]:
        load_project(conn, session.account_id, pid)
        return [
            _hook_json(r)
            for r in conn.execute("SELECT * FROM webhooks WHERE project_id = ? ORDER BY created_at", (pid,))
        ]

    return web.json_response({"webhooks": await request.app[SERVICES].db.read(read)})


@routes.post("/v1/projects/{project_id}/webhooks")
async def create_webhook(request: web.Request) -> web.Response:
    session = await require_session(request)
    services = request.app[SERVICES]
    pid = request.match_info["project_id"]
    body = require_object(await read_json(request, max_bytes=16 * 1024))
    url, events, decisions = _validate_hook(body, services.settings.webhook_allow_private)
    secret = new_secret()
    actor = audit.Actor.of(request, session.account_id, session.actor)

    def create(conn: Conn) -> Row:
        load_project(conn, session.account_id, pid)
        n = conn.execute("SELECT COUNT(*) FROM webhooks WHERE project_id = ?", (pid,)).fetchone()[0]
        if n >= MAX_WEBHOOKS_PER_PROJECT:
            raise ApiError(
                409,
                "too_many_webhooks",
                f"a project may have at most {MAX_WEBHOOKS_PER_PROJECT} webhooks",
            )
        hook_id = new_id("wh")
        conn.execute(
            "INSERT INTO webhooks (id, project_id, account_id, url, secret, events, decisions,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                hook_id,
                pid,
                session.account_id,
                url,
                secret,
                json.dumps(events),
                json.dumps(decisions),
                now_ms(),
            ),
        )
        audit.record(conn, actor, "webhook.created", hook_id, {"url": url, "events": events})
        row: Row = conn.execute("SELECT * FROM webhooks WHERE id = ?", (hook_id,)).fetchone()
        return row

    row = await services.db.write(create)
    return web.json_response(_hook_json(row, secret), status=201, headers={"Cache-Control": "no-store"})


@routes.delete("/v1/projects/{project_id}/webhooks/{webhook_id}")
async def delete_webhook(request: web.Request) -> web.Response:
    session = await require_session(request)
    pid, hid = request.match_info["project_id"], request.match_info["webhook_id"]
    actor = audit.Actor.of(request, session.account_id, session.actor)

    def delete(conn: Conn) -> None:
        load_project(conn, session.account_id, pid)
        if conn.execute("DELETE FROM webhooks WHERE id = ? AND project_id = ?", (hid, pid)).rowcount == 0:
            raise ApiError(404, "not_found", "no such webhook")
        audit.record(conn, actor, "webhook.deleted", hid)

    await request.app[SERVICES].db.write(delete)
    return web.json_response({"deleted": True})


@routes.get("/v1/projects/{project_id}/webhooks/{webhook_id}/deliveries")
async def list_deliveries(request: web.Request) -> web.Response:
    session = await require_session(request)
    pid, hid = request.match_info["project_id"], request.match_info["webhook_id"]

    def read(conn: Conn) -> list[dict[str, Any]]:
        load_project(conn, session.account_id, pid)
        rows = conn.execute(
            "SELECT * FROM webhook_deliveries WHERE webhook_id = ? AND project_id = ?"
            " ORDER BY created_at DESC LIMIT 100",
            (hid, pid),
        ).fetchall()
        out = []
        for r in rows:
            tries = conn.execute(
                "SELECT attempted_at, status_code, response_ms, error FROM webhook_attempts"
                " WHERE delivery_id = ? ORDER BY id",
                (r["id"],),
            ).fetchall()
            out.append(
                {
                    "id": r["id"],
                    "eventType": r["event_type"],
                    "status": r["status"],
                    "attempts": r["attempts"],
                    "lastStatusCode": r["last_status_code"],
                    "lastError": r["last_error"],
                    "lastResponseMs": r["last_response_ms"],
                    "nextAttemptAt": rfc3339(r["next_attempt_at"]),
                    "createdAt": rfc3339(r["created_at"]),
                    "deliveredAt": rfc3339(r["delivered_at"]),
                    "log": [
                        {
                            "at": rfc3339(t["attempted_at"]),
                            "statusCode": t["status_code"],
                            "responseMs": t["response_ms"],
                            "error": t["error"],
                        }
                        for t in tries
                    ],
                }
            )
        return out

    return web.json_response({"deliveries": await request.app[SERVICES].db.read(read)})


@routes.post("/v1/projects/{project_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver")
async def redeliver(request: web.Request) -> web.Response:
    session = await require_session(request)
    services = request.app[SERVICES]
    pid = request.match_info["project_id"]
    hid, did = request.match_info["webhook_id"], request.match_info["delivery_id"]
    actor = audit.Actor.of(request, session.account_id, session.actor)

    def again(conn: Conn) -> None:
        load_project(conn, session.account_id, pid)
        cur = conn.execute(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ? WHERE id = ?"
            " AND webhook_id = ? AND project_id = ?",
            (now_ms(), did, hid, pid),
        )
        if cur.rowcount == 0:
            raise ApiError(404, "not_found", "no such delivery")
        audit.record(conn, actor, "webhook.redelivered", did)

    await services.db.write(again)
    services.webhook_wakeup.set()
    return web.json_response({"queued": True}, status=202)
