"""Schema migrations on SQLite and on a real PostgreSQL: in-place upgrades keep every row, a
failed migration leaves nothing behind, a newer database is refused, concurrent starts migrate once."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from control_api import migrations
from control_api.app import create_app
from control_api.db import Database
from control_api.migrations import MIGRATIONS, MigrationError, migrate
from control_api.sqltypes import Conn
from tests.control_api.conftest import make_settings, shared_engine, sign_up
from tests.control_api.test_keys import GOOD

# What a later release might append: a column with a default on a table that has rows, and an index.
FUTURE = [
    *MIGRATIONS,
    (
        MIGRATIONS[-1][0] + 1,
        "test: event notes",
        "ALTER TABLE events ADD COLUMN note TEXT NOT NULL DEFAULT 'none'",
    ),
    (
        MIGRATIONS[-1][0] + 2,
        "test: index event notes",
        "CREATE INDEX events_note ON events(project_id, note)",
    ),
]


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "control.sqlite3")
    url: str = request.getfixturevalue("pg_url")
    return url


def versions(url: str) -> list[int]:
    db = Database(url)
    try:
        return db.run_sync(
            lambda c: [int(r[0]) for r in c.execute("SELECT version FROM schema_migrations ORDER BY version")]
        )
    finally:
        db.close_sync()


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    db = Database(url)
    try:
        return db.run_sync(lambda c: [tuple(r) for r in c.execute(sql).fetchall()])
    finally:
        db.close_sync()


async def test_database_of_this_release_upgrades_in_place_with_every_row_intact(
    aiohttp_client: Any, tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, db=db_url)
    first: TestClient[Any, Any] = await aiohttp_client(create_app(settings, engine=shared_engine()))
    owner = await sign_up(first)
    pid = (await owner.project())["id"]
    key = await owner.key(pid)
    auth = {"Authorization": f"Bearer {key}"}
    verdict = await (await first.post("/v1/ingest", json=GOOD, headers=auth)).json()
    counts_sql = (
        "SELECT (SELECT COUNT(*) FROM accounts), (SELECT COUNT(*) FROM projects),"
        " (SELECT COUNT(*) FROM api_keys), (SELECT COUNT(*) FROM events),"
        " (SELECT COUNT(*) FROM credit_ledger), (SELECT COUNT(*) FROM audit_log)"
    )
    before = query(db_url, counts_sql)
    await first.close()

    monkeypatch.setattr(migrations, "MIGRATIONS", FUTURE)
    upgraded: TestClient[Any, Any] = await aiohttp_client(create_app(settings, engine=shared_engine()))
    assert versions(db_url) == [m[0] for m in FUTURE]
    assert query(db_url, counts_sql) == before
    assert query(db_url, "SELECT note FROM events") == [("none",)]
    # The old rows still work through the API: the key, the event, the balance, the password.
    event = await upgraded.get(f"/v1/events/{verdict['traceId']}", headers=auth)
    assert event.status == 200
    assert (await (await upgraded.get("/v1/credits", headers=auth)).json())["balance"] == 999
    signin = await upgraded.post("/v1/session", json={"email": owner.email, "password": owner.password})
    assert signin.status == 200


def test_database_from_an_older_release_gets_the_newer_migrations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file made when the code had three migrations, with rows in it, brought to the latest."""
    path = str(tmp_path / "old.sqlite3")
    with monkeypatch.context() as m:
        m.setattr(migrations, "MIGRATIONS", MIGRATIONS[:3])
        conn = sqlite3.connect(path, isolation_level=None)
        assert migrate(conn) == 3
    conn.execute("INSERT INTO accounts VALUES ('acc_1', 'old@example.com', '$argon2id$x', 1, 1)")
    conn.execute(
        "INSERT INTO projects (id, account_id, name, created_at, updated_at)"
        " VALUES ('prj_1', 'acc_1', 'Old shop', 1, 1)"
    )
    conn.close()
    assert versions(path) == [m[0] for m in MIGRATIONS]
    assert query(path, "SELECT id, name, snippet FROM projects") == [("prj_1", "Old shop", "{}")]
    assert query(path, "SELECT email FROM accounts") == [("old@example.com",)]


def test_a_failed_migration_leaves_nothing_behind(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    versions(db_url)  # the current schema
    broken = [
        *MIGRATIONS,
        (
            MIGRATIONS[-1][0] + 1,
            "test: half-broken",
            "CREATE TABLE notes (id TEXT PRIMARY KEY); INSERT INTO no_such_table VALUES (1)",
        ),
    ]
    monkeypatch.setattr(migrations, "MIGRATIONS", broken)
    with pytest.raises(
        MigrationError, match=r"migration \d+ \(test: half-broken\) failed and was rolled back"
    ):
        Database(db_url).run_sync(lambda c: None)
    monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS)
    assert versions(db_url) == [m[0] for m in MIGRATIONS]
    tables = (
        "SELECT name FROM sqlite_master WHERE name = 'notes'"
        if not db_url.startswith("postgres")
        else "SELECT tablename FROM pg_tables WHERE tablename = 'notes'"
    )
    assert query(db_url, tables) == []  # the statement that did run was rolled back too


def test_database_newer_than_the_code_is_refused_with_a_clear_error(db_url: str) -> None:
    versions(db_url)
    db = Database(db_url)
    db.run_sync(
        lambda c: c.execute(
            "INSERT INTO schema_migrations (version, description, applied_at)"
            " VALUES (999, 'from the future', 0)"
        )
    )
    db.close_sync()
    latest = MIGRATIONS[-1][0]
    with pytest.raises(
        MigrationError, match=rf"version 999 \(from the future\), newer than this code's {latest}"
    ):
        Database(db_url).run_sync(lambda c: None)


async def test_app_start_on_a_newer_database_fails(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    versions(settings.db)
    conn = sqlite3.connect(settings.db)
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', 0)")
    conn.commit()
    conn.close()
    runner = web.AppRunner(create_app(settings, engine=shared_engine()))
    with pytest.raises(MigrationError, match="newer than this code"):
        await runner.setup()  # the app's start-up, as under run_app


def _open(url: str) -> Conn:
    if url.startswith("postgresql://"):
        from control_api.pg import PgConnection

        return PgConnection(url)
    conn = sqlite3.connect(url, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def test_concurrent_starts_migrate_once(db_url: str) -> None:
    """Several processes starting at once on one database (threads here, each with its own
    connection): every one ends on the latest version, each migration applied once."""
    starts = 4
    conns = [_open(db_url) for _ in range(starts)]
    barrier = threading.Barrier(starts)
    results: list[int | BaseException] = []

    def start(conn: Conn) -> None:
        barrier.wait()
        try:
            results.append(migrate(conn))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=start, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for c in conns:
        c.close()
    assert results == [MIGRATIONS[-1][0]] * starts
    assert versions(db_url) == [m[0] for m in MIGRATIONS]


def test_a_sqlite_start_that_loses_the_race_skips_what_the_winner_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server and the `credits grant` CLI start on one file; the CLI migrates between the
    server's first read of the version and its first migration."""
    path = str(tmp_path / "race.sqlite3")
    server = sqlite3.connect(path, isolation_level=None)
    cli = sqlite3.connect(path, isolation_level=None)
    real = migrations.current_version
    raced: list[bool] = []

    def read_then_lose(conn: Conn) -> int:
        version = real(conn)
        if conn is server and not raced:
            raced.append(True)
            assert migrate(cli) == MIGRATIONS[-1][0]
        return version

    monkeypatch.setattr(migrations, "current_version", read_then_lose)
    assert migrate(server) == MIGRATIONS[-1][0]
    assert raced == [True]
    server.close()
    cli.close()
    assert versions(path) == [m[0] for m in MIGRATIONS]
