"""Every rule's own test cases, the rule-file lint, and rule-schema errors."""

from __future__ import annotations

import pytest

from activelead.cli import lint_rules
from rules import LABELS, ConfigError, Engine, ScoringConfig
from rules.ruleset import compile_rule, load_builtin
from rules.testing import iter_cases, run_case

_BUILTIN = load_builtin()
_CASES = list(iter_cases(_BUILTIN))


@pytest.mark.parametrize(
    ("rule", "kind", "index", "case"), _CASES,
    ids=[f"{r.id}-{kind}{i}" for r, kind, i, _ in _CASES],
)
def test_rule_case(engine: Engine, rule, kind, index, case) -> None:
    result = run_case(engine, rule, kind, index, case)
    assert result.passed, result.describe()


def test_lint_is_clean() -> None:
    assert lint_rules() == []


def test_every_rule_has_hit_and_miss_and_known_labels() -> None:
    assert len(_BUILTIN) >= 40
    for rule in _BUILTIN:
        assert rule.doc.tests.hit and rule.doc.tests.miss, rule.id
        assert set(rule.labels) <= set(LABELS), rule.id


def test_contract_labels_exist() -> None:
    required = [
        "invalid_email", "disposable_email", "role_email", "free_email", "datacenter_ip",
        "tor_exit", "anonymizing_relay", "private_ip", "verified_crawler", "bot_user_agent",
        "automation_client", "missing_user_agent", "spam_content", "link_spam",
        "injection_attempt", "honeypot_filled", "too_fast", "token_missing", "token_invalid",
        "token_expired", "token_replayed", "velocity_ip", "velocity_email", "country_blocked",
        "test", "degraded",
    ]
    assert set(required) <= set(LABELS)
    produced = {label for rule in _BUILTIN for label in rule.labels} | {"test", "degraded"}
    assert set(required) <= produced


@pytest.mark.parametrize(
    ("doc", "key", "problem"),
    [
        ({"id": "1", "title": "x" * 5, "weight": 5, "match": {"fact": "nope", "is": 1}},
         "match.fact", "unknown fact"),
        ({"id": "1", "title": "title", "weight": 500, "match": {"fact": "ip.tor", "is": True}},
         "weight", "less than or equal to 100"),
        ({"id": "1", "title": "title", "weight": 5, "match": {"fact": "ip.tor"}},
         "match", "exactly one operator"),
        ({"id": "1", "title": "title", "weight": 5, "match": {"any": []}},
         "match.any", "non-empty list"),
        ({"id": "1", "title": "title", "weight": 5,
          "match": {"fact": "content.text", "matches": "(unclosed"}},
         "match.matches", "invalid regex"),
        ({"id": "1", "title": "title", "weight": 5, "labels": ["not_a_label"],
          "match": {"fact": "ip.tor", "is": True}}, "labels.0", "vocabulary"),
        ({"id": "bad id!", "title": "title", "match": {"fact": "ip.tor", "is": True}},
         "id", "letters"),
        ({"id": "1", "title": "title", "match": {"fact": "ip.tor", "is": True}, "extra": 1},
         "extra", "not permitted"),
        ({"id": "1", "title": "title", "match": {"all": [{"fact": "ip.tor", "gte": "x"}]}},
         "match.all.0.gte", "number"),
    ],
)
def test_bad_rule_names_file_key_and_problem(doc, key, problem) -> None:
    with pytest.raises(ConfigError) as err:
        compile_rule(doc, "packs/x.yaml")
    assert err.value.source == "packs/x.yaml"
    assert err.value.key == key
    assert problem in err.value.problem
    assert str(err.value).startswith(f"packs/x.yaml: {key}: ")


def test_custom_rule_from_config_scores_and_labels(engine: Engine) -> None:
    from tests.rules.conftest import make_submission

    config = ScoringConfig.model_validate({"custom_rules": [{
        "id": "C1", "title": "Competitor coupon", "weight": 30, "labels": ["coupon_abuse"],
        "match": {"fact": "field.message", "matches": "(?i)coupon code"},
    }]})
    custom = engine.with_config(config)
    verdict = custom.score(make_submission(fields={"message": "Use COUPON CODE x"}))
    assert verdict.score == 30
    assert verdict.labels == ["coupon_abuse", "custom_rule"]
    assert custom.score(make_submission()).score == 0


def test_invalid_custom_rule_keeps_previous_engine(engine: Engine) -> None:
    from tests.rules.conftest import make_submission

    bad = ScoringConfig.model_validate({"custom_rules": [{
        "id": "100110", "title": "clash", "weight": 1, "match": {"fact": "ip.tor", "is": True}}]})
    with pytest.raises(ConfigError) as err:
        engine.with_config(bad, "activelead.yaml")
    assert str(err.value) == "activelead.yaml: scoring.custom_rules.0.id: id '100110' is already used"
    # the running engine is untouched: a failed reload keeps the last good set
    assert engine.score(make_submission(email="x@mailinator.com")).labels == ["disposable_email"]


def test_disabled_rules_and_unknown_ids(engine: Engine) -> None:
    from tests.rules.conftest import make_submission

    off = engine.with_config(ScoringConfig(disabled_rules=["100110"]))
    assert "disposable_email" not in off.score(make_submission(email="x@mailinator.com")).labels
    with pytest.raises(ConfigError, match="unknown rule ids"):
        engine.with_config(ScoringConfig(disabled_rules=["999999"]))
