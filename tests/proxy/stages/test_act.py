"""Act: mode x decision x token -> what happens, as a table."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.stages.act import Act
from proxy.stages.flow import Forward, Respond
from rules.model import Signals, Submission
from tests.proxy.stages.conftest import make_flow, make_site, make_verdict


@pytest.mark.parametrize(("mode", "decision", "token", "require", "action", "status"), [
    ("enforce", "allowed", "valid", True, "forwarded", None),
    ("enforce", "review", "valid", True, "forwarded", None),
    ("enforce", "blocked", "valid", True, "blocked", 403),
    ("monitor", "blocked", "valid", True, "would_block", None),
    ("enforce", "allowed", "missing", True, "blocked", 403),
    ("enforce", "allowed", "invalid", True, "blocked", 403),
    ("enforce", "allowed", "expired", True, "forwarded", None),
    ("enforce", "allowed", "replayed", True, "forwarded", None),
    ("enforce", "allowed", "missing", False, "forwarded", None),
    ("monitor", "allowed", "missing", True, "would_block", None),
])
async def test_act_table(mode: str, decision: str, token: str, require: bool, action: str,
                         status: int | None) -> None:
    site = make_site(mode=mode, forms=[{"id": "contact", "path": "/contact",
                                        "require_token": require}])
    flow = make_flow(site=site, body=b"email=a%40example.org&_al_token=x&alx_1=")
    flow.form = site.forms[0]
    flow.body = b"email=a%40example.org&_al_token=x"
    flow.submission = Submission(signals=Signals(token_state=token))
    flow.verdict = make_verdict(decision)
    await Act()(flow)
    assert flow.action == action
    if status is None:
        assert isinstance(flow.outcome, Forward)
        assert flow.outcome.body == b"email=a%40example.org"
        assert flow.outcome.headers["X-Activelead-Decision"] == decision
    else:
        assert isinstance(flow.outcome, Respond) and flow.outcome.status == status
        assert flow.outcome.headers["Cache-Control"] == "no-store, private"


@pytest.mark.parametrize(("on_error", "action", "kind"), [
    ("forward", "error_forwarded", Forward), ("block", "blocked", Respond)])
async def test_score_failure_policy(on_error: str, action: str, kind: Any) -> None:
    site = make_site(forms=[{"id": "contact", "path": "/contact", "on_error": on_error}],
                     render={"enabled": False})
    flow = make_flow(site=site)
    flow.form = site.forms[0]
    flow.submission = Submission()
    flow.verdict = make_verdict(degraded=True, labels=["degraded"])
    flow.score_failed = True
    await Act()(flow)
    assert flow.action == action and isinstance(flow.outcome, kind)
