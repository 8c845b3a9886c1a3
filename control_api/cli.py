"""Entry points for the `activelead` CLI: `control-api` (serve), `credits grant`, and the demo
bootstrap used by `activelead up`. Also `python -m control_api`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import secrets
import sys
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from control_api import credits
from control_api.context import make_hasher
from control_api.db import Database
from control_api.keys import KeyStore
from control_api.projects import create_project
from control_api.settings import ControlApiSettings, load_settings
from control_api.sqltypes import Conn
from control_api.util import new_id, now_ms

DEMO_EMAIL = "demo@activelead.local"
DEMO_CREDITS = 1000


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=None,
        help="activelead.yaml to read the control_api: section from (default: ./activelead.yaml if present)",
    )
    parser.add_argument("--db", default=None, help="SQLite database file (overrides config)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `activelead control-api`."""
    _common(parser)
    parser.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="listen port (default 8700)")
    parser.add_argument(
        "--workers", type=int, default=None,
        help="worker processes sharing the port (default 1; more need redis.url)",
    )


def settings_from(args: argparse.Namespace) -> ControlApiSettings:
    overrides = {
        k: v for k in ("host", "port", "db", "workers") if (v := getattr(args, k, None)) is not None
    }
    return load_settings(args.config, **overrides)


def run(args: argparse.Namespace) -> int:
    """Serve the control API until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = settings_from(args)
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        print(f"activelead control-api: bad configuration: {exc}", file=sys.stderr)
        return 2
    if settings.workers == 1:
        _serve(settings, worker=0)
        return 0
    from activelead.workers import multiprocess_metrics, supervise
    from control_api.db import migrate_once
    from rules import Engine, ScoringConfig

    multiprocess_metrics()  # /metrics, answered by any worker, sums them all
    try:
        migrate_once(settings.db)  # once, before the workers open the database together
    except Exception as exc:
        print(f"activelead control-api: {exc}", file=sys.stderr)
        return 1
    if not settings.challenge_secret and not settings.key_pepper:
        # One snippet challenge key for every worker (else, with PostgreSQL, each would make up
        # its own and refuse the others' challenges): the key file, or one random key.
        from control_api.snippet import challenge_secret

        settings = settings.model_copy(update={"challenge_secret": challenge_secret(settings)})
    # Loaded once and shared copy-on-write by the forked workers (~100 MB of scoring data).
    engine = Engine.from_config(ScoringConfig.model_validate(settings.scoring_config))
    gc.freeze()
    return supervise(_serve, lambda i: (settings, i, engine), settings.workers, "activelead-api")


def _serve(settings: ControlApiSettings, worker: int, engine: Any = None) -> None:
    """One server process: worker 0 also runs the jobs one process does for all (retention
    purge, WAL checkpoints); every worker delivers webhooks (claims are leased in the DB)."""
    from control_api.app import create_app

    # Worker threads (PostgreSQL's DB thread, argon2 hashing) need the GIL back after every
    # blocking call; with the default 5 ms switch interval a busy event loop can make them wait
    # that long each time. 0.5 ms keeps those hand-offs short.
    sys.setswitchinterval(0.0005)
    app = create_app(settings, engine=engine, worker=worker)
    app.on_startup.append(_freeze_startup_heap)  # after every cleanup context has started
    web.run_app(
        app,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
        host=settings.host,
        port=settings.port,
        access_log_format='%a "%r" %s %b %Tfms req=%{X-Request-Id}o',
        # Called once the port is bound: the line says this worker is serving.
        print=lambda _: logging.getLogger("activelead.control_api").info(
            "worker %d serving on %s:%d", worker, settings.host, settings.port
        ),
        loop=_new_loop(),
        reuse_port=settings.workers > 1,
    )


async def _freeze_startup_heap(app: web.Application) -> None:
    """Move what start-up built (the scoring data, compiled rules, modules: tens of thousands of
    long-lived objects) out of the garbage collector's generations. Otherwise the first
    collections that reach them, while serving, walk all of them at once: a 40-50 ms stall of
    the event loop measured at 1500 ingest req/s, and a full collection later is as long. They
    live as long as the process, so there is nothing to collect in them anyway."""
    gc.collect()
    gc.freeze()


def _new_loop() -> asyncio.AbstractEventLoop:
    # uvloop (a project dependency off Windows) roughly halves the event loop's share of an
    # ingest request; the standard loop is the fallback.
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def add_credits_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `activelead credits` (sub-command `grant`)."""
    sub = parser.add_subparsers(dest="credits_command", required=True)
    grant = sub.add_parser("grant", help="add credits to an account (operator)")
    _common(grant)
    grant.add_argument("--account", required=True, help="the account's e-mail address")
    grant.add_argument("--amount", required=True, type=int, help="credits to add (> 0)")
    grant.add_argument("--kind", choices=("grant", "purchase"), default="grant", help="ledger entry kind")
    grant.add_argument("--note", default="", help="free text stored with the ledger entry")


def run_credits(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    db = Database(settings.db)
    try:
        balance = db.run_sync(
            lambda conn: credits.grant(
                conn, args.account, args.amount, args.kind, args.note or "operator grant"
            )
        )
    except (LookupError, ValueError) as exc:
        print(f"activelead credits grant: {exc}", file=sys.stderr)
        return 1
    finally:
        db.close_sync()
    print(f"granted {args.amount} credits to {args.account}; balance is now {balance}")
    return 0


def bootstrap_demo(
    settings: ControlApiSettings, email: str = DEMO_EMAIL, credits_amount: int = DEMO_CREDITS
) -> dict[str, Any]:
    """Create the demo account, project, API key, edge token and credits on first start.

    Returns {"created": True, "account": {"email", "password"}, "accountId", "projectId",
    "apiKey", "edgeToken"} the first time, and {"created": False, "account": {"email"}} once the
    account exists: secrets are shown once and never stored in clear, so the caller keeps them
    (e.g. in .activelead/stack.json)."""
    password = secrets.token_urlsafe(12)
    password_hash = make_hasher(settings).hash(password)
    keys = KeyStore(settings.key_pepper)
    db = Database(settings.db)

    def create(conn: Conn) -> dict[str, Any]:
        if conn.execute("SELECT 1 FROM accounts WHERE email = ?", (email,)).fetchone():
            return {"created": False, "account": {"email": email}}
        account_id = new_id("acc")
        now = now_ms()
        conn.execute(
            "INSERT INTO accounts (id, email, password_hash, created_at, password_changed_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (account_id, email, password_hash, now, now),
        )
        conn.execute("INSERT INTO credit_balances (account_id, balance) VALUES (?, 0)", (account_id,))
        credits.add_entry(conn, account_id, "grant", credits_amount, note="demo grant")
        project = create_project(
            conn, account_id, "Demo site", settings.scoring_config, settings.retention_days_default
        )
        api_key, _ = keys.create(
            conn, kind="live", project_id=project["id"], account_id=account_id, name="demo"
        )
        edge_token, _ = keys.create(
            conn, kind="edge", project_id=project["id"], account_id=account_id, name="demo proxy"
        )
        return {
            "created": True,
            "account": {"email": email, "password": password},
            "accountId": account_id,
            "projectId": project["id"],
            "apiKey": api_key,
            "edgeToken": edge_token,
        }

    try:
        return db.run_sync(create)
    finally:
        db.close_sync()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m control_api", description="Activelead control API")
    add_arguments(parser)
    return run(parser.parse_args(argv))
