"""Fixtures for control API tests: the real app on 127.0.0.1 with a throwaway SQLite file."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from control_api.app import create_app
from control_api.settings import ControlApiSettings
from rules import Engine, ScoringConfig
from tests.control_api.pgserver import PostgresServer, postgres_server
from tests.control_api.pgserver import available as pg_available

_ENGINE: Engine | None = None


def shared_engine() -> Engine:
    """Scoring data loads in ~0.7 s; load it once for the whole test session."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = Engine.from_config(ScoringConfig())
    return _ENGINE


def make_settings(tmp_path: Path, **overrides: Any) -> ControlApiSettings:
    base: dict[str, Any] = {
        "db": str(tmp_path / "control.sqlite3"),
        "cookie_secure": False,
        # Cheap argon2 in tests; production defaults are RFC 9106's second profile.
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,
        "argon2_parallelism": 1,
        "initial_credits": 1000,
        "key_pepper": "test-pepper",
        "purge_interval_s": 3600,
    }
    base.update(overrides)
    return ControlApiSettings(**base)


@dataclass
class Account:
    """A signed-in account driven through the real API."""

    client: TestClient[Any, Any]
    email: str
    password: str
    csrf: str
    account_id: str

    def h(self, **extra: str) -> dict[str, str]:
        return {"X-CSRF-Token": self.csrf, **extra}

    async def project(self, name: str = "site") -> dict[str, Any]:
        resp = await self.client.post("/v1/projects", json={"name": name}, headers=self.h())
        assert resp.status == 201, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body

    async def key(self, project_id: str, kind: str = "live") -> str:
        resp = await self.client.post(
            f"/v1/projects/{project_id}/keys", json={"name": "k", "kind": kind}, headers=self.h()
        )
        assert resp.status == 201, await resp.text()
        key: str = (await resp.json())["key"]
        return key


ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def settings(tmp_path: Path) -> ControlApiSettings:
    return make_settings(tmp_path)


@pytest.fixture
async def make_client(aiohttp_client: Any, tmp_path: Path) -> ClientFactory:
    async def make(**overrides: Any) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = await aiohttp_client(
            create_app(make_settings(tmp_path, **overrides), engine=shared_engine())
        )
        return client

    return make


@pytest.fixture
async def client(make_client: ClientFactory) -> TestClient[Any, Any]:
    return await make_client()


async def sign_up(
    client: TestClient[Any, Any], email: str = "owner@example.com", password: str = "correct horse battery"
) -> Account:
    """Sign up (202, no session: the same answer as for a taken address), then sign in."""
    resp = await client.post("/v1/accounts", json={"email": email, "password": password})
    assert resp.status == 202, await resp.text()
    resp = await client.post("/v1/session", json={"email": email, "password": password})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    return Account(client, email, password, body["csrfToken"], body["account"]["id"])


@pytest.fixture
async def owner(client: TestClient[Any, Any]) -> Account:
    return await sign_up(client)


async def api_error(resp: ClientResponse) -> dict[str, Any]:
    """The `error` object of a control API error answer, after checking the whole shape:
    `{"error": {"code", "message", "details", "requestId"}}` and nothing else, with the request
    id the X-Request-Id header carries."""
    assert resp.status >= 400, resp.status
    assert resp.content_type == "application/json", resp.content_type
    body = await resp.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details", "requestId"}, error
    assert isinstance(error["code"], str) and error["code"], error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["details"], dict), error
    assert error["requestId"] == resp.headers["X-Request-Id"], error
    return error


def db_rows(path: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read the service's SQLite file directly (WAL allows a second reader)."""
    conn = sqlite3.connect(path)
    try:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session; each test gets a database of its own."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'psycopg[binary]')")
    if not pg_available():
        pytest.skip("PostgreSQL server binaries (and root, to run them as postgres) are needed")
    with postgres_server() as server:
        yield server


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    import psycopg

    name = "t_" + secrets.token_hex(6)
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres.url(name)
