//! The SQLite store's statement texts: multi-row upserts, key lists, and the fixed-text
//! statements that take a batch as one JSON array (`json_each`).

use super::decode::parse_ts;
use super::{UPSERT_VARS_PER_ROW, corrupt};
use crate::store::{RecordedAccount, StoreError};

/// `?, ?, ...`: `n` anonymous placeholders.
///
/// Anonymous only: SQLite looks numbered (`?NNN`) parameters up in a list, linearly, when
/// compiling and when sqlx asks each parameter's name at bind time, which makes a statement
/// with tens of thousands of them quadratic (25k rows took 16 s instead of well under one).
pub(super) fn placeholders(n: usize) -> String {
    let mut sql = String::with_capacity(n * 3);
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('?');
    }
    sql
}

pub(super) fn upsert_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(600 + rows * 80);
    sql.push_str(
        "INSERT INTO accounts (target, source_key, remote_id, login, attributes, roles, hash, \
         enabled, owned, adopted, disabled_at, last_seen_run, created_at, updated_at) VALUES ",
    );
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        sql.push_str(&placeholders(UPSERT_VARS_PER_ROW));
        sql.push(')');
    }
    sql.push_str(
        " ON CONFLICT (target, source_key) DO UPDATE SET \
         remote_id = excluded.remote_id, login = excluded.login, \
         attributes = excluded.attributes, roles = excluded.roles, hash = excluded.hash, \
         enabled = excluded.enabled, owned = excluded.owned, adopted = excluded.adopted, \
         disabled_at = excluded.disabled_at, last_seen_run = excluded.last_seen_run, \
         updated_at = excluded.updated_at",
    );
    sql
}

/// Rows per JSON array on the journal and outcome paths (`json_each`, one bound parameter).
pub(super) const JSON_CHUNK: usize = 10_000;

/// `serde_json::to_string` of rows that cannot fail to serialise (strings, numbers, options).
pub(super) fn to_json<T: serde::Serialize>(rows: &T) -> String {
    serde_json::to_string(rows).unwrap_or_else(|_| "[]".to_owned())
}

/// A JSON array of strings.
pub(super) fn json_array<'a>(items: impl Iterator<Item = &'a str>) -> String {
    to_json(&items.collect::<Vec<_>>())
}

// The journal and outcome statements take their rows as one JSON array, expanded by
// `json_each`: one prepared statement of fixed text whatever the batch size (multi-row VALUES
// need a statement, compiled anew, per size and 14 bound variables per row). The row sets are
// MATERIALIZED so that SQLite loops over them and looks each row up by key: it cannot estimate
// a `json_each` and would otherwise scan the table (tested by `json_statements_use_keys`).

/// `load_account_records`: ?1 target, ?2 `["key", ...]`.
pub(super) const LOAD_RECORDS: &str = "SELECT source_key, remote_id, login, hash, enabled, owned, adopted, \
     disabled_at, attributes, roles, last_seen_run FROM accounts \
     WHERE target = ?1 AND source_key IN (SELECT value FROM json_each(?2)) \
     ORDER BY source_key";

/// `journal`: ?1 run, ?2 target, ?3 now, ?4 `[[key, kind, payload text], ...]`.
pub(super) const JOURNAL: &str = "INSERT INTO operations (run_id, target, source_key, kind, payload, \
     created_at, updated_at) \
     SELECT ?1, ?2, value ->> 0, value ->> 1, value ->> 2, ?3, ?3 FROM json_each(?4) ORDER BY key";

/// `mark_sent`: ?1 now, ?2 `[[first id, last id], ...]`.
pub(super) const MARK_SENT: &str = "WITH r AS MATERIALIZED (SELECT value ->> 0 AS lo, value ->> 1 AS hi \
     FROM json_each(?2)) \
     UPDATE operations SET status = 'sent', attempts = attempts + 1, updated_at = ?1 \
     FROM r WHERE operations.id BETWEEN r.lo AND r.hi";

/// `record_outcomes`: ?1 now, ?2 `[[id, status, error, remote_id], ...]`.
pub(super) const RECORD_OUTCOMES: &str = "WITH v AS MATERIALIZED (SELECT value ->> 0 AS id, \
     value ->> 1 AS status, value ->> 2 AS error, value ->> 3 AS remote_id FROM json_each(?2)) \
     UPDATE operations SET status = v.status, last_error = v.error, \
     remote_id = COALESCE(v.remote_id, operations.remote_id), updated_at = ?1 \
     FROM v WHERE operations.id = v.id";

/// `record_outcomes`, first of two statements over the same rows: ?1 now, ?2 `[[key,
/// remote_id, login, attributes text, roles text, hash, enabled, owned, adopted, disabled_at,
/// last_seen_run], ...]` (keys unique), ?3 target. Updates the existing rows whose login stays
/// the same (nearly all of them) without assigning `login`: SQLite then leaves the
/// `(target, lower(login))` index alone instead of deleting and re-inserting each entry.
pub(super) const UPDATE_SAME_LOGIN: &str = "WITH v AS MATERIALIZED (SELECT value ->> 0 AS source_key, \
     value ->> 1 AS remote_id, value ->> 2 AS login, value ->> 3 AS attributes, \
     value ->> 4 AS roles, value ->> 5 AS hash, value ->> 6 AS enabled, value ->> 7 AS owned, \
     value ->> 8 AS adopted, value ->> 9 AS disabled_at, value ->> 10 AS last_seen_run \
     FROM json_each(?2)) \
     UPDATE accounts SET remote_id = v.remote_id, attributes = v.attributes, roles = v.roles, \
     hash = v.hash, enabled = v.enabled, owned = v.owned, adopted = v.adopted, \
     disabled_at = v.disabled_at, last_seen_run = v.last_seen_run, updated_at = ?1 \
     FROM v WHERE accounts.target = ?3 AND accounts.source_key = v.source_key \
     AND accounts.login IS v.login";

/// `record_outcomes`, second statement over the same rows (see [`UPDATE_SAME_LOGIN`]): upserts
/// the rest (new accounts, changed logins); rows the first statement wrote are skipped.
pub(super) const UPSERT_RECORDS: &str = "INSERT INTO accounts (target, source_key, remote_id, login, \
     attributes, roles, hash, enabled, owned, adopted, disabled_at, last_seen_run, created_at, \
     updated_at) \
     SELECT ?3, value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
     value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, ?1, ?1 \
     FROM json_each(?2) AS v WHERE NOT EXISTS (SELECT 1 FROM accounts AS a \
     WHERE a.target = ?3 AND a.source_key = v.value ->> 0 AND a.login IS v.value ->> 2) \
     ON CONFLICT (target, source_key) DO UPDATE SET \
     remote_id = excluded.remote_id, login = excluded.login, \
     attributes = excluded.attributes, roles = excluded.roles, hash = excluded.hash, \
     enabled = excluded.enabled, owned = excluded.owned, adopted = excluded.adopted, \
     disabled_at = excluded.disabled_at, last_seen_run = excluded.last_seen_run, \
     updated_at = excluded.updated_at";

/// `record_outcomes`: ?1 now, ?2 `[[key, enabled, disabled_at], ...]`, ?3 target.
pub(super) const SET_ENABLED: &str = "WITH v AS MATERIALIZED (SELECT value ->> 0 AS source_key, \
     value ->> 1 AS enabled, value ->> 2 AS disabled_at FROM json_each(?2)) \
     UPDATE accounts SET enabled = v.enabled, disabled_at = v.disabled_at, updated_at = ?1 \
     FROM v WHERE accounts.target = ?3 AND accounts.source_key = v.source_key";

/// `record_outcomes`: ?2 `["key", ...]`, ?3 target (?1 unused).
pub(super) const DELETE_RECORDS: &str = "DELETE FROM accounts WHERE target = ?3 \
     AND source_key IN (SELECT value FROM json_each(?2))";

/// Rows per chunk of `load_accounts`.
pub(super) const LOAD_CHUNK: usize = 10_000;

/// `load_accounts` reads the light columns as one JSON array per chunk of [`LOAD_CHUNK`] rows
/// (keyset-paginated on the primary key): handing 1M rows one by one from sqlx's SQLite worker
/// thread costs several seconds, the JSON round trip a fraction of that.
pub(super) const LOAD_FIRST_CHUNK: &str = "SELECT json_group_array(json_array(source_key, remote_id, login, \
     hash, enabled, owned, adopted, disabled_at) ORDER BY source_key) \
     FROM (SELECT * FROM accounts WHERE target = ?1 ORDER BY source_key LIMIT ?2)";
pub(super) const LOAD_NEXT_CHUNK: &str = "SELECT json_group_array(json_array(source_key, remote_id, login, \
     hash, enabled, owned, adopted, disabled_at) ORDER BY source_key) \
     FROM (SELECT * FROM accounts WHERE target = ?1 AND source_key > ?2 \
           ORDER BY source_key LIMIT ?3)";

/// One element of a `load_accounts` chunk.
#[derive(serde::Deserialize)]
pub(super) struct LightRow(
    String,
    Option<String>,
    Option<String>,
    String,
    i64,
    i64,
    i64,
    Option<String>,
);

impl LightRow {
    pub(super) fn into_recorded(self, context: &str) -> Result<RecordedAccount, StoreError> {
        let LightRow(key, remote_id, login, hash, enabled, owned, adopted, disabled_at) = self;
        let disabled_at = disabled_at
            .as_deref()
            .map(parse_ts)
            .transpose()
            .map_err(|e| corrupt(context, format!("key {key:?}: disabled_at: {e}")))?;
        Ok(RecordedAccount {
            key,
            remote_id,
            login,
            hash: crate::mapping::ContentHash::parse_lenient(&hash),
            enabled: enabled != 0,
            owned: owned != 0,
            adopted: adopted != 0,
            disabled_at,
        })
    }
}
