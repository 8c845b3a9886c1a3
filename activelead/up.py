"""`activelead up`: the whole product on embedded defaults, on one machine, no external services.

1. scores the bundled sample submissions and prints the verdicts (the engine on its own);
2. creates the demo account, project, API key, edge token and credits in the control API's
   SQLite file on first start, prints the secrets once, and writes the addresses, the project's
   public site key and the demo credentials to `.activelead/stack.json` (mode 0600) so scripts
   and tests can drive the stack;
3. starts the control API, a demo origin site with a contact form, and `activelead proxy` in
   front of it (render protection on, the JS snippet with the project's site key added to the
   demo page and its challenge served by the proxy, events shipped to the control API);
4. with `--check`, drives one person-like and one bot submission through the proxy, shows what
   happened and exits; otherwise runs until Ctrl-C.

Each service runs as its own process (`python -m activelead ...`), exactly as in production.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from activelead.cli import _load_engine, score_lines
from rules.config import load_yaml

HIDDEN_INPUT = re.compile(r"<input[^>]*>", re.IGNORECASE)
ATTR = re.compile(r'(\w[\w-]*)="([^"]*)"')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sample", default="samples/submissions.jsonl",
                        help="submissions to score at start-up")
    parser.add_argument("--state-dir", default=".activelead",
                        help="stack.json, databases, spool, logs, generated config")
    parser.add_argument("--proxy-port", type=int, default=8080)
    parser.add_argument("--api-port", type=int, default=8700)
    parser.add_argument("--origin-port", type=int, default=8081)
    parser.add_argument("--admin-port", type=int, default=9180)
    parser.add_argument("--check", action="store_true",
                        help="send a person-like and a bot submission through the proxy, then exit")


def _score_samples(args: argparse.Namespace) -> int:
    engine = _load_engine(args.config)
    sample = Path(args.sample)
    if not sample.exists():
        print(f"activelead up: sample file {sample} not found", file=sys.stderr)
        return 1
    out = io.StringIO()
    with sample.open(encoding="utf-8") as fh:
        failures = score_lines(engine, fh, out)
    print(f"The engine scored {sample} with {len(engine.rules)} rules:")
    for line in out.getvalue().splitlines():
        verdict = json.loads(line)
        if "error" in verdict:
            print(f"  line {verdict['line']}: {verdict['error']}")
            continue
        labels = ", ".join(verdict["labels"]) or "-"
        print(f"  {verdict['decision']:<8} score {verdict['score']:>3}  {labels}")
    return failures


def _site_key(project_id: str) -> str:
    from control_api.snippet import site_key

    return site_key(project_id)


def _stack_config(args: argparse.Namespace, state: Path, edge_token: str,
                  project_id: str) -> dict[str, Any]:
    base = load_yaml(args.config) if Path(args.config).exists() else {}
    config = dict(base)
    api_url = f"http://127.0.0.1:{args.api_port}"
    config["control_api"] = {
        **(base.get("control_api") or {}),
        "host": "127.0.0.1", "port": args.api_port, "public_url": api_url,
        "db": str(state / "control_api.sqlite3"),
        "cookie_secure": False,  # the demo dashboard is served over plain local HTTP
    }
    proxy = dict(base.get("proxy") or {})
    proxy.update({
        "host": "127.0.0.1", "port": args.proxy_port, "admin_port": args.admin_port,
        "workers": 1, "state_dir": str(state / "proxy"),
        "control_api": {**(proxy.get("control_api") or {}), "url": api_url,
                        "edge_token": edge_token, "flush_interval_s": 0.5},
    })
    config["proxy"] = proxy
    config["sites"] = [*(base.get("sites") or []), {
        "id": "demo",
        "hosts": ["127.0.0.1", "localhost"],
        "origin": f"http://127.0.0.1:{args.origin_port}",
        "project_id": project_id,
        "mode": "enforce",
        "result_headers_on_response": True,
        # The project's public key: the proxy adds the snippet's tag to the demo page and serves
        # the script and its challenge under /__activelead/ (build it: scripts/build-snippet).
        "snippet": {"site_key": _site_key(project_id)} if project_id else {},
        "forms": [{"id": "contact", "path": "/contact",
                   "fields": {"email": ["email"], "name": ["name"], "message": ["message"]}}],
    }]
    return config


def _bootstrap(args: argparse.Namespace, config_path: Path, state: Path) -> dict[str, Any]:
    """First start: create the demo tenant; always: write stack.json for scripts and tests."""
    from control_api.cli import bootstrap_demo
    from control_api.settings import load_settings

    stack_json = state / "stack.json"
    result = bootstrap_demo(load_settings(config_path))
    if not result["created"]:
        if not stack_json.exists():
            raise SystemExit(f"activelead up: {stack_json} is missing; delete {state} to start afresh")
        stack = json.loads(stack_json.read_text())
        if "siteKey" not in stack:  # a stack started before the demo had the snippet
            stack["siteKey"] = _site_key(stack["projectId"])
            stack_json.write_text(json.dumps(stack, indent=2))
        return {**stack, "fresh": False}
    proxy_url = f"http://127.0.0.1:{args.proxy_port}"
    stack = {
        "proxyUrl": proxy_url,
        "controlApiUrl": f"http://127.0.0.1:{args.api_port}",
        "demoFormUrl": proxy_url + "/",
        "apiKey": result["apiKey"],
        "edgeToken": result["edgeToken"],
        "projectId": result["projectId"],
        "siteKey": _site_key(result["projectId"]),
        "account": result["account"],
    }
    stack_json.touch(mode=0o600)
    stack_json.write_text(json.dumps(stack, indent=2))
    print("\nCreated the demo account (shown once here; also in "
          f"{stack_json}, readable only by you):")
    print(f"  dashboard login: {result['account']['email']} / {result['account']['password']}")
    print(f"  API key:         {result['apiKey']}")
    return {**stack, "fresh": True}


def _wait_port(port: int, proc: subprocess.Popen[bytes], name: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"activelead up: {name} exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise SystemExit(f"activelead up: {name} did not listen on port {port} in {timeout_s:.0f} s")


def _post(url: str, fields: dict[str, str], headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    data = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (local URL)
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def _check(args: argparse.Namespace, api_key: str) -> bool:
    base = f"http://127.0.0.1:{args.proxy_port}"
    api = f"http://127.0.0.1:{args.api_port}"
    before_balance = _get(api + "/v1/credits", api_key)["balance"]
    before_events = len(_get(api + "/v1/events?limit=500", api_key)["events"])
    browser = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
               "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36")
    index = urllib.request.Request(base + "/", headers={"User-Agent": browser})  # noqa: S310
    with urllib.request.urlopen(index, timeout=10) as r:  # noqa: S310 (local URL)
        page = r.read().decode()
    hidden = {}
    for tag in HIDDEN_INPUT.findall(page):
        attrs = dict(ATTR.findall(tag))
        if attrs.get("name") and attrs["name"] not in {"name", "email"}:
            hidden[attrs["name"]] = attrs.get("value", "")
    print(f"\nGET {base}/ : the proxy added {len(hidden)} hidden field(s) to the form")
    time.sleep(3)  # a person takes a few seconds to type
    person = {**hidden, "name": "Anna", "email": "anna.keller@example.org",
              "message": "Could you send me a quote for two rooms?"}
    status, headers = _post(base + "/contact", person, {"User-Agent": browser})
    # No browser here, so no JS snippet either: token_missing (30) is expected and not enough
    # to stop a person; a real browser's post carries the snippet's token (tests/test_up.py).
    print(f"person-like POST (no JS snippet): {status} "
          f"decision={headers.get('X-Activelead-Decision')} "
          f"labels={headers.get('X-Activelead-Labels') or '-'}")
    bot = {"name": "x", "email": "x@mailinator.com", "message": "cheap viagra http://spam.example"}
    bot_status, bot_headers = _post(base + "/contact", bot, {"User-Agent": "python-requests/2.32"})
    print(f"bot POST (no token, script UA): {bot_status} "
          f"decision={bot_headers.get('X-Activelead-Decision') or 'blocked'}")
    events = _wait_for_events(api, api_key, want=before_events + 2)
    balance = _get(api + "/v1/credits", api_key)["balance"]
    print(f"control API: {len(events) - before_events} new event(s) recorded "
          f"({', '.join(e['verdict']['decision'] for e in events[:len(events) - before_events])}); "
          f"credits {before_balance} -> {balance}")
    return (status == 200 and bot_status == 403 and len(events) >= before_events + 2
            and balance <= before_balance - 2)


def _get(url: str, api_key: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (local URL)
        return json.loads(response.read())


def _wait_for_events(api: str, api_key: str, want: int, timeout_s: float = 15) -> list[Any]:
    """The proxy ships events in batches from its spool: poll until they have arrived."""
    deadline = time.monotonic() + timeout_s
    events: list[Any] = []
    while time.monotonic() < deadline:
        events = _get(api + "/v1/events?limit=500", api_key)["events"]
        if len(events) >= want:
            break
        time.sleep(0.5)
    return events


def run_up(args: argparse.Namespace) -> int:
    if _score_samples(args):
        return 1
    state = Path(args.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    stack_file = state / "activelead-up.yaml"
    # the control API section first (bootstrap needs its db path), then the full file
    stack_file.write_text(yaml.safe_dump(_stack_config(args, state, "", "")))
    demo = _bootstrap(args, stack_file, state)
    stack_file.write_text(yaml.safe_dump(_stack_config(args, state, demo["edgeToken"],
                                                       demo["projectId"])))
    stack_file.chmod(0o600)  # it holds the proxy's edge token
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    logs = state / "logs"
    logs.mkdir(exist_ok=True)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(name: str, argv: list[str], port: int) -> None:
        log = (logs / f"{name}.log").open("ab")
        proc = subprocess.Popen([sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT,
                                env=env)
        procs.append((name, proc))
        _wait_port(port, proc, name)

    try:
        start("origin", ["-m", "activelead.demo_site", str(args.origin_port)], args.origin_port)
        start("control-api", ["-m", "activelead", "control-api", "--config", str(stack_file)],
              args.api_port)
        start("proxy", ["-m", "activelead", "proxy", "--config", str(stack_file)],
              args.proxy_port)
        print(f"""
Activelead is up (logs in {logs}):
  protected demo site   http://127.0.0.1:{args.proxy_port}/   (origin on :{args.origin_port})
  JS snippet            on the demo page, data-site="{demo['siteKey']}" (served by the proxy)
  control API           http://127.0.0.1:{args.api_port}/v1/openapi.json
  proxy health/metrics  http://127.0.0.1:{args.admin_port}/__activelead/health  /metrics""")
        from activelead.snippet_http import DEFAULT_DIST

        if not (DEFAULT_DIST / "manifest.json").exists():
            print("  (the JS snippet is not built: the demo page's script answers 404 and posts "
                  "carry token_missing; run scripts/build-snippet)")
        if args.check:
            return 0 if _check(args, demo["apiKey"]) else 1
        print("Press Ctrl-C to stop.")
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while all(proc.poll() is None for _, proc in procs):
            time.sleep(0.5)
        dead = [name for name, proc in procs if proc.poll() is not None]
        print(f"activelead up: {', '.join(dead)} stopped; see {logs}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for _, proc in reversed(procs):
            proc.terminate()
        for _, proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
