//! The skipped users of a target, as the text and Markdown reports list them: grouped by
//! reason (out of scope, disabled in the source, quarantined), [`SHOWN`] of each reason, then
//! a count (the JSON report lists every one).

use crate::plan::{SkipReason, SkippedUser, TargetPlan};

/// Users of one reason listed in text and Markdown before "and N more".
pub const SHOWN: usize = 50;

/// One reason's users: the reason as reports print it, the users shown, and how many more.
pub struct Group<'a> {
    pub reason: String,
    pub shown: Vec<&'a SkippedUser>,
    pub more: usize,
}

/// The order reasons are listed in.
fn rank(r: &SkipReason) -> u8 {
    match r {
        SkipReason::SourceDisabled => 0,
        SkipReason::Quarantined => 1,
        SkipReason::Scope { .. } => 2,
    }
}

/// The plan's skipped users grouped by reason (each reason's users in key order).
pub fn groups(plan: &TargetPlan) -> Vec<Group<'_>> {
    let mut by: Vec<&SkippedUser> = plan.skipped_users.iter().collect();
    by.sort_by(|a, b| {
        (rank(&a.reason), &a.reason, &a.key).cmp(&(rank(&b.reason), &b.reason, &b.key))
    });
    let mut out: Vec<Group<'_>> = Vec::new();
    for s in by {
        let reason = s.reason.to_string();
        match out.last_mut() {
            Some(g) if g.reason == reason => {
                if g.shown.len() < SHOWN {
                    g.shown.push(s);
                } else {
                    g.more += 1;
                }
            }
            _ => out.push(Group {
                reason,
                shown: vec![s],
                more: 0,
            }),
        }
    }
    out
}
