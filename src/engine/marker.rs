//! The marker: what is journaled with each operation, the journaling of a whole plan
//! (`pending`), and the windows of units marked `sent` just before the workers send them.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::mpsc::Sender;
use tracing::debug;

use super::units::Work;
use super::workers::halted;
use crate::config::TargetConfig;
use crate::mapping::Account;
use crate::plan::{Op, PlannedOp, TargetPlan};
use crate::store::{NewOperation, OpOutcome, OpStatus, Store, StoreError};

/// A window marked `sent` at once holds at most `4 × concurrency` units and at most this many
/// operations (a bulk unit holds hundreds), so the first requests go out after the first
/// window, not after the whole plan is marked.
const WINDOW_OPS: usize = 4096;

/// The payload journaled with an operation: enough to reconcile it after a crash.
#[derive(Debug, Serialize, serde::Deserialize)]
pub(super) struct Payload {
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) account: Option<Account>,
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

pub(super) fn payload(op: &PlannedOp) -> Box<serde_json::value::RawValue> {
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

/// Journals every operation of the plan as `pending` (one call, before anything is sent);
/// returns their ids, in plan order.
pub(super) async fn journal(
    store: &dyn Store,
    target: &TargetConfig,
    run_id: i64,
    plan: &TargetPlan,
) -> Result<Vec<i64>, StoreError> {
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
    Ok(ids)
}

/// The marker stage of the pipeline: marks windows of units `sent` and hands each unit to the
/// workers; once a stop or a target-fatal error is seen, puts back what it marked but did not
/// hand over, and counts what it never marked (left `pending`) in `interrupted`.
pub(super) struct Marker<'a> {
    pub store: &'a dyn Store,
    pub target: &'a TargetConfig,
    pub run_id: i64,
    pub units: &'a [Work],
    /// The journal ids of the plan's operations, in plan order.
    pub ids: &'a [i64],
    /// At most this many units per window.
    pub window: usize,
    pub stop: &'a AtomicBool,
    pub fatal: &'a OnceLock<String>,
    pub interrupted: &'a AtomicU64,
}

impl Marker<'_> {
    /// Runs the marker until every unit is handed over or dispatch stops. Owns `tx`: when the
    /// marker ends (or fails), the workers' channel closes.
    pub(super) async fn run(self, tx: Sender<usize>) -> Result<(), StoreError> {
        let Marker {
            store,
            target,
            run_id,
            units,
            ids,
            window,
            stop,
            fatal,
            interrupted,
        } = self;
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
}
