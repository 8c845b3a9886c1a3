"""Versioned schema migrations: an ordered list, each applied once in its own transaction.

A hand-written runner, not a library: Alembic needs SQLAlchemy as the connection layer (this
service speaks DB-API), and yoyo-migrations, which speaks DB-API, was tried and does not meet
what this runner guarantees without overriding its internals (see control_api/README.md,
"Migrations": it applies a migration and records it in two transactions, its lock is a row that
outlives a killed process, it opens its own connections and ignores unknown applied migrations).

The runner: ordered versions recorded in `schema_migrations`, each migration and its record in
one transaction (a failed or interrupted one leaves nothing behind), a database newer than the
code refused. Append migrations; never edit one that has shipped. Times are integer milliseconds
since the epoch (UTC), sortable and portable to PostgreSQL's BIGINT. The DDL is written once, in
SQLite's words; control_api.pg maps the two that differ (AUTOINCREMENT keys, INTEGER width) for
PostgreSQL, where an advisory lock lets only one of several starting processes migrate (on
SQLite, the version is read again under the write lock).
"""

from __future__ import annotations

import time

from control_api.sqltypes import Conn, dialect

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "initial schema",
        """
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    password_changed_at INTEGER NOT NULL
);
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_account ON sessions(account_id);
CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    mode TEXT NOT NULL DEFAULT 'enforce',
    block_threshold INTEGER NOT NULL DEFAULT 70,
    review_threshold INTEGER NOT NULL DEFAULT 40,
    flags TEXT NOT NULL DEFAULT '{}',
    scoring TEXT NOT NULL DEFAULT '{}',
    out_of_credits_policy TEXT NOT NULL DEFAULT 'forward',
    retention_days INTEGER NOT NULL DEFAULT 90,
    version INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX projects_account ON projects(account_id);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    hint TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    last_used_at INTEGER
);
CREATE INDEX api_keys_project ON api_keys(project_id);
CREATE TABLE credit_ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('grant', 'purchase', 'usage', 'refund')),
    amount INTEGER NOT NULL,
    balance_after INTEGER NOT NULL CHECK (balance_after >= 0),
    project_id TEXT,
    reference TEXT,
    note TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX credit_ledger_reference ON credit_ledger(account_id, reference)
    WHERE reference IS NOT NULL;
CREATE INDEX credit_ledger_account ON credit_ledger(account_id, id);
CREATE TABLE credit_balances (
    account_id TEXT PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    balance INTEGER NOT NULL CHECK (balance >= 0),
    low_notified INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    trace_id TEXT NOT NULL UNIQUE,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    account_id TEXT NOT NULL,
    source TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    site_id TEXT NOT NULL DEFAULT '',
    form_id TEXT NOT NULL DEFAULT '',
    lead_id TEXT NOT NULL DEFAULT '',
    ip TEXT NOT NULL DEFAULT '',
    email TEXT NOT NULL DEFAULT '',
    user_agent TEXT NOT NULL DEFAULT '',
    page_url TEXT NOT NULL DEFAULT '',
    mode TEXT NOT NULL DEFAULT '',
    action TEXT NOT NULL DEFAULT '',
    decision TEXT NOT NULL,
    score INTEGER NOT NULL,
    labels TEXT NOT NULL DEFAULT '[]',
    country_hint TEXT,
    is_test INTEGER NOT NULL DEFAULT 0,
    charged INTEGER NOT NULL DEFAULT 0,
    verdict TEXT NOT NULL,
    feedback TEXT,
    feedback_at INTEGER
);
CREATE INDEX events_project_time ON events(project_id, received_at DESC, id DESC);
CREATE INDEX events_project_email ON events(project_id, email);
CREATE INDEX events_project_lead ON events(project_id, lead_id);
CREATE TABLE idempotency (
    project_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status INTEGER NOT NULL,
    response TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (project_id, scope, key)
);
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    details TEXT NOT NULL DEFAULT '{}',
    request_id TEXT NOT NULL DEFAULT '',
    ip TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL
);
CREATE INDEX audit_account ON audit_log(account_id, id);
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    account_id TEXT NOT NULL,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    events TEXT NOT NULL,
    decisions TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL
);
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    webhook_id TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    last_status_code INTEGER,
    last_error TEXT,
    last_response_ms INTEGER,
    created_at INTEGER NOT NULL,
    delivered_at INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
CREATE TABLE webhook_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    attempted_at INTEGER NOT NULL,
    status_code INTEGER,
    response_ms INTEGER,
    error TEXT
);
""",
    ),
    (
        2,
        "index webhooks by project",
        "CREATE INDEX webhooks_project ON webhooks(project_id, active)",
    ),
    (
        3,
        "account tokens",
        """
CREATE TABLE account_tokens (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    hint TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    last_used_at INTEGER
);
CREATE INDEX account_tokens_account ON account_tokens(account_id)
""",
    ),
    (
        4,
        "JS snippet settings per project (allowed origins, proof-of-work)",
        "ALTER TABLE projects ADD COLUMN snippet TEXT NOT NULL DEFAULT '{}'",
    ),
]


_LOCK_ID = 727_001  # pg_advisory_lock key of the control API's migrations


class MigrationError(Exception):
    """The database's schema cannot be brought to this code's version."""


def current_version(conn: Conn) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL)"
    )
    row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0)


def migrate(conn: Conn) -> int:
    """Apply every migration newer than the database; return the resulting version."""
    if dialect(conn) == "postgres":
        # Several processes may start at once against one server: one migrates, the rest wait.
        conn.execute("SELECT pg_advisory_lock(?)", (_LOCK_ID,))
        try:
            return _migrate(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(?)", (_LOCK_ID,))
    return _migrate(conn)


def _migrate(conn: Conn) -> int:
    version = current_version(conn)
    latest = MIGRATIONS[-1][0]
    if version > latest:
        row = conn.execute(
            "SELECT description FROM schema_migrations WHERE version = ?", (version,)
        ).fetchone()
        raise MigrationError(
            f"database schema is version {version} ({row[0] if row else '?'}), newer than this"
            f" code's {latest}: it was migrated by a newer release; run that release (or newer)"
        )
    for number, description, sql in MIGRATIONS:
        if number <= version:
            continue
        # executescript() would COMMIT on its own; run statements one by one in our transaction.
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another connection (the `credits grant` CLI
            # starting next to the server on one SQLite file) may have applied it meanwhile.
            applied = current_version(conn)
            if applied >= number:
                conn.execute("ROLLBACK")
                version = applied
                continue
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
                (number, description, int(time.time() * 1000)),
            )
        except Exception as exc:
            conn.execute("ROLLBACK")
            raise MigrationError(
                f"migration {number} ({description}) failed and was rolled back, the database is"
                f" still at version {version}: {exc}"
            ) from exc
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        version = number
    return version


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]
