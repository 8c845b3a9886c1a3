"""The database interface unit-of-work functions see: the part of DB-API both backends share.

`sqlite3.Connection` satisfies `Conn` as it is; for PostgreSQL, control_api.pg wraps a psycopg
connection to the same shape (`?` placeholders, rows readable by index and by column name).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, Protocol

Row = Any  # sqlite3.Row or control_api.pg.PgRow: row[0] and row["column"] both work


class Cursor(Protocol):
    """What a unit reads back from a statement."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """A connection inside a transaction opened by control_api.db.Database."""

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...


def dialect(conn: Conn) -> Literal["sqlite", "postgres"]:
    """Which SQL dialect `conn` speaks, for the few statements that differ."""
    return "sqlite" if isinstance(conn, sqlite3.Connection) else "postgres"
