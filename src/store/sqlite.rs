//! SQLite backend of the state store: the embedded default when no database URL is configured.
//!
//! Conventions (see `migrations/sqlite/0001_init.sql`): timestamps are TEXT in RFC 3339, UTC,
//! with microseconds (`2026-11-25T09:01:02.123456Z`, the precision Postgres keeps); booleans are
//! INTEGER 0/1; JSON is TEXT. Bulk writes are multi-row `INSERT ... VALUES (..),(..) ON CONFLICT`
//! statements of [`UPSERT_CHUNK`] rows inside one transaction; key lookups go in chunks of
//! [`KEY_CHUNK`] placeholders. The journal and outcome paths (`journal`, `mark_sent`,
//! `record_outcomes`, `load_account_records`) take each batch as one JSON array expanded by
//! `json_each` instead: one prepared statement of fixed text per kind (see [`JSON_CHUNK`]).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow,
};
use sqlx::{AssertSqlSafe, Row};

use super::rows::{self, AccountRow, OperationRow, RunRow, last_wins, to_i64};
use super::{
    AccountChange, AccountRecord, AccountState, LOCK_LEASE, NewOperation, NewRun, OpOutcome,
    OperationRecord, RecordedAccount, RunFinish, RunRecord, Store, StoreError, TargetLock,
    coalesce,
};

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

/// Leases of running runs (see [`Store::begin_run`]): a write lock on byte `id` of
/// `<database>-runs.lock`, taken through a file opened for the run alone and dropped at its end.
/// The lock belongs to that open file description (Linux `F_OFD_SETLK`), not to the process, so
/// it conflicts with any other opening of the file, in this process or another, and the kernel
/// releases it when the process dies, however it dies. An in-memory database (one process by
/// definition) keeps only the set of held run ids.
#[derive(Debug, Default)]
struct RunLeases {
    /// `None`: an in-memory database.
    file: Option<PathBuf>,
    held: std::sync::Mutex<HashMap<i64, Option<std::fs::File>>>,
}

impl RunLeases {
    fn for_database(db: Option<&Path>) -> RunLeases {
        RunLeases {
            file: db.map(|db| {
                let mut name = db.as_os_str().to_os_string();
                name.push("-runs.lock");
                PathBuf::from(name)
            }),
            held: Default::default(),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Option<std::fs::File>>> {
        // One insert or remove at a time: a panic cannot leave the map inconsistent.
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn error(&self, message: String) -> StoreError {
        StoreError::Lease {
            backend: BACKEND,
            path: self
                .file
                .as_deref()
                .map_or_else(|| "(memory)".into(), |p| p.display().to_string()),
            message,
        }
    }

    /// Opens (creating it like SQLite creates the database: 0644 less the umask) the lease file.
    fn open(&self) -> Result<Option<std::fs::File>, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let Some(path) = &self.file else {
            return Ok(None);
        };
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map(Some)
            .map_err(|e| self.error(format!("cannot open: {e}")))
    }

    /// Takes the lease of run `id` (not yet visible to others): a file of its own, locked.
    fn take(&self, id: i64) -> Result<Option<std::fs::File>, StoreError> {
        let file = self.open()?;
        if let Some(f) = &file
            && !lock_byte(f, id).map_err(|e| self.error(format!("cannot lock run {id}: {e}")))?
        {
            return Err(self.error(format!("the lease of new run {id} is held")));
        }
        Ok(file)
    }

    /// Whether run `id`'s lease is held by a live run: this store's, or another opening's.
    /// `probe` is a file opened for the check: a free lease is locked through it, so the caller
    /// holds it until it drops `probe`.
    fn is_held(&self, probe: Option<&std::fs::File>, id: i64) -> Result<bool, StoreError> {
        if self.held().contains_key(&id) {
            return Ok(true);
        }
        match probe {
            None => Ok(false),
            Some(f) => lock_byte(f, id)
                .map(|got| !got)
                .map_err(|e| self.error(format!("cannot test the lease of run {id}: {e}"))),
        }
    }
}

/// Write-locks byte `at` of `file` through its open file description, without waiting: `false`
/// when another opening of the file holds it.
fn lock_byte(file: &std::fs::File, at: i64) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: `flock` is plain old data; all-zero is a valid value, the fields that matter are
    // set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = at as libc::off_t;
    fl.l_len = 1;
    // Open file description locks need l_pid = 0.
    fl.l_pid = 0;
    // SAFETY: a valid open descriptor and a pointer to an initialised `flock` that lives for
    // the call.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

/// Where the database lives. Every query error names the file, and when SQLite reports a failure
/// the file system causes (full, read-only, cannot open, I/O), says what the file system shows
/// (see [`diagnose`]): "database or disk is full" alone does not say which disk.
#[derive(Debug, Clone)]
struct Location {
    /// `None`: an in-memory database.
    file: Option<Arc<Path>>,
}

impl Location {
    /// The error of a query on this database, for `context` (what was being done).
    fn err(&self, context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StoreError {
        let context = context.into();
        let loc = self.clone();
        move |source| StoreError::Query {
            backend: BACKEND,
            context: loc.describe(&context, &source),
            source,
        }
    }

    /// `<file>[: <what the file system shows>][: <context>]`.
    fn describe(&self, context: &str, e: &sqlx::Error) -> String {
        let mut text = match &self.file {
            None => "in-memory database".to_string(),
            Some(file) => match diagnose(file, e) {
                Some(why) => format!("{}: {why}", file.display()),
                None => file.display().to_string(),
            },
        };
        if !context.is_empty() {
            text.push_str(": ");
            text.push_str(context);
        }
        text
    }
}

/// SQLite's primary result codes that the environment causes.
const SQLITE_READONLY: i32 = 8;
const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;

/// Below this much free space a file system that made SQLite fail counts as full: SQLite needs
/// room for its WAL, its shared-memory index and new pages, not one byte.
const NEARLY_FULL: u64 = 1 << 20;

/// Why the file system holding `file` refuses writes, when `e` is a failure it can cause and the
/// file system shows a reason: read-only, (nearly) no space left, a directory dirsync may not
/// write to. `None` otherwise (the error then speaks for itself).
fn diagnose(file: &Path, e: &sqlx::Error) -> Option<String> {
    let code: i32 = e.as_database_error()?.code()?.parse().ok()?;
    let primary = code & 0xff;
    if !matches!(
        primary,
        SQLITE_READONLY | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN
    ) {
        return None;
    }
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let c_dir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: `c_dir` is a valid NUL-terminated path and `vfs` a writable statvfs.
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    let stat_ok = unsafe { libc::statvfs(c_dir.as_ptr(), &mut vfs) } == 0;
    if stat_ok && vfs.f_flag & libc::ST_RDONLY != 0 {
        return Some(format!(
            "the file system holding {} is read-only (dirsync must write its journal there)",
            dir.display()
        ));
    }
    if stat_ok {
        // `fsblkcnt_t` and `c_ulong` are u64 on 64-bit Linux, narrower elsewhere.
        #[allow(clippy::useless_conversion)]
        let free = u64::from(vfs.f_bavail).saturating_mul(u64::from(vfs.f_frsize));
        if primary == SQLITE_FULL || free < NEARLY_FULL {
            return Some(format!(
                "no space left on the file system holding {} ({free} bytes free): free some \
                 space, then run again",
                dir.display()
            ));
        }
    }
    // SAFETY: as above; access() only reads the path.
    if unsafe { libc::access(c_dir.as_ptr(), libc::W_OK) } != 0 {
        return Some(format!(
            "the directory {} is not writable for this user ({})",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    if primary == SQLITE_READONLY {
        return Some("the database file is read-only".to_string());
    }
    None
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
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await;
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

/// A timestamp as stored: RFC 3339, UTC, microseconds.
fn format_ts(ts: &DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("bad timestamp {text:?}: {e}"))
}

fn corrupt(context: impl Into<String>, message: impl Into<String>) -> StoreError {
    rows::corrupt(BACKEND, context, message)
}

fn to_u64(n: i64, what: &str, context: &str) -> Result<u64, StoreError> {
    rows::to_u64(BACKEND, n, what, context)
}

/// `?, ?, ...`: `n` anonymous placeholders.
///
/// Anonymous only: SQLite looks numbered (`?NNN`) parameters up in a list, linearly, when
/// compiling and when sqlx asks each parameter's name at bind time, which makes a statement
/// with tens of thousands of them quadratic (25k rows took 16 s instead of well under one).
fn placeholders(n: usize) -> String {
    let mut sql = String::with_capacity(n * 3);
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('?');
    }
    sql
}

fn upsert_sql(rows: usize) -> String {
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
const JSON_CHUNK: usize = 10_000;

/// `serde_json::to_string` of rows that cannot fail to serialise (strings, numbers, options).
fn to_json<T: serde::Serialize>(rows: &T) -> String {
    serde_json::to_string(rows).unwrap_or_else(|_| "[]".to_owned())
}

/// A JSON array of strings.
fn json_array<'a>(items: impl Iterator<Item = &'a str>) -> String {
    to_json(&items.collect::<Vec<_>>())
}

// The journal and outcome statements take their rows as one JSON array, expanded by
// `json_each`: one prepared statement of fixed text whatever the batch size (multi-row VALUES
// need a statement, compiled anew, per size and 14 bound variables per row). The row sets are
// MATERIALIZED so that SQLite loops over them and looks each row up by key: it cannot estimate
// a `json_each` and would otherwise scan the table (tested by `json_statements_use_keys`).

/// `load_account_records`: ?1 target, ?2 `["key", ...]`.
const LOAD_RECORDS: &str = "SELECT source_key, remote_id, login, hash, enabled, owned, adopted, \
     disabled_at, attributes, roles, last_seen_run FROM accounts \
     WHERE target = ?1 AND source_key IN (SELECT value FROM json_each(?2)) \
     ORDER BY source_key";

/// `journal`: ?1 run, ?2 target, ?3 now, ?4 `[[key, kind, payload text], ...]`.
const JOURNAL: &str = "INSERT INTO operations (run_id, target, source_key, kind, payload, \
     created_at, updated_at) \
     SELECT ?1, ?2, value ->> 0, value ->> 1, value ->> 2, ?3, ?3 FROM json_each(?4) ORDER BY key";

/// `mark_sent`: ?1 now, ?2 `[[first id, last id], ...]`.
const MARK_SENT: &str = "WITH r AS MATERIALIZED (SELECT value ->> 0 AS lo, value ->> 1 AS hi \
     FROM json_each(?2)) \
     UPDATE operations SET status = 'sent', attempts = attempts + 1, updated_at = ?1 \
     FROM r WHERE operations.id BETWEEN r.lo AND r.hi";

/// `record_outcomes`: ?1 now, ?2 `[[id, status, error, remote_id], ...]`.
const RECORD_OUTCOMES: &str = "WITH v AS MATERIALIZED (SELECT value ->> 0 AS id, \
     value ->> 1 AS status, value ->> 2 AS error, value ->> 3 AS remote_id FROM json_each(?2)) \
     UPDATE operations SET status = v.status, last_error = v.error, \
     remote_id = COALESCE(v.remote_id, operations.remote_id), updated_at = ?1 \
     FROM v WHERE operations.id = v.id";

/// `record_outcomes`, first of two statements over the same rows: ?1 now, ?2 `[[key,
/// remote_id, login, attributes text, roles text, hash, enabled, owned, adopted, disabled_at,
/// last_seen_run], ...]` (keys unique), ?3 target. Updates the existing rows whose login stays
/// the same (nearly all of them) without assigning `login`: SQLite then leaves the
/// `(target, lower(login))` index alone instead of deleting and re-inserting each entry.
const UPDATE_SAME_LOGIN: &str = "WITH v AS MATERIALIZED (SELECT value ->> 0 AS source_key, \
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
const UPSERT_RECORDS: &str = "INSERT INTO accounts (target, source_key, remote_id, login, \
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
const SET_ENABLED: &str = "WITH v AS MATERIALIZED (SELECT value ->> 0 AS source_key, \
     value ->> 1 AS enabled, value ->> 2 AS disabled_at FROM json_each(?2)) \
     UPDATE accounts SET enabled = v.enabled, disabled_at = v.disabled_at, updated_at = ?1 \
     FROM v WHERE accounts.target = ?3 AND accounts.source_key = v.source_key";

/// `record_outcomes`: ?2 `["key", ...]`, ?3 target (?1 unused).
const DELETE_RECORDS: &str = "DELETE FROM accounts WHERE target = ?3 \
     AND source_key IN (SELECT value FROM json_each(?2))";

/// Rows per chunk of `load_accounts`.
const LOAD_CHUNK: usize = 10_000;

/// `load_accounts` reads the light columns as one JSON array per chunk of [`LOAD_CHUNK`] rows
/// (keyset-paginated on the primary key): handing 1M rows one by one from sqlx's SQLite worker
/// thread costs several seconds, the JSON round trip a fraction of that.
const LOAD_FIRST_CHUNK: &str = "SELECT json_group_array(json_array(source_key, remote_id, login, \
     hash, enabled, owned, adopted, disabled_at) ORDER BY source_key) \
     FROM (SELECT * FROM accounts WHERE target = ?1 ORDER BY source_key LIMIT ?2)";
const LOAD_NEXT_CHUNK: &str = "SELECT json_group_array(json_array(source_key, remote_id, login, \
     hash, enabled, owned, adopted, disabled_at) ORDER BY source_key) \
     FROM (SELECT * FROM accounts WHERE target = ?1 AND source_key > ?2 \
           ORDER BY source_key LIMIT ?3)";

/// One element of a `load_accounts` chunk.
#[derive(serde::Deserialize)]
struct LightRow(
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
    fn into_recorded(self, context: &str) -> Result<RecordedAccount, StoreError> {
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

const RUN_COLUMNS: &str = "id, trigger, status, started_at, finished_at, targets, forced, \
     source_count, planned, applied, failed, error, summary";

fn run_from_row(row: &SqliteRow, context: &str) -> Result<RunRecord, StoreError> {
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

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn migrate(&self) -> Result<(), StoreError> {
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

const OPERATION_COLUMNS: &str = "id, run_id, target, source_key, kind, status, attempts, \
     last_error, remote_id, payload, updated_at";

fn operation_from_row(row: &SqliteRow, context: &str) -> Result<OperationRecord, StoreError> {
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
fn record_from_row(row: &SqliteRow, context: &str) -> Result<AccountRecord, StoreError> {
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

/// Takes or renews the lease on a target's lock row: succeeds when the row is free, expired, or
/// already ours.
async fn take_lease(
    pool: &SqlitePool,
    loc: &Location,
    target: &str,
    holder: &str,
    context: &str,
) -> Result<bool, StoreError> {
    let now = Utc::now();
    let expires = now + chrono::Duration::from_std(LOCK_LEASE).unwrap_or(chrono::Duration::MAX);
    let done = sqlx::query(
        "INSERT INTO target_locks (target, holder, expires_at) VALUES (?, ?, ?) \
         ON CONFLICT (target) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
         WHERE target_locks.holder = excluded.holder OR target_locks.expires_at < ?",
    )
    .bind(target)
    .bind(holder)
    .bind(format_ts(&expires))
    .bind(format_ts(&now))
    .execute(pool)
    .await
    .map_err(loc.err(context))?;
    Ok(done.rows_affected() == 1)
}

struct SqliteLock {
    pool: SqlitePool,
    loc: Location,
    target: String,
    holder: String,
    context: String,
    renew: tokio::task::JoinHandle<()>,
}

impl Drop for SqliteLock {
    fn drop(&mut self) {
        self.renew.abort();
    }
}

#[async_trait::async_trait]
impl TargetLock for SqliteLock {
    async fn release(self: Box<Self>) -> Result<(), StoreError> {
        self.renew.abort();
        sqlx::query("DELETE FROM target_locks WHERE target = ? AND holder = ?")
            .bind(&self.target)
            .bind(&self.holder)
            .execute(&self.pool)
            .await
            .map_err(self.loc.err(self.context.clone()))?;
        Ok(())
    }
}

/// Whether a lock holder (`host:pid#uuid`, see `run::instance_name`) is a process of this host
/// that no longer exists.
fn holder_is_dead(holder: &str) -> bool {
    let Some((host, rest)) = holder
        .rsplit_once('#')
        .map(|(h, _)| h)
        .and_then(|h| h.rsplit_once(':'))
    else {
        return false;
    };
    let Ok(pid) = rest.parse::<i32>() else {
        return false;
    };
    let this_host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    if host != this_host || pid <= 0 || pid == std::process::id() as i32 {
        return false;
    }
    // SAFETY: kill(pid, 0) sends no signal; it only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    !alive
}

#[cfg(test)]
mod tests {
    use super::*;

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
