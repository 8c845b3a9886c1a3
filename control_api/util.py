"""Small shared helpers: ids, clocks, RFC 3339 time."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def base62(n_chars: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n_chars))


def new_id(prefix: str) -> str:
    """A random id with a readable type prefix (`prj_…`, `acc_…`); ~95 bits."""
    return f"{prefix}_{base62(16)}"


def now_ms() -> int:
    return int(time.time() * 1000)


def rfc3339(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(value: str) -> int:
    """Milliseconds since the epoch; naive times are refused (ValueError) rather than guessed."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("time zone offset missing")
    return int(parsed.timestamp() * 1000)
