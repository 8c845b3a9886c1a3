"""Akismet compatibility, proved with the `akismet` PyPI client pointed at a running server.

The client hard-codes rest.akismet.com; an httpx request hook rewrites only scheme, host and port
to the test server, which is exactly "existing Akismet clients switch by changing the host".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import akismet
import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer

from control_api.app import create_app
from tests.control_api.conftest import make_settings, shared_engine, sign_up

BLOG = "https://blog.example.com"


@pytest.fixture
async def server(aiohttp_server: Any, tmp_path: Any) -> TestServer:
    srv: TestServer = await aiohttp_server(
        create_app(make_settings(tmp_path, initial_credits=3), engine=shared_engine())
    )
    return srv


@pytest.fixture
async def api_key(server: TestServer, aiohttp_client: Any) -> str:
    client: TestClient[Any, Any] = await aiohttp_client(server)
    owner = await sign_up(client)
    return await owner.key((await owner.project())["id"])


@pytest.fixture
async def http(server: TestServer) -> AsyncIterator[httpx.AsyncClient]:
    async def to_server(request: httpx.Request) -> None:
        request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=server.port)

    async with httpx.AsyncClient(
        event_hooks={"request": [to_server]}, timeout=10, headers={"User-Agent": akismet.USER_AGENT}
    ) as client:
        yield client


async def test_akismet_client_verify_check_submit_and_usage(api_key: str, http: httpx.AsyncClient) -> None:
    client = await akismet.AsyncClient.validated_client(
        config=akismet.Config(key=api_key, url=BLOG), http_client=http
    )
    assert await client.verify_key() is True

    ham = await client.comment_check(
        user_ip="81.2.69.160",
        comment_type="comment",
        comment_author="Jane",
        comment_author_email="jane@example.org",
        comment_content="Thanks, this post helped me fix my build.",
        user_agent="Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0",
        permalink=f"{BLOG}/post-1",
    )
    assert ham == akismet.CheckResponse.HAM
    spam = await client.comment_check(
        user_ip="81.2.69.160",
        comment_type="comment",
        comment_author="x",
        comment_author_email="x@mailinator.com",
        comment_content="cheap pills",
    )
    assert spam == akismet.CheckResponse.DISCARD
    assert await client.submit_ham(user_ip="81.2.69.160", comment_author_email="x@mailinator.com") is True
    assert await client.submit_spam(user_ip="81.2.69.160", comment_author_email="jane@example.org") is True
    usage = await client.usage_limit()
    assert usage["usage"] == 2 and usage["limit"] == 3 and usage["throttled"] is False


async def test_akismet_invalid_key_and_headers(
    api_key: str, http: httpx.AsyncClient, server: TestServer
) -> None:
    bad = akismet.AsyncClient(config=akismet.Config(key="al_live_nope", url=BLOG), http_client=http)
    assert await bad.verify_key() is False
    with pytest.raises(akismet.APIKeyError):
        await bad.comment_check(user_ip="81.2.69.160")
    resp = await http.post(
        "https://rest.akismet.com/1.1/comment-check",
        data={
            "api_key": api_key,
            "blog": BLOG,
            "user_ip": "81.2.69.160",
            "comment_author_email": "x@mailinator.com",
        },
    )
    assert resp.text == "true"
    assert resp.headers["X-akismet-pro-tip"] == "discard"
    assert resp.headers["X-akismet-guid"].startswith("tr_")


async def test_akismet_out_of_credits_fails_open_with_alert(api_key: str, http: httpx.AsyncClient) -> None:
    form = {
        "api_key": api_key,
        "blog": BLOG,
        "user_ip": "81.2.69.160",
        "comment_author_email": "x@mailinator.com",
    }
    for _ in range(3):
        await http.post("https://rest.akismet.com/1.1/comment-check", data=form)
    resp = await http.post("https://rest.akismet.com/1.1/comment-check", data=form)
    assert resp.text == "false"
    assert resp.headers["X-akismet-alert-code"] == "10402"


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"api_key=%FF%FE&user_ip=1.2.3.4", "application/x-www-form-urlencoded", 400),
        (b'{"api_key": "x"}', "application/json", 415),
        (b"a=" + b"x" * 300_000, "application/x-www-form-urlencoded", 413),
    ],
)
async def test_akismet_rejects_bad_bodies(
    http: httpx.AsyncClient, content: bytes, content_type: str, status: int
) -> None:
    resp = await http.post(
        "https://rest.akismet.com/1.1/comment-check", content=content, headers={"Content-Type": content_type}
    )
    assert resp.status_code == status
    # Plain text, as Akismet answers: the message, and the code in a header.
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert resp.text and resp.headers["X-Activelead-Error-Code"]
