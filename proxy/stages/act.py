"""Act stage: turns the verdict into what happens to the request (block, or forward + headers)."""

from __future__ import annotations

from proxy.formbody import strip
from proxy.stages.flow import Flow, Forward, Respond
from rules.model import Verdict

NO_STORE = "no-store, private"


def result_headers(verdict: Verdict) -> dict[str, str]:
    return {
        "X-Activelead-Score": str(verdict.score),
        "X-Activelead-Decision": verdict.decision,
        "X-Activelead-Labels": ",".join(verdict.labels),
        "X-Activelead-Trace-Id": verdict.trace_id,
    }


class Act:
    """enforce: block with the form's response; monitor: forward and record `would_block`."""

    always = False

    async def __call__(self, flow: Flow) -> None:
        form, verdict, sub = flow.form, flow.verdict, flow.submission
        assert form is not None and verdict is not None and sub is not None
        cfg = form.config
        failed = flow.score_failed
        # A post to a form the proxy renders without any genuine token comes from a client that
        # never loaded the page: blocked whatever the score, unless the form opts out. Expired
        # (a tab left open) and replayed (a double submit) tokens are left to the score.
        # The snippet's own token is left to the score too: a blocked script must not block a
        # person, but a valid one vouches for a post from a page the proxy did not render.
        render_state = flow.token.state if flow.token is not None else sub.signals.token_state
        vouched = flow.snippet is not None and flow.snippet.state == "valid"
        no_token = (
            flow.site.render_enabled and cfg.require_token and not vouched
            and render_state in ("missing", "invalid")
        )
        block = verdict.decision == "blocked" or no_token
        if failed:
            block = cfg.on_error == "block"
        credits = self._credits(flow)
        if credits is not None:  # out of credits: the project's policy decides, and says so
            block = flow.project is not None and flow.project.out_of_credits_policy == "block"
        if block and (flow.mode or form.mode) == "enforce":
            flow.action = "blocked"
            flow.outcome = self._block(flow, verdict)
            if credits is not None:
                flow.outcome.headers["X-Activelead-Credits"] = credits
            return
        flow.action = "would_block" if block else ("error_forwarded" if failed else "forwarded")
        body = strip(flow.content_type, flow.body, flow.site.own_fields)
        headers = result_headers(verdict)
        if credits is not None:
            headers["X-Activelead-Credits"] = credits
        flow.outcome = Forward(body, headers)

    @staticmethod
    def _credits(flow: Flow) -> str | None:
        """The X-Activelead-Credits value when the project is out of credits, else None."""
        project = flow.project
        if project is None or not project.credits_exhausted:
            return None
        return f"exhausted; policy={project.out_of_credits_policy}"

    @staticmethod
    def _block(flow: Flow, verdict: Verdict) -> Respond:
        assert flow.form is not None
        cfg = flow.form.config
        headers = {"Cache-Control": NO_STORE}
        if flow.site.config.result_headers_on_response:
            headers.update(result_headers(verdict))
        if cfg.action == "fake_success":
            return Respond(200, cfg.thank_you_page, "text/html", headers)
        if cfg.action == "redirect":
            assert cfg.redirect_url is not None
            headers["Location"] = cfg.redirect_url
            return Respond(303, "", "text/plain", headers)
        return Respond(cfg.block_status, cfg.block_page, "text/html", headers)
