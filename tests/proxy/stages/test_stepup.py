"""StepUp: which forwarded posts are held for a step-up, and what the visitor gets, as a table."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from proxy import interstitial
from proxy.remote_config import ProjectConfig
from proxy.settings import ProxySettings
from proxy.stages.act import Act
from proxy.stages.flow import Flow, Forward, Respond
from proxy.stages.read import Read
from proxy.stages.stepup import StepUp
from rules.challenge import ChallengeSigner, SnippetCheck
from rules.config import Thresholds
from tests.proxy.stages.conftest import make_flow, make_site, make_verdict

SIGNER = ChallengeSigner("stage-secret-0123456789")
SCRIPT = "/__activelead/stepup.0123456789ab.js"
URLENCODED = "application/x-www-form-urlencoded"
BODY = b"name=Ada&interest=chairs&interest=tables&email=a%40example.org&_al_token=R&activelead_token=S"


async def held(*, decision: str = "review", body: bytes = BODY, ctype: str = URLENCODED,
               headers: dict[str, str] | None = None, site: dict[str, Any] | None = None,
               form: dict[str, Any] | None = None, snippet: SnippetCheck | None = None,
               script: str | None = SCRIPT, elapsed_ms: float | None = 800,
               prepare: Any = None) -> Flow:
    """A post through Read, a verdict, Act and StepUp (the stages around it, as in the pipeline)."""
    site_cfg: dict[str, Any] = {"snippet": {"site_key": "pk_shop"}, "render": {"enabled": False},
                                "forms": [{"id": "contact", "path": "/contact", **(form or {})}],
                                **(site or {})}
    compiled = make_site(**site_cfg)
    flow = make_flow(body=body, site=compiled, headers={
        "content-type": ctype, "user-agent": "Mozilla/5.0", "origin": "https://site.test",
        "sec-fetch-mode": "navigate", **(headers or {})})
    flow.form, flow.mode = compiled.forms[0], compiled.forms[0].mode
    await Read()(flow)
    assert flow.submission is not None, flow.outcome
    flow.submission.signals.elapsed_ms = elapsed_ms
    flow.snippet = snippet
    flow.verdict = make_verdict(decision, score=50 if decision == "review" else 0)
    if prepare:
        prepare(flow)
    await Act()(flow)
    await StepUp(SIGNER, script)(flow)
    return flow


def page_data(flow: Flow) -> dict[str, Any]:
    assert isinstance(flow.outcome, Respond)
    m = re.search(r'<script type="application/json" id="activelead-stepup-data">(.*?)</script>',
                  flow.outcome.body, re.S)
    assert m, flow.outcome.body
    data: dict[str, Any] = json.loads(m.group(1))
    return data


def paid(flow: Flow) -> None:
    assert flow.submission is not None
    flow.submission.signals.pow_solved = True  # what Token sets from a solved challenge


def exhausted(flow: Flow) -> None:
    # the engine is not read by Act or StepUp
    flow.project = ProjectConfig(1, "prj_1", "enforce", Thresholds(), None,  # type: ignore[arg-type]
                                 "forward", True)


@pytest.mark.parametrize(("case", "kw", "action"), [
    ("review from a page", {}, "step_up"),
    ("allowed", {"decision": "allowed"}, "forwarded"),
    ("blocked stays blocked", {"decision": "blocked"}, "blocked"),
    ("monitor mode", {"site": {"mode": "monitor"}}, "forwarded"),
    ("form opts out", {"form": {"on_review": "forward"}}, "forwarded"),
    ("site without a snippet key", {"site": {"snippet": {}}}, "forwarded"),
    ("one round: paid", {"prepare": paid}, "forwarded"),
    ("came back without paying: held again", {"snippet": SnippetCheck(
        "invalid", difficulty=18, step_up=True, reason="proof-of-work missing")}, "step_up"),
    ("a plain snippet token is no step-up", {"snippet": SnippetCheck("valid")}, "step_up"),
    ("multipart from a page", {"ctype": "multipart/form-data; boundary=b",
                               "body": b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\n1'
                                       b'\r\n--b--\r\n'}, "forwarded"),
    ("multipart by AJAX", {"ctype": "multipart/form-data; boundary=b", "headers": {
        "sec-fetch-mode": "cors"}, "body": b'--b\r\nContent-Disposition: form-data; name="a"\r\n'
                                           b'\r\n1\r\n--b--\r\n'}, "step_up"),
    ("windows-1252 from a page", {"ctype": URLENCODED + "; charset=windows-1252",
                                  "body": b"name=Ad%E9"}, "forwarded"),
    ("no step-up script built: pages forwarded", {"script": None}, "forwarded"),
    ("no step-up script built: AJAX still held", {"script": None, "headers": {
        "sec-fetch-mode": "cors"}}, "step_up"),
    ("page body too big to echo", {"body": b"message=" + b"x" * 300_000,
                                   "form": {"max_body_bytes": 1_000_000}}, "forwarded"),
    ("out of credits, policy forward", {"prepare": exhausted}, "forwarded"),
    ("an impossible Host", {"prepare": lambda f: (setattr(f, "host", "bad host"),
                                                  f.headers.pop("origin"))}, "forwarded"),
])
async def test_when_a_post_is_held(case: str, kw: dict[str, Any], action: str) -> None:
    flow = await held(**kw)
    assert flow.action == action, case
    if action == "step_up":
        assert isinstance(flow.outcome, Respond)
    elif action == "forwarded":
        assert isinstance(flow.outcome, Forward)


def test_step_up_needs_a_site_key_and_work() -> None:
    form = {"id": "contact", "path": "/contact", "on_review": "step_up"}
    with pytest.raises(ValueError, match=r"forms\[0\]\.on_review: step_up needs snippet.site_key"):
        ProxySettings(sites=[{"id": "s", "hosts": ["a.test"], "origin": "http://127.0.0.1:1",
                              "forms": [form]}])
    with pytest.raises(ValueError, match="step_up_difficulty >= 1"):
        ProxySettings(sites=[{"id": "s", "hosts": ["a.test"], "origin": "http://127.0.0.1:1",
                              "snippet": {"site_key": "pk_1", "step_up_difficulty": 0},
                              "forms": [form]}])
    # the default follows the site: step_up with a key (and work), forward without
    assert make_site(snippet={"site_key": "pk_1"}).forms[0].on_review == "step_up"
    assert make_site().forms[0].on_review == "forward"
    assert make_site(snippet={"site_key": "pk_1", "step_up_difficulty": 0}).forms[0].on_review \
        == "forward"


async def test_the_page_carries_a_bound_challenge_and_the_fields() -> None:
    flow = await held(snippet=SnippetCheck("valid", behaviour={"keys": 3, "webdriver": 0,
                                                                "powNonce": 9, "hints": 4}))
    assert isinstance(flow.outcome, Respond)
    out = flow.outcome
    assert (out.status, out.content_type) == (200, "text/html")
    assert out.headers["Cache-Control"] == "no-store, private"
    assert "script-src 'self'" in out.headers["Content-Security-Policy"]
    assert f'<script src="{SCRIPT}" defer></script>' in out.body
    assert "<noscript>" in out.body and 'action="' not in out.body  # posts to the same URL
    data = page_data(flow)
    # the proxy's own fields are cut; repeats and order are kept
    assert data["fields"] == [["name", "Ada"], ["interest", "chairs"], ["interest", "tables"],
                              ["email", "a@example.org"]]
    assert data["report"] == {"k": 3, "w": 0, "h": 4}  # the first report, without its old work
    check = SIGNER.check(data["token"], site_key="pk_shop", origin="https://site.test",
                         form="/contact")
    assert check.step_up and check.difficulty == 18 and check.reason == "proof-of-work missing"


@pytest.mark.parametrize(("sent", "bound"), [
    ("https://site.test", "https://site.test"),
    ("https://www.site.test", "https://site.test"),  # re-posted from the action's own URL
    (None, "http://site.test"),  # no Origin: the request's own scheme and host
])
async def test_the_page_challenge_is_bound_to_the_action_origin(sent: str | None,
                                                                bound: str) -> None:
    flow = await held(prepare=lambda f: f.headers.pop("origin") if sent is None
                      else f.headers.update(origin=sent))
    check = SIGNER.check(page_data(flow)["token"])
    assert check.origin == bound


async def test_hostile_values_stay_data() -> None:
    hostile = "</script><script>alert(1)</script> \"' & <!-- \x00 \u2028 é"
    from urllib.parse import urlencode

    flow = await held(body=urlencode({"message": hostile, "</script>": "x"}).encode())
    assert isinstance(flow.outcome, Respond)
    body = flow.outcome.body
    assert body.count("</script>") == 2 and "<!--" not in body and "alert(1)</" not in body
    assert page_data(flow)["fields"] == [["message", hostile], ["</script>", "x"]]


async def test_ajax_gets_the_428_with_cors_for_the_site() -> None:
    flow = await held(headers={"sec-fetch-mode": "cors", "origin": "http://site.test:8080"},
                      site={"result_headers_on_response": True}, elapsed_ms=None)
    assert isinstance(flow.outcome, Respond)
    out = flow.outcome
    assert (out.status, out.content_type) == (428, "application/json")
    assert out.headers["Access-Control-Allow-Origin"] == "http://site.test:8080"
    assert out.headers["X-Activelead-Decision"] == "review"
    body = json.loads(out.body)
    assert body["error"]["code"] == "step_up_required"
    step = body["stepUp"]
    assert step["pow"] == {"difficulty": 18} and step["expiresIn"] == SIGNER.ttl_s
    assert (step["field"], step["header"]) == ("activelead_token", "X-Activelead-Token")
    check = SIGNER.check(step["token"], origin="http://site.test:8080")
    assert check.step_up and check.elapsed_ms is None  # no timing known: none carried


async def test_no_cors_for_other_origins() -> None:
    flow = await held(headers={"sec-fetch-mode": "cors", "origin": "https://evil.test"})
    assert isinstance(flow.outcome, Respond)
    assert "Access-Control-Allow-Origin" not in flow.outcome.headers


@pytest.mark.parametrize(("headers", "kind", "ajax"), [
    ({"sec-fetch-mode": "navigate"}, "urlencoded", False),
    ({"sec-fetch-mode": "cors"}, "urlencoded", True),
    ({"sec-fetch-mode": "same-origin"}, "urlencoded", True),
    ({"sec-fetch-mode": "navigate"}, "json", True),  # no HTML form posts JSON
    ({}, "urlencoded", False),  # curl, old browsers: a page, which a script cannot pass
    ({"x-requested-with": "XMLHttpRequest"}, "urlencoded", True),
    ({"x-activelead-token": "c1.x"}, "urlencoded", True),
    ({"accept": "application/json"}, "urlencoded", True),
    ({"accept": "text/html,application/json;q=0.9"}, "urlencoded", False),
])
def test_ajax_or_page(headers: dict[str, str], kind: str, ajax: bool) -> None:
    assert interstitial.wants_json(headers, kind) is ajax
