//! Live sync's pure rules: what a run that read only the changed users may plan, and holding
//! the destructive operations of a live stream that went over the rolling window.

use super::{Op, TargetPlan, UserProblem};
use crate::mapping::RecordedAccount;

/// The recorded accounts of the changed keys only (`keys` sorted): a live run plans against
/// these, so no account whose user was not read can look missing.
pub fn recorded_of(recorded: &[RecordedAccount], keys: &[String]) -> Vec<RecordedAccount> {
    recorded
        .iter()
        .filter(|r| keys.binary_search(&r.key).is_ok())
        .cloned()
        .collect()
}

/// Takes every disable and delete out of the plan (they are "held": never journaled, never
/// sent; the next full run decides) and reports each as a problem of its user with `why`.
/// Returns how many were held. Creates, updates, roles and enables stay.
pub fn hold_destructive(plan: &mut TargetPlan, why: &str) -> u64 {
    let mut held = Vec::new();
    plan.ops.retain(|o| {
        let destructive = matches!(o.op, Op::Disable { .. } | Op::Delete { .. });
        if destructive {
            held.push(UserProblem {
                key: o.key.clone(),
                message: format!("{} held: {why}", o.op.kind()),
            });
        }
        !destructive
    });
    let n = held.len() as u64;
    plan.summary.disable = 0;
    plan.summary.delete = 0;
    plan.problems.extend(held);
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{DisableReason, PlannedOp, Summary};

    fn op(key: &str, op: Op) -> PlannedOp {
        PlannedOp {
            key: key.into(),
            label: None,
            remote_id: None,
            op,
        }
    }

    #[test]
    fn holding_keeps_everything_but_disables_and_deletes() {
        let mut plan = TargetPlan {
            summary: Summary {
                enable: 1,
                disable: 2,
                ..Summary::default()
            },
            owned: 10,
            ops: vec![
                op("a", Op::Enable),
                op(
                    "b",
                    Op::Disable {
                        reason: DisableReason::MissingFromSource,
                    },
                ),
                op(
                    "c",
                    Op::Disable {
                        reason: DisableReason::SourceDisabled,
                    },
                ),
            ],
            problems: vec![],
            existing: vec![],
            skipped_users: vec![],
        };
        assert_eq!(hold_destructive(&mut plan, "over the window"), 2);
        assert_eq!(plan.ops.len(), 1);
        assert_eq!(plan.summary.enable, 1);
        assert_eq!(plan.summary.disable, 0);
        assert_eq!(plan.problems[0].key, "b");
        assert_eq!(plan.problems[0].message, "disable held: over the window");
    }
}
