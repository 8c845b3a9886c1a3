"""Project config pulled from the control API (`GET /v1/edge/config`), cached and versioned.

The proxy keeps serving on its last good config whatever happens: the control API being down
(the poll backs off and retries), a config that does not compile (logged, the previous engine
stays), a restart during an outage (the last good document is cached on disk). Polls are cheap:
`If-None-Match` with the last ETag, so an unchanged config costs a 304 and no work.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp

from rules import ConfigError, Engine, ScoringConfig, Thresholds

log = logging.getLogger("activelead.proxy.remote_config")

Mode = Literal["enforce", "monitor", "off"]


@dataclass(frozen=True, slots=True)
class ProjectConfig:
    """What the control API says about the proxy's project, compiled and ready to use."""

    version: int
    project_id: str
    mode: Mode
    thresholds: Thresholds
    engine: Engine
    out_of_credits_policy: Literal["forward", "block"]
    credits_exhausted: bool


class RemoteConfigError(ValueError):
    """An edge config document that cannot be used; the message says why."""


def compile_document(doc: object, base: Engine) -> ProjectConfig:
    """Validate one edge config document and build its engine (shares `base`'s data)."""
    if not isinstance(doc, dict):
        raise RemoteConfigError("edge config: not a JSON object")
    try:
        scoring = dict(doc["scoring"])
        thresholds = Thresholds.model_validate(doc["thresholds"])
        scoring["thresholds"] = thresholds.model_dump()
        flags = doc.get("flags") or {}
        scoring["flags"] = {k: v for k, v in flags.items() if v}
        engine = base.with_config(ScoringConfig.model_validate(scoring), "edge config")
        mode = doc["mode"]
        policy = doc["outOfCreditsPolicy"]
        if mode not in ("enforce", "monitor", "off") or policy not in ("forward", "block"):
            raise RemoteConfigError(f"edge config: bad mode {mode!r} or policy {policy!r}")
        return ProjectConfig(
            version=int(doc["version"]),
            project_id=str(doc["projectId"]),
            mode=mode,
            thresholds=thresholds,
            engine=engine,
            out_of_credits_policy=policy,
            credits_exhausted=bool(doc.get("creditsExhausted", False)),
        )
    except ConfigError as exc:
        raise RemoteConfigError(f"edge config: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise RemoteConfigError(f"edge config: {type(exc).__name__}: {exc}") from exc


class RemoteConfig:
    """Polls the control API and holds the current ProjectConfig (None until the first one)."""

    def __init__(
        self,
        *,
        url: str,
        edge_token: str,
        base: Engine,
        cache_file: Path,
        interval_s: float = 10.0,
        max_backoff_s: float = 300.0,
        timeout_s: float = 10.0,
    ) -> None:
        self._url = url.rstrip("/") + "/v1/edge/config"
        self._headers = {"Authorization": f"Bearer {edge_token}"}
        self._base = base
        self._cache_file = cache_file
        self._interval_s = interval_s
        self._max_backoff_s = max_backoff_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._etag: str | None = None
        self.current: ProjectConfig | None = None
        self.failures = 0

    def load_cache(self) -> None:
        """Start from the last good document on disk, if any (a restart during an outage)."""
        try:
            cached = json.loads(self._cache_file.read_text(encoding="utf-8"))
            self.current = compile_document(cached["document"], self._base)
            self._etag = cached.get("etag")
            log.info("using cached edge config version %d", self.current.version)
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:  # RemoteConfigError included
            log.error("ignoring unusable cached edge config %s: %s", self._cache_file, exc)

    def _save_cache(self, document: dict[str, Any], etag: str | None) -> None:
        self._cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"etag": etag, "document": document}), encoding="utf-8")
        os.replace(tmp, self._cache_file)

    async def poll_once(self, session: aiohttp.ClientSession) -> bool:
        """One poll; True if a new config is now current. Raises on transport/HTTP failure."""
        headers = dict(self._headers)
        if self._etag and self.current is not None:
            headers["If-None-Match"] = self._etag
        async with session.get(self._url, headers=headers, timeout=self._timeout) as resp:
            if resp.status == 304:
                return False
            if resp.status != 200:
                raise RemoteConfigError(f"edge config: HTTP {resp.status}")
            document = await resp.json()
            etag = resp.headers.get("ETag")
        try:
            compiled = compile_document(document, self._base)
        except RemoteConfigError as exc:
            # keep serving on the last good config; remember the ETag so we don't recompile it
            log.error("%s; keeping version %s", exc,
                      self.current.version if self.current else "none (file config)")
            self._etag = etag
            return False
        self.current = compiled
        self._etag = etag
        self._save_cache(document, etag)
        log.info("edge config version %d (credits exhausted: %s)", compiled.version,
                 compiled.credits_exhausted)
        return True

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Poll forever with exponential backoff on failure; cancelled on shutdown."""
        delay = self._interval_s
        while True:
            try:
                await self.poll_once(session)
                self.failures = 0
                delay = self._interval_s
            except (aiohttp.ClientError, TimeoutError, RemoteConfigError, ValueError) as exc:
                self.failures += 1
                delay = min(self._max_backoff_s, max(self._interval_s, delay * 2))
                log.warning("edge config poll failed (%s); retrying in %.0f s", exc, delay)
            await asyncio.sleep(delay)
