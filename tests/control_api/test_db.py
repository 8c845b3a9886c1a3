"""The SQLite database layer: the WAL stays bounded under writes that never pause."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from control_api import db as db_module
from control_api.db import Database
from control_api.sqltypes import Conn


def wal_size(path: Path) -> int:
    return Path(f"{path}-wal").stat().st_size


async def test_wal_is_rewound_under_steady_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a rewind, SQLite's WAL only grows while writes keep coming (each checkpoint
    finishes with newer frames already behind it). Small limits here so a second of writes
    shows it: several MB written, the WAL file no bigger than a few checkpoint periods' worth."""
    monkeypatch.setattr(db_module, "CHECKPOINT_EVERY_S", 0.02)
    monkeypatch.setattr(db_module, "WAL_RESTART_FRAMES", 64)
    path = tmp_path / "wal.sqlite3"
    db = Database(str(path))
    await db.open()
    details = json.dumps({"pad": "x" * 3000})

    def add(conn: Conn) -> None:
        conn.execute(
            "INSERT INTO audit_log (actor, action, details, created_at) VALUES ('test', 'pad', ?, 0)",
            (details,),
        )

    written = 0
    biggest_wal = 0
    deadline = time.monotonic() + 1.5
    try:
        while time.monotonic() < deadline or db.wal_restarts < 2:
            await asyncio.gather(*(db.write(add) for _ in range(8)))  # never a pause between
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
