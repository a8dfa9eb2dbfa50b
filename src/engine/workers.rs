//! The workers: run units of work through the connector, `concurrency` at a time, honouring a
//! stop and the first target-fatal error, and turn each answer into outcomes and account
//! changes (via [`super::transition`]).

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::mpsc::{Receiver, Sender};
use tracing::{debug, warn};

use super::Failure;
use super::recover::created_record;
use super::units::{Work, status_action};
use super::writer::Done;
use crate::config::TargetConfig;
use crate::connector::{Connector, OpError, StatusAction, StatusItem};
use crate::mapping::{Account, content_hash};
use crate::plan::{Op, TargetPlan};
use crate::store::{AccountChange, AccountRecord, OpOutcome, OpStatus};

/// How often the workers look at the shutdown flag while requests are in flight.
const STOP_POLL: Duration = Duration::from_millis(20);

fn error_text(e: &OpError) -> String {
    e.to_string()
}

/// Why nothing more is sent to the target, as the reason recorded on operations put back: a
/// target-fatal error (the first one), or a shutdown request.
pub(super) fn halted(stop: &AtomicBool, fatal: &OnceLock<String>) -> Option<String> {
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

pub(super) struct Ctx<'a> {
    pub(super) plan: &'a TargetPlan,
    pub(super) ids: &'a [i64],
    pub(super) target: &'a TargetConfig,
    pub(super) connector: &'a dyn Connector,
    pub(super) records: &'a HashMap<String, AccountRecord>,
    pub(super) run_id: i64,
    pub(super) now: DateTime<Utc>,
    pub(super) stop: &'a AtomicBool,
    /// The first target-fatal error: once set, nothing more is sent to the target.
    pub(super) fatal: &'a OnceLock<String>,
    /// Operations of units that started sending, and of units that finished: the difference
    /// is what a shutdown abandoned in flight.
    pub(super) started_ops: &'a AtomicU64,
    pub(super) finished_ops: &'a AtomicU64,
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

impl Ctx<'_> {
    /// The worker stage of the pipeline: runs the units the marker hands over, `concurrency` at
    /// a time, and passes each result to the outcome writer. After a stop, requests in flight
    /// get `grace` to finish; what is still running then is abandoned (counted in
    /// `interrupted`; its operations stay `sent`). Owns both channel ends it uses.
    pub(super) async fn run_workers(
        &self,
        units: &[Work],
        rx: Receiver<usize>,
        done_tx: Sender<Done>,
        concurrency: usize,
        grace: Duration,
        interrupted: &AtomicU64,
    ) {
        let ctx = self;
        let run_id = self.run_id;
        let stop = self.stop;
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|u| (u, rx)) });
        let mut results = std::pin::pin!(
            stream
                .map(|u| {
                    let units = units;
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
}
