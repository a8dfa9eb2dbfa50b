//! The source-read prefilter: decides, user by user while the source is read, whether a user
//! is exactly as recorded on every target, so that it need not be kept in memory. Pure.
//!
//! A user is *settled* on a target when [`super::diff`] would do nothing for it and report
//! nothing about it:
//! - an owned account with the same content hash and the same enabled flag (`unchanged`);
//! - no account, and the user is out of the target's scope (nothing);
//! - no account, and the user is disabled in the source (`skipped`: never created).
//!
//! Users settled on every target are dropped; their accounts are marked in [`Settled::seen`]
//! so that the planner counts them as unchanged instead of missing. Every other user is kept
//! and planned as usual. The planner's result is the same as with the whole source (a property
//! test checks it).

use super::{SkipReason, SkippedUser};
use crate::mapping::{Mapped, RecordedAccount, TargetMapping};
use crate::model::User;

/// What the prefilter settled on one target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// By index into the target's recorded accounts: the account's user was dropped as
    /// unchanged.
    pub seen: Vec<bool>,
    /// Dropped users that are disabled in the source and have no account (the plan's
    /// `skipped` count).
    pub skipped: u64,
    /// Dropped users out of the target's scope, with no account (the plan's `out_of_scope`).
    pub out_of_scope: u64,
    /// The dropped users skipped or out of scope, with the reason (the plan's
    /// `skipped_users`), in source order.
    pub users: Vec<SkippedUser>,
}

/// One target: its mapping, its recorded accounts (sorted by key, as the store returns them)
/// and what was settled so far.
#[derive(Debug, Clone)]
pub struct PrefilterTarget {
    pub mapping: TargetMapping,
    pub recorded: Vec<RecordedAccount>,
    pub settled: Settled,
    /// Where the previous user was found: sources exported in key order then find the next
    /// one right after it, without a binary search.
    next: usize,
}

#[derive(Debug, Clone, Copy)]
enum Mark {
    Seen(usize),
    Skipped,
    OutOfScope,
}

/// The prefilter over all targets of a run.
#[derive(Debug, Clone, Default)]
pub struct Prefilter {
    pub targets: Vec<PrefilterTarget>,
    /// Users read / dropped.
    pub read: u64,
    pub dropped: u64,
    /// Reused for every user (no allocation per user).
    marks: Vec<Mark>,
}

impl Prefilter {
    pub fn new(targets: Vec<(TargetMapping, Vec<RecordedAccount>)>) -> Prefilter {
        Prefilter {
            targets: targets
                .into_iter()
                .map(|(mapping, recorded)| PrefilterTarget {
                    settled: Settled {
                        seen: vec![false; recorded.len()],
                        ..Settled::default()
                    },
                    mapping,
                    recorded,
                    next: 0,
                })
                .collect(),
            read: 0,
            dropped: 0,
            marks: Vec::new(),
        }
    }

    /// True: keep the user (something may be planned for it somewhere). False: it is settled
    /// on every target and marked so.
    pub fn keep(&mut self, user: &User) -> bool {
        self.read += 1;
        // One mark per target, decided for all targets before any is marked.
        let marks = &mut self.marks;
        marks.clear();
        for t in &mut self.targets {
            let found = match t.recorded.get(t.next) {
                Some(r) if r.key == user.key => Ok(t.next),
                _ => t
                    .recorded
                    .binary_search_by(|r| r.key.as_str().cmp(user.key.as_str())),
            };
            if let Ok(i) = found {
                t.next = i + 1;
            }
            match settle(t, user, found) {
                Some(m) => marks.push(m),
                None => return true,
            }
        }
        for (t, &m) in self.targets.iter_mut().zip(marks.iter()) {
            match m {
                Mark::Seen(i) => t.settled.seen[i] = true,
                Mark::Skipped => {
                    t.settled.skipped += 1;
                    t.settled
                        .users
                        .push(SkippedUser::new(&user.key, SkipReason::SourceDisabled));
                }
                Mark::OutOfScope => {
                    t.settled.out_of_scope += 1;
                    if let Some(scope) = t.mapping.filter.out_of_scope(user) {
                        t.settled
                            .users
                            .push(SkippedUser::new(&user.key, SkipReason::Scope { scope }));
                    }
                }
            }
        }
        self.dropped += 1;
        false
    }
}

fn settle(t: &PrefilterTarget, user: &User, found: Result<usize, usize>) -> Option<Mark> {
    match (found, t.mapping.map(user)) {
        // A repeated key is left to the source's duplicate check: keep it.
        (Ok(i), _) if t.settled.seen[i] => None,
        (Ok(i), Mapped::Account(a)) => {
            let r = &t.recorded[i];
            (r.owned && a.hash == r.hash && user.enabled == r.enabled).then_some(Mark::Seen(i))
        }
        (Err(_), Mapped::Filtered) => Some(Mark::OutOfScope),
        (Err(_), Mapped::Account(a)) if !a.enabled => Some(Mark::Skipped),
        _ => None,
    }
}
