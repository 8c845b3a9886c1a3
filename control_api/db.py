"""The database: one SQLite connection used from the event loop; each unit of work runs whole.

A unit of work is a plain function `fn(conn) -> T` run start to finish inside one transaction,
so no other coroutine's statements can interleave with it (with aiosqlite every statement is its
own await, and two coroutines sharing a connection can interleave inside one transaction).
Credit debits are atomic by construction.

Why on the event loop and not on a DB thread: a unit is ~0.1 ms of SQLite work. Handed to a
thread, every sqlite call releases the GIL and must win it back from the busy event loop; under
load that contention cost more than the work (measured: 980 vs 1380 ingest req/s, p99 148 vs
57 ms on the same box). What could block the loop for long is kept off it: commits never fsync
(WAL with synchronous=NORMAL), automatic checkpoints are off on this connection and a background
thread checkpoints through its own connection, and big jobs (edge batches, exports, purges) are
cut into short transactions by their callers.

Group commit: writes issued in the same event-loop tick run as one transaction, each inside its
own SAVEPOINT, so one unit failing (a 402, a constraint) rolls back only itself.

Several processes on one SQLite file (`workers: N`, or the `credits grant` CLI beside the
server): SQLite lets one write transaction run at a time. A process that finds the write lock
taken must not wait inside SQLite, whose busy handler sleeps with the event loop stopped, so
the serving connection has no busy timeout: a unit that meets SQLITE_BUSY at BEGIN is retried
from the loop after a short asyncio sleep (more units join its batch meanwhile), for up to
BUSY_TIMEOUT_S. Debits stay atomic because each unit runs inside the lock. Past one machine,
give `db` a postgresql:// URL and the same units run on a worker thread over a psycopg
connection (control_api.pg), with row locks keeping debits atomic across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from control_api.migrations import MigrationError, migrate
from control_api.sqltypes import Conn

T = TypeVar("T")
log = logging.getLogger("activelead.control_api.db")

CHECKPOINT_EVERY_S = 1.0
# Past this many frames (4 KiB each, so 256 MiB) the WAL is rewound to its start (see
# _restart_wal); the file keeps its size and is written over (cutting it back would be a big
# ftruncate on the event loop), so this bounds the WAL's disk space too. Big on purpose: the
# rewind holds writes for a small fsync (~10 ms on the shared 2-core box), so at a steady 1500
# ingest req/s it happens about every 9 s, and at loads with pauses between writes never (the
# WAL then rewinds by itself).
WAL_RESTART_FRAMES = 65536
WAL_HOLD_TIMEOUT_S = 2.0
RESTART_BUSY_MS = 100  # longest a rewind waits for other connections (holding writes meanwhile)
RESTART_RETRY_S = 30.0  # after a rewind could not finish
# How long a unit waits for another process's write lock (retried from the loop, see above),
# and the first and longest pause between tries: the lock is usually held for a batch (< 1 ms),
# a WAL rewind (~10 ms) or an operator's short CLI transaction.
BUSY_TIMEOUT_S = 5.0
BUSY_FIRST_PAUSE_S = 0.0002
BUSY_LONGEST_PAUSE_S = 0.005


class DatabaseBusy(Exception):
    """Another process held the database's write lock for longer than BUSY_TIMEOUT_S."""


def is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY (and its extended codes): another connection holds the lock we need."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.OperationalError) and code is not None and code & 0xFF == 5


class DatabaseError(Exception):
    """The database cannot be opened or migrated."""


def connect(path: str) -> sqlite3.Connection:
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: we issue BEGIN/COMMIT ourselves so a unit of work is one
    # transaction, not whatever the sqlite3 module's implicit rules would make of it.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


class Database:
    """All work on one connection; async methods group-commit it.

    SQLite: units run on the event loop (see the module docstring). PostgreSQL (`db` is a
    `postgresql://` URL): units run on one worker thread, because every statement waits on the
    network; row locks (`SELECT ... FOR UPDATE`) keep debits atomic across processes.
    """

    def __init__(self, path: str, *, checkpoint: bool = True) -> None:
        """`checkpoint`: run the background checkpointer (one process per file does; the other
        workers of a server leave it to worker 0)."""
        self.path = path
        self._checkpoint = checkpoint
        self.postgres = is_postgres(path)
        self._conn: Conn | None = None
        self._pending: list[tuple[Callable[[Conn], Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._checkpointer: threading.Thread | None = None
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hold: asyncio.Future[None] | None = None  # while set, no write transaction starts
        self.wal_restarts = 0  # WAL rewinds done (tests, diagnostics)
        self.busy_waits = 0  # pauses because another process held the lock (tests, diagnostics)
        self._executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="control-api-pg") if self.postgres else None
        )

    def _connection(self) -> Conn:
        if self._conn is None:
            raise DatabaseError("database is not open")
        return self._conn

    def _open_sync(self) -> Conn:
        if not self.postgres:
            return connect(self.path)
        from control_api.pg import PgConnection

        conn = PgConnection(self.path)
        try:
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    async def open(self) -> None:
        """Open (and migrate) the database; start the background checkpointer."""
        try:
            self._conn = await self._run(self._open_sync)
        except Exception as exc:
            if isinstance(exc, DatabaseError | MigrationError):
                raise
            raise DatabaseError(f"{_redact(self.path)}: {exc}") from exc
        if self.postgres:
            return
        # Never sleep inside SQLite on the loop: a busy lock is retried from the loop (_begin).
        self._connection().execute("PRAGMA busy_timeout=0")
        if self.path != ":memory:":
            # Checkpoints copy the WAL into the database file and fsync: never on the loop.
            self._connection().execute("PRAGMA wal_autocheckpoint=0")
            if not self._checkpoint:
                return
            self._loop = asyncio.get_running_loop()
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, name="sqlite-checkpoint", daemon=True
            )
            self._checkpointer.start()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _call(self, fn: Callable[[Conn], T], write: bool, begun: bool = False) -> T:
        """Run `fn` in one transaction; `begun`: the caller already opened it (`_begin`)."""
        conn = self._connection()
        if not begun:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def _begin(self, write: bool) -> None:
        """BEGIN on the SQLite connection, waiting on the loop while another process holds the
        lock. Returns with the transaction open; the caller runs its units without awaiting."""
        conn = self._connection()
        statement = "BEGIN IMMEDIATE" if write else "BEGIN"
        wait = _BusyWait(self)
        while True:
            try:
                conn.execute(statement)
                return
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                await wait(exc)

    async def read(self, fn: Callable[[Conn], T]) -> T:
        """Run `fn` in a read transaction (a consistent snapshot)."""
        if self.postgres:
            return await self._run(self._call, fn, False)
        wait = _BusyWait(self)
        while True:
            await self._begin(False)
            try:
                return self._call(fn, False, begun=True)
            except sqlite3.OperationalError as exc:
                # A reader meets SQLITE_BUSY only in rare moments (another process recovering
                # the WAL): the snapshot is gone, so the whole read runs again, for a while.
                if not is_busy(exc):
                    raise
                await wait(exc)

    async def write(self, fn: Callable[[Conn], T]) -> T:
        """Run `fn` atomically (all of it commits, or none of it); writes of the same tick share
        one transaction (group commit), each in its own savepoint."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((fn, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let every request of this tick queue its unit
        while self._pending:
            while self._hold is not None:  # the checkpointer is finishing a WAL rewind (~ms)
                await self._hold
            batch, self._pending = self._pending, []
            try:
                if self.postgres:
                    outcomes = await self._run(self._run_batch, [fn for fn, _ in batch])
                else:
                    await self._begin(True)
                    if self._pending:  # units that came while the lock was busy join in
                        batch, self._pending = batch + self._pending, []
                    outcomes = self._run_batch([fn for fn, _ in batch], begun=True)
            except Exception as exc:  # BEGIN/COMMIT failed: nothing of the batch is stored
                outcomes = [(False, exc)] * len(batch)
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():  # the caller went away; its unit committed regardless
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _run_batch(self, fns: list[Callable[[Conn], Any]], begun: bool = False) -> list[tuple[bool, Any]]:
        """Run the units in one write transaction; `begun`: the caller already opened it."""
        if len(fns) == 1:  # alone in its transaction: no savepoint needed (2 statements fewer)
            try:
                return [(True, self._call(fns[0], True, begun))]
            except Exception as exc:
                return [(False, exc)]
        conn = self._connection()
        if not begun:
            conn.execute("BEGIN IMMEDIATE")
        out: list[tuple[bool, Any]] = []
        try:
            for fn in fns:
                conn.execute("SAVEPOINT unit")
                try:
                    value = fn(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO SAVEPOINT unit")
                    conn.execute("RELEASE SAVEPOINT unit")
                    out.append((False, exc))
                    continue
                conn.execute("RELEASE SAVEPOINT unit")
                out.append((True, value))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return out

    def _checkpoint_loop(self) -> None:
        """Thread body: checkpoint through a connection of its own until asked to stop."""
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            next_restart = 0.0
            while not self._stop.wait(CHECKPOINT_EVERY_S):
                try:
                    # PASSIVE: copy what it can without waiting for (or blocking) the writer.
                    busy, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    due = not busy and frames >= WAL_RESTART_FRAMES and time.monotonic() >= next_restart
                    if due and not self._restart_wal(conn):
                        # A reader keeps the WAL (a backup, an operator's shell): each try
                        # pauses writes for up to RESTART_BUSY_MS, so not every second.
                        next_restart = time.monotonic() + RESTART_RETRY_S
                except (sqlite3.Error, OSError) as exc:
                    log.warning("WAL checkpoint failed (will retry): %s", exc)
        finally:
            conn.close()

    def _restart_wal(self, conn: sqlite3.Connection) -> bool:
        """Let the next write rewind the WAL to its start.

        SQLite rewinds the WAL only when a write begins while every frame in it has been copied
        into the database. Under steady writes that never happens: frames keep arriving while a
        checkpoint copies, so the WAL grew without bound (340 MB after 10 s at 1500 ingest
        req/s, and every page lookup walks its whole index). So, once it is big: copy again
        (what came in meanwhile, still without stopping anything), then hold the event loop's
        writes — not its reads or requests — while the last frames are copied and synced (and
        other processes' writes through the RESTART checkpoint's lock).
        """
        loop = self._loop
        if loop is None:
            return False
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        # Under steady writes no PASSIVE checkpoint finishes, so none has synced the database
        # file; and the write that rewinds the WAL syncs the WAL file, on the loop. Flush both
        # now, unheld, or those syncs would write out everything since (100-180 ms measured)
        # instead of a few pages.
        for path in (self.path, f"{self.path}-wal"):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        held = threading.Event()

        def hold() -> None:  # on the loop: between two callbacks, so no write is running
            if self._hold is None:
                self._hold = loop.create_future()
            held.set()

        try:
            loop.call_soon_threadsafe(hold)
        except RuntimeError:  # the loop is closed: the app is stopping
            return False
        try:
            if not held.wait(WAL_HOLD_TIMEOUT_S):
                log.warning("writes were not paused within %s s; WAL not rewound", WAL_HOLD_TIMEOUT_S)
                return False
            # RESTART, not PASSIVE: it also takes the write lock from other processes'
            # writers (workers of this server; they retry from their loops, see _begin) and
            # makes the next write rewind the WAL. It holds that lock while it waits for
            # readers, so it waits briefly: a reader that stays (a backup) just means no
            # rewind this time.
            conn.execute(f"PRAGMA busy_timeout={RESTART_BUSY_MS}")
            try:
                busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            finally:
                conn.execute("PRAGMA busy_timeout=5000")
            if not busy and frames == copied:
                self.wal_restarts += 1
                return True
            return False
        finally:
            # Queued after hold(), so it runs after it even if hold() came late.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._release_writes)

    def _release_writes(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None and not hold.done():
            hold.set_result(None)

    def run_sync(self, fn: Callable[[Conn], T]) -> T:
        """For the CLI (no event loop): open if needed and run `fn` in a write transaction."""
        if self._conn is None:
            self._conn = self._open_sync()
        return self._call(fn, True)

    async def close(self) -> None:
        if self._flusher is not None:
            await self._flusher
        if self._executor is not None:
            await self._run(self._close_connection)
        self.close_sync()

    def close_sync(self) -> None:
        if self._checkpointer is not None:
            self._stop.set()
            self._checkpointer.join(timeout=30)
            self._checkpointer = None
        self._close_connection()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if isinstance(conn, sqlite3.Connection):
            with contextlib.suppress(sqlite3.Error):
                # A final checkpoint so the file is complete on its own after a clean stop.
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
        elif conn is not None:
            from control_api.pg import PgConnection

            if isinstance(conn, PgConnection):
                conn.close()


class _BusyWait:
    """The pauses between tries while another process holds the lock: 0.2 ms doubling to 5 ms,
    on the event loop, until BUSY_TIMEOUT_S is over."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pause = BUSY_FIRST_PAUSE_S
        self._deadline = time.monotonic() + BUSY_TIMEOUT_S

    async def __call__(self, busy: BaseException) -> None:
        if time.monotonic() >= self._deadline:
            raise DatabaseBusy(
                f"the database stayed locked by another process for {BUSY_TIMEOUT_S:g} s"
            ) from busy
        self._db.busy_waits += 1
        await asyncio.sleep(self._pause)
        self._pause = min(self._pause * 2, BUSY_LONGEST_PAUSE_S)


def migrate_once(path: str) -> None:
    """Open the database (migrating its schema) and close it: what a supervisor does before its
    workers open the same database at once."""
    db = Database(path, checkpoint=False)
    try:
        db.run_sync(lambda conn: None)
    finally:
        db.close_sync()


def _redact(url: str) -> str:
    """The URL without its password, for error messages and logs."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)
