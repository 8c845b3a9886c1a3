"""Render tokens: HMAC-SHA256 proof that a form was served by this proxy, and when.

Format: ``v1.<key id>.<render ms>.<nonce>.<signature>`` where the signature covers the site id,
the form action path, the render time, the honeypot field name and the nonce. The key id lets
retired keys keep verifying tokens they signed (rotation grace) without trying every key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

TOKEN_FIELD = "_al_token"  # noqa: S105 (a form field name, not a secret)


class TokenKeyError(Exception):
    """No usable render key (empty secret, unreadable key file)."""


def key_id(secret: bytes) -> str:
    return hashlib.sha256(b"activelead-kid:" + secret).hexdigest()[:8]


def load_or_create_secret(state_dir: Path) -> str:
    """A random key kept in `state_dir/render.key`, shared by every worker and restart."""
    path = state_dir / "render.key"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            tmp = path.with_suffix(f".tmp{secrets.token_hex(4)}")
            tmp.write_text(secrets.token_urlsafe(32))
            tmp.chmod(0o600)
            try:
                path.hardlink_to(tmp)  # atomic; loses the race quietly when another worker won it
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        secret = path.read_text().strip()
    except OSError as exc:
        raise TokenKeyError(f"{path}: {exc.strerror or exc}") from exc
    if len(secret) < 16:
        raise TokenKeyError(f"{path}: key shorter than 16 characters")
    return secret


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """What a submitted token says: its state and, when valid, the render-to-submit time."""

    state: str  # valid | missing | invalid | expired
    elapsed_ms: float | None = None
    nonce: str = ""


MISSING = TokenCheck("missing")  # frozen: one answer for every post without a token
INVALID = TokenCheck("invalid")


class TokenSigner:
    """Signs with the current key, verifies with the current and any retired keys."""

    def __init__(self, secret: str, previous: list[str], ttl_s: int) -> None:
        if not secret:
            raise TokenKeyError("render secret is empty")
        current = secret.encode()
        self._kid = key_id(current)
        self._keys = {key_id(k.encode()): k.encode() for k in previous if k}
        self._keys[self._kid] = current
        self._ttl_ms = ttl_s * 1000

    @staticmethod
    def _mac(key: bytes, site: str, action: str, ms: str, honeypot: str, nonce: str) -> str:
        msg = "\x1f".join((site, action, ms, honeypot, nonce)).encode()
        digest = hmac.new(key, msg, hashlib.sha256).digest()[:18]
        return base64.urlsafe_b64encode(digest).decode()

    def sign(self, site: str, action: str, honeypot: str, now_ms: int | None = None) -> str:
        ms = str(now_ms if now_ms is not None else int(time.time() * 1000))
        nonce = secrets.token_urlsafe(9)
        mac = self._mac(self._keys[self._kid], site, action, ms, honeypot, nonce)
        return f"v1.{self._kid}.{ms}.{nonce}.{mac}"

    def verify(
        self, token: str, site: str, action: str, honeypot: str, now_ms: int | None = None
    ) -> TokenCheck:
        if not token:
            return MISSING
        parts = token.split(".")
        if len(parts) != 5 or parts[0] != "v1" or len(token) > 200:
            return INVALID
        _, kid, ms, nonce, mac = parts
        key = self._keys.get(kid)
        if key is None or not ms.isdigit():
            return INVALID
        expected = self._mac(key, site, action, ms, honeypot, nonce)
        if not hmac.compare_digest(expected, mac):
            return INVALID
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        elapsed = now - int(ms)
        if elapsed > self._ttl_ms:
            return TokenCheck("expired", float(elapsed), nonce)
        if elapsed < -60_000:  # minted in the future beyond clock skew: not ours to believe
            return INVALID
        return TokenCheck("valid", float(max(elapsed, 0)), nonce)
