"""Settings precedence, the CLI entry points, migrations and persistence across restarts."""

from __future__ import annotations

import argparse
import json
import signal
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from control_api import cli
from control_api.app import create_app
from control_api.db import Database
from control_api.migrations import MIGRATIONS
from control_api.settings import load_settings
from tests.control_api.conftest import make_settings, shared_engine, sign_up
from tests.control_api.test_keys import GOOD
from tests.services import free_port, spawn_control_api, wait_for_port

YAML = """
scoring:
  thresholds:
    block: 60
    review: 30
redis:
  url: null
control_api:
  port: 8111
  db: DBPATH
  initial_credits: 7
"""


def test_precedence_init_over_env_over_yaml_over_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "activelead.yaml"
    path.write_text(YAML.replace("DBPATH", str(tmp_path / "x.sqlite3")))
    settings = load_settings(path)
    assert (settings.port, settings.initial_credits, settings.host) == (8111, 7, "127.0.0.1")
    assert settings.scoring_config["thresholds"] == {"block": 60, "review": 30}
    monkeypatch.setenv("ACTIVELEAD_CONTROL_API__PORT", "8222")
    assert load_settings(path).port == 8222
    assert load_settings(path, port=8333).port == 8333


def test_bad_config_fails_loudly(tmp_path: Path) -> None:
    path = tmp_path / "activelead.yaml"
    path.write_text("control_api:\n  port: not-a-port\n")
    with pytest.raises(ValueError, match="port"):
        load_settings(path)
    path.write_text("control_api:\n  colour: red\n")
    with pytest.raises(ValueError, match="colour"):
        load_settings(path)
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "missing.yaml")


def test_every_setting_is_documented() -> None:
    from control_api.settings import ControlApiSettings

    missing = [n for n, f in ControlApiSettings.model_fields.items() if not f.description]
    assert missing == []


async def test_data_survives_restart_and_migrations_are_recorded(aiohttp_client: Any, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    first: TestClient[Any, Any] = await aiohttp_client(create_app(settings, engine=shared_engine()))
    owner = await sign_up(first)
    key = await owner.key((await owner.project())["id"])
    verdict = await (
        await first.post("/v1/ingest", json=GOOD, headers={"Authorization": f"Bearer {key}"})
    ).json()
    await first.close()
    second: TestClient[Any, Any] = await aiohttp_client(create_app(settings, engine=shared_engine()))
    resp = await second.get(f"/v1/events/{verdict['traceId']}", headers={"Authorization": f"Bearer {key}"})
    assert resp.status == 200
    db = Database(settings.db)
    versions = db.run_sync(
        lambda c: [r[0] for r in c.execute("SELECT version FROM schema_migrations ORDER BY version")]
    )
    db.close_sync()
    assert versions == [m[0] for m in MIGRATIONS]


def test_credits_grant_and_bootstrap_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(tmp_path)
    demo = cli.bootstrap_demo(settings)
    assert demo["created"] is True and demo["apiKey"].startswith("al_live_")
    assert demo["edgeToken"].startswith("al_edge_") and demo["account"]["password"]
    again = cli.bootstrap_demo(settings)
    assert again == {"created": False, "account": {"email": cli.DEMO_EMAIL}}

    parser = argparse.ArgumentParser()
    cli.add_credits_arguments(parser)
    args = parser.parse_args(
        ["grant", "--account", cli.DEMO_EMAIL.upper(), "--amount", "50", "--db", settings.db]
    )
    assert cli.run_credits(args) == 0
    assert f"balance is now {cli.DEMO_CREDITS + 50}" in capsys.readouterr().out
    bad = parser.parse_args(
        ["grant", "--account", "nobody@example.com", "--amount", "5", "--db", settings.db]
    )
    assert cli.run_credits(bad) == 1
    negative = parser.parse_args(
        ["grant", "--account", cli.DEMO_EMAIL, "--amount", "-5", "--db", settings.db]
    )
    assert cli.run_credits(negative) == 1


@pytest.mark.slow
def test_python_m_control_api_serves(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "activelead.yaml"
    path.write_text(f"control_api:\n  port: {port}\n  db: {tmp_path / 'c.sqlite3'}\n")
    proc = spawn_control_api(path)
    try:
        wait_for_port(port, timeout_s=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            assert json.loads(resp.read())["ok"] is True
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)


async def test_openapi_document_covers_every_route(client: TestClient[Any, Any]) -> None:
    doc = await (await client.get("/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = set()
    for route in client.app.router.routes():
        if route.method in ("HEAD", "OPTIONS"):
            continue
        info = route.resource.get_info() if route.resource else {}
        served.add((info.get("path") or info.get("formatter"), route.method))
    assert served == documented


async def test_healthz_and_metrics(client: TestClient[Any, Any]) -> None:
    assert (await (await client.get("/healthz")).json())["ok"] is True
    owner = await sign_up(client)
    key = await owner.key((await owner.project())["id"])
    await client.post("/v1/ingest", json=GOOD, headers={"Authorization": f"Bearer {key}"})
    text = await (await client.get("/metrics")).text()
    assert 'activelead_control_api_scored_total{decision="allowed",source="ingest"} 1.0' in text
    assert "activelead_control_api_credits_used_total 1.0" in text
    assert 'route="/v1/projects/{project_id}/keys"' in text  # templates, not raw ids


def test_several_workers_need_shared_counters_and_a_database_file(tmp_path: Path) -> None:
    path = tmp_path / "activelead.yaml"
    path.write_text("control_api:\n  workers: 2\n")
    with pytest.raises(ValueError, match="workers is 2, which needs redis_url"):
        load_settings(path)
    path.write_text("redis:\n  url: redis://127.0.0.1:6390/0\ncontrol_api:\n  workers: 2\n")
    assert load_settings(path).workers == 2  # the top-level redis section counts
    with pytest.raises(ValueError, match="not ':memory:'"):
        load_settings(path, db=":memory:")
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        load_settings(path, workers=0)
