//! Row decoding both backends share: a `runs`, `operations` or `accounts` row, read column by
//! column by its backend (which decodes its own timestamp form), checked and turned into the
//! store's row types, with the same errors on both.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::{
    AccountRecord, AccountState, OperationRecord, RecordedAccount, RunRecord, RunStatus,
    StoreError, Trigger,
};

/// A row that does not decode: names the backend, the query and what is wrong.
pub(super) fn corrupt(
    backend: &'static str,
    context: impl Into<String>,
    message: impl Into<String>,
) -> StoreError {
    StoreError::Corrupt {
        backend,
        context: context.into(),
        message: message.into(),
    }
}

/// A column that cannot be read (missing, wrong type) in a query's rows.
pub(super) fn column_error<'c>(
    backend: &'static str,
    context: &'c str,
) -> impl Fn(sqlx::Error) -> StoreError + 'c {
    move |e| StoreError::Query {
        backend,
        context: context.to_owned(),
        source: e,
    }
}

/// A count as stored (`BIGINT` / `INTEGER`): counts beyond `i64::MAX` are stored as the largest.
pub(super) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored count back: a negative one is a corrupt row.
pub(super) fn to_u64(
    backend: &'static str,
    n: i64,
    what: &str,
    context: &str,
) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| corrupt(backend, context, format!("{what} is negative ({n})")))
}

/// The rows to write, the last occurrence of a key winning (one upsert statement may not touch
/// a row twice).
pub(super) fn last_wins(rows: &[AccountRecord]) -> Vec<&AccountRecord> {
    let mut seen: HashSet<&str> = HashSet::with_capacity(rows.len());
    let mut out: Vec<&AccountRecord> = rows
        .iter()
        .rev()
        .filter(|r| seen.insert(r.account.key.as_str()))
        .collect();
    out.reverse();
    out
}

/// The columns of a `runs` row as read; `T` is the backend's timestamp column type.
pub(super) struct RunRow<T> {
    pub id: i64,
    pub trigger: String,
    pub status: String,
    pub started_at: T,
    pub finished_at: Option<T>,
    pub targets: String,
    pub forced: bool,
    pub source_count: Option<i64>,
    pub planned: i64,
    pub applied: i64,
    pub failed: i64,
    pub error: Option<String>,
    pub summary: String,
}

impl<T> RunRow<T> {
    /// The run record; `ts` decodes a timestamp column (its error becomes a corrupt row).
    /// `context` is the query's; errors name the run.
    pub(super) fn decode(
        self,
        backend: &'static str,
        context: &str,
        ts: impl Fn(T) -> Result<DateTime<Utc>, String>,
    ) -> Result<RunRecord, StoreError> {
        let RunRow {
            id,
            trigger,
            status,
            started_at,
            finished_at,
            targets,
            forced,
            source_count,
            planned,
            applied,
            failed,
            error,
            summary,
        } = self;
        let context = format!("{context}: run {id}");
        let corrupt = |message: String| corrupt(backend, &context, message);
        Ok(RunRecord {
            id,
            trigger: Trigger::parse(&trigger)
                .ok_or_else(|| corrupt(format!("unknown trigger {trigger:?}")))?,
            status: RunStatus::parse(&status)
                .ok_or_else(|| corrupt(format!("unknown status {status:?}")))?,
            started_at: ts(started_at).map_err(|e| corrupt(format!("started_at: {e}")))?,
            finished_at: finished_at
                .map(&ts)
                .transpose()
                .map_err(|e| corrupt(format!("finished_at: {e}")))?,
            targets: serde_json::from_str(&targets)
                .map_err(|e| corrupt(format!("targets: {e}")))?,
            forced,
            source_count: source_count
                .map(|n| to_u64(backend, n, "source_count", &context))
                .transpose()?,
            planned: to_u64(backend, planned, "planned", &context)?,
            applied: to_u64(backend, applied, "applied", &context)?,
            failed: to_u64(backend, failed, "failed", &context)?,
            error,
            summary: serde_json::from_str(&summary)
                .map_err(|e| corrupt(format!("summary: {e}")))?,
        })
    }
}

/// The columns of an `operations` row as read (`attempts` already checked by the backend,
/// whose column types differ).
pub(super) struct OperationRow<T> {
    pub id: i64,
    pub run_id: i64,
    pub target: String,
    pub source_key: String,
    pub kind: String,
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub remote_id: Option<String>,
    pub payload: String,
    pub updated_at: T,
}

impl<T> OperationRow<T> {
    /// The operation record; `op_context` names the operation.
    pub(super) fn decode(
        self,
        backend: &'static str,
        op_context: &str,
        ts: impl Fn(T) -> Result<DateTime<Utc>, String>,
    ) -> Result<OperationRecord, StoreError> {
        Ok(OperationRecord {
            id: self.id,
            run_id: self.run_id,
            target: self.target,
            source_key: self.source_key,
            kind: self.kind,
            status: self.status,
            attempts: self.attempts,
            last_error: self.last_error,
            remote_id: self.remote_id,
            payload: serde_json::from_str(&self.payload)
                .map_err(|e| corrupt(backend, op_context, format!("payload: {e}")))?,
            updated_at: ts(self.updated_at)
                .map_err(|e| corrupt(backend, op_context, format!("updated_at: {e}")))?,
        })
    }
}

/// The columns of a full `accounts` row as read (light columns, `attributes`, `roles`,
/// `last_seen_run`).
pub(super) struct AccountRow<T> {
    pub key: String,
    pub remote_id: Option<String>,
    pub login: Option<String>,
    pub hash: String,
    pub enabled: bool,
    pub owned: bool,
    pub adopted: bool,
    pub disabled_at: Option<T>,
    pub attributes: String,
    pub roles: String,
    pub last_seen_run: Option<i64>,
}

impl<T> AccountRow<T> {
    /// The account record; errors name the key.
    pub(super) fn decode(
        self,
        backend: &'static str,
        context: &str,
        ts: impl Fn(T) -> Result<DateTime<Utc>, String>,
    ) -> Result<AccountRecord, StoreError> {
        let key = self.key;
        let fields = serde_json::from_str(&self.attributes)
            .map_err(|e| corrupt(backend, context, format!("key {key:?}: attributes: {e}")))?;
        let (roles, groups) = super::parse_memberships(&self.roles)
            .map_err(|e| corrupt(backend, context, format!("key {key:?}: roles: {e}")))?;
        let disabled_at = self
            .disabled_at
            .map(ts)
            .transpose()
            .map_err(|e| corrupt(backend, context, format!("key {key:?}: disabled_at: {e}")))?;
        Ok(AccountRecord {
            account: RecordedAccount {
                remote_id: self.remote_id,
                login: self.login,
                hash: crate::mapping::ContentHash::parse_lenient(&self.hash),
                enabled: self.enabled,
                owned: self.owned,
                adopted: self.adopted,
                disabled_at,
                key,
            },
            state: AccountState {
                fields,
                roles,
                groups,
            },
            last_seen_run: self.last_seen_run,
        })
    }
}
