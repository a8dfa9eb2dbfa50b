//! The state store: what dirsync has applied (`accounts`), its run history (`runs`) and the
//! operation journal (`operations`), behind one [`Store`] trait with Postgres and SQLite backends.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::mapping::{AccountState, RecordedAccount};
use crate::secret::Secret;

pub mod bounded;
pub mod postgres;
mod rows;
pub mod sqlite;

/// Errors of the state store. Messages name the backend and the operation, never the URL's
/// password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store ({backend}): cannot connect: {message}")]
    Connect {
        backend: &'static str,
        message: String,
    },
    #[error("state store ({backend}): migration failed: {message}")]
    Migrate {
        backend: &'static str,
        message: String,
    },
    #[error("state store ({backend}): {context}: {source}")]
    Query {
        backend: &'static str,
        context: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("state store ({backend}): {context}: did not answer within {}", humantime::format_duration(*after))]
    Timeout {
        backend: &'static str,
        context: String,
        after: std::time::Duration,
    },
    #[error("state store ({backend}): run lease file {path}: {message}")]
    Lease {
        backend: &'static str,
        path: String,
        message: String,
    },
    #[error("state store ({backend}): {context}: corrupt row: {message}")]
    Corrupt {
        backend: &'static str,
        context: String,
        message: String,
    },
}

/// The `roles` column's JSON: an array of roles, or `{"roles": [...], "groups": [...]}` when the
/// account also has target-side groups (so rows of targets without groups keep the plain form).
pub fn memberships_json(state: &AccountState) -> String {
    // Serialising string sets cannot fail.
    if state.groups.is_empty() {
        serde_json::to_string(&state.roles).unwrap_or_else(|_| "[]".into())
    } else {
        serde_json::to_string(&serde_json::json!({"roles": state.roles, "groups": state.groups}))
            .unwrap_or_else(|_| "[]".into())
    }
}

/// Reads the `roles` column (either form of [`memberships_json`]): (roles, groups).
pub fn parse_memberships(
    text: &str,
) -> Result<(BTreeSet<String>, BTreeSet<String>), serde_json::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Memberships {
        Roles(BTreeSet<String>),
        Both {
            roles: BTreeSet<String>,
            #[serde(default)]
            groups: BTreeSet<String>,
        },
    }
    Ok(match serde_json::from_str(text)? {
        Memberships::Roles(r) => (r, BTreeSet::new()),
        Memberships::Both { roles, groups } => (roles, groups),
    })
}

/// A full account row, as written after an operation was applied (or adopted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    pub account: RecordedAccount,
    pub state: AccountState,
    pub last_seen_run: Option<i64>,
}

/// What [`Store::prune_runs`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneSummary {
    /// Runs deleted.
    pub runs: u64,
    /// Their journal rows (`operations`) deleted with them.
    pub operations: u64,
}

/// Which runs [`Store::prune_runs`] may delete, the same text on both backends (the cut-off
/// is bound as parameter 1): finished (an interrupted run without an end time counts from its
/// start) before the cut-off, not `running`, without a `pending` or `sent` operation (crash
/// reconciliation reads them), and not the run [`Store::last_good_source_count`] reads.
pub(crate) const PRUNABLE_RUNS: &str = "\
SELECT r.id FROM runs r \
WHERE r.status <> 'running' \
  AND COALESCE(r.finished_at, r.started_at) < $1 \
  AND NOT EXISTS (SELECT 1 FROM operations o \
                  WHERE o.run_id = r.id AND o.status IN ('pending', 'sent')) \
  AND r.id <> COALESCE((SELECT g.id FROM runs g \
                        WHERE g.trigger <> 'dry_run' AND g.status IN ('succeeded', 'partial') \
                          AND g.source_count IS NOT NULL \
                        ORDER BY g.id DESC LIMIT 1), -1) \
ORDER BY r.id";

/// The cut-off of a retention of `keep` at `now`: runs that finished before it are pruned.
/// Never earlier than 1970 (a retention too long to subtract keeps everything).
pub fn prune_before(now: DateTime<Utc>, keep: std::time::Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(keep)
        .ok()
        .and_then(|keep| now.checked_sub_signed(keep))
        .filter(|t| *t > DateTime::UNIX_EPOCH)
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Schedule,
    Manual,
    #[value(name = "dry_run", alias = "dry-run")]
    DryRun,
    /// `dirsync apply FILE`: a saved plan applied.
    Apply,
    /// `dirsync sync --user KEY`: one user's operations.
    User,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::DryRun => "dry_run",
            Trigger::Apply => "apply",
            Trigger::User => "user",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "schedule" => Trigger::Schedule,
            "manual" => Trigger::Manual,
            "dry_run" => Trigger::DryRun,
            "apply" => Trigger::Apply,
            "user" => Trigger::User,
            _ => return None,
        })
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Partial,
    Failed,
    Blocked,
    /// Stopped before it finished: a shutdown (SIGTERM) during the run, or a process that died
    /// while the run was `running` (found at the next start, its lock no longer held).
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
            RunStatus::Blocked => "blocked",
            RunStatus::Interrupted => "interrupted",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "partial" => RunStatus::Partial,
            "failed" => RunStatus::Failed,
            "blocked" => RunStatus::Blocked,
            "interrupted" => RunStatus::Interrupted,
            _ => return None,
        })
    }
}

/// A run being started.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub trigger: Trigger,
    pub started_at: DateTime<Utc>,
    /// Names of the targets this run covers.
    pub targets: Vec<String>,
    pub forced: bool,
}

/// How a run finished.
#[derive(Debug, Clone)]
pub struct RunFinish {
    pub status: RunStatus,
    pub finished_at: DateTime<Utc>,
    /// Users the source returned (None when the source failed).
    pub source_count: Option<u64>,
    pub planned: u64,
    pub applied: u64,
    pub failed: u64,
    pub error: Option<String>,
    /// Per-target summary (the report's summary objects), kept as JSON.
    pub summary: serde_json::Value,
}

/// A run as the history shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub trigger: Trigger,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub targets: Vec<String>,
    pub forced: bool,
    pub source_count: Option<u64>,
    pub planned: u64,
    pub applied: u64,
    pub failed: u64,
    pub error: Option<String>,
    pub summary: serde_json::Value,
}

/// Which runs `dirsync runs` lists: newest first, at most `limit`, of these triggers and
/// statuses (empty: any), started at or after `since`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub limit: u32,
    pub triggers: Vec<Trigger>,
    pub statuses: Vec<RunStatus>,
    pub since: Option<DateTime<Utc>>,
}

impl RunFilter {
    /// The newest `limit` runs, any trigger and status.
    pub fn newest(limit: u32) -> RunFilter {
        RunFilter {
            limit,
            ..RunFilter::default()
        }
    }

    /// The triggers as stored, as one JSON array (`[]`: any).
    pub fn triggers_json(&self) -> String {
        let v: Vec<&str> = self.triggers.iter().map(|t| t.as_str()).collect();
        serde_json::Value::from(v).to_string()
    }

    /// The statuses as stored, as one JSON array (`[]`: any).
    pub fn statuses_json(&self) -> String {
        let v: Vec<&str> = self.statuses.iter().map(|s| s.as_str()).collect();
        serde_json::Value::from(v).to_string()
    }
}

/// One journaled operation as `runs show` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct OperationRecord {
    pub id: i64,
    pub run_id: i64,
    pub target: String,
    pub source_key: String,
    pub kind: String,
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub remote_id: Option<String>,
    pub payload: serde_json::Value,
    pub updated_at: DateTime<Utc>,
}

/// An operation to journal (as `pending`).
#[derive(Debug, Clone)]
pub struct NewOperation {
    pub source_key: String,
    /// `create`, `update`, `set_roles`, `enable`, `disable`, `delete`.
    pub kind: String,
    /// What is needed to reconcile it after a crash (the desired account, the change), as
    /// JSON text: serialised once, straight from the plan, and written as it is.
    pub payload: Box<serde_json::value::RawValue>,
}

/// A journal status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpStatus {
    Pending,
    Sent,
    Succeeded,
    Failed,
    Skipped,
}

impl OpStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OpStatus::Pending => "pending",
            OpStatus::Sent => "sent",
            OpStatus::Succeeded => "succeeded",
            OpStatus::Failed => "failed",
            OpStatus::Skipped => "skipped",
        }
    }
}

/// The outcome of one journaled operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpOutcome {
    pub id: i64,
    pub status: OpStatus,
    /// The error (failed), the reason (skipped) or a note (a partial success).
    pub error: Option<String>,
    /// The account's id at the target, when the operation learned it.
    pub remote_id: Option<String>,
}

/// A change to an account row that an operation's outcome brings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountChange {
    Upsert(AccountRecord),
    SetEnabled {
        key: String,
        enabled: bool,
        disabled_at: Option<DateTime<Utc>>,
    },
    Delete {
        key: String,
    },
}

impl AccountChange {
    pub fn key(&self) -> &str {
        match self {
            AccountChange::Upsert(r) => &r.account.key,
            AccountChange::SetEnabled { key, .. } | AccountChange::Delete { key } => key,
        }
    }
}

/// Account changes folded per key in order, so that each key is written once per statement
/// (Postgres refuses to upsert the same row twice in one `INSERT ... ON CONFLICT`). Borrowed from
/// the changes: folding clones no record.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CoalescedChanges<'a> {
    pub upserts: Vec<CoalescedUpsert<'a>>,
    /// (key, enabled, disabled_at)
    pub set_enabled: Vec<(&'a str, bool, Option<DateTime<Utc>>)>,
    pub deletes: Vec<&'a str>,
}

/// A record to upsert, with the status a later change of the same batch gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalescedUpsert<'a> {
    pub record: &'a AccountRecord,
    /// (enabled, disabled_at) replacing the record's own, from a later `SetEnabled`.
    pub status: Option<(bool, Option<DateTime<Utc>>)>,
}

impl CoalescedUpsert<'_> {
    pub fn enabled(&self) -> bool {
        self.status.map_or(self.record.account.enabled, |(e, _)| e)
    }
    pub fn disabled_at(&self) -> Option<DateTime<Utc>> {
        self.status
            .map_or(self.record.account.disabled_at, |(_, d)| d)
    }
}

/// Folds a sequence of changes into the last effect per key (an upsert followed by a status
/// change is one upsert with that status), keys in order of first appearance.
pub fn coalesce(changes: &[AccountChange]) -> CoalescedChanges<'_> {
    enum Effect<'a> {
        Upsert(CoalescedUpsert<'a>),
        SetEnabled(bool, Option<DateTime<Utc>>),
        Delete,
    }
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(changes.len());
    let mut effects: Vec<(&str, Effect<'_>)> = Vec::with_capacity(changes.len());
    for c in changes {
        let key = c.key();
        let slot = index.get(key).copied();
        let effect = match (slot.map(|i| &effects[i].1), c) {
            (
                Some(Effect::Upsert(u)),
                AccountChange::SetEnabled {
                    enabled,
                    disabled_at,
                    ..
                },
            ) => Effect::Upsert(CoalescedUpsert {
                record: u.record,
                status: Some((*enabled, *disabled_at)),
            }),
            (_, AccountChange::Upsert(record)) => Effect::Upsert(CoalescedUpsert {
                record,
                status: None,
            }),
            (
                _,
                AccountChange::SetEnabled {
                    enabled,
                    disabled_at,
                    ..
                },
            ) => Effect::SetEnabled(*enabled, *disabled_at),
            (_, AccountChange::Delete { .. }) => Effect::Delete,
        };
        match slot {
            Some(i) => effects[i].1 = effect,
            None => {
                index.insert(key, effects.len());
                effects.push((key, effect));
            }
        }
    }
    let mut out = CoalescedChanges::default();
    for (key, effect) in effects {
        match effect {
            Effect::Upsert(u) => out.upserts.push(u),
            Effect::SetEnabled(enabled, disabled_at) => {
                out.set_enabled.push((key, enabled, disabled_at));
            }
            Effect::Delete => out.deletes.push(key),
        }
    }
    out
}

/// A held per-target lock: while it is held, no other dirsync instance applies the target.
/// Released by [`TargetLock::release`]; if the process dies, Postgres ends the session (and
/// its advisory lock) and a SQLite lease expires.
#[async_trait::async_trait]
pub trait TargetLock: Send + Sync {
    async fn release(self: Box<Self>) -> Result<(), StoreError>;
}

/// How long a SQLite lock lease lasts without renewal (renewed every third of it).
pub const LOCK_LEASE: std::time::Duration = std::time::Duration::from_secs(60);

/// The state store. Every method is one or a few statements: bulk paths use multi-row
/// statements (`UNNEST` on Postgres, batched `VALUES` or a `json_each` array on SQLite), never a
/// round trip per row.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// `"postgres"` or `"sqlite"`.
    fn backend(&self) -> &'static str;
    /// Applies pending migrations of this backend.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// All recorded accounts of a target, light form, sorted by key (byte order).
    async fn load_accounts(&self, target: &str) -> Result<Vec<RecordedAccount>, StoreError>;
    /// The applied attributes of the given accounts of a target (missing keys are absent).
    async fn load_account_states(
        &self,
        target: &str,
        keys: &[String],
    ) -> Result<HashMap<String, AccountState>, StoreError>;
    /// Inserts or replaces account rows of a target, in batches, in one transaction.
    async fn upsert_accounts(&self, target: &str, rows: &[AccountRecord])
    -> Result<(), StoreError>;
    /// Removes account rows of a target (after a delete took effect), in one transaction.
    async fn delete_accounts(&self, target: &str, keys: &[String]) -> Result<(), StoreError>;
    /// Source user count of the last run that applied changes and ended succeeded or partial
    /// (dry runs and blocked runs are not a baseline).
    async fn last_good_source_count(&self) -> Result<Option<u64>, StoreError>;
    /// Deletes the runs that finished before `before` with their journal rows, in one
    /// transaction, except those [`PRUNABLE_RUNS`] keeps. Never touches `accounts`. SQLite then
    /// runs `PRAGMA incremental_vacuum` when the database has auto-vacuum on.
    async fn prune_runs(&self, before: DateTime<Utc>) -> Result<PruneSummary, StoreError>;
    /// Records a run as `running`; returns its id. The run's lease is taken before the row is
    /// visible to anyone else and held until [`Store::finish_run`] (or until the process ends):
    /// Postgres, a session advisory lock on a connection of its own; SQLite, an open file
    /// description lock on the run's byte of `<database>-runs.lock`.
    async fn begin_run(&self, run: &NewRun) -> Result<i64, StoreError>;
    /// Records how a run ended, then releases its lease.
    async fn finish_run(&self, id: i64, finish: &RunFinish) -> Result<(), StoreError>;
    /// Marks `interrupted` every `running` run whose lease nobody holds: the process running it
    /// is gone (killed, crashed, or the machine rebooted). A run whose lease is held (a live
    /// run of this or another instance) is never touched. Returns the runs marked.
    async fn interrupt_abandoned_runs(&self) -> Result<Vec<i64>, StoreError>;
    /// The most recent runs, newest first.
    async fn list_runs(&self, limit: u32) -> Result<Vec<RunRecord>, StoreError>;
    /// The runs `filter` selects, newest first (one query).
    async fn find_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError>;
    async fn get_run(&self, id: i64) -> Result<Option<RunRecord>, StoreError>;
    /// Journaled operations of a run, in journal order.
    async fn run_operations(&self, run_id: i64) -> Result<Vec<OperationRecord>, StoreError>;

    /// Full rows (with applied attributes) of the given accounts of a target.
    async fn load_account_records(
        &self,
        target: &str,
        keys: &[String],
    ) -> Result<Vec<AccountRecord>, StoreError> {
        let _ = (target, keys);
        Err(self.pending_impl("load_account_records"))
    }
    /// Journals operations as `pending`, in one transaction; returns their ids in input order.
    async fn journal(
        &self,
        run_id: i64,
        target: &str,
        ops: &[NewOperation],
    ) -> Result<Vec<i64>, StoreError> {
        let _ = (run_id, target, ops);
        Err(self.pending_impl("journal"))
    }
    /// Marks operations `sent` (and counts the attempt), just before their requests go out.
    async fn mark_sent(&self, ids: &[i64]) -> Result<(), StoreError> {
        let _ = ids;
        Err(self.pending_impl("mark_sent"))
    }
    /// Records operation outcomes and the account changes they bring, in one transaction.
    async fn record_outcomes(
        &self,
        target: &str,
        outcomes: &[OpOutcome],
        changes: &[AccountChange],
    ) -> Result<(), StoreError> {
        let _ = (target, outcomes, changes);
        Err(self.pending_impl("record_outcomes"))
    }
    /// Takes the target's leader lock if no other instance holds it. `holder` names this
    /// instance (host and pid) for the other instances' logs.
    async fn try_lock_target(
        &self,
        target: &str,
        holder: &str,
    ) -> Result<Option<Box<dyn TargetLock>>, StoreError>;
    /// Operations of a target left `pending` or `sent` (by a run that was interrupted), oldest
    /// first.
    async fn unfinished_operations(
        &self,
        target: &str,
    ) -> Result<Vec<OperationRecord>, StoreError> {
        let _ = target;
        Err(self.pending_impl("unfinished_operations"))
    }

    /// The newest journaled operation id of a target (0 when none). It grows whenever an
    /// operation is journaled for the target; with the account rows it is the state a saved
    /// plan is checked against (`dirsync apply`).
    async fn state_version(&self, target: &str) -> Result<i64, StoreError>;

    #[doc(hidden)]
    fn pending_impl(&self, what: &str) -> StoreError {
        StoreError::Corrupt {
            backend: self.backend(),
            context: what.to_string(),
            message: "not implemented".into(),
        }
    }
}

/// The `error` recorded on a run found abandoned.
pub fn abandoned_run_error(found_at: DateTime<Utc>) -> String {
    format!(
        "the process running it ended before recording its end (killed, crashed or the machine \
         stopped); found at {} and marked interrupted",
        found_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

/// [`Store::interrupt_abandoned_runs`] for a command starting up: each run found is logged; a
/// failure is only a warning (the command goes on, the runs stay `running` until next time).
pub async fn interrupt_abandoned_runs(store: &dyn Store) {
    match store.interrupt_abandoned_runs().await {
        Ok(ids) => {
            for run_id in ids {
                tracing::warn!(
                    run_id,
                    "run {run_id} was left `running` by a process that is gone; marked interrupted \
                     (its unfinished operations are reconciled by the next sync of its targets)"
                );
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not look for runs left `running` by a process that is gone");
        }
    }
}

/// Where the state lives, resolved from `[state]`.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    Postgres {
        url: Secret,
        max_connections: u32,
        /// Every store call must be answered within this (`state.timeout`).
        timeout: std::time::Duration,
    },
    Sqlite {
        path: std::path::PathBuf,
    },
}

impl StoreLocation {
    /// What reports, `runs` and `check` print as the store used: the SQLite file, or the
    /// Postgres host, port and database (never the user's password or the URL's query).
    pub fn describe(&self) -> String {
        match self {
            StoreLocation::Sqlite { path } => format!("sqlite {}", path.display()),
            StoreLocation::Postgres { url, .. } => match url::Url::parse(url.expose()) {
                Ok(u) => {
                    let host = u.host_str().unwrap_or("localhost");
                    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
                    let db = u.path().trim_start_matches('/');
                    let user = if u.username().is_empty() {
                        String::new()
                    } else {
                        format!("{}@", u.username())
                    };
                    format!("postgres {user}{host}{port}/{db}")
                }
                Err(_) => "postgres (state.database_url)".into(),
            },
        }
    }
}

/// Opens (and, if asked, migrates) the configured store.
pub async fn open(location: &StoreLocation, migrate: bool) -> Result<Box<dyn Store>, StoreError> {
    let store: Box<dyn Store> = match location {
        StoreLocation::Postgres {
            url,
            max_connections,
            timeout,
        } => Box::new(bounded::Bounded::new(
            postgres::PgStore::connect(url, *max_connections).await?,
            *timeout,
        )),
        StoreLocation::Sqlite { path } => {
            // Never a silent new database elsewhere: the directory must exist.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
                && !dir.is_dir()
            {
                return Err(StoreError::Connect {
                    backend: "sqlite",
                    message: format!(
                        "state.path {}: directory {} does not exist (create it, or set \
                         [state] path)",
                        path.display(),
                        dir.display()
                    ),
                });
            }
            Box::new(sqlite::SqliteStore::open(path).await?)
        }
    };
    if migrate {
        store.migrate().await?;
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn memberships_round_trip_in_both_forms() {
        let roles: BTreeSet<String> = ["A".to_string(), "B".to_string()].into();
        let plain = AccountState {
            fields: BTreeMap::new(),
            roles: roles.clone(),
            groups: BTreeSet::new(),
        };
        // Without groups the column keeps the plain array form.
        assert_eq!(memberships_json(&plain), r#"["A","B"]"#);
        assert_eq!(
            parse_memberships(&memberships_json(&plain)).unwrap(),
            (roles.clone(), BTreeSet::new())
        );
        let with = AccountState {
            groups: ["G".to_string()].into(),
            ..plain
        };
        assert_eq!(
            parse_memberships(&memberships_json(&with)).unwrap(),
            (roles, ["G".to_string()].into())
        );
        assert!(parse_memberships("{\"nope\": 1}").is_err());
        assert!(parse_memberships("not json").is_err());
    }

    #[test]
    fn prune_before_subtracts_and_never_goes_before_1970() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let day = std::time::Duration::from_secs(86_400);
        assert_eq!(
            prune_before(now, 90 * day),
            now - chrono::TimeDelta::days(90)
        );
        assert_eq!(prune_before(now, 30_000 * day), DateTime::UNIX_EPOCH);
        assert_eq!(
            prune_before(now, std::time::Duration::MAX),
            DateTime::UNIX_EPOCH
        );
    }

    #[test]
    fn coalesce_folds_changes_per_key() {
        let rec = |key: &str| AccountRecord {
            account: RecordedAccount {
                key: key.into(),
                remote_id: Some("r".into()),
                login: None,
                hash: Default::default(),
                enabled: true,
                owned: true,
                adopted: false,
                disabled_at: None,
            },
            state: AccountState::default(),
            last_seen_run: None,
        };
        let changes = [
            AccountChange::Upsert(rec("a")),
            AccountChange::SetEnabled {
                key: "a".into(),
                enabled: false,
                disabled_at: None,
            },
            AccountChange::SetEnabled {
                key: "b".into(),
                enabled: true,
                disabled_at: None,
            },
            AccountChange::Delete { key: "c".into() },
        ];
        let c = coalesce(&changes);
        assert_eq!(c.upserts.len(), 1);
        assert!(!c.upserts[0].enabled());
        assert_eq!(c.upserts[0].disabled_at(), None);
        assert_eq!(c.upserts[0].record.account.key, "a");
        assert_eq!(c.set_enabled, vec![("b", true, None)]);
        assert_eq!(c.deletes, vec!["c"]);
    }
}
