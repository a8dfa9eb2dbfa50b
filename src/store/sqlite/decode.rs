//! Rows of the SQLite store as read: stored timestamps, the light rows of `load_accounts`,
//! and `runs`, `operations`, `accounts` rows through the shared decoding of `store::rows`.

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{BACKEND, corrupt};
use crate::store::rows::{self, AccountRow, OperationRow, RunRow};
use crate::store::{AccountRecord, OperationRecord, RunRecord, StoreError};

/// A timestamp as stored: RFC 3339, UTC, microseconds.
pub(super) fn format_ts(ts: &DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(super) fn parse_ts(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("bad timestamp {text:?}: {e}"))
}

pub(super) const RUN_COLUMNS: &str = "id, trigger, status, started_at, finished_at, targets, forced, \
     source_count, planned, applied, failed, error, summary";

pub(super) fn run_from_row(row: &SqliteRow, context: &str) -> Result<RunRecord, StoreError> {
    let get_err = rows::column_error(BACKEND, context);
    RunRow::<String> {
        id: row.try_get("id").map_err(&get_err)?,
        trigger: row.try_get("trigger").map_err(&get_err)?,
        status: row.try_get("status").map_err(&get_err)?,
        started_at: row.try_get("started_at").map_err(&get_err)?,
        finished_at: row.try_get("finished_at").map_err(&get_err)?,
        targets: row.try_get("targets").map_err(&get_err)?,
        forced: row.try_get("forced").map_err(&get_err)?,
        source_count: row.try_get("source_count").map_err(&get_err)?,
        planned: row.try_get("planned").map_err(&get_err)?,
        applied: row.try_get("applied").map_err(&get_err)?,
        failed: row.try_get("failed").map_err(&get_err)?,
        error: row.try_get("error").map_err(&get_err)?,
        summary: row.try_get("summary").map_err(&get_err)?,
    }
    .decode(BACKEND, context, |t| parse_ts(&t))
}

pub(super) const OPERATION_COLUMNS: &str = "id, run_id, target, source_key, kind, status, attempts, \
     last_error, remote_id, payload, updated_at";

pub(super) fn operation_from_row(
    row: &SqliteRow,
    context: &str,
) -> Result<OperationRecord, StoreError> {
    let get_err = rows::column_error(BACKEND, context);
    let id: i64 = row.try_get("id").map_err(&get_err)?;
    let attempts: i64 = row.try_get("attempts").map_err(&get_err)?;
    let op_context = format!("{context}: operation {id}");
    OperationRow::<String> {
        id,
        run_id: row.try_get("run_id").map_err(&get_err)?,
        target: row.try_get("target").map_err(&get_err)?,
        source_key: row.try_get("source_key").map_err(&get_err)?,
        kind: row.try_get("kind").map_err(&get_err)?,
        status: row.try_get("status").map_err(&get_err)?,
        attempts: u32::try_from(attempts)
            .map_err(|_| corrupt(&op_context, format!("attempts out of range ({attempts})")))?,
        last_error: row.try_get("last_error").map_err(&get_err)?,
        remote_id: row.try_get("remote_id").map_err(&get_err)?,
        payload: row.try_get("payload").map_err(&get_err)?,
        updated_at: row.try_get("updated_at").map_err(&get_err)?,
    }
    .decode(BACKEND, &op_context, |t| parse_ts(&t))
}

/// A full account row (light columns, `attributes`, `roles`, `last_seen_run`).
pub(super) fn record_from_row(row: &SqliteRow, context: &str) -> Result<AccountRecord, StoreError> {
    let get_err = rows::column_error(BACKEND, context);
    AccountRow::<String> {
        key: row.try_get("source_key").map_err(&get_err)?,
        remote_id: row.try_get("remote_id").map_err(&get_err)?,
        login: row.try_get("login").map_err(&get_err)?,
        hash: row.try_get("hash").map_err(&get_err)?,
        enabled: row.try_get("enabled").map_err(&get_err)?,
        owned: row.try_get("owned").map_err(&get_err)?,
        adopted: row.try_get("adopted").map_err(&get_err)?,
        disabled_at: row.try_get("disabled_at").map_err(&get_err)?,
        attributes: row.try_get("attributes").map_err(&get_err)?,
        roles: row.try_get("roles").map_err(&get_err)?,
        last_seen_run: row.try_get("last_seen_run").map_err(&get_err)?,
    }
    .decode(BACKEND, context, |t| parse_ts(&t))
}
