"""Token stage: checks the render token the proxy put into the form (signature, age, reuse) and
the snippet's challenge token (signature, binding, age, single use, proof-of-work, report)."""

from __future__ import annotations

from proxy.stages.flow import Flow
from proxy.tokens import TokenSigner
from rules import challenge
from rules.challenge import ChallengeSigner, SnippetCheck
from rules.counters import Counters

# When both tokens speak, the worse one is the submission's token state.
_SEVERITY = {"valid": 0, "expired": 1, "missing": 2, "invalid": 3, "replayed": 4}


class Token:
    """Sets signals.token_state and elapsed_ms (and the snippet's signals); single use of both
    tokens is remembered in the counters store."""

    always = False

    def __init__(
        self, signer: TokenSigner, counters: Counters, ttl_s: int,
        challenges: ChallengeSigner | None = None,
    ) -> None:
        self._signer = signer
        self._counters = counters
        self._ttl_s = ttl_s
        self._challenges = challenges

    async def __call__(self, flow: Flow) -> None:
        sub = flow.submission
        assert sub is not None
        states: list[str] = []
        if flow.site.render_enabled:
            check = self._signer.verify(sub.token, flow.site.id, flow.path, flow.site.honeypot)
            state = check.state
            # Single use is scoped to the client IP so that a page cached by a CDN (one token,
            # many visitors) still works, while one client re-posting the same token is caught.
            if state == "valid" and not await self._counters.once(
                f"tok:{check.nonce}:{sub.ip}", self._ttl_s
            ):
                state = "replayed"
            flow.token = check
            states.append(state)
            if state in ("valid", "replayed"):
                sub.signals.elapsed_ms = check.elapsed_ms
        snip = await self._snippet(flow)
        if snip is not None:
            if snip.state == "valid" and states == ["missing"]:
                states = []  # an AJAX post from a page we did not render: the snippet vouches
            states.append(snip.state)
            if sub.signals.elapsed_ms is None and snip.state in ("valid", "replayed"):
                sub.signals.elapsed_ms = snip.elapsed_ms  # first interaction -> submit
            sub.signals.pow_solved = snip.pow_solved
            sub.signals.automation = snip.automation
            if snip.behaviour:
                sub.signals.behaviour = dict(snip.behaviour)
        if states:
            sub.signals.token_state = max(states, key=_SEVERITY.__getitem__)

    async def _snippet(self, flow: Flow) -> SnippetCheck | None:
        key = flow.site.config.snippet.site_key
        if not key or self._challenges is None:
            return None
        assert flow.parsed is not None and flow.form is not None
        value = flow.parsed.fields.get(challenge.FIELD) or flow.headers.get(
            challenge.HEADER.lower(), ""
        )
        origin = flow.headers.get("origin", "")
        flow.snippet = await challenge.verify(
            self._challenges, self._counters, value.strip(), site_key=key,
            origin=origin if origin and origin != "null" else None,
            form=(flow.path, flow.form.id),
        )
        return flow.snippet
