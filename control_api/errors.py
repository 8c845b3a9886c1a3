"""ApiError and the middleware that turns every failure into one error shape:

    {"error": {"code": "invalid_submission", "message": "…", "details": {…}, "requestId": "req_…"}}

`details` is always an object (empty when there is nothing per field). The Akismet-compatible
endpoints (`/1.1/*`, `/1.2/*`) answer errors in plain text instead, as Akismet clients expect: the
message as the body, the same status, `X-akismet-debug-help` and `X-Activelead-Error-Code`.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web

from control_api import jsonx
from control_api.db import DatabaseBusy
from control_api.state import REQUEST_ID

log = logging.getLogger("activelead.control_api")

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Content-Type values that are JSON in UTF-8 as they stand (what clients send); others are parsed.
_PLAIN_JSON = frozenset({"application/json", "application/json; charset=utf-8"})


class ApiError(Exception):
    """An HTTP error with a stable machine code and a human message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.details = details
        self.headers = headers or {}


AKISMET_PREFIXES = ("/1.1/", "/1.2/")


def error_body(
    code: str, message: str, details: dict[str, Any] | None, request_id: str | None
) -> dict[str, Any]:
    """The one JSON error shape of the control API."""
    error: dict[str, Any] = {"code": code, "message": message, "details": details or {}}
    if request_id:
        error["requestId"] = request_id
    return {"error": error}


def error_response(
    request: web.Request | None,
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    if request is not None and request.path.startswith(AKISMET_PREFIXES):
        # Akismet clients read plain text and its debug header, never a JSON error.
        text_headers = {
            **(headers or {}),
            "X-akismet-debug-help": _header_safe(message),
            "X-Activelead-Error-Code": code,
        }
        return web.Response(text=message, status=status, content_type="text/plain", headers=text_headers)
    request_id = request.get(REQUEST_ID) if request is not None else None
    return web.json_response(error_body(code, message, details, request_id), status=status, headers=headers)


def _header_safe(text: str) -> str:
    """`text` fit for a header value: printable ASCII on one line, bounded."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:300]


# aiohttp's own HTTP exceptions (404 for unknown routes, 405, 413 from client_max_size) keep their
# status but get our JSON body and a stable code.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-Id", "")
    # A correlation id, not a secret: 64 bits from the PRNG (no getrandom syscall per request).
    request[REQUEST_ID] = (
        incoming if incoming and _REQUEST_ID_RE.match(incoming) else f"req_{random.getrandbits(64):016x}"
    )
    try:
        response = await handler(request)
    except ApiError as exc:
        response = error_response(request, exc.status, exc.code, exc.message, exc.details, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 413 else "request body is too large"
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        response = error_response(request, exc.status, code, message, headers=headers)
    except DatabaseBusy:
        # Another process kept the write lock for seconds (an operator's long transaction):
        # nothing of this request was stored, and trying again shortly is the right move.
        log.warning("database busy in %s %s (request %s)", request.method, request.path, request[REQUEST_ID])
        response = error_response(
            request, 503, "database_busy", "the database is busy; try again shortly",
            headers={"Retry-After": "1"},
        )
    except Exception:
        # Never a traceback or an internal message to the client; the log has the request id.
        log.exception(
            "unhandled error in %s %s (request %s)",
            request.method,
            request.path,
            request[REQUEST_ID],
        )
        response = error_response(request, 500, "internal_error", "internal error")
    if not response.prepared:
        response.headers["X-Request-Id"] = request[REQUEST_ID]
    return response


async def read_json(request: web.Request, *, max_bytes: int) -> Any:
    """The request's JSON body, or a clear 4xx (415 not JSON, 413 too big, 400 malformed)."""
    return (await read_json_raw(request, max_bytes=max_bytes))[0]


async def read_json_raw(request: web.Request, *, max_bytes: int) -> tuple[Any, bytes]:
    """(parsed JSON, the raw bytes) — for callers that fingerprint the exact body."""
    if request.headers.get(hdrs.CONTENT_TYPE) not in _PLAIN_JSON:  # else parsing it is ~5 us
        if request.content_type != "application/json":
            raise ApiError(415, "unsupported_media_type", "send the body as application/json")
        charset = (request.charset or "utf-8").lower()
        if charset not in ("utf-8", "utf8"):
            raise ApiError(415, "unsupported_media_type", "the body must be UTF-8 encoded JSON")
    raw = await read_bounded(request, max_bytes)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_encoding", f"the body is not valid UTF-8 (byte {exc.start})") from exc
    try:
        return jsonx.loads(text), raw
    except jsonx.JsonError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc


async def read_bounded(request: web.Request, max_bytes: int) -> bytes:
    """The whole body, refusing (413) as soon as it is known to be over `max_bytes`."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise _too_big(max_bytes)
    if request.content.is_eof():  # the whole body came with the headers: take it, no awaits
        body = request.content.read_nowait()
        if len(body) > max_bytes:
            raise _too_big(max_bytes)
        return body
    chunks: list[bytes] = []
    size = 0
    # StreamReader.read(n) may return fewer than n bytes: loop until EOF, counting.
    while chunk := await request.content.read(65536):
        size += len(chunk)
        if size > max_bytes:
            raise _too_big(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_big(max_bytes: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"the body is over {max_bytes} bytes")


def require_object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    return data
