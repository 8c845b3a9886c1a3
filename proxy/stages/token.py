"""Token stage: checks the render token the proxy put into the form (signature, age, reuse)."""

from __future__ import annotations

from proxy.stages.flow import Flow
from proxy.tokens import TokenSigner
from rules.counters import Counters


class Token:
    """Sets signals.token_state and elapsed_ms; single use is remembered in the counters store."""

    always = False

    def __init__(self, signer: TokenSigner, counters: Counters, ttl_s: int) -> None:
        self._signer = signer
        self._counters = counters
        self._ttl_s = ttl_s

    async def __call__(self, flow: Flow) -> None:
        sub = flow.submission
        assert sub is not None
        if not flow.site.render_enabled:
            return  # the proxy never rendered a token here; None means "not checked"
        check = self._signer.verify(sub.token, flow.site.id, flow.path, flow.site.honeypot)
        state = check.state
        # Single use is scoped to the client IP so that a page cached by a CDN (one token, many
        # visitors) still works, while one client re-posting the same token is caught.
        if state == "valid" and not await self._counters.once(
            f"tok:{check.nonce}:{sub.ip}", self._ttl_s
        ):
            state = "replayed"
        flow.token = check
        sub.signals.token_state = state
        if state in ("valid", "replayed"):
            sub.signals.elapsed_ms = check.elapsed_ms
