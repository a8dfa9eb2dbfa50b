//! The outcome of a run as plain data: what reports, notifications and metrics render
//! (`RunPlan`, per-target `TargetOutcome`, and the summaries of applying, recovering, refreshing).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::TargetConfig;
use crate::connector::TargetKind;
use crate::plan::{BlockReason, TargetPlan, Verdict};
use crate::store::{RunStatus, Trigger};

/// The source read, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SourceSummary {
    pub kind: &'static str,
    pub users: u64,
    /// Source users of the last run that applied changes.
    pub last_applied_users: Option<u64>,
    /// Rules the source read broke (they block every target).
    pub blocked_by: Vec<BlockReason>,
    /// Records the source set aside: nothing is planned under their keys on any target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<crate::model::Quarantined>,
}

/// One target's judged plan.
#[derive(Debug, Clone, Serialize)]
pub struct TargetOutcome {
    pub name: String,
    pub kind: TargetKind,
    pub verdict: Verdict,
    #[serde(flatten)]
    pub plan: TargetPlan,
    /// What reconciling an interrupted earlier run did (apply mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<RecoverySummary>,
    /// What applying the plan did (absent in dry runs and for blocked targets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<ApplySummary>,
    /// How long applying takes on a rate-limited target (`requests_per_second` set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Estimate>,
    /// Why the target was not planned or applied in this run (another instance holds it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// `sync --refresh`: the drift found and the corrections planned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshSummary>,
    /// Why this target failed in this run (it was not reachable, or could not be reconciled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A dry run on first contact could not list the target's existing accounts: its creates
    /// may meet accounts that already exist (`sync` checks again and fails the target).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub existing_unchecked: Option<String>,
    /// Live sync: the window rules a live run went over; its disables and deletes were held
    /// (reported as problems) for the next full run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<crate::plan::BlockReason>,
}

impl TargetOutcome {
    /// The outcome of a target that failed before its plan could be applied.
    pub fn failed(t: &TargetConfig, error: String) -> TargetOutcome {
        TargetOutcome {
            name: t.name.clone(),
            kind: t.kind,
            verdict: Verdict::Allowed,
            plan: TargetPlan::default(),
            recovered: None,
            applied: None,
            estimate: None,
            skipped: None,
            refresh: None,
            error: Some(error),
            existing_unchecked: None,
            held: Vec::new(),
        }
    }
}

/// The expected cost of applying a plan on a paced target.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    pub requests: u64,
    pub requests_per_second: f64,
    pub seconds: u64,
}

/// The result of planning a run: what the reports render.
#[derive(Debug, Clone, Serialize)]
pub struct RunPlan {
    pub run_id: i64,
    pub trigger: Trigger,
    /// Planned only: nothing was sent.
    pub dry_run: bool,
    pub forced: bool,
    pub generated_at: DateTime<Utc>,
    /// The state store used (`StoreLocation::describe`: SQLite path or Postgres host/db).
    pub store: String,
    pub source: SourceSummary,
    pub targets: Vec<TargetOutcome>,
}

impl RunPlan {
    pub fn blocked(&self) -> bool {
        self.targets.iter().any(|t| t.verdict.is_blocked())
    }

    pub fn changes(&self) -> u64 {
        self.targets.iter().map(|t| t.plan.summary.changes()).sum()
    }

    /// Operations applied and failed, over all targets.
    pub fn applied_failed(&self) -> (u64, u64) {
        self.targets
            .iter()
            .filter_map(|t| t.applied.as_ref())
            .fold((0, 0), |(a, f), s| (a + s.applied, f + s.failed))
    }

    /// Whether a shutdown request left operations of some target unsent.
    pub fn interrupted(&self) -> bool {
        self.targets
            .iter()
            .any(|t| t.applied.as_ref().is_some_and(|a| a.stopped))
    }

    /// Operations left for the next run (shutdown, target-fatal errors), over all targets.
    pub fn left(&self) -> u64 {
        self.targets
            .iter()
            .filter_map(|t| t.applied.as_ref())
            .map(|a| a.interrupted)
            .sum()
    }

    /// What this run adds to the process-wide counters (`metrics::record_run`).
    pub fn counts(&self) -> crate::metrics::RunCounts {
        let mut operations = Vec::new();
        let (mut owned, mut complete) = (Vec::new(), Vec::new());
        for t in &self.targets {
            if t.error.is_some() || t.skipped.is_some() || t.verdict.is_blocked() {
                continue;
            }
            // Owned after the run: owned before it, plus the creates, minus the deletes applied.
            let done = |kind: &str| {
                t.applied
                    .as_ref()
                    .and_then(|a| a.by_kind.get(kind))
                    .map_or(0, |c| c.succeeded)
            };
            owned.push((
                t.name.clone(),
                (t.plan.owned + done("create")).saturating_sub(done("delete")),
            ));
            if t.applied.as_ref().is_some_and(|a| {
                a.failed == 0 && a.interrupted == 0 && !a.stopped && a.fatal.is_none()
            }) {
                complete.push(t.name.clone());
            }
        }
        for t in &self.targets {
            let Some(a) = &t.applied else { continue };
            for (kind, c) in &a.by_kind {
                for (outcome, n) in [
                    ("succeeded", c.succeeded),
                    ("failed", c.failed),
                    ("skipped", c.skipped),
                ] {
                    if n > 0 {
                        operations.push((t.name.clone(), kind.clone(), outcome, n));
                    }
                }
            }
        }
        crate::metrics::RunCounts {
            source_partial: false,
            source_users: self.source.users,
            source_quarantined: self.source.quarantined.len() as u64,
            operations,
            owned,
            complete,
        }
    }

    /// How the run ended: failed if a target failed, interrupted if a shutdown left operations
    /// unsent, blocked if any target was blocked, partial if any operation failed or (applying)
    /// source records were quarantined.
    pub fn status(&self) -> RunStatus {
        if self.targets.iter().any(|t| t.error.is_some()) {
            RunStatus::Failed
        } else if self.interrupted() {
            RunStatus::Interrupted
        } else if self.blocked() || self.targets.iter().any(|t| !t.held.is_empty()) {
            // A live run that held disables or deletes (safety.window) is blocked in part.
            RunStatus::Blocked
        } else if self.applied_failed().1 > 0
            || (!self.dry_run && !self.source.quarantined.is_empty())
        {
            RunStatus::Partial
        } else {
            RunStatus::Succeeded
        }
    }
}

/// One failed operation, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub key: String,
    pub op: &'static str,
    pub error: String,
}

/// Outcomes of one kind of operation.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct KindCounts {
    pub succeeded: u64,
    pub failed: u64,
    pub skipped: u64,
}

/// What applying one target did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplySummary {
    /// Outcomes per operation kind (`create`, `update`, ...).
    pub by_kind: std::collections::BTreeMap<String, KindCounts>,
    /// Operations left for the next run: never sent because a shutdown was requested or a
    /// target-fatal error stopped dispatch (left `pending`, or put back as skipped "not sent"),
    /// plus requests still in flight when the shutdown grace ran out (left `sent`, reconciled
    /// by the next run).
    pub interrupted: u64,
    /// A shutdown request stopped this apply before every operation was sent.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
    /// The target-fatal error (credentials refused, host unreachable) that stopped dispatch to
    /// this target; its unsent operations are left for the next run, not failed one by one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fatal: Option<String>,
    pub applied: u64,
    pub failed: u64,
    /// Operations not sent because an earlier operation of the same account failed.
    pub skipped: u64,
    pub failures: Vec<Failure>,
    /// Partial successes and other remarks the target made (e.g. "created, but ...").
    pub notes: Vec<Failure>,
}

/// What reconciling an interrupted run (`engine::recover`) found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecoverySummary {
    /// `pending` operations of earlier runs, never sent: marked skipped (the new plan redoes them).
    pub superseded: u64,
    /// `sent` creates the target has: recorded as succeeded (the account is owned).
    pub confirmed: u64,
    /// `sent` operations that did not take effect or cannot be known: failed, re-planned.
    pub replanned: u64,
}

/// What `sync --refresh` found and planned on one target (the `refresh` object of the
/// target in the JSON report).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RefreshSummary {
    /// Accounts the target listed.
    pub remote_accounts: u64,
    /// Keys of owned accounts changed by hand (planned against the target's state).
    pub drifted: Vec<String>,
    /// Operations planned on those accounts: corrections back to the source of truth.
    pub corrected_drift: u64,
    /// Keys of owned accounts the target no longer has.
    pub deleted_remotely: Vec<String>,
    /// Of those, the keys planned for re-creation (`recreate_deleted = true`).
    pub recreated: Vec<String>,
    /// Remote accounts dirsync does not own (left alone).
    pub unowned: u64,
}
