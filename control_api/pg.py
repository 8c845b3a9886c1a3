"""PostgreSQL behind the same `Conn` shape as sqlite3, so every unit of work runs on both.

Translation is deliberately small and mechanical: `?` placeholders become `%s`, SQLite's
`BEGIN IMMEDIATE` becomes `BEGIN`, and in DDL `INTEGER PRIMARY KEY AUTOINCREMENT` becomes
`BIGSERIAL PRIMARY KEY` and `INTEGER` becomes `BIGINT` (times are milliseconds). Statements that
really differ (JSON arrays, dates, row locks) choose by `sqltypes.dialect(conn)` where they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg.rows import RowMaker

_TRANSLATED: dict[str, str] = {}
_DDL = re.compile(r"^\s*(CREATE|ALTER)\s", re.IGNORECASE)


def translate(sql: str) -> str:
    out = _TRANSLATED.get(sql)
    if out is None:
        if "%" in sql:
            raise ValueError("a literal % in SQL would be read as a placeholder by psycopg")
        out = sql.replace("?", "%s")
        if out.strip().upper() == "BEGIN IMMEDIATE":
            out = "BEGIN"
        if _DDL.match(out):
            out = out.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
            out = re.sub(r"\bINTEGER\b", "BIGINT", out)
        _TRANSLATED[sql] = out
    return out


class PgRow(tuple[Any, ...]):
    """A row readable like sqlite3.Row: by position and by column name; dict(row) works."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> PgRow:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return super().__getitem__(self._index[key])
        return super().__getitem__(key)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: psycopg.Cursor[Any]) -> RowMaker[PgRow]:
    names = [c.name for c in cursor.description or ()]
    index = {name: i for i, name in enumerate(names)}

    def make(values: Sequence[Any]) -> PgRow:
        return PgRow(values, index)

    return make


class PgCursor:
    """The cursor shape units use (rowcount, fetchone, fetchall, iteration)."""

    def __init__(self, cursor: psycopg.Cursor[PgRow]) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def fetchone(self) -> PgRow | None:
        return self._cursor.fetchone() if self._cursor.description else None

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall() if self._cursor.description else []

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class PgConnection:
    """A psycopg connection in autocommit mode: Database issues BEGIN/SAVEPOINT/COMMIT itself."""

    def __init__(self, url: str) -> None:
        self._conn = psycopg.connect(url, autocommit=True)

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> PgCursor:
        cursor = self._conn.cursor(row_factory=_row_factory)
        cursor.execute(translate(sql), tuple(parameters) or None)
        return PgCursor(cursor)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> PgCursor:
        cursor = self._conn.cursor(row_factory=_row_factory)
        rows = [tuple(p) for p in parameters]
        if rows:
            cursor.executemany(translate(sql), rows)
        return PgCursor(cursor)

    def close(self) -> None:
        self._conn.close()
