//! Postgres backend of the state store.
//!
//! Runtime queries only (no `query!` macros). Bulk writes send whole columns as arrays and
//! `UNNEST` them server-side, one statement per chunk of [`CHUNK`] rows, inside one transaction.
//! JSON columns are `JSONB`; they are written as text cast to `jsonb` and read back as text so
//! that a row whose JSON has the wrong shape is reported as [`StoreError::Corrupt`].

mod connect;
mod copy;
mod decode;
mod lock;
mod outcomes;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Connection, Row};

use super::rows::{self, last_wins, to_i64};
use super::{
    AccountChange, AccountRecord, AccountState, NewOperation, NewRun, OpOutcome, OperationRecord,
    PRUNABLE_RUNS, PruneSummary, RecordedAccount, RunFinish, RunRecord, Store, StoreError,
    TargetLock, coalesce,
};
use crate::secret::Secret;

use connect::*;
use copy::*;
use decode::*;
use lock::*;
use outcomes::*;

const BACKEND: &str = "postgres";

/// Rows (or keys) per statement on the bulk paths.
const CHUNK: usize = 10_000;

/// How long connecting, and later waiting for a pooled connection, may take.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The Postgres state store: a connection pool, and the sessions holding the leases of this
/// store's running runs (see [`Store::begin_run`]).
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Run id → the dedicated session holding the run's advisory lock.
    leases: std::sync::Arc<std::sync::Mutex<HashMap<i64, PgConnection>>>,
}

impl PgStore {
    /// Connects to `url` (a `postgres://` URL) with a pool of at most `max_connections`.
    ///
    /// One connection is opened before this returns, so a wrong host, port, password or database
    /// is reported here. The error never contains the URL or its password.
    pub async fn connect(url: &Secret, max_connections: u32) -> Result<PgStore, StoreError> {
        let options = PgConnectOptions::from_str(url.expose())
            .map_err(|e| connect_error(url, "invalid database URL", &e))?
            .application_name("dirsync");
        let place = describe_place(&options);

        // Open one connection directly first: the pool retries refused connections until its
        // acquire timeout and then reports only "timed out"; a direct connection says why.
        match tokio::time::timeout(ACQUIRE_TIMEOUT, sqlx::PgConnection::connect_with(&options))
            .await
        {
            Ok(Ok(conn)) => {
                // Closing politely can fail only on a broken socket; the pool opens its own.
                let _ = conn.close().await;
            }
            Ok(Err(e)) => return Err(connect_error(url, &place, &e)),
            Err(_) => {
                return Err(StoreError::Connect {
                    backend: BACKEND,
                    message: format!("{place}: no answer within {} s", ACQUIRE_TIMEOUT.as_secs()),
                });
            }
        }

        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| connect_error(url, &place, &e))?;
        Ok(PgStore {
            pool,
            leases: Default::default(),
        })
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<i64, PgConnection>> {
        // A panic while the map is locked cannot leave it inconsistent (one insert or remove).
        self.leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The connection pool (tests insert raw rows through it).
    #[doc(hidden)]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn query_error(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Query {
        backend: BACKEND,
        context,
        source,
    }
}

fn corrupt(context: impl Into<String>, message: impl Into<String>) -> StoreError {
    rows::corrupt(BACKEND, context, message)
}

fn to_u64(n: i64, what: &str, context: &str) -> Result<u64, StoreError> {
    rows::to_u64(BACKEND, n, what, context)
}

/// What an account upsert does with an existing row: every column from the new one (one text
/// for `upsert_accounts` and `record_outcomes`).
macro_rules! upsert_conflict {
    () => {
        r#"
ON CONFLICT (target, source_key) DO UPDATE SET
    remote_id     = EXCLUDED.remote_id,
    login         = EXCLUDED.login,
    attributes    = EXCLUDED.attributes,
    roles         = EXCLUDED.roles,
    hash          = EXCLUDED.hash,
    enabled       = EXCLUDED.enabled,
    owned         = EXCLUDED.owned,
    adopted       = EXCLUDED.adopted,
    disabled_at   = EXCLUDED.disabled_at,
    last_seen_run = EXCLUDED.last_seen_run,
    updated_at    = now()
"#
    };
}

const UPSERT_ACCOUNTS: &str = concat!(
    r#"
INSERT INTO accounts (target, source_key, remote_id, login, attributes, roles, hash,
                      enabled, owned, adopted, disabled_at, last_seen_run,
                      created_at, updated_at)
SELECT $1, u.source_key, u.remote_id, u.login, u.attributes::jsonb, u.roles::jsonb, u.hash,
       u.enabled, u.owned, u.adopted, u.disabled_at, u.last_seen_run, now(), now()
FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::bool[], $9::bool[], $10::bool[], $11::timestamptz[], $12::int8[])
     AS u(source_key, remote_id, login, attributes, roles, hash,
          enabled, owned, adopted, disabled_at, last_seen_run)
"#,
    upsert_conflict!()
);

#[async_trait::async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migrate {
                backend: BACKEND,
                message: e.to_string(),
            })
    }

    async fn load_accounts(&self, target: &str) -> Result<Vec<RecordedAccount>, StoreError> {
        let context = format!("load accounts of target {target:?}");
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_error(context.clone()))?;
        // COPY takes no bind parameters: the target goes in as a transaction-local setting.
        sqlx::query("SELECT set_config('dirsync.target', $1, true)")
            .bind(target)
            .execute(&mut *tx)
            .await
            .map_err(query_error(context.clone()))?;
        let mut out = Vec::new();
        // A row that does not parse: remembered, and the stream still read to its end, since
        // a connection left in the middle of a COPY cannot be used (or rolled back) again.
        let mut failure: Option<StoreError> = None;
        {
            let mut stream = tx
                .copy_out_raw(LOAD_ACCOUNTS_COPY)
                .await
                .map_err(query_error(context.clone()))?;
            let mut pending: Vec<u8> = Vec::new();
            while let Some(chunk) = stream
                .try_next()
                .await
                .map_err(query_error(context.clone()))?
            {
                if failure.is_some() {
                    continue;
                }
                // Postgres sends one row per message; do not rely on it.
                let mut data: &[u8] = &chunk;
                while let Some(end) = data.iter().position(|&b| b == b'\n') {
                    let line = if pending.is_empty() {
                        &data[..end]
                    } else {
                        pending.extend_from_slice(&data[..end]);
                        pending.as_slice()
                    };
                    match parse_light_row(line, &context) {
                        Ok(row) => out.push(row),
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                    pending.clear();
                    data = &data[end + 1..];
                }
                pending.extend_from_slice(data);
            }
            if failure.is_none() && !pending.is_empty() {
                match parse_light_row(&pending, &context) {
                    Ok(row) => out.push(row),
                    Err(e) => failure = Some(e),
                }
            }
        }
        tx.rollback().await.map_err(query_error(context))?;
        if let Some(failure) = failure {
            return Err(failure);
        }
        Ok(out)
    }

    async fn load_account_states(
        &self,
        target: &str,
        keys: &[String],
    ) -> Result<HashMap<String, AccountState>, StoreError> {
        let context = format!("load account states of target {target:?}");
        let mut out = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(CHUNK) {
            let rows: Vec<(String, String, String)> = sqlx::query(
                "SELECT source_key, attributes::text, roles::text FROM accounts \
                 WHERE target = $1 AND source_key = ANY($2)",
            )
            .bind(target)
            .bind(chunk)
            .try_map(|row: PgRow| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .fetch_all(&self.pool)
            .await
            .map_err(query_error(context.clone()))?;
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
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_error(context.clone()))?;
        upsert_in(&mut tx, target, &rows, &context).await?;
        tx.commit().await.map_err(query_error(context))
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
            .map_err(query_error(context.clone()))?;
        delete_in(&mut tx, target, keys, &context).await?;
        tx.commit().await.map_err(query_error(context))
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
        .map_err(query_error(context))?;
        count
            .map(|n| to_u64(n, "source_count", context))
            .transpose()
    }

    async fn prune_runs(&self, before: DateTime<Utc>) -> Result<PruneSummary, StoreError> {
        let context = format!(
            "prune runs finished before {}",
            before.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_error(context.clone()))?;
        // The runs are locked as they are chosen: the deletes below take exactly these.
        let ids: Vec<i64> =
            sqlx::query_scalar(AssertSqlSafe(format!("{PRUNABLE_RUNS} FOR UPDATE OF r")))
                .bind(before)
                .fetch_all(&mut *tx)
                .await
                .map_err(query_error(context.clone()))?;
        if ids.is_empty() {
            return Ok(PruneSummary::default());
        }
        let operations = sqlx::query("DELETE FROM operations WHERE run_id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(query_error(context.clone()))?
            .rows_affected();
        let runs = sqlx::query("DELETE FROM runs WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(query_error(context.clone()))?
            .rows_affected();
        tx.commit().await.map_err(query_error(context))?;
        Ok(PruneSummary { runs, operations })
    }

    async fn begin_run(&self, run: &NewRun) -> Result<i64, StoreError> {
        let context = format!("record the start of a {} run", run.trigger.as_str());
        let targets = serde_json::to_string(&run.targets).unwrap_or_else(|_| "[]".to_owned());
        // The run's lease: a session advisory lock on a connection of its own, taken in the
        // transaction that inserts the row, so no other instance ever sees the row `running`
        // without its lock held. It ends with the session when the process dies.
        let mut conn = PgConnection::connect_with(&self.pool.connect_options())
            .await
            .map_err(query_error(context.clone()))?;
        let mut tx = conn.begin().await.map_err(query_error(context.clone()))?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (trigger, status, started_at, targets, forced) \
             VALUES ($1, 'running', $2, $3::jsonb, $4) RETURNING id",
        )
        .bind(run.trigger.as_str())
        .bind(run.started_at)
        .bind(targets)
        .bind(run.forced)
        .fetch_one(&mut *tx)
        .await
        .map_err(query_error(context.clone()))?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(run_lease_key(id))
            .fetch_one(&mut *tx)
            .await
            .map_err(query_error(context.clone()))?;
        if !locked {
            return Err(corrupt(
                context,
                format!("the lease of new run {id} is held"),
            ));
        }
        tx.commit().await.map_err(query_error(context))?;
        self.leases().insert(id, conn);
        Ok(id)
    }

    async fn finish_run(&self, id: i64, finish: &RunFinish) -> Result<(), StoreError> {
        let context = format!("record the end of run {id}");
        let summary = serde_json::to_string(&finish.summary).unwrap_or_else(|_| "{}".to_owned());
        let done = sqlx::query(
            "UPDATE runs SET status = $2, finished_at = $3, source_count = $4, planned = $5, \
             applied = $6, failed = $7, error = $8, summary = $9::jsonb WHERE id = $1",
        )
        .bind(id)
        .bind(finish.status.as_str())
        .bind(finish.finished_at)
        .bind(finish.source_count.map(to_i64))
        .bind(to_i64(finish.planned))
        .bind(to_i64(finish.applied))
        .bind(to_i64(finish.failed))
        .bind(finish.error.as_deref())
        .bind(summary)
        .execute(&self.pool)
        .await
        .map_err(query_error(context.clone()))?;
        if done.rows_affected() == 0 {
            return Err(query_error(context)(sqlx::Error::RowNotFound));
        }
        let lease = self.leases().remove(&id);
        if let Some(mut conn) = lease {
            // Closing the session releases its lock; unlocking first says so explicitly.
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(run_lease_key(id))
                .execute(&mut conn)
                .await;
            let _ = conn.close().await;
        }
        Ok(())
    }

    async fn interrupt_abandoned_runs(&self) -> Result<Vec<i64>, StoreError> {
        let context = "mark runs left running by a process that is gone";
        let running: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM runs WHERE status = 'running' ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .map_err(query_error(context))?;
        let mut marked = Vec::new();
        for id in running {
            // A transaction-level try-lock: it fails while the run's process holds its session
            // lock, and is released at commit (a pooled connection never keeps it).
            let mut tx = self.pool.begin().await.map_err(query_error(context))?;
            let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(run_lease_key(id))
                .fetch_one(&mut *tx)
                .await
                .map_err(query_error(context))?;
            if !free {
                continue;
            }
            let done = sqlx::query(
                "UPDATE runs SET status = 'interrupted', error = COALESCE(error, $2) \
                 WHERE id = $1 AND status = 'running'",
            )
            .bind(id)
            .bind(super::abandoned_run_error(Utc::now()))
            .execute(&mut *tx)
            .await
            .map_err(query_error(context))?;
            tx.commit().await.map_err(query_error(context))?;
            if done.rows_affected() == 1 {
                marked.push(id);
            }
        }
        Ok(marked)
    }

    async fn list_runs(&self, limit: u32) -> Result<Vec<RunRecord>, StoreError> {
        let context = "list runs";
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT $1"
        )))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(context))?;
        rows.iter().map(|row| run_from_row(row, context)).collect()
    }

    async fn find_runs(
        &self,
        filter: &crate::store::RunFilter,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let context = "list runs";
        let triggers: Vec<&str> = filter.triggers.iter().map(|t| t.as_str()).collect();
        let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs \
             WHERE ($1::timestamptz IS NULL OR started_at >= $1) \
               AND (cardinality($2::text[]) = 0 OR trigger = ANY($2)) \
               AND (cardinality($3::text[]) = 0 OR status = ANY($3)) \
             ORDER BY id DESC LIMIT $4"
        )))
        .bind(filter.since)
        .bind(&triggers)
        .bind(&statuses)
        .bind(i64::from(filter.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(context))?;
        rows.iter().map(|row| run_from_row(row, context)).collect()
    }

    async fn get_run(&self, id: i64) -> Result<Option<RunRecord>, StoreError> {
        let context = format!("read run {id}");
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_error(context.clone()))?;
        row.map(|row| run_from_row(&row, &context)).transpose()
    }

    async fn run_operations(&self, run_id: i64) -> Result<Vec<OperationRecord>, StoreError> {
        let context = format!("list operations of run {run_id}");
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {OPERATION_COLUMNS} FROM operations WHERE run_id = $1 ORDER BY id"
        )))
        .bind(run_id)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(context.clone()))?;
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
        for chunk in keys.chunks(CHUNK) {
            let rows = sqlx::query(
                r#"SELECT source_key, remote_id, login, hash, enabled, owned, adopted, disabled_at,
                          attributes::text AS attributes, roles::text AS roles, last_seen_run
                   FROM accounts WHERE target = $1 AND source_key = ANY($2)
                   ORDER BY source_key COLLATE "C""#,
            )
            .bind(target)
            .bind(chunk)
            .fetch_all(&self.pool)
            .await
            .map_err(query_error(context.clone()))?;
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
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_error(context.clone()))?;
        let mut ids = Vec::with_capacity(ops.len());
        for chunk in ops.chunks(CHUNK) {
            // Ids are taken from the sequence first and inserted explicitly, so that they are
            // known to follow the input order.
            let mut chunk_ids: Vec<i64> = sqlx::query_scalar(
                "SELECT nextval(pg_get_serial_sequence('operations', 'id')) \
                 FROM generate_series(1, $1)",
            )
            .bind(i64::try_from(chunk.len()).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await
            .map_err(query_error(context.clone()))?;
            chunk_ids.sort_unstable();
            let keys: Vec<&str> = chunk.iter().map(|o| o.source_key.as_str()).collect();
            let kinds: Vec<&str> = chunk.iter().map(|o| o.kind.as_str()).collect();
            let payloads: Vec<&str> = chunk.iter().map(|o| o.payload.get()).collect();
            sqlx::query(
                "INSERT INTO operations (id, run_id, target, source_key, kind, payload, status, \
                 attempts, created_at, updated_at) \
                 SELECT u.id, $1, $2, u.source_key, u.kind, u.payload::jsonb, 'pending', 0, \
                        now(), now() \
                 FROM UNNEST($3::int8[], $4::text[], $5::text[], $6::text[]) \
                      AS u(id, source_key, kind, payload)",
            )
            .bind(run_id)
            .bind(target)
            .bind(&chunk_ids)
            .bind(keys)
            .bind(kinds)
            .bind(payloads)
            .execute(&mut *tx)
            .await
            .map_err(query_error(context.clone()))?;
            ids.extend(chunk_ids);
        }
        tx.commit().await.map_err(query_error(context))?;
        Ok(ids)
    }

    async fn mark_sent(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let context = format!("mark {} operations sent", ids.len());
        const MARK_SENT: &str = "UPDATE operations SET status = 'sent', attempts = attempts + 1, \
             updated_at = now() WHERE id = ANY($1)";
        if ids.len() <= CHUNK {
            // One statement is atomic on its own: no transaction round trips.
            sqlx::query(MARK_SENT)
                .bind(ids)
                .execute(&self.pool)
                .await
                .map_err(query_error(context))?;
            return Ok(());
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_error(context.clone()))?;
        for chunk in ids.chunks(CHUNK) {
            sqlx::query(MARK_SENT)
                .bind(chunk)
                .execute(&mut *tx)
                .await
                .map_err(query_error(context.clone()))?;
        }
        tx.commit().await.map_err(query_error(context))
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
        // The last outcome of an operation wins (an UPDATE ... FROM takes one arbitrarily).
        let mut seen = HashSet::with_capacity(outcomes.len());
        let mut outcomes: Vec<&OpOutcome> = outcomes
            .iter()
            .rev()
            .filter(|o| seen.insert(o.id))
            .collect();
        outcomes.reverse();
        // One statement per CHUNK rows of each list: the outcomes and every kind of account
        // change together (RECORD_OUTCOMES). A batch of up to CHUNK is one statement, atomic
        // without a transaction: one round trip.
        let statements = [
            outcomes.len(),
            changes.upserts.len(),
            changes.set_enabled.len(),
            changes.deletes.len(),
        ]
        .into_iter()
        .map(|n| n.div_ceil(CHUNK))
        .max()
        .unwrap_or(0)
        .max(1);
        let part = |i: usize| OutcomeChunk {
            outcomes: chunk_of(&outcomes, i),
            upserts: chunk_of(&changes.upserts, i),
            set_enabled: chunk_of(&changes.set_enabled, i),
            deletes: chunk_of(&changes.deletes, i),
        };
        if statements == 1 {
            return part(0)
                .execute(&self.pool, target)
                .await
                .map_err(query_error(context));
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_error(context.clone()))?;
        for i in 0..statements {
            part(i)
                .execute(&mut *tx, target)
                .await
                .map_err(query_error(context.clone()))?;
        }
        tx.commit().await.map_err(query_error(context))
    }

    async fn try_lock_target(
        &self,
        target: &str,
        holder: &str,
    ) -> Result<Option<Box<dyn TargetLock>>, StoreError> {
        let context = format!("lock target {target:?}");
        // A dedicated session: the advisory lock lives exactly as long as this connection, so
        // a crashed instance never leaves a target locked, and pool connections never carry a
        // lock back into the pool.
        let mut conn = PgConnection::connect_with(&self.pool.connect_options())
            .await
            .map_err(query_error(context.clone()))?;
        let key = lock_key(target);
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await
            .map_err(query_error(context.clone()))?;
        if !got {
            let _ = conn.close().await;
            return Ok(None);
        }
        tracing::debug!(target = %target, holder, "target lock taken");
        Ok(Some(Box::new(PgLock { conn, key, context })))
    }

    async fn state_version(&self, target: &str) -> Result<i64, StoreError> {
        let context = format!("read the state version of target {target:?}");
        sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM operations WHERE target = $1")
            .bind(target)
            .fetch_one(&self.pool)
            .await
            .map_err(query_error(context))
    }

    async fn unfinished_operations(
        &self,
        target: &str,
    ) -> Result<Vec<OperationRecord>, StoreError> {
        let context = format!("list unfinished operations of target {target:?}");
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {OPERATION_COLUMNS} FROM operations \
             WHERE target = $1 AND status IN ('pending', 'sent') ORDER BY id"
        )))
        .bind(target)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(context.clone()))?;
        rows.iter()
            .map(|row| operation_from_row(row, &context))
            .collect()
    }
}

/// Upserts rows (keys unique) of a target inside a transaction, [`CHUNK`] rows per statement.
async fn upsert_in(
    conn: &mut PgConnection,
    target: &str,
    rows: &[&AccountRecord],
    context: &str,
) -> Result<(), StoreError> {
    for chunk in rows.chunks(CHUNK) {
        let n = chunk.len();
        let mut keys = Vec::with_capacity(n);
        let mut remote_ids = Vec::with_capacity(n);
        let mut logins = Vec::with_capacity(n);
        let mut attributes = Vec::with_capacity(n);
        let mut roles = Vec::with_capacity(n);
        let mut hashes = Vec::with_capacity(n);
        let mut enabled = Vec::with_capacity(n);
        let mut owned = Vec::with_capacity(n);
        let mut adopted = Vec::with_capacity(n);
        let mut disabled_at: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
        let mut last_seen_run = Vec::with_capacity(n);
        for row in chunk {
            let a = &row.account;
            keys.push(a.key.as_str());
            remote_ids.push(a.remote_id.as_deref());
            logins.push(a.login.as_deref());
            // Serialising string maps and sets cannot fail.
            attributes.push(serde_json::to_string(&row.state.fields).unwrap_or_default());
            roles.push(super::memberships_json(&row.state));
            hashes.push(a.hash.to_string());
            enabled.push(a.enabled);
            owned.push(a.owned);
            adopted.push(a.adopted);
            disabled_at.push(a.disabled_at);
            last_seen_run.push(row.last_seen_run);
        }
        sqlx::query(UPSERT_ACCOUNTS)
            .bind(target)
            .bind(keys)
            .bind(remote_ids)
            .bind(logins)
            .bind(attributes)
            .bind(roles)
            .bind(hashes)
            .bind(enabled)
            .bind(owned)
            .bind(adopted)
            .bind(disabled_at)
            .bind(last_seen_run)
            .execute(&mut *conn)
            .await
            .map_err(query_error(context))?;
    }
    Ok(())
}

/// Operation outcomes and the account changes they bring, written by one statement: the
/// operations `UPDATE`, the account upsert, the status updates and the deletes as
/// data-modifying CTEs over `UNNEST`ed columns. Each key appears in one list only
/// ([`coalesce`]), so no row is modified twice.
const RECORD_OUTCOMES: &str = concat!(
    r#"
WITH outcomes AS (
    UPDATE operations AS o SET status = u.status, last_error = u.error,
           remote_id = COALESCE(u.remote_id, o.remote_id), updated_at = now()
    FROM UNNEST($2::int8[], $3::text[], $4::text[], $5::text[])
         AS u(id, status, error, remote_id)
    WHERE o.id = u.id
), upserts AS (
    INSERT INTO accounts (target, source_key, remote_id, login, attributes, roles, hash,
                          enabled, owned, adopted, disabled_at, last_seen_run,
                          created_at, updated_at)
    SELECT $1, u.source_key, u.remote_id, u.login, u.attributes::jsonb, u.roles::jsonb, u.hash,
           u.enabled, u.owned, u.adopted, u.disabled_at, u.last_seen_run, now(), now()
    FROM UNNEST($6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
                $12::bool[], $13::bool[], $14::bool[], $15::timestamptz[], $16::int8[])
         AS u(source_key, remote_id, login, attributes, roles, hash,
              enabled, owned, adopted, disabled_at, last_seen_run)
"#,
    upsert_conflict!(),
    r#"), statuses AS (
    UPDATE accounts AS a SET enabled = u.enabled, disabled_at = u.disabled_at,
           updated_at = now()
    FROM UNNEST($17::text[], $18::bool[], $19::timestamptz[])
         AS u(source_key, enabled, disabled_at)
    WHERE a.target = $1 AND a.source_key = u.source_key COLLATE "C"
), deletes AS (
    DELETE FROM accounts WHERE target = $1 AND source_key = ANY($20::text[])
)
SELECT 1
"#
);

/// Deletes account rows of a target inside a transaction, [`CHUNK`] keys per statement.
async fn delete_in(
    conn: &mut PgConnection,
    target: &str,
    keys: &[String],
    context: &str,
) -> Result<(), StoreError> {
    for chunk in keys.chunks(CHUNK) {
        sqlx::query("DELETE FROM accounts WHERE target = $1 AND source_key = ANY($2)")
            .bind(target)
            .bind(chunk)
            .execute(&mut *conn)
            .await
            .map_err(query_error(context))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_removes_password_and_url() {
        let url = Secret::new("postgres://u:s3cr%40t@db.example:5432/x");
        let text = "failed for postgres://u:s3cr%40t@db.example:5432/x and s3cr@t and s3cr%40t";
        let out = redact(&url, text);
        assert!(!out.contains("s3cr"), "{out}");
        let url = Secret::new("postgres://u@db/x?password=qu%3Dery&sslmode=require");
        let out = redact(&url, "echo qu=ery");
        assert_eq!(out, "echo ***");
    }

    #[test]
    fn percent_decode_handles_escapes_and_bad_input() {
        assert_eq!(percent_decode("a%40b").ok().as_deref(), Some("a@b"));
        assert_eq!(percent_decode("a%4").ok().as_deref(), Some("a%4"));
        assert_eq!(percent_decode("%zz").ok().as_deref(), Some("%zz"));
    }

    #[test]
    fn copy_text_fields_decode() {
        let f = |s: &[u8]| copy_text_field(s);
        assert_eq!(f(b"\\N"), Ok(None));
        assert_eq!(f(b""), Ok(Some(String::new())));
        assert_eq!(f(b"plain \xc3\xa9"), Ok(Some("plain \u{e9}".to_owned())));
        assert_eq!(
            f(b"a\\tb\\nc\\\\d\\re\\bf\\fg\\vh"),
            Ok(Some("a\tb\nc\\d\re\u{8}f\u{c}g\u{b}h".to_owned()))
        );
        assert_eq!(f(b"\\101\\x42\\q"), Ok(Some("ABq".to_owned())));
        assert_eq!(f(b"\\NN"), Ok(Some("NN".to_owned())));
        assert!(f(b"trailing\\").is_err());
        assert!(f(b"\xff").is_err());
    }

    #[test]
    fn copy_rows_parse() {
        let row = parse_light_row(b"k\\tey\t\\N\tlogin\th\tt\tf\tt\t1700000000123456", "ctx");
        let Ok(row) = row else {
            panic!("{row:?}");
        };
        assert_eq!(row.key, "k\tey");
        assert_eq!(row.remote_id, None);
        assert_eq!(row.login.as_deref(), Some("login"));
        assert_eq!(row.hash, crate::mapping::ContentHash::default()); // "h" is no content hash
        assert!(row.enabled && !row.owned && row.adopted);
        assert_eq!(
            row.disabled_at.map(|t| t.timestamp_micros()),
            Some(1_700_000_000_123_456)
        );
        let short = parse_light_row(b"k\t\\N", "ctx");
        assert!(
            matches!(short, Err(StoreError::Corrupt { .. })),
            "{short:?}"
        );
        let bad_flag = parse_light_row(b"k\tr\tl\th\tx\tf\tf\t\\N", "ctx");
        assert!(
            matches!(bad_flag, Err(StoreError::Corrupt { .. })),
            "{bad_flag:?}"
        );
    }

    #[tokio::test]
    async fn connect_error_does_not_echo_password() {
        let url = Secret::new("postgres://u:s3cretpw@127.0.0.1:1/db");
        let Err(e) = PgStore::connect(&url, 1).await else {
            panic!("connected to port 1");
        };
        let text = e.to_string();
        assert!(!text.contains("s3cretpw"), "{text}");
        assert!(text.contains("127.0.0.1:1"), "{text}");
    }
}
