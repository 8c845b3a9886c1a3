"""Config pulled from the real control API: versions, ETag/304, bad configs, outages, cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from control_api.app import create_app
from proxy.remote_config import RemoteConfig, RemoteConfigError, compile_document
from rules import Engine
from tests.control_api.conftest import make_settings, shared_engine, sign_up
from tests.rules.conftest import make_submission


@pytest.fixture
async def stack(aiohttp_client: Any, tmp_path: Path) -> dict[str, Any]:
    client = await aiohttp_client(create_app(make_settings(tmp_path), engine=shared_engine()))
    owner = await sign_up(client)
    project = await owner.project()
    edge = await owner.key(project["id"], kind="edge")
    url = str(client.make_url("/")).rstrip("/")
    return {"client": client, "owner": owner, "project": project, "edge": edge, "url": url}


def remote(stack: dict[str, Any], tmp_path: Path) -> RemoteConfig:
    return RemoteConfig(url=stack["url"], edge_token=stack["edge"], base=shared_engine(),
                        cache_file=tmp_path / "edge-config.json", interval_s=0.05)


async def test_pulls_compiles_and_follows_changes(stack: dict[str, Any], tmp_path: Path) -> None:
    rc = remote(stack, tmp_path)
    owner, project = stack["owner"], stack["project"]
    async with aiohttp.ClientSession() as session:
        assert await rc.poll_once(session) is True
        assert rc.current is not None and rc.current.project_id == project["id"]
        first = rc.current.version
        assert await rc.poll_once(session) is False  # unchanged: 304, nothing recompiled
        resp = await owner.client.patch(
            f"/v1/projects/{project['id']}", headers=owner.h(),
            json={"mode": "monitor", "thresholds": {"block": 50, "review": 30},
                  "flags": {"block_disposable_email": True},
                  "scoring": {"lists": {"deny_email_domains": ["spam.example"]}}})
        assert resp.status == 200, await resp.text()
        assert await rc.poll_once(session) is True
    current = rc.current
    assert current.version > first and current.mode == "monitor"
    assert current.thresholds.block == 50
    verdict = current.engine.score(make_submission(email="a@spam.example"))
    assert verdict.decision == "blocked" and "denylisted" in verdict.labels
    flagged = current.engine.score(make_submission(email="a@mailinator.com"))
    assert flagged.score == 100  # the flag reached the engine


async def test_outage_and_restart_keep_the_last_good_config(stack: dict[str, Any],
                                                            tmp_path: Path) -> None:
    rc = remote(stack, tmp_path)
    async with aiohttp.ClientSession() as session:
        await rc.poll_once(session)
        version = rc.current.version if rc.current else -1
        await stack["client"].close()  # the control API goes away
        with pytest.raises(aiohttp.ClientError):
            await rc.poll_once(session)
    assert rc.current is not None and rc.current.version == version
    restarted = remote(stack, tmp_path)  # a new process during the outage
    restarted.load_cache()
    assert restarted.current is not None and restarted.current.version == version


async def test_wrong_token_is_an_error_not_a_config(stack: dict[str, Any], tmp_path: Path) -> None:
    rc = RemoteConfig(url=stack["url"], edge_token="al_edge_nope", base=shared_engine(),
                      cache_file=tmp_path / "c.json")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(RemoteConfigError, match="HTTP 401"):
            await rc.poll_once(session)
    assert rc.current is None


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ([], "not a JSON object"),
        ({"version": 1}, "KeyError"),
        ({"version": 1, "projectId": "p", "mode": "enforce", "thresholds": {"block": 70,
          "review": 40}, "scoring": {"custom_rules": [{"id": "x"}]}, "flags": {},
          "outOfCreditsPolicy": "forward"}, "scoring.custom_rules.0"),
        ({"version": 1, "projectId": "p", "mode": "sometimes", "thresholds": {"block": 70,
          "review": 40}, "scoring": {}, "flags": {}, "outOfCreditsPolicy": "forward"},
         "bad mode"),
    ],
)
def test_bad_documents_are_refused_clearly(doc: object, problem: str) -> None:
    engine: Engine = shared_engine()
    with pytest.raises(RemoteConfigError, match=problem):
        compile_document(doc, engine)


def test_corrupt_cache_is_ignored(tmp_path: Path) -> None:
    cache = tmp_path / "edge-config.json"
    cache.write_text("{not json")
    rc = RemoteConfig(url="http://127.0.0.1:9", edge_token="t", base=shared_engine(),
                      cache_file=cache)
    rc.load_cache()
    assert rc.current is None
