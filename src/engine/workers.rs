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
use super::transition::{Answer, Rules, status_action, transition};
use super::units::Work;
use super::writer::Done;
use crate::config::TargetConfig;
use crate::connector::{Connector, OpError, StatusAction, StatusItem};
use crate::mapping::Account;
use crate::plan::{Op, TargetPlan};
use crate::store::{AccountChange, AccountRecord, OpOutcome, OpStatus};

/// How often the workers look at the shutdown flag while requests are in flight.
const STOP_POLL: Duration = Duration::from_millis(20);

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

    /// Records operation `i` as `answer` makes it (see [`transition`]): its outcome, its
    /// account change, its counts and its failure or note. In a chain, `current` is the
    /// account's running state; `last`: no later operation of the unit needs it (then the
    /// record moves into the change instead of being cloned).
    fn settle(
        &self,
        d: &mut Done,
        i: usize,
        current: &mut Option<AccountRecord>,
        last: bool,
        answer: Answer<'_>,
    ) {
        let op = &self.plan.ops[i];
        let rules = Rules {
            mapping: &self.target.mapping,
            run_id: self.run_id,
            now: self.now,
        };
        let t = transition(op, current, answer, &rules);
        let kind = op.op.kind();
        match t.status {
            OpStatus::Succeeded => {
                d.applied += 1;
                d.kinds.push((kind, OpStatus::Succeeded));
                if let Some(n) = &t.error {
                    d.notes.push(Failure {
                        key: op.key.clone(),
                        op: kind,
                        error: n.clone(),
                    });
                }
            }
            status => {
                d.kinds.push((kind, OpStatus::Failed));
                let text = t.error.clone().unwrap_or_default();
                if matches!(status, OpStatus::Sent) {
                    warn!(run_id = self.run_id, target = %self.target.name, op = kind, key = %op.key, error = %text, "create outcome unknown");
                } else {
                    warn!(run_id = self.run_id, target = %self.target.name, op = kind, key = %op.key, error = %text, "operation failed");
                }
                d.failures.push(Failure {
                    key: op.key.clone(),
                    op: kind,
                    error: text,
                });
            }
        }
        match t.change {
            Some(AccountChange::Upsert(rec)) if !last => {
                *current = Some(rec.clone());
                d.changes.push(AccountChange::Upsert(rec));
            }
            Some(change) => d.changes.push(change),
            None => {}
        }
        d.outcomes.push(OpOutcome {
            id: self.ids[i],
            status: t.status,
            error: t.error,
            remote_id: t.remote_id,
        });
    }

    /// [`Ctx::settle`] of an operation outside a chain (a bulk call).
    fn settle_one(&self, d: &mut Done, i: usize, answer: Answer<'_>) {
        self.settle(d, i, &mut None, true, answer);
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

    /// One account's operations in plan order, each after the previous one's answer: after a
    /// failed create the rest is skipped; a stop between two requests puts the rest back.
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
            if let Op::Create { account } = &op.op {
                match self.connector.create(account).await {
                    Ok(created) => {
                        let answer = Answer::Done {
                            remote_id: Some(created.remote_id),
                            note: created.note,
                        };
                        self.settle(d, i, &mut current, last, answer);
                    }
                    // Never sent, or refused before anything was done: put back.
                    Err(e) if e.is_target_fatal() => {
                        self.target_fatal(d, &e, &idx[pos..]);
                        return;
                    }
                    Err(e) => {
                        let answer = self.failed_create(account, &e).await;
                        if !matches!(answer, Answer::Done { .. }) {
                            broken = Some("skipped: the create of this account failed".into());
                        }
                        self.settle(d, i, &mut current, last, answer);
                    }
                }
                continue;
            }
            let remote_id = current
                .as_ref()
                .and_then(|r| r.account.remote_id.clone())
                .or_else(|| op.remote_id.clone());
            let Some(rid) = remote_id else {
                let e = OpError::NotFound {
                    message: "no remote id recorded for this account".into(),
                };
                self.settle(d, i, &mut current, last, Answer::Failed(&e));
                continue;
            };
            let result = match &op.op {
                Op::Update { changes, account } => {
                    self.connector.update(&rid, changes, account).await
                }
                Op::SetRoles {
                    add, remove, roles, ..
                } => self.connector.set_roles(&rid, add, remove, roles).await,
                Op::SetGroups {
                    add,
                    remove,
                    groups,
                    ..
                } => self.connector.set_groups(&rid, add, remove, groups).await,
                // Handled above.
                Op::Create { .. } => continue,
                Op::Enable | Op::Disable { .. } | Op::Delete { .. } => {
                    let item = StatusItem {
                        key: op.key.clone(),
                        remote_id: rid,
                        login: op.label.clone(),
                    };
                    let res = self
                        .connector
                        .set_status(status_action(&op.op), std::slice::from_ref(&item))
                        .await;
                    res.into_iter().next().unwrap_or_else(|| {
                        Err(OpError::Unavailable {
                            message: "connector returned no result".into(),
                        })
                    })
                }
            };
            match result {
                Ok(()) => {
                    let answer = Answer::Done {
                        remote_id: None,
                        note: None,
                    };
                    self.settle(d, i, &mut current, last, answer);
                }
                Err(e) if e.is_target_fatal() => {
                    self.target_fatal(d, &e, &idx[pos..]);
                    return;
                }
                Err(e) => self.settle(d, i, &mut current, last, Answer::Failed(&e)),
            }
        }
    }

    /// The answer for a create whose request failed (not target-fatal). `Unavailable`: the
    /// request may have taken effect (a dropped connection after the target created the
    /// account), so the target is asked before calling it failed, and the next run does not
    /// create it twice.
    async fn failed_create<'e>(&self, account: &Account, e: &'e OpError) -> Answer<'e> {
        let OpError::Unavailable { message } = e else {
            return Answer::Failed(e);
        };
        match self.confirm_create(account).await {
            Some(remote_id) => Answer::Done {
                remote_id: Some(remote_id),
                note: Some(format!(
                    "the target created the account although the request failed ({message})"
                )),
            },
            None => Answer::Unknown(e),
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

    /// One bulk status call.
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
                None => {
                    let e = OpError::NotFound {
                        message: "no remote id recorded for this account".into(),
                    };
                    self.settle_one(d, i, Answer::Failed(&e));
                }
            }
        }
        if items.is_empty() {
            return;
        }
        let results = self.connector.set_status(action, &items).await;
        for (n, &i) in sent.iter().enumerate() {
            match results.get(n) {
                Some(Ok(())) => {
                    let answer = Answer::Done {
                        remote_id: None,
                        note: None,
                    };
                    self.settle_one(d, i, answer);
                }
                Some(Err(e)) if e.is_target_fatal() => self.target_fatal(d, e, &[i]),
                Some(Err(e)) => self.settle_one(d, i, Answer::Failed(e)),
                None => self.no_result(d, i),
            }
        }
    }

    /// One bulk create call.
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
                    let answer = Answer::Done {
                        remote_id: Some(created.remote_id.clone()),
                        note: created.note.clone(),
                    };
                    self.settle_one(d, i, answer);
                }
                Some(Err(e)) if e.is_target_fatal() => self.target_fatal(d, e, &[i]),
                Some(Err(e)) => {
                    let answer = self.failed_create(account, e).await;
                    self.settle_one(d, i, answer);
                }
                None => self.no_result(d, i),
            }
        }
    }

    /// A bulk call that returned fewer results than it was given items.
    fn no_result(&self, d: &mut Done, i: usize) {
        let e = OpError::Unavailable {
            message: "connector returned no result for this account".into(),
        };
        self.settle_one(d, i, Answer::Failed(&e));
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
                .map(|u| { async move { ctx.run(units[u].clone()).await } })
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
