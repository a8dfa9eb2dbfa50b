//! One run, from source to judged plans: read the source, map and diff each target against the
//! store, apply the safety policy, and record the run. Applying plans comes with the engine.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::{info, warn};

use crate::config::{Config, SourceConfig, TargetConfig};
use crate::mapping::{Account, Mapped};
use crate::model::Snapshot;
use crate::plan::policy::{judge_plan, judge_source};
use crate::plan::{
    BlockReason, DiffInput, PlanSettings, SourceFacts, TargetPlan, Verdict, diff, triage,
};
use crate::source::csv::CsvError;
use crate::store::{NewRun, RunFinish, RunStatus, Store, StoreError, Trigger};
use crate::target::TargetKind;

/// Errors of a run. Each names the part that failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("source: {0}")]
    Csv(#[from] CsvError),
    #[error("source: the reader task failed: {0}")]
    SourceTask(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no target named {name:?}; configured: {known}")]
    UnknownTarget { name: String, known: String },
    #[error("no enabled target to plan (all targets have enabled = false)")]
    NoTargets,
}

/// What the caller asks of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub trigger: Trigger,
    /// Only these targets (all enabled targets when empty).
    pub targets: Vec<String>,
    /// Apply even when the safety policy blocks (recorded on the run).
    pub force: bool,
    pub now: DateTime<Utc>,
}

/// The source read, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SourceSummary {
    pub kind: &'static str,
    pub users: u64,
    /// Source users of the last run that applied changes.
    pub last_applied_users: Option<u64>,
    /// Rules the source read broke (they block every target).
    pub blocked_by: Vec<BlockReason>,
}

/// One target's judged plan.
#[derive(Debug, Clone, Serialize)]
pub struct TargetOutcome {
    pub name: String,
    pub kind: TargetKind,
    pub verdict: Verdict,
    #[serde(flatten)]
    pub plan: TargetPlan,
}

/// The result of planning a run: what the reports render.
#[derive(Debug, Clone, Serialize)]
pub struct RunPlan {
    pub run_id: i64,
    pub trigger: Trigger,
    pub forced: bool,
    pub generated_at: DateTime<Utc>,
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
}

/// Reads the configured source completely (on a blocking thread).
pub async fn read_source(source: &SourceConfig) -> Result<Snapshot, RunError> {
    match source {
        SourceConfig::Csv(settings) => {
            let settings = settings.clone();
            tokio::task::spawn_blocking(move || crate::source::csv::load(&settings))
                .await
                .map_err(|e| RunError::SourceTask(e.to_string()))?
                .map_err(RunError::from)
        }
    }
}

/// The targets a run covers, in config order.
pub fn select_targets<'a>(
    config: &'a Config,
    names: &[String],
) -> Result<Vec<&'a TargetConfig>, RunError> {
    for n in names {
        if !config.targets.iter().any(|t| &t.name == n) {
            return Err(RunError::UnknownTarget {
                name: n.clone(),
                known: config
                    .targets
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let selected: Vec<&TargetConfig> = config
        .targets
        .iter()
        .filter(|t| {
            if names.is_empty() {
                t.enabled
            } else {
                names.contains(&t.name)
            }
        })
        .collect();
    if selected.is_empty() {
        return Err(RunError::NoTargets);
    }
    Ok(selected)
}

/// Maps every user of the snapshot for one target (for adoption and tests; the planner maps
/// lazily). The result stays sorted by key.
pub fn map_users(target: &TargetConfig, snapshot: &Snapshot) -> (Vec<Account>, Vec<(String, String)>) {
    let mut desired = Vec::with_capacity(snapshot.len());
    let mut invalid = Vec::new();
    for u in snapshot.users() {
        match target.mapping.map(u) {
            Mapped::Account(a) => desired.push(a),
            Mapped::Filtered => {}
            Mapped::Invalid(why) => invalid.push((u.key.clone(), why)),
        }
    }
    (desired, invalid)
}

/// Plans one target against the store: light rows for every account, stored attributes only
/// for the accounts whose content hash changed.
pub async fn plan_target(
    store: &dyn Store,
    target: &TargetConfig,
    snapshot: &Snapshot,
    now: DateTime<Utc>,
) -> Result<TargetPlan, StoreError> {
    let recorded = store.load_accounts(&target.name).await?;
    let users = snapshot.users();
    let triage = triage(&target.mapping, users, &recorded);
    let states = if triage.need_state.is_empty() {
        HashMap::new()
    } else {
        store
            .load_account_states(&target.name, &triage.need_state)
            .await?
    };
    let settings = PlanSettings {
        on_missing: target.on_missing,
        delete_after: target.delete_after,
        now,
    };
    Ok(diff(
        DiffInput {
            mapping: &target.mapping,
            users,
            recorded: &recorded,
            triage: &triage,
            states: &states,
        },
        &settings,
    ))
}

/// Reads the source, plans and judges every selected target, and records the run (a dry run
/// records a `dry_run` run row and changes no account). Errors before the run row exists
/// (config, source) write nothing.
pub async fn plan_run(
    config: &Config,
    store: &dyn Store,
    opts: &RunOptions,
) -> Result<RunPlan, RunError> {
    let targets = select_targets(config, &opts.targets)?;
    let snapshot = read_source(&config.source).await?;
    let last_good = store.last_good_source_count().await?;
    let facts = SourceFacts {
        users: snapshot.len() as u64,
        last_good,
    };
    let source_reasons = judge_source(&config.safety, facts);
    let run_id = store
        .begin_run(&NewRun {
            trigger: opts.trigger,
            started_at: opts.now,
            targets: targets.iter().map(|t| t.name.clone()).collect(),
            forced: opts.force,
        })
        .await?;
    info!(run_id, trigger = opts.trigger.as_str(), users = facts.users, "run started");
    let result = plan_targets(store, &targets, &snapshot, &config.safety, &source_reasons, opts).await;
    let outcomes = match result {
        Ok(o) => o,
        Err(e) => {
            let finish = RunFinish {
                status: RunStatus::Failed,
                finished_at: Utc::now(),
                source_count: Some(facts.users),
                planned: 0,
                applied: 0,
                failed: 0,
                error: Some(e.to_string()),
                summary: serde_json::Value::Null,
            };
            if let Err(e2) = store.finish_run(run_id, &finish).await {
                warn!(run_id, error = %e2, "could not record the failed run");
            }
            return Err(e.into());
        }
    };
    let plan = RunPlan {
        run_id,
        trigger: opts.trigger,
        forced: opts.force,
        generated_at: Utc::now(),
        source: SourceSummary {
            kind: config.source.kind(),
            users: facts.users,
            last_applied_users: last_good,
            blocked_by: source_reasons,
        },
        targets: outcomes,
    };
    let status = if plan.blocked() {
        RunStatus::Blocked
    } else {
        RunStatus::Succeeded
    };
    store
        .finish_run(
            run_id,
            &RunFinish {
                status,
                finished_at: Utc::now(),
                source_count: Some(facts.users),
                planned: plan.changes(),
                applied: 0,
                failed: 0,
                error: None,
                summary: run_summary(&plan),
            },
        )
        .await?;
    for t in &plan.targets {
        if let Verdict::Blocked { reasons } = &t.verdict {
            for r in reasons {
                warn!(run_id, target = %t.name, rule = r.rule, limit = r.limit, actual = r.actual, "blocked by safety policy: {}", r.message);
            }
        }
    }
    info!(run_id, status = status.as_str(), changes = plan.changes(), "run planned");
    Ok(plan)
}

async fn plan_targets(
    store: &dyn Store,
    targets: &[&TargetConfig],
    snapshot: &Snapshot,
    safety: &crate::plan::SafetySettings,
    source_reasons: &[BlockReason],
    opts: &RunOptions,
) -> Result<Vec<TargetOutcome>, StoreError> {
    let mut out = Vec::with_capacity(targets.len());
    for t in targets {
        let plan = plan_target(store, t, snapshot, opts.now).await?;
        let mut reasons = source_reasons.to_vec();
        reasons.extend(judge_plan(safety, &plan));
        info!(target = %t.name, creates = plan.summary.create, updates = plan.summary.update,
              disables = plan.summary.disable, deletes = plan.summary.delete, "target planned");
        out.push(TargetOutcome {
            name: t.name.clone(),
            kind: t.kind,
            verdict: Verdict::from_reasons(reasons, opts.force),
            plan,
        });
    }
    Ok(out)
}

/// The per-target summary stored on the run row (what `dirsync runs show` prints).
pub fn run_summary(plan: &RunPlan) -> serde_json::Value {
    serde_json::json!({
        "source": plan.source,
        "targets": plan.targets.iter().map(|t| serde_json::json!({
            "name": t.name,
            "kind": t.kind,
            "verdict": t.verdict,
            "owned": t.plan.owned,
            "summary": t.plan.summary,
        })).collect::<Vec<_>>(),
    })
}
