"""control_api.jsonx: orjson when installed, the standard library otherwise; compact text, and
exactly the standard library's acceptance either way."""

from __future__ import annotations

from typing import Any

import pytest

from control_api import jsonx

VALUE = {"traceId": "tr_1", "score": 42, "labels": ["a", "é"], "hits": [{"w": 1.5}], "x": None, "ok": True}


@pytest.fixture(params=["orjson", "json"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "orjson":
        pytest.importorskip("orjson")
    else:
        monkeypatch.setattr(jsonx, "orjson", None)
    return str(request.param)


def test_compact_text_and_round_trip(backend: str) -> None:
    ascii_only = {**VALUE, "labels": ["a"]}
    assert jsonx.dumps(ascii_only) == (
        '{"traceId":"tr_1","score":42,"labels":["a"],"hits":[{"w":1.5}],"x":null,"ok":true}'
    )
    assert jsonx.loads(jsonx.dumps(VALUE)) == VALUE
    assert jsonx.loads(jsonx.dumps(VALUE).encode()) == VALUE


def test_what_orjson_refuses_is_decided_by_the_standard_library(backend: str) -> None:
    # A lone surrogate escape and a huge integer are JSON; they must neither fail nor crash.
    value = jsonx.loads('{"m": "\\ud800 x", "n": 123456789012345678901234567890}')
    assert value == {"m": "\ud800 x", "n": 123456789012345678901234567890}
    text = jsonx.dumps(value)
    assert jsonx.loads(text) == value
    text.encode("utf-8")  # storable as it is (the surrogate stays escaped)


@pytest.mark.parametrize(
    "text", ['{"a": NaN}', "[Infinity]", "[-Infinity]", "{", "", '{"a": 1,}', "[" * 100_000]
)
def test_refusals(backend: str, text: str) -> None:
    with pytest.raises(jsonx.JsonError):
        jsonx.loads(text)


async def test_api_refuses_nan_with_400(client: Any) -> None:
    resp = await client.post(
        "/v1/accounts", data=b'{"email": NaN}', headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_json"
