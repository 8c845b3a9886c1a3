from __future__ import annotations

from typing import Any

import pytest

from rules import Engine, Submission
from rules.testing import DEFAULT_TEST_UA


@pytest.fixture(scope="session")
def engine() -> Engine:
    """One engine for the session: loading data takes ~1 s."""
    return Engine.from_config()


def make_submission(**overrides: Any) -> Submission:
    """A plausible human submission; override any ingest JSON key."""
    data: dict[str, Any] = {
        "formId": "contact",
        "ip": "81.2.69.142",
        "email": "anna.keller@example.org",
        "userAgent": DEFAULT_TEST_UA,
        "fields": {"name": "Anna", "message": "Could you send me a quote for two rooms?"},
        "signals": {"tokenState": "valid", "elapsedMs": 30000},
    }
    data.update(overrides)
    return Submission.from_json(data)
