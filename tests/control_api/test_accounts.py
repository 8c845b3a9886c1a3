"""Accounts and sessions through the real app: cookies, CSRF, generic errors, limits, audit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from argon2 import PasswordHasher

from control_api.accounts import SIGNUP_ACCEPTED
from control_api.state import SERVICES
from tests.control_api.conftest import Account, ClientFactory, api_error, db_rows, sign_up


async def test_sign_up_then_sign_in_sets_http_only_samesite_cookie_and_hashes_with_argon2id(
    client: TestClient[Any, Any], settings: Any
) -> None:
    resp = await client.post(
        "/v1/accounts", json={"email": "A@Example.com ", "password": "correct horse battery"}
    )
    assert resp.status == 202
    assert await resp.json() == SIGNUP_ACCEPTED
    assert "Set-Cookie" not in resp.headers  # no session from sign-up, new address or not
    resp = await client.post(
        "/v1/session", json={"email": "a@example.com", "password": "correct horse battery"}
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["account"]["email"] == "a@example.com"
    assert body["csrfToken"]
    cookie = resp.headers["Set-Cookie"]
    assert "al_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # cookie_secure=False in tests (plain HTTP)
    ((stored,),) = db_rows(settings.db, "SELECT password_hash FROM accounts")
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    credits = await (await client.get("/v1/credits")).json()
    assert credits["balance"] == 1000  # the sign-up grant (initial_credits in tests)


async def test_secure_cookie_by_default(make_client: ClientFactory) -> None:
    client = await make_client(cookie_secure=True)
    await client.post("/v1/accounts", json={"email": "s@example.com", "password": "correct horse battery"})
    resp = await client.post(
        "/v1/session", json={"email": "s@example.com", "password": "correct horse battery"}
    )
    assert "Secure" in resp.headers["Set-Cookie"]


async def test_sign_in_wrong_password_and_unknown_account_look_the_same(
    client: TestClient[Any, Any], owner: Account
) -> None:
    wrong = await client.post("/v1/session", json={"email": owner.email, "password": "nope" * 4})
    unknown = await client.post("/v1/session", json={"email": "ghost@example.com", "password": "nope" * 4})
    assert wrong.status == unknown.status == 401
    a, b = await api_error(wrong), await api_error(unknown)
    assert (
        (a["code"], a["message"])
        == (b["code"], b["message"])
        == ("invalid_credentials", "invalid e-mail or password")
    )


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


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-CSRF-Token": "wrong"},
        {"X-CSRF-Token": "<right>", "Origin": "https://evil.example"},
        {"X-CSRF-Token": "<right>", "Origin": "null"},
    ],
)
async def test_cookie_writes_need_csrf_token_and_same_origin(
    client: TestClient[Any, Any], owner: Account, headers: dict[str, str]
) -> None:
    headers = {k: owner.csrf if v == "<right>" else v for k, v in headers.items()}
    resp = await client.post("/v1/projects", json={"name": "x"}, headers=headers)
    assert resp.status == 403
    assert (await api_error(resp))["code"] == "csrf_failed"
    ok = await client.post(
        "/v1/projects",
        json={"name": "x"},
        headers={"X-CSRF-Token": owner.csrf, "Origin": f"http://{client.host}:{client.port}"},
    )
    assert ok.status == 201


async def test_password_change_ends_other_sessions(
    client: TestClient[Any, Any], owner: Account, aiohttp_client: Any
) -> None:
    other = await aiohttp_client(client.server)
    assert (
        await other.post("/v1/session", json={"email": owner.email, "password": owner.password})
    ).status == 200
    bad = await client.post(
        "/v1/account/password",
        headers=owner.h(),
        json={"currentPassword": "wrong password!", "newPassword": "x" * 12},
    )
    assert bad.status == 403
    resp = await client.post(
        "/v1/account/password",
        headers=owner.h(),
        json={"currentPassword": owner.password, "newPassword": "a new long passphrase"},
    )
    assert resp.status == 200
    assert (await other.get("/v1/session")).status == 401  # the other session was ended
    assert (await client.get("/v1/session")).status == 200
    client.session.cookie_jar.clear()
    assert (
        await client.post("/v1/session", json={"email": owner.email, "password": owner.password})
    ).status == 401
    resp = await client.post("/v1/session", json={"email": owner.email, "password": "a new long passphrase"})
    assert resp.status == 200


async def test_login_is_rate_limited_per_account(make_client: ClientFactory) -> None:
    client = await make_client(login_limit_per_account=4, login_limit_per_ip=100)
    owner = await sign_up(client)  # its sign-in is the first of the 4
    for _ in range(3):
        resp = await client.post("/v1/session", json={"email": owner.email, "password": "x" * 12})
        assert resp.status == 401
    resp = await client.post("/v1/session", json={"email": owner.email, "password": owner.password})
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) >= 1
    assert (await api_error(resp))["code"] == "rate_limited"


async def test_login_is_rate_limited_per_ip(make_client: ClientFactory) -> None:
    client = await make_client(login_limit_per_account=100, login_limit_per_ip=4)
    for i in range(4):
        resp = await client.post("/v1/session", json={"email": f"u{i}@example.com", "password": "x" * 12})
        assert resp.status == 401
    resp = await client.post("/v1/session", json={"email": "u9@example.com", "password": "x" * 12})
    assert resp.status == 429


def _shape(resp: ClientResponse, body: bytes) -> tuple[Any, ...]:
    """Everything a caller sees of an answer, less what differs per request."""
    per_request = {"Date", "X-Request-Id", "Content-Length"}
    return (resp.status, body, sorted(h for h in resp.headers if h not in per_request))


async def test_sign_up_answers_alike_for_a_new_and_a_taken_address(
    client: TestClient[Any, Any], owner: Account
) -> None:
    client.session.cookie_jar.clear()
    new = await client.post("/v1/accounts", json={"email": "new@example.com", "password": "another password"})
    taken = await client.post(
        "/v1/accounts", json={"email": owner.email.upper(), "password": "another password"}
    )
    assert _shape(new, await new.read()) == _shape(taken, await taken.read())
    assert new.status == 202 and await taken.json() == SIGNUP_ACCEPTED
    assert not client.session.cookie_jar  # no session either way
    assert (await client.get("/v1/session")).status == 401


async def test_sign_up_with_a_taken_address_leaves_the_account_alone(
    client: TestClient[Any, Any], owner: Account, aiohttp_client: Any, settings: Any
) -> None:
    before = db_rows(settings.db, "SELECT id, password_hash, password_changed_at FROM accounts")
    attacker = await aiohttp_client(client.server)
    resp = await attacker.post("/v1/accounts", json={"email": owner.email, "password": "attacker's password"})
    assert resp.status == 202
    assert db_rows(settings.db, "SELECT id, password_hash, password_changed_at FROM accounts") == before
    # The attacker's password opens nothing; the owner's session and password still work.
    signin = await attacker.post(
        "/v1/session", json={"email": owner.email, "password": "attacker's password"}
    )
    assert signin.status == 401
    assert (await client.get("/v1/session")).status == 200
    again = await attacker.post("/v1/session", json={"email": owner.email, "password": owner.password})
    assert again.status == 200
    # The owner is told, in the audit log, that someone tried to register the address.
    entries = (await (await client.get("/v1/audit")).json())["entries"]
    attempt = next(e for e in entries if e["action"] == "signup.duplicate")
    assert attempt["actor"] == "anonymous" and attempt["ip"] == "127.0.0.1"
    assert attempt["requestId"] == resp.headers["X-Request-Id"]
    assert "attacker's password" not in str(db_rows(settings.db, "SELECT * FROM audit_log"))


async def test_sign_up_spends_one_argon2_hash_whether_or_not_the_address_is_taken(
    client: TestClient[Any, Any], owner: Account
) -> None:
    services = client.app[SERVICES]
    real = services.hasher
    calls: list[str] = []

    class CountingHasher(PasswordHasher):
        def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
            calls.append("hash")
            return super().hash(password, salt=salt)

    services.hasher = CountingHasher(
        real.time_cost, real.memory_cost, real.parallelism, real.hash_len, real.salt_len, type=real.type
    )
    try:
        await client.post("/v1/accounts", json={"email": "fresh@example.com", "password": "another password"})
        assert calls == ["hash"]
        await client.post("/v1/accounts", json={"email": owner.email, "password": "another password"})
        assert calls == ["hash", "hash"]
        # Sign-in checks an unknown address against the start-up dummy hash: no extra hashing
        # on the first such request (which would make it slower than a real account's).
        await client.post("/v1/session", json={"email": "ghost@example.com", "password": "another password"})
        assert calls == ["hash", "hash"]
    finally:
        services.hasher = real
    assert client.app[SERVICES].dummy_hash.startswith("$argon2id$")


async def test_racing_sign_ups_for_one_new_address_create_one_account(
    client: TestClient[Any, Any], settings: Any
) -> None:
    answers = await asyncio.gather(
        *(
            client.post("/v1/accounts", json={"email": "race@example.com", "password": f"password {i:04d}"})
            for i in range(6)
        )
    )
    assert [a.status for a in answers] == [202] * 6
    assert db_rows(settings.db, "SELECT COUNT(*) FROM accounts") == [(1,)]
    assert db_rows(settings.db, "SELECT action, COUNT(*) FROM audit_log GROUP BY action ORDER BY action") == [
        ("account.created", 1),
        ("signup.duplicate", 5),
    ]


async def test_sign_up_is_rate_limited_per_ip_for_new_and_taken_addresses(
    make_client: ClientFactory,
) -> None:
    client = await make_client(signup_limit_per_ip=3)
    owner = await sign_up(client)  # 1
    assert (
        await client.post("/v1/accounts", json={"email": owner.email, "password": "x" * 12})
    ).status == 202  # 2
    assert (
        await client.post("/v1/accounts", json={"email": "b@example.com", "password": "x" * 12})
    ).status == 202  # 3
    for email in (owner.email, "c@example.com"):
        resp = await client.post("/v1/accounts", json={"email": email, "password": "x" * 12})
        assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
        assert (await api_error(resp))["code"] == "rate_limited"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[]", 400, "invalid_body"),
        (b'{"email": "nope", "password": "long enough pw"}', 400, "invalid_email"),
        (b'{"email": "a@example.com", "password": "short"}', 400, "invalid_password"),
        (b'{"email": "a@example.com", "password": 12345678901}', 400, "invalid_password"),
        (b'{"email": "a@example.com", "password": "' + b"x" * 2000 + b'"}', 400, "invalid_password"),
        (b'{"email": "\xff\xfe@example.com", "password": "long enough pw"}', 400, "invalid_encoding"),
        (b'{"email": "a@example.com", "password": NaN}', 400, "invalid_json"),
        (b"[" * 100_000, 413, "payload_too_large"),
    ],
)
async def test_sign_up_rejects_hostile_input(
    client: TestClient[Any, Any], body: bytes, status: int, code: str
) -> None:
    resp = await client.post("/v1/accounts", data=body, headers={"Content-Type": "application/json"})
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
    await client.post(
        "/v1/session",
        json={"email": owner.email, "password": owner.password},
        headers={"X-Request-Id": "req-test-1"},
    )
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
