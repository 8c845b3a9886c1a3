"""StepUp stage: a review-band post that paid no proof-of-work is held until the browser pays.

Runs after Act, only on what Act chose to forward. In enforce mode, on a form with
`on_review: step_up`, a `review` verdict for a post that carried no proof-of-work challenge
becomes an answer to the visitor instead (proxy/interstitial.py): an interstitial page that solves
a fresh step-up challenge and posts the form again, or a 428 JSON answer for AJAX. The second post
goes through every stage again; the engine sees `pow_solved` like any other fact and its rules
decide (500111 counts a fast submit at a lower weight once the work is paid).

One round only: a post that paid a proof-of-work (the step-up's own, or a snippet challenge
stepped up for a risky client) is never held again, whatever its score; one that came back
without paying is held again, so a client that does not do the work never gets through (a
person's browser posts only once the work is done). Blocked stays
blocked (Act), monitor mode and an exhausted credit balance forward as before. Multipart and
non-UTF-8 posts from a page's form, which the interstitial cannot post again faithfully, are
forwarded as `review`; AJAX posts of any kind get the 428 (the page's code sends them again).
(Not named after rules.challenge.StepUp, the challenge endpoint's difficulty policy.)
"""

from __future__ import annotations

import logging

from proxy import interstitial
from proxy.formbody import utf8_pairs
from proxy.stages.act import NO_STORE, result_headers
from proxy.stages.flow import Flow, Forward, Respond
from rules.challenge import (
    REPORT_KEYS,
    ChallengeRequestError,
    ChallengeSigner,
    normalise_origin,
    origin_allowed,
)

log = logging.getLogger("activelead.proxy.stepup")

MAX_PAGE_BODY = 256 * 1024  # larger form posts are forwarded as review, not echoed into a page
_CARRIED = {name: key for key, name in REPORT_KEYS.items() if key not in ("n", "s")}


class StepUp:
    """Turns a forwarded `review` into a step-up answer when the form asks for one."""

    always = False

    def __init__(self, challenges: ChallengeSigner | None, script: str | None = None) -> None:
        self._challenges = challenges
        self._script = script  # the step-up page's script URL; None: no page, AJAX only

    async def __call__(self, flow: Flow) -> None:
        form, verdict, sub, parsed = flow.form, flow.verdict, flow.submission, flow.parsed
        assert form is not None and verdict is not None and sub is not None and parsed is not None
        if (
            self._challenges is None
            or not isinstance(flow.outcome, Forward)
            or flow.action != "forwarded"  # blocked, would_block, error_forwarded: as they are
            or verdict.decision != "review"
            or form.on_review != "step_up"
            or (flow.mode or form.mode) != "enforce"
            or (flow.project is not None and flow.project.credits_exhausted)
            or sub.signals.pow_solved  # paid: one round only
        ):
            return
        ajax = interstitial.wants_json(flow.headers, parsed.kind)
        fields: list[tuple[str, str]] | None = None
        if not ajax:
            if self._script is None or parsed.kind != "urlencoded" or len(flow.body) > MAX_PAGE_BODY:
                return
            fields = utf8_pairs(flow.content_type, flow.body)
            if fields is None:
                return
        snippet = flow.site.config.snippet
        origin = normalise_origin(flow.headers.get("origin", ""))
        if not ajax or not origin:
            # The page's re-post comes from the URL the page is served at (the form's action),
            # whatever page the first post came from; the scheme is the browser's word for it,
            # as TLS may end in front of this proxy.
            scheme = origin.split("://", 1)[0] if origin else flow.scheme
            origin = f"{scheme}://{flow.host}"
        try:
            challenge = self._challenges.issue_step_up(
                snippet.site_key, origin, flow.path, snippet.step_up_difficulty,
                sub.signals.elapsed_ms,
            )
        except ChallengeRequestError as exc:  # a Host header no page would have: no step-up
            log.info("no step-up for %s%s: %s", flow.host[:100], flow.path[:200], exc)
            return
        headers = {"Cache-Control": NO_STORE}
        if flow.site.config.result_headers_on_response:
            headers.update(result_headers(verdict))
        flow.action = "step_up"
        if ajax:
            headers.update(self._cors(flow))
            flow.outcome = Respond(428, interstitial.answer(challenge), "application/json",
                                   headers)
            return
        assert fields is not None and self._script is not None
        own = flow.site.own_fields  # step-up runs only on sites with a snippet key
        report = {}
        if flow.snippet is not None:
            report = {_CARRIED[k]: v for k, v in flow.snippet.behaviour.items() if k in _CARRIED}
        headers.update({"Content-Security-Policy": interstitial.CSP, "X-Frame-Options": "DENY",
                        "X-Robots-Tag": "noindex"})
        flow.outcome = Respond(
            200, interstitial.page(challenge, [p for p in fields if p[0] not in own], report,
                                   self._script), "text/html", headers,
        )

    @staticmethod
    def _cors(flow: Flow) -> dict[str, str]:
        """A cross-origin AJAX post from one of the site's pages must be able to read the 428."""
        origin = normalise_origin(flow.headers.get("origin", ""))
        if not origin:
            return {}
        cfg = flow.site.config
        # the rule the challenge endpoint applies (proxy.app builds its SnippetSite the same way)
        hosts = () if cfg.snippet.allowed_origins else cfg.hosts
        if not origin_allowed(origin, cfg.snippet.allowed_origins, hosts):
            return {}
        return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true",
                "Vary": "Origin"}
