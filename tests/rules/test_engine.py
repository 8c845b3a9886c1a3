"""The decision step, test identities, flags and the verdict's JSON contract."""

from __future__ import annotations

import pytest

from rules import Engine, ScoringConfig, Thresholds
from rules.engine import TEST_ALLOW_EMAIL, TEST_BLOCK_EMAIL, TEST_BLOCK_UA
from tests.rules.conftest import make_submission


def test_human_is_allowed_with_zero_score(engine: Engine) -> None:
    verdict = engine.score(make_submission())
    assert (verdict.decision, verdict.score, verdict.hits) == ("allowed", 0, [])
    assert verdict.country_hint == "GB"
    assert verdict.trace_id.startswith("tr_") and len(verdict.trace_id) == 27


def test_trace_ids_are_unique_and_sort_by_creation_time() -> None:
    import time

    from rules.model import new_trace_id

    first = new_trace_id()
    time.sleep(0.002)
    ids = [new_trace_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(first < later for later in ids)  # later milliseconds sort later
    assert int(ids[-1][3:15], 16) - time.time_ns() // 1_000_000 <= 0
    assert all(len(i) == 27 and i[3:].isalnum() for i in ids)


def test_trace_ids_of_forked_workers_never_collide() -> None:
    """Random parts are fetched in bulk; a forked worker must not reuse its parent's."""
    import os

    from rules.model import new_trace_id

    new_trace_id()  # the parent now holds unused random parts
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids go to the parent, then it leaves at once
        os.close(read_end)
        os.write(write_end, " ".join(new_trace_id() for _ in range(300)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        child = fh.read().decode().split()
    os.waitpid(pid, 0)
    parent = [new_trace_id() for _ in range(300)]
    assert len(child) == 300
    assert not {i[15:] for i in child} & {i[15:] for i in parent}


def test_score_is_the_sum_of_hit_weights_capped_at_100(engine: Engine) -> None:
    verdict = engine.score(make_submission(ip="3.5.140.2", userAgent="curl/8.5.0"))
    assert verdict.score == sum(h.weight for h in verdict.hits) == 75
    assert verdict.decision == "blocked"
    heavy = engine.score(make_submission(email="xkq7zpw9bv3t@mailinator.com", ip="185.220.101.1",
                                         userAgent="curl/8.0", signals={"honeypotFilled": True}))
    assert heavy.score == 100 and sum(h.weight for h in heavy.hits) > 100


@pytest.mark.parametrize(
    ("score_parts", "thresholds", "decision"),
    [
        ({"ip": "3.5.140.2"}, Thresholds(block=70, review=40), "allowed"),  # datacenter alone: 30
        ({"ip": "3.5.140.2"}, Thresholds(block=70, review=30), "review"),
        ({"ip": "3.5.140.2"}, Thresholds(block=30, review=20), "blocked"),
    ],
)
def test_thresholds_decide(engine: Engine, score_parts, thresholds, decision) -> None:
    assert engine.score(make_submission(**score_parts), thresholds=thresholds).decision == decision


def test_datacenter_alone_never_blocks_a_person(engine: Engine) -> None:
    for ip in ("3.5.140.2", "159.89.1.1", "34.102.136.180"):
        assert engine.score(make_submission(ip=ip)).decision == "allowed"


def test_test_identities(engine: Engine) -> None:
    blocked = engine.score(make_submission(email=TEST_BLOCK_EMAIL))
    assert (blocked.decision, blocked.score) == ("blocked", 100)
    assert engine.score(make_submission(userAgent=TEST_BLOCK_UA)).decision == "blocked"
    allowed = engine.score(make_submission(email=TEST_ALLOW_EMAIL, userAgent="curl/8",
                                           ip="185.220.101.1"))
    assert allowed.decision == "allowed" and allowed.score > 70  # allow effect wins, score kept
    assert "test_identity" in allowed.labels


def test_is_test_and_degraded_labels(engine: Engine) -> None:
    verdict = engine.score(make_submission(isTest=True), degraded=True)
    assert verdict.labels[-2:] == ["test", "degraded"]
    assert verdict.degraded and verdict.is_test


def test_allowlist_overrides_and_denylist_blocks(engine: Engine) -> None:
    lists = engine.with_config(ScoringConfig.model_validate({"lists": {
        "allow_ips": ["3.5.0.0/16"], "deny_emails": ["Bad@Example.org"]}}))
    assert lists.score(make_submission(ip="3.5.140.2", userAgent="curl/8")).decision == "allowed"
    assert lists.score(make_submission(email="bad@example.org")).decision == "blocked"


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"lists": {"allow_ips": ["10.0.0.0/33"]}}, "scoring.lists.allow_ips.0"),
        ({"lists": {"block_countries": ["Germany"]}}, "scoring.lists.block_countries.0"),
    ],
)
def test_bad_lists_name_the_key(engine: Engine, config, key) -> None:
    from rules import ConfigError

    with pytest.raises(ConfigError) as err:
        engine.with_config(ScoringConfig.model_validate(config), "activelead.yaml")
    assert err.value.key == key


def test_verdict_json_shape(engine: Engine) -> None:
    data = engine.score(make_submission(email="x@mailinator.com")).to_json()
    assert set(data) == {"traceId", "score", "decision", "labels", "hits", "countryHint",
                         "degraded", "elapsedUs", "isTest"}
    assert data["hits"] == [{"ruleId": "100110", "title": "Disposable e-mail domain",
                             "weight": 50, "labels": ["disposable_email"]}]
    assert isinstance(data["elapsedUs"], int) and data["elapsedUs"] >= 0


def test_hostile_field_content_scores_without_error(engine: Engine) -> None:
    nasty = "(a+)+$" * 2000 + "\x00\ud800" + "Ǆ" * 5000
    verdict = engine.score(make_submission(fields={"message": nasty[:60000]}))
    assert verdict.decision in {"allowed", "review", "blocked"}


def test_in_operator_matches_case_insensitively(engine: Engine) -> None:
    config = ScoringConfig.model_validate({"custom_rules": [{
        "id": "C2", "title": "Blocked domains", "weight": 80,
        "match": {"fact": "email.domain", "in": ["Spam.Example", "junk.example"]}}]})
    custom = engine.with_config(config)
    assert custom.score(make_submission(email="a@spam.example")).decision == "blocked"
    assert custom.score(make_submission(email="a@ok.example")).decision == "allowed"


@pytest.mark.parametrize("op", ["gte", "gt", "lte", "lt"])
def test_numeric_operators_on_non_numeric_facts_never_raise(engine: Engine, op: str) -> None:
    config = ScoringConfig.model_validate({"custom_rules": [
        {"id": f"C-{op}-{i}", "title": "odd comparison", "weight": 1,
         "match": {"fact": fact, op: 1}}
        for i, fact in enumerate(["content.spam_categories", "ua.verified_crawler", "email.domain",
                                  "field.message"])]})
    custom = engine.with_config(config)
    verdict = custom.score(make_submission(fields={"message": "5"}))
    # none of these facts is a number (the field value is the string "5"): no hit, no exception
    assert [h.rule_id for h in verdict.hits if h.rule_id.startswith("C-")] == []


def test_flags_and_weight_overrides(engine: Engine) -> None:
    disposable = make_submission(email="x@mailinator.com")
    assert engine.score(disposable).decision == "review"  # 50 on its own
    flagged = engine.with_config(ScoringConfig(flags={"block_disposable_email": True}))
    verdict = flagged.score(disposable)
    assert (verdict.decision, verdict.score, verdict.hits[0].weight) == ("blocked", 100, 100)
    # an explicit weight wins over the flag; 0 keeps the label but adds nothing
    quiet = engine.with_config(ScoringConfig(flags={"block_disposable_email": True},
                                             weights={"100110": 0}))
    verdict = quiet.score(disposable)
    assert (verdict.score, verdict.labels) == (0, ["disposable_email"])


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"flags": {"block_everything": True}}, "unknown flags ['block_everything']"),
        ({"weights": {"100110": 101}}, "weight of 100110 must be 0-100"),
    ],
)
def test_bad_flags_and_weights_are_refused(config, message) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ScoringConfig.model_validate(config)


def test_weight_for_unknown_rule_names_the_key(engine: Engine) -> None:
    from rules import ConfigError

    with pytest.raises(ConfigError) as err:
        engine.with_config(ScoringConfig(weights={"999999": 5}), "activelead.yaml")
    assert str(err.value) == "activelead.yaml: scoring.weights: unknown rule ids ['999999']"


def test_facts_assign_every_key_of_their_template(engine: Engine,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """facts() fills a copy of a key template (rules.engine._FACT_TEMPLATES): a key listed
    there but never assigned would silently read None."""
    from rules import engine as engine_module

    unset = object()
    templates = {shape: dict.fromkeys(keys, unset)
                 for shape, keys in engine_module._FACT_TEMPLATES.items()}
    monkeypatch.setattr(engine_module, "_FACT_TEMPLATES", templates)
    for overrides in ({}, {"email": ""}, {"ip": ""}, {"email": "", "ip": ""}):
        facts = engine.facts(make_submission(**overrides), {"ip": 1.0})
        assert [key for key, value in facts.items() if value is unset] == []
        template = templates[bool(facts.get("email.present")), "ip.present" in facts]
        assert list(facts)[:len(template)] == list(template)  # the template's keys, in order


def test_facts_unpack_the_enricher_rows_in_field_order() -> None:
    """facts() unpacks the enrichers' cached rows by position: a field added, dropped or
    moved in one of these NamedTuples must change facts() too."""
    from rules.enrich.content import ContentFacts
    from rules.enrich.email import EmailFacts
    from rules.enrich.ip import IpFacts
    from rules.enrich.useragent import UaFacts

    assert UaFacts._fields == ("present", "missing", "crawler", "crawler_family", "automation",
                               "headless", "tool")
    assert IpFacts._fields == ("valid", "version", "private", "country", "owner", "provider",
                               "tor", "relay", "crawler_net", "network")
    assert ContentFacts._fields == ("chars", "words", "links", "link_density", "markup_links",
                                    "html", "spam_score", "spam_categories", "injection",
                                    "mixed_scripts", "caps_ratio", "repeated")
    assert EmailFacts._fields == ("present", "valid", "local", "domain", "disposable", "free",
                                  "role", "plus", "gibberish", "normalized")


@pytest.mark.parametrize("overrides", [{}, {"ip": ""}, {"ip": "10.0.0.1"}, {"email": " A@B.org "},
                                       {"email": "", "formId": ""}, {"projectId": "p1"}])
def test_velocity_plan_is_velocity_keys_cached(engine: Engine, overrides: dict[str, str]) -> None:
    sub = make_submission(**overrides)
    keys = engine.velocity_keys(sub)
    names, counter_keys = engine.velocity_plan(sub)
    assert list(names) == [name for name, _, _ in keys]
    assert list(counter_keys) == [(key, window) for _, key, window in keys]
    assert engine.velocity_plan(make_submission(**overrides)) is engine.velocity_plan(sub)
