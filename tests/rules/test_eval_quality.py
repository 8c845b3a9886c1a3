"""Quality floors on the labelled public data in ../shared/eval (skipped when it is absent).

Floors, not fitted results: they catch a signal that regresses, e.g. a pattern that starts
flagging real browsers. Full figures come from bench/eval_scorer.py.
"""

from __future__ import annotations

import csv

import pytest

from rules import Engine
from tests.rules.conftest import make_submission
from tests.services import EVAL_DIR

pytestmark = pytest.mark.skipif(not EVAL_DIR.is_dir(), reason="no ../shared/eval data")


def _column(path: str, index: int, want: str | None = None) -> list[str]:
    with (EVAL_DIR / path).open(encoding="utf-8", errors="replace") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))[1:]
    return [row[index] for row in rows if row and (want is None or row[0] == want)]


def test_real_browsers_are_not_bots(engine: Engine) -> None:
    flagged = [ua for ua in _column("useragents/browsers_uap_core.tsv", 0)
               if engine.score(make_submission(userAgent=ua)).decision != "allowed"]
    assert len(flagged) <= 2, flagged


def test_spiders_are_recognised(engine: Engine) -> None:
    spiders = _column("useragents/spiders_uap_core.tsv", 0)
    seen = sum(bool({"bot_user_agent", "automation_client", "missing_user_agent"}
                    & set(engine.score(make_submission(userAgent=ua)).labels)) for ua in spiders)
    assert seen / len(spiders) >= 0.85


def test_sms_ham_is_almost_never_flagged_and_spam_often_is(engine: Engine) -> None:
    path = "text/sms_spam_collection.tsv"
    ham = _column(path, 1, "ham")
    spam = _column(path, 1, "spam")
    ham_flagged = sum(engine.score(make_submission(fields={"message": t})).decision != "allowed"
                      for t in ham)
    spam_flagged = sum(engine.score(make_submission(fields={"message": t})).decision != "allowed"
                       for t in spam)
    assert ham_flagged / len(ham) <= 0.005
    assert spam_flagged / len(spam) >= 0.55
