"""Projects and their keys: every query is scoped by the signed-in account.

Another account's project answers 404 exactly like a missing one, so ids cannot be probed.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from control_api import audit, snippet
from control_api.auth import require_session
from control_api.errors import ApiError, read_json, require_object
from control_api.sqltypes import Conn, Row
from control_api.state import SERVICES
from control_api.util import new_id, now_ms, rfc3339
from rules.config import FLAGS, ConfigError, ScoringConfig, Thresholds

routes = web.RouteTableDef()

MODES = ("enforce", "monitor", "off")
POLICIES = ("forward", "block")
MAX_FLAGS = 64
_SCORING_KEYS = ("disabled_rules", "custom_rules", "lists", "velocity", "min_fill_ms")


class ProjectNotFound(LookupError):
    """No such project for this account."""


def load_project(conn: Conn, account_id: str, project_id: str) -> Row:
    row = conn.execute(
        "SELECT * FROM projects WHERE id = ? AND account_id = ?", (project_id, account_id)
    ).fetchone()
    if row is None:
        raise ApiError(404, "not_found", "no such project")
    found: Row = row
    return found


def scoring_config(row: Row) -> ScoringConfig:
    data = json.loads(row["scoring"])
    data["thresholds"] = {"block": row["block_threshold"], "review": row["review_threshold"]}
    # feature flags are stored beside the scoring document; the engine applies the known ones
    data["flags"] = {k: v for k, v in json.loads(row["flags"]).items() if v and k in FLAGS}
    return ScoringConfig.model_validate(data)


def project_json(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "mode": row["mode"],
        "thresholds": {"block": row["block_threshold"], "review": row["review_threshold"]},
        "flags": json.loads(row["flags"]),
        "scoring": json.loads(row["scoring"]),
        "outOfCreditsPolicy": row["out_of_credits_policy"],
        "retentionDays": row["retention_days"],
        "snippet": snippet.snippet_json(row),
        "version": row["version"],
        "createdAt": rfc3339(row["created_at"]),
        "updatedAt": rfc3339(row["updated_at"]),
    }


def create_project(
    conn: Conn,
    account_id: str,
    name: str,
    base_scoring: dict[str, Any],
    retention_days: int,
) -> Row:
    project_id = new_id("prj")
    base = ScoringConfig.model_validate(base_scoring)
    scoring = base.model_dump(include=set(_SCORING_KEYS), mode="json")
    now = now_ms()
    conn.execute(
        "INSERT INTO projects (id, account_id, name, block_threshold, review_threshold, scoring,"
        " retention_days, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            project_id,
            account_id,
            name,
            base.thresholds.block,
            base.thresholds.review,
            json.dumps(scoring),
            retention_days,
            now,
            now,
        ),
    )
    row: Row = conn.execute("SELECT * FROM projects WHERE id = ?", (project_id,)).fetchone()
    return row


def _name(raw: object) -> str:
    if not isinstance(raw, str) or not 1 <= len(raw.strip()) <= 200:
        raise ApiError(
            400,
            "invalid_field",
            "name must be 1 to 200 characters",
            details={"name": "1 to 200 characters"},
        )
    return raw.strip()


@routes.get("/v1/projects")
async def list_projects(request: web.Request) -> web.Response:
    session = await require_session(request)
    rows = await request.app[SERVICES].db.read(
        lambda conn: conn.execute(
            "SELECT * FROM projects WHERE account_id = ? ORDER BY created_at", (session.account_id,)
        ).fetchall()
    )
    return web.json_response({"projects": [project_json(r) for r in rows]})


@routes.post("/v1/projects")
async def new_project(request: web.Request) -> web.Response:
    session = await require_session(request)
    services = request.app[SERVICES]
    body = require_object(await read_json(request, max_bytes=16 * 1024))
    name = _name(body.get("name"))
    actor = audit.Actor.of(request, session.account_id, session.actor)

    def create(conn: Conn) -> Row:
        count = conn.execute(
            "SELECT COUNT(*) FROM projects WHERE account_id = ?", (session.account_id,)
        ).fetchone()[0]
        if count >= 100:
            raise ApiError(409, "too_many_projects", "an account may have at most 100 projects")
        row = create_project(
            conn,
            session.account_id,
            name,
            services.settings.scoring_config,
            services.settings.retention_days_default,
        )
        audit.record(conn, actor, "project.created", row["id"])
        return row

    row = await services.db.write(create)
    return web.json_response(project_json(row), status=201)


@routes.get("/v1/projects/{project_id}")
async def get_project(request: web.Request) -> web.Response:
    session = await require_session(request)
    pid = request.match_info["project_id"]
    row = await request.app[SERVICES].db.read(lambda c: load_project(c, session.account_id, pid))
    return web.json_response(project_json(row))


def validate_patch(body: dict[str, Any], current: Row) -> tuple[dict[str, Any], ScoringConfig]:
    """Column updates and the resulting ScoringConfig; ApiError(400) naming the bad key."""
    known = {
        "name",
        "mode",
        "thresholds",
        "flags",
        "scoring",
        "outOfCreditsPolicy",
        "retentionDays",
        "snippet",
    }
    unknown = sorted(set(body) - known)
    if unknown:
        raise ApiError(
            400,
            "invalid_field",
            f"unknown key {unknown[0]!r}",
            details={k: "unknown key" for k in unknown},
        )
    updates: dict[str, Any] = {}
    if "name" in body:
        updates["name"] = _name(body["name"])
    if "mode" in body:
        if body["mode"] not in MODES:
            raise ApiError(
                400,
                "invalid_field",
                f"mode must be one of {list(MODES)}",
                details={"mode": f"one of {list(MODES)}"},
            )
        updates["mode"] = body["mode"]
    if "outOfCreditsPolicy" in body:
        if body["outOfCreditsPolicy"] not in POLICIES:
            raise ApiError(
                400,
                "invalid_field",
                f"outOfCreditsPolicy must be one of {list(POLICIES)}",
                details={"outOfCreditsPolicy": f"one of {list(POLICIES)}"},
            )
        updates["out_of_credits_policy"] = body["outOfCreditsPolicy"]
    if "retentionDays" in body:
        days = body["retentionDays"]
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650:
            raise ApiError(
                400,
                "invalid_field",
                "retentionDays must be an integer 1..3650",
                details={"retentionDays": "integer 1..3650"},
            )
        updates["retention_days"] = days
    if "snippet" in body:
        updates["snippet"] = snippet.validate_snippet(body["snippet"])
    if "flags" in body:
        flags = body["flags"]
        if (
            not isinstance(flags, dict)
            or len(flags) > MAX_FLAGS
            or not all(isinstance(k, str) and len(k) <= 64 and isinstance(v, bool) for k, v in flags.items())
            or not set(flags) <= set(FLAGS)
        ):
            raise ApiError(
                400,
                "invalid_field",
                f"flags must be an object of at most {MAX_FLAGS} name: true/false pairs; "
                f"known flags: {sorted(FLAGS)}",
                details={"flags": "object of booleans"},
            )
        updates["flags"] = json.dumps(flags, sort_keys=True)
    scoring = json.loads(current["scoring"])
    thresholds = {"block": current["block_threshold"], "review": current["review_threshold"]}
    if "thresholds" in body:
        try:
            parsed = Thresholds.model_validate(body["thresholds"])
        except ValidationError as exc:
            raise _pydantic_400(exc, "thresholds") from exc
        thresholds = parsed.model_dump()
        updates["block_threshold"], updates["review_threshold"] = parsed.block, parsed.review
    if "scoring" in body:
        if not isinstance(body["scoring"], dict):
            raise ApiError(
                400,
                "invalid_field",
                "scoring must be an object",
                details={"scoring": "must be an object"},
            )
        if "thresholds" in body["scoring"]:
            raise ApiError(
                400,
                "invalid_field",
                "set thresholds at the top level",
                details={"scoring.thresholds": "use 'thresholds'"},
            )
        scoring.update(body["scoring"])
    try:
        config = ScoringConfig.model_validate({**scoring, "thresholds": thresholds})
    except ValidationError as exc:
        raise _pydantic_400(exc, "scoring") from exc
    if "scoring" in body:
        updates["scoring"] = json.dumps(config.model_dump(include=set(_SCORING_KEYS), mode="json"))
    return updates, config


def _pydantic_400(exc: ValidationError, prefix: str) -> ApiError:
    details = {".".join([prefix, *(str(p) for p in err["loc"])]): err["msg"] for err in exc.errors()}
    first = next(iter(details.items()))
    return ApiError(400, "invalid_config", f"{first[0]}: {first[1]}", details=details)


@routes.patch("/v1/projects/{project_id}")
async def update_project(request: web.Request) -> web.Response:
    session = await require_session(request)
    services = request.app[SERVICES]
    pid = request.match_info["project_id"]
    body = require_object(await read_json(request, max_bytes=services.settings.max_body_bytes))
    current = await services.db.read(lambda c: load_project(c, session.account_id, pid))
    updates, config = validate_patch(body, current)
    if "scoring" in body and services.scoring is not None:
        try:
            services.scoring.validate(config)
        except ConfigError as exc:
            raise ApiError(
                400, "invalid_rules", str(exc), details={exc.key or "scoring": exc.problem}
            ) from exc
    actor = audit.Actor.of(request, session.account_id, session.actor)

    def apply(conn: Conn) -> Row:
        load_project(conn, session.account_id, pid)
        if updates:
            cols = ", ".join(f"{k} = ?" for k in updates)
            conn.execute(
                f"UPDATE projects SET {cols}, version = version + 1, updated_at = ? "  # noqa: S608 - column names are ours
                "WHERE id = ? AND account_id = ?",
                (*updates.values(), now_ms(), pid, session.account_id),
            )
            audit.record(conn, actor, "project.updated", pid, {"changed": sorted(body)})
        row: Row = load_project(conn, session.account_id, pid)
        return row

    row = await services.db.write(apply)
    services.project_cache.pop(pid, None)
    snippet.forget(request.app, pid)
    return web.json_response(project_json(row))


@routes.delete("/v1/projects/{project_id}")
async def delete_project(request: web.Request) -> web.Response:
    session = await require_session(request)
    pid = request.match_info["project_id"]
    actor = audit.Actor.of(request, session.account_id, session.actor)

    def delete(conn: Conn) -> None:
        load_project(conn, session.account_id, pid)
        conn.execute("DELETE FROM projects WHERE id = ? AND account_id = ?", (pid, session.account_id))
        audit.record(conn, actor, "project.deleted", pid)

    services = request.app[SERVICES]
    await services.db.write(delete)
    services.keys.clear()
    services.project_cache.pop(pid, None)
    return web.json_response({"deleted": True})


@routes.get("/v1/projects/{project_id}/keys")
async def list_keys(request: web.Request) -> web.Response:
    from control_api.keys import describe_row

    session = await require_session(request)
    pid = request.match_info["project_id"]

    def read(conn: Conn) -> list[dict[str, object]]:
        load_project(conn, session.account_id, pid)
        rows = conn.execute(
            "SELECT * FROM api_keys WHERE project_id = ? ORDER BY created_at", (pid,)
        ).fetchall()
        return [describe_row(r) for r in rows]

    return web.json_response({"keys": await request.app[SERVICES].db.read(read)})


@routes.post("/v1/projects/{project_id}/keys")
async def create_key(request: web.Request) -> web.Response:
    session = await require_session(request)
    services = request.app[SERVICES]
    pid = request.match_info["project_id"]
    body = require_object(await read_json(request, max_bytes=16 * 1024))
    kind = body.get("kind", "live")
    if kind not in ("live", "edge"):
        raise ApiError(
            400,
            "invalid_field",
            "kind must be 'live' (API key) or 'edge' (proxy token)",
            details={"kind": "'live' or 'edge'"},
        )
    name = _name(body.get("name", "default"))
    actor = audit.Actor.of(request, session.account_id, session.actor)

    def create(conn: Conn) -> tuple[str, dict[str, object]]:
        load_project(conn, session.account_id, pid)
        key, described = services.keys.create(
            conn, kind=kind, project_id=pid, account_id=session.account_id, name=name
        )
        audit.record(conn, actor, "key.created", str(described["id"]), {"kind": kind})
        return key, described

    key, described = await services.db.write(create)
    # The only time the full key exists outside the caller's hands: it is not stored or logged.
    return web.json_response({**described, "key": key}, status=201, headers={"Cache-Control": "no-store"})


@routes.delete("/v1/projects/{project_id}/keys/{key_id}")
async def revoke_key(request: web.Request) -> web.Response:
    session = await require_session(request)
    services = request.app[SERVICES]
    pid, kid = request.match_info["project_id"], request.match_info["key_id"]
    actor = audit.Actor.of(request, session.account_id, session.actor)

    def revoke(conn: Conn) -> None:
        load_project(conn, session.account_id, pid)
        cur = conn.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND project_id = ? AND revoked_at IS NULL",
            (now_ms(), kid, pid),
        )
        if cur.rowcount == 0:
            raise ApiError(404, "not_found", "no such active key")
        audit.record(conn, actor, "key.revoked", kid)

    await services.db.write(revoke)
    services.keys.forget(kid)
    return web.json_response({"revoked": True})
