//! The apply engine: journals a target's allowed plan, sends it through the target's
//! `Connector` (batched, concurrent), and records each outcome together with the account row it
//! changes. Also reconciles operations a crashed run left `pending` or `sent`.
//!
//! Protocol, per operation: inserted `pending` (all of a plan at once, before anything is sent)
//! → marked `sent` (in windows, just before the requests go out) → `succeeded` / `failed` with
//! the account change in the same transaction. A crash leaves `sent` rows: [`recover`] asks the
//! target whether creates took effect before anything is planned again; every other operation is
//! idempotent and simply re-planned.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::config::TargetConfig;
use crate::mapping::{Account, content_hash};
use crate::plan::{Op, PlannedOp, TargetPlan};
use crate::store::{
    AccountChange, AccountRecord, AccountState, NewOperation, OpOutcome, OpStatus, RecordedAccount,
    Store, StoreError,
};
use crate::target::{Connector, OpError, StatusAction, StatusItem};

/// Outcomes are written at least this often while a target is being applied.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(50);
/// ... or as soon as this many are waiting. One write is in flight at a time: while it runs,
/// the next batch gathers (up to this many, then the workers wait), so a batch grows to what
/// the store absorbs — about 160 outcomes per write at 3,200 operations a second, this many when
/// the store is the slower side (bulk status calls: 500 outcomes per call).
pub const FLUSH_MAX: usize = 8192;
/// A window marked `sent` at once holds at most `4 × concurrency` units and at most this many
/// operations (a bulk unit holds hundreds), so the first requests go out after the first
/// window, not after the whole plan is marked.
const WINDOW_OPS: usize = 4096;

/// Errors that stop applying a target (individual operation failures do not: they are recorded
/// and counted).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "target {target:?}: cannot reconcile {count} operation(s) left unfinished by an earlier \
         run: {message}; nothing was sent"
    )]
    Reconcile {
        target: String,
        count: usize,
        message: String,
    },
}

/// One failed operation, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub key: String,
    pub op: &'static str,
    pub error: String,
}

/// Outcomes of one kind of operation.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct KindCounts {
    pub succeeded: u64,
    pub failed: u64,
    pub skipped: u64,
}

/// What applying one target did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplySummary {
    /// Outcomes per operation kind (`create`, `update`, ...).
    pub by_kind: std::collections::BTreeMap<String, KindCounts>,
    /// Operations left `pending` because a shutdown was requested (the next run does them).
    pub interrupted: u64,
    pub applied: u64,
    pub failed: u64,
    /// Operations not sent because an earlier operation of the same account failed.
    pub skipped: u64,
    pub failures: Vec<Failure>,
    /// Partial successes and other remarks the target made (e.g. "created, but ...").
    pub notes: Vec<Failure>,
}

/// What [`recover`] found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecoverySummary {
    /// `pending` operations of earlier runs, never sent: marked skipped (the new plan redoes them).
    pub superseded: u64,
    /// `sent` creates the target has: recorded as succeeded (the account is owned).
    pub confirmed: u64,
    /// `sent` operations that did not take effect or cannot be known: failed, re-planned.
    pub replanned: u64,
}

/// The payload journaled with an operation: enough to reconcile it after a crash.
#[derive(Debug, Serialize, serde::Deserialize)]
struct Payload {
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<Account>,
    #[serde(skip_serializing_if = "Option::is_none")]
    op: Option<serde_json::Value>,
}

/// [`Payload`] as written: borrowed, so that journaling a plan clones no account.
#[derive(Serialize)]
struct PayloadRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<&'a Account>,
    op: &'a Op,
}

fn payload(op: &PlannedOp) -> Box<serde_json::value::RawValue> {
    let account = match &op.op {
        Op::Create { account }
        | Op::Update { account, .. }
        | Op::SetRoles { account, .. }
        | Op::SetGroups { account, .. } => Some(account),
        _ => None,
    };
    let p = PayloadRef {
        label: op.label.as_deref(),
        remote_id: op.remote_id.as_deref(),
        account,
        op: &op.op,
    };
    // Serialising the plan's strings, maps and sets cannot fail; `null` if it ever did.
    serde_json::value::to_raw_value(&p)
        .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned())
}

fn error_text(e: &OpError) -> String {
    e.to_string()
}

/// Reconciles operations that an earlier run of this target left `pending` or `sent`.
/// Must run before the target is planned, so that a create that took effect is recorded and
/// not sent twice. If the target cannot be asked, nothing is changed and the run must stop.
pub async fn recover(
    store: &dyn Store,
    connector: &dyn Connector,
    target: &TargetConfig,
    run_id: i64,
) -> Result<RecoverySummary, EngineError> {
    let unfinished = store.unfinished_operations(&target.name).await?;
    let mut summary = RecoverySummary::default();
    if unfinished.is_empty() {
        return Ok(summary);
    }
    info!(run_id, target = %target.name, count = unfinished.len(), "reconciling unfinished operations");
    let mut outcomes = Vec::new();
    let mut changes = Vec::new();
    let deadline = connector
        .capabilities()
        .settle_time
        .map(|t| std::time::Instant::now() + t);
    for op in &unfinished {
        if op.status == "pending" {
            summary.superseded += 1;
            outcomes.push(OpOutcome {
                id: op.id,
                status: OpStatus::Skipped,
                error: Some("not sent before the run stopped; re-planned".into()),
                remote_id: None,
            });
            continue;
        }
        let p: Option<Payload> = serde_json::from_value(op.payload.clone()).ok();
        let account = p.as_ref().and_then(|p| p.account.clone());
        match (op.kind.as_str(), account) {
            ("create", Some(account)) => {
                let login = account
                    .fields
                    .get(&target.mapping.login_field)
                    .cloned()
                    .unwrap_or_default();
                let found = find_settled(connector, &login, deadline)
                    .await
                    .map_err(|e| EngineError::Reconcile {
                        target: target.name.clone(),
                        count: unfinished.len(),
                        message: format!("looking up {login:?}: {e}"),
                    })?;
                match found {
                    Some(remote) => {
                        summary.confirmed += 1;
                        debug!(run_id, target = %target.name, key = %op.source_key, "create took effect before the interruption");
                        changes.push(AccountChange::Upsert(created_record(
                            &account,
                            remote.remote_id.clone(),
                            &target.mapping.login_field,
                            run_id,
                        )));
                        outcomes.push(OpOutcome {
                            id: op.id,
                            status: OpStatus::Succeeded,
                            error: Some(
                                "reconciled after an interruption: the target has the account"
                                    .into(),
                            ),
                            remote_id: Some(remote.remote_id),
                        });
                    }
                    None => {
                        summary.replanned += 1;
                        outcomes.push(OpOutcome {
                            id: op.id,
                            status: OpStatus::Failed,
                            error: Some(
                                "interrupted before the target created the account; re-planned"
                                    .into(),
                            ),
                            remote_id: None,
                        });
                    }
                }
            }
            _ => {
                // Updates, role changes, enable/disable/delete are idempotent: the account row
                // was not changed, so the next plan sends them again if still needed.
                summary.replanned += 1;
                outcomes.push(OpOutcome {
                    id: op.id,
                    status: OpStatus::Failed,
                    error: Some("interrupted with an unknown outcome; re-planned".into()),
                    remote_id: None,
                });
            }
        }
    }
    store
        .record_outcomes(&target.name, &outcomes, &changes)
        .await?;
    Ok(summary)
}

/// Looks an account up; on targets whose changes settle later (jobs), keeps looking until the
/// deadline (one for the whole reconciliation: the start plus the settle time), so that a
/// create still in progress is not sent a second time.
async fn find_settled(
    connector: &dyn Connector,
    login: &str,
    deadline: Option<std::time::Instant>,
) -> Result<Option<crate::target::RemoteAccount>, OpError> {
    let mut delay = std::time::Duration::from_millis(250);
    loop {
        if let Some(found) = connector.find_account(login).await? {
            return Ok(Some(found));
        }
        match deadline {
            Some(d) if std::time::Instant::now() < d => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                tokio::time::sleep(delay.min(left)).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
            _ => return Ok(None),
        }
    }
}

fn created_record(
    account: &Account,
    remote_id: String,
    login_field: &str,
    run_id: i64,
) -> AccountRecord {
    AccountRecord {
        account: RecordedAccount {
            key: account.key.clone(),
            remote_id: Some(remote_id),
            login: account.fields.get(login_field).cloned(),
            hash: account.hash,
            enabled: true,
            owned: true,
            adopted: false,
            disabled_at: None,
        },
        state: AccountState {
            fields: account.fields.clone(),
            roles: account.roles.clone(),
            groups: account.groups.clone(),
        },
        last_seen_run: Some(run_id),
    }
}

/// A unit of work the pipeline runs: the operations of one account in order, or a bulk call.
#[derive(Clone)]
enum Work {
    /// Indexes into the plan's ops, all of one account, in plan order.
    Chain(Vec<usize>),
    /// One bulk status call.
    Status(StatusAction, Vec<usize>),
    /// One bulk create call.
    CreateMany(Vec<usize>),
}

impl Work {
    fn ops(&self) -> &[usize] {
        match self {
            Work::Chain(v) | Work::Status(_, v) | Work::CreateMany(v) => v,
        }
    }
}

/// The result of one unit of work: outcomes and account changes to record atomically.
#[derive(Default)]
struct Done {
    outcomes: Vec<OpOutcome>,
    changes: Vec<AccountChange>,
    failures: Vec<Failure>,
    notes: Vec<Failure>,
    applied: u64,
    skipped: u64,
    kinds: Vec<(&'static str, OpStatus)>,
}

struct Ctx<'a> {
    plan: &'a TargetPlan,
    ids: &'a [i64],
    target: &'a TargetConfig,
    connector: &'a dyn Connector,
    records: &'a HashMap<String, AccountRecord>,
    run_id: i64,
    now: DateTime<Utc>,
}

impl Ctx<'_> {
    fn ok(&self, d: &mut Done, i: usize, remote_id: Option<String>, note: Option<String>) {
        d.applied += 1;
        d.kinds
            .push((self.plan.ops[i].op.kind(), OpStatus::Succeeded));
        if let Some(n) = &note {
            d.notes.push(Failure {
                key: self.plan.ops[i].key.clone(),
                op: self.plan.ops[i].op.kind(),
                error: n.clone(),
            });
        }
        d.outcomes.push(OpOutcome {
            id: self.ids[i],
            status: OpStatus::Succeeded,
            error: note,
            remote_id,
        });
    }

    fn fail(&self, d: &mut Done, i: usize, e: &OpError) {
        let op = &self.plan.ops[i];
        d.kinds.push((op.op.kind(), OpStatus::Failed));
        let text = error_text(e);
        warn!(run_id = self.run_id, target = %self.target.name, op = op.op.kind(), key = %op.key, error = %text, "operation failed");
        d.failures.push(Failure {
            key: op.key.clone(),
            op: op.op.kind(),
            error: text.clone(),
        });
        d.outcomes.push(OpOutcome {
            id: self.ids[i],
            status: OpStatus::Failed,
            error: Some(text),
            remote_id: None,
        });
    }

    /// A create whose outcome is unknown (the request failed and the look-up did not find the
    /// account, but the target may still be finishing it): reported as failed, and its journal
    /// row stays `sent`, so the next run looks it up again before planning instead of sending
    /// it twice.
    fn unknown(&self, d: &mut Done, i: usize, e: &OpError) {
        let op = &self.plan.ops[i];
        d.kinds.push((op.op.kind(), OpStatus::Failed));
        let text = format!(
            "{}; outcome unknown: looked up again by the next run",
            error_text(e)
        );
        warn!(run_id = self.run_id, target = %self.target.name, op = op.op.kind(), key = %op.key, error = %text, "create outcome unknown");
        d.failures.push(Failure {
            key: op.key.clone(),
            op: op.op.kind(),
            error: text.clone(),
        });
        d.outcomes.push(OpOutcome {
            id: self.ids[i],
            status: OpStatus::Sent,
            error: Some(text),
            remote_id: None,
        });
    }

    fn skip(&self, d: &mut Done, i: usize, why: &str) {
        d.skipped += 1;
        d.kinds
            .push((self.plan.ops[i].op.kind(), OpStatus::Skipped));
        d.outcomes.push(OpOutcome {
            id: self.ids[i],
            status: OpStatus::Skipped,
            error: Some(why.to_string()),
            remote_id: None,
        });
    }

    /// A create that hit an existing account: remembered as a not-owned account so that later
    /// runs report it (and `dirsync adopt` can take it over) instead of creating again.
    fn conflict_record(&self, account: &Account) -> AccountChange {
        let mut rec = created_record(
            account,
            String::new(),
            &self.target.mapping.login_field,
            self.run_id,
        );
        rec.account.remote_id = None;
        rec.account.owned = false;
        AccountChange::Upsert(rec)
    }

    async fn run(&self, work: Work) -> Done {
        let mut d = Done::default();
        match work {
            Work::Chain(idx) => self.chain(&idx, &mut d).await,
            Work::Status(action, idx) => self.status(action, &idx, &mut d).await,
            Work::CreateMany(idx) => self.create_many(&idx, &mut d).await,
        }
        d
    }

    async fn chain(&self, idx: &[usize], d: &mut Done) {
        let Some(&first) = idx.first() else { return };
        let key = &self.plan.ops[first].key;
        // The running state of the account as the target now has it.
        let mut current = self.records.get(key).cloned();
        let mut broken: Option<String> = None;
        for (pos, &i) in idx.iter().enumerate() {
            // The running state is needed only by a later operation of this chain: the last
            // one hands its record over instead of cloning it.
            let last = pos + 1 == idx.len();
            if let Some(why) = &broken {
                self.skip(d, i, why);
                continue;
            }
            let op = &self.plan.ops[i];
            let remote_id = current
                .as_ref()
                .and_then(|r| r.account.remote_id.clone())
                .or_else(|| op.remote_id.clone());
            match &op.op {
                Op::Create { account } => match self.connector.create(account).await {
                    Ok(created) => {
                        let rec = created_record(
                            account,
                            created.remote_id.clone(),
                            &self.target.mapping.login_field,
                            self.run_id,
                        );
                        current = keep(d, rec, last);
                        self.ok(d, i, Some(created.remote_id), created.note);
                    }
                    Err(OpError::Unavailable { message }) => {
                        // The request may have taken effect (a dropped connection after the
                        // target created the account): ask before calling it failed, so the
                        // next run does not create it twice.
                        match self.confirm_create(account).await {
                            Some(remote_id) => {
                                let rec = created_record(
                                    account,
                                    remote_id.clone(),
                                    &self.target.mapping.login_field,
                                    self.run_id,
                                );
                                current = keep(d, rec, last);
                                self.ok(
                                    d,
                                    i,
                                    Some(remote_id),
                                    Some(format!("the target created the account although the request failed ({message})")),
                                );
                            }
                            None => {
                                self.unknown(d, i, &OpError::Unavailable { message });
                                broken = Some("skipped: the create of this account failed".into());
                            }
                        }
                    }
                    Err(e) => {
                        if matches!(e, OpError::Conflict { .. }) {
                            d.changes.push(self.conflict_record(account));
                        }
                        self.fail(d, i, &e);
                        broken = Some("skipped: the create of this account failed".into());
                    }
                },
                Op::Update { changes, account } => {
                    let Some(rid) = remote_id else {
                        self.fail(
                            d,
                            i,
                            &OpError::NotFound {
                                message: "no remote id recorded for this account".into(),
                            },
                        );
                        continue;
                    };
                    match self.connector.update(&rid, changes, account).await {
                        Ok(()) => {
                            if let Some(mut rec) = current.take() {
                                for c in changes {
                                    match &c.after {
                                        Some(v) => {
                                            rec.state.fields.insert(c.field.clone(), v.clone())
                                        }
                                        None => rec.state.fields.remove(&c.field),
                                    };
                                }
                                self.rehash(&mut rec);
                                current = keep(d, rec, last);
                            }
                            self.ok(d, i, None, None);
                        }
                        Err(e) => self.fail(d, i, &e),
                    }
                }
                Op::SetRoles {
                    add, remove, roles, ..
                } => {
                    let Some(rid) = remote_id else {
                        self.fail(
                            d,
                            i,
                            &OpError::NotFound {
                                message: "no remote id recorded for this account".into(),
                            },
                        );
                        continue;
                    };
                    match self.connector.set_roles(&rid, add, remove, roles).await {
                        Ok(()) => {
                            if let Some(mut rec) = current.take() {
                                rec.state.roles = roles.iter().cloned().collect();
                                self.rehash(&mut rec);
                                current = keep(d, rec, last);
                            }
                            self.ok(d, i, None, None);
                        }
                        Err(e) => self.fail(d, i, &e),
                    }
                }
                Op::SetGroups {
                    add,
                    remove,
                    groups,
                    ..
                } => {
                    let Some(rid) = remote_id else {
                        self.fail(
                            d,
                            i,
                            &OpError::NotFound {
                                message: "no remote id recorded for this account".into(),
                            },
                        );
                        continue;
                    };
                    match self.connector.set_groups(&rid, add, remove, groups).await {
                        Ok(()) => {
                            if let Some(mut rec) = current.take() {
                                rec.state.groups = groups.iter().cloned().collect();
                                self.rehash(&mut rec);
                                current = keep(d, rec, last);
                            }
                            self.ok(d, i, None, None);
                        }
                        Err(e) => self.fail(d, i, &e),
                    }
                }
                Op::Enable | Op::Disable { .. } | Op::Delete { .. } => {
                    let action = status_action(&op.op);
                    let Some(rid) = remote_id else {
                        self.fail(
                            d,
                            i,
                            &OpError::NotFound {
                                message: "no remote id recorded for this account".into(),
                            },
                        );
                        continue;
                    };
                    let item = StatusItem {
                        key: op.key.clone(),
                        remote_id: rid,
                        login: op.label.clone(),
                    };
                    let res = self
                        .connector
                        .set_status(action, std::slice::from_ref(&item))
                        .await;
                    match res.into_iter().next() {
                        Some(Ok(())) => {
                            d.changes.push(self.status_change(action, &op.key));
                            self.ok(d, i, None, None);
                        }
                        Some(Err(e)) => self.fail(d, i, &e),
                        None => self.fail(
                            d,
                            i,
                            &OpError::Unavailable {
                                message: "connector returned no result".into(),
                            },
                        ),
                    }
                }
            }
        }
    }

    /// After a create with an unknown outcome: the account's remote id if the target has it.
    async fn confirm_create(&self, account: &Account) -> Option<String> {
        let login = account.fields.get(&self.target.mapping.login_field)?;
        match self.connector.find_account(login).await {
            Ok(found) => found.map(|r| r.remote_id),
            Err(e) => {
                warn!(run_id = self.run_id, target = %self.target.name, key = %account.key, error = %e, "could not check whether a failed create took effect");
                None
            }
        }
    }

    /// After a field or role change: the record's hash, and its login when the login field
    /// changed (a renamed Valuekeep userKey, a new Primavera loginId).
    fn rehash(&self, rec: &mut AccountRecord) {
        if let Some(login) = rec.state.fields.get(&self.target.mapping.login_field) {
            rec.account.login = Some(login.clone());
        }
        rec.account.hash = content_hash(
            &self.target.mapping,
            &rec.state.fields,
            &rec.state.roles,
            &rec.state.groups,
        );
        rec.last_seen_run = Some(self.run_id);
    }

    fn status_change(&self, action: StatusAction, key: &str) -> AccountChange {
        match action {
            StatusAction::Enable => AccountChange::SetEnabled {
                key: key.to_string(),
                enabled: true,
                disabled_at: None,
            },
            StatusAction::Disable => AccountChange::SetEnabled {
                key: key.to_string(),
                enabled: false,
                disabled_at: Some(self.now),
            },
            StatusAction::Delete => AccountChange::Delete {
                key: key.to_string(),
            },
        }
    }

    async fn status(&self, action: StatusAction, idx: &[usize], d: &mut Done) {
        let mut items = Vec::with_capacity(idx.len());
        let mut sent = Vec::with_capacity(idx.len());
        for &i in idx {
            let op = &self.plan.ops[i];
            match &op.remote_id {
                Some(rid) => {
                    items.push(StatusItem {
                        key: op.key.clone(),
                        remote_id: rid.clone(),
                        login: op.label.clone(),
                    });
                    sent.push(i);
                }
                None => self.fail(
                    d,
                    i,
                    &OpError::NotFound {
                        message: "no remote id recorded for this account".into(),
                    },
                ),
            }
        }
        if items.is_empty() {
            return;
        }
        let results = self.connector.set_status(action, &items).await;
        for (n, &i) in sent.iter().enumerate() {
            match results.get(n) {
                Some(Ok(())) => {
                    d.changes
                        .push(self.status_change(action, &self.plan.ops[i].key));
                    self.ok(d, i, None, None);
                }
                Some(Err(e)) => self.fail(d, i, e),
                None => self.fail(
                    d,
                    i,
                    &OpError::Unavailable {
                        message: "connector returned no result for this account".into(),
                    },
                ),
            }
        }
    }

    async fn create_many(&self, idx: &[usize], d: &mut Done) {
        let accounts: Vec<Account> = idx
            .iter()
            .filter_map(|&i| match &self.plan.ops[i].op {
                Op::Create { account } => Some(account.clone()),
                _ => None,
            })
            .collect();
        let results = self.connector.create_many(&accounts).await;
        for (n, &i) in idx.iter().enumerate() {
            let account = &accounts[n.min(accounts.len().saturating_sub(1))];
            match results.get(n) {
                Some(Ok(created)) => {
                    d.changes.push(AccountChange::Upsert(created_record(
                        account,
                        created.remote_id.clone(),
                        &self.target.mapping.login_field,
                        self.run_id,
                    )));
                    self.ok(d, i, Some(created.remote_id.clone()), created.note.clone());
                }
                Some(Err(OpError::Unavailable { message })) => {
                    // Unknown outcome: ask the target before calling it failed.
                    match self.confirm_create(account).await {
                        Some(remote_id) => {
                            d.changes.push(AccountChange::Upsert(created_record(
                                account,
                                remote_id.clone(),
                                &self.target.mapping.login_field,
                                self.run_id,
                            )));
                            self.ok(
                                d,
                                i,
                                Some(remote_id),
                                Some(format!(
                                    "the target created the account although the request failed ({message})"
                                )),
                            );
                        }
                        None => self.unknown(
                            d,
                            i,
                            &OpError::Unavailable {
                                message: message.clone(),
                            },
                        ),
                    }
                }
                Some(Err(e)) => {
                    if matches!(e, OpError::Conflict { .. }) {
                        d.changes.push(self.conflict_record(account));
                    }
                    self.fail(d, i, e);
                }
                None => self.fail(
                    d,
                    i,
                    &OpError::Unavailable {
                        message: "connector returned no result for this account".into(),
                    },
                ),
            }
        }
    }
}

/// Records an account change; returns the record as the chain's running state unless `last`
/// (then it is moved into the change, not cloned).
fn keep(d: &mut Done, rec: AccountRecord, last: bool) -> Option<AccountRecord> {
    if last {
        d.changes.push(AccountChange::Upsert(rec));
        None
    } else {
        d.changes.push(AccountChange::Upsert(rec.clone()));
        Some(rec)
    }
}

fn status_action(op: &Op) -> StatusAction {
    match op {
        Op::Enable => StatusAction::Enable,
        Op::Delete { .. } => StatusAction::Delete,
        _ => StatusAction::Disable,
    }
}

/// Groups a plan's operations into units of work: one chain per account (in plan order) for
/// creates, updates and role changes; bulk calls for enable / disable / delete (and creates)
/// where the connector has them.
fn work_units(plan: &TargetPlan, connector: &dyn Connector) -> Vec<Work> {
    let caps = connector.capabilities();
    let creates = plan
        .ops
        .iter()
        .filter(|o| matches!(o.op, Op::Create { .. }))
        .count();
    let bulk_create = caps.bulk_create_batch.filter(|_| creates > 1);
    let mut chains: Vec<Work> = Vec::new();
    let mut chain_of: HashMap<&str, usize> = HashMap::new();
    let mut status: [(StatusAction, Vec<usize>); 3] = [
        (StatusAction::Enable, Vec::new()),
        (StatusAction::Disable, Vec::new()),
        (StatusAction::Delete, Vec::new()),
    ];
    let mut create_batch: Vec<usize> = Vec::new();
    for (i, op) in plan.ops.iter().enumerate() {
        let bulkable = caps.bulk_status_batch.is_some()
            && matches!(op.op, Op::Enable | Op::Disable { .. } | Op::Delete { .. });
        if bulkable {
            let slot = match op.op {
                Op::Enable => 0,
                Op::Disable { .. } => 1,
                _ => 2,
            };
            status[slot].1.push(i);
            continue;
        }
        if bulk_create.is_some() && matches!(op.op, Op::Create { .. }) {
            create_batch.push(i);
            continue;
        }
        match chain_of.get(op.key.as_str()) {
            Some(&c) => {
                if let Work::Chain(v) = &mut chains[c] {
                    v.push(i);
                }
            }
            None => {
                chain_of.insert(op.key.as_str(), chains.len());
                chains.push(Work::Chain(vec![i]));
            }
        }
    }
    let mut units = Vec::new();
    if let Some(n) = bulk_create {
        for c in create_batch.chunks(n.max(1)) {
            units.push(Work::CreateMany(c.to_vec()));
        }
    }
    units.extend(chains);
    let batch = caps.bulk_status_batch.unwrap_or(1).max(1);
    for (action, idx) in status {
        for c in idx.chunks(batch) {
            units.push(Work::Status(action, c.to_vec()));
        }
    }
    units
}

/// Applies an allowed plan to one target. Individual failures are recorded and counted; an
/// error is returned only when the journal itself cannot be written (then nothing further is
/// sent).
pub async fn apply(
    store: &dyn Store,
    connector: &dyn Connector,
    target: &TargetConfig,
    run_id: i64,
    plan: &TargetPlan,
    now: DateTime<Utc>,
    stop: &AtomicBool,
) -> Result<ApplySummary, EngineError> {
    let mut summary = ApplySummary::default();
    let interrupted = AtomicU64::new(0);
    if plan.ops.is_empty() {
        return Ok(summary);
    }
    // 1. Journal every operation as pending, before anything is sent.
    let started = std::time::Instant::now();
    let new_ops: Vec<NewOperation> = plan
        .ops
        .iter()
        .map(|o| NewOperation {
            source_key: o.key.clone(),
            kind: o.op.kind().to_string(),
            payload: payload(o),
        })
        .collect();
    let ids = store.journal(run_id, &target.name, &new_ops).await?;
    drop(new_ops);
    debug!(run_id, target = %target.name, ops = ids.len(), ms = started.elapsed().as_millis() as u64, "journaled");
    let units = work_units(plan, connector);
    // 2. Full rows of the existing accounts whose chains need their running state (one query).
    //    Bulk status and bulk create units send what the plan holds and need none.
    let started = std::time::Instant::now();
    let keys: Vec<String> = units
        .iter()
        .filter_map(|u| match u {
            Work::Chain(idx) => idx
                .iter()
                .find(|&&i| !matches!(plan.ops[i].op, Op::Create { .. }))
                .map(|&i| plan.ops[i].key.clone()),
            _ => None,
        })
        .collect();
    let records: HashMap<String, AccountRecord> = if keys.is_empty() {
        HashMap::new()
    } else {
        store
            .load_account_records(&target.name, &keys)
            .await?
            .into_iter()
            .map(|r| (r.account.key.clone(), r))
            .collect()
    };
    debug!(run_id, target = %target.name, records = records.len(), ms = started.elapsed().as_millis() as u64, "account records loaded");
    let ctx = Ctx {
        plan,
        ids: &ids,
        target,
        connector,
        records: &records,
        run_id,
        now,
    };
    info!(run_id, target = %target.name, ops = plan.ops.len(), units = units.len(), "applying");
    // 3. Pipeline: mark a window `sent`, run its units concurrently, record outcomes in
    //    batched transactions. The window runs ahead of the workers so they never wait on it.
    let concurrency = target.http.concurrency.max(1);
    let window = (concurrency * 4).max(16);
    let units = Arc::new(units);
    let (tx, rx) = tokio::sync::mpsc::channel::<usize>(window * 2);
    let marker = {
        let units = Arc::clone(&units);
        let ids = &ids;
        let interrupted = &interrupted;
        async move {
            let mut start = 0;
            while start < units.len() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                // At most `window` units and about WINDOW_OPS operations (at least one unit).
                let mut end = start;
                let mut ops = 0;
                while end < units.len()
                    && end - start < window
                    && (end == start || ops + units[end].ops().len() <= WINDOW_OPS)
                {
                    ops += units[end].ops().len();
                    end += 1;
                }
                let sent: Vec<i64> = units[start..end]
                    .iter()
                    .flat_map(|u| u.ops().iter().map(|&i| ids[i]))
                    .collect();
                store.mark_sent(&sent).await?;
                debug!(run_id, target = %target.name, from = start, to = end, ops, "window marked sent");
                for u in start..end {
                    // Marked `sent` but never sent: put back as skipped so the next run plans
                    // it again without a reconciliation look-up.
                    if stop.load(Ordering::SeqCst) || tx.send(u).await.is_err() {
                        let left: Vec<OpOutcome> = units[u..end]
                            .iter()
                            .flat_map(|w| w.ops().iter())
                            .map(|&i| OpOutcome {
                                id: ids[i],
                                status: OpStatus::Skipped,
                                error: Some(
                                    "not sent: dirsync was shutting down; re-planned".into(),
                                ),
                                remote_id: None,
                            })
                            .collect();
                        interrupted.fetch_add(left.len() as u64, Ordering::SeqCst);
                        store.record_outcomes(&target.name, &left, &[]).await?;
                        start = units.len();
                        break;
                    }
                }
                start = start.max(end);
            }
            // Units never marked stay `pending`; the next run's reconciliation skips them.
            let never: u64 = units[start.min(units.len())..]
                .iter()
                .map(|u| u.ops().len() as u64)
                .sum();
            interrupted.fetch_add(never, Ordering::SeqCst);
            Ok::<(), StoreError>(())
        }
    };
    let (done_tx, done_rx) = tokio::sync::mpsc::channel::<Done>(window * 2);
    let workers = {
        let units = Arc::clone(&units);
        let ctx = &ctx;
        async move {
            let stream =
                futures::stream::unfold(
                    rx,
                    |mut rx| async move { rx.recv().await.map(|u| (u, rx)) },
                );
            let mut results = std::pin::pin!(
                stream
                    .map(|u| {
                        let units = Arc::clone(&units);
                        async move { ctx.run(units[u].clone()).await }
                    })
                    .buffer_unordered(concurrency)
            );
            while let Some(done) = results.next().await {
                if done_tx.send(done).await.is_err() {
                    debug!(run_id, target = %ctx.target.name, "workers: outcome writer gone, stopping");
                    break;
                }
            }
            debug!(run_id, target = %ctx.target.name, "workers: done");
        }
    };
    let summary_ref = &mut summary;
    let writer = async move {
        // Own the receiver: when the writer stops on a store error, the receiver must be
        // dropped with it, so that the workers' sends fail and the whole pipeline unwinds
        // (borrowed, it would outlive the writer and the workers would wait on a full
        // channel forever).
        let mut done_rx = done_rx;
        let summary = summary_ref;
        let mut batch = Done::default();
        // When the oldest outcome of `batch` arrived.
        let mut since: Option<std::time::Instant> = None;
        let mut closed = false;
        // The one write in flight: outcomes and account changes in one transaction.
        let mut writing: Option<futures::future::BoxFuture<'_, Result<(), StoreError>>> = None;
        loop {
            if writing.is_none()
                && !batch.outcomes.is_empty()
                && (closed
                    || batch.outcomes.len() >= FLUSH_MAX
                    || since.is_some_and(|t| t.elapsed() >= FLUSH_EVERY))
            {
                let Done {
                    outcomes, changes, ..
                } = std::mem::take(&mut batch);
                since = None;
                let name = target.name.as_str();
                writing = Some(Box::pin(async move {
                    store.record_outcomes(name, &outcomes, &changes).await
                }));
            }
            if closed && writing.is_none() && batch.outcomes.is_empty() {
                return Ok::<(), StoreError>(());
            }
            // A full batch waits for the write in flight (the workers then wait on the channel).
            let full = writing.is_some() && batch.outcomes.len() >= FLUSH_MAX;
            let receive = !closed && !full;
            let deadline = since.map(|t| t + FLUSH_EVERY);
            tokio::select! {
                result = async {
                    match writing.as_mut() {
                        Some(w) => w.await,
                        None => std::future::pending().await,
                    }
                }, if writing.is_some() => {
                    writing = None;
                    if let Err(e) = result {
                        warn!(run_id, target = %target.name, error = %e, "cannot record outcomes; stopping");
                        return Err(e);
                    }
                }
                next = done_rx.recv(), if receive => match next {
                    Some(d) => {
                        batch.outcomes.extend(d.outcomes);
                        batch.changes.extend(d.changes);
                        summary.applied += d.applied;
                        summary.skipped += d.skipped;
                        summary.failed += d.failures.len() as u64;
                        summary.failures.extend(d.failures);
                        summary.notes.extend(d.notes);
                        for (kind, status) in d.kinds {
                            let c = match summary.by_kind.get_mut(kind) {
                                Some(c) => c,
                                None => summary.by_kind.entry(kind.to_string()).or_default(),
                            };
                            match status {
                                OpStatus::Succeeded => c.succeeded += 1,
                                OpStatus::Failed => c.failed += 1,
                                _ => c.skipped += 1,
                            }
                        }
                        since.get_or_insert_with(std::time::Instant::now);
                    }
                    None => closed = true,
                },
                () = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d.into()).await,
                        None => std::future::pending().await,
                    }
                }, if writing.is_none() && deadline.is_some() => {}
            }
        }
    };
    let (m, (), w) = tokio::join!(marker, workers, writer);
    m?;
    w?;
    summary.interrupted = interrupted.load(Ordering::SeqCst);
    if summary.interrupted > 0 {
        warn!(run_id, target = %target.name, left = summary.interrupted, "shutdown: operations left for the next run");
    }
    info!(run_id, target = %target.name, applied = summary.applied, failed = summary.failed, skipped = summary.skipped, "applied");
    Ok(summary)
}
