"""Match stage: is this request a protected form route of its site, and is protection on?"""

from __future__ import annotations

from collections.abc import Callable

from proxy.remote_config import ProjectConfig
from proxy.settings import Site
from proxy.stages.flow import Flow
from rules.engine import Engine

ProjectLookup = Callable[[Site], ProjectConfig | None]


class Match:
    """Finds the form for method + path; anything else is passed through untouched.

    Also resolves the project config pulled from the control API (if connected): the project's
    mode applies to forms that do not set their own, so the dashboard can switch a site between
    enforce and monitor without touching the proxy's file, and the project's engine (its
    rules, weights and velocity windows) scores its forms."""

    always = False

    def __init__(self, engine: Engine, project_for: ProjectLookup | None = None) -> None:
        self._engine = engine
        self._project_for = project_for

    async def __call__(self, flow: Flow) -> None:
        # an edge adapter that already matched (to skip building a Flow) hands the form in
        form = flow.form or flow.site.match(flow.method, flow.path)
        if form is None:
            flow.passthrough = True
            return
        project = self._project_for(flow.site) if self._project_for else None
        mode = project.mode if project and form.config.mode is None else form.mode
        if mode == "off":
            flow.passthrough = True
            return
        flow.form, flow.project, flow.mode = form, project, mode
        flow.engine = project.engine if project else self._engine
