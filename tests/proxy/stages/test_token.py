"""Token stage: states from the signer, single use per client IP through the counters store."""

from __future__ import annotations

import time

from proxy.settings import default_honeypot_name
from proxy.stages.token import Token
from proxy.tokens import TokenSigner
from rules.counters import MemoryCounters
from rules.model import Submission
from tests.proxy.stages.conftest import make_flow, make_site

SIGNER = TokenSigner("k" * 20, [], 3600)


def token(age_ms: int = 8000) -> str:
    return SIGNER.sign("shop", "/contact", default_honeypot_name("shop"),
                       now_ms=int(time.time() * 1000) - age_ms)


async def run(stage: Token, tok: str, ip: str = "81.2.69.160", **site: object) -> Submission:
    flow = make_flow(site=make_site(**site))
    flow.submission = Submission(token=tok, ip=ip)
    await stage(flow)
    return flow.submission


async def test_valid_then_replayed_per_ip() -> None:
    stage = Token(SIGNER, MemoryCounters(), 3600)
    tok = token()
    first = await run(stage, tok)
    assert first.signals.token_state == "valid"
    assert first.signals.elapsed_ms is not None and 7000 < first.signals.elapsed_ms < 60_000
    assert (await run(stage, tok)).signals.token_state == "replayed"
    # the same cached page submitted by someone else is still fine
    assert (await run(stage, tok, ip="203.0.113.5")).signals.token_state == "valid"


async def test_not_checked_without_render_protection() -> None:
    stage = Token(SIGNER, MemoryCounters(), 3600)
    sub = await run(stage, "", render={"enabled": False})
    assert sub.signals.token_state is None


async def test_missing_and_invalid() -> None:
    stage = Token(SIGNER, MemoryCounters(), 3600)
    assert (await run(stage, "")).signals.token_state == "missing"
    assert (await run(stage, token()[:-3] + "abc")).signals.token_state == "invalid"
