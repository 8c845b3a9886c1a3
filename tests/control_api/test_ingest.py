"""POST /v1/ingest and /v1/feedback: verdicts, credits, idempotency, errors, limits."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from control_api import db as db_module
from tests.control_api.conftest import Account, ClientFactory, api_error, db_rows, sign_up
from tests.control_api.test_keys import GOOD

SPAM = {"email": "bot@mailinator.com", "ip": "81.2.69.160", "fields": {"message": "hi"}}


async def keyed(client: TestClient[Any, Any]) -> tuple[Account, dict[str, str], str]:
    owner = await sign_up(client)
    project = await owner.project()
    key = await owner.key(project["id"])
    return owner, {"Authorization": f"Bearer {key}"}, project["id"]


async def balance(client: TestClient[Any, Any], auth: dict[str, str]) -> int:
    value: int = (await (await client.get("/v1/credits", headers=auth)).json())["balance"]
    return value


async def test_ingest_scores_stores_and_charges_one_credit(
    client: TestClient[Any, Any], settings: Any
) -> None:
    _, auth, pid = await keyed(client)
    before = await balance(client, auth)
    resp = await client.post("/v1/ingest", json={**SPAM, "leadId": "L1", "formId": "contact"}, headers=auth)
    assert resp.status == 200
    verdict = await resp.json()
    assert set(verdict) >= {
        "traceId",
        "score",
        "decision",
        "labels",
        "hits",
        "countryHint",
        "degraded",
        "elapsedUs",
        "isTest",
    }
    assert verdict["decision"] == "blocked" and "disposable_email" in verdict["labels"]
    assert await balance(client, auth) == before - 1
    event = await (await client.get(f"/v1/events/{verdict['traceId']}", headers=auth)).json()
    assert event["projectId"] == pid and event["leadId"] == "L1" and event["formId"] == "contact"
    assert event["decision"] == "blocked" and event["charged"] is True
    assert event["verdict"]["hits"] == verdict["hits"]
    ((total, stored),) = db_rows(
        settings.db, "SELECT SUM(amount), (SELECT balance FROM credit_balances) FROM credit_ledger"
    )
    assert total == stored  # the balance is the ledger's sum


async def test_client_ip_defaults_to_the_request_address(client: TestClient[Any, Any]) -> None:
    _, auth, _ = await keyed(client)
    body = {k: v for k, v in GOOD.items() if k != "ip"}
    verdict = await (await client.post("/v1/ingest", json=body, headers=auth)).json()
    event = await (await client.get(f"/v1/events/{verdict['traceId']}", headers=auth)).json()
    assert event["ip"] == "127.0.0.1"


async def test_test_submissions_are_not_charged(client: TestClient[Any, Any]) -> None:
    _, auth, _ = await keyed(client)
    before = await balance(client, auth)
    verdict = await (await client.post("/v1/ingest", json={**GOOD, "isTest": True}, headers=auth)).json()
    assert verdict["isTest"] is True
    assert await balance(client, auth) == before


async def test_idempotency_key_returns_same_verdict_and_charges_once(client: TestClient[Any, Any]) -> None:
    _, auth, _ = await keyed(client)
    before = await balance(client, auth)
    headers = {**auth, "Idempotency-Key": "order-42"}
    first = await client.post("/v1/ingest", json=SPAM, headers=headers)
    second = await client.post("/v1/ingest", json=SPAM, headers=headers)
    assert first.status == second.status == 200
    assert await first.json() == await second.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    # Concurrent twins with a fresh key: one scoring, one charge.
    twins = await asyncio.gather(
        *(
            client.post("/v1/ingest", json=SPAM, headers={**auth, "Idempotency-Key": "double-click"})
            for _ in range(10)
        )
    )
    assert len({(await t.json())["traceId"] for t in twins}) == 1
    assert await balance(client, auth) == before - 2
    reused = await client.post("/v1/ingest", json=GOOD, headers=headers)
    assert reused.status == 422 and (await api_error(reused))["code"] == "idempotency_key_reused"
    bad = await client.post("/v1/ingest", json=GOOD, headers={**auth, "Idempotency-Key": "a b"})
    assert bad.status == 400


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code", "detail_keys"),
    [
        (
            json.dumps({"email": 5, "colour": "red", "signals": {"elapsedMs": -1}}).encode(),
            "application/json",
            400,
            "invalid_submission",
            {"email", "colour", "signals.elapsedMs"},
        ),
        (b"[1, 2]", "application/json", 400, "invalid_submission", {"$"}),
        (b'{"email": "a@b.c",', "application/json", 400, "invalid_json", set()),
        (b'{"email": "\xc3\x28"}', "application/json", 400, "invalid_encoding", set()),
        (b'{"email": "x"}', "application/json; charset=latin-1", 415, "unsupported_media_type", set()),
        (b"email=a@b.c", "application/x-www-form-urlencoded", 415, "unsupported_media_type", set()),
        (b'{"email": "x"}', "text/plain", 415, "unsupported_media_type", set()),
        (
            json.dumps({"fields": {"m": "x" * 300_000}}).encode(),
            "application/json",
            413,
            "payload_too_large",
            set(),
        ),
        (b"{" * 200 + b"}" * 200, "application/json", 400, "invalid_json", set()),
        (
            json.dumps({"fields": {"m": "\ud800 lone surrogate"}}).encode(),
            "application/json",
            200,
            None,
            set(),
        ),
    ],
)
async def test_ingest_rejects_bad_input_clearly(
    client: TestClient[Any, Any],
    body: bytes,
    content_type: str,
    status: int,
    code: str | None,
    detail_keys: set[str],
) -> None:
    _, auth, _ = await keyed(client)
    before = await balance(client, auth)
    resp = await client.post("/v1/ingest", data=body, headers={**auth, "Content-Type": content_type})
    assert resp.status == status, await resp.text()
    if code is not None:
        out = await api_error(resp)
        assert out["code"] == code
        assert set(out["details"]) >= detail_keys
        assert await balance(client, auth) == before  # nothing charged for a refused request


async def test_out_of_credits_is_402_with_clear_body(make_client: ClientFactory) -> None:
    client = await make_client(initial_credits=2)
    _, auth, _ = await keyed(client)
    for _ in range(2):
        assert (await client.post("/v1/ingest", json=GOOD, headers=auth)).status == 200
    resp = await client.post("/v1/ingest", json=GOOD, headers=auth)
    assert resp.status == 402
    body = await api_error(resp)
    assert body["code"] == "credits_exhausted" and body["details"]["balance"] == 0
    assert "credits" in body["message"]
    # Test submissions are free, so integrations can still be checked.
    assert (await client.post("/v1/ingest", json={**GOOD, "isTest": True}, headers=auth)).status == 200
    credits = await (await client.get("/v1/credits", headers=auth)).json()
    assert credits["balance"] == 0 and credits["exhausted"] is True


async def test_parallel_ingest_never_overdraws(make_client: ClientFactory, tmp_path: Any) -> None:
    client = await make_client(initial_credits=40)
    _, auth, _ = await keyed(client)
    responses = await asyncio.gather(
        *(client.post("/v1/ingest", json=GOOD, headers=auth) for _ in range(100))
    )
    statuses = sorted(r.status for r in responses)
    assert statuses.count(200) == 40 and statuses.count(402) == 60
    db = str(tmp_path / "control.sqlite3")
    ((balance_now, total, usage_rows, charged_events),) = db_rows(
        db,
        "SELECT (SELECT balance FROM credit_balances), (SELECT SUM(amount) FROM credit_ledger),"
        " (SELECT COUNT(*) FROM credit_ledger WHERE kind = 'usage'),"
        " (SELECT COUNT(*) FROM events WHERE charged = 1)",
    )
    assert (balance_now, total, usage_rows, charged_events) == (0, 0, 40, 40)


async def test_ingest_rate_limit_answers_429_with_retry_after(make_client: ClientFactory) -> None:
    client = await make_client(ingest_rate_per_key=3)
    _, auth, _ = await keyed(client)
    for _ in range(3):
        assert (await client.post("/v1/ingest", json=GOOD, headers=auth)).status == 200
    resp = await client.post("/v1/ingest", json=GOOD, headers=auth)
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) > 0
    assert (await api_error(resp))["code"] == "rate_limited"


async def test_feedback_records_correction(client: TestClient[Any, Any]) -> None:
    _, auth, _ = await keyed(client)
    verdict = await (await client.post("/v1/ingest", json=GOOD, headers=auth)).json()
    resp = await client.post(
        "/v1/feedback", json={"traceId": verdict["traceId"], "verdict": "spam"}, headers=auth
    )
    assert resp.status == 200
    event = await (await client.get(f"/v1/events/{verdict['traceId']}", headers=auth)).json()
    assert event["feedback"] == "spam" and event["feedbackAt"]
    for body, status in [
        ({"traceId": "tr_nope", "verdict": "ham"}, 404),
        ({"traceId": verdict["traceId"], "verdict": "maybe"}, 400),
        ({"traceId": 5, "verdict": "ham"}, 400),
        ({"traceId": verdict["traceId"], "verdict": "ham", "x": 1}, 400),
    ]:
        resp = await client.post("/v1/feedback", json=body, headers=auth)
        assert resp.status == status
        assert (await api_error(resp))["code"]


async def test_chunked_oversized_body_is_413_without_content_length(client: TestClient[Any, Any]) -> None:
    _, auth, _ = await keyed(client)

    async def chunks() -> Any:
        yield b'{"fields": {"m": "'
        for _ in range(40):
            yield b"x" * 10_000
        yield b'"}}'

    resp = await client.post(
        "/v1/ingest", data=chunks(), headers={**auth, "Content-Type": "application/json"}
    )
    assert resp.status == 413
    assert (await api_error(resp))["code"] == "payload_too_large"


async def test_credits_with_session_show_the_ledger(client: TestClient[Any, Any]) -> None:
    owner, auth, _ = await keyed(client)
    await client.post("/v1/ingest", json=GOOD, headers=auth)
    body = await (await client.get("/v1/credits")).json()  # session cookie, no key
    assert body["balance"] == 999 and body["used"] == 1
    kinds = [(e["kind"], e["amount"], e["balanceAfter"]) for e in body["ledger"]]
    assert kinds == [("usage", -1, 999), ("grant", 1000, 1000)]
    del owner


async def test_a_database_locked_too_long_by_another_process_is_a_503_and_charges_nothing(
    client: TestClient[Any, Any], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator's transaction (or a stuck process) holds SQLite's write lock past the wait:
    a clear 503 with Retry-After, nothing stored or charged; the same call succeeds after."""
    _, auth, _ = await keyed(client)
    before = await balance(client, auth)
    monkeypatch.setattr(db_module, "BUSY_TIMEOUT_S", 0.3)
    other = sqlite3.connect(settings.db, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        answers = await asyncio.gather(*(client.post("/v1/ingest", json=SPAM, headers=auth)
                                         for _ in range(8)))
        # One wait for the whole batch, not one more per call (8 calls one by one: 2.7 s).
        assert time.monotonic() - started < 1.5
        for resp in answers:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "1"
            assert (await api_error(resp))["code"] == "database_busy"
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert await balance(client, auth) == before
    assert db_rows(settings.db, "SELECT COUNT(*) FROM events")[0][0] == 0
    resp = await client.post("/v1/ingest", json=SPAM, headers=auth)
    assert resp.status == 200
    assert await balance(client, auth) == before - 1
