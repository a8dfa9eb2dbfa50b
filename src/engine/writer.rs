//! The outcome writer: gathers the workers' results into batches and records each batch
//! (outcomes and the account rows they change) in one store transaction, one write at a time.

use tokio::sync::mpsc::Receiver;
use tracing::warn;

use super::{ApplySummary, Failure};
use crate::config::TargetConfig;
use crate::store::{AccountChange, OpOutcome, OpStatus, Store, StoreError};

/// Outcomes are written at least this often while a target is being applied.
pub(super) const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(50);
/// ... or as soon as this many are waiting. One write is in flight at a time: while it runs,
/// the next batch gathers (up to this many, then the workers wait), so a batch grows to what
/// the store absorbs — about 160 outcomes per write at 3,200 operations a second, this many when
/// the store is the slower side (bulk status calls: 500 outcomes per call).
pub const FLUSH_MAX: usize = 8192;

/// The result of one unit of work: outcomes and account changes to record atomically.
#[derive(Default)]
pub(super) struct Done {
    pub(super) outcomes: Vec<OpOutcome>,
    pub(super) changes: Vec<AccountChange>,
    pub(super) failures: Vec<Failure>,
    pub(super) notes: Vec<Failure>,
    pub(super) applied: u64,
    pub(super) skipped: u64,
    /// Operations put back unsent (shutdown, target-fatal error).
    pub(super) left: u64,
    pub(super) kinds: Vec<(&'static str, OpStatus)>,
}

/// Adds one unit's result to the batch being gathered (its outcomes and account changes) and
/// to the summary (its counts, failures and notes).
pub(super) fn gather(summary: &mut ApplySummary, batch: &mut Done, d: Done) {
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
}

/// The writer stage of the pipeline: records outcomes at least every [`FLUSH_EVERY`] or as soon
/// as [`FLUSH_MAX`] wait, with one write in flight while the next batch gathers, until the
/// workers' channel closes. Owns the receiver, so that a store error here closes the channel
/// and the workers unwind.
pub(super) async fn write_outcomes(
    store: &dyn Store,
    target: &TargetConfig,
    run_id: i64,
    done_rx: Receiver<Done>,
    summary: &mut ApplySummary,
    progress: &crate::progress::Task,
) -> Result<(), StoreError> {
    // Own the receiver: when the writer stops on a store error, the receiver must be
    // dropped with it, so that the workers' sends fail and the whole pipeline unwinds
    // (borrowed, it would outlive the writer and the workers would wait on a full
    // channel forever).
    let mut done_rx = done_rx;
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
                    gather(summary, &mut batch, d);
                    progress.set(
                        summary.applied + summary.failed + summary.skipped + summary.interrupted,
                        summary.failed,
                    );
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
}
