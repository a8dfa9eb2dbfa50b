//! The safety policy: judges a source read and each target's plan against the thresholds, so
//! that an outage or a truncated file never becomes a mass disable. Pure.
//!
//! Rules (limits are inclusive: exactly at a limit is allowed, one over is blocked):
//! - `min_source_users`: fewer users in the source blocks every target.
//! - `max_source_drop_percent`: against the source count of the last run that applied changes;
//!   a drop of more than this percentage blocks every target.
//! - `max_disables`, `max_deletes`: absolute counts per target and run.
//! - `max_disable_percent`, `max_delete_percent`: of the accounts dirsync owns on the target.
//! - `max_quarantined`, `max_quarantined_percent`: records the source set aside
//!   ([`crate::model::Quarantined`]); more than either (the percentage of the source's records)
//!   blocks every target: thousands of bad rows are a broken export, not a few bad records.
//!   Quarantined records count as present for the source-size rules.
//! - `percent_floor`: percentage limits (and the source drop) never block a change of at most
//!   this many accounts, so that on a small installation one leaver is not "10 %".
//!   The effective percentage limit is `max(floor(owned × percent / 100), percent_floor)`.

use serde::{Deserialize, Serialize};

use super::TargetPlan;

/// The thresholds (`[safety]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SafetySettings {
    pub min_source_users: u64,
    pub max_source_drop_percent: f64,
    pub max_disables: Option<u64>,
    pub max_disable_percent: f64,
    pub max_deletes: Option<u64>,
    pub max_delete_percent: f64,
    pub percent_floor: u64,
    /// Quarantined source records allowed (absolute).
    pub max_quarantined: u64,
    /// Quarantined source records allowed, in percent of the source's records.
    pub max_quarantined_percent: f64,
    /// `dirsync apply` refuses saved plans older than this (default 24h).
    pub max_plan_age: std::time::Duration,
}

impl Default for SafetySettings {
    fn default() -> Self {
        SafetySettings {
            min_source_users: 1,
            max_source_drop_percent: 20.0,
            max_disables: None,
            max_disable_percent: 10.0,
            max_deletes: Some(50),
            max_delete_percent: 5.0,
            percent_floor: 2,
            max_quarantined: 50,
            max_quarantined_percent: 5.0,
            max_plan_age: std::time::Duration::from_secs(24 * 3600),
        }
    }
}

/// What the policy knows about the source read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceFacts {
    /// Records the source holds, quarantined ones included.
    pub users: u64,
    /// Records set aside ([`crate::model::Quarantined`]).
    pub quarantined: u64,
    /// Source users of the last run that applied changes (None on a first run).
    pub last_good: Option<u64>,
}

/// One rule a plan broke.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlockReason {
    /// The setting: `min_source_users`, `max_disable_percent`, ...
    pub rule: &'static str,
    /// The count the rule allows.
    pub limit: u64,
    /// The count in this plan (or source read).
    pub actual: u64,
    pub message: String,
}

/// The policy's answer for one target.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verdict {
    Allowed,
    /// Over a limit: nothing is applied.
    Blocked {
        reasons: Vec<BlockReason>,
    },
    /// Over a limit, applied anyway because of `--force` (recorded on the run).
    Forced {
        reasons: Vec<BlockReason>,
    },
}

impl Verdict {
    pub fn from_reasons(reasons: Vec<BlockReason>, force: bool) -> Verdict {
        match (reasons.is_empty(), force) {
            (true, _) => Verdict::Allowed,
            (false, false) => Verdict::Blocked { reasons },
            (false, true) => Verdict::Forced { reasons },
        }
    }

    pub fn is_blocked(&self) -> bool {
        matches!(self, Verdict::Blocked { .. })
    }
}

fn percent_limit(base: u64, percent: f64, floor: u64) -> u64 {
    let p = (base as f64 * percent / 100.0).floor();
    // `p` is finite and non-negative for validated settings (0..=100); the cast saturates.
    (p as u64).max(floor)
}

/// Checks the source read (applies to every target).
pub fn judge_source(settings: &SafetySettings, facts: SourceFacts) -> Vec<BlockReason> {
    let mut reasons = Vec::new();
    if facts.quarantined > settings.max_quarantined {
        reasons.push(BlockReason {
            rule: "max_quarantined",
            limit: settings.max_quarantined,
            actual: facts.quarantined,
            message: format!(
                "{} source records are quarantined, more than max_quarantined = {}; \
                 so many bad records look like a broken export: fix it or use --force",
                facts.quarantined, settings.max_quarantined
            ),
        });
    }
    let q_limit = percent_limit(
        facts.users,
        settings.max_quarantined_percent,
        settings.percent_floor,
    );
    if facts.quarantined > q_limit {
        reasons.push(BlockReason {
            rule: "max_quarantined_percent",
            limit: q_limit,
            actual: facts.quarantined,
            message: format!(
                "{} of the source's {} records are quarantined ({:.1}%, over \
                 max_quarantined_percent = {}%, limit {} records); fix the export or use --force",
                facts.quarantined,
                facts.users,
                facts.quarantined as f64 * 100.0 / facts.users.max(1) as f64,
                settings.max_quarantined_percent,
                q_limit
            ),
        });
    }
    if facts.users < settings.min_source_users {
        reasons.push(BlockReason {
            rule: "min_source_users",
            limit: settings.min_source_users,
            actual: facts.users,
            message: format!(
                "the source returned {} users, fewer than min_source_users = {}; \
                 a source outage or a wrong filter must not disable everyone",
                facts.users, settings.min_source_users
            ),
        });
    }
    if let Some(last) = facts.last_good
        && last > facts.users
    {
        let dropped = last - facts.users;
        let limit = percent_limit(
            last,
            settings.max_source_drop_percent,
            settings.percent_floor,
        );
        if dropped > limit {
            reasons.push(BlockReason {
                rule: "max_source_drop_percent",
                limit,
                actual: dropped,
                message: format!(
                    "the source returned {} users, {} fewer than the {} of the last applied run \
                     ({:.1}% drop, over max_source_drop_percent = {}%, limit {} users)",
                    facts.users,
                    dropped,
                    last,
                    dropped as f64 * 100.0 / last as f64,
                    settings.max_source_drop_percent,
                    limit
                ),
            });
        }
    }
    reasons
}

/// Checks one target's plan.
pub fn judge_plan(settings: &SafetySettings, plan: &TargetPlan) -> Vec<BlockReason> {
    let mut reasons = Vec::new();
    let owned = plan.owned;
    let mut check =
        |rule: &'static str, what: &str, actual: u64, limit: Option<u64>, how: String| {
            if let Some(limit) = limit
                && actual > limit
            {
                reasons.push(BlockReason {
                    rule,
                    limit,
                    actual,
                    message: format!("{actual} {what} planned, over {how} (limit {limit})"),
                });
            }
        };
    let (disables, deletes) = (plan.summary.disable, plan.summary.delete);
    check(
        "max_disables",
        "disables",
        disables,
        settings.max_disables,
        format!(
            "max_disables = {}",
            settings.max_disables.unwrap_or_default()
        ),
    );
    check(
        "max_disable_percent",
        "disables",
        disables,
        Some(percent_limit(
            owned,
            settings.max_disable_percent,
            settings.percent_floor,
        )),
        format!(
            "max_disable_percent = {}% of {owned} owned accounts",
            settings.max_disable_percent
        ),
    );
    check(
        "max_deletes",
        "deletes",
        deletes,
        settings.max_deletes,
        format!("max_deletes = {}", settings.max_deletes.unwrap_or_default()),
    );
    check(
        "max_delete_percent",
        "deletes",
        deletes,
        Some(percent_limit(
            owned,
            settings.max_delete_percent,
            settings.percent_floor,
        )),
        format!(
            "max_delete_percent = {}% of {owned} owned accounts",
            settings.max_delete_percent
        ),
    );
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Summary;

    fn plan(owned: u64, disable: u64, delete: u64) -> TargetPlan {
        TargetPlan {
            summary: Summary {
                disable,
                delete,
                ..Summary::default()
            },
            owned,
            ops: vec![],
            problems: vec![],
            existing: vec![],
            skipped_users: vec![],
        }
    }

    fn rules(r: &[BlockReason]) -> Vec<&'static str> {
        r.iter().map(|r| r.rule).collect()
    }

    #[test]
    fn source_table() {
        let s = SafetySettings::default();
        // (users, last_good, expected rules)
        let cases: &[(u64, Option<u64>, &[&str])] = &[
            (0, None, &["min_source_users"]),
            (1, None, &[]),
            (
                0,
                Some(100),
                &["min_source_users", "max_source_drop_percent"],
            ),
            (80, Some(100), &[]),                          // exactly 20 %
            (79, Some(100), &["max_source_drop_percent"]), // one over
            (120, Some(100), &[]),                         // growth
            (3, Some(5), &[]),                             // 2 gone: within the floor
            (2, Some(5), &["max_source_drop_percent"]),    // 3 gone: over floor and 20 %
            (800_000, Some(1_000_000), &[]),
            (799_999, Some(1_000_000), &["max_source_drop_percent"]),
        ];
        for (users, last_good, want) in cases {
            let got = judge_source(
                &s,
                SourceFacts {
                    users: *users,
                    last_good: *last_good,
                    quarantined: 0,
                },
            );
            assert_eq!(rules(&got), *want, "users {users} last {last_good:?}");
        }
        let custom = SafetySettings {
            min_source_users: 10,
            ..SafetySettings::default()
        };
        assert_eq!(
            rules(&judge_source(
                &custom,
                SourceFacts {
                    users: 10,
                    last_good: None,
                    quarantined: 0,
                }
            )),
            Vec::<&str>::new()
        );
        assert_eq!(
            rules(&judge_source(
                &custom,
                SourceFacts {
                    users: 9,
                    last_good: None,
                    quarantined: 0,
                }
            )),
            vec!["min_source_users"]
        );
    }

    #[test]
    fn quarantine_table() {
        let s = SafetySettings::default();
        // (source records incl. quarantined, quarantined, expected rules)
        let cases: &[(u64, u64, &[&str])] = &[
            (10_000, 0, &[]),
            (10_000, 50, &[]),                  // exactly max_quarantined
            (10_000, 51, &["max_quarantined"]), // 5 % = 500
            (1000, 50, &[]),                    // exactly 5 % and 50
            (1000, 51, &["max_quarantined", "max_quarantined_percent"]),
            (100, 5, &[]),
            (100, 6, &["max_quarantined_percent"]),
            (10, 2, &[]),                          // floor: small installation
            (10, 3, &["max_quarantined_percent"]), // over the floor
            (3, 3, &["max_quarantined_percent"]),  // every record bad
        ];
        for (users, quarantined, want) in cases {
            let got = judge_source(
                &s,
                SourceFacts {
                    users: *users,
                    last_good: None,
                    quarantined: *quarantined,
                },
            );
            assert_eq!(
                rules(&got),
                *want,
                "{users} records, {quarantined} quarantined"
            );
        }
        let got = judge_source(
            &s,
            SourceFacts {
                users: 1000,
                last_good: None,
                quarantined: 51,
            },
        );
        assert!(
            got[0].message.contains("max_quarantined = 50"),
            "{}",
            got[0].message
        );
        assert!(!Verdict::from_reasons(got, true).is_blocked());
    }

    #[test]
    fn plan_table() {
        let s = SafetySettings::default();
        // (owned, disables, deletes, expected rules)
        let cases: &[(u64, u64, u64, &[&str])] = &[
            (1000, 100, 0, &[]),                      // exactly 10 %
            (1000, 101, 0, &["max_disable_percent"]), // one over
            (1000, 0, 50, &[]),                       // exactly 5 % and max_deletes 50
            (1000, 0, 51, &["max_deletes", "max_delete_percent"]),
            (2000, 0, 51, &["max_deletes"]), // 5 % = 100, absolute 50 wins
            (10, 2, 0, &[]),                 // floor: small installation
            (10, 3, 0, &["max_disable_percent"]),
            (15, 0, 2, &[]),
            (15, 0, 3, &["max_delete_percent"]),
            (0, 0, 0, &[]),
        ];
        for (owned, dis, del, want) in cases {
            let got = judge_plan(&s, &plan(*owned, *dis, *del));
            assert_eq!(
                rules(&got),
                *want,
                "owned {owned} disables {dis} deletes {del}"
            );
        }
        let abs = SafetySettings {
            max_disables: Some(5),
            ..SafetySettings::default()
        };
        assert_eq!(
            rules(&judge_plan(&abs, &plan(1000, 5, 0))),
            Vec::<&str>::new()
        );
        assert_eq!(
            rules(&judge_plan(&abs, &plan(1000, 6, 0))),
            vec!["max_disables"]
        );
        let msg = &judge_plan(&s, &plan(1000, 101, 0))[0].message;
        assert!(
            msg.contains("101 disables") && msg.contains("limit 100"),
            "{msg}"
        );
    }

    #[test]
    fn verdicts() {
        assert_eq!(Verdict::from_reasons(vec![], false), Verdict::Allowed);
        let r = judge_source(
            &SafetySettings::default(),
            SourceFacts {
                users: 0,
                last_good: None,
                quarantined: 0,
            },
        );
        assert!(Verdict::from_reasons(r.clone(), false).is_blocked());
        assert!(matches!(
            Verdict::from_reasons(r, true),
            Verdict::Forced { .. }
        ));
    }
}
