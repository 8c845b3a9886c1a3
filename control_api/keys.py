"""API keys and edge tokens: `al_live_<id>_<secret><checksum>`, only an HMAC of the secret stored.

- `al_live_` keys are for integrators (ingest, events, credits, Akismet); `al_edge_` tokens are for
  proxies (config pull, event batches); `al_acct_` tokens act for a whole account on the management
  API (automation, no cookie). A key of one kind is refused where another is expected.
- The public id (12 base62) finds the row; the secret (32 base62, ~190 bits) is what proves it.
- The checksum (CRC32 in 6 base62, as GitHub's tokens) lets a typo or a truncated paste be refused
  before any database lookup, and lets secret scanners recognise real keys.
- The secret is high-entropy, so a keyed fast hash (HMAC-SHA256 with a server pepper) is the right
  tool; a password hash (argon2) would cost ~50 ms per ingest call and add nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import zlib
from dataclasses import dataclass
from typing import Literal

from control_api.sqltypes import Conn, Row
from control_api.util import _ALPHABET, base62, now_ms

KeyKind = Literal["live", "edge", "acct"]
_KEY_RE = re.compile(r"^al_(live|edge|acct)_([0-9A-Za-z]{12})_([0-9A-Za-z]{32})([0-9A-Za-z]{6})$")
_CACHE_TTL_S = 5.0  # a revoked key stops working in another process within this time
_LAST_USED_EVERY_MS = 60_000  # last-used is a coarse fact; do not write per request


class KeyFormatError(ValueError):
    """The string is not a well-formed Activelead key (bad prefix, length or checksum)."""


def _checksum(body: str) -> str:
    n = zlib.crc32(body.encode("ascii"))
    out = ""
    for _ in range(6):
        n, r = divmod(n, 62)
        out = _ALPHABET[r] + out
    return out


def format_key(kind: KeyKind, public_id: str, secret: str) -> str:
    body = f"al_{kind}_{public_id}_{secret}"
    return body + _checksum(body)


def parse_key(token: str) -> tuple[KeyKind, str, str]:
    """(kind, public id, secret) of a well-formed key; KeyFormatError otherwise."""
    match = _KEY_RE.match(token)
    if match is None:
        raise KeyFormatError("not an Activelead key")
    kind, public_id, secret, checksum = match.groups()
    if not hmac.compare_digest(_checksum(token[:-6]), checksum):
        raise KeyFormatError("key checksum does not match (mistyped or truncated?)")
    return kind, public_id, secret  # type: ignore[return-value]


def hash_secret(secret: str, pepper: str) -> str:
    return hmac.new(pepper.encode(), secret.encode("ascii"), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What a verified key grants: its project and account."""

    key_id: str
    kind: KeyKind
    project_id: str
    account_id: str


@dataclass(slots=True)
class _Cached:
    secret_hash: str
    info: KeyInfo | None  # None: revoked or unknown
    fetched: float


class KeyStore:
    """Creates, verifies and revokes keys; caches lookups for a few seconds."""

    def __init__(self, pepper: str) -> None:
        self._pepper = pepper
        self._cache: dict[str, _Cached] = {}
        self._last_used: dict[str, int] = {}
        # Full key -> the cache entry it was verified against. A hit skips the checksum and the
        # HMAC; it counts only while that very entry is still the cached, fresh one, so a
        # revocation (forget) or the cache TTL ends it like any other cached lookup.
        self._verified: dict[str, tuple[str, _Cached]] = {}

    def create(
        self,
        conn: Conn,
        *,
        kind: KeyKind,
        project_id: str,
        account_id: str,
        name: str,
    ) -> tuple[str, dict[str, object]]:
        """Insert a key; return (the full key, to show once; its public description)."""
        public_id = base62(12)
        secret = base62(32)
        created = now_ms()
        key = format_key(kind, public_id, secret)
        conn.execute(
            "INSERT INTO api_keys (id, project_id, account_id, kind, name, secret_hash, hint,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                public_id,
                project_id,
                account_id,
                kind,
                name,
                hash_secret(secret, self._pepper),
                key[-4:],
                created,
            ),
        )
        return key, describe_row(conn.execute("SELECT * FROM api_keys WHERE id = ?", (public_id,)).fetchone())

    def create_account_token(
        self, conn: Conn, *, account_id: str, name: str
    ) -> tuple[str, dict[str, object]]:
        """Insert an account token; return (the full token, to show once; its description)."""
        public_id, secret = base62(12), base62(32)
        token = format_key("acct", public_id, secret)
        conn.execute(
            "INSERT INTO account_tokens (id, account_id, name, secret_hash, hint, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (public_id, account_id, name, hash_secret(secret, self._pepper), token[-4:], now_ms()),
        )
        row = conn.execute("SELECT * FROM account_tokens WHERE id = ?", (public_id,)).fetchone()
        return token, describe_token(row)

    def verified(self, token: str) -> KeyInfo | None:
        """The grant of a key verified within the cache TTL (None: verify it the long way)."""
        hit = self._verified.get(token)
        if hit is None:
            return None
        cache_key, entry = hit
        if self._cache.get(cache_key) is not entry or time.monotonic() - entry.fetched >= _CACHE_TTL_S:
            del self._verified[token]
            return None
        return entry.info

    def remember_verified(self, token: str, kind: KeyKind, public_id: str, entry: _Cached) -> None:
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[token] = (f"{kind}:{public_id}", entry)

    def forget(self, public_id: str) -> None:
        for kind in ("live", "edge", "acct"):
            self._cache.pop(f"{kind}:{public_id}", None)

    def clear(self) -> None:
        self._cache.clear()
        self._verified.clear()

    def cached(self, kind: KeyKind, public_id: str) -> _Cached | None:
        entry = self._cache.get(f"{kind}:{public_id}")
        if entry is not None and time.monotonic() - entry.fetched < _CACHE_TTL_S:
            return entry
        return None

    def load(self, conn: Conn, kind: KeyKind, public_id: str) -> _Cached:
        if kind == "acct":
            row = conn.execute(
                "SELECT id, 'acct' AS kind, '' AS project_id, account_id, secret_hash, revoked_at"
                " FROM account_tokens WHERE id = ?",
                (public_id,),
            ).fetchone()
        else:
            row = conn.execute(
                "SELECT id, kind, project_id, account_id, secret_hash, revoked_at FROM api_keys"
                " WHERE id = ? AND kind = ?",
                (public_id, kind),
            ).fetchone()
        if row is None or row["revoked_at"] is not None:
            # Cache misses too, so a flood of well-formed fake keys costs one lookup per id.
            entry = _Cached("", None, time.monotonic())
        else:
            info = KeyInfo(row["id"], row["kind"], row["project_id"], row["account_id"])
            entry = _Cached(row["secret_hash"], info, time.monotonic())
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[f"{kind}:{public_id}"] = entry
        return entry

    def check(self, entry: _Cached, secret: str) -> KeyInfo | None:
        """Constant-time comparison of the presented secret with the stored hash."""
        presented = hash_secret(secret, self._pepper)
        # Compare even for unknown keys so timing does not tell "no such key" from "wrong secret".
        ok = hmac.compare_digest(presented, entry.secret_hash or "0" * 64)
        return entry.info if ok and entry.info is not None else None

    def due_last_used(self, key_id: str) -> bool:
        now = now_ms()
        if now - self._last_used.get(key_id, 0) < _LAST_USED_EVERY_MS:
            return False
        self._last_used[key_id] = now
        return True


def describe_row(row: Row) -> dict[str, object]:
    from control_api.util import rfc3339

    return {
        "id": row["id"],
        "kind": row["kind"],
        "name": row["name"],
        "projectId": row["project_id"],
        "preview": f"al_{row['kind']}_{row['id']}_…{row['hint']}",  # enough to recognise, not use
        "createdAt": rfc3339(row["created_at"]),
        "revokedAt": rfc3339(row["revoked_at"]),
        "lastUsedAt": rfc3339(row["last_used_at"]),
    }


def describe_token(row: Row) -> dict[str, object]:
    from control_api.util import rfc3339

    return {
        "id": row["id"],
        "kind": "acct",
        "name": row["name"],
        "preview": f"al_acct_{row['id']}_…{row['hint']}",
        "createdAt": rfc3339(row["created_at"]),
        "revokedAt": rfc3339(row["revoked_at"]),
        "lastUsedAt": rfc3339(row["last_used_at"]),
    }
