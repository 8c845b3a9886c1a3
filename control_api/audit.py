"""The audit log: who did what security-relevant thing, when (UTC) and in which request.

Entries never hold secrets: keys appear by public id, erased e-mails by a salted hash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from control_api.clientip import client_ip
from control_api.sqltypes import Conn
from control_api.state import REQUEST_ID
from control_api.util import now_ms, rfc3339


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts, captured from the request before work moves to the DB thread."""

    account_id: str | None
    actor: str  # "account:<id>", "key:<id>", "edge:<id>", "operator", "anonymous"
    request_id: str
    ip: str

    @classmethod
    def of(cls, request: web.Request, account_id: str | None, actor: str) -> Actor:
        return cls(account_id, actor, request.get(REQUEST_ID, ""), client_ip(request))


def record(
    conn: Conn,
    actor: Actor,
    action: str,
    target: str = "",
    details: dict[str, Any] | None = None,
    *,
    account_id: str | None = None,
) -> None:
    conn.execute(
        "INSERT INTO audit_log (account_id, actor, action, target, details, request_id, ip,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            account_id or actor.account_id,
            actor.actor,
            action,
            target,
            json.dumps(details or {}, sort_keys=True),
            actor.request_id,
            actor.ip,
            now_ms(),
        ),
    )


def list_entries(conn: Conn, account_id: str, limit: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT * FROM audit_log WHERE account_id = ? ORDER BY id DESC LIMIT ?", (account_id, limit)
    ).fetchall()
    return [
        {
            "id": row["id"],
            "actor": row["actor"],
            "action": row["action"],
            "target": row["target"],
            "details": json.loads(row["details"]),
            "requestId": row["request_id"],
            "ip": row["ip"],
            "at": rfc3339(row["created_at"]),
        }
        for row in rows
    ]
