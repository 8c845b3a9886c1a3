"""Form bodies: parsing for scoring and byte-exact stripping of the proxy's own fields."""

from __future__ import annotations

import random
from urllib.parse import unquote_to_bytes

import pytest

from proxy.formbody import BodyError, parse, strip

URLENC = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(("body", "ctype", "fields"), [
    (b"a=1&b=x+y&a=2", URLENC, {"a": "1\n2", "b": "x y"}),
    (b"n=caf%E9", URLENC + "; charset=latin-1", {"n": "café"}),
    (b"", URLENC, {}),
    (b'{"a": 1, "b": true, "c": null, "d": ["x", "y"], "e": {"f": 1}}', "application/json",
     {"a": "1", "b": "true", "c": "", "d": "x\ny", "e": '{"f": 1}'}),
    (b"", "application/json", {}),
    (b"whatever", "text/plain", {}),
])
def test_parse(body: bytes, ctype: str, fields: dict[str, str]) -> None:
    assert parse(ctype, body).fields == fields


@pytest.mark.parametrize(("body", "ctype"), [
    (b"%ff=1", URLENC),
    (b"a=1", URLENC + "; charset=nope"),
    (b'"x"', "application/json"),
    (b"{}", "application/json; charset=utf-16"),
    (b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--", "multipart/form-data; boundary=b"),
    (b"--b\r\nbroken\r\n\r\nx\r\n--b--", "multipart/form-data; boundary=b"),
    (b"&".join(b"f%d=1" % i for i in range(300)), URLENC),
])
def test_parse_errors(body: bytes, ctype: str) -> None:
    with pytest.raises(BodyError):
        parse(ctype, body)


@pytest.mark.parametrize("charset_field", [b"_charset_", b"%5Fcharset%5F"])
def test_urlencoded_charset_field_names_the_encoding(charset_field: bytes) -> None:
    """HTML's `_charset_` field (filled in by the browser) says how the rest was encoded."""
    body = b"name=J%F6rg&" + charset_field + b"=windows-1252&note=%80+5"
    assert parse(URLENC, body).fields == {"name": "Jörg", "_charset_": "windows-1252",
                                          "note": "€ 5"}
    with pytest.raises(BodyError, match=r"a field is not valid utf-8 \(byte 1\)"):
        parse(URLENC, b"name=J%F6rg")  # without it: UTF-8, and the error says where
    with pytest.raises(BodyError, match="a field name is not valid utf-8"):
        parse(URLENC, b"n%F6=1")


def test_percent_decoding_matches_urllib() -> None:
    """The C-speed decoder (escapes rewritten for codecs.escape_decode) against urllib's, on
    what trips such rewrites: stray and truncated "%", backslashes, "\\x", mixed-case hex."""
    rnd = random.Random(7)
    alphabet = b"%%%+aZ09fF\\x.=\xff"
    for _ in range(20_000):
        raw = bytes(rnd.choice(alphabet) for _ in range(rnd.randint(0, 14)))
        want = unquote_to_bytes(raw.replace(b"+", b" ")).decode("latin-1")
        assert parse(URLENC + "; charset=latin-1", b"f=" + raw).fields["f"] == want, raw


def test_strip_is_identity_without_proxy_fields() -> None:
    for body, ctype in [(b"a=%41&&b", URLENC), (b'{"a" : 1}', "application/json"),
                        (b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--b--\r\n",
                         "multipart/form-data; boundary=b")]:
        assert strip(ctype, body, frozenset({"hp", "tok"})) is body


def test_strip_multipart_keeps_preamble_and_epilogue() -> None:
    body = (b"preamble\r\n--b\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n"
            b"--b\r\nContent-Disposition: form-data; name=tok\r\n\r\nT\r\n--b--\r\nepilogue")
    out = strip("multipart/form-data; boundary=b", body, frozenset({"tok"}))
    assert out == (b"preamble\r\n--b\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n"
                   b"--b--\r\nepilogue")


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
], ids=["deep-array", "deep-object"])
def test_deeply_nested_json_is_a_clear_error(body: bytes) -> None:
    """Nesting past the parser's depth is a 400 with a reason, not a RecursionError (a 500)."""
    with pytest.raises(BodyError, match="invalid JSON: maximum recursion depth"):
        parse("application/json", body)


def test_nested_json_values_are_scored_as_their_text() -> None:
    fields = parse("application/json", b'{"a": {"b": ["x", 1]}, "c": ["p", "q"]}').fields
    assert fields == {"a": '{"b": ["x", 1]}', "c": "p\nq"}
