"""Submission JSON validation: malformed, oversized, wrongly typed and hostile input."""

from __future__ import annotations

import json

import pytest

from rules import Submission, SubmissionError
from rules.model import MAX_FIELD_CHARS, MAX_FIELDS, MAX_SHORT_CHARS


def test_full_body_round_trips() -> None:
    body = {
        "leadId": "L1", "formId": "contact", "ip": "81.2.69.142", "email": "a@example.org",
        "userAgent": "Mozilla/5.0", "fields": {"message": "hi", "n": 3, "ok": True,
                                               "tags": ["a", "b"]},
        "headers": {"Accept-Language": "en"}, "pageUrl": "https://example.org/contact",
        "referrer": "https://example.org/", "token": "t", "metadata": {"campaign": "x"},
        "signals": {"tokenState": "valid", "elapsedMs": 1200.5, "honeypotFilled": False},
        "isTest": True,
    }
    sub = Submission.from_json(body)
    assert sub.fields == {"message": "hi", "n": "3", "ok": "true", "tags": "a\nb"}
    assert sub.headers == {"accept-language": "en"}
    assert sub.signals.token_state == "valid" and sub.is_test
    assert Submission.from_json(json.loads(json.dumps(sub.to_json()))).to_json() == sub.to_json()


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ([], {"$": "must be a JSON object"}),
        ("text", {"$": "must be a JSON object"}),
        ({"email": 5}, {"email": "must be a string"}),
        ({"emial": "x"}, {"emial": "unknown key"}),
        ({"ip": "1" * (MAX_SHORT_CHARS + 1)}, {"ip": f"longer than {MAX_SHORT_CHARS} characters"}),
        ({"fields": []}, {"fields": "must be an object of strings"}),
        ({"fields": {"a": {"nested": 1}}},
         {"fields.a": "must be a string, number, boolean or list of strings"}),
        ({"fields": {"m": "x" * (MAX_FIELD_CHARS + 1)}},
         {"fields.m": f"longer than {MAX_FIELD_CHARS} characters"}),
        ({"fields": {str(i): "" for i in range(MAX_FIELDS + 1)}},
         {"fields": f"more than {MAX_FIELDS} entries"}),
        ({"isTest": "yes"}, {"isTest": "must be true or false"}),
        ({"metadata": [1]}, {"metadata": "must be an object"}),
        ({"signals": {"tokenState": "bogus"}},
         {"signals.tokenState": "must be one of ['expired', 'invalid', 'missing', 'replayed', 'valid']"}),
        ({"signals": {"elapsedMs": -1}}, {"signals.elapsedMs": "must not be negative"}),
        ({"signals": {"elapsedMs": True}}, {"signals.elapsedMs": "wrong type"}),
        ({"signals": {"x": 1}}, {"signals.x": "unknown key"}),
    ],
)
def test_invalid_bodies_name_every_bad_key(body, errors) -> None:
    with pytest.raises(SubmissionError) as err:
        Submission.from_json(body)
    assert err.value.errors == errors


def test_several_errors_are_reported_together() -> None:
    with pytest.raises(SubmissionError) as err:
        Submission.from_json({"email": 1, "ip": [], "bogus": 0})
    assert set(err.value.errors) == {"email", "ip", "bogus"}


def test_lone_surrogates_are_replaced_not_crashing() -> None:
    sub = Submission.from_json(json.loads('{"email": "a\\ud800@x.org", "fields": {"m": "\\udfff"}}'))
    assert sub.email == "a?@x.org" and sub.fields["m"] == "?"
    sub.email.encode("utf-8")
