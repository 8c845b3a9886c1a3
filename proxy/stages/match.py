"""Match stage: is this request a protected form route of its site, and is protection on?"""

from __future__ import annotations

from proxy.stages.flow import Flow


class Match:
    """Finds the form for method + path; anything else is passed through untouched."""

    always = False

    async def __call__(self, flow: Flow) -> None:
        form = flow.site.match(flow.method, flow.path)
        if form is None or form.mode == "off":
            flow.passthrough = True
            return
        flow.form = form
