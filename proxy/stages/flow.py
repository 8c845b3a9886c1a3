"""The shared state of one protected form request, passed through every stage.

Nothing here knows about aiohttp or mitmproxy: an edge adapter fills in the request side
(including a `read_body` callable) and carries out the outcome the stages leave behind.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from proxy.formbody import ParsedBody
from proxy.remote_config import ProjectConfig
from proxy.settings import Form, Site
from proxy.tokens import TokenCheck
from rules.challenge import SnippetCheck
from rules.engine import Engine
from rules.model import Submission, Verdict


class BodyTooLarge(Exception):
    """The request body is larger than the route allows (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes")
        self.limit = limit


class BodyTimeout(Exception):
    """The client did not send the body in time (408)."""


@dataclass(slots=True)
class Respond:
    """Answer the visitor directly (block page, 4xx); the origin never sees the request."""

    status: int
    body: str
    content_type: str = "text/html"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Forward:
    """Send the (possibly stripped) body to the origin, with extra headers."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Flow:
    """One form request on its way through the stages."""

    site: Site
    method: str
    path: str
    scheme: str
    host: str
    client_ip: str
    headers: dict[str, str]  # lowercase names; repeated headers joined with ", "
    read_body: Callable[[int], Awaitable[bytes]]
    received_at: float = field(default_factory=time.time)  # Unix time
    form: Form | None = None
    body: bytes = b""
    parsed: ParsedBody | None = None
    submission: Submission | None = None
    token: TokenCheck | None = None  # the render token
    snippet: SnippetCheck | None = None  # the snippet's challenge token
    velocity: dict[str, float] | None = None  # velocity dimension -> count (count stage)
    counted: str = ""  # how counting went: ok | degraded | error | timeout
    verdict: Verdict | None = None
    action: str = ""  # forwarded | blocked | would_block | error_forwarded | step_up
    outcome: Respond | Forward | None = None
    passthrough: bool = False  # not a protected request: stream it untouched
    project: ProjectConfig | None = None  # pulled from the control API, when connected
    engine: Engine | None = None  # the project's engine, else the proxy's (set by match)
    mode: str = ""  # the effective mode: the form's own, else the project's, else the site's
    score_failed: bool = False  # the form's on_error policy decided (stored, never charged)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")
