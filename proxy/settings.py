"""ProxySettings: the one settings class of `activelead proxy` (init > env > yaml > defaults).

It reads the `proxy:` and `sites:` sections of activelead.yaml, plus the shared `redis:` and
`scoring:` sections. Everything is validated here, once; `compile_sites` then turns the sites into
lookup tables and compiled patterns so that nothing is parsed per request.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from activelead.clientip import check_headers, parse_network
from proxy.tokens import TOKEN_FIELD
from rules.challenge import FIELD as SNIPPET_FIELD
from rules.challenge import normalise_origin
from rules.config import ConfigError, ScoringConfig, Thresholds, format_validation_error

DEFAULT_CONFIG = Path("activelead.yaml")
MiB = 1024 * 1024

Mode = Literal["enforce", "monitor", "off"]
BlockAction = Literal["reject", "fake_success", "redirect"]

DEFAULT_BLOCK_PAGE = (
    "<!doctype html><meta charset=utf-8><title>Submission refused</title>"
    "<h1>Submission refused</h1><p>This submission could not be accepted. "
    "If you are a person, please try again or contact the site owner.</p>"
)
DEFAULT_THANK_YOU_PAGE = (
    "<!doctype html><meta charset=utf-8><title>Thank you</title>"
    "<h1>Thank you</h1><p>Your message has been received.</p>"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Timeouts(_Strict):
    """Bounds on one upstream exchange; an origin that overruns them gets a 502/504 page."""

    connect_s: float = Field(default=5.0, gt=0, le=300, description="Connecting to the origin.")
    read_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Longest silence between two reads from the origin; while a request body "
        "streams, longest time without a chunk moving on (a visitor who stops sending gets 408, "
        "an origin that stops taking it 504).",
    )
    total_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="From sending the request (the end of its body, when one streams) until "
        "the origin's response headers arrive; a long upload is bounded by `read_s` instead.",
    )


class RateLimit(_Strict):
    """A hard cap on posts from one client IP to one form, checked before anything is scored
    (in the same counters call as the velocity rules)."""

    requests: int = Field(
        default=30,
        ge=0,
        le=1_000_000,
        description="Posts allowed from one client IP to this form within `window_s` (sliding); "
        "0 turns the limit off.",
    )
    window_s: int = Field(default=60, ge=1, le=86_400, description="Window length in seconds.")


class FieldMap(_Strict):
    """Which form fields carry the lead's identity; missing names are simply not mapped."""

    email: list[str] = Field(
        default_factory=lambda: ["email", "e-mail", "your-email", "mail"],
        description="Field names holding the e-mail address (first present wins).",
    )
    name: list[str] = Field(
        default_factory=lambda: ["name", "your-name", "full_name", "fullname"],
        description="Field names holding the person's name: scored as free text (links, "
        "markup, spam phrases) whatever their names look like.",
    )
    message: list[str] = Field(
        default_factory=lambda: ["message", "your-message", "comment", "body"],
        description="Field names holding free text: scored as such even where the name looks "
        "like no text field (the engine's own guess: every field but e-mail, phone, URL, "
        "password, token and `_`/`wp_` ones).",
    )
    lead_id: list[str] = Field(
        default_factory=list, description="Field names holding the site's own lead id."
    )
    honeypot: list[str] = Field(
        default_factory=list,
        description="The site's own honeypot fields (filled => honeypot_filled); the proxy's "
        "rendered honeypot is always checked too.",
    )


class FormConfig(_Strict):
    """One protected form route of a site."""

    id: str = Field(description="Form id, reported in events and to the scoring engine.")
    path: str = Field(
        description="Path pattern: exact (`/contact`), glob (`/forms/*`, `*` stays inside one "
        "segment, `**` spans segments) or a regex prefixed with `re:`."
    )
    methods: list[str] = Field(default_factory=lambda: ["POST"], description="HTTP methods.")
    mode: Mode | None = Field(default=None, description="Overrides the site's mode for this form.")
    fields: FieldMap = Field(
        default_factory=lambda: FieldMap.model_validate({}), description="Field mapping."
    )
    max_body_bytes: int = Field(
        default=1 * MiB,
        ge=1024,
        le=1024 * MiB,
        description="Largest body read for scoring; larger bodies get 413.",
    )
    action: BlockAction = Field(default="reject", description="What a blocked visitor gets.")
    block_status: int = Field(
        default=403, ge=400, le=499, description="Status of a `reject` response."
    )
    block_page: str = Field(
        default=DEFAULT_BLOCK_PAGE, description="HTML body of a `reject` response."
    )
    thank_you_page: str = Field(
        default=DEFAULT_THANK_YOU_PAGE, description="HTML body of a `fake_success` response (200)."
    )
    redirect_url: str | None = Field(
        default=None, description="Where `redirect` sends the visitor (303)."
    )
    on_error: Literal["forward", "block"] = Field(
        default="forward",
        description="When scoring fails or times out: forward (label `degraded`) or block.",
    )
    score_timeout_s: float = Field(
        default=0.5,
        gt=0,
        le=30,
        description="Longest wait for a verdict before `on_error` applies.",
    )
    require_token: bool = Field(
        default=True,
        description="On sites with render protection, block posts without a valid render token "
        "(bots that never loaded the page) whatever the score.",
    )
    on_review: Literal["forward", "step_up"] | None = Field(
        default=None,
        description="What a `review` verdict does in enforce mode: `forward` (with the review "
        "headers) or `step_up`: a post without proof-of-work is held until the browser pays the "
        "site's `step_up_difficulty` (an interstitial page that posts the form again, or a 428 "
        "JSON answer for AJAX), then scored again with `pow_solved`; one round only. Multipart "
        "and non-UTF-8 posts from a page's form are forwarded as review. null = `step_up` on "
        "sites with a `snippet.site_key`, else `forward`.",
    )
    thresholds: Thresholds | None = Field(
        default=None, description="Overrides the scoring thresholds."
    )
    rate_limit: RateLimit = Field(
        default_factory=lambda: RateLimit.model_validate({}),
        description="Per-IP hard limit. In enforce mode a post over it gets 429 with "
        "Retry-After before it is scored: not charged, no event (counted in "
        "`activelead_proxy_rate_limited_total`). In monitor mode it is counted and forwarded.",
    )

    @field_validator("methods")
    @classmethod
    def _upper(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one method")
        return [m.upper() for m in v]

    @field_validator("path")
    @classmethod
    def _pattern(cls, v: str) -> str:
        compile_path(v)
        return v

    @model_validator(mode="after")
    def _redirect(self) -> FormConfig:
        if self.action == "redirect" and not self.redirect_url:
            raise ValueError("action `redirect` needs redirect_url")
        return self


class RenderConfig(_Strict):
    """Render protection: a signed token and a honeypot inserted into the site's HTML forms."""

    enabled: bool = Field(
        default=True, description="Insert token and honeypot into protected forms."
    )
    max_html_bytes: int = Field(
        default=2 * MiB, ge=1024, description="Larger HTML pages (decoded) are passed on unchanged."
    )
    max_hold_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Longest a page is held for rendering after its head arrived: HTML still "
        "streaming then (a progress page, a long poll) is passed on unchanged from there. An "
        "origin answering `X-Accel-Buffering: no` is never held.",
    )
    snippet_src: str | None = Field(
        default=None,
        description="If set, a `<script src=... async>` with this URL is added before </body>.",
    )


class SnippetConfig(_Strict):
    """The browser snippet (plugins/js-snippet) on this site: its key and its challenge policy."""

    site_key: str = Field(
        default="",
        description="Public site key the snippet's tag carries (`data-site=\"pk_…\"`); empty = "
        "no snippet on this site.",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins (`https://host[:port]`) whose pages may fetch challenges; empty = "
        "the site's own hosts, over http or https, on any port.",
    )
    pow_difficulty: int = Field(
        default=0, ge=0, le=26,
        description="Proof-of-work asked with every challenge (leading zero bits of SHA-256; "
        "0 = none, 16 = ~65k hashes, ~50 ms in a Web Worker).",
    )
    step_up_difficulty: int = Field(
        default=18, ge=0, le=26,
        description="Proof-of-work asked in a risky context: an automation user agent, more "
        "than `step_up_rate` challenges from one client IP in 10 minutes, or a `review` verdict "
        "on a form with `on_review: step_up`.",
    )
    step_up_rate: int = Field(
        default=20, ge=1, description="Challenges per client IP per 10 minutes before step-up."
    )
    max_rate: int = Field(
        default=300, ge=1, description="Challenges per client IP per 10 minutes before 429."
    )
    inject: bool = Field(
        default=True,
        description="Add the snippet's `<script>` tag (with `data-site`) to pages the proxy "
        "renders protection into, unless the page already has one.",
    )

    @field_validator("site_key")
    @classmethod
    def _key(cls, v: str) -> str:
        if v and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", v):
            raise ValueError("1-64 of A-Z a-z 0-9 _ -")
        return v

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        out = []
        for i, origin in enumerate(v):
            norm = normalise_origin(origin)
            if not norm:
                raise ValueError(f"item {i}: {origin!r} is not http(s)://host[:port]")
            out.append(norm)
        return out

    @model_validator(mode="after")
    def _rates(self) -> SnippetConfig:
        if self.step_up_rate > self.max_rate:
            raise ValueError("step_up_rate must not exceed max_rate")
        return self


class SiteTls(_Strict):
    """TLS termination for one site (chosen by SNI)."""

    cert_file: Path = Field(description="PEM certificate chain.")
    key_file: Path = Field(description="PEM private key.")
    redirect_http: bool = Field(
        default=True, description="Answer plain-HTTP requests with a 308 to https."
    )
    hsts_max_age_s: int = Field(
        default=0,
        ge=0,
        description="Strict-Transport-Security max-age on HTTPS responses; 0 = no header.",
    )


class OriginTls(_Strict):
    """How the proxy checks an https origin."""

    verify: bool = Field(default=True, description="Verify the origin's certificate and host name.")
    ca_file: Path | None = Field(default=None, description="Extra CA bundle (PEM) for the origin.")


class SiteConfig(_Strict):
    """One site in front of one origin."""

    id: str = Field(description="Site id, reported in events and bound into render tokens.")
    hosts: list[str] = Field(description="Host names (Host / SNI) served for this site.")
    origin: str = Field(description="Origin base URL, e.g. http://127.0.0.1:8000.")
    project_id: str = Field(
        default="", description="Control-API project the site's events belong to."
    )
    mode: Mode = Field(
        default="enforce", description="enforce (block), monitor (record only) or off."
    )
    preserve_host: bool = Field(
        default=True, description="Send the visitor's Host to the origin (else the origin's host)."
    )
    timeouts: Timeouts = Field(
        default_factory=lambda: Timeouts.model_validate({}), description="Upstream time limits."
    )
    max_body_bytes: int = Field(
        default=100 * MiB,
        ge=0,
        description="Largest pass-through request body (413 above); 0 = no limit.",
    )
    result_headers_on_response: bool = Field(
        default=False, description="Also send X-Activelead-* result headers back to the visitor."
    )
    honeypot_field: str = Field(
        default="",
        description="Name of the rendered honeypot field; default derived from the site id, "
        "chosen not to look like a real field to browsers' and password managers' autofill.",
    )
    render: RenderConfig = Field(
        default_factory=lambda: RenderConfig.model_validate({}), description="Render protection."
    )
    snippet: SnippetConfig = Field(
        default_factory=lambda: SnippetConfig.model_validate({}),
        description="The browser snippet and its challenge endpoint.",
    )
    tls: SiteTls | None = Field(default=None, description="Serve this site over HTTPS.")
    origin_tls: OriginTls = Field(
        default_factory=lambda: OriginTls.model_validate({}), description="TLS to the origin."
    )
    forms: list[FormConfig] = Field(default_factory=list, description="Protected form routes.")

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one host")
        return [h.lower().rstrip(".") for h in v]

    @field_validator("origin")
    @classmethod
    def _origin(cls, v: str) -> str:
        if not re.match(r"^https?://[^/?#]+/?$", v):
            raise ValueError("must be http(s)://host[:port] without a path")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _step_up(self) -> SiteConfig:
        # The re-post is verified like a snippet token: it needs the site key and some work.
        for i, form in enumerate(self.forms):
            if form.on_review != "step_up":
                continue
            if not self.snippet.site_key:
                raise ValueError(f"forms[{i}].on_review: step_up needs snippet.site_key")
            if not self.snippet.step_up_difficulty:
                raise ValueError(f"forms[{i}].on_review: step_up needs "
                                 "snippet.step_up_difficulty >= 1")
        return self


class ControlApiLink(_Strict):
    """Where events are shipped; unset url = standalone mode (events logged as JSON lines)."""

    url: str | None = Field(
        default=None, description="Control API base URL, e.g. http://127.0.0.1:8700."
    )
    edge_token: str = Field(
        default="", description="Bearer token of this edge for the control API."
    )
    batch_max_events: int = Field(default=500, ge=1, le=5000, description="Most events per batch.")
    flush_interval_s: float = Field(
        default=1.0, gt=0, description="How often the spool is shipped."
    )
    config_poll_s: float = Field(
        default=10.0, gt=0,
        description="How often the project config is pulled (`GET /v1/edge/config`, ETag: an "
        "unchanged config costs a 304); the last good one is cached in state_dir.",
    )
    timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one batch upload.")
    max_backoff_s: float = Field(
        default=60.0, gt=0, description="Longest pause between failed uploads."
    )


class ProxyConfig(_Strict):
    """The `proxy:` section: listeners, trust, limits, tokens and reporting."""

    host: str = Field(default="0.0.0.0", description="Address the proxy listens on.")  # noqa: S104
    port: int = Field(default=8080, ge=0, le=65535, description="Plain-HTTP port.")
    tls_port: int | None = Field(
        default=None, ge=0, le=65535, description="HTTPS port (sites with `tls:` are served there)."
    )
    admin_host: str = Field(
        default="127.0.0.1", description="Address of the admin (health/metrics) port."
    )
    admin_port: int | None = Field(
        default=9180, ge=0, le=65535, description="Admin port; null turns it off."
    )
    workers: int = Field(default=0, ge=0, le=256, description="Worker processes; 0 = one per CPU.")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="CIDRs of proxies/CDNs in front of this one; only their client-IP headers "
        "are believed.",
    )
    client_ip_headers: list[str] = Field(
        default_factory=lambda: ["x-forwarded-for"],
        description="Headers read (in this order, the first present deciding) from trusted "
        "proxies for the client IP: x-forwarded-for, forwarded, x-real-ip, cf-connecting-ip, "
        "true-client-ip. List only headers every trusted proxy sets or overwrites; one it passes "
        "through is the visitor's to forge.",
    )
    max_field_bytes: int = Field(
        default=8190, ge=1024, le=65536, description="Longest request line or header field."
    )
    header_timeout_s: float = Field(
        default=15.0,
        gt=0,
        le=600,
        description="A connection must deliver its first request head within this time (408).",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Reading a protected form's body must finish within this time (408).",
    )
    max_headers: int = Field(default=100, ge=10, le=1000, description="Most request header fields.")
    keepalive_timeout_s: float = Field(
        default=75.0, gt=0, le=3600,
        description="An idle client connection is closed after this long without a request.",
    )
    fast_path: bool = Field(
        default=True,
        description="Relay plain GET/HEAD requests below aiohttp (proxy/fastpath.py); everything "
        "else takes the aiohttp path either way. Off = every request through aiohttp.",
    )
    render_secret: str = Field(
        default="",
        description="HMAC key of render tokens; empty = a random key kept in `state_dir`.",
    )
    render_previous_secrets: list[str] = Field(
        default_factory=list,
        description="Retired keys still accepted for verification (keep them for token_ttl_s).",
    )
    token_ttl_s: int = Field(
        default=2 * 3600, ge=60, description="Age after which a render token is `token_expired`."
    )
    challenge_ttl_s: int = Field(
        default=1800,
        ge=60,
        le=86400,
        description="Lifetime of a snippet challenge (fetched when a form is first used); its "
        "key is derived from the render secret and rotates with it.",
    )
    snippet_dist: Path | None = Field(
        default=None,
        description="Directory of the built snippet (`scripts/build-snippet`), served under "
        "/__activelead/; null = plugins/js-snippet/dist of this checkout.",
    )
    state_dir: Path = Field(
        default=Path("var/proxy"), description="Spool and generated keys live here."
    )
    spool_fsync_interval_s: float = Field(
        default=0.2,
        gt=0,
        le=10,
        description="Group-commit interval of the event spool (each event is written at once).",
    )
    tls_reload_interval_s: float = Field(
        default=5.0, gt=0, description="How often certificate files are checked for changes."
    )
    control_api: ControlApiLink = Field(
        default_factory=lambda: ControlApiLink.model_validate({}), description="Event shipping."
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        for i, cidr in enumerate(v):
            try:
                parse_network(cidr)
            except ValueError as exc:
                raise ValueError(f"item {i}: {exc}") from None
        return v

    @field_validator("client_ip_headers")
    @classmethod
    def _known_headers(cls, v: list[str]) -> list[str]:
        return check_headers(v)

    @property
    def worker_count(self) -> int:
        """`workers`, with 0 resolved to one per CPU."""
        return self.workers or os.cpu_count() or 1


class RedisRef(BaseModel):
    """The shared top-level `redis:` section (only the url matters here)."""

    model_config = ConfigDict(extra="ignore")
    url: str | None = Field(
        default=None, description="Redis URL for shared counters; memory if unset."
    )


class ProxySettings(BaseSettings):
    """Settings of `activelead proxy`: the `proxy:`, `sites:`, `redis:` and `scoring:` sections."""

    model_config = SettingsConfigDict(
        env_prefix="ACTIVELEAD_", env_nested_delimiter="__", extra="ignore"
    )

    proxy: ProxyConfig = Field(
        default_factory=lambda: ProxyConfig.model_validate({}),
        description="Proxy process settings.",
    )
    sites: list[SiteConfig] = Field(default_factory=list, description="Sites served by the proxy.")
    redis: RedisRef = Field(
        default_factory=lambda: RedisRef.model_validate({}), description="Shared counters store."
    )
    scoring: ScoringConfig = Field(
        default_factory=lambda: ScoringConfig.model_validate({}),
        description="Scoring thresholds, lists and rules.",
    )

    @field_validator("sites")
    @classmethod
    def _unique(cls, sites: list[SiteConfig]) -> list[SiteConfig]:
        seen_ids: set[str] = set()
        seen_hosts: dict[str, str] = {}
        seen_keys: dict[str, str] = {}
        for site in sites:
            if site.id in seen_ids:
                raise ValueError(f"site id {site.id!r} used twice")
            seen_ids.add(site.id)
            for host in site.hosts:
                if host in seen_hosts:
                    raise ValueError(f"host {host!r} in sites {seen_hosts[host]!r} and {site.id!r}")
                seen_hosts[host] = site.id
            key = site.snippet.site_key
            if key and key in seen_keys:
                raise ValueError(f"snippet.site_key {key!r} in sites {seen_keys[key]!r} and "
                                 f"{site.id!r}")
            if key:
                seen_keys[key] = site.id
            form_ids = [f.id for f in site.forms]
            if len(set(form_ids)) != len(form_ids):
                raise ValueError(f"site {site.id!r}: form ids must be unique")
        return sites

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("yaml_file") is not None:
            sources.append(YamlConfigSettingsSource(settings_cls))
        return tuple(sources)


def load_settings(config: str | os.PathLike[str] | None = None, **overrides: Any) -> ProxySettings:
    """Settings from `config` (default ./activelead.yaml if present), env and `overrides`.

    Raises ConfigError naming the file and the key that is wrong.
    """
    path = Path(config) if config is not None else DEFAULT_CONFIG
    source = str(path)
    try:
        if config is None and not path.exists():
            return ProxySettings(**overrides)
        if not path.exists():
            raise ConfigError(source, "", "no such config file")
        from rules.config import load_yaml

        load_yaml(path)  # fail with the file's name on unreadable / non-mapping YAML

        # The file is chosen at run time, while pydantic-settings reads it from model_config:
        # a throwaway subclass carries the path without global state.
        class _FromFile(ProxySettings):
            model_config = SettingsConfigDict(yaml_file=path)

        return _FromFile(**overrides)
    except ValidationError as exc:
        raise format_validation_error(source, exc) from exc


# --- compiled forms: what the request path uses ---------------------------------------------


def compile_path(pattern: str) -> re.Pattern[str]:
    """Compile a form path pattern once (see FormConfig.path)."""
    if pattern.startswith("re:"):
        try:
            return re.compile(pattern[3:])
        except re.error as exc:
            raise ValueError(f"bad regex: {exc}") from None
    if not pattern.startswith("/"):
        raise ValueError("must start with '/' (or 're:' for a regex)")
    if "*" not in pattern and "?" not in pattern and "[" not in pattern:
        return re.compile(re.escape(pattern) + r"\Z")
    parts = []
    for chunk in re.split(r"(\*\*|\*)", pattern):
        if chunk == "**":
            parts.append(".*")
        elif chunk == "*":
            parts.append("[^/]*")
        else:
            parts.append(fnmatch.translate(chunk).removeprefix("(?s:").removesuffix(")\\Z"))
    return re.compile("".join(parts) + r"\Z")


def default_honeypot_name(site_id: str) -> str:
    # Autofill engines key on words like name/mail/phone/address/user/pass; an opaque name with
    # none of them is skipped by browsers and password managers, so people never fill it.
    import hashlib

    return "alx_" + hashlib.sha256(site_id.encode()).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class Form:
    """A FormConfig with its path compiled and its mode resolved against the site."""

    config: FormConfig
    pattern: re.Pattern[str]
    methods: frozenset[str]
    mode: Mode
    on_review: Literal["forward", "step_up"] = "forward"
    honeypots: tuple[str, ...] = ()  # the site's rendered honeypot first, then the form's own
    id: str = field(init=False)  # config.id, copied: read several times per protected post
    text_fields: frozenset[str] = field(init=False)  # the mapped name and message fields

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", self.config.id)
        fields = self.config.fields
        object.__setattr__(self, "text_fields", frozenset((*fields.name, *fields.message)))


@dataclass(frozen=True, slots=True)
class Site:
    """A SiteConfig with everything the hot path needs precomputed."""

    config: SiteConfig
    forms: tuple[Form, ...]
    honeypot: str
    origin_host: str
    max_body_bytes: int
    # Fields the proxy itself adds to a form (render token, honeypot, snippet token): never
    # scored as the visitor's and never passed on to the origin.
    own_fields: frozenset[str]
    render_enabled: bool  # render protection on: enabled, the site not off, forms to protect
    id: str = field(init=False)  # config.id, copied: read several times per request

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", self.config.id)

    @property
    def snippet_src(self) -> str | None:
        """The snippet tag's src for rendered pages: the configured one, else the proxy's own
        copy when the site has a snippet key."""
        cfg = self.config
        if cfg.render.snippet_src:
            return cfg.render.snippet_src
        if cfg.snippet.site_key and cfg.snippet.inject:
            return "/__activelead/activelead.js"
        return None

    def match(self, method: str, path: str) -> Form | None:
        for form in self.forms:
            if method in form.methods and form.pattern.match(path):
                return form
        return None

    def match_action(self, path: str) -> Form | None:
        """The protected form a rendered <form action> posts to, if any."""
        return self.match("POST", path)


def host_key(host: str) -> str:
    """The `compile_sites` key a Host header names: lower-case, without port or trailing dot."""
    host = host.lower()
    if host.startswith("["):
        host = host.split("]", 1)[0] + "]"
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return host.rstrip(".")


def compile_sites(settings: ProxySettings) -> dict[str, Site]:
    """Host name -> Site, built once at start-up."""
    out: dict[str, Site] = {}
    for cfg in settings.sites:
        step_up = bool(cfg.snippet.site_key and cfg.snippet.step_up_difficulty)
        honeypot = cfg.honeypot_field or default_honeypot_name(cfg.id)
        forms = tuple(
            Form(
                config=f,
                pattern=compile_path(f.path),
                methods=frozenset(f.methods),
                mode=f.mode or cfg.mode,
                on_review=f.on_review or ("step_up" if step_up else "forward"),
                honeypots=(honeypot, *f.fields.honeypot),
            )
            for f in cfg.forms
        )
        site = Site(
            config=cfg,
            forms=forms,
            honeypot=honeypot,
            origin_host=cfg.origin.split("://", 1)[1],
            max_body_bytes=cfg.max_body_bytes,
            own_fields=frozenset({honeypot, TOKEN_FIELD}
                                 | ({SNIPPET_FIELD} if cfg.snippet.site_key else set())),
            render_enabled=cfg.render.enabled and cfg.mode != "off" and bool(forms),
        )
        for host in cfg.hosts:
            out[host] = site
    return out
