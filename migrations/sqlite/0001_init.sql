-- dirsync state store, SQLite. Same meaning as migrations/postgres/0001_init.sql.
--
-- Conventions on SQLite:
-- - timestamps are TEXT, RFC 3339 in UTC with microseconds, e.g. 2026-11-25T09:01:02.123456Z
--   (written by dirsync; the column defaults below write milliseconds, still RFC 3339);
-- - booleans are INTEGER 0 / 1;
-- - JSON is TEXT.
-- TEXT compares with the BINARY collation (memcmp of UTF-8), so the primary key index is in
-- byte order, the order in which load_accounts returns a target's accounts.

CREATE TABLE accounts (
    target        TEXT    NOT NULL,
    source_key    TEXT    NOT NULL,
    remote_id     TEXT,
    login         TEXT,
    -- AccountState.fields: target field name -> value (a JSON object of strings).
    attributes    TEXT    NOT NULL DEFAULT '{}',
    -- AccountState.roles: a JSON array of strings.
    roles         TEXT    NOT NULL DEFAULT '[]',
    hash          TEXT    NOT NULL,
    enabled       INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    owned         INTEGER NOT NULL CHECK (owned IN (0, 1)),
    adopted       INTEGER NOT NULL CHECK (adopted IN (0, 1)),
    disabled_at   TEXT,
    last_seen_run INTEGER,
    created_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (target, source_key)
) WITHOUT ROWID;

CREATE INDEX accounts_target_login_idx ON accounts (target, lower(login));

CREATE TABLE runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    -- schedule | manual | dry_run
    trigger      TEXT    NOT NULL,
    -- running | succeeded | partial | failed | blocked
    status       TEXT    NOT NULL,
    started_at   TEXT    NOT NULL,
    finished_at  TEXT,
    -- Names of the targets the run covers: a JSON array of strings.
    targets      TEXT    NOT NULL DEFAULT '[]',
    forced       INTEGER NOT NULL DEFAULT 0 CHECK (forced IN (0, 1)),
    source_count INTEGER,
    planned      INTEGER NOT NULL DEFAULT 0,
    applied      INTEGER NOT NULL DEFAULT 0,
    failed       INTEGER NOT NULL DEFAULT 0,
    error        TEXT,
    summary      TEXT    NOT NULL DEFAULT '{}'
);

-- The operation journal: written before an operation is sent and after its outcome is known.
CREATE TABLE operations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    target      TEXT    NOT NULL,
    source_key  TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    payload     TEXT    NOT NULL DEFAULT '{}',
    status      TEXT    NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'sent', 'succeeded', 'failed', 'skipped')),
    attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error  TEXT,
    remote_id   TEXT,
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX operations_run_id_idx ON operations (run_id);
CREATE INDEX operations_target_status_idx ON operations (target, status);
