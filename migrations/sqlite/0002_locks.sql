-- Per-target leader locks with a lease (Postgres uses session advisory locks instead).
CREATE TABLE target_locks (
    target     TEXT PRIMARY KEY NOT NULL,
    holder     TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
