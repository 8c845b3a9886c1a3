"""The real control API (control_api/) for proxy tests: in this process or as its own process.

Both run on a fixed port over one SQLite file, so a test can stop (or SIGKILL) the control API
and start it again on the same data. `Tenant` is an account with a project, an API key and an
edge token, made through the control API's own HTTP API; its read methods ask the control API
(`GET /v1/events`, `GET /v1/credits`) what it stored and charged.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp.test_utils import TestServer

from control_api.app import create_app
from tests.control_api.conftest import make_settings, shared_engine
from tests.services import free_port, spawn_control_api

INITIAL_CREDITS = 1000  # make_settings' grant to every new account


@dataclass
class Tenant:
    """An account of the control API at `url`, with one project, an API key and an edge token."""

    url: str
    project_id: str
    api_key: str  # al_live_…: events and credits of the project
    edge_token: str  # al_edge_…: what the proxy sends events with
    account_token: str  # al_acct_…: the account's view (the credit ledger)

    async def _get(self, path: str, token: str, **params: Any) -> dict[str, Any]:
        async with aiohttp.ClientSession() as s, s.get(
            self.url + path, params=params, headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            assert resp.status == 200, (path, resp.status, await resp.text())
            body: dict[str, Any] = await resp.json()
            return body

    async def events(self) -> list[dict[str, Any]]:
        """Every event of the project, as `GET /v1/events` pages them (newest first)."""
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 500}
        while True:
            page = await self._get("/v1/events", self.api_key, **params)
            out.extend(page["events"])
            if not page["next"]:
                return out
            params = {"limit": 500, "cursor": page["next"]}

    async def credits(self) -> dict[str, Any]:
        """`{balance, used, ...}` as the API key sees it."""
        return await self._get("/v1/credits", self.api_key)

    async def ledger(self) -> list[dict[str, Any]]:
        """The account's credit ledger (latest 100 entries)."""
        ledger: list[dict[str, Any]] = (await self._get("/v1/credits", self.account_token))[
            "ledger"]
        return ledger

    async def wait_events(self, n: int, wait_s: float = 15.0) -> list[dict[str, Any]]:
        """Poll the control API until it holds at least `n` events; return them."""
        got: list[dict[str, Any]] = []

        async def enough() -> bool:
            nonlocal got
            got = await self.events()
            return len(got) >= n

        try:
            await wait_until(enough, wait_s)
        except TimeoutError:
            raise AssertionError(f"control API holds {len(got)} events, wanted {n}") from None
        return got

    async def assert_stored_once(self, trace_ids: set[str]) -> list[dict[str, Any]]:
        """The control API's own view: exactly these events, each stored once, each charged once
        (one credit per scored non-test event, no more), and ledger and balance agree."""
        events = await self.events()
        stored = [e["traceId"] for e in events]
        assert sorted(stored) == sorted(trace_ids), "events lost or stored twice"
        billable = [e for e in events if not e["isTest"]]
        assert all(e["charged"] for e in billable), [e for e in billable if not e["charged"]]
        credits = await self.credits()
        assert credits["used"] == len(billable), credits
        assert credits["balance"] == INITIAL_CREDITS - len(billable), credits
        usage = [e for e in await self.ledger() if e["kind"] == "usage"]
        assert -sum(e["amount"] for e in usage) == len(billable), usage
        return events


async def wait_until(predicate: Callable[[], Awaitable[bool]], wait_s: float = 10.0) -> None:
    """Poll an async `predicate` (state owned by another server, so no event to wait on)."""
    async with asyncio.timeout(wait_s):
        while not await predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def wait_port(port: int, wait_s: float = 30.0) -> None:
    """Wait, without blocking the event loop (it may be serving), until 127.0.0.1:port listens."""
    async with asyncio.timeout(wait_s):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return


async def provision(url: str, email: str = "owner@example.com") -> Tenant:
    """Sign up, create a project, an API key, an edge token and an account token, all over HTTP."""
    jar = aiohttp.CookieJar(unsafe=True)  # the session cookie of 127.0.0.1
    async with aiohttp.ClientSession(cookie_jar=jar) as s:

        async def post(path: str, body: dict[str, Any], csrf: str = "",
                       status: tuple[int, ...] = (201,)) -> dict[str, Any]:
            headers = {"X-CSRF-Token": csrf} if csrf else {}
            async with s.post(url + path, json=body, headers=headers) as resp:
                assert resp.status in status, (path, resp.status, await resp.text())
                answer: dict[str, Any] = await resp.json()
                return answer

        login = {"email": email, "password": "correct horse battery"}
        await post("/v1/accounts", login, status=(201, 202))  # 202: never says if it is new
        csrf = (await post("/v1/session", login, status=(200,)))["csrfToken"]
        project = await post("/v1/projects", {"name": "shop"}, csrf)
        keys = f"/v1/projects/{project['id']}/keys"
        api_key = (await post(keys, {"name": "backend", "kind": "live"}, csrf))["key"]
        edge = (await post(keys, {"name": "proxy", "kind": "edge"}, csrf))["key"]
        account = (await post("/v1/account/tokens", {"name": "tests"}, csrf))["token"]
    return Tenant(url, project["id"], api_key, edge, account)


class InProcessControlApi:
    """`control_api.app.create_app` under aiohttp's test server in this event loop; `stop()` and
    `start()` again serve the same SQLite file on the same port, as a restarted service would."""

    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        self.port = free_port()
        self.settings = make_settings(tmp_path / "control-api", **overrides)
        (tmp_path / "control-api").mkdir(exist_ok=True)
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        assert self.server is None
        server = TestServer(create_app(self.settings, engine=shared_engine()),
                            host="127.0.0.1", port=self.port)
        await server.start_server()
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None


class ControlApiProcess:
    """`python -m control_api --config <yaml>` as a child process, so a test can SIGKILL it."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.dir = tmp_path / "control-api"
        self.dir.mkdir(exist_ok=True)
        self.config = self.dir / "activelead.yaml"
        settings = make_settings(self.dir, port=self.port)
        keys = ("db", "cookie_secure", "argon2_time_cost", "argon2_memory_kib",
                "argon2_parallelism", "initial_credits", "key_pepper", "purge_interval_s")
        section = {k: getattr(settings, k) for k in keys}
        self.config.write_text(yaml.safe_dump({"control_api": {
            **section, "host": "127.0.0.1", "port": self.port}}))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        assert self.proc is None
        self.starts += 1
        with (self.dir / f"log-{self.starts}.txt").open("wb") as log:
            self.proc = spawn_control_api(self.config, log)

    async def start(self) -> None:
        self.spawn()
        try:
            await wait_port(self.port)
        except TimeoutError:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None
