"""Accounts and sessions: sign-up, sign-in, sign-out, password change, the audit log view.

Answers are generic on purpose: sign-up answers the same 202 whether or not the address already
has an account (and never touches an existing one), sign-in says "invalid e-mail or password"
whether or not the account exists, and both spend the same argon2 time either way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import secrets
from typing import Any

from aiohttp import web
from argon2.exceptions import InvalidHashError, VerificationError

from control_api import audit
from control_api.auth import SESSION_COOKIE, Session, require_session, token_hash
from control_api.clientip import client_ip
from control_api.errors import ApiError, read_json, require_object
from control_api.keys import describe_token
from control_api.sqltypes import Conn
from control_api.state import SERVICES
from control_api.util import new_id, now_ms

routes = web.RouteTableDef()

_EMAIL_RE = re.compile(r"^[^@\s\x00-\x1f]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z0-9-]{2,63}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 takes any length; bound it so a huge password is not a DoS
_GENERIC_SIGNIN = "invalid e-mail or password"


def normalise_email(raw: object) -> str:
    if not isinstance(raw, str) or len(raw) > 254 or not _EMAIL_RE.match(raw.strip()):
        raise ApiError(
            400,
            "invalid_email",
            "enter a valid e-mail address",
            details={"email": "not a valid e-mail address"},
        )
    return raw.strip().lower()


def check_password(raw: object, field: str = "password") -> str:
    if not isinstance(raw, str) or not MIN_PASSWORD <= len(raw) <= MAX_PASSWORD:
        raise ApiError(
            400,
            "invalid_password",
            f"the password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters",
            details={field: f"{MIN_PASSWORD} to {MAX_PASSWORD} characters"},
        )
    return raw


def account_json(account_id: str, email: str) -> dict[str, Any]:
    return {"id": account_id, "email": email}


def _start_session(conn: Conn, account_id: str, ttl_s: int) -> tuple[str, str]:
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = now_ms()
    conn.execute("DELETE FROM sessions WHERE account_id = ? AND expires_at <= ?", (account_id, now))
    conn.execute(
        "INSERT INTO sessions (token_hash, account_id, csrf_token, created_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (token_hash(token), account_id, csrf, now, now + ttl_s * 1000),
    )
    return token, csrf


def _set_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    settings = request.app[SERVICES].settings
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.session_ttl_s,
        path="/",
        httponly=True,
        secure=settings.cookie_secure,
        samesite=settings.cookie_samesite,
    )


async def _hash(request: web.Request, password: str) -> str:
    hasher = request.app[SERVICES].hasher
    # argon2 is deliberately slow (tens of ms): keep it off the event loop and off the DB thread.
    return await asyncio.get_running_loop().run_in_executor(None, hasher.hash, password)


async def _verify(request: web.Request, stored: str, password: str) -> bool:
    hasher = request.app[SERVICES].hasher

    def verify() -> bool:
        try:
            return hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.get_running_loop().run_in_executor(None, verify)


# The one answer sign-up gives, whether or not the address already has an account: same status,
# same body, no cookie. A new account is used by signing in, like an existing one.
SIGNUP_ACCEPTED = {
    "status": "ok",
    "message": (
        "If this address can be registered, its account now exists with this password: sign in"
        " (POST /v1/session) to continue. An address that already has an account is left unchanged."
    ),
}


@routes.post("/v1/accounts")
async def sign_up(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    await services.limiter.hit(f"signup:ip:{client_ip(request)}", services.settings.signup_limit_per_ip, 3600)
    body = require_object(await read_json(request, max_bytes=16 * 1024))
    email = normalise_email(body.get("email"))
    password = check_password(body.get("password"))
    # Hashed before we know whether the address is taken, so both paths spend the same argon2
    # time; the database work that differs after it is a few inserts (microseconds on SQLite).
    password_hash = await _hash(request, password)
    account_id = new_id("acc")
    actor = audit.Actor.of(request, account_id, f"account:{account_id}")
    initial = services.settings.initial_credits

    def create(conn: Conn) -> None:
        now = now_ms()
        # ON CONFLICT: two sign-ups racing for one new address create it once, on SQLite and on
        # PostgreSQL alike (a unique violation there would be a 500 that tells them apart).
        inserted = conn.execute(
            "INSERT INTO accounts (id, email, password_hash, created_at, password_changed_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (email) DO NOTHING",
            (account_id, email, password_hash, now, now),
        ).rowcount
        if inserted != 1:
            # The existing account is not touched (no new password, no session for whoever
            # asked); its owner sees the attempt in the audit log.
            (existing,) = conn.execute("SELECT id FROM accounts WHERE email = ?", (email,)).fetchone()
            audit.record(
                conn, dataclasses.replace(actor, account_id=existing, actor="anonymous"), "signup.duplicate"
            )
            return
        from control_api.credits import add_entry

        conn.execute("INSERT INTO credit_balances (account_id, balance) VALUES (?, 0)", (account_id,))
        if initial:
            add_entry(conn, account_id, "grant", initial, note="sign-up grant")
        audit.record(conn, actor, "account.created")

    await services.db.write(create)
    return web.json_response(SIGNUP_ACCEPTED, status=202)


@routes.post("/v1/session")
async def sign_in(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    settings = services.settings
    body = require_object(await read_json(request, max_bytes=16 * 1024))
    raw_email, password = body.get("email"), body.get("password")
    if (
        not isinstance(raw_email, str)
        or not isinstance(password, str)
        or len(password) > MAX_PASSWORD
        or len(raw_email) > 254
    ):
        raise ApiError(401, "invalid_credentials", _GENERIC_SIGNIN)
    email = raw_email.strip().lower()
    window = settings.login_window_s
    await services.limiter.hit(f"login:ip:{client_ip(request)}", settings.login_limit_per_ip, window)
    await services.limiter.hit(f"login:acct:{email}", settings.login_limit_per_account, window)

    row = await services.db.read(
        lambda conn: conn.execute(
            "SELECT id, password_hash FROM accounts WHERE email = ?", (email,)
        ).fetchone()
    )
    # Unknown accounts are checked against a hash made at start-up with the same parameters, so
    # the answer takes as long as for a real account (from the first request on).
    stored = row["password_hash"] if row is not None else services.dummy_hash
    ok = await _verify(request, stored, password) and row is not None
    account_id = row["id"] if row is not None else None
    actor = audit.Actor.of(request, account_id, f"account:{account_id}" if account_id else "anonymous")

    def finish(conn: Conn) -> tuple[str, str] | None:
        if not ok:
            # Unknown e-mails are not logged by address (that would store typos of passwords).
            audit.record(conn, actor, "signin.failure")
            return None
        assert account_id is not None
        audit.record(conn, actor, "signin.success")
        return _start_session(conn, account_id, settings.session_ttl_s)

    started = await services.db.write(finish)
    if started is None:
        raise ApiError(401, "invalid_credentials", _GENERIC_SIGNIN)
    assert account_id is not None
    if services.hasher.check_needs_rehash(stored):  # parameters were raised since the hash
        new_hash = await _hash(request, password)
        await services.db.write(
            lambda conn: conn.execute(
                "UPDATE accounts SET password_hash = ? WHERE id = ?", (new_hash, account_id)
            )
        )
    token, csrf = started
    response = web.json_response({"account": account_json(account_id, email), "csrfToken": csrf})
    _set_cookie(request, response, token)
    return response


@routes.get("/v1/session")
async def current_session(request: web.Request) -> web.Response:
    session = await require_session(request)
    return web.json_response(
        {
            "account": account_json(session.account_id, session.email),
            "csrfToken": session.csrf_token,
        }
    )


@routes.delete("/v1/session")
async def sign_out(request: web.Request) -> web.Response:
    session = await require_session(request, allow_token=False)
    actor = audit.Actor.of(request, session.account_id, session.actor)

    def end(conn: Conn) -> None:
        conn.execute("DELETE FROM sessions WHERE token_hash = ?", (session.token_hash,))
        audit.record(conn, actor, "signout")

    await request.app[SERVICES].db.write(end)
    response = web.json_response({"signedOut": True})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


@routes.post("/v1/account/password")
async def change_password(request: web.Request) -> web.Response:
    session = await require_session(request, allow_token=False)
    services = request.app[SERVICES]
    body = require_object(await read_json(request, max_bytes=16 * 1024))
    current = body.get("currentPassword")
    new = check_password(body.get("newPassword"), "newPassword")
    row = await services.db.read(
        lambda conn: conn.execute(
            "SELECT password_hash FROM accounts WHERE id = ?", (session.account_id,)
        ).fetchone()
    )
    if (
        not isinstance(current, str)
        or len(current) > MAX_PASSWORD
        or not await _verify(request, row["password_hash"], current)
    ):
        raise ApiError(403, "invalid_credentials", "the current password is wrong")
    new_hash = await _hash(request, new)
    actor = audit.Actor.of(request, session.account_id, session.actor)

    def change(conn: Conn) -> None:
        conn.execute(
            "UPDATE accounts SET password_hash = ?, password_changed_at = ? WHERE id = ?",
            (new_hash, now_ms(), session.account_id),
        )
        # A changed password ends every other session (the reason people change it).
        conn.execute(
            "DELETE FROM sessions WHERE account_id = ? AND token_hash != ?",
            (session.account_id, session.token_hash),
        )
        audit.record(conn, actor, "password.changed")

    await services.db.write(change)
    return web.json_response({"changed": True})


@routes.get("/v1/audit")
async def audit_log(request: web.Request) -> web.Response:
    session: Session = await require_session(request)
    entries = await request.app[SERVICES].db.read(
        lambda conn: audit.list_entries(conn, session.account_id, 200)
    )
    return web.json_response({"entries": entries})


@routes.get("/v1/account/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    session = await require_session(request)
    rows = await request.app[SERVICES].db.read(
        lambda conn: conn.execute(
            "SELECT * FROM account_tokens WHERE account_id = ? ORDER BY created_at",
            (session.account_id,),
        ).fetchall()
    )
    return web.json_response({"tokens": [describe_token(r) for r in rows]})


@routes.post("/v1/account/tokens")
async def create_token(request: web.Request) -> web.Response:
    # Only a signed-in person mints account tokens: a leaked token cannot mint more.
    session = await require_session(request, allow_token=False)
    services = request.app[SERVICES]
    body = require_object(await read_json(request, max_bytes=16 * 1024))
    name = body.get("name", "automation")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 200:
        raise ApiError(
            400, "invalid_field", "name must be 1 to 200 characters", details={"name": "1 to 200 characters"}
        )
    actor = audit.Actor.of(request, session.account_id, session.actor)

    def create(conn: Conn) -> tuple[str, dict[str, object]]:
        token, described = services.keys.create_account_token(
            conn, account_id=session.account_id, name=name.strip()
        )
        audit.record(conn, actor, "token.created", str(described["id"]))
        return token, described

    token, described = await services.db.write(create)
    return web.json_response({**described, "token": token}, status=201, headers={"Cache-Control": "no-store"})


@routes.delete("/v1/account/tokens/{token_id}")
async def revoke_token(request: web.Request) -> web.Response:
    session = await require_session(request)
    services = request.app[SERVICES]
    tid = request.match_info["token_id"]
    actor = audit.Actor.of(request, session.account_id, session.actor)

    def revoke(conn: Conn) -> None:
        cur = conn.execute(
            "UPDATE account_tokens SET revoked_at = ? WHERE id = ? AND account_id = ? AND revoked_at IS NULL",
            (now_ms(), tid, session.account_id),
        )
        if cur.rowcount == 0:
            raise ApiError(404, "not_found", "no such active token")
        audit.record(conn, actor, "token.revoked", tid)

    await services.db.write(revoke)
    services.keys.forget(tid)
    return web.json_response({"revoked": True})
