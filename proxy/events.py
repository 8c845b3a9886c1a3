"""Event reporting: a durable local spool shipped in idempotent batches, or JSON-line logs.

Spool layout (one directory per worker, so workers never share a file):

    <state_dir>/spool/w<N>/<batch id>.open    the segment being appended to
    <state_dir>/spool/w<N>/<batch id>.ready   sealed; one segment = one batch = one upload

Each event is written to the kernel at once (a crash of the process loses nothing) and fsync'd
in groups every `spool_fsync_interval_s` (a power cut loses at most that much). A sealed segment
is uploaded with its file name as batch id and Idempotency-Key, and deleted only after a 2xx, so
a retry after any failure, or after a restart, sends the very same batch id again and the control
API counts it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from proxy import metrics

log = logging.getLogger("activelead.proxy.events")
event_log = logging.getLogger("activelead.events")


def log_events_to_stdout() -> None:
    """Standalone event lines go to stdout bare, one JSON object per line, for log shippers,
    whatever the host process does with its other logging (mitmdump -q silences INFO)."""
    if any(getattr(h, "activelead_events", False) for h in event_log.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.activelead_events = True  # type: ignore[attr-defined]
    event_log.addHandler(handler)
    event_log.propagate = False
    event_log.setLevel(logging.INFO)


class LogReporter:
    """Standalone mode: every event is one JSON line on the `activelead.events` logger."""

    def emit(self, event: Mapping[str, Any]) -> None:
        event_log.info(orjson.dumps(event).decode())

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class Spool:
    """Append-only JSON-lines segments; no asyncio in here, so it is easy to reason about."""

    def __init__(self, directory: Path, max_events: int) -> None:
        self.dir = directory
        self.max_events = max_events
        self.dir.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None
        self._path: Path | None = None
        self._count = 0
        self._dirty = False
        self._unsynced: list[int] = []  # descriptors of sealed segments awaiting their fsync
        self._lines: dict[str, int] = {}  # events per sealed segment, counted once (depth())
        self.recover()

    def recover(self) -> None:
        """Seal segments left open by a previous run (crash or kill), so they get shipped."""
        for path in sorted(self.dir.glob("*.open")):
            if path.stat().st_size == 0:
                path.unlink()
            else:
                path.rename(path.with_suffix(".ready"))

    def adopt(self, others: list[Path]) -> int:
        """Take over segments of worker directories no running worker owns (fewer workers now)."""
        moved = 0
        for other in others:
            for path in sorted([*other.glob("*.ready"), *other.glob("*.open")]):
                path.rename(self.dir / (path.stem + ".ready"))
                moved += 1
        return moved

    def append(self, event: Mapping[str, Any]) -> None:
        line = orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
        if self._fd is None:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            self._path = self.dir / f"b_{stamp}_{secrets.token_hex(6)}.open"
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.write(self._fd, line)  # one write per line: the kernel has it even if we crash now
        self._count += 1
        self._dirty = True
        if self._count >= self.max_events:
            self.seal()

    def sync(self) -> None:
        """fsync what was written: the open segment and segments sealed since the last call.
        Runs in a thread (the fsync loop) so that no fsync ever stalls the event loop; the
        loop's appends and seals may go on meanwhile."""
        pending, self._unsynced = self._unsynced, []
        fd = self._fd
        if fd is not None and self._dirty:
            self._dirty = False
            try:
                dup = os.dup(fd)  # our own handle: a concurrent seal() cannot close it under us
            except OSError:
                dup = -1  # sealed meanwhile: it is in the next call's `pending`
            if dup >= 0:
                try:
                    os.fsync(dup)
                finally:
                    os.close(dup)
        for sealed_fd in pending:
            try:
                os.fsync(sealed_fd)  # fine even if the segment was shipped and unlinked already
            finally:
                os.close(sealed_fd)
        if pending:
            dir_fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # the renames to .ready must survive a power cut too
            finally:
                os.close(dir_fd)

    def seal(self) -> None:
        """Close the segment for appends and mark it ready to ship. Its fsync is left to the
        next sync(): a power cut loses at most `spool_fsync_interval_s` either way (a torn tail
        is skipped on reading), and the event loop never waits for the disk."""
        if self._fd is None or self._path is None:
            return
        fd, path = self._fd, self._path
        self._fd, self._path, self._count, self._dirty = None, None, 0, False
        path.rename(path.with_suffix(".ready"))
        self._unsynced.append(fd)

    @property
    def open_count(self) -> int:
        return self._count

    def ready(self) -> list[Path]:
        """Sealed segments, oldest first (names sort by time). Listed with os.listdir: a long
        control API outage leaves thousands here, and Path.glob took 36 ms for 2,000 of them,
        on the event loop, at every upload attempt."""
        return [self.dir / name for name in self.ready_names()]

    def ready_names(self) -> list[str]:
        """ready(), as file names (no Path built for the thousands an outage leaves)."""
        return sorted(name for name in os.listdir(self.dir) if name.endswith(".ready"))

    def depth(self) -> int:
        """Events not yet accepted upstream. A sealed segment never changes, so its events are
        counted once: the health endpoint asks on every probe, and reading a backlog of
        thousands of segments each time froze the worker for seconds."""
        lines = self._lines
        names = set(self.ready_names())
        for gone in lines.keys() - names:
            del lines[gone]
        for name in names - lines.keys():
            with contextlib.suppress(OSError):
                data = (self.dir / name).read_bytes()
                lines[name] = data.count(b"\n") + (not data.endswith(b"\n") and bool(data))
        return self._count + sum(lines.values())

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in Spool.read_lines(path)]

    @staticmethod
    def read_lines(path: Path) -> list[bytes]:
        """The segment's events as their JSON lines, each checked to parse. Shipping sends
        these bytes as they are: a batch of parsed events, alive across the upload, was
        thousands of dicts and lists that the garbage collector promoted into its oldest
        generation, and full collections of 35-40 ms stalled the loop every few seconds under
        load; bytes are not tracked at all."""
        lines = []
        for raw in path.read_bytes().splitlines():
            try:
                orjson.loads(raw)  # parsed and dropped at once: nothing survives to be tracked
            except ValueError:  # a line torn by a power cut: the rest of the batch still ships
                log.error("skipping a corrupt line in %s", path.name)
                continue
            lines.append(raw)
        return lines


class SpoolReporter:
    """Writes events to the spool at once; a background task ships sealed segments."""

    def __init__(
        self,
        spool: Spool,
        *,
        url: str,
        edge_token: str,
        fsync_interval_s: float,
        flush_interval_s: float,
        timeout_s: float,
        max_backoff_s: float,
    ) -> None:
        self.spool = spool
        self._endpoint = url.rstrip("/") + "/v1/edge/events"
        self._auth = f"Bearer {edge_token}"
        self._fsync_interval_s = fsync_interval_s
        self._flush_interval_s = flush_interval_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_backoff_s = max_backoff_s
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()
        self.shipped = 0

    def emit(self, event: Mapping[str, Any]) -> None:
        self.spool.append(event)
        metrics.TALLY.add(metrics.SPOOL_DEPTH)  # batched like the request counters (a lock each)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        metrics.SPOOL_DEPTH.set(self.spool.depth())
        self._tasks = [
            asyncio.create_task(self._fsync_loop(), name="spool-fsync"),
            asyncio.create_task(self._ship_loop(), name="spool-ship"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self.spool.seal()
        self.spool.sync()  # shutting down: the loop may wait for the disk now
        with contextlib.suppress(Exception):  # best effort; whatever is left ships next start
            async with asyncio.timeout(2):
                await self.ship_ready()
        if self._session is not None:
            await self._session.close()

    async def _fsync_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._fsync_interval_s)
            try:
                await loop.run_in_executor(None, self.spool.sync)
            except OSError as exc:  # disk trouble: say so loudly, keep trying
                log.error("spool fsync failed: %s", exc)

    async def _ship_loop(self) -> None:
        backoff = self._flush_interval_s
        while True:
            try:
                async with asyncio.timeout(backoff):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if self.spool.open_count:
                self.spool.seal()
            try:
                await self.ship_ready()
                backoff = self._flush_interval_s
            except Exception as exc:  # control API down or refusing: keep the spool, back off
                metrics.SHIP_FAILURES.inc()
                backoff = min(backoff * 2, self._max_backoff_s)
                log.warning("event upload failed (%s); retrying in %.1fs", exc, backoff)

    def flush_soon(self) -> None:
        self._wake.set()

    async def ship_ready(self) -> None:
        """Upload every sealed segment in order. A batch the control API can never take (a 4xx
        other than auth or rate limit) is split when too big, else dead-lettered, so it never
        holds up the batches behind it; anything retryable stops the round (order is kept)."""
        assert self._session is not None
        while await self._ship_round():
            pass  # a batch was split: its halves sort where it stood, so list again

    async def _ship_round(self) -> bool:
        """Ship the sealed segments in order; True when a split asks for a fresh listing."""
        assert self._session is not None
        for name in self.spool.ready_names():
            path = self.spool.dir / name
            events = Spool.read_lines(path)
            batch_id = path.stem
            if events:
                started = time.monotonic()
                async with self._session.post(
                    self._endpoint,
                    data=b"".join((b'{"batchId":', orjson.dumps(batch_id), b',"events":[',
                                   b",".join(events), b"]}")),
                    headers={"Authorization": self._auth, "Idempotency-Key": batch_id,
                             "Content-Type": "application/json"},
                ) as resp:
                    status, text = resp.status, await resp.text()
                if not 200 <= status < 300:
                    if status in RETRYABLE or status >= 500 or status < 400:
                        raise ShipError(f"HTTP {status} for batch {batch_id}: {text[:200]}")
                    split = status in (400, 413) and len(events) > 1 and _too_big(status, text)
                    if split:
                        self._split(path, events)
                    else:
                        self._dead_letter(path, batch_id, events, [
                            {"index": i, "status": status, "error": text[:1000]}
                            for i in range(len(events))
                        ])
                    path.unlink()
                    metrics.SPOOL_DEPTH.dec(len(events))
                    if split:
                        return True
                    continue
                try:
                    answer = orjson.loads(text)
                except orjson.JSONDecodeError:
                    answer = None
                refused = answer.get("rejected") if isinstance(answer, dict) else None
                if refused:
                    self._dead_letter(path, batch_id, events, refused)
                log.info("shipped batch %s (%d events, %.0f ms)", batch_id, len(events),
                         (time.monotonic() - started) * 1000)
            path.unlink()
            self.shipped += len(events)
            metrics.SPOOL_DEPTH.dec(len(events))
        return False

    def _split(self, path: Path, events: list[bytes]) -> None:
        """Two halves under names derived from the batch id: a crash before the original is
        removed rewrites the same two files, so no event is ever sent under two batch ids."""
        half = len(events) // 2
        for suffix, part in (("a", events[:half]), ("b", events[half:])):
            target = path.with_name(f"{path.stem}-{suffix}.ready")
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(b"".join(line + b"\n" for line in part))
            os.replace(tmp, target)
        metrics.SPOOL_DEPTH.inc(len(events))  # the caller takes the original's count off
        log.warning("batch %s too large for the control API; split in two", path.stem)

    def _dead_letter(self, path: Path, batch_id: str, events: list[bytes],
                     refused: list[Any]) -> None:
        """Events the control API refused for good (inside a 2xx answer, e.g. a project mismatch,
        or a whole batch answered 4xx): retrying cannot help, so keep them in `rejected/` beside
        the spool and say so loudly."""
        target = path.parent.parent / "rejected"
        target.mkdir(parents=True, exist_ok=True)
        with (target / f"{batch_id}.jsonl").open("a", encoding="utf-8") as fh:
            for item in refused:
                index = item.get("index") if isinstance(item, dict) else None
                event = (orjson.loads(events[index])
                         if isinstance(index, int) and 0 <= index < len(events) else None)
                fh.write(json.dumps({"refused": item, "event": event}) + "\n")
        metrics.DEAD_LETTERED.inc(len(refused))
        log.error("control API refused %d event(s) of batch %s (kept in %s): %s", len(refused),
                  batch_id, target, json.dumps(refused)[:300])


# Answers that say "not now" rather than "never": the batch stays and is sent again later.
RETRYABLE = frozenset({401, 403, 404, 408, 409, 425, 429})


def _too_big(status: int, text: str) -> bool:
    """413, or the control API's 400 `invalid_batch` that objects to the number of events."""
    if status == 413:
        return True
    try:
        error = orjson.loads(text)["error"]
        return bool(error["code"] == "invalid_batch" and "events" in error["details"])
    except (orjson.JSONDecodeError, KeyError, TypeError):  # not the control API's error shape
        return False


class ShipError(Exception):
    """The control API did not accept a batch; it stays in the spool."""


Reporter = LogReporter | SpoolReporter
