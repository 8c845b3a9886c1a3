"""TLS: per-site certificates by SNI, reload without restart, redirect + HSTS, origin TLS."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.server import serve
from proxy.settings import ProxySettings
from rules.engine import Engine
from tests.proxy.conftest import origin_app, site_config
from tests.proxy.rawhttp import status_of


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def write_cert(ca: trustme.CA, host: str, directory: Path) -> tuple[Path, Path]:
    cert = ca.issue_cert(host)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{host}.pem", directory / f"{host}.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(cert_path), append=True)
    cert.private_key_pem.write_to_path(str(key_path))
    return cert_path, key_path


@contextlib.asynccontextmanager
async def running(settings: ProxySettings, engine: Engine) -> AsyncIterator[dict[str, int]]:
    stop = asyncio.Event()
    ports: dict[str, int] = {}
    ready = asyncio.Event()

    def started(p: dict[str, int]) -> None:
        ports.update(p)
        ready.set()

    task = asyncio.create_task(serve(settings, started=started, stop=stop, engine=engine,
                                     admin=False))
    async with asyncio.timeout(10):
        await asyncio.wait([task, asyncio.create_task(ready.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    try:
        yield ports
    finally:
        stop.set()
        await task


async def https_get(port: int, host: str, ca: trustme.CA, path: str = "/echo") -> tuple[
        bytes, dict[str, Any]]:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                   server_hostname=host)
    cert = writer.get_extra_info("peercert")
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return data, cert


def settings_for(tmp_path: Path, origin_url: str, ca: trustme.CA, **tls: Any) -> ProxySettings:
    sites = []
    for sid, host in (("a", "a.test"), ("b", "b.test")):
        cert, key = write_cert(ca, host, tmp_path / "certs")
        sites.append(site_config(origin_url, id=sid, hosts=[host], forms=[],
                                 tls={"cert_file": str(cert), "key_file": str(key), **tls}))
    return ProxySettings(
        proxy={"host": "127.0.0.1", "port": 0, "tls_port": 0, "tls_reload_interval_s": 0.1,
               "state_dir": str(tmp_path / "state"), "render_secret": "s" * 20},
        sites=sites,
    )


async def test_sni_picks_each_sites_certificate_and_reloads(
    origin: TestServer, engine: Engine, ca: trustme.CA, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, str(origin.make_url("")), ca, hsts_max_age_s=600)
    async with running(settings, engine) as ports:
        for host in ("a.test", "b.test"):
            data, cert = await https_get(ports["https"], host, ca)
            assert status_of(data) == 200
            assert ("DNS", host) in cert["subjectAltName"]
            assert b"Strict-Transport-Security: max-age=600" in data
            assert b'"X-Forwarded-Proto", "https"' in data
        data, _ = await https_get(ports["https"], "a.test", ca, "/status/404")
        assert status_of(data) == 404 and b"Strict-Transport-Security: max-age=600" in data
        _, before = await https_get(ports["https"], "a.test", ca)
        await asyncio.sleep(0.05)
        write_cert(ca, "a.test", tmp_path / "certs")  # new certificate, same files
        await asyncio.sleep(0.5)
        _, after = await https_get(ports["https"], "a.test", ca)
        assert after["serialNumber"] != before["serialNumber"]


async def test_a_broken_new_certificate_keeps_the_loaded_one(
    origin: TestServer, engine: Engine, ca: trustme.CA, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A half-written or wrong file (a renewal in progress) must not take the site down."""
    settings = settings_for(tmp_path, str(origin.make_url("")), ca)
    async with running(settings, engine) as ports:
        _, before = await https_get(ports["https"], "a.test", ca)
        cert_path = tmp_path / "certs" / "a.test.pem"
        cert_path.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n")
        other_key = ca.issue_cert("a.test").private_key_pem  # a key that does not match
        await asyncio.sleep(0.5)
        data, still = await https_get(ports["https"], "a.test", ca)
        assert status_of(data) == 200 and still["serialNumber"] == before["serialNumber"]
        write_cert(ca, "a.test", tmp_path / "certs")
        other_key.write_to_path(str(tmp_path / "certs" / "a.test.key"))
        await asyncio.sleep(0.5)
        data, still = await https_get(ports["https"], "a.test", ca)
        assert status_of(data) == 200 and still["serialNumber"] == before["serialNumber"]
        write_cert(ca, "a.test", tmp_path / "certs")  # the renewal finished
        await asyncio.sleep(0.5)
        _, after = await https_get(ports["https"], "a.test", ca)
        assert after["serialNumber"] != before["serialNumber"]
    assert any("keeping the loaded certificate" in r.getMessage() for r in caplog.records)


async def test_plain_http_redirects_to_https(
    origin: TestServer, engine: Engine, ca: trustme.CA, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, str(origin.make_url("")), ca)
    async with running(settings, engine) as ports:
        reader, writer = await asyncio.open_connection("127.0.0.1", ports["http"])
        writer.write(b"GET /x?y=1 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        data = await reader.read()
        writer.close()
    assert status_of(data) == 308
    assert b"Location: https://a.test/x?y=1" in data


@pytest.mark.parametrize(("origin_tls", "status"), [
    ({}, 502),  # verification on by default: an unknown CA is refused
    ({"ca": True}, 200),
    ({"verify": False}, 200),
])
async def test_origin_tls_is_verified_by_default(
    make_proxy: Any, ca: trustme.CA, tmp_path: Path, origin_tls: dict[str, Any], status: int
) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    runner = web.AppRunner(origin_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        cfg: dict[str, Any] = {"verify": origin_tls.get("verify", True)}
        if origin_tls.get("ca"):
            ca_file = tmp_path / "ca.pem"
            ca.cert_pem.write_to_path(str(ca_file))
            cfg["ca_file"] = str(ca_file)
        proxy = await make_proxy([site_config(f"https://127.0.0.1:{port}", origin_tls=cfg)])
        # GET takes the fast path, an unprotected POST aiohttp's client: both verify
        for request in (b"GET /echo HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n",
                        b"POST /echo HTTP/1.1\r\nHost: site.test\r\nContent-Length: 3\r\n"
                        b"Connection: close\r\n\r\na=1"):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(request)
            data = await reader.read()
            writer.close()
            assert status_of(data) == status, request
    finally:
        await runner.cleanup()
