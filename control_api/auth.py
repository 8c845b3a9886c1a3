"""Who is calling: a session cookie (dashboard, with CSRF on writes) or a Bearer key (API, edge)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from control_api.errors import ApiError
from control_api.keys import KeyFormatError, KeyInfo, KeyKind, parse_key
from control_api.sqltypes import Conn
from control_api.state import SERVICES
from control_api.util import now_ms

SESSION_COOKIE = "al_session"
CSRF_HEADER = "X-CSRF-Token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in account."""

    account_id: str
    email: str
    csrf_token: str
    token_hash: str
    token_id: str | None = None  # set when an account token (al_acct_…), not a cookie, was used

    @property
    def actor(self) -> str:
        return f"token:{self.token_id}" if self.token_id else f"account:{self.account_id}"


def token_hash(token: str) -> str:
    # Session tokens are 256-bit random values: a plain SHA-256 is enough to make a leaked
    # sessions table useless for hijacking.
    return hashlib.sha256(token.encode()).hexdigest()


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def require_key(request: web.Request, kind: KeyKind) -> KeyInfo:
    """The Bearer key's grant, or 401 (missing/invalid/revoked) / 403 (wrong kind of key)."""
    token = bearer(request)
    if token is None:
        raise ApiError(
            401,
            "missing_credentials",
            "send the API key as 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": 'Bearer realm="activelead"'},
        )
    return await verify_key(request, token, kind)


async def verify_key(request: web.Request, token: str, kind: KeyKind) -> KeyInfo:
    services = request.app[SERVICES]
    fast = services.keys.verified(token)
    if fast is not None and fast.kind == kind:
        if services.keys.due_last_used(fast.key_id):
            services.touch_key(kind, fast.key_id)
        return fast
    try:
        presented_kind, public_id, secret = parse_key(token)
    except KeyFormatError as exc:
        raise ApiError(
            401,
            "invalid_key",
            str(exc),
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from exc
    if presented_kind != kind:
        wanted = "an API key (al_live_…)" if kind == "live" else "an edge token (al_edge_…)"
        raise ApiError(403, "wrong_key_kind", f"this endpoint needs {wanted}")
    entry = services.keys.cached(kind, public_id)
    if entry is None:
        entry = await services.db.read(lambda conn: services.keys.load(conn, kind, public_id))
    info = services.keys.check(entry, secret)
    if info is not None:
        services.keys.remember_verified(token, kind, public_id, entry)
    if info is None:
        raise ApiError(
            401,
            "invalid_key",
            "the key is unknown or revoked",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    if services.keys.due_last_used(info.key_id):
        services.touch_key(kind, info.key_id)
    return info


def has_account_token(request: web.Request) -> bool:
    token = bearer(request)
    return token is not None and token.startswith("al_acct_")


def _load_session(conn: Conn, hashed: str) -> Session | None:
    row = conn.execute(
        "SELECT s.account_id, s.csrf_token, a.email FROM sessions s JOIN accounts a"
        " ON a.id = s.account_id WHERE s.token_hash = ? AND s.expires_at > ?",
        (hashed, now_ms()),
    ).fetchone()
    if row is None:
        return None
    return Session(row["account_id"], row["email"], row["csrf_token"], hashed)


async def require_session(request: web.Request, *, allow_token: bool = True) -> Session:
    """The signed-in account (cookie; unsafe methods also need the CSRF token and our origin),
    or, where `allow_token`, an account token in `Authorization: Bearer al_acct_…`."""
    services = request.app[SERVICES]
    if request.headers.get("Authorization"):
        if not allow_token:
            raise ApiError(403, "session_required", "this needs a signed-in session, not a token")
        bearer_token = bearer(request)
        if bearer_token is None:
            raise ApiError(401, "invalid_key", "send 'Authorization: Bearer al_acct_…'")
        # A bearer token is not sent by browsers on their own, so no CSRF check applies.
        info = await verify_key(request, bearer_token, "acct")
        row = await services.db.read(
            lambda conn: conn.execute(
                "SELECT email FROM accounts WHERE id = ?", (info.account_id,)
            ).fetchone()
        )
        if row is None:
            raise ApiError(401, "invalid_key", "the token's account no longer exists")
        return Session(info.account_id, row["email"], "", "", token_id=info.key_id)
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token or len(token) > 128:
        raise ApiError(401, "not_signed_in", "sign in first")
    hashed = token_hash(token)
    session = await services.db.read(lambda conn: _load_session(conn, hashed))
    if session is None:
        raise ApiError(401, "not_signed_in", "the session has expired or was signed out")
    if request.method not in _SAFE_METHODS:
        check_csrf(request, session)
    return session


def check_csrf(request: web.Request, session: Session) -> None:
    # Two independent defences: a synchroniser token only our pages can read, and (when the
    # browser sends one) an Origin that must be ours. SameSite on the cookie is the third.
    presented = request.headers.get(CSRF_HEADER, "")
    if not presented or not hmac.compare_digest(presented, session.csrf_token):
        raise ApiError(403, "csrf_failed", f"missing or wrong {CSRF_HEADER} header")
    origin = request.headers.get("Origin")
    if origin is not None and origin != "null":
        allowed = set(request.app[SERVICES].settings.trusted_origins)
        host = request.host
        parsed = urlsplit(origin)
        if parsed.netloc != host and origin.rstrip("/") not in allowed:
            raise ApiError(403, "csrf_failed", "cross-origin write refused")
    elif origin == "null":
        raise ApiError(403, "csrf_failed", "cross-origin write refused")
