"""ControlApiSettings: the one settings class of the control API (init > env > yaml > defaults)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from activelead.clientip import check_headers, parse_network
from rules.config import load_yaml, parse_scoring

DEFAULT_CONFIG = Path("activelead.yaml")


def _default_ip_headers() -> list[str]:
    return ["X-Forwarded-For"]


class ControlApiSettings(BaseSettings):
    """Settings of `activelead control-api`; the `control_api:` section of activelead.yaml.

    Environment variables follow the file's path: `ACTIVELEAD_CONTROL_API__PORT=8701`,
    `ACTIVELEAD_CONTROL_API__COOKIE_SECURE=false`, lists and dicts as JSON.
    """

    model_config = SettingsConfigDict(
        env_prefix="ACTIVELEAD_CONTROL_API__",
        env_nested_delimiter="__",
        extra="forbid",
    )

    host: str = Field("127.0.0.1", description="Address the HTTP server listens on.")
    port: int = Field(8700, ge=0, le=65535, description="Port the HTTP server listens on.")
    db: str = Field(
        "var/control_api.sqlite3",
        description="SQLite database file (WAL mode; ':memory:' for a throwaway one), or a "
        "PostgreSQL URL (postgresql://user:password@host:5432/dbname).",
    )
    redis_url: str | None = Field(
        None,
        description="Redis for shared rate limits and velocity counters; unset = the file's "
        "top-level `redis.url`, else process memory.",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Worker processes sharing the port (SO_REUSEPORT). Above 1 they need "
        "`redis_url` (sign-in and ingest rate limits and velocity counters must be shared) and a "
        "database file or PostgreSQL; SQLite lets one write transaction run at a time, which the "
        "workers take in turn.",
    )
    access_log: bool = Field(
        False,
        description="Log one line per request. Off by default: at ingest rates it costs about a "
        "fifth of the CPU; /metrics counts requests by route and status instead.",
    )
    public_url: str = Field(
        "http://127.0.0.1:8700", description="Base URL this API is reached at (used in docs/links)."
    )
    cookie_secure: bool = Field(
        True, description="Mark the session cookie Secure; turn off only for local plain HTTP."
    )
    cookie_samesite: Literal["Strict", "Lax"] = Field(
        "Lax", description="SameSite attribute of the session cookie."
    )
    session_ttl_s: int = Field(14 * 86400, ge=60, description="Lifetime of a sign-in session in seconds.")
    trusted_origins: list[str] = Field(
        default_factory=list,
        description="Extra origins allowed to make cookie-authenticated writes (the dashboard's).",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Reverse proxies (CIDRs or addresses, e.g. ['127.0.0.1/32', '10.0.0.0/8']) whose "
        "forwarding headers are believed: the client IP is then the right-most untrusted address "
        "of the first header of client_ip_headers present. Empty: the TCP peer is the client.",
    )
    client_ip_headers: list[str] = Field(
        default_factory=_default_ip_headers,
        min_length=1,
        description="Forwarding headers read from trusted proxies, in order (the first present "
        "decides): X-Forwarded-For, Forwarded, X-Real-IP, CF-Connecting-IP, True-Client-IP, in any "
        "case. List only headers your proxy sets or overwrites: one it passes through unchanged "
        "is the client's to forge.",
    )
    argon2_time_cost: int = Field(3, ge=1, description="argon2id iterations (RFC 9106 profile 2).")
    argon2_memory_kib: int = Field(
        65536, ge=8, description="argon2id memory in KiB (RFC 9106 profile 2: 64 MiB)."
    )
    argon2_parallelism: int = Field(4, ge=1, description="argon2id lanes.")
    key_pepper: str = Field(
        "",
        description="Server-side secret mixed into API-key hashes; a "
        "leaked database then does not even allow offline checks of guessed keys.",
    )
    challenge_secret: str = Field(
        "",
        description="HMAC key of the JS snippet's challenges; empty = derived from key_pepper, "
        "else a key file beside the SQLite database.",
    )
    challenge_previous_secrets: list[str] = Field(
        default_factory=list,
        description="Retired challenge keys still accepted (keep them for challenge_ttl_s).",
    )
    challenge_ttl_s: int = Field(
        1800, ge=60, le=86400, description="Lifetime of a snippet challenge in seconds."
    )
    snippet_dist: Path | None = Field(
        None,
        description="Directory of the built snippet (scripts/build-snippet) served under "
        "/__activelead/; null = plugins/js-snippet/dist of this checkout.",
    )
    login_limit_per_account: int = Field(
        10, ge=1, description="Sign-in attempts allowed per account e-mail within login_window_s."
    )
    login_limit_per_ip: int = Field(
        30, ge=1, description="Sign-in attempts allowed per client IP within login_window_s."
    )
    login_window_s: int = Field(900, ge=1, description="Window of the sign-in limits in seconds.")
    signup_limit_per_ip: int = Field(10, ge=1, description="Sign-ups per IP per hour.")
    ingest_rate_per_key: int = Field(
        6000, ge=1, description="Ingest/Akismet calls allowed per API key per minute."
    )
    ingest_batch_interval_ms: float = Field(
        5.0,
        ge=0,
        le=100,
        description="Under load, scored ingest/Akismet calls are stored together at most this "
        "often (one transaction per batch; bigger batches write several times fewer WAL pages "
        "and cost less CPU per call). A call waits for it only while the previous batch was "
        "stored less than this long ago; 0 = every event-loop tick.",
    )
    max_body_bytes: int = Field(
        256 * 1024, ge=1024, description="Largest request body accepted (ingest, management)."
    )
    max_batch_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest edge event batch body accepted."
    )
    max_batch_events: int = Field(5000, ge=1, description="Most events in one edge batch.")
    initial_credits: int = Field(0, ge=0, description="Credits granted to a new account.")
    low_credit_threshold: int = Field(
        100, ge=0, description="Balance at or under which a `credits.low` webhook event is sent."
    )
    idempotency_ttl_s: int = Field(
        86400, ge=60, description="How long an Idempotency-Key and its answer are kept."
    )
    retention_days_default: int = Field(
        90, ge=1, le=3650, description="Event retention for new projects, in days."
    )
    purge_interval_s: int = Field(3600, ge=1, description="How often the retention purge runs, in seconds.")
    webhook_allow_private: bool = Field(
        False,
        description="Allow webhook targets on loopback/private/link-local addresses (tests only).",
    )
    webhook_timeout_s: float = Field(10.0, gt=0, description="Timeout of one webhook delivery.")
    webhook_poll_s: float = Field(
        1.0, gt=0, description="How often the webhook worker looks for due deliveries."
    )
    webhook_backoff_s: list[int] = Field(
        default_factory=lambda: [5, 300, 1800, 7200, 18000, 36000, 36000],
        description="Delays between delivery attempts (Standard Webhooks schedule, ~27 h).",
    )
    scoring_config: dict[str, Any] = Field(
        default_factory=dict,
        description="Scoring config (ScoringConfig) new projects start from; empty = the "
        "file's top-level `scoring:` section.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                parse_network(item)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an IP address or CIDR network") from exc
        return value

    @field_validator("client_ip_headers")
    @classmethod
    def _known_headers(cls, value: list[str]) -> list[str]:
        check_headers(value)  # names are matched case-insensitively; kept as written
        return value

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
        yaml_file = settings_cls.model_config.get("yaml_file")
        if yaml_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_config_section="control_api"))
        return tuple(sources)


def load_settings(config: str | Path | None = None, **overrides: Any) -> ControlApiSettings:
    """Settings from `config` (default ./activelead.yaml if it exists), env and `overrides`."""
    path = Path(config) if config is not None else DEFAULT_CONFIG
    if config is None and not path.exists():
        return _check_workers(ControlApiSettings(**overrides))
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such config file")

    # The file is chosen at run time, while pydantic-settings reads it from model_config: a
    # throwaway subclass carries the path without global state.
    class _FromFile(ControlApiSettings):
        model_config = SettingsConfigDict(yaml_file=path)

    settings = _FromFile(**overrides)
    # The scoring rules and the Redis URL are shared with the proxy: they live in top-level
    # sections of the same file, used here unless the control_api section sets its own.
    shared = load_yaml(path)
    update: dict[str, Any] = {}
    if not settings.scoring_config and shared.get("scoring"):
        update["scoring_config"] = parse_scoring(shared, str(path)).model_dump(mode="json")
    redis = shared.get("redis")
    if settings.redis_url is None and isinstance(redis, dict) and redis.get("url"):
        update["redis_url"] = str(redis["url"])
    return _check_workers(settings.model_copy(update=update) if update else settings)


def _check_workers(settings: ControlApiSettings) -> ControlApiSettings:
    """Several workers must share what each would otherwise keep to itself (checked once the
    file's top-level `redis:` section has been applied)."""
    if settings.workers > 1 and not settings.redis_url:
        raise ValueError(
            f"control_api.workers is {settings.workers}, which needs redis_url (or a top-level "
            "redis.url): with counters in each process's memory, every worker would keep its own "
            "sign-in and ingest rate limits and velocity counts"
        )
    if settings.workers > 1 and settings.db == ":memory:":
        raise ValueError("control_api.workers > 1 needs a database file or PostgreSQL, not ':memory:'")
    return settings
