"""The mitmproxy adapter end to end: real mitmdump in reverse mode running the same stages."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import IO

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from proxy.mitm_addon import ActiveleadMitm, mitmdump_command
from proxy.settings import default_honeypot_name
from proxy.tokens import TOKEN_FIELD, TokenSigner
from tests.proxy.conftest import site_config
from tests.services import ROOT, free_port, wait_for_port

SECRET = "mitm-secret-0123456789"
HP = default_honeypot_name("shop")
UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/126.0.0.0 Safari/537.36")


def spawn(cmd: list[str], env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.slow
async def test_mitmdump_reverse_mode_runs_the_stages(origin: TestServer, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "activelead.yaml"
    config.write_text(yaml.safe_dump({
        "proxy": {"state_dir": str(tmp_path / "state"), "render_secret": SECRET,
                  "trusted_proxies": ["127.0.0.0/8"]},
        "sites": [site_config(str(origin.make_url("")))],
    }))
    cmd = mitmdump_command(config=str(config), site="shop", host="127.0.0.1", port=port,
                           extra=["--set", f"confdir={tmp_path / 'mitm'}"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = (tmp_path / "mitmdump.log").open("wb")
    proc = spawn(cmd, env, log)
    try:
        wait_for_port(port, 30)
        base = f"http://127.0.0.1:{port}"
        hdrs = {"Host": "site.test", "User-Agent": UA, "X-Forwarded-For": "81.2.69.160",
                "Accept-Language": "en", "Accept": "text/html"}
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{base}/contact", data={"email": "bot@mailinator.com"},
                              headers=hdrs) as r:
                assert r.status == 403
                assert r.headers["Cache-Control"] == "no-store, private"
            tok = TokenSigner(SECRET, [], 7200).sign(
                "shop", "/contact", HP, now_ms=int(time.time() * 1000) - 9000)
            async with s.post(f"{base}/contact", data={
                "email": "jane.doe@example.org", TOKEN_FIELD: tok, HP: ""},
                headers={**hdrs, "X-Activelead-Score": "99"}) as r:
                assert r.status == 200
                echo = await r.json()
            sent = dict(echo["headers"])
            assert sent["X-Activelead-Decision"] == "allowed"
            scores = [v for k, v in echo["headers"] if k.lower() == "x-activelead-score"]
            assert len(scores) == 1 and scores != ["99"]  # the visitor's own value was dropped
            # Forwarding headers as `activelead proxy` sends them (127.0.0.1 is trusted here)
            assert sent["X-Forwarded-For"] == "81.2.69.160, 127.0.0.1"
            assert sent["X-Real-IP"] == "81.2.69.160"
            assert sent["X-Forwarded-Host"] == "site.test"
            assert sent["Forwarded"] == 'for=127.0.0.1;proto=http;host="site.test"'
            async with s.get(f"{base}/echo", headers={
                "Host": "site.test", "X-Forwarded-Host": "evil.test", "X-Original-URL": "/admin",
            }) as r:
                got = dict((await r.json())["headers"])
            assert got["X-Forwarded-Host"] == "evil.test"  # from a trusted proxy: kept
            assert got["X-Original-URL"] == "/admin"
            assert echo["body"] == "email=jane.doe%40example.org"
            async with s.get(f"{base}/html", headers=hdrs) as r:
                page = await r.text()
            assert re.search(rf'name="{TOKEN_FIELD}" value="v1\.', page)
            assert f'name="{HP}"' in page
            async with s.get(f"{base}/html?coding=gzip", headers=hdrs) as r:
                assert r.headers["Content-Encoding"] == "gzip"  # re-encoded as the origin sent it
                assert r.headers["ETag"] == 'W/"v1"'  # weakened: the bytes differ per visitor
                assert r.headers["Cache-Control"] == "no-store, private"
                assert f'name="{TOKEN_FIELD}"' in await r.text()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


# mitmproxy's test helpers import its filter grammar, written against an older pyparsing
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_addon_rewrites_forwarding_headers_of_an_untrusted_peer(tmp_path: Path) -> None:
    """In process, with mitmproxy's own test flow: a visitor's forwarding headers are replaced
    by what mitmproxy saw, as `activelead proxy` does; the connection's headers are left alone."""
    from mitmproxy.test import taddons, tflow

    config = tmp_path / "activelead.yaml"
    config.write_text(yaml.safe_dump({
        "proxy": {"state_dir": str(tmp_path / "state"), "render_secret": SECRET},
        "sites": [site_config("http://127.0.0.1:9")],
    }))
    addon = ActiveleadMitm()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, activelead_config=str(config))
        flow = tflow.tflow()
        for name, value in [("X-Forwarded-For", "6.6.6.6"), ("X-Real-IP", "6.6.6.6"),
                            ("X-Original-URL", "/admin"), ("X-Activelead-Score", "0"),
                            ("Connection", "keep-alive"), ("Host", "site.test")]:
            flow.request.headers[name] = value
        peer = flow.client_conn.peername[0]
        await addon.request(flow)
    headers = flow.request.headers
    assert headers.get_all("X-Forwarded-For") == [peer]
    assert headers.get_all("X-Real-IP") == [peer]
    assert headers.get_all("X-Forwarded-Host") == ["site.test"] == headers.get_all("Host")
    for gone in ("X-Original-URL", "X-Activelead-Score"):
        assert gone not in headers
    assert headers["Connection"] == "keep-alive"  # mitmproxy's to manage
    assert "6.6.6.6" not in str(list(headers.items(multi=True)))
