//! One run, from source to judged plans: read the source, map and diff each target against the
//! store, apply the safety policy, and record the run. Applying plans comes with the engine.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use crate::config::{Config, SourceConfig, TargetConfig};
use crate::connector::Connector;
use crate::engine::{self, EngineError};
use crate::mapping::Account;
use crate::model::Snapshot;
pub use crate::outcome::{Estimate, RunPlan, SourceSummary, TargetOutcome};
use crate::plan::held::Keyless;
use crate::plan::policy::{judge_plan, judge_source};
use crate::plan::{
    BlockReason, DiffInput, PlanSettings, Prefilter, Settled, SourceFacts, TargetPlan, UserProblem,
    Verdict, diff, existing, triage,
};
use crate::source::SourceError;
use crate::store::{
    AccountChange, NewRun, RecordedAccount, RunFinish, RunStatus, Store, StoreError, Trigger,
};

/// Errors of a run. Each names the part that failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("source: {0}")]
    Source(#[from] SourceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no target named {name:?}; configured: {known}")]
    UnknownTarget { name: String, known: String },
    #[error("no enabled target to plan (all targets have enabled = false)")]
    NoTargets,
    #[error("target {0:?}: no connector")]
    NoConnector(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("refresh: {0}")]
    Drift(#[from] crate::drift::DriftError),
    /// A saved plan no longer matches the state (`dirsync apply`); nothing was sent.
    #[error("{0}")]
    StalePlan(String),
    /// First contact with a target (no account owned yet): its accounts could not be listed,
    /// so creates that would collide with existing accounts cannot be told apart; nothing
    /// was sent.
    #[error(
        "target {target:?}: cannot list the existing accounts before a first sync: {message}; nothing was sent"
    )]
    FirstContact { target: String, message: String },
    /// A prefiltered snapshot reached a planner without the prefilter's marks (a bug; nothing
    /// was planned from it).
    #[error("target {0:?}: internal error: a prefiltered source snapshot cannot be planned here")]
    PartialSnapshot(String),
}

impl From<crate::saved_plan::CheckError> for RunError {
    fn from(e: crate::saved_plan::CheckError) -> Self {
        match e {
            crate::saved_plan::CheckError::Stale(why) => RunError::StalePlan(why),
            crate::saved_plan::CheckError::Store(e) => RunError::Store(e),
        }
    }
}

impl RunError {
    /// Failures that concern one target only (it could not be reached or reconciled): the run
    /// goes on with the other targets.
    pub fn is_target_local(&self) -> bool {
        matches!(
            self,
            RunError::Engine(EngineError::Reconcile { .. } | EngineError::TargetFatal { .. })
                | RunError::Drift(_)
                | RunError::NoConnector(_)
                | RunError::FirstContact { .. }
        )
    }
}

/// What a run plans for each target.
#[derive(Debug, Clone, Default)]
pub enum Scope {
    /// Everything the source asks for (scheduled and manual runs).
    #[default]
    All,
    /// Only this source key's operations (`sync --user`); percentage thresholds do not apply.
    User(String),
    /// Exactly the operations of a saved plan (`dirsync apply`), checked under the lock.
    Saved(Arc<crate::saved_plan::SavedPlan>),
    /// A live run (`dirsync run` with live sync): the changed users, or the whole source,
    /// with the rolling window's safety.
    Live(Arc<LiveScope>),
}

/// What a live run covers and what the live runs before it did.
#[derive(Debug, Clone, Default)]
pub struct LiveScope {
    /// The source keys the events named, sorted and unique: only these users are read and
    /// planned (a user among them the source no longer returns is gone). `None`: the whole
    /// source is read and planned (a new CSV export, a refresh the directory asked for).
    pub keys: Option<Vec<String>>,
    /// Per target: the disables and deletes live runs applied within `safety.window`.
    pub window: HashMap<String, crate::plan::WindowCounts>,
    /// The stream already went over the window: every disable and delete is held until the
    /// next full run.
    pub holding: bool,
    /// Per target: the accounts dirsync owns (the base of the percentages), as the last run
    /// left them; a target missing here is counted from the store.
    pub owned: HashMap<String, u64>,
}

impl LiveScope {
    fn keys(&self) -> Option<&[String]> {
        self.keys.as_deref()
    }
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
    /// Set by a shutdown request: applying stops dispatching new operations.
    pub stop: Arc<std::sync::atomic::AtomicBool>,
    /// `sync --refresh`: plan against the accounts as the target lists them, not as recorded,
    /// so hand changes to owned accounts are corrected (apply mode only).
    pub refresh: bool,
}

/// How this instance names itself to the others (locks, logs): host and process id.
pub fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// Requests a plan needs and, with the target's pacing, the time they take. Bulk-capable
/// operations count one request per batch.
pub fn estimate(
    t: &TargetConfig,
    plan: &TargetPlan,
    connector: Option<&dyn Connector>,
) -> Option<Estimate> {
    let rps = t.http.requests_per_second?;
    let caps = connector.map(|c| c.capabilities());
    let mut requests = 0u64;
    let mut bulk = [0u64; 3];
    for op in &plan.ops {
        let status_slot = match op.op {
            crate::plan::Op::Enable => Some(0),
            crate::plan::Op::Disable { .. } => Some(1),
            crate::plan::Op::Delete { .. } => Some(2),
            _ => None,
        };
        match (status_slot, caps.as_ref().and_then(|c| c.bulk_status_batch)) {
            (Some(slot), Some(_)) => bulk[slot] += 1,
            _ => requests += u64::from(connector.map_or(1, |c| c.requests_for(&op.op))),
        }
    }
    if let Some(batch) = caps.as_ref().and_then(|c| c.bulk_status_batch) {
        let batch = batch.max(1) as u64;
        requests += bulk.iter().map(|n| n.div_ceil(batch)).sum::<u64>();
    }
    Some(Estimate {
        requests,
        requests_per_second: rps,
        seconds: (requests as f64 / rps).ceil() as u64,
    })
}

/// Reads the configured source completely.
pub async fn read_source(source: &SourceConfig) -> Result<Snapshot, RunError> {
    Ok(crate::source::load(source, None).await?)
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
pub fn map_users(
    target: &TargetConfig,
    snapshot: &Snapshot,
) -> (Vec<Account>, Vec<(String, String)>) {
    crate::mapping::map_all(&target.mapping, snapshot)
}

/// Plans one target against the store: light rows for every account, stored attributes only
/// for the accounts whose content hash changed. `snapshot` must be whole (not prefiltered).
pub async fn plan_target(
    store: &dyn Store,
    target: &TargetConfig,
    snapshot: &Snapshot,
    now: DateTime<Utc>,
) -> Result<TargetPlan, RunError> {
    if snapshot.is_partial() {
        // Dropped users would look missing: never plan a partial snapshot without its marks.
        return Err(RunError::PartialSnapshot(target.name.clone()));
    }
    let recorded = store.load_accounts(&target.name).await?;
    Ok(plan_recorded(store, target, snapshot, &recorded, None, now).await?)
}

/// The plan from recorded accounts already loaded (and, with a prefiltered snapshot, what the
/// prefilter settled against exactly these accounts).
async fn plan_recorded(
    store: &dyn Store,
    target: &TargetConfig,
    snapshot: &Snapshot,
    recorded: &[RecordedAccount],
    settled: Option<&Settled>,
    now: DateTime<Utc>,
) -> Result<TargetPlan, StoreError> {
    let users = snapshot.users();
    let triage = triage(&target.mapping, users, recorded);
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
    // Accounts a quarantined record without a key may belong to are left alone too.
    let keyless = Keyless::new(snapshot.quarantined());
    let candidates = keyless.candidates(users, recorded, snapshot.quarantined_keys(), settled);
    let held = if candidates.is_empty() {
        Vec::new()
    } else {
        let keys: Vec<String> = candidates.iter().map(|r| r.key.clone()).collect();
        let states = store.load_account_states(&target.name, &keys).await?;
        keyless.held(&candidates, &states)
    };
    let mut quarantined = std::borrow::Cow::Borrowed(snapshot.quarantined_keys());
    if !held.is_empty() {
        let q = quarantined.to_mut();
        q.extend(held.iter().map(|h| h.key.clone()));
        q.sort_unstable();
        q.dedup();
    }
    let mut plan = diff(
        DiffInput {
            mapping: &target.mapping,
            users,
            recorded,
            triage: &triage,
            states: &states,
            settled,
            quarantined: &quarantined,
        },
        &settings,
    );
    plan.problems.extend(held.into_iter().map(|h| UserProblem {
        key: h.key,
        message: h.reason,
    }));
    Ok(plan)
}

/// What a prefiltered source read brings for one target: the recorded accounts the users were
/// compared with, what was settled, and the target's state version at that moment.
#[derive(Debug)]
pub struct PreTarget {
    pub recorded: Vec<RecordedAccount>,
    pub settled: Settled,
    /// The state the recorded accounts were loaded at.
    pub mark: StateMark,
}

/// Where a target's recorded state stood: its newest journaled operation and how many of its
/// operations were unfinished. Another instance applying the target changes one or the other
/// — it journals (the id grows) before it sends, and each outcome it records finishes an
/// operation (the count falls while the id stays) — so accounts loaded at one mark are still
/// current under the lock only if the mark there is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateMark {
    journaled: i64,
    unfinished: usize,
}

async fn state_mark(store: &dyn Store, target: &str) -> Result<StateMark, RunError> {
    Ok(StateMark {
        journaled: store.state_version(target).await?,
        unfinished: store.unfinished_operations(target).await?.len(),
    })
}

/// Reads the source for a whole-source run, prefiltered against the recorded accounts of every
/// target (loaded first): users exactly as recorded everywhere are counted, checked and dropped
/// while the source is read (CSV rows, LDAP entries), so memory grows with the changes, not
/// with the directory.
async fn read_source_prefiltered(
    config: &Config,
    store: &dyn Store,
    targets: &[&TargetConfig],
) -> Result<(Snapshot, HashMap<String, PreTarget>), RunError> {
    let mut sides = Vec::with_capacity(targets.len());
    let mut versions = Vec::with_capacity(targets.len());
    for t in targets {
        versions.push(state_mark(store, &t.name).await?);
        sides.push((t.mapping.clone(), store.load_accounts(&t.name).await?));
    }
    let mut prefilter = Prefilter::new(sides);
    let snapshot = crate::source::load(&config.source, Some(&mut prefilter)).await?;
    if !snapshot.is_partial() {
        return Ok((snapshot, HashMap::new()));
    }
    debug!(
        read = prefilter.read,
        dropped = prefilter.dropped,
        kept = snapshot.users().len(),
        "source prefiltered"
    );
    let pre = targets
        .iter()
        .zip(versions)
        .zip(prefilter.targets)
        .map(|((t, mark), side)| {
            (
                t.name.clone(),
                PreTarget {
                    recorded: side.recorded,
                    settled: side.settled,
                    mark,
                },
            )
        })
        .collect();
    Ok((snapshot, pre))
}

/// Users some configured target cannot map (a required field renders empty) are quarantined
/// for every target ([`crate::plan::held::unmappable`]), so that they count toward the
/// quarantine limits and none of their accounts changes anywhere.
fn quarantine_unmappable(config: &Config, snapshot: Snapshot) -> Snapshot {
    let mappings: Vec<(&str, &crate::mapping::TargetMapping)> = config
        .targets
        .iter()
        .map(|t| (t.name.as_str(), &t.mapping))
        .collect();
    let origin = config.source.origin();
    let more: Vec<_> = snapshot
        .users()
        .iter()
        .filter_map(|u| crate::plan::held::unmappable(&mappings, u, &origin))
        .collect();
    if more.is_empty() {
        snapshot
    } else {
        snapshot.quarantine_more(more)
    }
}

/// The connectors of the targets a run applies to, by target name.
pub type Connectors = HashMap<String, Arc<dyn Connector>>;

/// Reads the source, plans and judges every selected target, and records the run. Without
/// connectors it is a dry run: a `dry_run` run row is recorded and no account changes. With
/// connectors, each target first reconciles what an interrupted run left unfinished, then its
/// plan is applied if the safety policy allows it (or `--force`). Errors before the run row
/// exists (config, source) write nothing.
pub async fn execute(
    config: &Config,
    store: &dyn Store,
    opts: &RunOptions,
    connectors: Option<&Connectors>,
) -> Result<RunPlan, RunError> {
    execute_scoped(config, store, opts, connectors, None, &Scope::All).await
}

/// [`execute`] with a source snapshot already read (`None`: read it) and a [`Scope`].
pub async fn execute_scoped(
    config: &Config,
    store: &dyn Store,
    opts: &RunOptions,
    connectors: Option<&Connectors>,
    snapshot: Option<Snapshot>,
    scope: &Scope,
) -> Result<RunPlan, RunError> {
    let targets = select_targets(config, &opts.targets)?;
    // A whole-source run (not one user, not a saved plan, not a refresh) reads the source
    // prefiltered against the recorded state.
    let live_keys = match scope {
        Scope::Live(l) => l.keys(),
        _ => None,
    };
    let prefilter = (matches!(scope, Scope::All) || matches!(scope, Scope::Live(_)))
        && live_keys.is_none()
        && !opts.refresh;
    let read = async {
        if let Some(keys) = live_keys {
            Ok((
                crate::source::load_keys(&config.source, keys).await?,
                HashMap::new(),
            ))
        } else if prefilter {
            read_source_prefiltered(config, store, &targets).await
        } else {
            Ok((read_source(&config.source).await?, HashMap::new()))
        }
    };
    let (snapshot, mut pre) = match snapshot {
        Some(s) => (s, HashMap::new()),
        None => match read.await {
            Ok(s) => s,
            Err(e) => {
                // Before the run row exists: a `failed` notification without a run id.
                crate::notify::notify_source_failure(
                    &config.notify,
                    config.source.kind(),
                    opts.trigger,
                    opts.force,
                    connectors.is_none(),
                    &e.to_string(),
                )
                .await;
                return Err(e);
            }
        },
    };
    let snapshot = quarantine_unmappable(config, snapshot);
    let last_good = store.last_good_source_count().await?;
    let facts = SourceFacts {
        users: snapshot.len() as u64,
        last_good,
        quarantined: snapshot.quarantined().len() as u64,
    };
    // A live run that read only the changed users knows nothing of the source's size: the
    // source rules are the full runs' (and it never becomes their baseline).
    let source_reasons = if live_keys.is_some() {
        Vec::new()
    } else {
        judge_source(&config.safety, facts)
    };
    let run_id = store
        .begin_run(&NewRun {
            trigger: opts.trigger,
            started_at: opts.now,
            targets: targets.iter().map(|t| t.name.clone()).collect(),
            forced: opts.force,
        })
        .await?;
    info!(
        run_id,
        trigger = opts.trigger.as_str(),
        users = facts.users,
        "run started"
    );
    let mut plan = RunPlan {
        run_id,
        trigger: opts.trigger,
        dry_run: connectors.is_none(),
        forced: opts.force,
        generated_at: Utc::now(),
        store: config.state.location.describe(),
        source: SourceSummary {
            kind: config.source.kind(),
            users: facts.users,
            last_applied_users: last_good,
            blocked_by: source_reasons.clone(),
            quarantined: snapshot.quarantined().to_vec(),
        },
        targets: Vec::with_capacity(targets.len()),
    };
    let mut error = None;
    for t in &targets {
        match run_target(
            store,
            t,
            &snapshot,
            pre.remove(&t.name),
            config,
            &source_reasons,
            opts,
            connectors,
            run_id,
            scope,
        )
        .await
        {
            Ok(outcome) => plan.targets.push(outcome),
            // One unreachable target does not stop the others: its failure is recorded on
            // its outcome and fails the run; the store failing stops everything.
            Err(e) if e.is_target_local() => {
                warn!(run_id, target = %t.name, error = %e, "target failed; nothing more was sent to it");
                plan.targets.push(TargetOutcome::failed(t, e.to_string()));
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let status = match &error {
        Some(_) => RunStatus::Failed,
        None => plan.status(),
    };
    let (applied, failed) = plan.applied_failed();
    let finish = RunFinish {
        status,
        finished_at: Utc::now(),
        source_count: live_keys.is_none().then_some(facts.users),
        planned: plan.changes(),
        applied,
        failed,
        error: error.as_ref().map(ToString::to_string),
        summary: run_summary(&plan),
    };
    if let Err(e) = store.finish_run(run_id, &finish).await {
        warn!(run_id, error = %e, "could not record the end of the run");
        if error.is_none() {
            return Err(e.into());
        }
    }
    if let Some(e) = error {
        // Notifications are bounded in time and never fail the run.
        crate::notify::notify_run(&config.notify, &plan, status, Some(&e.to_string())).await;
        return Err(e);
    }
    for t in &plan.targets {
        if let Verdict::Blocked { reasons } = &t.verdict {
            for r in reasons {
                warn!(run_id, target = %t.name, rule = r.rule, limit = r.limit, actual = r.actual, "blocked by safety policy: {}", r.message);
            }
        }
    }
    info!(
        run_id,
        status = status.as_str(),
        changes = plan.changes(),
        applied,
        failed,
        left = plan.left(),
        "run finished"
    );
    crate::notify::notify_run(&config.notify, &plan, status, None).await;
    Ok(plan)
}

#[allow(clippy::too_many_arguments)]
async fn run_target(
    store: &dyn Store,
    t: &TargetConfig,
    snapshot: &Snapshot,
    pre: Option<PreTarget>,
    config: &Config,
    source_reasons: &[BlockReason],
    opts: &RunOptions,
    connectors: Option<&Connectors>,
    run_id: i64,
    scope: &Scope,
) -> Result<TargetOutcome, RunError> {
    let connector = match connectors {
        Some(c) => Some(
            c.get(&t.name)
                .cloned()
                .ok_or_else(|| RunError::NoConnector(t.name.clone()))?,
        ),
        None => None,
    };
    // One instance applies a target at a time: take its lock for the whole apply.
    let lock = match &connector {
        Some(_) => match store.try_lock_target(&t.name, &instance_name()).await? {
            Some(lock) => Some(lock),
            None => {
                warn!(run_id, target = %t.name, "another dirsync instance is applying this target; skipped");
                return Ok(TargetOutcome {
                    name: t.name.clone(),
                    kind: t.kind,
                    verdict: Verdict::Allowed,
                    plan: TargetPlan::default(),
                    recovered: None,
                    applied: None,
                    estimate: None,
                    skipped: Some("another dirsync instance is applying this target".into()),
                    refresh: None,
                    error: None,
                    existing_unchecked: None,
                    held: Vec::new(),
                });
            }
        },
        None => None,
    };
    let result = apply_locked(
        store,
        t,
        snapshot,
        pre,
        config,
        source_reasons,
        opts,
        connector,
        run_id,
        scope,
    )
    .await;
    if let Some(lock) = lock
        && let Err(e) = lock.release().await
    {
        warn!(run_id, target = %t.name, error = %e, "could not release the target lock (it ends with the session or lease)");
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn apply_locked(
    store: &dyn Store,
    t: &TargetConfig,
    snapshot: &Snapshot,
    pre: Option<PreTarget>,
    config: &Config,
    source_reasons: &[BlockReason],
    opts: &RunOptions,
    connector: Option<Arc<dyn Connector>>,
    run_id: i64,
    scope: &Scope,
) -> Result<TargetOutcome, RunError> {
    let recovered = match (&connector, scope) {
        // A saved plan is applied only when nothing is left unfinished (checked with the
        // state, under the lock): there is nothing to reconcile.
        (Some(_), Scope::Saved(_)) => None,
        (Some(c), _) => Some(engine::recover(store, c.as_ref(), t, run_id).await?),
        (None, _) => None,
    };
    let mut refresh = None;
    let mut existing_unchecked = None;
    let mut held = Vec::new();
    let (plan, verdict) = match scope {
        Scope::Live(live) => {
            // As for a scheduled run: the prefilter's marks hold only against the accounts
            // they were made with.
            let touched = recovered
                .as_ref()
                .is_some_and(|r| r.confirmed + r.replanned + r.superseded > 0);
            let mut plan = match live.keys() {
                Some(keys) => {
                    let owned = live.owned.get(&t.name).copied();
                    plan_keys(store, t, snapshot, keys, owned, opts.now).await?
                }
                None => match pre {
                    Some(p) if !touched && state_mark(store, &t.name).await? == p.mark => {
                        plan_recorded(store, t, snapshot, &p.recorded, Some(&p.settled), opts.now)
                            .await?
                    }
                    Some(_) => {
                        let whole = read_source(&config.source).await?;
                        plan_target(store, t, &whole, opts.now).await?
                    }
                    None => plan_target(store, t, snapshot, opts.now).await?,
                },
            };
            existing_unchecked =
                hold_existing(store, t, &mut plan, connector.as_deref(), run_id).await?;
            // A live stream over a destructive limit (of this run, or of the window) keeps
            // creating and updating: only its disables and deletes are held, for the next full
            // run (or --force) to decide. The source's rules still block.
            let mut over = judge_plan(&config.safety, &plan);
            let earlier = live.window.get(&t.name).copied().unwrap_or_default();
            over.extend(crate::plan::policy::judge_window(
                &config.safety,
                &plan,
                earlier,
            ));
            let mut reasons = source_reasons.to_vec();
            let destructive = plan.summary.disable + plan.summary.delete;
            if opts.force {
                reasons.extend(over);
            } else if destructive > 0 && (live.holding || !over.is_empty()) {
                let why = match over.first() {
                    Some(r) => r.message.clone(),
                    None => "the live stream is held (safety.window); the next full run \
                             or --force decides"
                        .to_string(),
                };
                let n = crate::plan::live::hold_destructive(&mut plan, &why);
                warn!(run_id, target = %t.name, held = n, "live sync: disables and deletes held (safety.window)");
                held = if over.is_empty() {
                    vec![BlockReason {
                        rule: "window",
                        limit: 0,
                        actual: n,
                        message: why,
                    }]
                } else {
                    over
                };
            }
            (plan, Verdict::from_reasons(reasons, opts.force))
        }
        Scope::Saved(saved) => {
            crate::saved_plan::checked_target(saved, store, t, snapshot, opts.force).await?
        }
        Scope::User(key) => {
            let mut plan =
                crate::saved_plan::only_user(plan_target(store, t, snapshot, opts.now).await?, key);
            existing_unchecked =
                hold_existing(store, t, &mut plan, connector.as_deref(), run_id).await?;
            // Percentage thresholds do not apply to one user; an unusable source still blocks.
            let reasons = source_reasons
                .iter()
                .filter(|r| r.rule == "min_source_users")
                .cloned()
                .collect();
            (plan, Verdict::from_reasons(reasons, opts.force))
        }
        Scope::All => {
            let plan = match &connector {
                Some(c) if opts.refresh => {
                    let (plan, summary) =
                        crate::drift::plan_refreshed(store, c.as_ref(), t, snapshot, opts.now)
                            .await?;
                    refresh = Some(summary);
                    plan
                }
                _ => match pre {
                    Some(p) => {
                        // The marks hold only against the accounts they were made with: not
                        // when reconciliation changed accounts, nor when another instance
                        // journaled or finished anything for the target since.
                        let touched = recovered
                            .as_ref()
                            .is_some_and(|r| r.confirmed + r.replanned + r.superseded > 0);
                        if !touched && state_mark(store, &t.name).await? == p.mark {
                            plan_recorded(
                                store,
                                t,
                                snapshot,
                                &p.recorded,
                                Some(&p.settled),
                                opts.now,
                            )
                            .await?
                        } else {
                            info!(run_id, target = %t.name, "state changed since the source was read; reading it again whole");
                            let whole = read_source(&config.source).await?;
                            plan_target(store, t, &whole, opts.now).await?
                        }
                    }
                    None => plan_target(store, t, snapshot, opts.now).await?,
                },
            };
            let mut plan = plan;
            existing_unchecked =
                hold_existing(store, t, &mut plan, connector.as_deref(), run_id).await?;
            let mut reasons = source_reasons.to_vec();
            reasons.extend(judge_plan(&config.safety, &plan));
            (plan, Verdict::from_reasons(reasons, opts.force))
        }
    };
    info!(run_id, target = %t.name, creates = plan.summary.create, updates = plan.summary.update,
          roles = plan.summary.set_roles, enables = plan.summary.enable,
          disables = plan.summary.disable, deletes = plan.summary.delete,
          verdict = verdict_name(&verdict), "target planned");
    let mut error = None;
    let applied = match (&connector, &verdict) {
        (Some(c), Verdict::Allowed | Verdict::Forced { .. }) => {
            // Preflight (`Connector::preflight`: the token grant, or an authenticated read)
            // before anything is journaled, so refused credentials or an unreachable host fail
            // the target as a whole with nothing journaled.
            let probe = if plan.ops.is_empty() || opts.stop.load(Ordering::SeqCst) {
                Ok(())
            } else {
                c.preflight().await
            };
            match probe {
                Err(e) if e.is_target_fatal() => {
                    warn!(run_id, target = %t.name, error = %e, "preflight failed: nothing was sent to this target");
                    error = Some(
                        EngineError::TargetFatal {
                            target: t.name.clone(),
                            message: e.to_string(),
                        }
                        .to_string(),
                    );
                    None
                }
                probe => {
                    if let Err(e) = probe {
                        warn!(run_id, target = %t.name, error = %e, "preflight read failed; applying anyway (operations fail one by one if the target stays down)");
                    }
                    let grace = shutdown_grace(config.daemon.shutdown_timeout);
                    let summary = engine::apply_with(
                        store,
                        c.as_ref(),
                        t,
                        run_id,
                        &plan,
                        opts.now,
                        &opts.stop,
                        grace,
                    )
                    .await?;
                    if let Some(fatal) = &summary.fatal {
                        error = Some(format!(
                            "target {:?}: {fatal}; sending stopped, {} left for the next run",
                            t.name,
                            crate::report::plural(summary.interrupted, "operation")
                        ));
                    }
                    Some(summary)
                }
            }
        }
        _ => None,
    };
    let estimate = match &connector {
        Some(c) => estimate(t, &plan, Some(c.as_ref())),
        // A dry run builds the connector only to know its request costs (no I/O).
        None => {
            let c = crate::connector::connect(t).ok();
            estimate(t, &plan, c.as_deref())
        }
    };
    Ok(TargetOutcome {
        name: t.name.clone(),
        kind: t.kind,
        verdict,
        plan,
        recovered,
        applied,
        estimate,
        skipped: None,
        refresh,
        error,
        existing_unchecked,
        held,
    })
}

/// Plans one target for the changed users only: the users read (`snapshot`, those of `keys`
/// the source still returns) against the recorded accounts of those keys (fetched by key: the
/// cost of a live run grows with the change, not with the target). A key the source no longer
/// returns is planned as gone; no other account is looked at. The percentages keep the whole
/// target's owned count as their base (`owned`, else counted from the store).
async fn plan_keys(
    store: &dyn Store,
    t: &TargetConfig,
    snapshot: &Snapshot,
    keys: &[String],
    owned: Option<u64>,
    now: DateTime<Utc>,
) -> Result<TargetPlan, RunError> {
    let mut recorded: Vec<RecordedAccount> = store
        .load_account_records(&t.name, keys)
        .await?
        .into_iter()
        .map(|r| r.account)
        .collect();
    recorded.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    recorded.dedup_by(|a, b| a.key == b.key);
    let owned = match owned {
        Some(n) => n,
        None => store
            .load_accounts(&t.name)
            .await?
            .iter()
            .filter(|r| r.owned)
            .count() as u64,
    };
    let mut plan = plan_recorded(store, t, snapshot, &recorded, None, now).await?;
    plan.owned = owned;
    Ok(plan)
}

/// How long a dry run waits for a target's account list on first contact.
const DRY_RUN_LIST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// First contact with a target ([`existing::needs_check`]): lists its accounts once and holds
/// back every create whose login already exists there ("exists, not owned: adopt first"), so
/// that a first sync against an existing tenant does not send them all to collect conflicts.
/// Applying, a listing failure fails the target (nothing is sent); in a dry run it is returned
/// as a note for the report.
async fn hold_existing(
    store: &dyn Store,
    t: &TargetConfig,
    plan: &mut TargetPlan,
    connector: Option<&dyn Connector>,
    run_id: i64,
) -> Result<Option<String>, RunError> {
    if !existing::needs_check(plan) {
        return Ok(None);
    }
    let listed = match connector {
        Some(c) => c
            .list_accounts()
            .await
            .map_err(|e| RunError::FirstContact {
                target: t.name.clone(),
                message: e.to_string(),
            })?,
        None => {
            // A dry run only looks: one attempt per request, so an unreachable target costs
            // the report a note, not a retry series.
            let mut quick = t.clone();
            quick.http.max_retries = 0;
            let c = match crate::connector::connect(&quick) {
                Ok(c) => c,
                Err(e) => return Ok(Some(e.to_string())),
            };
            match tokio::time::timeout(DRY_RUN_LIST_TIMEOUT, c.list_accounts()).await {
                Ok(Ok(list)) => list,
                Ok(Err(e)) => return Ok(Some(e.to_string())),
                Err(_) => {
                    return Ok(Some(format!(
                        "listing the accounts took longer than {}",
                        humantime::format_duration(DRY_RUN_LIST_TIMEOUT)
                    )));
                }
            }
        }
    };
    let held = existing::hold_existing(plan, &t.mapping.login_field, &listed);
    info!(run_id, target = %t.name, remote = listed.len(), held = held.len(), "first contact: existing accounts checked");
    if held.is_empty() {
        return Ok(None);
    }
    warn!(run_id, target = %t.name, count = held.len(), "accounts already exist on the target, not owned by dirsync: not created; run `dirsync adopt` first");
    // Applying: remember them as not-owned rows (as a refused create would be), so later
    // plans report them instead of planning creates, and `adopt` can take them.
    if connector.is_some() {
        let changes: Vec<AccountChange> = held
            .into_iter()
            .map(|(account, remote_id)| {
                let mut rec =
                    engine::created_record(&account, remote_id, &t.mapping.login_field, run_id);
                rec.account.owned = false;
                AccountChange::Upsert(rec)
            })
            .collect();
        store.record_outcomes(&t.name, &[], &changes).await?;
    }
    Ok(None)
}

/// How long requests in flight may finish after a shutdown request: the daemon's
/// `shutdown_timeout`, less a margin (2 s, at most half of it) so the run is still recorded
/// before the daemon's own deadline.
pub fn shutdown_grace(shutdown_timeout: std::time::Duration) -> std::time::Duration {
    let margin = std::time::Duration::from_secs(2).min(shutdown_timeout / 2);
    shutdown_timeout.saturating_sub(margin)
}

fn verdict_name(v: &Verdict) -> &'static str {
    match v {
        Verdict::Allowed => "allowed",
        Verdict::Blocked { .. } => "blocked",
        Verdict::Forced { .. } => "forced",
    }
}

/// Runs with more operations than this keep their summary but not their full report.
pub const REPORT_KEEP_MAX_OPS: usize = 5_000;

/// The per-target summary stored on the run row (what `dirsync runs show` prints).
pub fn run_summary(plan: &RunPlan) -> serde_json::Value {
    // The run's report is kept with it (`dirsync runs show ID --format markdown`), up to a size
    // where it is still a report rather than a dump.
    let report = (plan.targets.iter().map(|t| t.plan.ops.len()).sum::<usize>()
        <= REPORT_KEEP_MAX_OPS)
        .then(|| crate::report::render(plan, crate::report::Format::Markdown, plan.dry_run));
    serde_json::json!({
        "report_markdown": report,
        "source": plan.source,
        "targets": plan.targets.iter().map(|t| serde_json::json!({
            "name": t.name,
            "kind": t.kind,
            "verdict": t.verdict,
            "owned": t.plan.owned,
            "summary": t.plan.summary,
            "recovered": t.recovered,
            "applied": t.applied,
            "error": t.error,
            "skipped": t.skipped,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{NewOperation, NewRun, OpOutcome, OpStatus};

    /// Another instance finishing an operation it journaled earlier moves the mark though the
    /// newest journaled id stays: accounts loaded before are then not trusted under the lock.
    #[tokio::test]
    async fn the_mark_moves_when_an_outcome_is_recorded() {
        let store = match SqliteStore::open_memory().await {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        if let Err(e) = store.migrate().await {
            panic!("{e}");
        }
        let run = NewRun {
            trigger: Trigger::Schedule,
            started_at: Utc::now(),
            targets: vec!["covata".into()],
            forced: false,
        };
        let Ok(run_id) = store.begin_run(&run).await else {
            panic!("begin_run");
        };
        let op = |key: &str| NewOperation {
            source_key: key.to_owned(),
            kind: "create".to_owned(),
            payload: match serde_json::value::to_raw_value(&serde_json::json!({"key": key})) {
                Ok(p) => p,
                Err(e) => panic!("{e}"),
            },
        };
        let Ok(ids) = store.journal(run_id, "covata", &[op("a"), op("b")]).await else {
            panic!("journal");
        };
        async fn mark(store: &SqliteStore) -> StateMark {
            match state_mark(store, "covata").await {
                Ok(m) => m,
                Err(e) => panic!("{e}"),
            }
        }
        let before = mark(&store).await;
        assert_eq!(before, mark(&store).await, "nothing changed: same mark");
        let done = OpOutcome {
            id: ids[0],
            status: OpStatus::Failed,
            error: Some("HTTP 500".into()),
            remote_id: None,
        };
        if let Err(e) = store.record_outcomes("covata", &[done], &[]).await {
            panic!("{e}");
        }
        let after = mark(&store).await;
        assert_eq!(after.journaled, before.journaled);
        assert_ne!(after, before, "an outcome recorded: the mark moved");
    }
}
