"""Fixtures shared by every test tier: real services started on 127.0.0.1 by the tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.services import RedisServer, redis_server


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    """A real redis-server for the whole session (flush keys yourself if a test needs it empty)."""
    with redis_server() as server:
        yield server


@pytest.fixture
def redis_own() -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that stop and restart it."""
    with redis_server() as server:
        yield server
