"""API keys and edge tokens: format, checksum, hash-only storage, revocation, last-used."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from control_api.keys import KeyFormatError, format_key, parse_key
from tests.control_api.conftest import Account, api_error, db_rows

GOOD = {
    "email": "jane@example.org",
    "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0",
    "ip": "81.2.69.160",
    "fields": {"message": "Hello, I would like a quote."},
}


def test_key_format_round_trips_and_checksum_catches_typos() -> None:
    key = format_key("live", "A" * 12, "b" * 32)
    assert re.fullmatch(r"al_live_A{12}_b{32}[0-9A-Za-z]{6}", key)
    assert parse_key(key) == ("live", "A" * 12, "b" * 32)
    typo = key[:25] + "c" + key[26:]
    with pytest.raises(KeyFormatError, match="checksum"):
        parse_key(typo)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "al_live_",
        "Bearer x",
        "al_test_" + "a" * 51,
        "al_live_" + "a" * 12 + "_" + "b" * 37 + "é",
        "al_live_" + "a" * 12 + "_" + "b" * 38,
    ],
)
def test_malformed_keys_are_refused_before_lookup(token: str) -> None:
    with pytest.raises(KeyFormatError):
        parse_key(token)


async def test_key_is_shown_once_stored_as_hash_and_listed_without_secret(
    client: TestClient[Any, Any], owner: Account, settings: Any
) -> None:
    project = await owner.project()
    resp = await client.post(f"/v1/projects/{project['id']}/keys", json={"name": "server"}, headers=owner.h())
    created = await resp.json()
    key = created["key"]
    assert key.startswith("al_live_") and resp.headers["Cache-Control"] == "no-store"
    _, public_id, secret = parse_key(key)
    rows = db_rows(settings.db, "SELECT * FROM api_keys")
    assert secret not in str(rows) and key not in str(rows)
    listed = (await (await client.get(f"/v1/projects/{project['id']}/keys")).json())["keys"]
    assert [k["id"] for k in listed] == [public_id]
    assert "key" not in listed[0] and secret not in str(listed)
    assert listed[0]["preview"].endswith(key[-4:])


async def test_revoked_key_stops_working_and_is_audited(client: TestClient[Any, Any], owner: Account) -> None:
    project = await owner.project()
    key = await owner.key(project["id"])
    auth = {"Authorization": f"Bearer {key}"}
    assert (await client.post("/v1/ingest", json=GOOD, headers=auth)).status == 200
    _, public_id, _ = parse_key(key)
    resp = await client.delete(f"/v1/projects/{project['id']}/keys/{public_id}", headers=owner.h())
    assert resp.status == 200
    resp = await client.post("/v1/ingest", json=GOOD, headers=auth)
    assert resp.status == 401 and (await api_error(resp))["code"] == "invalid_key"
    actions = [e["action"] for e in (await (await client.get("/v1/audit")).json())["entries"]]
    assert "key.created" in actions and "key.revoked" in actions


async def test_last_used_is_recorded(client: TestClient[Any, Any], owner: Account) -> None:
    project = await owner.project()
    key = await owner.key(project["id"])
    await client.post("/v1/ingest", json=GOOD, headers={"Authorization": f"Bearer {key}"})
    for _ in range(50):
        keys = (await (await client.get(f"/v1/projects/{project['id']}/keys")).json())["keys"]
        if keys[0]["lastUsedAt"]:
            break
        await asyncio.sleep(0.02)
    assert keys[0]["lastUsedAt"].endswith("Z")


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_credentials"),
        ("Basic abc", "missing_credentials"),
        ("Bearer not-a-key", "invalid_key"),
        ("Bearer " + format_key("live", "Z" * 12, "z" * 32), "invalid_key"),  # well-formed, unknown
    ],
)
async def test_bad_credentials_are_401(client: TestClient[Any, Any], header: str | None, code: str) -> None:
    headers = {"Authorization": header} if header else {}
    resp = await client.post("/v1/ingest", json=GOOD, headers=headers)
    assert resp.status == 401
    assert (await api_error(resp))["code"] == code


async def test_edge_token_and_api_key_are_not_interchangeable(
    client: TestClient[Any, Any], owner: Account
) -> None:
    project = await owner.project()
    live, edge = await owner.key(project["id"]), await owner.key(project["id"], "edge")
    assert edge.startswith("al_edge_")
    resp = await client.post("/v1/ingest", json=GOOD, headers={"Authorization": f"Bearer {edge}"})
    assert resp.status == 403 and (await api_error(resp))["code"] == "wrong_key_kind"
    resp = await client.get("/v1/edge/config", headers={"Authorization": f"Bearer {live}"})
    assert resp.status == 403


def test_verified_key_map_follows_the_lookup_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key verified moments ago skips the checksum and HMAC, but only while the cache entry it
    was checked against is still the current one: revocation and the TTL end it."""
    import time

    from control_api import keys as keys_module

    store = keys_module.KeyStore("pepper")
    info = keys_module.KeyInfo("id1", "live", "prj_1", "acc_1")
    entry = keys_module._Cached("hash", info, time.monotonic())
    store._cache["live:id1"] = entry
    store.remember_verified("al_live_token", "live", "id1", entry)
    assert store.verified("al_live_token") is info
    assert store.verified("al_live_other") is None
    store.forget("id1")  # revoked in this process
    assert store.verified("al_live_token") is None
    store._cache["live:id1"] = entry
    store.remember_verified("al_live_token", "live", "id1", entry)
    later = time.monotonic() + 60
    monkeypatch.setattr(keys_module.time, "monotonic", lambda: later)
    assert store.verified("al_live_token") is None  # past the TTL: look it up again
