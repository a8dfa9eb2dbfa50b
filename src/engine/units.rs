//! Units of work: a plan's operations grouped into per-account chains and bulk calls (status
//! changes, creates) as the connector's capabilities allow.

use std::collections::HashMap;

use crate::connector::{Connector, StatusAction};
use crate::plan::{Op, TargetPlan};

/// A unit of work the pipeline runs: the operations of one account in order, or a bulk call.
#[derive(Clone)]
pub(super) enum Work {
    /// Indexes into the plan's ops, all of one account, in plan order.
    Chain(Vec<usize>),
    /// One bulk status call.
    Status(StatusAction, Vec<usize>),
    /// One bulk create call.
    CreateMany(Vec<usize>),
}

impl Work {
    pub(super) fn ops(&self) -> &[usize] {
        match self {
            Work::Chain(v) | Work::Status(_, v) | Work::CreateMany(v) => v,
        }
    }
}

/// Groups a plan's operations into units of work: one chain per account (in plan order) for
/// creates, updates and role changes; bulk calls for enable / disable / delete (and creates)
/// where the connector has them.
pub(super) fn work_units(plan: &TargetPlan, connector: &dyn Connector) -> Vec<Work> {
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
