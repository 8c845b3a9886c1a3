"""The SQLite database layer: the WAL stays bounded under writes that never pause."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from control_api import db as db_module
from control_api.db import Database
from control_api.sqltypes import Conn


def wal_size(path: Path) -> int:
    return Path(f"{path}-wal").stat().st_size


PAD = json.dumps({"pad": "x" * 3000})


def add_padded_row(conn: Conn) -> None:
    """A ~3 KB row: a few of them fill WAL frames quickly."""
    conn.execute(
        "INSERT INTO audit_log (actor, action, details, created_at) VALUES ('test', 'pad', ?, 0)",
        (PAD,),
    )


async def test_wal_is_rewound_under_steady_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a rewind, SQLite's WAL only grows while writes keep coming (each checkpoint
    finishes with newer frames already behind it). Small limits here so a second of writes
    shows it: several MB written, the WAL file no bigger than a few checkpoint periods' worth."""
    monkeypatch.setattr(db_module, "CHECKPOINT_EVERY_S", 0.02)
    monkeypatch.setattr(db_module, "WAL_RESTART_FRAMES", 64)
    # A rewind that could not finish (a slow fsync on a busy machine) is retried after 30 s in
    # production: here that would leave the WAL growing for the rest of the test.
    monkeypatch.setattr(db_module, "RESTART_RETRY_S", 0.1)
    path = tmp_path / "wal.sqlite3"
    db = Database(str(path))
    await db.open()
    written = 0
    biggest_wal = 0
    deadline = time.monotonic() + 1.5
    try:
        while time.monotonic() < deadline or db.wal_restarts < 2:
            await asyncio.gather(*(db.write(add_padded_row) for _ in range(8)))  # never a pause between
            written += 8
            biggest_wal = max(biggest_wal, wal_size(path))
            assert time.monotonic() < deadline + 10, "the WAL was never rewound"
        count = await db.read(lambda c: c.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0])
    finally:
        restarts = db.wal_restarts
        await db.close()
    assert count == written
    assert written * 3000 > 4 * 1024 * 1024  # several MB went through the WAL
    assert restarts >= 2
    # Between rewinds it grows by what is written in a few checkpoint periods, not by everything.
    assert biggest_wal < written * 3000 / 2, (biggest_wal, written)


def add_audit_row(action: str) -> Callable[[Conn], None]:
    def add(conn: Conn) -> None:
        conn.execute(
            "INSERT INTO audit_log (actor, action, details, created_at) VALUES ('test', ?, '{}', 0)",
            (action,),
        )

    return add


def count_rows(conn: Conn) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM audit_log WHERE actor = 'test'").fetchone()[0])


@contextlib.asynccontextmanager
async def database_and_another(path: Path) -> AsyncIterator[tuple[Database, sqlite3.Connection]]:
    """Our Database and a second, plain connection to the same file (another process's)."""
    db = Database(str(path))
    await db.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        yield db, other
    finally:
        other.close()
        await db.close()


class LoopLag:
    """The longest the event loop went without running a 1-ms ticker while this was active."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.001)
            now = time.monotonic()
            self.worst = max(self.worst, now - last)
            last = now

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_a_write_waits_for_another_process_lock_without_stopping_the_loop(tmp_path: Path) -> None:
    """Another process (a second worker, the credits CLI) holds the write lock: our writes wait
    on the loop, not inside SQLite, reads go on meanwhile, and everything lands once it is free."""
    async with database_and_another(tmp_path / "busy.sqlite3") as (db, other):
        other.execute("BEGIN IMMEDIATE")
        other.execute(
            "INSERT INTO audit_log (actor, action, details, created_at) VALUES ('test', 'other', '{}', 0)"
        )
        with LoopLag() as lag:
            writes = [asyncio.ensure_future(db.write(add_audit_row(f"w{i}"))) for i in range(5)]
            await asyncio.sleep(0.2)
            assert not any(w.done() for w in writes)  # the lock is taken: nothing committed
            assert await db.read(count_rows) == 0  # reads are not held up (WAL)
            later = asyncio.ensure_future(db.write(add_audit_row("later")))  # joins the wait
            await asyncio.sleep(0.05)
            other.execute("COMMIT")
            await asyncio.wait_for(asyncio.gather(*writes, later), 2)
        # SQLite's own busy handler would block it for all of the 250 ms (slack: a busy box)
        assert lag.worst < 0.15, lag.worst
        assert db.busy_waits > 3
        assert await db.read(count_rows) == 7


async def test_a_lock_held_too_long_fails_the_units_and_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "BUSY_TIMEOUT_S", 0.1)
    async with database_and_another(tmp_path / "stuck.sqlite3") as (db, other):
        other.execute("BEGIN IMMEDIATE")
        results = await asyncio.gather(
            db.write(add_audit_row("a")), db.write(add_audit_row("b")), return_exceptions=True
        )
        assert all(isinstance(r, db_module.DatabaseBusy) for r in results), results
        assert "locked by another process" in str(results[0])
        other.execute("ROLLBACK")
        await db.write(add_audit_row("after"))  # the database works again at once
        assert await db.read(count_rows) == 1


async def test_a_reader_that_keeps_the_wal_does_not_stall_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup or an operator's shell reading for a long time pins the WAL: the rewind (which
    holds writes while it waits for readers) gives up after RESTART_BUSY_MS instead of holding
    them for the 5-s busy timeout, tries again later, and rewinds once the reader is gone."""
    monkeypatch.setattr(db_module, "CHECKPOINT_EVERY_S", 0.02)
    monkeypatch.setattr(db_module, "WAL_RESTART_FRAMES", 64)
    monkeypatch.setattr(db_module, "RESTART_RETRY_S", 0.3)

    async def write_for(db: Database, seconds: float) -> float:
        worst = 0.0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.monotonic()
            await asyncio.gather(*(db.write(add_padded_row) for _ in range(8)))
            worst = max(worst, time.monotonic() - started)
        return worst

    async with database_and_another(tmp_path / "pinned.sqlite3") as (db, reader):
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM audit_log").fetchone()  # holds its snapshot
        worst = await write_for(db, 1.5)
        assert db.wal_restarts == 0  # nothing can rewind under the reader
        assert worst < 1.0, worst  # each try held writes ~0.1 s, not the 5-s busy timeout
        reader.execute("COMMIT")
        deadline = time.monotonic() + 10
        while db.wal_restarts == 0:
            assert time.monotonic() < deadline, "no rewind after the reader left"
            await write_for(db, 0.2)
