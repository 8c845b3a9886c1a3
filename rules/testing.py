"""Run the test cases every rule carries (`tests.hit` / `tests.miss`), CRS-style.

Used by the parametrized pytest over all rule files and by `activelead rules test`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from rules.config import ScoringConfig
from rules.engine import Engine
from rules.model import Submission
from rules.ruleset import Rule, RuleCase

DEFAULT_TEST_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)


@dataclass(frozen=True, slots=True)
class CaseResult:
    rule_id: str
    kind: Literal["hit", "miss"]
    index: int
    passed: bool
    hits: tuple[str, ...]

    def describe(self) -> str:
        want = "hit" if self.kind == "hit" else "not hit"
        status = "ok" if self.passed else "FAIL"
        return f"{status} {self.rule_id} {self.kind}[{self.index}] must {want}; hits={list(self.hits)}"


def iter_cases(rules: list[Rule]) -> Iterator[tuple[Rule, Literal["hit", "miss"], int, RuleCase]]:
    for rule in rules:
        for i, case in enumerate(rule.doc.tests.hit):
            yield rule, "hit", i, case
        for i, case in enumerate(rule.doc.tests.miss):
            yield rule, "miss", i, case


def run_case(engine: Engine, rule: Rule, kind: Literal["hit", "miss"], index: int,
             case: RuleCase) -> CaseResult:
    data = {"userAgent": DEFAULT_TEST_UA, **case.input}
    sub = Submission.from_json(data)
    if case.config:
        engine = engine.with_config(ScoringConfig.model_validate(case.config), f"rule {rule.id}")
    facts = engine.facts(sub, case.velocity or None)
    matched = tuple(r.id for r in engine.evaluate(facts))
    passed = (rule.id in matched) == (kind == "hit")
    return CaseResult(rule.id, kind, index, passed, matched)


def run_all(engine: Engine) -> list[CaseResult]:
    return [run_case(engine, *item) for item in iter_cases(engine.rules)]
