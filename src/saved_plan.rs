//! Saved plans (`dirsync plan --out FILE`, `dirsync apply FILE`): the plan file, its
//! fingerprints and staleness checks, and one-user scoping (`sync --user`). The commands
//! themselves are in `cli::plan`.
//!
//! A plan file is the JSON report (schema `dirsync.report`, version 1) with two more top-level
//! fields: `"kind": "plan"` and `"saved"`:
//! `{ "created_at", "config", "fingerprints": { target: { "state_version", "accounts_hash",
//!    "unfinished", "desired_hash" } }, "accounts": { target: { key: account } } }`.
//! `accounts` carries the desired account of every `update`, `set_roles` and `set_groups`
//! operation (the report itself leaves it out, as it repeats the source), so that applying the
//! file sends exactly what was reviewed.
//!
//! A fingerprint is what a target's plan was computed from: the state (newest journaled
//! operation id, a hash of the recorded account rows, the count of unfinished operations) and
//! the desired snapshot (a hash of the mapped accounts). Applying a saved plan recomputes it,
//! before anything is sent and again under the target's lock, and refuses on any difference.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{Config, TargetConfig};
use crate::mapping::Account;
use crate::model::Snapshot;
use crate::outcome::RunPlan;
use crate::plan::{BlockReason, Op, Summary, TargetPlan, Verdict};
use crate::report::{self, Format};
use crate::store::{Store, StoreError};

/// The `kind` marker of a plan file.
pub const KIND: &str = "plan";

/// What one target's plan was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Newest journaled operation id of the target ([`Store::state_version`]).
    pub state_version: i64,
    /// xxh3-128 over the recorded account rows (key, remote id, hash, enabled, owned,
    /// adopted, disabled_at), in key order: changes with any applied operation or adoption.
    pub accounts_hash: String,
    /// Operations of the target left unfinished by an interrupted run.
    pub unfinished: u64,
    /// xxh3-128 over the desired snapshot for the target: each mapped account's key, content
    /// hash and enabled flag, then the keys of users that could not be mapped.
    pub desired_hash: String,
}

impl Fingerprint {
    /// What differs from `then` (the saved fingerprint), for people; empty when equal.
    pub fn differences(&self, then: &Fingerprint, target: &str) -> Vec<String> {
        let mut d = Vec::new();
        if self.state_version != then.state_version {
            d.push(format!(
                "target {target:?}: operations were applied since the plan was made \
                 (newest journaled operation {} now, {} then)",
                self.state_version, then.state_version
            ));
        }
        if self.accounts_hash != then.accounts_hash {
            d.push(format!(
                "target {target:?}: the recorded accounts changed since the plan was made \
                 (another run applied changes, or accounts were adopted)"
            ));
        }
        if self.unfinished > 0 {
            d.push(format!(
                "target {target:?}: {} left unfinished by an interrupted run \
                 (run `dirsync sync` to reconcile them)",
                crate::report::count(self.unfinished, "operation is", "operations are")
            ));
        }
        if self.desired_hash != then.desired_hash {
            d.push(format!(
                "target {target:?}: the source changed since the plan was made \
                 (the desired accounts differ)"
            ));
        }
        d
    }
}

/// Computes a target's fingerprint from the store and the source snapshot.
pub async fn fingerprint(
    store: &dyn Store,
    target: &TargetConfig,
    snapshot: &Snapshot,
) -> Result<Fingerprint, StoreError> {
    let state_version = store.state_version(&target.name).await?;
    let unfinished = store.unfinished_operations(&target.name).await?.len() as u64;
    let recorded = store.load_accounts(&target.name).await?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for a in &recorded {
        let line = format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1e}",
            a.key,
            a.remote_id.as_deref().unwrap_or(""),
            a.hash,
            a.enabled,
            a.owned,
            a.adopted,
            a.disabled_at.map(|t| t.timestamp_micros()).unwrap_or(0),
        );
        h.update(line.as_bytes());
    }
    let accounts_hash = format!("{:032x}", h.digest128());
    let (desired, invalid) = crate::mapping::map_all(&target.mapping, snapshot);
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for a in &desired {
        h.update(format!("{}\u{1f}{}\u{1f}{}\u{1e}", a.key, a.hash, a.enabled).as_bytes());
    }
    h.update(b"\x1d");
    for (key, why) in &invalid {
        h.update(format!("{key}\u{1f}{why}\u{1e}").as_bytes());
    }
    Ok(Fingerprint {
        state_version,
        accounts_hash,
        unfinished,
        desired_hash: format!("{:032x}", h.digest128()),
    })
}

/// The `saved` section of a plan file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedInfo {
    pub created_at: DateTime<Utc>,
    /// The configuration file the plan was made with (canonical path).
    pub config: PathBuf,
    pub fingerprints: BTreeMap<String, Fingerprint>,
    /// Desired accounts of `update`, `set_roles` and `set_groups` operations, per target and key.
    #[serde(default)]
    pub accounts: BTreeMap<String, BTreeMap<String, Account>>,
}

/// One target of a plan file.
#[derive(Debug, Clone, Deserialize)]
pub struct SavedTarget {
    pub name: String,
    /// The safety verdict when the plan was made.
    pub verdict: serde_json::Value,
    #[serde(default)]
    pub skipped: Option<String>,
    #[serde(flatten)]
    pub plan: TargetPlan,
}

/// A plan file, read back.
#[derive(Debug, Clone, Deserialize)]
pub struct SavedPlan {
    pub schema: String,
    pub version: u32,
    #[serde(default)]
    pub kind: Option<String>,
    pub saved: SavedInfo,
    pub targets: Vec<SavedTarget>,
}

/// Errors reading or writing a plan file.
#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    #[error("cannot write the plan file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the plan file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a dirsync plan file: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The canonical form of a configuration path (as given when it cannot be resolved).
pub fn config_id(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Writes a dry-run plan with its fingerprints (atomically: a temporary file, then renamed).
pub fn write(
    path: &Path,
    plan: &RunPlan,
    config: &Config,
    fingerprints: BTreeMap<String, Fingerprint>,
) -> Result<(), PlanFileError> {
    let werr = |source| PlanFileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut accounts: BTreeMap<String, BTreeMap<String, Account>> = BTreeMap::new();
    for t in &plan.targets {
        for op in &t.plan.ops {
            if let Op::Update { account, .. }
            | Op::SetRoles { account, .. }
            | Op::SetGroups { account, .. } = &op.op
            {
                accounts
                    .entry(t.name.clone())
                    .or_default()
                    .insert(op.key.clone(), account.clone());
            }
        }
    }
    let saved = SavedInfo {
        created_at: plan.generated_at,
        config: config_id(&config.path),
        fingerprints,
        accounts,
    };
    let mut value: serde_json::Value =
        serde_json::from_str(&report::render(plan, Format::Json, true))
            .map_err(|e| werr(std::io::Error::other(e)))?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("kind".into(), KIND.into());
        obj.insert(
            "saved".into(),
            serde_json::to_value(&saved).map_err(|e| werr(std::io::Error::other(e)))?,
        );
    }
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_string_pretty(&value).map_err(|e| werr(std::io::Error::other(e)))?;
    std::fs::write(&tmp, text + "\n").map_err(werr)?;
    std::fs::rename(&tmp, path).map_err(werr)
}

/// Reads a plan file and puts the desired accounts back into its operations.
pub fn read(path: &Path) -> Result<SavedPlan, PlanFileError> {
    let invalid = |message: String| PlanFileError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| PlanFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut plan: SavedPlan = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    if plan.schema != "dirsync.report" || plan.kind.as_deref() != Some(KIND) {
        return Err(invalid(format!(
            "schema {:?}, kind {:?} (expected \"dirsync.report\", \"{KIND}\"; write one with \
             `dirsync plan --out FILE`)",
            plan.schema, plan.kind
        )));
    }
    if plan.version != report::SCHEMA_VERSION {
        return Err(invalid(format!(
            "schema version {} (this dirsync reads version {})",
            plan.version,
            report::SCHEMA_VERSION
        )));
    }
    for t in &mut plan.targets {
        let accounts = plan.saved.accounts.get(&t.name);
        for op in &mut t.plan.ops {
            if let Op::Update { account, .. }
            | Op::SetRoles { account, .. }
            | Op::SetGroups { account, .. } = &mut op.op
            {
                match accounts.and_then(|a| a.get(&op.key)) {
                    Some(a) => *account = a.clone(),
                    None => {
                        return Err(invalid(format!(
                            "target {:?}: the {} operation of {:?} has no desired account",
                            t.name,
                            op.op.kind(),
                            op.key
                        )));
                    }
                }
            }
        }
    }
    Ok(plan)
}

impl SavedPlan {
    /// Target names of the plan, in file order (skipped targets too: they have no operations).
    pub fn target_names(&self) -> Vec<String> {
        self.targets.iter().map(|t| t.name.clone()).collect()
    }

    fn target(&self, name: &str) -> Option<&SavedTarget> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// Checks made before anything is opened: age and configuration. Returns the reasons to
    /// refuse (empty: go on).
    pub fn check_static(&self, config: &Config, now: DateTime<Utc>) -> Vec<String> {
        let mut why = Vec::new();
        let age = now.signed_duration_since(self.saved.created_at);
        let max = config.safety.max_plan_age;
        if age.to_std().is_ok_and(|a| a > max) {
            why.push(format!(
                "the plan is {} old, older than safety.max_plan_age ({}); make a new one",
                crate::report::words::duration(std::time::Duration::from_secs(
                    age.num_seconds().max(0) as u64
                )),
                crate::report::words::duration(max)
            ));
        }
        let here = config_id(&config.path);
        if here != self.saved.config {
            why.push(format!(
                "the plan was made with the configuration {}, not {}",
                self.saved.config.display(),
                here.display()
            ));
        }
        for t in &self.targets {
            if !config.targets.iter().any(|c| c.name == t.name) {
                why.push(format!("target {:?} is no longer configured", t.name));
            }
            if !self.saved.fingerprints.contains_key(&t.name) {
                why.push(format!(
                    "target {:?} has no fingerprint in the plan",
                    t.name
                ));
            }
        }
        why
    }

    /// Compares the saved fingerprints with the state and source now. Returns what changed.
    pub async fn check_state(
        &self,
        config: &Config,
        store: &dyn Store,
        snapshot: &Snapshot,
    ) -> Result<Vec<String>, StoreError> {
        let mut why = Vec::new();
        for t in &self.targets {
            let (Some(tc), Some(then)) = (
                config.targets.iter().find(|c| c.name == t.name),
                self.saved.fingerprints.get(&t.name),
            ) else {
                continue;
            };
            let now = fingerprint(store, tc, snapshot).await?;
            why.extend(now.differences(then, &t.name));
        }
        Ok(why)
    }

    /// Targets whose saved verdict is `blocked` (or `forced`), with their reasons.
    pub fn blocked(&self) -> Vec<(String, Vec<BlockReason>)> {
        self.targets
            .iter()
            .filter_map(|t| match verdict(&t.verdict, false) {
                Verdict::Blocked { reasons } => Some((t.name.clone(), reasons)),
                _ => None,
            })
            .collect()
    }
}

/// A rule name as the policy spells it (the policy's names are static strings).
fn rule_name(rule: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "min_source_users",
        "max_source_drop_percent",
        "max_disables",
        "max_disable_percent",
        "max_deletes",
        "max_delete_percent",
        "max_quarantined",
        "max_quarantined_percent",
    ];
    KNOWN
        .iter()
        .find(|k| **k == rule)
        .copied()
        .unwrap_or("saved_plan")
}

/// The saved verdict, with `--force` applied.
fn verdict(v: &serde_json::Value, force: bool) -> Verdict {
    let reasons: Vec<BlockReason> = v
        .get("reasons")
        .and_then(|r| r.as_array())
        .map(|rs| {
            rs.iter()
                .map(|r| BlockReason {
                    rule: rule_name(r.get("rule").and_then(|x| x.as_str()).unwrap_or("")),
                    limit: r.get("limit").and_then(|x| x.as_u64()).unwrap_or(0),
                    actual: r.get("actual").and_then(|x| x.as_u64()).unwrap_or(0),
                    message: r
                        .get("message")
                        .and_then(|x| x.as_str())
                        .unwrap_or("")
                        .to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    match v.get("status").and_then(|s| s.as_str()) {
        // A plan made with `--force` was still over a limit: applying it needs `--force` too.
        Some("blocked" | "forced") => Verdict::from_reasons(reasons, force),
        _ => Verdict::Allowed,
    }
}

/// Why a saved plan is not applied to a target (`RunError::StalePlan` / `RunError::Store` in
/// a run).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The plan no longer matches the state or the source; nothing was sent.
    #[error("{0}")]
    Stale(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A target's saved plan and verdict, after checking (under the target's lock) that the state
/// and the source are still what the plan was computed from.
pub async fn checked_target(
    saved: &SavedPlan,
    store: &dyn Store,
    target: &TargetConfig,
    snapshot: &Snapshot,
    force: bool,
) -> Result<(TargetPlan, Verdict), CheckError> {
    let (Some(t), Some(then)) = (
        saved.target(&target.name),
        saved.saved.fingerprints.get(&target.name),
    ) else {
        return Err(CheckError::Stale(format!(
            "target {:?} is not in the saved plan",
            target.name
        )));
    };
    let now = fingerprint(store, target, snapshot).await?;
    let why = now.differences(then, &target.name);
    if !why.is_empty() {
        return Err(CheckError::Stale(format!(
            "the saved plan no longer applies; nothing was sent: {}",
            why.join("; ")
        )));
    }
    Ok((t.plan.clone(), verdict(&t.verdict, force)))
}

/// Counts the operations of a plan per kind (the other counts stay as they were).
pub fn recount(summary: &Summary, plan_ops: &[crate::plan::PlannedOp]) -> Summary {
    let mut s = Summary {
        unchanged: summary.unchanged,
        not_owned: summary.not_owned,
        skipped: summary.skipped,
        exists_unowned: summary.exists_unowned,
        ..Summary::default()
    };
    for op in plan_ops {
        match op.op {
            Op::Create { .. } => s.create += 1,
            Op::Update { .. } => s.update += 1,
            Op::SetRoles { .. } => s.set_roles += 1,
            Op::SetGroups { .. } => s.set_groups += 1,
            Op::Enable => s.enable += 1,
            Op::Disable { .. } => s.disable += 1,
            Op::Delete { .. } => s.delete += 1,
        }
    }
    s
}

/// Keeps only one source key's operations and problems (`sync --user`). The counts of accounts
/// left alone are not about this user and are cleared.
pub fn only_user(mut plan: TargetPlan, key: &str) -> TargetPlan {
    plan.ops.retain(|o| o.key == key);
    plan.problems.retain(|p| p.key == key);
    plan.skipped_users.retain(|s| s.key == key);
    plan.summary = recount(&Summary::default(), &plan.ops);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{DisableReason, PlannedOp};

    fn op(key: &str, op: Op) -> PlannedOp {
        PlannedOp {
            key: key.into(),
            label: None,
            remote_id: Some(format!("r-{key}")),
            op,
        }
    }

    #[test]
    fn only_user_keeps_one_key_and_recounts() {
        let plan = TargetPlan {
            summary: Summary {
                enable: 1,
                disable: 2,
                unchanged: 7,
                ..Summary::default()
            },
            owned: 10,
            ops: vec![
                op(
                    "E1",
                    Op::Disable {
                        reason: DisableReason::MissingFromSource,
                    },
                ),
                op("E2", Op::Enable),
                op(
                    "E2",
                    Op::Disable {
                        reason: DisableReason::SourceDisabled,
                    },
                ),
            ],
            problems: vec![],
            existing: vec![],
            skipped_users: vec![],
        };
        let one = only_user(plan, "E2");
        assert_eq!(one.ops.len(), 2);
        assert_eq!(one.summary.enable, 1);
        assert_eq!(one.summary.disable, 1);
        assert_eq!(one.summary.unchanged, 0);
        assert_eq!(one.owned, 10);
    }

    #[test]
    fn saved_verdicts_and_force() {
        let blocked = serde_json::json!({"status": "blocked", "reasons": [
            {"rule": "max_disable_percent", "limit": 2, "actual": 5, "message": "too many"}]});
        assert!(verdict(&blocked, false).is_blocked());
        match verdict(&blocked, true) {
            Verdict::Forced { reasons } => assert_eq!(reasons[0].rule, "max_disable_percent"),
            v => panic!("{v:?}"),
        }
        assert_eq!(
            verdict(&serde_json::json!({"status": "allowed"}), false),
            Verdict::Allowed
        );
        let forced = serde_json::json!({"status": "forced", "reasons": [
            {"rule": "max_deletes", "limit": 1, "actual": 2, "message": "too many"}]});
        assert!(verdict(&forced, false).is_blocked());
    }

    #[test]
    fn planned_ops_round_trip_through_json() {
        let ops = vec![
            op(
                "E1",
                Op::Disable {
                    reason: DisableReason::MissingFromSource,
                },
            ),
            op(
                "E2",
                Op::Update {
                    changes: vec![crate::plan::FieldChange {
                        field: "title".into(),
                        before: Some("a".into()),
                        after: Some("b".into()),
                    }],
                    account: Account::default(),
                },
            ),
        ];
        let text = serde_json::to_string(&ops).unwrap();
        let back: Vec<PlannedOp> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, ops);
    }
}
