"""Prepaid credits: an append-only ledger per account; the balance is its running sum.

Every entry stores `balance_after`, and `credit_balances` holds the latest one so a debit is
O(1); both change in the same transaction and CHECK constraints refuse any negative balance, so
even a bug cannot make the balance go negative silently. `verify_balance` recomputes the sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from control_api.auth import has_account_token, require_key, require_session
from control_api.errors import ApiError
from control_api.sqltypes import Conn, dialect
from control_api.state import SERVICES
from control_api.util import now_ms, rfc3339

routes = web.RouteTableDef()

EntryKind = Literal["grant", "purchase", "usage", "refund"]


class InsufficientCredits(Exception):
    """A debit larger than the balance; nothing was written."""

    def __init__(self, balance: int, wanted: int) -> None:
        super().__init__(f"balance {balance} is less than {wanted}")
        self.balance, self.wanted = balance, wanted


class DuplicateEntry(Exception):
    """An entry with this reference exists already (a replay); nothing was written."""


@dataclass(frozen=True, slots=True)
class Debit:
    """The outcome of a debit: what was charged and whether the balance crossed the low mark."""

    charged: int
    balance: int
    crossed_low: bool


def balance(conn: Conn, account_id: str, *, lock: bool = False) -> int:
    """The account's balance; `lock` takes the row lock a debit needs on PostgreSQL (SQLite's
    BEGIN IMMEDIATE already serialises writers)."""
    sql = "SELECT balance FROM credit_balances WHERE account_id = ?"
    if lock and dialect(conn) == "postgres":
        sql += " FOR UPDATE"
    row = conn.execute(sql, (account_id,)).fetchone()
    return int(row[0]) if row else 0


def add_entry(
    conn: Conn,
    account_id: str,
    kind: EntryKind,
    amount: int,
    *,
    project_id: str | None = None,
    reference: str | None = None,
    note: str = "",
) -> int:
    """Append one entry (amount > 0 adds, < 0 takes); return the new balance. Call inside a
    write transaction."""
    if (
        reference is not None
        and conn.execute(
            "SELECT 1 FROM credit_ledger WHERE account_id = ? AND reference = ?",
            (account_id, reference),
        ).fetchone()
    ):
        raise DuplicateEntry(reference)
    current = balance(conn, account_id, lock=True)
    after = current + amount
    if after < 0:
        raise InsufficientCredits(current, -amount)
    conn.execute(
        "INSERT INTO credit_ledger (account_id, kind, amount, balance_after, project_id, reference,"
        " note, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (account_id, kind, amount, after, project_id, reference, note, now_ms()),
    )
    conn.execute(
        "INSERT INTO credit_balances (account_id, balance) VALUES (?, ?) ON CONFLICT(account_id)"
        " DO UPDATE SET balance = excluded.balance",
        (account_id, after),
    )
    if amount > 0:
        conn.execute("UPDATE credit_balances SET low_notified = 0 WHERE account_id = ?", (account_id,))
    return after


def debit(
    conn: Conn,
    account_id: str,
    amount: int,
    *,
    low_threshold: int,
    project_id: str | None,
    reference: str | None,
    partial: bool = False,
) -> Debit:
    """Take `amount` usage credits; with `partial`, take what there is (edge batches: the events
    happened already). Reports when the balance first drops to the low-balance threshold."""
    if not partial and reference is None and amount > 0:
        return _debit_exact(conn, account_id, amount, low_threshold=low_threshold, project_id=project_id)
    current = balance(conn, account_id, lock=True)
    take = min(amount, current) if partial else amount
    if take > current:
        raise InsufficientCredits(current, amount)
    after = current
    if take > 0:
        after = add_entry(conn, account_id, "usage", -take, project_id=project_id, reference=reference)
    crossed = False
    if after <= low_threshold:
        row = conn.execute(
            "SELECT low_notified FROM credit_balances WHERE account_id = ?", (account_id,)
        ).fetchone()
        if row is not None and not row[0]:
            conn.execute("UPDATE credit_balances SET low_notified = 1 WHERE account_id = ?", (account_id,))
            crossed = True
    return Debit(take, after, crossed)


def _debit_exact(
    conn: Conn, account_id: str, amount: int, *, low_threshold: int, project_id: str | None
) -> Debit:
    """The per-call debit (ingest, Akismet) in two statements: one conditional UPDATE takes the
    credits only if they are there — atomic on its own, and a row lock on PostgreSQL like
    `SELECT … FOR UPDATE` — and returns the new balance for the ledger entry."""
    row = conn.execute(
        "UPDATE credit_balances SET balance = balance - ? WHERE account_id = ? AND balance >= ?"
        " RETURNING balance, low_notified",
        (amount, account_id, amount),
    ).fetchone()
    if row is None:
        raise InsufficientCredits(balance(conn, account_id), amount)
    after, notified = int(row[0]), bool(row[1])
    conn.execute(
        "INSERT INTO credit_ledger (account_id, kind, amount, balance_after, project_id, reference,"
        " note, created_at) VALUES (?, 'usage', ?, ?, ?, NULL, '', ?)",
        (account_id, -amount, after, project_id, now_ms()),
    )
    crossed = after <= low_threshold and not notified
    if crossed:
        conn.execute("UPDATE credit_balances SET low_notified = 1 WHERE account_id = ?", (account_id,))
    return Debit(amount, after, crossed)


def debit_calls(
    conn: Conn, account_id: str, project_ids: list[str], *, low_threshold: int
) -> tuple[int, Debit]:
    """One credit per call for several scored calls of one account at once (ingest writes that
    share a transaction), in order, as far as the balance goes: returns how many were paid (the
    first ones) and the outcome. Still one `usage` ledger entry per call, each with its own
    `balance_after`; three statements whatever the count."""
    sql = "SELECT balance, low_notified FROM credit_balances WHERE account_id = ?"
    if dialect(conn) == "postgres":
        sql += " FOR UPDATE"
    row = conn.execute(sql, (account_id,)).fetchone()
    current, notified = (int(row[0]), bool(row[1])) if row else (0, True)
    paid = min(len(project_ids), current)
    if not paid:
        return 0, Debit(0, current, False)
    after = current - paid
    crossed = after <= low_threshold and not notified
    conn.execute(
        "UPDATE credit_balances SET balance = ?, low_notified = ? WHERE account_id = ?",
        (after, int(notified or crossed), account_id),
    )
    now = now_ms()
    conn.executemany(
        "INSERT INTO credit_ledger (account_id, kind, amount, balance_after, project_id, reference,"
        " note, created_at) VALUES (?, 'usage', -1, ?, ?, NULL, '', ?)",
        [(account_id, current - n - 1, project_ids[n], now) for n in range(paid)],
    )
    return paid, Debit(paid, after, crossed)


def verify_balance(conn: Conn, account_id: str) -> bool:
    """True when the stored balance equals the ledger's sum (an invariant the tests check)."""
    total = conn.execute(
        "SELECT COALESCE(SUM(amount), 0) FROM credit_ledger WHERE account_id = ?", (account_id,)
    ).fetchone()[0]
    return int(total) == balance(conn, account_id)


def ledger(conn: Conn, account_id: str, limit: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT * FROM credit_ledger WHERE account_id = ? ORDER BY id DESC LIMIT ?",
        (account_id, limit),
    ).fetchall()
    return [
        {
            "id": r["id"],
            "kind": r["kind"],
            "amount": r["amount"],
            "balanceAfter": r["balance_after"],
            "projectId": r["project_id"],
            "reference": r["reference"],
            "note": r["note"],
            "at": rfc3339(r["created_at"]),
        }
        for r in rows
    ]


def summary(conn: Conn, account_id: str, low_threshold: int) -> dict[str, Any]:
    current = balance(conn, account_id)
    used = conn.execute(
        "SELECT COALESCE(-SUM(amount), 0) FROM credit_ledger WHERE account_id = ? AND kind = 'usage'",
        (account_id,),
    ).fetchone()[0]
    return {
        "balance": current,
        "used": int(used),
        "lowBalanceThreshold": low_threshold,
        "low": current <= low_threshold,
        "exhausted": current <= 0,
    }


@routes.get("/v1/credits")
async def get_credits(request: web.Request) -> web.Response:
    """With an API key: the key's account balance. With a session: balance and recent ledger."""
    services = request.app[SERVICES]
    low = services.settings.low_credit_threshold
    if "Authorization" in request.headers and not has_account_token(request):
        info = await require_key(request, "live")
        body = await services.db.read(lambda conn: summary(conn, info.account_id, low))
        return web.json_response(body)
    session = await require_session(request)

    def read(conn: Conn) -> dict[str, Any]:
        out = summary(conn, session.account_id, low)
        out["ledger"] = ledger(conn, session.account_id, 100)
        return out

    return web.json_response(await services.db.read(read))


def grant(conn: Conn, email: str, amount: int, kind: EntryKind, note: str) -> int:
    """Operator grant (the `activelead credits grant` command); returns the new balance."""
    if amount <= 0:
        raise ValueError("amount must be positive")
    row = conn.execute("SELECT id FROM accounts WHERE email = ?", (email.strip().lower(),)).fetchone()
    if row is None:
        raise LookupError(f"no account with e-mail {email!r}")
    from control_api import audit

    after = add_entry(conn, row["id"], kind, amount, note=note)
    audit.record(
        conn,
        audit.Actor(row["id"], "operator", "", ""),
        "credits.granted",
        details={"amount": amount, "kind": kind},
    )
    return after


def exhausted_error(current: int) -> ApiError:
    return ApiError(
        402,
        "credits_exhausted",
        "the account has no credits left; buy or grant credits to resume scoring",
        details={"balance": current},
    )
