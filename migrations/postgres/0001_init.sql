-- dirsync state store, Postgres. Same meaning as migrations/sqlite/0001_init.sql.
--
-- source_key is COLLATE "C" so that the primary key index is in byte order, the order in which
-- load_accounts returns a target's accounts (ORDER BY source_key COLLATE "C" uses the index).

CREATE TABLE accounts (
    target        TEXT        NOT NULL,
    source_key    TEXT        COLLATE "C" NOT NULL,
    remote_id     TEXT,
    login         TEXT,
    -- AccountState.fields: target field name -> value (a JSON object of strings).
    attributes    JSONB       NOT NULL DEFAULT '{}'::jsonb,
    -- AccountState.roles: a JSON array of strings.
    roles         JSONB       NOT NULL DEFAULT '[]'::jsonb,
    hash          TEXT        NOT NULL,
    enabled       BOOLEAN     NOT NULL,
    owned         BOOLEAN     NOT NULL,
    adopted       BOOLEAN     NOT NULL,
    disabled_at   TIMESTAMPTZ,
    last_seen_run BIGINT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (target, source_key)
);

CREATE INDEX accounts_target_login_idx ON accounts (target, lower(login));

CREATE TABLE runs (
    id           BIGSERIAL   PRIMARY KEY,
    -- schedule | manual | dry_run
    trigger      TEXT        NOT NULL,
    -- running | succeeded | partial | failed | blocked
    status       TEXT        NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ,
    -- Names of the targets the run covers: a JSON array of strings.
    targets      JSONB       NOT NULL DEFAULT '[]'::jsonb,
    forced       BOOLEAN     NOT NULL DEFAULT FALSE,
    source_count BIGINT,
    planned      BIGINT      NOT NULL DEFAULT 0,
    applied      BIGINT      NOT NULL DEFAULT 0,
    failed       BIGINT      NOT NULL DEFAULT 0,
    error        TEXT,
    summary      JSONB       NOT NULL DEFAULT '{}'::jsonb
);

-- The operation journal: written before an operation is sent and after its outcome is known.
CREATE TABLE operations (
    id          BIGSERIAL   PRIMARY KEY,
    run_id      BIGINT      NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    target      TEXT        NOT NULL,
    source_key  TEXT        COLLATE "C" NOT NULL,
    kind        TEXT        NOT NULL,
    payload     JSONB       NOT NULL DEFAULT '{}'::jsonb,
    status      TEXT        NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'sent', 'succeeded', 'failed', 'skipped')),
    attempts    INTEGER     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error  TEXT,
    remote_id   TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX operations_run_id_idx ON operations (run_id);
CREATE INDEX operations_target_status_idx ON operations (target, status);
