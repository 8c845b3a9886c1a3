"""Project config through the API: validation names the bad key; custom rules take effect."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.control_api.conftest import Account, api_error
from tests.control_api.test_keys import GOOD

RULE = {
    "id": "cust-quote",
    "title": "Asks for a quote",
    "weight": 90,
    "labels": ["custom_rule"],
    "match": {"fact": "email.domain", "is": "example.org"},
}


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"thresholds": {"block": 30, "review": 60}}, "thresholds"),
        ({"thresholds": {"block": 101}}, "thresholds.block"),
        ({"mode": "sometimes"}, "mode"),
        ({"outOfCreditsPolicy": "panic"}, "outOfCreditsPolicy"),
        ({"retentionDays": 0}, "retentionDays"),
        ({"retentionDays": True}, "retentionDays"),
        ({"flags": {"x": "yes"}}, "flags"),
        ({"colour": "red"}, "colour"),
        ({"scoring": {"min_fill_ms": -5}}, "scoring.min_fill_ms"),
        ({"scoring": {"lists": {"deny_ips": "1.2.3.4"}}}, "scoring.lists.deny_ips"),
        ({"scoring": {"thresholds": {}}}, "scoring.thresholds"),
        (
            {"scoring": {"custom_rules": [{**RULE, "match": {"fact": "nope.nothing", "is": 1}}]}},
            "scoring.custom_rules.0.match",
        ),
        (
            {
                "scoring": {
                    "custom_rules": [{**RULE, "match": {"fact": "email.domain", "matches": "(unclosed"}}]
                }
            },
            "scoring.custom_rules.0.match",
        ),
        ({"scoring": {"disabled_rules": ["no-such-rule"]}}, "scoring.disabled_rules"),
    ],
)
async def test_bad_project_config_is_400_naming_the_key(
    client: TestClient[Any, Any], owner: Account, patch: dict[str, Any], key: str
) -> None:
    pid = (await owner.project())["id"]
    resp = await client.patch(f"/v1/projects/{pid}", json=patch, headers=owner.h())
    assert resp.status == 400, await resp.text()
    body = await api_error(resp)
    assert any(k.startswith(key) for k in body["details"]) or key in body["message"], body
    project = await (await client.get(f"/v1/projects/{pid}")).json()
    assert project["version"] == 1  # nothing changed


async def test_custom_rule_and_lists_change_verdicts_and_are_audited(
    client: TestClient[Any, Any], owner: Account
) -> None:
    pid = (await owner.project())["id"]
    auth = {"Authorization": f"Bearer {await owner.key(pid)}"}
    before = await (await client.post("/v1/ingest", json=GOOD, headers=auth)).json()
    assert before["decision"] == "allowed"
    resp = await client.patch(
        f"/v1/projects/{pid}",
        headers=owner.h(),
        json={"scoring": {"custom_rules": [RULE]}, "thresholds": {"block": 80, "review": 40}},
    )
    assert resp.status == 200, await resp.text()
    after = await (await client.post("/v1/ingest", json=GOOD, headers=auth)).json()
    assert "cust-quote" in [h["ruleId"] for h in after["hits"]]
    assert after["decision"] == "blocked"
    actions = [(e["action"], e["details"]) for e in (await (await client.get("/v1/audit")).json())["entries"]]
    assert ("project.updated", {"changed": ["scoring", "thresholds"]}) in actions


async def test_project_list_create_delete(client: TestClient[Any, Any], owner: Account) -> None:
    a, b = await owner.project("a"), await owner.project("b")
    listed = (await (await client.get("/v1/projects")).json())["projects"]
    assert [p["id"] for p in listed] == [a["id"], b["id"]]
    assert (await client.delete(f"/v1/projects/{a['id']}", headers=owner.h())).status == 200
    assert (await client.get(f"/v1/projects/{a['id']}")).status == 404
    for bad in ({"name": ""}, {"name": 5}, {"name": "x" * 201}):
        resp = await client.post("/v1/projects", json=bad, headers=owner.h())
        assert resp.status == 400


async def test_flags_reach_ingest_scoring_and_unknown_flags_are_refused(client, owner) -> None:
    project = await owner.project()
    key = await owner.key(project["id"])
    resp = await client.patch(
        f"/v1/projects/{project['id']}", headers=owner.h(), json={"flags": {"block_everything": True}}
    )
    assert resp.status == 400 and "known flags" in (await resp.json())["error"]["message"]
    body = {
        "email": "anna@mailinator.com",
        "userAgent": "Mozilla/5.0 (X11; Linux x86_64) "
        "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    }
    auth = {"Authorization": f"Bearer {key}"}
    before = await (await client.post("/v1/ingest", json=body, headers=auth)).json()
    assert before["decision"] == "review"
    resp = await client.patch(
        f"/v1/projects/{project['id']}", headers=owner.h(), json={"flags": {"block_disposable_email": True}}
    )
    assert resp.status == 200, await resp.text()
    after = await (await client.post("/v1/ingest", json=body, headers=auth)).json()
    assert (after["decision"], after["score"]) == ("blocked", 100)
