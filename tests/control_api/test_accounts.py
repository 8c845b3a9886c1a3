"""Accounts and sessions through the real app: cookies, CSRF, generic errors, limits, audit."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.control_api.conftest import Account, ClientFactory, api_error, db_rows, sign_up


async def test_sign_up_sets_http_only_samesite_cookie_and_hashes_with_argon2id(
    client: TestClient[Any, Any], settings: Any
) -> None:
    resp = await client.post("/v1/accounts", json={"email": "A@Example.com ",
                                                   "password": "correct horse battery"})
    assert resp.status == 201
    body = await resp.json()
    assert body["account"]["email"] == "a@example.com"
    assert body["csrfToken"]
    cookie = resp.headers["Set-Cookie"]
    assert "al_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # cookie_secure=False in tests (plain HTTP)
    ((stored,),) = db_rows(settings.db, "SELECT password_hash FROM accounts")
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored


async def test_secure_cookie_by_default(make_client: ClientFactory) -> None:
    client = await make_client(cookie_secure=True)
    resp = await client.post("/v1/accounts", json={"email": "s@example.com",
                                                   "password": "correct horse battery"})
    assert "Secure" in resp.headers["Set-Cookie"]


async def test_sign_in_wrong_password_and_unknown_account_look_the_same(
    client: TestClient[Any, Any], owner: Account
) -> None:
    wrong = await client.post("/v1/session", json={"email": owner.email, "password": "nope" * 4})
    unknown = await client.post("/v1/session", json={"email": "ghost@example.com",
                                                     "password": "nope" * 4})
    assert wrong.status == unknown.status == 401
    a, b = await api_error(wrong), await api_error(unknown)
    assert (a["code"], a["message"]) == (b["code"], b["message"]) == (
        "invalid_credentials", "invalid e-mail or password")


async def test_sign_in_out_and_session(client: TestClient[Any, Any], owner: Account) -> None:
    client.session.cookie_jar.clear()
    assert (await client.get("/v1/session")).status == 401
    resp = await client.post("/v1/session", json={"email": owner.email, "password": owner.password})
    assert resp.status == 200
    csrf = (await resp.json())["csrfToken"]
    me = await client.get("/v1/session")
    assert (await me.json())["account"]["email"] == owner.email
    assert (await client.delete("/v1/session")).status == 403  # CSRF token missing
    assert (await client.delete("/v1/session", headers={"X-CSRF-Token": csrf})).status == 200
    assert (await client.get("/v1/session")).status == 401


@pytest.mark.parametrize("headers", [
    {},
    {"X-CSRF-Token": "wrong"},
    {"X-CSRF-Token": "<right>", "Origin": "https://evil.example"},
    {"X-CSRF-Token": "<right>", "Origin": "null"},
])
async def test_cookie_writes_need_csrf_token_and_same_origin(
    client: TestClient[Any, Any], owner: Account, headers: dict[str, str]
) -> None:
    headers = {k: owner.csrf if v == "<right>" else v for k, v in headers.items()}
    resp = await client.post("/v1/projects", json={"name": "x"}, headers=headers)
    assert resp.status == 403
    assert (await api_error(resp))["code"] == "csrf_failed"
    ok = await client.post("/v1/projects", json={"name": "x"},
                           headers={"X-CSRF-Token": owner.csrf,
                                    "Origin": f"http://{client.host}:{client.port}"})
    assert ok.status == 201


async def test_password_change_ends_other_sessions(
    client: TestClient[Any, Any], owner: Account, aiohttp_client: Any
) -> None:
    other = await aiohttp_client(client.server)
    assert (await other.post("/v1/session", json={"email": owner.email,
                                                  "password": owner.password})).status == 200
    bad = await client.post("/v1/account/password", headers=owner.h(),
                            json={"currentPassword": "wrong password!", "newPassword": "x" * 12})
    assert bad.status == 403
    resp = await client.post("/v1/account/password", headers=owner.h(),
                             json={"currentPassword": owner.password,
                                   "newPassword": "a new long passphrase"})
    assert resp.status == 200
    assert (await other.get("/v1/session")).status == 401  # the other session was ended
    assert (await client.get("/v1/session")).status == 200
    client.session.cookie_jar.clear()
    assert (await client.post("/v1/session", json={"email": owner.email,
                                                   "password": owner.password})).status == 401
    resp = await client.post("/v1/session", json={"email": owner.email,
                                                  "password": "a new long passphrase"})
    assert resp.status == 200


async def test_login_is_rate_limited_per_account(make_client: ClientFactory) -> None:
    client = await make_client(login_limit_per_account=3, login_limit_per_ip=100)
    owner = await sign_up(client)
    for _ in range(3):
        resp = await client.post("/v1/session", json={"email": owner.email, "password": "x" * 12})
        assert resp.status == 401
    resp = await client.post("/v1/session", json={"email": owner.email,
                                                  "password": owner.password})
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) >= 1
    assert (await api_error(resp))["code"] == "rate_limited"


async def test_login_is_rate_limited_per_ip(make_client: ClientFactory) -> None:
    client = await make_client(login_limit_per_account=100, login_limit_per_ip=4)
    for i in range(4):
        resp = await client.post("/v1/session", json={"email": f"u{i}@example.com",
                                                      "password": "x" * 12})
        assert resp.status == 401
    resp = await client.post("/v1/session", json={"email": "u9@example.com", "password": "x" * 12})
    assert resp.status == 429


async def test_duplicate_sign_up_is_refused_generically(
    client: TestClient[Any, Any], owner: Account
) -> None:
    resp = await client.post("/v1/accounts", json={"email": owner.email.upper(),
                                                   "password": "another password"})
    assert resp.status == 409
    assert (await api_error(resp))["code"] == "signup_failed"
    # The owner is told, in the audit log, that someone tried to register the address.
    entries = (await (await client.get("/v1/audit")).json())["entries"]
    attempt = next(e for e in entries if e["action"] == "signup.duplicate")
    assert attempt["actor"] == "anonymous" and attempt["ip"] == "127.0.0.1"
    assert attempt["requestId"] == resp.headers["X-Request-Id"]
    assert "another password" not in str(entries)


@pytest.mark.parametrize(("body", "status", "code"), [
    (b"{not json", 400, "invalid_json"),
    (b"[]", 400, "invalid_body"),
    (b'{"email": "nope", "password": "long enough pw"}', 400, "invalid_email"),
    (b'{"email": "a@example.com", "password": "short"}', 400, "invalid_password"),
    (b'{"email": "a@example.com", "password": 12345678901}', 400, "invalid_password"),
    (b'{"email": "a@example.com", "password": "' + b"x" * 2000 + b'"}', 400, "invalid_password"),
    (b'{"email": "\xff\xfe@example.com", "password": "long enough pw"}', 400, "invalid_encoding"),
    (b'{"email": "a@example.com", "password": NaN}', 400, "invalid_json"),
    (b"[" * 100_000, 413, "payload_too_large"),
])
async def test_sign_up_rejects_hostile_input(
    client: TestClient[Any, Any], body: bytes, status: int, code: str
) -> None:
    resp = await client.post("/v1/accounts", data=body,
                             headers={"Content-Type": "application/json"})
    assert resp.status == status, await resp.text()
    assert (await api_error(resp))["code"] == code


async def test_sign_up_wrong_content_type_is_415(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/v1/accounts", data={"email": "a@example.com", "password": "p" * 12})
    assert resp.status == 415
    assert (await api_error(resp))["code"] == "unsupported_media_type"


async def test_audit_log_records_sign_in_outcomes_without_secrets(
    client: TestClient[Any, Any], owner: Account, settings: Any
) -> None:
    await client.post("/v1/session", json={"email": owner.email, "password": "wrong password"})
    await client.post("/v1/session", json={"email": owner.email, "password": owner.password},
                      headers={"X-Request-Id": "req-test-1"})
    resp = await client.get("/v1/audit")
    entries = (await resp.json())["entries"]
    actions = [e["action"] for e in entries]
    assert "signin.failure" in actions and "signin.success" in actions
    success = next(e for e in entries if e["action"] == "signin.success")
    assert success["requestId"] == "req-test-1"
    assert success["at"].endswith("Z")
    dump = "\n".join(str(r) for r in db_rows(settings.db, "SELECT * FROM audit_log"))
    assert owner.password not in dump and "wrong password" not in dump


async def test_unknown_route_and_method_get_json_errors(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/v1/nothing-here")
    assert resp.status == 404 and (await api_error(resp))["code"] == "not_found"
    resp = await client.put("/v1/session")
    assert resp.status == 405 and (await api_error(resp))["code"] == "method_not_allowed"
