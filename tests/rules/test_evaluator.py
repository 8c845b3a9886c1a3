"""The generated rule evaluator decides exactly what the rules' own predicates decide."""

from __future__ import annotations

import random
from typing import Any

from rules.config import ScoringConfig
from rules.engine import Engine
from rules.model import Submission
from rules.ruleset import KNOWN_FACTS, compile_evaluator, compile_match
from rules.testing import DEFAULT_TEST_UA, iter_cases

ODD_VALUES: list[Any] = [None, "", "x", "Spam.Example", "0", 0, 1, -1, 2.5, 10**6, True, False,
                         [], ["casino"], {"a": 1}, float("nan"), "é" * 3, "\x00"]

CUSTOM = [  # every operator, nested all/any/not, field facts, and values that look like code
    {"id": "X-is", "title": "odd", "weight": 1, "match": {"fact": "email.domain", "is": "a.b"}},
    {"id": "X-is-true", "title": "odd", "weight": 1, "match": {"fact": "email.free", "is": True}},
    {"id": "X-is-num", "title": "odd", "weight": 1, "match": {"fact": "content.links", "is": 0}},
    {"id": "X-in", "title": "odd", "weight": 1,
     "match": {"fact": "email.domain", "in": ["Spam.Example", "__import__('os')", 3]}},
    {"id": "X-cmp", "title": "odd", "weight": 1, "match": {"all": [
        {"fact": "content.link_density", "gte": 0.5}, {"fact": "content.links", "lt": 3},
        {"fact": "velocity.ip", "gt": 2}, {"fact": "velocity.email", "lte": 1}]}},
    {"id": "X-any-not", "title": "odd", "weight": 1, "match": {"any": [
        {"not": {"fact": "ip.country", "exists": True}},
        {"fact": "ua.tool", "exists": False},
        {"fact": "field.message", "contains": "\"); raise SystemExit #"}]}},
    {"id": "X-re", "title": "odd", "weight": 1,
     "match": {"fact": "field.message", "matches": "(?i)casino|'''"}},
]


def engines() -> list[Engine]:
    base = Engine.from_config()
    return [base, base.with_config(ScoringConfig.model_validate({"custom_rules": CUSTOM}))]


def reference(engine: Engine, facts: dict[str, Any]) -> list[str]:
    return [r.id for r in engine.rules if compile_match(r.doc.match)(facts)]


def test_same_rules_match_on_every_rule_case_and_on_random_hostile_facts() -> None:
    rng = random.Random(7)
    compared = 0
    for engine in engines():
        samples = []
        for _, _, _, case in iter_cases(engine.builtin):
            sub = Submission.from_json({"userAgent": DEFAULT_TEST_UA, **case.input})
            samples.append(engine.facts(sub, case.velocity or None))
        for _ in range(3000):
            facts: dict[str, Any] = {name: rng.choice(ODD_VALUES)
                                     for name in rng.sample(sorted(KNOWN_FACTS), 25)}
            facts["fields"] = {"message": rng.choice(["casino", "hello", "'''", ""])}
            samples.append(facts)
        for facts in samples:
            assert [r.id for r in engine.evaluate(facts)] == reference(engine, facts), facts
            compared += 1
    assert compared > 6000
    assert any(engine.evaluate(s) for engine in engines() for s in samples)


def test_a_rule_too_deep_for_python_falls_back_to_its_predicate() -> None:
    node: dict[str, Any] = {"fact": "email.free", "is": True}
    for _ in range(400):  # deeper than CPython's parser nests parentheses
        node = {"not": {"not": node}}
    engine = Engine.from_config().with_config(ScoringConfig.model_validate({"custom_rules": [
        {"id": "deep", "title": "deep", "weight": 1, "match": node}]}))
    deep = next(r for r in engine.rules if r.id == "deep")
    evaluate = compile_evaluator([deep])
    assert evaluate({"email.free": True}) == [deep]
    assert evaluate({"email.free": False}) == []
