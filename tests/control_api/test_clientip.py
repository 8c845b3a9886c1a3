"""The client IP of control API requests behind a reverse proxy, end to end: `client_ip(request)`
hands the shared resolver (tested in tests/test_clientip.py) the peer and the joined headers."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict
from pydantic import ValidationError

from control_api.settings import ControlApiSettings
from tests.control_api.conftest import ClientFactory, db_rows, sign_up

XFF = "X-Forwarded-For"


def test_settings_refuse_bad_networks_and_headers() -> None:
    with pytest.raises(ValidationError, match="not an IP address or CIDR"):
        ControlApiSettings(trusted_proxies=["10.0.0.0/33"])
    with pytest.raises(ValidationError):
        ControlApiSettings(client_ip_headers=["X-Client-IP"])
    with pytest.raises(ValidationError):
        ControlApiSettings(client_ip_headers=[])
    ok = ControlApiSettings(trusted_proxies=["127.0.0.1", "10.0.0.0/8", "fd00::/8"])
    assert ok.trusted_proxies[0] == "127.0.0.1"


def test_trusted_proxies_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTIVELEAD_CONTROL_API__TRUSTED_PROXIES", '["127.0.0.1/32", "10.0.0.0/8"]')
    assert ControlApiSettings().trusted_proxies == ["127.0.0.1/32", "10.0.0.0/8"]


# -- through the API (the test client's peer is 127.0.0.1) -------------------------------------


async def _ingest_ip(client: TestClient[Any, Any], settings_db: str, *xff: str) -> str:
    """The ip stored for an ingest call sending one X-Forwarded-For line per `xff` item."""
    owner = await sign_up(client, email=f"o{abs(hash(xff))}@example.com")
    key = await owner.key((await owner.project())["id"])
    headers = CIMultiDict([("Authorization", f"Bearer {key}"), *((XFF, line) for line in xff)])
    resp = await client.post("/v1/ingest", json={"email": "jane@example.org"}, headers=headers)
    assert resp.status == 200, await resp.text()
    trace = (await resp.json())["traceId"]
    return str(db_rows(settings_db, "SELECT ip FROM events WHERE trace_id = ?", trace)[0][0])


async def test_ingest_default_ip_behind_a_trusted_proxy(make_client: ClientFactory, tmp_path: Any) -> None:
    client = await make_client(trusted_proxies=["127.0.0.1/32"])
    db = str(tmp_path / "control.sqlite3")
    assert await _ingest_ip(client, db, "81.2.69.160") == "81.2.69.160"
    assert await _ingest_ip(client, db, "6.6.6.6, 81.2.69.160") == "81.2.69.160"
    # Several header lines reach the resolver as one list, in order.
    assert await _ingest_ip(client, db, "6.6.6.6", "81.2.69.160") == "81.2.69.160"
    assert await _ingest_ip(client, db, "81.2.69.160", "garbage") == "127.0.0.1"


async def test_forwarding_headers_are_ignored_without_trusted_proxies(
    client: TestClient[Any, Any], tmp_path: Any
) -> None:
    assert await _ingest_ip(client, str(tmp_path / "control.sqlite3"), "81.2.69.160") == "127.0.0.1"


async def test_login_limit_counts_the_real_client_behind_the_proxy(make_client: ClientFactory) -> None:
    client = await make_client(
        trusted_proxies=["127.0.0.1/32"], login_limit_per_account=100, login_limit_per_ip=3
    )

    async def attempt(i: int, xff: str) -> int:
        resp = await client.post(
            "/v1/session", json={"email": f"u{i}@example.com", "password": "x" * 12}, headers={XFF: xff}
        )
        return resp.status

    for i in range(3):
        assert await attempt(i, "81.2.69.160") == 401
    assert await attempt(3, "81.2.69.160") == 429
    # Forging a different left-most address does not reset the count...
    assert await attempt(4, "198.51.100.1, 81.2.69.160") == 429
    # ...while another visitor behind the same proxy is not locked out by the first one.
    assert await attempt(5, "203.0.113.50") == 401


async def test_rotating_forwarding_headers_do_not_evade_the_limit_when_untrusted(
    make_client: ClientFactory,
) -> None:
    client = await make_client(login_limit_per_account=100, login_limit_per_ip=3)
    statuses = [
        (
            await client.post(
                "/v1/session",
                json={"email": f"u{i}@example.com", "password": "x" * 12},
                headers={
                    XFF: f"198.51.100.{i}",
                    "X-Real-IP": f"198.51.100.{i}",
                    "Forwarded": f"for=198.51.100.{i}",
                },
            )
        ).status
        for i in range(5)
    ]
    assert statuses == [401, 401, 401, 429, 429]


async def test_audit_log_records_the_client_ip(make_client: ClientFactory) -> None:
    client = await make_client(trusted_proxies=["127.0.0.1/32"], client_ip_headers=["X-Real-IP"])
    owner = await sign_up(client)
    await client.post(
        "/v1/session",
        json={"email": owner.email, "password": owner.password},
        headers={"X-Real-IP": "81.2.69.160"},
    )
    entries = (await (await client.get("/v1/audit")).json())["entries"]
    signin = next(e for e in entries if e["action"] == "signin.success")
    assert signin["ip"] == "81.2.69.160"
    created = next(e for e in entries if e["action"] == "account.created")
    assert created["ip"] == "127.0.0.1"  # sign-up came without a header: the peer itself
