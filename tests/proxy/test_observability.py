"""Observability of the proxy, checked by value: metrics on the admin port, health while Redis
comes and goes, what a scoring failure leaves behind, the blocked visitor's exact answer, the
`activelead mitm` entry point end to end, and how workers run (uvloop, one per CPU)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import yaml
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from proxy.admin import create_admin_app
from tests.proxy.conftest import (
    SEEN,
    MakeProxy,
    RunningProxy,
    echoed,
    header_values,
    serving,
    site_config,
)
from tests.proxy.controlplane import wait_port
from tests.proxy.test_events import link, spooled, wait_for
from tests.proxy.test_forms import BROWSER, SECRET, good_form
from tests.services import ROOT, RedisServer, free_port

SPAM = "email=bot%40mailinator.com&message=hi"  # disposable address, no render token: blocked
CLEAN = "email=jane.doe%40example.org&message=Hello%2C+a+quote+for+3+chairs+please."
NO_STORE = "no-store, private"
Snapshot = dict[tuple[str, frozenset[tuple[str, str]]], float]


# --- helpers ------------------------------------------------------------------------------------


async def post(
    port: int, path: str, body: str, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.post(
        f"http://127.0.0.1:{port}{path}", data=body, allow_redirects=False,
        headers={**BROWSER, "Content-Type": "application/x-www-form-urlencoded", **headers},
        timeout=aiohttp.ClientTimeout(total=10),
    ) as r:
        return r.status, dict(r.headers), await r.read()


async def get(port: int, path: str) -> int:
    async with aiohttp.ClientSession() as s, s.get(
        f"http://127.0.0.1:{port}{path}", headers={"Host": "site.test"},
        timeout=aiohttp.ClientTimeout(total=10),
    ) as r:
        await r.read()
        return r.status


@pytest.fixture
async def admin_of() -> AsyncIterator[Any]:
    """The admin app (health, metrics) of a running proxy, on its own 127.0.0.1 port."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(proxy: RunningProxy) -> TestServer:
            return await stack.enter_async_context(serving(create_admin_app(proxy.app)))

        yield start


async def scrape(admin: TestServer) -> Snapshot:
    """Every sample of /metrics, keyed by name and labels (the scrape flushes the tally)."""
    async with aiohttp.ClientSession() as s, s.get(admin.make_url("/metrics")) as r:
        assert r.status == 200
        text = await r.text()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(snapshot: Snapshot, name: str, **labels: str) -> float:
    return snapshot.get((name, frozenset(labels.items())), 0.0)


def delta(before: Snapshot, after: Snapshot, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def health(admin: TestServer) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.get(admin.make_url("/__activelead/health")) as r:
        body: dict[str, Any] = await r.json()
        return r.status, body


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Signal our child by its PID and reap it; SIGKILL if it does not obey in 10 s."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start `cmd` from the repository root, stdout and stderr into `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


async def wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Until 127.0.0.1:port answers; fails at once, with the log, if the process exits first."""
    async with asyncio.timeout(30):
        while proc.poll() is None:
            try:
                await wait_port(port, 0.5)
                return
            except TimeoutError:
                continue
    raise AssertionError(f"exited with {proc.returncode}: {tail(log)}")


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ACTIVELEAD_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = str(ROOT)
    return env


# --- 1. metric values ---------------------------------------------------------------------------


async def test_metrics_count_exactly_the_requests_sent(
    origin: TestServer, make_proxy: MakeProxy, admin_of: Any
) -> None:
    """Dashboards and alerts read these figures: each must move by what was sent, no more."""
    sid = "obs-metrics"
    proxy = await make_proxy([site_config(str(origin.make_url("")), id=sid)],
                             trusted_proxies=["127.0.0.0/8"])
    admin = await admin_of(proxy)
    blocked, forwarded, passed, unprotected = 3, 2, 4, 1
    before = await scrape(admin)
    assert [(await post(proxy.port, "/contact", f"{SPAM}&i={i}"))[0]
            for i in range(blocked)] == [403] * blocked
    assert [(await post(proxy.port, "/signup", f"{CLEAN}&i={i}"))[0]
            for i in range(forwarded)] == [200] * forwarded
    assert [await get(proxy.port, f"/echo?i={i}") for i in range(passed)] == [200] * passed
    assert (await post(proxy.port, "/unprotected", "x=1"))[0] == 200
    after = await scrape(admin)

    requests = "activelead_proxy_requests_total"
    posts = blocked + forwarded + unprotected
    assert delta(before, after, requests, site=sid, kind="POST") == posts
    assert delta(before, after, requests, site=sid, kind="GET") == passed
    decisions = "activelead_proxy_decisions_total"
    assert delta(before, after, decisions, site=sid, form="contact", action="blocked") == blocked
    assert delta(before, after, decisions, site=sid, form="signup", action="forwarded") == forwarded
    assert sum(v for (name, labels), v in after.items() if name == decisions
               and ("site", sid) in labels) == blocked + forwarded
    assert delta(before, after, "activelead_proxy_labels_total", site=sid,
                 label="disposable_email") == blocked
    # only protected posts are scored: not the pass-through GETs nor the unprotected POST
    assert delta(before, after, "activelead_proxy_scoring_seconds_count") == blocked + forwarded
    assert delta(before, after, "activelead_proxy_scoring_seconds_bucket",
                 le="+Inf") == blocked + forwarded
    assert delta(before, after, "activelead_proxy_scoring_seconds_sum") > 0


async def test_spool_depth_metric_is_the_number_of_events_waiting(
    origin: TestServer, make_proxy: MakeProxy, admin_of: Any, tmp_path: Path
) -> None:
    """With the control API down, the gauge (and health's `spool`) is what an operator has to
    watch: it must equal the events still on disk, not a guess."""
    state = tmp_path / "s"
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proxy = await make_proxy([site_config(str(origin.make_url("")))], state_dir=str(state),
                             control_api=link(down, ""))
    admin = await admin_of(proxy)
    before = await scrape(admin)
    n = 4
    assert [(await post(proxy.port, "/contact", f"{SPAM}&i={i}"))[0]
            for i in range(n)] == [403] * n
    failures = "activelead_proxy_ship_failures_total"
    async with asyncio.timeout(10):  # until an upload was tried and failed
        while delta(before, await scrape(admin), failures) < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    after = await scrape(admin)
    assert spooled(state) == n
    assert value(after, "activelead_proxy_spool_events") == n
    status, body = await health(admin)
    assert (status, body["status"], body["spool"]) == (200, "ok", n)


# --- 2. health while Redis goes away and comes back ---------------------------------------------


async def test_health_is_degraded_while_redis_is_down_and_ok_once_it_is_back(
    origin: TestServer, make_proxy: MakeProxy, admin_of: Any, redis_own: RedisServer
) -> None:
    """Health learns of Redis through the counters, i.e. on the next post that asks Redis:
    each check posts first (past the counters' 0.25 s freshness, so Redis is asked)."""
    proxy = await make_proxy([site_config(str(origin.make_url("")))], redis=redis_own.url)
    admin = await admin_of(proxy)
    ok = {"status": "ok", "ready": True, "sites": 1, "countersDegraded": False, "spool": None}
    degraded = {**ok, "status": "degraded", "countersDegraded": True}

    async def post_then_health(want: dict[str, Any], wait_s: float = 10.0) -> None:
        body: dict[str, Any] = {}
        try:
            async with asyncio.timeout(wait_s):
                while True:
                    await asyncio.sleep(0.3)
                    assert (await post(proxy.port, "/contact", SPAM))[0] == 403
                    status, body = await health(admin)
                    assert status == 200  # degraded still serves: never fail the probe
                    if body == want:
                        return
        except TimeoutError:
            raise AssertionError(f"health stayed {body}, expected {want}") from None

    await post_then_health(ok)
    redis_own.stop()
    await post_then_health(degraded)
    redis_own.start()  # same port, empty (no persistence)
    await post_then_health(ok)
    # Really back: a post that must ask Redis keeps health ok, and its counts are in Redis.
    await asyncio.sleep(0.3)
    assert (await post(proxy.port, "/contact", SPAM))[0] == 403
    assert await health(admin) == (200, ok)
    client = aioredis.Redis.from_url(redis_own.url)
    try:
        async with asyncio.timeout(5):
            while not await client.keys("al:c:*"):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()


# --- 3. failure policy --------------------------------------------------------------------------


@pytest.mark.parametrize("on_error", ["forward", "block"])
async def test_scoring_timeout_is_logged_counted_and_follows_on_error(
    origin: TestServer, make_proxy: MakeProxy, admin_of: Any, caplog: pytest.LogCaptureFixture,
    on_error: str,
) -> None:
    """A Redis that accepts connections and never answers makes scoring overrun its budget:
    the operator must see it (one error line, degraded_total{reason=timeout} + 1) and the
    visitor gets what on_error says, the form's own block page included."""
    hung: list[asyncio.StreamWriter] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hung.append(writer)

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    page = "<!doctype html><title>x</title><p>Please call us instead.</p>"
    try:
        form = {"id": "contact", "path": "/contact", "on_error": on_error,
                "score_timeout_s": 0.1, "block_status": 451, "block_page": page}
        site = site_config(str(origin.make_url("")), forms=[form], render={"enabled": False})
        proxy = await make_proxy([site], trusted_proxies=["127.0.0.0/8"],
                                 redis=f"redis://127.0.0.1:{port}/0")
        admin = await admin_of(proxy)
        before = await scrape(admin)
        caplog.set_level(logging.INFO, logger="activelead.proxy.score")
        status, headers, body = await post(proxy.port, "/contact", good_form())
        after = await scrape(admin)
        lines = [r for r in caplog.records if r.name == "activelead.proxy.score"]
        assert len(lines) == 1
        assert lines[0].levelno == logging.ERROR
        message = lines[0].getMessage()
        assert message.startswith("scoring failed for shop/contact (timeout: ")
        assert message.endswith(f"on_error={on_error}")
        assert delta(before, after, "activelead_proxy_degraded_total", reason="timeout") == 1
        assert delta(before, after, "activelead_proxy_degraded_total", reason="error") == 0
        action = "blocked" if on_error == "block" else "error_forwarded"
        assert delta(before, after, "activelead_proxy_decisions_total", site="shop",
                     form="contact", action=action) == 1
        assert headers["Cache-Control"] == NO_STORE
        if on_error == "block":
            assert status == 451
            assert body.decode() == page
            assert headers["Content-Type"] == "text/html; charset=utf-8"
            assert origin.app[SEEN] == []
        else:
            assert status == 200
            assert header_values(echoed(body), "X-Activelead-Labels") == ["degraded"]
            assert len(origin.app[SEEN]) == 1
    finally:
        for w in hung:
            w.close()
        server.close()
        await server.wait_closed()


# --- 4. the blocked visitor's answer, and form-level mode ---------------------------------------


@pytest.mark.parametrize(("form", "status", "body", "extra"), [
    ({"action": "reject", "block_status": 418, "block_page": "<p>No robots, please.</p>"},
     418, b"<p>No robots, please.</p>", {"Content-Type": "text/html; charset=utf-8"}),
    ({"action": "fake_success", "thank_you_page": "<h1>Merci !</h1><p>On vous rappelle.</p>"},
     200, b"<h1>Merci !</h1><p>On vous rappelle.</p>",
     {"Content-Type": "text/html; charset=utf-8"}),
    ({"action": "redirect", "redirect_url": "https://site.test/merci?from=contact#top"},
     303, b"", {"Location": "https://site.test/merci?from=contact#top"}),
], ids=["reject", "fake_success", "redirect"])
async def test_custom_block_responses_are_returned_verbatim(
    origin: TestServer, make_proxy: MakeProxy, form: dict[str, Any], status: int, body: bytes,
    extra: dict[str, str],
) -> None:
    """What the site owner configured is what a blocked bot gets, byte for byte, never cached."""
    proxy = await make_proxy([site_config(str(origin.make_url("")),
                                          forms=[{"id": "contact", "path": "/contact", **form}])])
    got, headers, answer = await post(proxy.port, "/contact", SPAM)
    assert (got, answer) == (status, body)
    assert headers["Cache-Control"] == NO_STORE
    for name, want in extra.items():
        assert headers[name] == want
    assert origin.app[SEEN] == []


async def test_form_enforce_overrides_site_monitor(
    origin: TestServer, make_proxy: MakeProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """Rolling out form by form: one form enforces while the site only watches."""
    caplog.set_level(logging.INFO, logger="activelead.events")
    forms = [{"id": "contact", "path": "/contact", "mode": "enforce"},
             {"id": "signup", "path": "/signup"}]
    proxy = await make_proxy([site_config(str(origin.make_url("")), mode="monitor",
                                          forms=forms)])
    status, headers, body = await post(proxy.port, "/contact", SPAM)
    assert status == 403 and b"Submission refused" in body
    assert headers["Cache-Control"] == NO_STORE
    assert origin.app[SEEN] == []
    status, _, body = await post(proxy.port, "/signup", SPAM)  # the site's mode still applies
    assert status == 200
    assert header_values(echoed(body), "X-Activelead-Decision") == ["blocked"]
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name == "activelead.events"]
    assert [(e["formId"], e["mode"], e["action"]) for e in events] == [
        ("contact", "enforce", "blocked"), ("signup", "monitor", "would_block")]


async def test_form_monitor_overrides_site_enforce(
    origin: TestServer, make_proxy: MakeProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """A form in monitor mode forwards what would have been blocked, and says so."""
    caplog.set_level(logging.INFO, logger="activelead.events")
    forms = [{"id": "contact", "path": "/contact", "mode": "monitor"}]
    proxy = await make_proxy([site_config(str(origin.make_url("")), forms=forms,
                                          result_headers_on_response=True)])
    status, headers, body = await post(proxy.port, "/contact", SPAM)
    assert status == 200
    echo = echoed(body)
    assert header_values(echo, "X-Activelead-Decision") == ["blocked"]
    assert echo["body"] == SPAM
    assert headers["X-Activelead-Decision"] == "blocked"
    assert headers["Cache-Control"] == NO_STORE
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name == "activelead.events"]
    assert [(e["formId"], e["mode"], e["action"]) for e in events] == [
        ("contact", "monitor", "would_block")]


# --- 5. `activelead mitm` through the real CLI --------------------------------------------------


def mitm_available() -> None:
    pytest.importorskip("mitmproxy")
    if shutil.which("mitmdump", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("mitmdump is not installed next to this Python")


async def start_activelead_mitm(
    tmp_path: Path, origin_url: str
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """`python -m activelead mitm` (standalone: no control API) on a free 127.0.0.1 port."""
    port = free_port()
    config = tmp_path / "activelead.yaml"
    config.write_text(yaml.safe_dump({
        "proxy": {"state_dir": str(tmp_path / "state"), "render_secret": SECRET,
                  "trusted_proxies": ["127.0.0.0/8"]},
        "sites": [site_config(origin_url)],
    }))
    log = tmp_path / "mitm.log"
    env = {**clean_env(), "PYTHONUNBUFFERED": "1"}  # lines reach the file as they are written
    proc = spawn([sys.executable, "-m", "activelead", "mitm", "--config", str(config), "--site",
                  "shop", "--host", "127.0.0.1", "--port", str(port), "--",
                  "--set", f"confdir={tmp_path / 'mitm'}"], env, log)
    try:
        await wait_listening(proc, port, log)
    except BaseException:
        stop_process(proc)
        raise
    return proc, port, log


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            item = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out


@pytest.mark.slow
async def test_activelead_mitm_scores_and_logs_the_event(
    origin: TestServer, tmp_path: Path
) -> None:
    """The documented entry point, not mitmdump by hand: the visitor's own score header is
    replaced by the proxy's, and standalone mode logs the event as a JSON line."""
    mitm_available()
    proc, port, log = await start_activelead_mitm(tmp_path, str(origin.make_url("")))
    mitmdump: list[int] = []
    try:
        mitmdump = children(proc.pid)
        # /signup needs no token, so the post is forwarded with a score above 0 (token_missing)
        status, _, body = await post(port, "/signup", CLEAN, **{"X-Activelead-Score": "0"})
        assert status == 200
        echo = echoed(body)
        scores = header_values(echo, "X-Activelead-Score")
        assert len(scores) == 1 and scores != ["0"] and int(scores[0]) > 0
        assert header_values(echo, "X-Activelead-Decision") == ["allowed"]
        trace = header_values(echo, "X-Activelead-Trace-Id")
        assert len(trace) == 1 and trace[0].startswith("tr_")

        def logged() -> list[dict[str, Any]]:
            return [e for e in json_lines(log.read_text(errors="replace"))
                    if e.get("traceId") == trace[0]]

        with contextlib.suppress(TimeoutError):  # the assertion below says what is missing
            await wait_for(lambda: bool(logged()), wait_s=5)
        events = logged()
        assert len(events) == 1, tail(log)
        assert events[0]["formId"] == "signup" and events[0]["siteId"] == "shop"
        assert events[0]["verdict"]["score"] == int(scores[0])
    finally:
        await asyncio.to_thread(stop_mitm, proc, mitmdump)


def stop_mitm(proc: subprocess.Popen[bytes], mitmdump: list[int]) -> None:
    """mitmdump first (by PID; `activelead mitm` returns once it has exited), then the CLI."""
    for pid in mitmdump:
        if alive(pid):
            os.kill(pid, signal.SIGTERM)
    stop_process(proc)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in mitmdump) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in mitmdump:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
async def test_stopping_activelead_mitm_stops_its_mitmdump(
    origin: TestServer, tmp_path: Path
) -> None:
    """A service manager signals the process it started: SIGTERM to `activelead mitm` must not
    leave its mitmdump behind, still holding the port (the restart would then fail to bind)."""
    mitm_available()
    proc, port, _ = await start_activelead_mitm(tmp_path, str(origin.make_url("")))
    mitmdump = children(proc.pid)
    try:
        assert len(mitmdump) == 1
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 10)
        with contextlib.suppress(TimeoutError):
            await wait_for(lambda: not alive(mitmdump[0]), wait_s=10)
        assert not alive(mitmdump[0]), "mitmdump outlived `activelead mitm` (orphaned)"
        with pytest.raises(OSError):  # and the port is free again
            await asyncio.open_connection("127.0.0.1", port)
    finally:
        await asyncio.to_thread(stop_mitm, proc, mitmdump)


# --- 6. workers ---------------------------------------------------------------------------------


def test_loop_factory_makes_uvloop_loops() -> None:
    """The factory every worker's asyncio.Runner is given (proxy.server._worker_main)."""
    import uvloop

    from proxy.server import _loop_factory

    factory = _loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


# Runs the real `python -m proxy` entry (proxy.cli.main -> run_workers -> supervise ->
# _worker_main -> serve); serve is only wrapped to print the loop it runs on, once per worker.
WORKER_PROBE = """
import asyncio, os, sys
import proxy.server as server
real_serve = server.serve
async def serve(settings, **kw):
    loop = asyncio.get_running_loop()
    line = (f"PROBE pid={os.getpid()} worker={kw.get('worker')} "
            f"loop={type(loop).__module__}.{type(loop).__qualname__}\\n")
    os.write(1, line.encode())  # one write: the workers share the log file
    await real_serve(settings, **kw)
server.serve = serve
from proxy.cli import main
raise SystemExit(main(["--config", sys.argv[1]]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("workers", [None, 0], ids=["unset", "zero"])
async def test_workers_default_to_cpu_count_each_on_uvloop(
    origin: TestServer, tmp_path: Path, workers: int | None
) -> None:
    """`workers: 0` (or none given) means one worker per CPU, and every serving worker runs
    on uvloop, not asyncio's default loop."""
    cpus = os.cpu_count() or 1
    port = free_port()
    proxy_section: dict[str, Any] = {
        "host": "127.0.0.1", "port": port, "admin_port": None,
        "state_dir": str(tmp_path / "state"), "render_secret": SECRET}
    if workers is not None:
        proxy_section["workers"] = workers
    config = tmp_path / "activelead.yaml"
    config.write_text(yaml.safe_dump({"proxy": proxy_section,
                                      "sites": [site_config(str(origin.make_url("")))]}))
    log = tmp_path / "proxy.log"
    proc = spawn([sys.executable, "-c", WORKER_PROBE, str(config)], clean_env(), log)
    try:
        await wait_listening(proc, port, log)

        def probes() -> list[str]:
            return [ln for ln in log.read_text(errors="replace").splitlines()
                    if ln.startswith("PROBE ")]

        def serving() -> int:
            return log.read_text(errors="replace").count(" serving ")

        with contextlib.suppress(TimeoutError):
            await wait_for(lambda: len(probes()) >= cpus and serving() >= cpus, wait_s=30)
        await asyncio.sleep(0.5)  # a worker too many would have shown up by now
        text = log.read_text(errors="replace")
        assert serving() == cpus, text[-3000:]
        lines = probes()
        assert sorted(ln.split()[2] for ln in lines) == [f"worker={i}" for i in range(cpus)], text
        assert {ln.split()[3] for ln in lines} == {"loop=uvloop.Loop"}
        if cpus > 1:  # forked workers; a single worker runs in the supervisor itself
            assert len(children(proc.pid)) == cpus
        assert await get(port, "/echo") == 200
    finally:
        await asyncio.to_thread(stop_process, proc)
