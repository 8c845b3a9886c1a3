"""Rules are data: YAML documents compiled once into predicates over a submission's facts.

Schema (one document per file, `rules/packs/<pack>/<id>-<slug>.yaml`):

    id: "100110"                 # unique; the file name starts with it
    title: Disposable e-mail domain
    description: why this matters
    weight: 50                   # 0-100 added to the score (or severity: info|low|medium|high|critical)
    labels: [disposable_email]   # from the public vocabulary (rules/labels.py)
    effect: score                # or "allow": the decision becomes allowed whatever the score
    match: {fact: email.disposable, is: true}   # all / any / not / fact + one operator
    references: [https://...]
    false_positives: [when it can be wrong]
    tests:
      hit:  [{input: {email: a@mailinator.com}}]           # submission JSON (+ optional velocity)
      miss: [{input: {email: a@example.org}}]
    # a case may add `velocity: {ip: 12}` (counts) and `config: {lists: ...}` (scoring config);
    # `userAgent` defaults to a current desktop Chrome so cases only state what they are about

Operators: is, in, gte, gt, lte, lt, matches (RE2 regex), contains, exists.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import re2
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rules.config import ConfigError, format_validation_error, load_yaml
from rules.labels import LABELS
from rules.model import Hit

Facts = dict[str, Any]
Predicate = Callable[[Facts], bool]

PACKS_DIR = Path(__file__).resolve().parent / "packs"
MAX_RULES = 2_000
MAX_REGEX_CHARS = 2_000
SEVERITY_WEIGHTS = {"info": 0, "low": 10, "medium": 25, "high": 45, "critical": 70}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
_LABEL = re.compile(r"^[a-z][a-z0-9_]{1,40}$")

# Every fact an enricher can produce, with its type; rules may only name these (or field.<name>).
KNOWN_FACTS: dict[str, str] = {
    "email.present": "bool", "email.valid": "bool", "email.disposable": "bool",
    "email.free": "bool", "email.role": "bool", "email.plus": "bool", "email.gibberish": "bool",
    "email.domain": "str", "email.address": "str",
    "ip.present": "bool", "ip.valid": "bool", "ip.private": "bool", "ip.country": "str",
    "ip.datacenter": "bool", "ip.provider": "str", "ip.tor": "bool", "ip.relay": "str",
    "ip.owner": "str", "ip.address": "str",
    "ua.present": "bool", "ua.missing": "bool", "ua.crawler": "bool", "ua.automation": "bool",
    "ua.headless": "bool", "ua.tool": "str", "ua.verified_crawler": "bool",
    "ua.crawler_family": "str", "ua.string": "str",
    "content.chars": "int", "content.words": "int", "content.links": "int",
    "content.link_density": "float", "content.markup_links": "bool", "content.html": "bool",
    "content.spam_score": "int", "content.spam_categories": "list",
    "content.injection": "str", "content.mixed_scripts": "bool", "content.caps_ratio": "float",
    "content.repeated": "bool", "content.text": "str",
    "form.id": "str", "form.honeypot_filled": "bool", "form.elapsed_ms": "float",
    "form.too_fast": "bool", "form.page_url": "str", "form.referrer": "str",
    "token.state": "str",
    "browser.automation": "bool", "browser.pow_solved": "bool",
    "browser.keystrokes": "int", "browser.pointer_moves": "int", "browser.pastes": "int",
    "velocity.ip": "float", "velocity.network": "float", "velocity.email": "float",
    "velocity.form": "float", "velocity.ip_over": "bool", "velocity.network_over": "bool",
    "velocity.email_over": "bool", "velocity.form_over": "bool",
    "lists.allowed": "str", "lists.denied": "str", "lists.country_blocked": "bool",
    "test.identity": "str", "submission.is_test": "bool",
}
_NUMBERS = (int, float)
_OPERATORS = ("is", "in", "gte", "gt", "lte", "lt", "matches", "contains", "exists")


class RuleCase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: dict[str, Any] = Field(default_factory=dict)
    velocity: dict[str, float] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)  # scoring config for this case (lists)


class RuleTests(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hit: list[RuleCase] = Field(default_factory=list)
    miss: list[RuleCase] = Field(default_factory=list)


class RuleDoc(BaseModel):
    """The validated YAML document of one rule."""

    model_config = ConfigDict(extra="forbid")
    id: str
    title: str = Field(min_length=3, max_length=120)
    description: str = Field("", max_length=4_000)
    weight: int | None = Field(None, ge=0, le=100)
    severity: Literal["info", "low", "medium", "high", "critical"] | None = None
    labels: list[str] = Field(default_factory=list, max_length=10)
    effect: Literal["score", "allow"] = "score"
    match: dict[str, Any]
    references: list[str] = Field(default_factory=list)
    false_positives: list[str] = Field(default_factory=list)
    tests: RuleTests = RuleTests()

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, value: object) -> str:
        text = str(value)
        if not _ID.match(text):
            raise ValueError("must be 1-40 letters, digits, '_' or '-'")
        return text

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        for label in value:
            if not _LABEL.match(label):
                raise ValueError(f"label {label!r} is not snake_case")
        return value

    def resolved_weight(self) -> int:
        if self.weight is not None:
            return self.weight
        return SEVERITY_WEIGHTS[self.severity or "info"]


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    title: str
    weight: int
    labels: tuple[str, ...]
    effect: str
    predicate: Predicate
    doc: RuleDoc
    source: str
    custom: bool = False
    # What a verdict reports when this rule matches, built once: a frozen dataclass costs
    # ~1.8 us to construct, per matched rule of every scored submission.
    hit: Hit = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hit", Hit(self.id, self.title, self.weight, self.labels))


class CompileError(ValueError):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key, self.problem = key, problem


def _fact_getter(name: str, key: str) -> Callable[[Facts], Any]:
    if name.startswith("field."):
        field_name = name[6:]
        if not field_name:
            raise CompileError(key, "field. needs a field name")
        return lambda f: f["fields"].get(field_name)
    if name not in KNOWN_FACTS:
        raise CompileError(key, f"unknown fact {name!r}")
    return lambda f: f.get(name)


def compile_match(node: object, key: str = "match") -> Predicate:
    """Compile one condition node; raise CompileError naming the key that is wrong."""
    if not isinstance(node, dict) or not node:
        raise CompileError(key, "must be a mapping with all, any, not or fact")
    if "all" in node or "any" in node:
        kind = "all" if "all" in node else "any"
        if len(node) != 1:
            raise CompileError(key, f"{kind} must be alone in its mapping")
        items = node[kind]
        if not isinstance(items, list) or not items:
            raise CompileError(f"{key}.{kind}", "must be a non-empty list")
        parts = tuple(compile_match(item, f"{key}.{kind}.{i}") for i, item in enumerate(items))
        if kind == "all":
            return lambda f: all(p(f) for p in parts)
        return lambda f: any(p(f) for p in parts)
    if "not" in node:
        if len(node) != 1:
            raise CompileError(key, "not must be alone in its mapping")
        inner = compile_match(node["not"], f"{key}.not")
        return lambda f: not inner(f)
    if "fact" not in node:
        raise CompileError(key, f"unknown keys {sorted(node)}; expected all, any, not or fact")
    ops = [op for op in node if op != "fact"]
    if len(ops) != 1 or ops[0] not in _OPERATORS:
        raise CompileError(key, f"needs exactly one operator of {', '.join(_OPERATORS)}")
    op, value = ops[0], node[ops[0]]
    fact = str(node["fact"])
    get = _fact_getter(fact, f"{key}.fact")
    if not fact.startswith("field."):
        fast = _fast_op(op, value, fact)
        if fast is not None:
            return fast
    return _compile_op(op, value, get, f"{key}.{op}")


def match_source(node: dict[str, Any], ns: dict[str, Any]) -> str:
    """A Python expression over the facts `f` (with `g = f.get`) that decides exactly what
    compile_match(node) decides, for a node compile_match has accepted. The common operators on
    plain facts are written inline; anything else calls its compiled predicate. No value or name
    from a rule is ever written into the source: each becomes a constant in `ns`."""

    def const(value: Any) -> str:
        name = f"_c{len(ns)}"
        ns[name] = value
        return name

    if "all" in node or "any" in node:
        kind = "all" if "all" in node else "any"
        glue = " and " if kind == "all" else " or "
        return "(" + glue.join(match_source(item, ns) for item in node[kind]) + ")"
    if "not" in node:
        return f"(not {match_source(node['not'], ns)})"
    op = next(op for op in node if op != "fact")
    value, fact = node[op], str(node["fact"])
    if not fact.startswith("field."):
        name = const(fact)
        if op == "is" and (value is True or value is False):
            return f"(g({name}) is {value!r})"
        if op == "is":
            return f"(g({name}) == {const(value)})"
        if op == "exists":
            return f"(g({name}) {'not in' if value else 'in'} _EMPTY)"
        if op in ("gte", "lt") and isinstance(value, int | float) and not isinstance(value, bool):
            sign = ">=" if op == "gte" else "<"
            return f"(type(_v := g({name})) in _NUMBERS and _v {sign} {const(value)})"
    return f"{const(compile_match(node))}(f)"


def compile_evaluator(rules: Sequence[Rule]) -> Callable[[Facts], list[Rule]]:
    """One generated function testing every rule in order: a call per rule and per condition
    (lambdas nested in lambdas) was most of the engine's rule time. A rule whose expression
    Python cannot compile (absurdly deep nesting) falls back to its predicate."""
    ns: dict[str, Any] = {"_EMPTY": (None, "", False), "_NUMBERS": _NUMBERS}
    lines = ["def evaluate(f):", "    g = f.get", "    out = []"]
    for i, rule in enumerate(rules):
        ns[f"_r{i}"] = rule
        try:
            expr = match_source(rule.doc.match, ns)
            compile(expr, "<rule>", "eval")
        except (SyntaxError, RecursionError, MemoryError, ValueError):
            expr = f"_r{i}.predicate(f)"
        lines += [f"    if {expr}:", f"        out.append(_r{i})"]
    lines.append("    return out")
    exec(compile("\n".join(lines), "<activelead rules>", "exec"), ns)  # noqa: S102 - see above
    evaluate: Callable[[Facts], list[Rule]] = ns["evaluate"]
    return evaluate


def _fast_op(op: str, value: Any, name: str) -> Predicate | None:
    """One-call predicates for the common operators on plain facts (most built-in rules)."""
    if op == "is":
        if value is True or value is False:
            return lambda f: f.get(name) is value
        return lambda f: f.get(name) == value
    if op == "exists":
        if value:
            return lambda f: f.get(name) not in (None, "", False)
        return lambda f: f.get(name) in (None, "", False)
    if op in ("gte", "lt") and isinstance(value, int | float) and not isinstance(value, bool):
        bound = value
        # type() not isinstance(): bools are ints, and a list fact must not raise TypeError
        if op == "gte":
            return lambda f: type(v := f.get(name)) in _NUMBERS and v >= bound  # type: ignore[operator]
        return lambda f: type(v := f.get(name)) in _NUMBERS and v < bound  # type: ignore[operator]
    return None


def _compile_op(op: str, value: Any, get: Callable[[Facts], Any], key: str) -> Predicate:
    if op == "is":
        return lambda f: get(f) == value
    if op == "exists":
        want = bool(value)
        return lambda f: (get(f) not in (None, "", False)) == want
    if op == "in":
        if not isinstance(value, list) or len(value) > 10_000:
            raise CompileError(key, "must be a list (at most 10,000 items)")
        members = frozenset(v.lower() if isinstance(v, str) else v for v in value)

        def member(f: Facts) -> bool:
            v = get(f)
            if isinstance(v, str):
                return v.lower() in members
            return v is not None and not isinstance(v, list | dict) and v in members

        return member
    if op in ("gte", "gt", "lte", "lt"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CompileError(key, "must be a number")
        compare: dict[str, Callable[[float, float], bool]] = {
            "gte": operator.ge, "gt": operator.gt, "lte": operator.le, "lt": operator.lt,
        }
        fn, bound = compare[op], float(value)

        def numeric(f: Facts) -> bool:
            v = get(f)
            if type(v) not in _NUMBERS:  # bools and strings never compare as numbers
                return False
            return fn(float(v), bound)

        return numeric
    if op == "matches":
        if not isinstance(value, str) or len(value) > MAX_REGEX_CHARS:
            raise CompileError(key, f"must be a regex of at most {MAX_REGEX_CHARS} characters")
        try:
            rx = re2.compile(value)  # RE2: linear time, no catastrophic backtracking
        except re2.error as exc:
            raise CompileError(key, f"invalid regex: {exc}") from exc
        return lambda f: isinstance(v := get(f), str) and rx.search(v) is not None
    if op == "contains":
        if not isinstance(value, str):
            raise CompileError(key, "must be a string")
        needle = value.lower()
        return lambda f: (
            needle in v.lower() if isinstance(v := get(f), str)
            else isinstance(v, list | tuple) and needle in v
        )
    raise CompileError(key, f"unknown operator {op}")  # pragma: no cover - guarded above


def compile_rule(data: object, source: str, *, custom: bool = False, prefix: str = "") -> Rule:
    """Validate and compile one rule document; errors name the source and key."""
    if not isinstance(data, dict):
        raise ConfigError(source, prefix, "a rule must be a mapping")
    try:
        doc = RuleDoc.model_validate(data)
    except ValidationError as exc:
        raise format_validation_error(source, exc, prefix) from exc
    labels = list(doc.labels)
    for i, label in enumerate(labels):
        if not custom and label not in LABELS:
            raise ConfigError(source, f"{prefix}.labels.{i}".lstrip("."),
                              f"{label!r} is not in the label vocabulary")
    if custom and "custom_rule" not in labels:
        labels.append("custom_rule")
    try:
        predicate = compile_match(doc.match, f"{prefix}.match".lstrip("."))
    except CompileError as exc:
        raise ConfigError(source, exc.key, exc.problem) from exc
    return Rule(doc.id, doc.title, doc.resolved_weight(), tuple(labels), doc.effect, predicate,
                doc, source, custom)


@dataclass
class RuleSet:
    rules: list[Rule] = field(default_factory=list)

    def ids(self) -> set[str]:
        return {r.id for r in self.rules}


def rule_files(packs_dir: Path = PACKS_DIR) -> list[Path]:
    return sorted(packs_dir.glob("*/*.yaml"))


def load_builtin(packs_dir: Path = PACKS_DIR) -> list[Rule]:
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    files = rule_files(packs_dir)
    if len(files) > MAX_RULES:
        raise ConfigError(str(packs_dir), "", f"more than {MAX_RULES} rule files")
    for path in files:
        rule = compile_rule(load_yaml(path), str(path))
        if not path.name.startswith(f"{rule.id}-"):
            raise ConfigError(str(path), "id", f"file name must start with '{rule.id}-'")
        if rule.id in seen:
            raise ConfigError(str(path), "id", f"duplicate of {seen[rule.id]}")
        seen[rule.id] = str(path)
        rules.append(rule)
    return rules


def compile_custom(docs: Iterable[dict[str, Any]], builtin_ids: set[str], source: str) -> list[Rule]:
    rules: list[Rule] = []
    seen = set(builtin_ids)
    for i, doc in enumerate(docs):
        prefix = f"scoring.custom_rules.{i}"
        rule = compile_rule(doc, source, custom=True, prefix=prefix)
        if rule.id in seen:
            raise ConfigError(source, f"{prefix}.id", f"id {rule.id!r} is already used")
        seen.add(rule.id)
        rules.append(rule)
    return rules
