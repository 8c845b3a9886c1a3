"""Services: the long-lived objects one app shares (DB, keys, counters, scoring, webhooks)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher, Type

from activelead.clientip import ClientIpResolver
from control_api.db import Database
from control_api.keys import KeyStore
from control_api.ratelimit import RateLimiter
from control_api.settings import ControlApiSettings
from control_api.sqltypes import Conn
from control_api.util import now_ms
from rules.counters import Counters

if TYPE_CHECKING:
    from control_api.scoring import ScoringService

log = logging.getLogger("activelead.control_api")


@dataclass(eq=False)
class Services:
    """Built once per app in `create_app`'s cleanup contexts; handlers reach it via SERVICES."""

    settings: ControlApiSettings
    db: Database
    counters: Counters
    keys: KeyStore = field(init=False)
    client_ips: ClientIpResolver = field(init=False)
    limiter: RateLimiter = field(init=False)
    hasher: PasswordHasher = field(init=False)
    scoring: ScoringService | None = None
    webhook_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    project_cache: dict[str, tuple[float, Any]] = field(default_factory=dict)
    # argon2 hash of a random password, made at start-up (prepare()): sign-in checks unknown
    # accounts against it so they take as long as real ones.
    dummy_hash: str = ""
    _touch: set[tuple[str, str]] = field(default_factory=set)
    _touch_task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.keys = KeyStore(self.settings.key_pepper)
        self.client_ips = ClientIpResolver(self.settings.trusted_proxies, self.settings.client_ip_headers)
        self.limiter = RateLimiter(self.counters)
        self.hasher = make_hasher(self.settings)

    async def prepare(self) -> None:
        """Start-up work that must not wait for the first request (argon2 is tens of ms)."""
        self.dummy_hash = await asyncio.get_running_loop().run_in_executor(
            None, self.hasher.hash, secrets.token_urlsafe(16)
        )

    def touch_key(self, kind: str, key_id: str) -> None:
        """Record last-used for `key_id` soon, off the request path and batched."""
        self._touch.add((kind, key_id))
        if self._touch_task is None or self._touch_task.done():
            self._touch_task = asyncio.get_running_loop().create_task(self._flush_touch())

    async def _flush_touch(self) -> None:
        ids, self._touch = sorted(self._touch), set()
        stamp = now_ms()
        keys = [(stamp, i) for kind, i in ids if kind != "acct"]
        tokens = [(stamp, i) for kind, i in ids if kind == "acct"]

        def record(conn: Conn) -> None:
            conn.executemany("UPDATE api_keys SET last_used_at = ? WHERE id = ?", keys)
            conn.executemany("UPDATE account_tokens SET last_used_at = ? WHERE id = ?", tokens)

        try:
            await self.db.write(record)
        except Exception:
            log.exception("could not record key last-used times")

    async def drain(self) -> None:
        if self._touch_task is not None:
            await self._touch_task


def make_hasher(settings: ControlApiSettings) -> PasswordHasher:
    return PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
        type=Type.ID,
    )
