"""Ingest calls that arrive together are stored in one unit of work (IngestWriter): the books
must read exactly as if each call had been stored alone."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from control_api import credits, ingest
from control_api.db import connect
from tests.control_api.conftest import ClientFactory, api_error, db_rows, sign_up
from tests.control_api.test_keys import GOOD
from tests.control_api.test_webhooks import Receiver, hooked_project, start_receiver, wait_for


async def _keyed(client: Any, email: str) -> dict[str, str]:
    owner = await sign_up(client, email=email)
    return {"Authorization": f"Bearer {await owner.key((await owner.project())['id'])}"}


async def test_one_batch_two_accounts_test_calls_and_refusals(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    client = await make_client(initial_credits=5)
    a = await _keyed(client, "a@example.com")
    b = await _keyed(client, "b@example.com")
    calls = (
        [client.post("/v1/ingest", json=GOOD, headers=a) for _ in range(8)]
        + [client.post("/v1/ingest", json={**GOOD, "isTest": True}, headers=b) for _ in range(3)]
        + [client.post("/v1/ingest", json=GOOD, headers=b) for _ in range(3)]
    )
    responses = await asyncio.gather(*calls)
    statuses = [r.status for r in responses]
    assert sorted(statuses[:8]) == [200] * 5 + [402] * 3
    assert statuses[8:] == [200] * 6
    for resp in responses[:8]:
        if resp.status == 402:
            error = await api_error(resp)
            assert error["code"] == "credits_exhausted" and error["details"] == {"balance": 0}
    db = str(tmp_path / "control.sqlite3")
    rows = db_rows(
        db,
        "SELECT a.email, l.amount, l.balance_after FROM credit_ledger l JOIN accounts a"
        " ON a.id = l.account_id WHERE l.kind = 'usage' ORDER BY l.id",
    )
    # One usage entry per paid call, each with its own running balance.
    assert [r[2] for r in rows if r[0] == "a@example.com"] == [4, 3, 2, 1, 0]
    assert [r[2] for r in rows if r[0] == "b@example.com"] == [4, 3, 2]
    assert all(r[1] == -1 for r in rows)
    events = db_rows(
        db,
        "SELECT charged, is_test, COUNT(*) FROM events GROUP BY charged, is_test ORDER BY charged, is_test",
    )
    assert events == [(0, 1, 3), (1, 0, 8)]  # refused calls are not stored
    conn = sqlite3.connect(db)
    try:
        for (account_id,) in conn.execute("SELECT id FROM accounts").fetchall():
            assert credits.verify_balance(conn, account_id)
    finally:
        conn.close()


async def test_a_failing_batch_is_retried_call_by_call(
    make_client: ClientFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ingest.store_scored
    sizes: list[int] = []

    def flaky(conn: Any, batch: list[Any], low: int) -> Any:
        sizes.append(len(batch))
        if len(batch) > 1:
            raise sqlite3.OperationalError("simulated failure of the whole batch")
        return real(conn, batch, low)

    monkeypatch.setattr(ingest, "store_scored", flaky)
    client = await make_client(initial_credits=100)
    auth = await _keyed(client, "a@example.com")
    responses = await asyncio.gather(*(client.post("/v1/ingest", json=GOOD, headers=auth) for _ in range(6)))
    assert [r.status for r in responses] == [200] * 6
    assert max(sizes) > 1 and sizes.count(1) >= 6  # batched first, then one by one
    db = str(tmp_path / "control.sqlite3")
    assert db_rows(db, "SELECT COUNT(*) FROM events") == [(6,)]
    assert db_rows(db, "SELECT balance FROM credit_balances") == [(94,)]


async def test_calls_soon_after_a_batch_wait_for_the_interval_and_share_one(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ingest.store_scored
    sizes: list[int] = []

    def counting(conn: Any, batch: list[Any], low: int) -> Any:
        sizes.append(len(batch))
        return real(conn, batch, low)

    monkeypatch.setattr(ingest, "store_scored", counting)
    client = await make_client(initial_credits=100, ingest_batch_interval_ms=100)
    auth = await _keyed(client, "a@example.com")
    assert (await client.post("/v1/ingest", json=GOOD, headers=auth)).status == 200  # alone

    async def call_after(delay_s: float) -> int:
        await asyncio.sleep(delay_s)
        return (await client.post("/v1/ingest", json=GOOD, headers=auth)).status

    # Three calls in different ticks, all within the interval after the first batch.
    assert await asyncio.gather(*(call_after(n * 0.01) for n in range(3))) == [200] * 3
    assert sizes == [1, 3]


async def test_credits_low_fires_once_when_a_batch_crosses_it(
    make_client: ClientFactory, aiohttp_server: Any
) -> None:
    receiver = Receiver()
    srv = await start_receiver(aiohttp_server, receiver)
    client = await make_client(
        webhook_allow_private=True, webhook_poll_s=0.05, initial_credits=6, low_credit_threshold=3
    )
    _, _, _, auth = await hooked_project(client, f"http://127.0.0.1:{srv.port}/hook", events=["credits.low"])
    await asyncio.gather(*(client.post("/v1/ingest", json=GOOD, headers=auth) for _ in range(5)))
    await asyncio.gather(*(client.post("/v1/ingest", json=GOOD, headers=auth) for _ in range(2)))
    await wait_for(lambda: receiver.received)
    await asyncio.sleep(0.2)
    assert len(receiver.received) == 1
    payload = json.loads(receiver.received[0][1])
    assert payload["type"] == "credits.low" and payload["data"]["threshold"] == 3
    assert payload["data"]["balance"] <= 3


def test_debit_calls_pays_in_order_and_flags_the_low_mark_once(tmp_path: Path) -> None:
    conn = connect(str(tmp_path / "c.sqlite3"))
    try:
        conn.execute(
            "INSERT INTO accounts (id, email, password_hash, created_at, password_changed_at)"
            " VALUES ('acc', 'x@example.com', 'h', 0, 0)"
        )
        conn.execute("INSERT INTO credit_balances (account_id, balance) VALUES ('acc', 0)")
        credits.add_entry(conn, "acc", "grant", 5)
        paid, outcome = credits.debit_calls(conn, "acc", ["p1", "p2"], low_threshold=3)
        assert (paid, outcome.balance, outcome.crossed_low) == (2, 3, True)
        paid, outcome = credits.debit_calls(conn, "acc", ["p1", "p1", "p1", "p1"], low_threshold=3)
        assert (paid, outcome.balance, outcome.crossed_low) == (3, 0, False)  # flagged already
        paid, outcome = credits.debit_calls(conn, "acc", ["p1"], low_threshold=3)
        assert (paid, outcome.balance) == (0, 0)
        assert [
            r[0]
            for r in conn.execute("SELECT balance_after FROM credit_ledger WHERE kind = 'usage' ORDER BY id")
        ] == [4, 3, 2, 1, 0]
        assert [
            r[0]
            for r in conn.execute("SELECT project_id FROM credit_ledger WHERE kind = 'usage' ORDER BY id")
        ][:2] == ["p1", "p2"]
        assert credits.verify_balance(conn, "acc")
        credits.add_entry(conn, "acc", "grant", 10)  # a grant re-arms the low mark
        _, outcome = credits.debit_calls(conn, "acc", ["p1"] * 8, low_threshold=3)
        assert (outcome.balance, outcome.crossed_low) == (2, True)
    finally:
        conn.close()
