"""Submission in, Verdict out: the scoring domain's public data shapes.

The JSON form of both is the ingest API's contract (camelCase keys); the Python form is what the
proxy, the control API and the CLI build and read.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

Decision = Literal["allowed", "review", "blocked"]

# Bounds on what one submission may carry: anything larger is refused with a clear error rather
# than scored slowly. The proxy and the control API apply their own byte limits before this.
MAX_FIELDS = 200
MAX_FIELD_CHARS = 64_000
MAX_SHORT_CHARS = 2_048
MAX_METADATA_KEYS = 100

_STRING_KEYS = {
    "projectId": "project_id",
    "formId": "form_id",
    "leadId": "lead_id",
    "ip": "ip",
    "email": "email",
    "userAgent": "user_agent",
    "pageUrl": "page_url",
    "referrer": "referrer",
    "token": "token",
}
_KNOWN_KEYS = {*_STRING_KEYS, "fields", "headers", "metadata", "signals", "isTest"}
_SIGNAL_KEYS: dict[str, type | tuple[type, ...]] = {
    "tokenState": str,
    "elapsedMs": (int, float),
    "honeypotFilled": bool,
    "powSolved": bool,
    "automation": bool,
    "behaviour": dict,
}
_SIGNAL_ATTRS = {"tokenState": "token_state", "elapsedMs": "elapsed_ms",
                 "honeypotFilled": "honeypot_filled", "powSolved": "pow_solved"}
TOKEN_STATES = frozenset({"valid", "missing", "invalid", "expired", "replayed"})


class SubmissionError(ValueError):
    """A submission that cannot be scored; `errors` maps a JSON path to what is wrong with it."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(slots=True)
class Signals:
    """Facts about the submission observed by the edge (proxy, snippet, plugin), not by the engine.

    `token_state` is None when the edge did not check a token at all (e.g. an ingest call with no
    snippet), which is different from `"missing"` (a token was expected and not sent).
    """

    token_state: str | None = None
    elapsed_ms: float | None = None
    honeypot_filled: bool = False
    pow_solved: bool = False
    automation: bool = False
    behaviour: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "tokenState": self.token_state,
            "elapsedMs": self.elapsed_ms,
            "honeypotFilled": self.honeypot_filled,
            "powSolved": self.pow_solved,
            "automation": self.automation,
            "behaviour": self.behaviour,
        }


@dataclass(slots=True)
class Submission:
    """One form submission ("lead") to score."""

    project_id: str = ""
    form_id: str = ""
    lead_id: str = ""
    ip: str = ""
    email: str = ""
    user_agent: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    page_url: str = ""
    referrer: str = ""
    token: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    signals: Signals = field(default_factory=Signals)
    is_test: bool = False
    # Fields the site says hold free text (its name and message fields): scored as prose even
    # where the name alone would not say so. Set by the proxy's field mapping.
    text_fields: frozenset[str] = frozenset()

    @classmethod
    def from_json(cls, data: object) -> Submission:
        """Validate the ingest JSON body; raise SubmissionError naming every bad key."""
        if not isinstance(data, dict):
            raise SubmissionError({"$": "must be a JSON object"})
        errors: dict[str, str] = {}
        out = cls()
        for key in data:
            if key not in _KNOWN_KEYS:
                errors[key] = "unknown key"
        for key, attr in _STRING_KEYS.items():
            value = data.get(key)
            if value is None:
                continue
            if not isinstance(value, str):
                errors[key] = "must be a string"
            elif len(value) > MAX_SHORT_CHARS:
                errors[key] = f"longer than {MAX_SHORT_CHARS} characters"
            else:
                setattr(out, attr, _clean(value))
        out.fields = _string_map(data.get("fields"), "fields", MAX_FIELD_CHARS, errors)
        out.headers = {
            k.lower(): v
            for k, v in _string_map(data.get("headers"), "headers", MAX_SHORT_CHARS, errors).items()
        }
        metadata = data.get("metadata")
        if metadata is not None:
            if not isinstance(metadata, dict):
                errors["metadata"] = "must be an object"
            elif len(metadata) > MAX_METADATA_KEYS:
                errors["metadata"] = f"more than {MAX_METADATA_KEYS} keys"
            else:
                out.metadata = metadata
        is_test = data.get("isTest")
        if is_test is not None:
            if not isinstance(is_test, bool):
                errors["isTest"] = "must be true or false"
            else:
                out.is_test = is_test
        out.signals = _signals(data.get("signals"), errors)
        if errors:
            raise SubmissionError(errors)
        return out

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {key: getattr(self, attr) for key, attr in _STRING_KEYS.items()}
        out.update(
            fields=self.fields,
            headers=self.headers,
            metadata=self.metadata,
            signals=self.signals.to_json(),
            isTest=self.is_test,
        )
        return out


def _clean(value: str) -> str:
    # Lone surrogates (from a JSON "\ud800") cannot be encoded anywhere downstream; replace them.
    return value.encode("utf-8", "replace").decode("utf-8") if not value.isascii() else value


def _string_map(raw: object, name: str, limit: int, errors: dict[str, str]) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        errors[name] = "must be an object of strings"
        return {}
    if len(raw) > MAX_FIELDS:
        errors[name] = f"more than {MAX_FIELDS} entries"
        return {}
    out: dict[str, str] = {}
    for key, value in raw.items():
        if isinstance(value, str):
            pass  # nearly every value: skip the checks (`int | float` builds a union per call)
        elif isinstance(value, bool) or value is None:
            value = "" if value is None else str(value).lower()
        elif isinstance(value, int | float):
            value = str(value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = "\n".join(value)  # repeated form fields (checkboxes) arrive as lists
        if not isinstance(value, str):
            errors[f"{name}.{key}"] = "must be a string, number, boolean or list of strings"
        elif len(value) > limit:
            errors[f"{name}.{key}"] = f"longer than {limit} characters"
        else:
            out[str(key)] = _clean(value)
    return out


def _signals(raw: object, errors: dict[str, str]) -> Signals:
    signals = Signals()
    if raw is None:
        return signals
    if not isinstance(raw, dict):
        errors["signals"] = "must be an object"
        return signals
    for raw_key, value in raw.items():
        key = str(raw_key)
        kind: type | tuple[type, ...] | None = _SIGNAL_KEYS.get(key)
        if kind is None:
            errors[f"signals.{key}"] = "unknown key"
        elif value is None:
            continue
        elif (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            errors[f"signals.{key}"] = "wrong type"
        elif key == "tokenState" and value not in TOKEN_STATES:
            errors["signals.tokenState"] = f"must be one of {sorted(TOKEN_STATES)}"
        elif key == "elapsedMs" and isinstance(value, int | float) and value < 0:
            errors["signals.elapsedMs"] = "must not be negative"
        else:
            setattr(signals, _SIGNAL_ATTRS.get(key, key), value)
    return signals


@dataclass(frozen=True, slots=True)
class Hit:
    """One rule that matched, with the weight it added to the score."""

    rule_id: str
    title: str
    weight: int
    labels: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"ruleId": self.rule_id, "title": self.title, "weight": self.weight,
                "labels": list(self.labels)}


@dataclass(slots=True)
class Verdict:
    """The engine's answer: a score that explains itself through its hits."""

    trace_id: str
    score: int
    decision: Decision
    labels: list[str]
    hits: list[Hit]
    country_hint: str | None
    degraded: bool
    elapsed_us: int
    is_test: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "traceId": self.trace_id,
            "score": self.score,
            "decision": self.decision,
            "labels": self.labels,
            "hits": [h.to_json() for h in self.hits],
            "countryHint": self.country_hint,
            "degraded": self.degraded,
            "elapsedUs": self.elapsed_us,
            "isTest": self.is_test,
        }


def new_trace_id() -> str:
    """A short, URL-safe id that joins a verdict to its event and its feedback.

    Time-ordered: 48 bits of milliseconds, then 48 random bits (unguessable within a
    millisecond, unique beyond any rate we see). Ids made later sort later, so inserting events
    appends to the right edge of the trace-id index instead of dirtying a random page of it.
    """
    # os.urandom directly: secrets.token_hex(6) is the same bytes through three Python calls.
    # The formatted millisecond is reused by the ids of the same millisecond (formatting it cost
    # a third of an id); one tuple, so a thread never pairs one millisecond with another's text.
    global _trace_ms
    ms = time.time_ns() // 1_000_000
    last = _trace_ms
    if last[0] != ms:
        last = _trace_ms = (ms, f"tr_{ms:012x}")
    try:
        return last[1] + _random_parts.popleft()
    except IndexError:
        return last[1] + _refill_random_parts()


# The random parts, fetched from the OS 256 at a time: one getrandom(2) per id cost a scored
# post ~4 us in a busy worker (a cold system call), the deque's popleft ~0.1. popleft and
# extend are atomic, so threads never share a part; a forked child starts with none of its
# parent's (else two workers would hand out the same ids).
_random_parts: deque[str] = deque()
os.register_at_fork(after_in_child=_random_parts.clear)


def _refill_random_parts() -> str:
    pool = os.urandom(6 * 256).hex()
    _random_parts.extend([pool[i:i + 12] for i in range(12, len(pool), 12)])
    return pool[:12]


_trace_ms: tuple[int, str] = (-1, "")  # new_trace_id's last millisecond, formatted
