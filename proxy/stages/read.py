"""Read stage: the bounded body read, parsed into fields and mapped onto a Submission."""

from __future__ import annotations

from proxy.formbody import BodyError, parse
from proxy.stages.flow import BodyTimeout, BodyTooLarge, Flow, Respond
from proxy.tokens import TOKEN_FIELD
from rules.model import MAX_FIELD_CHARS, Signals, Submission


def _first(fields: dict[str, str], names: list[str]) -> str:
    for name in names:
        value = fields.get(name)
        if value:
            return value
    return ""


class Read:
    """Reads at most the form's max_body_bytes; a malformed or oversized body is a clear 4xx."""

    always = False

    async def __call__(self, flow: Flow) -> None:
        assert flow.form is not None
        limit = flow.form.config.max_body_bytes
        try:
            flow.body = await flow.read_body(limit)
            parsed = parse(flow.content_type, flow.body)
        except BodyTooLarge as exc:
            flow.outcome = Respond(413, f"Request body too large: this form accepts at most "
                                        f"{exc.limit} bytes.\n", "text/plain")
            return
        except BodyTimeout:
            flow.outcome = Respond(408, "Request Timeout: the form body did not arrive in time.\n",
                                   "text/plain", {"Connection": "close"})
            return
        except BodyError as exc:
            flow.outcome = Respond(400, f"Malformed form submission: {exc}.\n", "text/plain")
            return
        flow.parsed = parsed
        site, form, headers, sent = flow.site, flow.form, flow.headers, parsed.fields
        fmap = form.config.fields
        own = site.own_fields
        fields = {k: v[:MAX_FIELD_CHARS] for k, v in sent.items() if k not in own}
        filled = False
        for name in form.honeypots:
            value = sent.get(name)
            if value and not value.isspace():
                filled = True
                break
        flow.submission = Submission(
            project_id=site.config.project_id,
            form_id=form.id,
            lead_id=_first(fields, fmap.lead_id)[:2048],
            ip=flow.client_ip,
            email=_first(fields, fmap.email)[:2048],
            user_agent=headers.get("user-agent", "")[:2048],
            fields=fields,
            page_url=headers.get("referer", "")[:2048],
            referrer="",
            token=sent.get(TOKEN_FIELD, "")[:2048],
            signals=Signals(honeypot_filled=filled),
            text_fields=form.text_fields,
        )
