"""The proxy's token stage with the snippet's token beside the render token, and what Act makes
of the pair (proxy/stages/token.py, proxy/stages/act.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from proxy.formbody import parse
from proxy.settings import Site, default_honeypot_name
from proxy.stages.act import Act
from proxy.stages.flow import Flow, Forward, Respond
from proxy.stages.token import Token
from proxy.tokens import TokenSigner
from rules.challenge import ChallengeSigner, solve_pow
from rules.counters import MemoryCounters
from rules.model import Submission
from tests.proxy.stages.conftest import make_flow, make_site, make_verdict

RENDER = TokenSigner("r" * 20, [], 3600)
CHALLENGES = ChallengeSigner("c" * 20)
ORIGIN = "https://site.test"
REPORT = "k=31,p=120,c=2,v=0,f=3,i=900,d=6000,u=0,w=0,h=0"


def render_token(age_ms: int = 8000) -> str:
    return RENDER.sign("shop", "/contact", default_honeypot_name("shop"),
                       now_ms=int(time.time() * 1000) - age_ms)


def snippet_token(report: str = REPORT, *, origin: str = ORIGIN, form: str = "/contact",
                  site: str = "pk_shop", difficulty: int = 0) -> str:
    token = CHALLENGES.issue(site, origin, form, difficulty).token
    if difficulty:
        report += f",n={solve_pow(token, difficulty)},s=40"
    return f"{token}~{report}"


def snippet_site(**snippet: Any) -> Site:
    return make_site(snippet={"site_key": "pk_shop", **snippet})


def flow_with(site: Site, fields: dict[str, str], headers: dict[str, str] | None = None) -> Flow:
    from urllib.parse import urlencode

    body = urlencode(fields).encode()
    h = {"content-type": "application/x-www-form-urlencoded", "origin": ORIGIN, **(headers or {})}
    flow = make_flow(body=body, site=site, headers=h)
    flow.form = site.forms[0]
    flow.body = body
    flow.parsed = parse(flow.content_type, body)
    flow.submission = Submission(token=fields.get("_al_token", ""), ip="81.2.69.160")
    return flow


async def run(site: Site, fields: dict[str, str], headers: dict[str, str] | None = None,
              stage: Token | None = None) -> Flow:
    flow = flow_with(site, fields, headers)
    await (stage or Token(RENDER, MemoryCounters(), 3600, CHALLENGES))(flow)
    return flow


async def test_both_valid_gives_the_snippet_signals() -> None:
    flow = await run(snippet_site(), {"_al_token": render_token(), "activelead_token": snippet_token()})
    sig = flow.submission.signals  # type: ignore[union-attr]
    assert sig.token_state == "valid"
    assert sig.elapsed_ms is not None and sig.elapsed_ms >= 8000  # from the render token
    assert sig.behaviour["keys"] == 31 and sig.behaviour["pointer"] == 120
    assert not sig.automation and not sig.pow_solved


@pytest.mark.parametrize(("fields", "state"), [
    ({"_al_token": "R"}, "missing"),  # the snippet was blocked: left to its rule's weight
    ({"_al_token": "R", "activelead_token": "S-other-origin"}, "invalid"),
    ({"_al_token": "R", "activelead_token": "S-other-form"}, "invalid"),
    ({"_al_token": "R", "activelead_token": "S-other-site"}, "invalid"),
    ({"_al_token": "R", "activelead_token": "S~k=1,k=2"}, "invalid"),
    ({"activelead_token": "S"}, "valid"),  # AJAX from a page the proxy did not render
    ({"_al_token": "forged", "activelead_token": "S"}, "invalid"),  # the worse one wins
    ({}, "missing"),
])
async def test_states(fields: dict[str, str], state: str) -> None:
    values = {
        "R": render_token(),
        "S": snippet_token(),
        "S-other-origin": snippet_token(origin="https://evil.test"),
        "S-other-form": snippet_token(form="/signup"),
        "S-other-site": snippet_token(site="pk_other"),
        "S~k=1,k=2": snippet_token().split("~")[0] + "~k=1,k=2",
    }
    flow = await run(snippet_site(), {k: values.get(v, v) for k, v in fields.items()})
    assert flow.submission.signals.token_state == state  # type: ignore[union-attr]


async def test_form_id_binding_and_header_token() -> None:
    flow = await run(snippet_site(), {"_al_token": render_token()},
                     {"x-activelead-token": snippet_token(form="contact")})
    assert flow.submission.signals.token_state == "valid"  # type: ignore[union-attr]


async def test_replayed_snippet_token() -> None:
    stage = Token(RENDER, MemoryCounters(), 3600, CHALLENGES)
    value = snippet_token()
    first = await run(snippet_site(), {"_al_token": render_token(), "activelead_token": value}, stage=stage)
    assert first.submission.signals.token_state == "valid"  # type: ignore[union-attr]
    # a new render token (another page view) does not make the snippet token new
    again = await run(snippet_site(), {"_al_token": render_token(), "activelead_token": value}, stage=stage)
    assert again.submission.signals.token_state == "replayed"  # type: ignore[union-attr]


async def test_automation_and_proof_of_work() -> None:
    flow = await run(snippet_site(), {"_al_token": render_token(),
                                      "activelead_token": snippet_token("w=1,h=16", difficulty=8)})
    sig = flow.submission.signals  # type: ignore[union-attr]
    assert sig.automation and sig.pow_solved and sig.token_state == "valid"


async def test_snippet_only_site_takes_its_timing() -> None:
    site = make_site(snippet={"site_key": "pk_shop"}, render={"enabled": False})
    flow = await run(site, {"activelead_token": snippet_token()})
    sig = flow.submission.signals  # type: ignore[union-attr]
    assert sig.token_state == "valid" and sig.elapsed_ms is not None and sig.elapsed_ms < 5000


async def test_no_snippet_key_changes_nothing() -> None:
    flow = await run(make_site(), {"_al_token": render_token(), "activelead_token": snippet_token()})
    assert flow.snippet is None
    sig = flow.submission.signals  # type: ignore[union-attr]
    assert sig.token_state == "valid" and sig.behaviour == {}


@pytest.mark.parametrize(("fields", "action"), [
    ({"_al_token": "R"}, "forwarded"),  # no snippet token: the score decides, not require_token
    ({"activelead_token": "S"}, "forwarded"),  # the snippet vouches for a page we did not render
    ({}, "blocked"),  # nothing at all: require_token
    ({"_al_token": "forged", "activelead_token": "S-other-origin"}, "blocked"),
])
async def test_act_with_the_snippet(fields: dict[str, str], action: str) -> None:
    values = {"R": render_token(), "S": snippet_token(),
              "S-other-origin": snippet_token(origin="https://evil.test")}
    flow = await run(snippet_site(), {"email": "a@example.org",
                                      **{k: values.get(v, v) for k, v in fields.items()}})
    flow.verdict = make_verdict("allowed")
    await Act()(flow)
    assert flow.action == action
    if action == "forwarded":
        assert isinstance(flow.outcome, Forward)
        assert flow.outcome.body == b"email=a%40example.org"  # both tokens cut out
    else:
        assert isinstance(flow.outcome, Respond)


async def test_without_a_snippet_key_the_field_reaches_the_origin() -> None:
    """A WordPress site behind the proxy verifies its own snippet token through the ingest API."""
    flow = await run(make_site(), {"email": "a@example.org", "_al_token": render_token(),
                                   "activelead_token": "c1.x~k=1"})
    flow.verdict = make_verdict("allowed")
    await Act()(flow)
    assert isinstance(flow.outcome, Forward)
    assert b"activelead_token=c1.x" in flow.outcome.body
