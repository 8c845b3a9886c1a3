"""One error shape everywhere: `{"error": {"code", "message", "details", "requestId"}}` — for our own
ApiErrors, aiohttp's HTTP errors (404, 405, 413) and unexpected exceptions (500) alike; plain
text on the Akismet-compatible endpoints, as Akismet clients expect."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from control_api.app import create_app
from control_api.openapi import DOCUMENT
from tests.control_api.conftest import api_error, make_settings, shared_engine


async def test_every_kind_of_failure_has_the_nested_shape(client: TestClient[Any, Any]) -> None:
    cases = [
        (await client.get("/v1/nothing-here"), 404, "not_found"),
        (await client.put("/v1/session"), 405, "method_not_allowed"),
        (await client.post("/v1/ingest", json={}), 401, "missing_credentials"),
        (
            await client.post("/v1/accounts", data=b"{", headers={"Content-Type": "application/json"}),
            400,
            "invalid_json",
        ),
        (
            await client.post("/v1/accounts", data=b"x", headers={"Content-Type": "text/plain"}),
            415,
            "unsupported_media_type",
        ),
        (
            await client.post("/v1/accounts", json={"email": "nope", "password": "x" * 12}),
            400,
            "invalid_email",
        ),
    ]
    for resp, status, code in cases:
        assert resp.status == status, await resp.text()
        error = await api_error(resp)
        assert error["code"] == code
    # Field-level problems travel in details.
    invalid = await api_error(cases[-1][0])
    assert invalid["details"] == {"email": "not a valid e-mail address"}


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        ("application/json", True),  # as clients send it: taken without parsing
        ("application/json; charset=utf-8", True),
        ("Application/JSON; charset=UTF8", True),  # parsed, still JSON in UTF-8
        ("application/json; charset=latin-1", False),
        ("text/json", False),
    ],
)
async def test_json_bodies_by_content_type(
    client: TestClient[Any, Any], content_type: str, accepted: bool
) -> None:
    resp = await client.post("/v1/accounts", data=b"[]", headers={"Content-Type": content_type})
    code = (await api_error(resp))["code"]
    assert (code != "unsupported_media_type") is accepted, code


async def _chunks(total: int) -> AsyncIterator[bytes]:
    yield b'{"pad": "'
    yield b"x" * total
    yield b'"}'


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_over_the_limit_is_a_413(client: TestClient[Any, Any], chunked: bool) -> None:
    # 16 KiB is the sign-up body limit; chunked, the size is only known while reading.
    data: Any = _chunks(20_000) if chunked else b'{"pad": "' + b"x" * 20_000 + b'"}'
    resp = await client.post("/v1/accounts", data=data, headers={"Content-Type": "application/json"})
    assert resp.status == 413
    assert (await api_error(resp))["code"] == "payload_too_large"


async def test_request_id_is_echoed_in_the_error(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/v1/session", headers={"X-Request-Id": "req-abc.123"})
    assert (await api_error(resp))["requestId"] == "req-abc.123"
    # An unreasonable id is replaced, not reflected.
    resp = await client.get("/v1/session", headers={"X-Request-Id": "<script>"})
    assert (await api_error(resp))["requestId"].startswith("req_")


async def test_unexpected_exception_is_a_500_without_internals(
    aiohttp_client: Any, tmp_path: Path, caplog: Any
) -> None:
    app = create_app(make_settings(tmp_path), engine=shared_engine())

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret internal detail")

    app.router.add_get("/v1/boom", boom)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    resp = await client.get("/v1/boom")
    assert resp.status == 500
    error = await api_error(resp)
    assert (error["code"], error["message"], error["details"]) == ("internal_error", "internal error", {})
    assert "secret" not in await resp.text()
    assert error["requestId"] in caplog.text  # the log has what the client does not


def test_openapi_error_schema_matches_the_answers() -> None:
    schema = DOCUMENT["components"]["schemas"]["Error"]
    assert schema["required"] == ["error"]
    inner = schema["properties"]["error"]
    assert inner["required"] == ["code", "message", "details"]
    assert set(inner["properties"]) == {"code", "message", "details", "requestId"}
    ingest = DOCUMENT["paths"]["/v1/ingest"]["post"]["responses"]["4XX"]
    assert ingest["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    akismet = DOCUMENT["paths"]["/1.1/comment-check"]["post"]["responses"]["4XX"]
    assert set(akismet["content"]) == {"text/plain"}


async def test_akismet_endpoints_answer_errors_in_plain_text(client: TestClient[Any, Any]) -> None:
    cases = [
        (
            await client.post(
                "/1.1/comment-check", data=b'{"api_key": "x"}', headers={"Content-Type": "application/json"}
            ),
            415,
            "unsupported_media_type",
        ),
        (
            await client.post(
                "/1.1/comment-check",
                data=b"api_key=%FF",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ),
            400,
            "invalid_encoding",
        ),
        (await client.put("/1.1/verify-key"), 405, "method_not_allowed"),
    ]
    for resp, status, code in cases:
        assert resp.status == status
        assert resp.content_type == "text/plain"
        text = await resp.text()
        assert text and not text.startswith("{")
        assert resp.headers["X-akismet-debug-help"] == text
        assert resp.headers["X-Activelead-Error-Code"] == code
        assert resp.headers["X-Request-Id"]
    # A bad key is still Akismet's "invalid", not an error.
    resp = await client.post("/1.1/verify-key", data={"key": "al_live_nope"})
    assert (resp.status, await resp.text()) == (200, "invalid")
