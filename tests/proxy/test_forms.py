"""Protected form routes: bounded read, scoring, the block actions, headers and the exact body."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.settings import default_honeypot_name
from proxy.tokens import TOKEN_FIELD, TokenSigner
from tests.proxy.conftest import SEEN, MakeProxy, echoed, header_values, site_config

SECRET = "test-secret-0123456789"
HP = default_honeypot_name("shop")
UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/126.0.0.0 Safari/537.36")
BROWSER = {"Host": "site.test", "User-Agent": UA, "Accept": "text/html",
           "Accept-Language": "en-GB,en;q=0.9", "X-Forwarded-For": "81.2.69.160"}


def token(path: str = "/contact", age_ms: int = 9000, site: str = "shop") -> str:
    return TokenSigner(SECRET, [], 7200).sign(site, path, HP, now_ms=int(time.time() * 1000)
                                              - age_ms)


def good_form(**extra: str) -> str:
    fields = {"email": "jane.doe@example.org", "message": "Hello, a quote for 3 chairs please.",
              TOKEN_FIELD: token(), HP: "", **extra}
    return "&".join(f"{quote(k)}={quote(v)}" for k, v in fields.items())


async def start(make_proxy: MakeProxy, origin: TestServer, **site: Any) -> TestServer:
    return await make_proxy([site_config(str(origin.make_url("")), **site)],
                            trusted_proxies=["127.0.0.0/8"])


async def post(proxy: TestServer, path: str, body: bytes | str, ctype: str = (
        "application/x-www-form-urlencoded"), **headers: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.post(
        f"http://127.0.0.1:{proxy.port}{path}", data=body,
        headers={**BROWSER, "Content-Type": ctype, **headers}, allow_redirects=False,
    ) as r:
        return r.status, dict(r.headers), await r.read()


async def test_good_submission_is_forwarded_with_result_headers(
    origin: TestServer, make_proxy: MakeProxy
) -> None:
    proxy = await start(make_proxy, origin)
    status, headers, body = await post(proxy, "/contact", good_form())
    assert status == 200
    echo = echoed(body)
    assert header_values(echo, "X-Activelead-Decision") == ["allowed"]
    assert header_values(echo, "X-Activelead-Score") == ["0"]
    assert header_values(echo, "X-Activelead-Trace-Id")[0].startswith("tr_")
    assert header_values(echo, "X-Activelead-Labels") == [""]
    assert headers["Cache-Control"] == "no-store, private"
    assert "X-Activelead-Score" not in headers  # not echoed unless the site asks


async def test_body_reaches_origin_byte_for_byte_minus_proxy_fields(
    origin: TestServer, make_proxy: MakeProxy
) -> None:
    proxy = await start(make_proxy, origin)
    pieces = ["z=%7e%7E+x", "email=jane.doe%40example.org", "message=caf%C3%A9", "",
              "weird=a=b", "flag"]
    sent = [pieces[0], f"{TOKEN_FIELD}={quote(token())}", *pieces[1:4], f"{HP}=", *pieces[4:]]
    status, _, body = await post(proxy, "/contact", "&".join(sent))
    assert status == 200
    echo = echoed(body)
    assert echo["body"] == "&".join(pieces)
    assert header_values(echo, "Content-Length") == [str(len(echo["body"]))]


async def test_multipart_with_file_is_passed_unchanged(
    origin: TestServer, make_proxy: MakeProxy
) -> None:
    proxy = await start(make_proxy, origin)
    b = "XyZ123"
    file_bytes = bytes(range(256)) * 10
    parts = [
        (f'--{b}\r\nContent-Disposition: form-data; name="email"\r\n\r\n'
         "jane.doe@example.org\r\n").encode(),
        (f'--{b}\r\nContent-Disposition: form-data; name="{TOKEN_FIELD}"\r\n\r\n'
         f"{token()}\r\n").encode(),
        (f'--{b}\r\nContent-Disposition: form-data; name="cv"; filename="cv.bin"\r\n'
         "Content-Type: application/octet-stream\r\n\r\n").encode() + file_bytes + b"\r\n",
        (f'--{b}\r\nContent-Disposition: form-data; name="{HP}"\r\n\r\n\r\n').encode(),
        (f'--{b}\r\nContent-Disposition: form-data; name="message"\r\n'
         "Content-Type: text/plain; charset=iso-8859-1\r\n\r\n").encode() + "café".encode(
            "latin-1") + b"\r\n",
        f"--{b}--\r\n".encode(),
    ]
    status, _, body = await post(proxy, "/contact", b"".join(parts),
                                 f"multipart/form-data; boundary={b}")
    assert status == 200
    echo = echoed(body)
    expected = parts[0] + parts[2] + parts[4] + parts[5]
    assert echo["body"].encode("latin-1") == expected
    assert header_values(echo, "X-Activelead-Decision") == ["allowed"]


async def test_json_body_is_scored_and_token_removed(
    origin: TestServer, make_proxy: MakeProxy
) -> None:
    proxy = await start(make_proxy, origin)
    data = {"email": "jane.doe@example.org", "message": "hi there", TOKEN_FIELD: token(),
            "n": 3}
    status, _, body = await post(proxy, "/contact", json.dumps(data), "application/json")
    assert status == 200
    echo = echoed(body)
    assert json.loads(echo["body"].encode("latin-1")) == {
        "email": "jane.doe@example.org", "message": "hi there", "n": 3}


@pytest.mark.parametrize("mapped", [True, False])
async def test_mapped_message_field_is_scored_as_text(
    origin: TestServer, make_proxy: MakeProxy, mapped: bool
) -> None:
    """A form builder's `_details` field looks like no text field by its name: mapped as the
    message, its link spam is seen."""
    form: dict[str, Any] = {"id": "contact", "path": "/contact"}
    if mapped:
        form["fields"] = {"message": ["_details"]}
    proxy = await start(make_proxy, origin, mode="monitor", forms=[form])
    spam = ("Cheap SEO services, buy backlinks now: http://seo.example/a http://seo.example/b "
            "http://seo.example/c")
    status, _, body = await post(proxy, "/contact", good_form(message="", _details=spam))
    assert status == 200
    labels = header_values(echoed(body), "X-Activelead-Labels")[0].split(",")
    assert ("link_spam" in labels) is mapped


async def test_spam_is_blocked_with_403_and_no_store(
    origin: TestServer, make_proxy: MakeProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await start(make_proxy, origin)
    caplog.set_level(logging.INFO, logger="activelead.events")
    status, headers, body = await post(
        proxy, "/contact", "email=bot%40mailinator.com&message=hi", **{"User-Agent": "curl/8"})
    assert status == 403
    assert b"Submission refused" in body
    assert headers["Cache-Control"] == "no-store, private"
    assert origin.app[SEEN] == []
    events = [json.loads(r.getMessage()) for r in caplog.records
              if r.name == "activelead.events"]
    assert len(events) == 1
    ev = events[0]
    assert ev["action"] == "blocked" and ev["mode"] == "enforce"
    assert ev["siteId"] == "shop" and ev["projectId"] == "prj_1" and ev["formId"] == "contact"
    assert ev["ip"] == "81.2.69.160" and ev["email"] == "bot@mailinator.com"
    assert ev["receivedAt"].endswith("Z")
    assert "disposable_email" in ev["verdict"]["labels"]
    assert "token_missing" in ev["verdict"]["labels"]


async def test_monitor_mode_forwards_and_records_would_block(
    origin: TestServer, make_proxy: MakeProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await start(make_proxy, origin, mode="monitor", result_headers_on_response=True)
    caplog.set_level(logging.INFO, logger="activelead.events")
    status, headers, body = await post(proxy, "/contact", "email=bot%40mailinator.com")
    assert status == 200
    assert header_values(echoed(body), "X-Activelead-Decision") == ["blocked"]
    assert headers["X-Activelead-Decision"] == "blocked"
    events = [json.loads(r.getMessage()) for r in caplog.records
              if r.name == "activelead.events"]
    assert events[0]["action"] == "would_block" and events[0]["mode"] == "monitor"


@pytest.mark.parametrize(("action", "status", "marker"), [
    ("fake_success", 200, b"Thank you"),
    ("redirect", 303, b""),
])
async def test_block_actions(
    origin: TestServer, make_proxy: MakeProxy, action: str, status: int, marker: bytes
) -> None:
    form = {"id": "contact", "path": "/contact", "action": action,
            "redirect_url": "https://site.test/thanks"}
    proxy = await start(make_proxy, origin, forms=[form])
    got, headers, body = await post(proxy, "/contact", "email=bot%40mailinator.com")
    assert got == status
    assert marker in body
    assert headers["Cache-Control"] == "no-store, private"
    if action == "redirect":
        assert headers["Location"] == "https://site.test/thanks"
    assert origin.app[SEEN] == []


@pytest.mark.parametrize(("make_token", "label"), [
    (lambda: "", "token_missing"),
    (lambda: "v1.deadbeef.1.x.y", "token_invalid"),
    (lambda: token(age_ms=3 * 3600 * 1000), "token_expired"),
    (lambda: token(path="/other"), "token_invalid"),
    (lambda: token(site="other"), "token_invalid"),
    (lambda: token(age_ms=300), "too_fast"),
])
async def test_token_states(
    origin: TestServer, make_proxy: MakeProxy, caplog: pytest.LogCaptureFixture,
    make_token: Any, label: str,
) -> None:
    proxy = await start(make_proxy, origin, mode="monitor")
    caplog.set_level(logging.INFO, logger="activelead.events")
    await post(proxy, "/contact", good_form(**{TOKEN_FIELD: make_token()}))
    events = [json.loads(r.getMessage()) for r in caplog.records
              if r.name == "activelead.events"]
    assert label in events[0]["verdict"]["labels"]


async def test_token_replay_is_caught(origin: TestServer, make_proxy: MakeProxy) -> None:
    proxy = await start(make_proxy, origin)
    form = good_form()
    first, _, _ = await post(proxy, "/contact", form)
    second, _, _ = await post(proxy, "/contact", form)
    assert (first, second) == (200, 403)


async def test_missing_token_is_blocked_even_with_a_clean_score(
    origin: TestServer, make_proxy: MakeProxy
) -> None:
    proxy = await start(make_proxy, origin)
    clean = "email=jane.doe%40example.org&message=hello"
    assert (await post(proxy, "/contact", clean))[0] == 403
    # the signup form opted out (require_token: false): same body goes through
    assert (await post(proxy, "/signup", clean))[0] == 200


async def test_honeypot_filled_is_blocked(origin: TestServer, make_proxy: MakeProxy) -> None:
    proxy = await start(make_proxy, origin)
    status, _, _ = await post(proxy, "/contact", good_form(**{HP: "http://spam.example"}))
    assert status == 403


@pytest.mark.parametrize(("body", "ctype", "status", "text"), [
    (b"email=%FF%FE", "application/x-www-form-urlencoded", 400, b"not valid utf-8"),
    (b"a=1", "application/x-www-form-urlencoded; charset=klingon", 400, b"unsupported charset"),
    (b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\nx', "multipart/form-data; "
     "boundary=b", 400, b"truncated"),
    (b"x", "multipart/form-data", 400, b"boundary"),
    (b"{not json", "application/json", 400, b"invalid JSON"),
    (b"[1,2]", "application/json", 400, b"must be an object"),
    (b"a=" + b"x" * 5000, "application/x-www-form-urlencoded", 413, b"at most 2048 bytes"),
])
async def test_bad_bodies_get_a_clear_4xx(
    origin: TestServer, make_proxy: MakeProxy, body: bytes, ctype: str, status: int, text: bytes
) -> None:
    form = {"id": "contact", "path": "/contact", "max_body_bytes": 2048}
    proxy = await start(make_proxy, origin, forms=[form])
    got, _, answer = await post(proxy, "/contact", body, ctype)
    assert got == status
    assert text in answer
    assert origin.app[SEEN] == []


async def test_latin1_form_charset(origin: TestServer, make_proxy: MakeProxy) -> None:
    proxy = await start(make_proxy, origin, mode="monitor")
    body = "message=caf%E9&_charset_=iso-8859-1&email=jane.doe%40example.org"
    status, _, echo = await post(proxy, "/contact", body)
    assert status == 200
    assert echoed(echo)["body"] == body


async def test_chunked_form_body_over_limit_is_413(
    origin: TestServer, make_proxy: MakeProxy
) -> None:
    form = {"id": "contact", "path": "/contact", "max_body_bytes": 4096}
    proxy = await start(make_proxy, origin, forms=[form])

    async def gen() -> Any:
        for _ in range(10):
            yield b"a=" + b"x" * 1000 + b"&"

    async with aiohttp.ClientSession() as s, s.post(
        f"http://127.0.0.1:{proxy.port}/contact", data=gen(),
        headers={**BROWSER, "Content-Type": "application/x-www-form-urlencoded"},
    ) as r:
        assert r.status == 413
    assert origin.app[SEEN] == []


@pytest.mark.parametrize(("on_error", "status", "action"), [
    ("forward", 200, "error_forwarded"),
    ("block", 403, "blocked"),
])
async def test_scoring_failure_follows_on_error(
    origin: TestServer, make_proxy: MakeProxy, caplog: pytest.LogCaptureFixture,
    on_error: str, status: int, action: str,
) -> None:
    """A Redis that accepts connections and never answers makes scoring overrun its budget."""
    hung: list[asyncio.StreamWriter] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hung.append(writer)

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        form = {"id": "contact", "path": "/contact", "on_error": on_error,
                "score_timeout_s": 0.1}
        site = site_config(str(origin.make_url("")), forms=[form], render={"enabled": False})
        proxy = await make_proxy([site],
                                 trusted_proxies=["127.0.0.0/8"],
                                 redis=f"redis://127.0.0.1:{port}/0")
        caplog.set_level(logging.INFO, logger="activelead.events")
        got, _, body = await post(proxy, "/contact", good_form())
        assert got == status
        events = [json.loads(r.getMessage()) for r in caplog.records
                  if r.name == "activelead.events"]
        assert events[0]["action"] == action
        assert events[0]["verdict"]["degraded"] is True
        assert "degraded" in events[0]["verdict"]["labels"]
        if status == 200:
            assert header_values(echoed(body), "X-Activelead-Labels") == ["degraded"]
    finally:
        for w in hung:
            w.close()
        server.close()
        await server.wait_closed()


async def test_unprotected_post_and_mode_off_pass_through(
    origin: TestServer, make_proxy: MakeProxy
) -> None:
    proxy = await start(make_proxy, origin, mode="off")
    status, headers, body = await post(proxy, "/contact", "email=bot%40mailinator.com")
    assert status == 200
    assert header_values(echoed(body), "X-Activelead-Decision") == []
    assert "no-store" not in headers.get("Cache-Control", "")


async def test_client_cannot_inject_result_headers(
    origin: TestServer, make_proxy: MakeProxy
) -> None:
    proxy = await start(make_proxy, origin, mode="monitor")
    _, _, body = await post(proxy, "/contact", "email=bot%40mailinator.com",
                            **{"X-Activelead-Decision": "allowed", "X-Activelead-Score": "0"})
    echo = echoed(body)
    assert header_values(echo, "X-Activelead-Decision") == ["blocked"]
    assert header_values(echo, "X-Activelead-Score") != ["0"]


async def test_expired_token_alone_does_not_block(origin: TestServer, make_proxy: MakeProxy) -> None:
    """A tab left open past token_ttl_s: labelled token_expired, but the person gets through."""
    proxy = await start(make_proxy, origin)
    status, _, body = await post(proxy, "/contact",
                                 good_form(**{TOKEN_FIELD: token(age_ms=3 * 3600 * 1000)}))
    assert status == 200
    assert "token_expired" in header_values(echoed(body), "X-Activelead-Labels")[0]
