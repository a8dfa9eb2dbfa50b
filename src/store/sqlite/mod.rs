//! SQLite backend of the state store: the embedded default when no database URL is configured.
//!
//! Conventions (see `migrations/sqlite/0001_init.sql`): timestamps are TEXT in RFC 3339, UTC,
//! with microseconds (`2026-11-25T09:01:02.123456Z`, the precision Postgres keeps); booleans are
//! INTEGER 0/1; JSON is TEXT. Bulk writes are multi-row `INSERT ... VALUES (..),(..) ON CONFLICT`
//! statements of [`UPSERT_CHUNK`] rows inside one transaction; key lookups go in chunks of
//! [`KEY_CHUNK`] placeholders. The journal and outcome paths (`journal`, `mark_sent`,
//! `record_outcomes`, `load_account_records`) take each batch as one JSON array expanded by
//! `json_each` instead: one prepared statement of fixed text per kind (see [`JSON_CHUNK`]).

mod decode;
mod lease;
mod location;
mod sql;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow,
};
use sqlx::{AssertSqlSafe, Row};

use super::rows::{self, last_wins, to_i64};
use super::{
    AccountChange, AccountRecord, AccountState, LOCK_LEASE, NewOperation, NewRun, OpOutcome,
    OperationRecord, PRUNABLE_RUNS, PruneSummary, RecordedAccount, RunFinish, RunRecord, Store,
    StoreError, TargetLock, coalesce,
};

use decode::*;
use lease::*;
use location::*;
use sql::*;

const BACKEND: &str = "sqlite";

/// Keys per `IN (...)` list.
const KEY_CHUNK: usize = 500;

/// Rows per multi-row upsert. Each row takes [`UPSERT_VARS_PER_ROW`] variables (every column,
/// the target and timestamp included): 2000 × 14 = 28000, under SQLite's default limit of
/// 32766 variables per statement.
const UPSERT_CHUNK: usize = 2_000;
const UPSERT_VARS_PER_ROW: usize = 14;
const _: () = assert!(UPSERT_CHUNK * UPSERT_VARS_PER_ROW <= 32_766);

/// Operations per journal `INSERT`: their payloads (up to a few KB each) are sorted into array
/// order in memory, which should stay within SQLite's page cache.
const JOURNAL_CHUNK: usize = 1_000;

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite state store: a connection pool on one database file, and the leases of this
/// store's running runs.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    loc: Location,
    leases: Arc<RunLeases>,
}

impl SqliteStore {
    /// Opens (creating it and its directory if missing) the database file at `path`, in WAL
    /// mode, with a 5 s busy timeout and foreign keys enforced.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| StoreError::Connect {
                    backend: BACKEND,
                    message: format!("cannot create directory {}: {e}", dir.display()),
                })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // Another process creating the same new file at this moment (switching it to WAL)
        // makes the first connection fail with "database is locked" before the busy timeout
        // applies: try again for a while.
        let deadline = tokio::time::Instant::now() + BUSY_TIMEOUT;
        let pool = loop {
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options.clone())
                .await;
            match pool {
                Err(e) if is_locked(&e) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => break other,
            }
        };
        let loc = Location {
            file: Some(Arc::from(path)),
        };
        let pool = pool.map_err(|e| StoreError::Connect {
            backend: BACKEND,
            message: format!("{}: {e}", loc.describe("", &e)),
        })?;
        Ok(SqliteStore {
            pool,
            loc,
            leases: Arc::new(RunLeases::for_database(Some(path))),
        })
    }

    /// A private in-memory database on a single connection that is never recycled (closing it
    /// would drop the data). For tests.
    pub async fn open_memory() -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Connect {
                backend: BACKEND,
                message: format!("in-memory database: {e}"),
            })?;
        Ok(SqliteStore {
            pool,
            loc: Location { file: None },
            leases: Arc::new(RunLeases::for_database(None)),
        })
    }

    /// The connection pool (tests insert raw rows through it).
    #[doc(hidden)]
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// SQLite's "database is locked" (SQLITE_BUSY, code 5).
fn is_locked(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("5"))
}

/// How long `migrate` waits for another process's migration of the same file.
const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(60);

/// Takes an exclusive `flock` on the database file (independent of SQLite's own `fcntl`
/// locks), waiting up to [`MIGRATION_LOCK_WAIT`]; the lock goes with the returned file.
async fn lock_for_migration(path: &Path) -> Result<std::fs::File, StoreError> {
    let err = |message: String| StoreError::Migrate {
        backend: BACKEND,
        message: format!("{}: {message}", path.display()),
    };
    let file = std::fs::File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
    let deadline = tokio::time::Instant::now() + MIGRATION_LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(err(format!(
                    "another process has been migrating this database for {}s",
                    MIGRATION_LOCK_WAIT.as_secs()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(err(format!("cannot lock for the migration: {e}")));
            }
        }
    }
}

fn corrupt(context: impl Into<String>, message: impl Into<String>) -> StoreError {
    rows::corrupt(BACKEND, context, message)
}

fn to_u64(n: i64, what: &str, context: &str) -> Result<u64, StoreError> {
    rows::to_u64(BACKEND, n, what, context)
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        // sqlx takes no lock for SQLite migrations: two processes migrating a new database
        // at once (a daemon and a `sync` started together) would both run the first
        // migration, and one would fail. An exclusive lock on the file serialises them; the
        // second then finds the migrations applied.
        let _guard = match &self.loc.file {
            Some(path) => Some(lock_for_migration(path).await?),
            None => None,
        };
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migrate {
                backend: BACKEND,
                message: e.to_string(),
            })
    }

    async fn load_accounts(&self, target: &str) -> Result<Vec<RecordedAccount>, StoreError> {
        let context = format!("load accounts of target {target:?}");
        // One read transaction: every chunk sees the same snapshot.
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(self.loc.err(context.clone()))?;
        let mut out: Vec<RecordedAccount> = Vec::new();
        loop {
            let query = match out.last() {
                None => sqlx::query_scalar(LOAD_FIRST_CHUNK).bind(target),
                Some(last) => sqlx::query_scalar(LOAD_NEXT_CHUNK)
                    .bind(target)
                    .bind(last.key.clone()),
            };
            let json: String = query
                .bind(i64::try_from(LOAD_CHUNK).unwrap_or(i64::MAX))
                .fetch_one(&mut *tx)
                .await
                .map_err(self.loc.err(context.clone()))?;
            let rows: Vec<LightRow> = serde_json::from_str(&json)
                .map_err(|e| corrupt(&context, format!("light rows: {e}")))?;
            let n = rows.len();
            out.reserve(n);
            for row in rows {
                out.push(row.into_recorded(&context)?);
            }
            if n < LOAD_CHUNK {
                break;
            }
        }
        tx.rollback().await.map_err(self.loc.err(context))?;
        Ok(out)
    }

    async fn load_account_states(
        &self,
        target: &str,
        keys: &[String],
    ) -> Result<HashMap<String, AccountState>, StoreError> {
        let context = format!("load account states of target {target:?}");
        let mut out = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(KEY_CHUNK) {
            let sql = format!(
                "SELECT source_key, attributes, roles FROM accounts \
                 WHERE target = ? AND source_key IN ({})",
                placeholders(chunk.len())
            );
            // Only the full-size statement is worth keeping prepared (see `UPSERT_CHUNK`).
            let mut query = sqlx::query(AssertSqlSafe(sql))
                .persistent(chunk.len() == KEY_CHUNK)
                .bind(target);
            for key in chunk {
                query = query.bind(key.as_str());
            }
            let rows: Vec<(String, String, String)> = query
                .try_map(|row: SqliteRow| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
                .fetch_all(&self.pool)
                .await
                .map_err(self.loc.err(context.clone()))?;
            for (key, attributes, roles) in rows {
                let fields = serde_json::from_str(&attributes)
                    .map_err(|e| corrupt(&context, format!("key {key:?}: attributes: {e}")))?;
                let (roles, groups) = super::parse_memberships(&roles)
                    .map_err(|e| corrupt(&context, format!("key {key:?}: roles: {e}")))?;
                out.insert(
                    key,
                    AccountState {
                        fields,
                        roles,
                        groups,
                    },
                );
            }
        }
        Ok(out)
    }

    async fn upsert_accounts(
        &self,
        target: &str,
        rows: &[AccountRecord],
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let context = format!("upsert {} accounts of target {target:?}", rows.len());
        let rows = last_wins(rows);
        let now = format_ts(&Utc::now());
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(self.loc.err(context.clone()))?;
        upsert_in(&mut tx, &self.loc, target, &rows, &now, &context).await?;
        tx.commit().await.map_err(self.loc.err(context))
    }

    async fn delete_accounts(&self, target: &str, keys: &[String]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let context = format!("delete {} accounts of target {target:?}", keys.len());
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(self.loc.err(context.clone()))?;
        delete_in(&mut tx, &self.loc, target, keys, &context).await?;
        tx.commit().await.map_err(self.loc.err(context))
    }

    async fn last_good_source_count(&self) -> Result<Option<u64>, StoreError> {
        let context = "read the source count of the last good run";
        let count: Option<i64> = sqlx::query_scalar(
            "SELECT source_count FROM runs \
             WHERE trigger <> 'dry_run' AND status IN ('succeeded', 'partial') \
               AND source_count IS NOT NULL \
             ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(self.loc.err(context))?;
        count
            .map(|n| to_u64(n, "source_count", context))
            .transpose()
    }

    async fn prune_runs(&self, before: chrono::DateTime<Utc>) -> Result<PruneSummary, StoreError> {
        let context = format!("prune runs finished before {}", format_ts(&before));
        let cutoff = format_ts(&before);
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(self.loc.err(context.clone()))?;
        // A write first, so the transaction holds the write lock from its first statement:
        // both deletes then see the same prunable runs.
        let operations = sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM operations WHERE run_id IN ({PRUNABLE_RUNS})"
        )))
        .bind(&cutoff)
        .execute(&mut *tx)
        .await
        .map_err(self.loc.err(context.clone()))?
        .rows_affected();
        let runs = sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM runs WHERE id IN ({PRUNABLE_RUNS})"
        )))
        .bind(&cutoff)
        .execute(&mut *tx)
        .await
        .map_err(self.loc.err(context.clone()))?
        .rows_affected();
        tx.commit().await.map_err(self.loc.err(context.clone()))?;
        // Free pages go back to the file system only where auto-vacuum is on (never VACUUM:
        // it rewrites the whole file).
        let auto_vacuum: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
            .fetch_one(&self.pool)
            .await
            .map_err(self.loc.err(context.clone()))?;
        if runs > 0 && auto_vacuum != 0 {
            sqlx::query("PRAGMA incremental_vacuum")
                .execute(&self.pool)
                .await
                .map_err(self.loc.err(context))?;
        }
        Ok(PruneSummary { runs, operations })
    }

    async fn begin_run(&self, run: &NewRun) -> Result<i64, StoreError> {
        let context = format!("record the start of a {} run", run.trigger.as_str());
        let targets = serde_json::to_string(&run.targets).unwrap_or_else(|_| "[]".to_owned());
        // The lease is taken before the transaction that inserts the row commits: nobody ever
        // sees the row `running` without its lease held.
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(self.loc.err(context.clone()))?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (trigger, status, started_at, targets, forced) \
             VALUES (?1, 'running', ?2, ?3, ?4) RETURNING id",
        )
        .bind(run.trigger.as_str())
        .bind(format_ts(&run.started_at))
        .bind(targets)
        .bind(run.forced)
        .fetch_one(&mut *tx)
        .await
        .map_err(self.loc.err(context.clone()))?;
        let lease = self.leases.take(id)?;
        tx.commit().await.map_err(self.loc.err(context))?;
        self.leases.held().insert(id, lease);
        Ok(id)
    }

    async fn finish_run(&self, id: i64, finish: &RunFinish) -> Result<(), StoreError> {
        let context = format!("record the end of run {id}");
        let summary = serde_json::to_string(&finish.summary).unwrap_or_else(|_| "{}".to_owned());
        let done = sqlx::query(
            "UPDATE runs SET status = ?2, finished_at = ?3, source_count = ?4, planned = ?5, \
             applied = ?6, failed = ?7, error = ?8, summary = ?9 WHERE id = ?1",
        )
        .bind(id)
        .bind(finish.status.as_str())
        .bind(format_ts(&finish.finished_at))
        .bind(finish.source_count.map(to_i64))
        .bind(to_i64(finish.planned))
        .bind(to_i64(finish.applied))
        .bind(to_i64(finish.failed))
        .bind(finish.error.as_deref())
        .bind(summary)
        .execute(&self.pool)
        .await
        .map_err(self.loc.err(context.clone()))?;
        if done.rows_affected() == 0 {
            return Err(self.loc.err(context)(sqlx::Error::RowNotFound));
        }
        // Closing the run's own file releases its lock.
        let lease = self.leases.held().remove(&id);
        drop(lease);
        Ok(())
    }

    async fn interrupt_abandoned_runs(&self) -> Result<Vec<i64>, StoreError> {
        let context = "mark runs left running by a process that is gone";
        let running: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM runs WHERE status = 'running' ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .map_err(self.loc.err(context))?;
        if running.is_empty() {
            return Ok(Vec::new());
        }
        // Free leases are locked through this opening until the end of the function, so the
        // row is marked while nobody else can take the run for live.
        let probe = self.leases.open()?;
        let mut marked = Vec::new();
        for id in running {
            if self.leases.is_held(probe.as_ref(), id)? {
                continue;
            }
            let done = sqlx::query(
                "UPDATE runs SET status = 'interrupted', error = COALESCE(error, ?2) \
                 WHERE id = ?1 AND status = 'running'",
            )
            .bind(id)
            .bind(super::abandoned_run_error(Utc::now()))
            .execute(&self.pool)
            .await
            .map_err(self.loc.err(context))?;
            if done.rows_affected() == 1 {
                marked.push(id);
            }
        }
        drop(probe);
        Ok(marked)
    }

    async fn list_runs(&self, limit: u32) -> Result<Vec<RunRecord>, StoreError> {
        let context = "list runs";
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT ?1"
        )))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(self.loc.err(context))?;
        rows.iter().map(|row| run_from_row(row, context)).collect()
    }

    async fn find_runs(
        &self,
        filter: &crate::store::RunFilter,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let context = "list runs";
        // Fixed text: the trigger and status lists are JSON arrays expanded by json_each;
        // stored timestamps are RFC 3339 UTC text of one width, so they compare as text.
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs \
             WHERE (?1 IS NULL OR started_at >= ?1) \
               AND (?2 = '[]' OR trigger IN (SELECT value FROM json_each(?2))) \
               AND (?3 = '[]' OR status IN (SELECT value FROM json_each(?3))) \
             ORDER BY id DESC LIMIT ?4"
        )))
        .bind(filter.since.as_ref().map(format_ts))
        .bind(filter.triggers_json())
        .bind(filter.statuses_json())
        .bind(i64::from(filter.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(self.loc.err(context))?;
        rows.iter().map(|row| run_from_row(row, context)).collect()
    }

    async fn get_run(&self, id: i64) -> Result<Option<RunRecord>, StoreError> {
        let context = format!("read run {id}");
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.loc.err(context.clone()))?;
        row.map(|row| run_from_row(&row, &context)).transpose()
    }

    async fn run_operations(&self, run_id: i64) -> Result<Vec<OperationRecord>, StoreError> {
        let context = format!("list operations of run {run_id}");
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {OPERATION_COLUMNS} FROM operations WHERE run_id = ? ORDER BY id"
        )))
        .bind(run_id)
        .fetch_all(&self.pool)
        .await
        .map_err(self.loc.err(context.clone()))?;
        rows.iter()
            .map(|row| operation_from_row(row, &context))
            .collect()
    }

    async fn target_counts(&self, target: &str) -> Result<super::TargetCounts, StoreError> {
        let context = format!("count the accounts and unfinished operations of target {target:?}");
        let (owned, not_owned, unfinished): (i64, i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE owned = 1), COUNT(*) FILTER (WHERE owned = 0), \
                    (SELECT COUNT(*) FROM operations \
                     WHERE target = ?1 AND status IN ('pending', 'sent')) \
             FROM accounts WHERE target = ?1",
        )
        .bind(target)
        .fetch_one(&self.pool)
        .await
        .map_err(self.loc.err(context.clone()))?;
        let count = |n, what| rows::to_u64(BACKEND, n, what, &context);
        Ok(super::TargetCounts {
            owned: count(owned, "owned accounts")?,
            not_owned: count(not_owned, "not-owned accounts")?,
            unfinished: count(unfinished, "unfinished operations")?,
        })
    }

    async fn last_journaled_run(&self) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar("SELECT MAX(run_id) FROM operations")
            .fetch_one(&self.pool)
            .await
            .map_err(self.loc.err("find the last run that journaled operations"))
    }

    async fn run_operations_page(
        &self,
        run_id: i64,
        offset: u64,
        limit: u32,
    ) -> Result<super::OperationPage, StoreError> {
        let context = format!("list operations of run {run_id} from {offset}");
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM operations WHERE run_id = ?1")
            .bind(run_id)
            .fetch_one(&self.pool)
            .await
            .map_err(self.loc.err(context.clone()))?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {OPERATION_COLUMNS} FROM operations WHERE run_id = ?1 \
             ORDER BY id LIMIT ?2 OFFSET ?3"
        )))
        .bind(run_id)
        .bind(i64::from(limit))
        .bind(rows::to_i64(offset))
        .fetch_all(&self.pool)
        .await
        .map_err(self.loc.err(context.clone()))?;
        Ok(super::OperationPage {
            total: rows::to_u64(BACKEND, total, "operation count", &context)?,
            operations: rows
                .iter()
                .map(|row| operation_from_row(row, &context))
                .collect::<Result<_, _>>()?,
        })
    }

    async fn load_account_records(
        &self,
        target: &str,
        keys: &[String],
    ) -> Result<Vec<AccountRecord>, StoreError> {
        let context = format!("load account records of target {target:?}");
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(JSON_CHUNK) {
            let rows = sqlx::query(LOAD_RECORDS)
                .bind(target)
                .bind(json_array(chunk.iter().map(String::as_str)))
                .fetch_all(&self.pool)
                .await
                .map_err(self.loc.err(context.clone()))?;
            for row in &rows {
                out.push(record_from_row(row, &context)?);
            }
        }
        Ok(out)
    }

    async fn journal(
        &self,
        run_id: i64,
        target: &str,
        ops: &[NewOperation],
    ) -> Result<Vec<i64>, StoreError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let context = format!(
            "journal {} operations of run {run_id}, target {target:?}",
            ops.len()
        );
        let now = format_ts(&Utc::now());
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(self.loc.err(context.clone()))?;
        let mut ids = Vec::with_capacity(ops.len());
        for chunk in ops.chunks(JOURNAL_CHUNK) {
            let rows: Vec<(&str, &str, &str)> = chunk
                .iter()
                .map(|op| (op.source_key.as_str(), op.kind.as_str(), op.payload.get()))
                .collect();
            let done = sqlx::query(JOURNAL)
                .bind(run_id)
                .bind(target)
                .bind(now.as_str())
                .bind(to_json(&rows))
                .execute(&mut *tx)
                .await
                .map_err(self.loc.err(context.clone()))?;
            // Rows are inserted in array order (ORDER BY key) by one statement holding the
            // write lock, and AUTOINCREMENT gives each the next id: the chunk's ids are the
            // `n` ids ending at the last one. Checked, not assumed.
            let n = i64::try_from(chunk.len()).unwrap_or(i64::MAX);
            let last = done.last_insert_rowid();
            let first = last - n + 1;
            let found: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM operations WHERE id BETWEEN ?1 AND ?2 AND run_id = ?3",
            )
            .bind(first)
            .bind(last)
            .bind(run_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(self.loc.err(context.clone()))?;
            if done.rows_affected() != chunk.len() as u64 || found != n {
                return Err(corrupt(
                    &context,
                    format!(
                        "{} rows inserted, {found} of them in ids {first}..={last}, expected {n}",
                        done.rows_affected()
                    ),
                ));
            }
            ids.extend(first..=last);
        }
        tx.commit().await.map_err(self.loc.err(context))?;
        Ok(ids)
    }

    async fn mark_sent(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let context = format!("mark {} operations sent", ids.len());
        let now = format_ts(&Utc::now());
        // Journal ids are consecutive, and a window's usually are too: the ids go as
        // [first, last] ranges, one statement (atomic on its own) for the whole call.
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut ranges: Vec<(i64, i64)> = Vec::new();
        for id in sorted {
            match ranges.last_mut() {
                Some((_, hi)) if *hi + 1 == id => *hi = id,
                _ => ranges.push((id, id)),
            }
        }
        sqlx::query(MARK_SENT)
            .bind(now.as_str())
            .bind(to_json(&ranges))
            .execute(&self.pool)
            .await
            .map_err(self.loc.err(context))?;
        Ok(())
    }

    async fn record_outcomes(
        &self,
        target: &str,
        outcomes: &[OpOutcome],
        changes: &[AccountChange],
    ) -> Result<(), StoreError> {
        if outcomes.is_empty() && changes.is_empty() {
            return Ok(());
        }
        let context = format!(
            "record {} operation outcomes and {} account changes of target {target:?}",
            outcomes.len(),
            changes.len()
        );
        let changes = coalesce(changes);
        let now = format_ts(&Utc::now());
        // The last outcome of an operation wins (as on Postgres).
        let mut seen = HashSet::with_capacity(outcomes.len());
        let mut outcomes: Vec<&OpOutcome> = outcomes
            .iter()
            .rev()
            .filter(|o| seen.insert(o.id))
            .collect();
        outcomes.reverse();
        // Each list goes as JSON arrays of JSON_CHUNK rows, one prepared statement each.
        let mut statements: Vec<(&'static str, String)> = Vec::new();
        for chunk in outcomes.chunks(JSON_CHUNK) {
            let rows: Vec<_> = chunk
                .iter()
                .map(|o| {
                    (
                        o.id,
                        o.status.as_str(),
                        o.error.as_deref(),
                        o.remote_id.as_deref(),
                    )
                })
                .collect();
            statements.push((RECORD_OUTCOMES, to_json(&rows)));
        }
        for chunk in changes.upserts.chunks(JSON_CHUNK) {
            let rows: Vec<_> = chunk
                .iter()
                .map(|u| {
                    let row = u.record;
                    let a = &row.account;
                    (
                        a.key.as_str(),
                        a.remote_id.as_deref(),
                        a.login.as_deref(),
                        // Serialising string maps and sets cannot fail.
                        serde_json::to_string(&row.state.fields).unwrap_or_default(),
                        super::memberships_json(&row.state),
                        a.hash.to_string(),
                        u.enabled(),
                        a.owned,
                        a.adopted,
                        u.disabled_at().as_ref().map(format_ts),
                        row.last_seen_run,
                    )
                })
                .collect();
            let rows = to_json(&rows);
            statements.push((UPDATE_SAME_LOGIN, rows.clone()));
            statements.push((UPSERT_RECORDS, rows));
        }
        for chunk in changes.set_enabled.chunks(JSON_CHUNK) {
            let rows: Vec<_> = chunk
                .iter()
                .map(|(key, enabled, disabled_at)| {
                    (*key, *enabled, disabled_at.as_ref().map(format_ts))
                })
                .collect();
            statements.push((SET_ENABLED, to_json(&rows)));
        }
        for chunk in changes.deletes.chunks(JSON_CHUNK) {
            statements.push((DELETE_RECORDS, json_array(chunk.iter().copied())));
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(self.loc.err(context.clone()))?;
        for (sql, rows) in statements {
            // Every statement takes ?1 now, ?2 the rows, ?3 the target (unused ones ignored
            // by SQLite).
            sqlx::query(sql)
                .bind(now.as_str())
                .bind(rows)
                .bind(target)
                .execute(&mut *tx)
                .await
                .map_err(self.loc.err(context.clone()))?;
        }
        tx.commit().await.map_err(self.loc.err(context))
    }

    async fn try_lock_target(
        &self,
        target: &str,
        holder: &str,
    ) -> Result<Option<Box<dyn TargetLock>>, StoreError> {
        let context = format!("lock target {target:?}");
        let holder = format!("{holder}#{}", uuid::Uuid::new_v4());
        if !take_lease(&self.pool, &self.loc, target, &holder, &context).await? {
            // A holder on this host whose process is gone (killed, crashed) does not keep the
            // target locked until its lease runs out.
            let current: Option<String> =
                sqlx::query_scalar("SELECT holder FROM target_locks WHERE target = ?")
                    .bind(target)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(self.loc.err(context.clone()))?;
            let Some(current) = current.filter(|h| holder_is_dead(h)) else {
                return Ok(None);
            };
            tracing::warn!(target = %target, holder = %current, "taking over the lock of a dirsync process that is gone");
            sqlx::query("DELETE FROM target_locks WHERE target = ? AND holder = ?")
                .bind(target)
                .bind(&current)
                .execute(&self.pool)
                .await
                .map_err(self.loc.err(context.clone()))?;
            if !take_lease(&self.pool, &self.loc, target, &holder, &context).await? {
                return Ok(None);
            }
        }
        // Renew the lease while the lock is held; a crashed holder's lease simply expires.
        let renew = {
            let pool = self.pool.clone();
            let target = target.to_string();
            let holder = holder.clone();
            let context = context.clone();
            let loc = self.loc.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(LOCK_LEASE / 3).await;
                    if let Err(e) = take_lease(&pool, &loc, &target, &holder, &context).await {
                        tracing::warn!(target = %target, error = %e, "could not renew the target lock");
                    }
                }
            })
        };
        Ok(Some(Box::new(SqliteLock {
            pool: self.pool.clone(),
            loc: self.loc.clone(),
            target: target.to_string(),
            holder,
            context,
            renew,
        })))
    }

    async fn state_version(&self, target: &str) -> Result<i64, StoreError> {
        let context = format!("read the state version of target {target:?}");
        sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM operations WHERE target = ?")
            .bind(target)
            .fetch_one(&self.pool)
            .await
            .map_err(self.loc.err(context))
    }

    async fn live_cookie(&self, source: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let context = format!("read the live sync position of source {source:?}");
        sqlx::query_scalar::<_, Vec<u8>>("SELECT cookie FROM live_cookies WHERE source = ?")
            .bind(source)
            .fetch_optional(&self.pool)
            .await
            .map_err(self.loc.err(context))
    }

    async fn save_live_cookie(
        &self,
        source: &str,
        cookie: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let context = format!("store the live sync position of source {source:?}");
        let q = match cookie {
            Some(c) => sqlx::query(
                "INSERT INTO live_cookies (source, cookie, updated_at) VALUES (?, ?, ?) \
                 ON CONFLICT (source) DO UPDATE SET cookie = excluded.cookie, \
                 updated_at = excluded.updated_at",
            )
            .bind(source)
            .bind(c)
            .bind(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            None => sqlx::query("DELETE FROM live_cookies WHERE source = ?").bind(source),
        };
        q.execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(self.loc.err(context))
    }

    async fn unfinished_operations(
        &self,
        target: &str,
    ) -> Result<Vec<OperationRecord>, StoreError> {
        let context = format!("list unfinished operations of target {target:?}");
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {OPERATION_COLUMNS} FROM operations \
             WHERE target = ? AND status IN ('pending', 'sent') ORDER BY id"
        )))
        .bind(target)
        .fetch_all(&self.pool)
        .await
        .map_err(self.loc.err(context.clone()))?;
        rows.iter()
            .map(|row| operation_from_row(row, &context))
            .collect()
    }
}

/// Upserts rows (keys unique) of a target inside a transaction, [`UPSERT_CHUNK`] rows per
/// statement; `now` is the rows' `updated_at` (and `created_at` of new ones).
async fn upsert_in(
    conn: &mut SqliteConnection,
    loc: &Location,
    target: &str,
    rows: &[&AccountRecord],
    now: &str,
    context: &str,
) -> Result<(), StoreError> {
    let mut full_chunk_sql: Option<String> = None;
    for chunk in rows.chunks(UPSERT_CHUNK) {
        let sql = if chunk.len() == UPSERT_CHUNK {
            full_chunk_sql
                .get_or_insert_with(|| upsert_sql(UPSERT_CHUNK))
                .clone()
        } else {
            upsert_sql(chunk.len())
        };
        // Only the full-size statement is kept prepared: a cached statement per tail size
        // would pile up large statements in each connection's cache.
        let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(chunk.len() == UPSERT_CHUNK);
        for row in chunk {
            let a = &row.account;
            query = query
                .bind(target)
                .bind(a.key.as_str())
                .bind(a.remote_id.as_deref())
                .bind(a.login.as_deref())
                // Serialising string maps and sets cannot fail.
                .bind(serde_json::to_string(&row.state.fields).unwrap_or_default())
                .bind(super::memberships_json(&row.state))
                .bind(a.hash.to_string())
                .bind(a.enabled)
                .bind(a.owned)
                .bind(a.adopted)
                .bind(a.disabled_at.as_ref().map(format_ts))
                .bind(row.last_seen_run)
                .bind(now)
                .bind(now);
        }
        query.execute(&mut *conn).await.map_err(loc.err(context))?;
    }
    Ok(())
}

/// Deletes account rows of a target inside a transaction, [`KEY_CHUNK`] keys per statement.
async fn delete_in(
    conn: &mut SqliteConnection,
    loc: &Location,
    target: &str,
    keys: &[String],
    context: &str,
) -> Result<(), StoreError> {
    for chunk in keys.chunks(KEY_CHUNK) {
        let sql = format!(
            "DELETE FROM accounts WHERE target = ? AND source_key IN ({})",
            placeholders(chunk.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .persistent(chunk.len() == KEY_CHUNK)
            .bind(target);
        for key in chunk {
            query = query.bind(key.as_str());
        }
        query.execute(&mut *conn).await.map_err(loc.err(context))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    #[test]
    fn timestamps_round_trip_with_microseconds() {
        let ts = DateTime::parse_from_rfc3339("2026-11-25T09:01:02.123456Z")
            .map(|t| t.with_timezone(&Utc))
            .ok();
        let Some(ts) = ts else {
            panic!("test timestamp does not parse");
        };
        let text = format_ts(&ts);
        assert_eq!(text, "2026-11-25T09:01:02.123456Z");
        assert_eq!(parse_ts(&text), Ok(ts));
        // What the column defaults write (milliseconds) parses too.
        assert!(parse_ts("2026-11-25T09:01:02.123Z").is_ok());
    }

    /// Two stores migrating one new database file at once both succeed (the second waits
    /// for the first and finds its migrations applied).
    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_migrations_of_a_new_file_both_succeed() {
        for round in 0..10 {
            let dir = match tempfile::tempdir() {
                Ok(d) => d,
                Err(e) => panic!("{e}"),
            };
            let path = dir.path().join("state.db");
            let open = |p: std::path::PathBuf| async move {
                let store = SqliteStore::open(&p).await?;
                store.migrate().await
            };
            let (a, b) = tokio::join!(
                tokio::spawn(open(path.clone())),
                tokio::spawn(open(path.clone()))
            );
            for r in [a, b] {
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => panic!("round {round}: {e}"),
                    Err(e) => panic!("round {round}: {e}"),
                }
            }
        }
    }

    /// The `json_each` statements look rows up by key: a plan that scans `accounts` or
    /// `operations` would make each batch cost the whole table.
    #[tokio::test]
    async fn json_statements_use_keys() {
        let store = match SqliteStore::open_memory().await {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        if let Err(e) = store.migrate().await {
            panic!("{e}");
        }
        for sql in [
            LOAD_RECORDS,
            JOURNAL,
            MARK_SENT,
            RECORD_OUTCOMES,
            UPDATE_SAME_LOGIN,
            UPSERT_RECORDS,
            SET_ENABLED,
            DELETE_RECORDS,
        ] {
            let plan: Vec<(i64, i64, i64, String)> =
                match sqlx::query_as(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .fetch_all(store.pool())
                    .await
                {
                    Ok(p) => p,
                    Err(e) => panic!("{sql}: {e}"),
                };
            let steps: Vec<&str> = plan.iter().map(|(_, _, _, d)| d.as_str()).collect();
            assert!(
                !steps.iter().any(|d| d.starts_with("SCAN accounts")
                    || d.starts_with("SCAN operations")
                    || d.contains("COVERING INDEX accounts_target_login_idx")),
                "{sql}: {steps:?}"
            );
        }
    }

    #[test]
    fn upsert_sql_has_one_placeholder_per_column() {
        let sql = upsert_sql(2);
        let row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
        assert!(
            sql.contains(&format!("VALUES {row}, {row} ON CONFLICT")),
            "{sql}"
        );
        assert_eq!(sql.matches('?').count(), 2 * UPSERT_VARS_PER_ROW);
    }
}
