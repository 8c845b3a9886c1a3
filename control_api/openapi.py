"""The OpenAPI document served at /v1/openapi.json (hand-written; a test keeps it in step with
the router)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

routes = web.RouteTableDef()


def _op(
    summary: str,
    auth: str,
    *,
    body: str | None = None,
    responses: dict[str, str] | None = None,
    params: list[dict[str, Any]] | None = None,
    plain_errors: bool = False,
    ok: dict[str, Any] | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    schemes: dict[str, list[dict[str, list[str]]]] = {
        "key": [{"apiKey": []}],
        "edge": [{"edgeToken": []}],
        "session": [{"session": []}],
        "none": [],
        "key_or_session": [{"apiKey": []}, {"session": []}],
    }
    security = schemes[auth]
    op: dict[str, Any] = {
        "summary": summary,
        "security": security,
        "responses": ok or {"200": {"description": "OK"}},
    }
    if description:
        op["description"] = description
    for status, text in (responses or {}).items():
        op["responses"][status] = {"description": text}
    error_content = (
        # Akismet-compatible endpoints answer errors as Akismet does: plain text (the message),
        # with X-akismet-debug-help and X-Activelead-Error-Code headers.
        {"text/plain": {"schema": {"type": "string"}}}
        if plain_errors
        else {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    )
    op["responses"].setdefault("4XX", {"description": "Error", "content": error_content})
    op["responses"]["503"] = {
        "description": "`database_busy`: another process held the SQLite write lock for seconds; "
        "nothing was stored or charged, retry after `Retry-After`",
        "content": error_content,
    }
    if body is not None:
        ct = "application/x-www-form-urlencoded" if body == "form" else "application/json"
        op["requestBody"] = {"required": True, "content": {ct: {"schema": {"type": "object"}}}}
    if params:
        op["parameters"] = params
    return op


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


_EVENT_FILTERS = [
    {"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
    for n in (
        "from",
        "to",
        "decision",
        "label",
        "formId",
        "email",
        "leadId",
        "limit",
        "cursor",
        "projectId",
    )
]

PATHS: dict[str, dict[str, Any]] = {
    "/healthz": {"get": _op("Liveness and database check", "none")},
    "/metrics": {"get": _op("Prometheus metrics", "none")},
    "/v1/openapi.json": {"get": _op("This document", "none")},
    "/__activelead/activelead.js": {
        "get": _op("The JS snippet under its stable name (short cache, ETag)", "none")
    },
    "/__activelead/activelead.{hash}.js": {
        "get": _op("The JS snippet's content-hashed build (immutable)", "none", params=[_path("hash")])
    },
    "/__activelead/challenge": {
        "post": _op(
            "A challenge for the JS snippet: {site, form} -> {token, pow, expiresIn}; CORS only "
            "for the project's snippet.allowedOrigins",
            "none",
            body="json",
        )
    },
    "/v1/accounts": {
        "post": _op(
            "Sign up",
            "none",
            description="{email, password}. The same 202 answer whether or not the address already"
            " has an account: an existing account is left unchanged (its owner's audit log records"
            " the attempt). No session is started: sign in with POST /v1/session.",
            body="json",
            responses={"429": "Too many sign-ups from this client IP (Retry-After)"},
            ok={
                "202": {
                    "description": "Accepted (whatever the address)",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/SignUpAccepted"}}
                    },
                }
            },
        )
    },
    "/v1/session": {
        "get": _op("Current session and CSRF token", "session"),
        "post": _op("Sign in", "none", body="json"),
        "delete": _op("Sign out", "session"),
    },
    "/v1/account/password": {"post": _op("Change password", "session", body="json")},
    "/v1/audit": {"get": _op("Audit log of the account", "session")},
    "/v1/account/tokens": {
        "get": _op("List account tokens", "session"),
        "post": _op("Create an account token (shown once; session only)", "session", body="json"),
    },
    "/v1/account/tokens/{token_id}": {
        "delete": _op("Revoke an account token", "session", params=[_path("token_id")])
    },
    "/v1/projects": {
        "get": _op("List projects", "session"),
        "post": _op("Create project", "session", body="json"),
    },
    "/v1/projects/{project_id}": {
        "get": _op("Get project", "session", params=[_path("project_id")]),
        "patch": _op(
            "Update mode, thresholds, flags, scoring (rules, lists)",
            "session",
            body="json",
            params=[_path("project_id")],
        ),
        "delete": _op("Delete project", "session", params=[_path("project_id")]),
    },
    "/v1/projects/{project_id}/keys": {
        "get": _op("List keys", "session", params=[_path("project_id")]),
        "post": _op(
            "Create API key or edge token (shown once)",
            "session",
            body="json",
            params=[_path("project_id")],
        ),
    },
    "/v1/projects/{project_id}/keys/{key_id}": {
        "delete": _op("Revoke key", "session", params=[_path("project_id"), _path("key_id")])
    },
    "/v1/projects/{project_id}/webhooks": {
        "get": _op("List webhooks", "session", params=[_path("project_id")]),
        "post": _op(
            "Create webhook (secret shown once)",
            "session",
            body="json",
            params=[_path("project_id")],
        ),
    },
    "/v1/projects/{project_id}/webhooks/{webhook_id}": {
        "delete": _op("Delete webhook", "session", params=[_path("project_id"), _path("webhook_id")])
    },
    "/v1/projects/{project_id}/webhooks/{webhook_id}/deliveries": {
        "get": _op("Delivery log", "session", params=[_path("project_id"), _path("webhook_id")])
    },
    "/v1/projects/{project_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver": {
        "post": _op(
            "Redeliver",
            "session",
            params=[_path("project_id"), _path("webhook_id"), _path("delivery_id")],
        )
    },
    "/v1/ingest": {
        "post": _op(
            "Score a submission",
            "key",
            body="json",
            responses={
                "400": "Invalid submission (details by JSON path)",
                "401": "Missing/invalid key",
                "402": "Credits exhausted",
                "403": "Wrong key kind",
                "413": "Body too large",
                "415": "Not application/json",
                "422": "Idempotency-Key reused with another body",
                "429": "Rate limited (Retry-After)",
            },
        )
    },
    "/v1/feedback": {"post": _op("Mark an event spam or ham", "key", body="json")},
    "/v1/credits": {"get": _op("Credit balance (and ledger with a session)", "key_or_session")},
    "/v1/events": {"get": _op("List events (filters, cursor)", "key_or_session", params=_EVENT_FILTERS)},
    "/v1/events/export": {
        "get": _op("Export events as CSV or JSON lines (streamed)", "key_or_session", params=_EVENT_FILTERS)
    },
    "/v1/events/{trace_id}": {"get": _op("One event", "key_or_session", params=[_path("trace_id")])},
    "/v1/erasure": {"post": _op("Erase events by e-mail or lead id", "key_or_session", body="json")},
    "/v1/usage": {"get": _op("Usage per project per day", "key_or_session")},
    "/v1/edge/config": {
        "get": _op("Project config for proxies (ETag, 304)", "edge", responses={"304": "Not modified"})
    },
    "/v1/edge/events": {"post": _op("Event batch from a proxy (Idempotency-Key)", "edge", body="json")},
    "/1.1/verify-key": {"post": _op("Akismet: verify key", "none", body="form", plain_errors=True)},
    "/1.1/comment-check": {"post": _op("Akismet: check a comment", "none", body="form", plain_errors=True)},
    "/1.1/submit-spam": {"post": _op("Akismet: report spam", "none", body="form", plain_errors=True)},
    "/1.1/submit-ham": {"post": _op("Akismet: report ham", "none", body="form", plain_errors=True)},
    "/1.2/usage-limit": {
        "get": _op("Akismet: usage", "none", plain_errors=True),
        "post": _op("Akismet: usage", "none", body="form", plain_errors=True),
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Activelead control API", "version": "1"},
    "paths": PATHS,
    "components": {
        "securitySchemes": {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "al_live_… API key"},
            "accountToken": {"type": "http", "scheme": "bearer", "description": "al_acct_… token"},
            "edgeToken": {"type": "http", "scheme": "bearer", "description": "al_edge_… token"},
            "session": {
                "type": "apiKey",
                "in": "cookie",
                "name": "al_session",
                "description": "Writes also need the X-CSRF-Token header. Wherever a session "
                "works, an account token (Bearer al_acct_…) works too, except sign-out, "
                "password change and minting tokens.",
            },
        },
        "schemas": {
            "SignUpAccepted": {
                "type": "object",
                "required": ["status", "message"],
                "properties": {"status": {"const": "ok"}, "message": {"type": "string"}},
                "additionalProperties": False,
            },
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message", "details"],
                        "properties": {
                            "code": {"type": "string", "description": "Stable machine code."},
                            "message": {"type": "string", "description": "For people."},
                            "details": {
                                "type": "object",
                                "description": "Field (JSON path) → problem; empty when none.",
                            },
                            "requestId": {"type": "string", "description": "Also in X-Request-Id."},
                        },
                    }
                },
            },
        },
    },
}


@routes.get("/v1/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(DOCUMENT)
