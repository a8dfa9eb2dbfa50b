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
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::config::TargetConfig;
use crate::connector::{Connector, OpError, RemoteAccount, StatusAction, StatusItem};
use crate::mapping::{Account, content_hash};
pub use crate::outcome::{ApplySummary, Failure, KindCounts, RecoverySummary};
use crate::plan::{Op, PlannedOp, TargetPlan};
use crate::store::{
    AccountChange, AccountRecord, AccountState, NewOperation, OpOutcome, OpStatus, RecordedAccount,
    Store, StoreError,
};

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
/// Requests in flight when a shutdown is requested get this long to finish (when the caller
/// gives no grace of its own, see [`apply_with`]); after it they are abandoned and their
/// operations stay `sent` for the next run's reconciliation.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// How often the workers look at the shutdown flag while requests are in flight.
const STOP_POLL: Duration = Duration::from_millis(20);
/// Sent creates looked up per round when the target cannot list (each round is recorded
/// before the next starts, so an interrupted reconciliation keeps what it confirmed).
const LOOKUP_CHUNK: usize = 64;
/// Confirmed creates recorded per store write during reconciliation.
const RECOVER_RECORD_CHUNK: usize = 2048;

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
    /// The target refused the credentials or cannot be reached (a target-fatal error, see
    /// `OpError::is_target_fatal`) before anything was sent to it.
    #[error("target {target:?}: {message}; nothing was sent")]
    TargetFatal { target: String, message: String },
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

/// A `sent` create of an earlier run, to look up on the target.
struct SentCreate {
    id: i64,
    key: String,
    account: Account,
    login: String,
}

/// Reconciles operations that an earlier run of this target left `pending` or `sent`.
/// Must run before the target is planned, so that a create that took effect is recorded and
/// not sent twice. If the target cannot be asked, nothing is sent and the run must stop.
///
/// `sent` creates are looked up together ([`Connector::find_accounts`]: one listing of the
/// target when it can list, else concurrent look-ups in rounds of [`LOOKUP_CHUNK`]); on
/// targets whose changes settle later (`settle_time`), those not found are looked for again,
/// all together, until the settle time has passed. Each confirmed create is recorded as soon
/// as its round is known, so a reconciliation that is itself interrupted keeps its progress.
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
    let started = Instant::now();
    let total = unfinished.len();
    info!(run_id, target = %target.name, count = total, "reconciling unfinished operations");
    let mut outcomes = Vec::new();
    let mut creates: Vec<SentCreate> = Vec::new();
    for op in unfinished {
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
        let account = serde_json::from_value::<Payload>(op.payload)
            .ok()
            .and_then(|p| p.account);
        match (op.kind.as_str(), account) {
            ("create", Some(account)) => {
                let login = account
                    .fields
                    .get(&target.mapping.login_field)
                    .cloned()
                    .unwrap_or_default();
                creates.push(SentCreate {
                    id: op.id,
                    key: op.source_key,
                    account,
                    login,
                });
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
    if !outcomes.is_empty() {
        store.record_outcomes(&target.name, &outcomes, &[]).await?;
    }
    let caps = connector.capabilities();
    let deadline = caps.settle_time.map(|t| started + t);
    // A target that lists is asked once per round for all of them; else in chunks, each
    // recorded before the next is asked.
    let chunk = if caps.can_list {
        creates.len().max(1)
    } else {
        LOOKUP_CHUNK
    };
    let mut delay = Duration::from_millis(250);
    let mut rounds = 0u32;
    while !creates.is_empty() {
        rounds += 1;
        let mut missing: Vec<SentCreate> = Vec::new();
        let mut rest = creates.into_iter().peekable();
        while rest.peek().is_some() {
            let part: Vec<SentCreate> = rest.by_ref().take(chunk).collect();
            let logins: Vec<String> = part.iter().map(|c| c.login.clone()).collect();
            let found = connector.find_accounts(&logins).await.map_err(|e| {
                let count = total - summary.confirmed as usize;
                if e.is_target_fatal() {
                    EngineError::TargetFatal {
                        target: target.name.clone(),
                        message: format!(
                            "{e} (while reconciling {count} operation(s) left unfinished by an earlier run)"
                        ),
                    }
                } else {
                    EngineError::Reconcile {
                        target: target.name.clone(),
                        count,
                        message: format!("looking up {} sent create(s): {e}", logins.len()),
                    }
                }
            })?;
            let mut confirmed = Vec::new();
            for (c, f) in part
                .into_iter()
                .zip(found.into_iter().chain(std::iter::repeat(None)))
            {
                match f {
                    Some(remote) => confirmed.push((c, remote)),
                    None => missing.push(c),
                }
            }
            record_confirmed(store, target, run_id, &confirmed).await?;
            summary.confirmed += confirmed.len() as u64;
            if !confirmed.is_empty() {
                debug!(run_id, target = %target.name, confirmed = summary.confirmed, "sent creates confirmed on the target");
            }
        }
        creates = missing;
        match deadline {
            Some(d) if !creates.is_empty() && Instant::now() < d => {
                let left = d.saturating_duration_since(Instant::now());
                tokio::time::sleep(delay.min(left)).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            _ => break,
        }
    }
    // Not on the target (after the settle time): the create never took effect.
    let not_applied: Vec<OpOutcome> = creates
        .iter()
        .map(|c| OpOutcome {
            id: c.id,
            status: OpStatus::Failed,
            error: Some("interrupted before the target created the account; re-planned".into()),
            remote_id: None,
        })
        .collect();
    summary.replanned += not_applied.len() as u64;
    if !not_applied.is_empty() {
        store
            .record_outcomes(&target.name, &not_applied, &[])
            .await?;
    }
    info!(run_id, target = %target.name, confirmed = summary.confirmed, replanned = summary.replanned,
          superseded = summary.superseded, rounds, ms = started.elapsed().as_millis() as u64, "reconciled");
    Ok(summary)
}

/// Records sent creates found on the target as succeeded, with their account rows, in
/// batches of [`RECOVER_RECORD_CHUNK`].
async fn record_confirmed(
    store: &dyn Store,
    target: &TargetConfig,
    run_id: i64,
    confirmed: &[(SentCreate, RemoteAccount)],
) -> Result<(), StoreError> {
    for part in confirmed.chunks(RECOVER_RECORD_CHUNK) {
        let mut outcomes = Vec::with_capacity(part.len());
        let mut changes = Vec::with_capacity(part.len());
        for (c, remote) in part {
            debug!(run_id, target = %target.name, key = %c.key, "create took effect before the interruption");
            changes.push(AccountChange::Upsert(created_record(
                &c.account,
                remote.remote_id.clone(),
                &target.mapping.login_field,
                run_id,
            )));
            outcomes.push(OpOutcome {
                id: c.id,
                status: OpStatus::Succeeded,
                error: Some("reconciled after an interruption: the target has the account".into()),
                remote_id: Some(remote.remote_id.clone()),
            });
        }
        store
            .record_outcomes(&target.name, &outcomes, &changes)
            .await?;
    }
    Ok(())
}

/// The account row a create makes (owned, enabled); first contact reuses it for an existing
/// account it records as not owned.
pub(crate) fn created_record(
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
    /// Operations put back unsent (shutdown, target-fatal error).
    left: u64,
    kinds: Vec<(&'static str, OpStatus)>,
}

/// Why nothing more is sent to the target, as the reason recorded on operations put back: a
/// target-fatal error (the first one), or a shutdown request.
fn halted(stop: &AtomicBool, fatal: &OnceLock<String>) -> Option<String> {
    if let Some(e) = fatal.get() {
        return Some(format!("not sent: {e}; re-planned"));
    }
    stop.load(Ordering::SeqCst)
        .then(|| "not sent: dirsync was shutting down; re-planned".to_string())
}

/// Resolves once a shutdown was requested and `grace` has passed since.
async fn stop_deadline(stop: &AtomicBool, grace: Duration) {
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(STOP_POLL).await;
    }
    tokio::time::sleep(grace).await;
}

struct Ctx<'a> {
    plan: &'a TargetPlan,
    ids: &'a [i64],
    target: &'a TargetConfig,
    connector: &'a dyn Connector,
    records: &'a HashMap<String, AccountRecord>,
    run_id: i64,
    now: DateTime<Utc>,
    stop: &'a AtomicBool,
    /// The first target-fatal error: once set, nothing more is sent to the target.
    fatal: &'a OnceLock<String>,
    /// Operations of units that started sending, and of units that finished: the difference
    /// is what a shutdown abandoned in flight.
    started_ops: &'a AtomicU64,
    finished_ops: &'a AtomicU64,
}

impl Ctx<'_> {
    fn halted(&self) -> Option<String> {
        halted(self.stop, self.fatal)
    }

    /// Operations that will not be sent in this run: skipped with the reason, so the next run
    /// plans them again (no reconciliation look-up needed: they never left).
    fn put_back(&self, d: &mut Done, idx: &[usize], why: &str) {
        for &i in idx {
            d.left += 1;
            d.outcomes.push(OpOutcome {
                id: self.ids[i],
                status: OpStatus::Skipped,
                error: Some(why.to_string()),
                remote_id: None,
            });
        }
    }

    /// A target-fatal error: dispatch to this target stops (the first error is kept and
    /// reported once), and `idx` (the operation that got it and what follows in its unit) is
    /// put back.
    fn target_fatal(&self, d: &mut Done, e: &OpError, idx: &[usize]) {
        if self.fatal.set(e.to_string()).is_ok() {
            warn!(run_id = self.run_id, target = %self.target.name, error = %e, "target-fatal error: nothing more is sent to this target in this run");
        }
        let why = self
            .halted()
            .unwrap_or_else(|| format!("not sent: {e}; re-planned"));
        self.put_back(d, idx, &why);
    }

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
        // A unit not started when a stop is seen is put back: never sent.
        if let Some(why) = self.halted() {
            self.put_back(&mut d, work.ops(), &why);
            return d;
        }
        let n = work.ops().len() as u64;
        self.started_ops.fetch_add(n, Ordering::SeqCst);
        match work {
            Work::Chain(idx) => self.chain(&idx, &mut d).await,
            Work::Status(action, idx) => self.status(action, &idx, &mut d).await,
            Work::CreateMany(idx) => self.create_many(&idx, &mut d).await,
        }
        self.finished_ops.fetch_add(n, Ordering::SeqCst);
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
            // Between two requests of one account: a stop puts the rest back.
            if pos > 0
                && let Some(why) = self.halted()
            {
                self.put_back(d, &idx[pos..], &why);
                return;
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
                    // Never sent, or refused before anything was done: put back.
                    Err(e) if e.is_target_fatal() => {
                        self.target_fatal(d, &e, &idx[pos..]);
                        return;
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
                        Err(e) if e.is_target_fatal() => {
                            self.target_fatal(d, &e, &idx[pos..]);
                            return;
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
                        Err(e) if e.is_target_fatal() => {
                            self.target_fatal(d, &e, &idx[pos..]);
                            return;
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
                        Err(e) if e.is_target_fatal() => {
                            self.target_fatal(d, &e, &idx[pos..]);
                            return;
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
                        Some(Err(e)) if e.is_target_fatal() => {
                            self.target_fatal(d, &e, &idx[pos..]);
                            return;
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
                Some(Err(e)) if e.is_target_fatal() => self.target_fatal(d, e, &[i]),
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
                Some(Err(e)) if e.is_target_fatal() => self.target_fatal(d, e, &[i]),
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
    // The connector decides from the run's creates for the target (a bulk import threshold
    // applies to the run, not to one batch).
    let bulk_create = connector.bulk_create_unit(creates).filter(|_| creates > 1);
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

/// [`apply_with`] with the [`DEFAULT_GRACE`] for requests in flight at a shutdown.
pub async fn apply(
    store: &dyn Store,
    connector: &dyn Connector,
    target: &TargetConfig,
    run_id: i64,
    plan: &TargetPlan,
    now: DateTime<Utc>,
    stop: &AtomicBool,
) -> Result<ApplySummary, EngineError> {
    apply_with(
        store,
        connector,
        target,
        run_id,
        plan,
        now,
        stop,
        DEFAULT_GRACE,
    )
    .await
}

/// Applies an allowed plan to one target. Individual failures are recorded and counted; an
/// error is returned only when the journal itself cannot be written (then nothing further is
/// sent).
///
/// Dispatch stops at once when `stop` is set (a shutdown) or an operation fails with a
/// target-fatal error (`OpError::is_target_fatal`): no unit starts after that (those already
/// queued are put back as skipped "not sent", those never marked stay `pending`), and the
/// summary counts them in `interrupted`. After a stop, requests in flight get `grace` to
/// finish; then they are abandoned, their operations stay `sent` (the next run reconciles them)
/// and are counted in `interrupted` too.
#[allow(clippy::too_many_arguments)]
pub async fn apply_with(
    store: &dyn Store,
    connector: &dyn Connector,
    target: &TargetConfig,
    run_id: i64,
    plan: &TargetPlan,
    now: DateTime<Utc>,
    stop: &AtomicBool,
    grace: Duration,
) -> Result<ApplySummary, EngineError> {
    let mut summary = ApplySummary::default();
    let interrupted = AtomicU64::new(0);
    if plan.ops.is_empty() {
        return Ok(summary);
    }
    if stop.load(Ordering::SeqCst) {
        // Stopped before anything of this target was journaled: nothing to put back.
        summary.interrupted = plan.ops.len() as u64;
        summary.stopped = true;
        warn!(run_id, target = %target.name, left = summary.interrupted, "shutdown: target not applied; its operations are left for the next run");
        return Ok(summary);
    }
    let fatal = OnceLock::new();
    let started_ops = AtomicU64::new(0);
    let finished_ops = AtomicU64::new(0);
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
        stop,
        fatal: &fatal,
        started_ops: &started_ops,
        finished_ops: &finished_ops,
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
        let fatal = &fatal;
        async move {
            let mut start = 0;
            while start < units.len() {
                if halted(stop, fatal).is_some() {
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
                let mut put_back = false;
                for u in start..end {
                    // Marked `sent` but never sent: put back as skipped so the next run plans
                    // it again without a reconciliation look-up.
                    let why = match halted(stop, fatal) {
                        Some(why) => Some(why),
                        None => tx.send(u).await.err().map(|_| {
                            halted(stop, fatal).unwrap_or_else(|| {
                                "not sent: the apply stopped; re-planned".to_string()
                            })
                        }),
                    };
                    if let Some(why) = why {
                        let left: Vec<OpOutcome> = units[u..end]
                            .iter()
                            .flat_map(|w| w.ops().iter())
                            .map(|&i| OpOutcome {
                                id: ids[i],
                                status: OpStatus::Skipped,
                                error: Some(why.clone()),
                                remote_id: None,
                            })
                            .collect();
                        interrupted.fetch_add(left.len() as u64, Ordering::SeqCst);
                        store.record_outcomes(&target.name, &left, &[]).await?;
                        put_back = true;
                        break;
                    }
                }
                start = start.max(end);
                if put_back {
                    break;
                }
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
        let interrupted = &interrupted;
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
            // After a stop, requests in flight get `grace` to finish, then are abandoned.
            let deadline = stop_deadline(stop, grace);
            let mut deadline = std::pin::pin!(deadline);
            loop {
                let next = tokio::select! {
                    next = results.next() => next,
                    () = &mut deadline => {
                        let left = ctx
                            .started_ops
                            .load(Ordering::SeqCst)
                            .saturating_sub(ctx.finished_ops.load(Ordering::SeqCst));
                        interrupted.fetch_add(left, Ordering::SeqCst);
                        warn!(run_id, target = %ctx.target.name, abandoned = left, grace_ms = grace.as_millis() as u64,
                              "shutdown grace over: requests still in flight abandoned; their operations stay sent for the next run to reconcile");
                        None
                    }
                };
                let Some(done) = next else { break };
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
                        summary.interrupted += d.left;
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
    summary.interrupted += interrupted.load(Ordering::SeqCst);
    summary.fatal = fatal.get().cloned();
    summary.stopped =
        summary.interrupted > 0 && summary.fatal.is_none() && stop.load(Ordering::SeqCst);
    if summary.interrupted > 0 {
        let why = summary.fatal.as_deref().unwrap_or("shutdown requested");
        warn!(run_id, target = %target.name, left = summary.interrupted, applied = summary.applied, failed = summary.failed, reason = why, "stopped: operations left for the next run");
    }
    info!(run_id, target = %target.name, applied = summary.applied, failed = summary.failed, skipped = summary.skipped, "applied");
    Ok(summary)
}
