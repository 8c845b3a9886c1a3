"""The scoring section of `activelead.yaml`, and the one YAML loader every service uses.

Config is parsed once at start-up; a bad file fails loudly with the file, the key and the problem
(`activelead.yaml: scoring.custom_rules.0.match: ...`), never per request.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MAX_CONFIG_BYTES = 4 * 1024 * 1024


class ConfigError(Exception):
    """A config or rule file that cannot be used; the message names file, key and problem."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source, self.key, self.problem = source, key, problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


class Thresholds(BaseModel):
    """Where the total score turns into a decision: >= block blocks, >= review asks for review."""

    model_config = ConfigDict(extra="forbid")
    block: int = Field(70, ge=1, le=100, description="Score at or above which a lead is blocked.")
    review: int = Field(40, ge=1, le=100, description="Score at or above which a lead is flagged.")

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.review > self.block:
            raise ValueError("review must not be greater than block")
        return self


class VelocityLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(ge=1, le=1_000_000, description="Submissions allowed within the window.")
    window_s: int = Field(ge=1, le=7 * 86400, description="Sliding window length in seconds.")


class Velocity(BaseModel):
    """Per-key submission limits; going over one raises the matching `velocity_*` fact."""

    model_config = ConfigDict(extra="forbid")
    ip: VelocityLimit = VelocityLimit(limit=5, window_s=600)
    network: VelocityLimit = VelocityLimit(limit=30, window_s=600)
    email: VelocityLimit = VelocityLimit(limit=3, window_s=3600)
    form: VelocityLimit = VelocityLimit(limit=600, window_s=60)


class Lists(BaseModel):
    """Project allow and deny lists; checked before rules, explained as hits like any rule."""

    model_config = ConfigDict(extra="forbid")
    allow_emails: list[str] = Field(default_factory=list, description="Exact addresses to allow.")
    allow_email_domains: list[str] = Field(default_factory=list)
    allow_ips: list[str] = Field(default_factory=list, description="IPs or CIDR networks.")
    deny_emails: list[str] = Field(default_factory=list)
    deny_email_domains: list[str] = Field(default_factory=list)
    deny_ips: list[str] = Field(default_factory=list, description="IPs or CIDR networks.")
    block_countries: list[str] = Field(
        default_factory=list, description="ISO 3166-1 alpha-2 codes whose traffic is blocked."
    )


# Feature flags: named, documented switches that a project turns on in the dashboard. Each is a
# set of weight overrides on built-in rules, so a flag is explained by the same hits as always.
FLAGS: dict[str, tuple[str, dict[str, int]]] = {
    "block_disposable_email": ("Block disposable e-mail addresses outright.", {"100110": 100}),
    "block_tor": ("Block submissions through Tor exit nodes.", {"200110": 100}),
    "block_datacenter": ("Block submissions from hosting/cloud networks (APIs, B2B forms "
                         "with no server-side senders only).", {"200100": 100}),
    "block_automation": ("Block HTTP libraries and headless browsers outright.", {"300120": 100}),
    "require_business_email": ("Treat free consumer mailboxes as suspicious (B2B forms).",
                               {"100130": 40}),
    "ignore_role_email": ("Do not count role accounts (info@, sales@) against a lead.",
                          {"100120": 0}),
}


class ScoringConfig(BaseModel):
    """Everything the engine needs from config: thresholds, lists, limits and custom rules."""

    model_config = ConfigDict(extra="forbid")
    thresholds: Thresholds = Thresholds()
    disabled_rules: list[str] = Field(
        default_factory=list, description="Ids of built-in rules to switch off."
    )
    custom_rules: list[dict[str, Any]] = Field(
        default_factory=list, description="Rules in the built-in rule schema (see rules/README)."
    )
    lists: Lists = Lists()
    velocity: Velocity = Velocity()
    min_fill_ms: int = Field(
        2500, ge=0, le=600_000, description="Render-to-submit time under which a form is too fast."
    )
    weights: dict[str, int] = Field(
        default_factory=dict,
        description="Weight overrides for built-in rules by id (0-100); 0 keeps the label only.",
    )
    flags: dict[str, bool] = Field(
        default_factory=dict,
        description="Feature flags by name (see FLAGS in rules/config.py and the README).",
    )

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: dict[str, int]) -> dict[str, int]:
        for rule_id, weight in value.items():
            if not 0 <= weight <= 100:
                raise ValueError(f"weight of {rule_id} must be 0-100")
        return value

    @field_validator("flags")
    @classmethod
    def _flags(cls, value: dict[str, bool]) -> dict[str, bool]:
        unknown = sorted(set(value) - set(FLAGS))
        if unknown:
            raise ValueError(f"unknown flags {unknown}; known: {sorted(FLAGS)}")
        return value

    def weight_overrides(self) -> dict[str, int]:
        """Flags first, then explicit weights (an explicit weight wins over a flag)."""
        out: dict[str, int] = {}
        for name, on in self.flags.items():
            if on:
                out.update(FLAGS[name][1])
        out.update(self.weights)
        return out


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read one YAML mapping; every failure names the file."""
    source = str(path)
    try:
        size = Path(path).stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(source, "", f"file is {size} bytes, over {MAX_CONFIG_BYTES}")
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, "", exc.strerror or str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(source, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"invalid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(source, "", "top level must be a mapping")
    return data


def format_validation_error(source: str, exc: ValidationError, prefix: str = "") -> ConfigError:
    """Turn pydantic's error list into one ConfigError that names the first bad key."""
    first = exc.errors()[0]
    key = ".".join(str(p) for p in (*([prefix] if prefix else []), *first["loc"]))
    extra = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return ConfigError(source, key, f"{first['msg']}{extra}")


def parse_scoring(data: dict[str, Any], source: str = "activelead.yaml") -> ScoringConfig:
    """Validate the `scoring` section of a loaded config mapping."""
    try:
        return ScoringConfig.model_validate(data.get("scoring") or {})
    except ValidationError as exc:
        raise format_validation_error(source, exc, "scoring") from exc
