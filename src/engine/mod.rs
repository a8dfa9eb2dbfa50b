//! The apply engine: journals a target's allowed plan, sends it through the target's
//! `Connector` (batched, concurrent), and records each outcome together with the account row it
//! changes. Also reconciles operations a crashed run left `pending` or `sent`.
//!
//! Protocol, per operation: inserted `pending` (all of a plan at once, before anything is sent)
//! → marked `sent` (in windows, just before the requests go out) → `succeeded` / `failed` with
//! the account change in the same transaction. A crash leaves `sent` rows: [`recover`] asks the
//! target whether creates took effect before anything is planned again; every other operation is
//! idempotent and simply re-planned.
//!
//! Parts: `units` groups a plan into units of work; the `marker` journals and marks windows
//! `sent`; the `workers` send units through the connector; each answer becomes an outcome and
//! an account change by the pure `transition`; the `writer` records them in batches;
//! [`recover`] settles what a crash left.

mod marker;
mod recover;
mod transition;
mod units;
mod workers;
mod writer;

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use crate::config::TargetConfig;
use crate::connector::Connector;
pub use crate::outcome::{ApplySummary, Failure, KindCounts, RecoverySummary};
use crate::plan::{Op, TargetPlan};
use crate::store::{AccountRecord, Store, StoreError};
use marker::Marker;
pub(crate) use recover::created_record;
pub use recover::recover;
use units::{Work, work_units};
use workers::Ctx;
use writer::Done;
pub use writer::FLUSH_MAX;

/// Requests in flight when a shutdown is requested get this long to finish (when the caller
/// gives no grace of its own, see [`apply_with`]); after it they are abandoned and their
/// operations stay `sent` for the next run's reconciliation.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

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
    let ids = marker::journal(store, target, run_id, plan).await?;
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
    let (tx, rx) = tokio::sync::mpsc::channel::<usize>(window * 2);
    let marker = Marker {
        store,
        target,
        run_id,
        units: &units,
        ids: &ids,
        window,
        stop,
        fatal: &fatal,
        interrupted: &interrupted,
    }
    .run(tx);
    let (done_tx, done_rx) = tokio::sync::mpsc::channel::<Done>(window * 2);
    let workers = ctx.run_workers(&units, rx, done_tx, concurrency, grace, &interrupted);
    // Progress: operations settled (applied, failed, skipped or put back) of the plan's.
    let task = crate::progress::start(
        &target.name,
        crate::progress::Phase::Apply,
        Some(plan.ops.len() as u64),
        target.http.requests_per_second,
    );
    let writer = writer::write_outcomes(store, target, run_id, done_rx, &mut summary, &task);
    let (m, (), w) = tokio::join!(marker, workers, writer);
    m?;
    w?;
    summary.interrupted += interrupted.load(Ordering::SeqCst);
    // Every operation is settled now, or counted as left for the next run.
    task.set(
        summary.applied + summary.failed + summary.skipped + summary.interrupted,
        summary.failed,
    );
    drop(task);
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

#[cfg(test)]
mod tests;
