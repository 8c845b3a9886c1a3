"""Form bodies as the origin will read them: parse for scoring, strip proxy-added fields.

Parsing never re-encodes what it forwards: stripping cuts the proxy's own fields (token,
honeypot) out of the raw bytes, so every other byte reaches the origin exactly as sent.
"""

from __future__ import annotations

import codecs
import functools
import json
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from email.message import Message
from urllib.parse import unquote_to_bytes

MAX_FIELDS = 200


class BodyError(ValueError):
    """A body that cannot be read as the form it claims to be; the message says why (400)."""


@dataclass(slots=True)
class ParsedBody:
    kind: str  # urlencoded | multipart | json | other
    fields: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # file part names (content not scored)


@functools.lru_cache(maxsize=256)  # a site sends few distinct content types; parse each once
def _params(content_type: str) -> tuple[str, dict[str, str]]:
    """Media type and parameters; callers must not modify the cached dict."""
    msg = Message()
    msg["content-type"] = content_type
    params = {k.lower(): v for k, v in msg.get_params(failobj=[])[1:]}
    return msg.get_content_type(), params


@functools.lru_cache(maxsize=64)
def _codec(name: str) -> str:
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise BodyError(f"unsupported charset {name!r}") from None


def _decode(raw: bytes, charset: str, what: str) -> str:
    try:
        return raw.decode(charset)
    except UnicodeDecodeError as exc:
        raise BodyError(f"{what} is not valid {charset} (byte {exc.start})") from None


def _add(fields: dict[str, str], name: str, value: str) -> None:
    if name in fields:
        fields[name] += "\n" + value  # repeated fields (checkboxes), as the engine expects
    elif len(fields) >= MAX_FIELDS:
        raise BodyError(f"more than {MAX_FIELDS} fields")
    else:
        fields[name] = value


def body_kind(content_type: str) -> str:
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        return "urlencoded"
    if ctype == "multipart/form-data":
        return "multipart"
    if ctype == "application/json" or ctype.endswith("+json"):
        return "json"
    return "other"


def parse(content_type: str, body: bytes) -> ParsedBody:
    kind = body_kind(content_type)
    if kind == "urlencoded":
        return _parse_urlencoded(content_type, body)
    if kind == "multipart":
        return _parse_multipart(content_type, body)
    if kind == "json":
        return _parse_json(content_type, body)
    return ParsedBody("other")


@functools.lru_cache(maxsize=256)  # callers pass a site's own frozenset: encoded once
def _needles(names: frozenset[str]) -> tuple[bytes, ...]:
    return tuple(name.encode() for name in names)


def strip(content_type: str, body: bytes, names: frozenset[str]) -> bytes:
    """`body` without the fields in `names`; byte-identical when none of them is present."""
    # bytes.find, not `in`: `x in some_bytes` first tries x as an integer and builds and drops a
    # TypeError before searching (~0.9 us each, measured; a scored post made a dozen of them).
    if not any(body.find(needle) >= 0 for needle in _needles(names)):
        return body  # the usual case for forms the proxy did not render: nothing to cut
    kind = body_kind(content_type)
    if kind == "urlencoded":
        return _strip_urlencoded(body, names)
    if kind == "multipart":
        return _strip_multipart(content_type, body, names)
    if kind == "json":
        return _strip_json(body, names)
    return body


# --- application/x-www-form-urlencoded ------------------------------------------------------


def _unquote(raw: bytes) -> bytes:
    if raw.find(b"%") < 0:  # find, not `in` (see strip); replace returns raw itself if no "+"
        return raw.replace(b"+", b" ")
    spaced = raw.replace(b"+", b" ")
    try:
        # In C: each "%XX" becomes "\xXX" for the bytes-escape decoder, every backslash doubled
        # first so that nothing else is an escape (0.6 us a value; unquote_to_bytes takes 3 us,
        # a third of parsing a typical form).
        return codecs.escape_decode(spaced.replace(b"\\", b"\\\\").replace(b"%", b"\\x"))[0]
    except ValueError:  # a "%" without two hex digits after it: kept as sent, the slow way
        return unquote_to_bytes(spaced)


def _pairs(body: bytes) -> list[tuple[bytes, bytes, bytes]]:
    out = []
    for piece in body.split(b"&"):  # empty pieces are kept so that stripping loses no byte
        name, _, value = piece.partition(b"=")
        out.append((piece, _unquote(name), _unquote(value)))
    return out


def _parse_urlencoded(content_type: str, body: bytes) -> ParsedBody:
    _, params = _params(content_type)
    charset = params.get("charset")
    if charset is None and body.find(b"charset") >= 0:  # HTML's _charset_ field names the
        for _, sent_name, sent_value in _pairs(body):   # encoding the browser used
            if sent_name == b"_charset_" and sent_value:
                charset = sent_value.decode("ascii", "replace")
                break
    codec = _codec(charset or "utf-8")
    out = ParsedBody("urlencoded")
    fields = out.fields
    # One loop over the pieces (this runs for every protected post; per-piece helpers made 22
    # calls for a three-field form).
    for piece in body.split(b"&"):
        if not piece:
            continue
        raw_name, _, raw_value = piece.partition(b"=")
        try:
            name = _unquote(raw_name).decode(codec)
            value = _unquote(raw_value).decode(codec)
        except UnicodeDecodeError:  # again, for the message that says which part and where
            _decode(_unquote(raw_name), codec, "a field name")
            _decode(_unquote(raw_value), codec, "a field")
            raise
        _add(fields, name, value)
    return out


def utf8_pairs(content_type: str, body: bytes) -> list[tuple[str, str]] | None:
    """The urlencoded body's fields in order, repeats kept (for posting it again from a page);
    None if it is not UTF-8 (or ASCII), the one encoding such a page re-posts faithfully."""
    _, params = _params(content_type)
    pairs = _pairs(body)
    charset = params.get("charset") or next(
        (value.decode("ascii", "replace") for _, name, value in pairs
         if name == b"_charset_" and value), "utf-8")
    try:
        if _codec(charset) not in ("utf-8", "ascii"):
            return None
        return [(name.decode(), value.decode()) for raw, name, value in pairs if raw]
    except (BodyError, UnicodeDecodeError):
        return None


def _strip_urlencoded(body: bytes, names: AbstractSet[str]) -> bytes:
    wanted = {n.encode() for n in names}
    pairs = _pairs(body)
    if not any(raw and name in wanted for raw, name, _ in pairs):
        return body
    return b"&".join(raw for raw, name, _ in pairs if not (raw and name in wanted))


# --- multipart/form-data --------------------------------------------------------------------


@dataclass(slots=True)
class _Part:
    raw: bytes  # the segment between two delimiters, exactly as received
    name: str
    filename: str | None
    charset: str | None
    content: bytes


def _boundary(content_type: str) -> bytes:
    _, params = _params(content_type)
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise BodyError("multipart body without a valid boundary")
    return boundary.encode("latin-1", "replace")


def _split_multipart(content_type: str, body: bytes) -> tuple[bytes, list[_Part], bytes]:
    delimiter = b"\r\n--" + _boundary(content_type)
    segments = (b"\r\n" + body).split(delimiter)
    if len(segments) < 2:
        raise BodyError("multipart body without a part")
    preamble, parts, epilogue, closed = segments[0], [], b"", False
    for i, seg in enumerate(segments[1:], 1):
        if seg.startswith(b"--"):
            epilogue = delimiter.join(segments[i:])
            closed = True
            break
        head, sep, content = seg.partition(b"\r\n\r\n")
        if not sep:
            raise BodyError("multipart part without a header block")
        msg = Message()
        for line in head.split(b"\r\n")[1:]:  # [0] is transport padding after the delimiter
            hname, colon, hvalue = line.partition(b":")
            if not colon:
                raise BodyError("malformed multipart part header")
            msg[hname.decode("latin-1").strip()] = hvalue.decode("utf-8", "replace").strip()
        if msg.get_content_disposition() != "form-data":
            raise BodyError("multipart part without Content-Disposition: form-data")
        name = msg.get_param("name", header="content-disposition")
        filename = msg.get_filename()
        charset = msg.get_content_charset()
        if not isinstance(name, str):
            raise BodyError("multipart part without a name")
        parts.append(_Part(seg, name, filename, charset, content))
    if not closed:
        raise BodyError("multipart body is truncated (no closing boundary)")
    return preamble, parts, epilogue


def _parse_multipart(content_type: str, body: bytes) -> ParsedBody:
    _, parts, _ = _split_multipart(content_type, body)
    default = "utf-8"
    for part in parts:
        if part.name == "_charset_" and part.filename is None and part.content:
            default = part.content.decode("ascii", "replace")
    out = ParsedBody("multipart")
    for part in parts:
        if part.filename is not None:
            out.files.append(part.name)
            continue
        codec = _codec(part.charset or default)
        _add(out.fields, part.name, _decode(part.content, codec, f"field {part.name!r}"))
    return out


def _strip_multipart(content_type: str, body: bytes, names: AbstractSet[str]) -> bytes:
    preamble, parts, epilogue = _split_multipart(content_type, body)
    if not any(p.name in names for p in parts):
        return body
    delimiter = b"\r\n--" + _boundary(content_type)
    kept = [preamble, *(p.raw for p in parts if p.name not in names), epilogue]
    return delimiter.join(kept)[2:]  # drop the CRLF added in front for splitting


# --- JSON -----------------------------------------------------------------------------------


def _load_json(content_type: str, body: bytes) -> object:
    _, params = _params(content_type)
    charset = _codec(params.get("charset", "utf-8"))
    if charset not in ("utf-8", "utf-8-sig"):
        raise BodyError("JSON must be UTF-8 (RFC 8259)")
    text = _decode(body, "utf-8-sig", "JSON body")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BodyError(f"invalid JSON: {exc}") from None


def _parse_json(content_type: str, body: bytes) -> ParsedBody:
    out = ParsedBody("json")
    if not body.strip():
        return out
    data = _load_json(content_type, body)
    if not isinstance(data, dict):
        raise BodyError("JSON body must be an object")
    for key, value in data.items():
        if isinstance(value, str):
            _add(out.fields, key, value)
        elif isinstance(value, bool) or value is None:
            _add(out.fields, key, "" if value is None else str(value).lower())
        elif isinstance(value, int | float):
            _add(out.fields, key, str(value))
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            _add(out.fields, key, "\n".join(value))
        else:  # nested objects: scored as their JSON text, so content rules still see them
            _add(out.fields, key, json.dumps(value, ensure_ascii=False)[:64_000])
    return out


def _strip_json(body: bytes, names: AbstractSet[str]) -> bytes:
    if not body.strip():
        return body
    data = json.loads(body.decode("utf-8-sig"))
    if not isinstance(data, dict) or not any(k in names for k in data):
        return body
    # JSON has no byte-exact cut; re-serialised compactly, the origin reads the same values.
    return json.dumps(
        {k: v for k, v in data.items() if k not in names}, ensure_ascii=False, separators=(",", ":")
    ).encode()
