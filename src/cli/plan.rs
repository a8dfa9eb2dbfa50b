//! `plan` (and `plan --out FILE`), `sync` (`--dry-run`, `--user KEY`) and `apply FILE`: the
//! commands that plan a run and, except dry runs, apply it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use chrono::Utc;

use crate::config::Config;
use crate::report::{self, PlanStatus};
use crate::run::{self, RunOptions, Scope};
use crate::saved_plan::{self, fingerprint};
use crate::store::Trigger;

use super::confirm::{self, Decision};
use super::session::Session;
use super::{ApplyArgs, PlanArgs, SyncArgs, fail, print_report, stop_on_signals};

/// `plan` and `sync --dry-run`: a dry run, reported.
pub(super) async fn plan(config: &Config, args: &PlanArgs, force: bool, dry_run: bool) -> u8 {
    // Targets are checked before anything is opened or read.
    if let Err(e) = run::select_targets(config, &args.targets) {
        return fail(e);
    }
    if let Some(out) = &args.out {
        return plan_out(config, args, out, force).await;
    }
    let session = match Session::open(config, &args.targets, false).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let opts = RunOptions {
        trigger: Trigger::DryRun,
        targets: args.targets.clone(),
        force,
        now: chrono::Utc::now(),
        stop: Default::default(),
        refresh: false,
    };
    match run::execute(session.config, session.store(), &opts, None).await {
        Ok(plan) => print_report(&plan, args.format, dry_run),
        Err(e) => fail(e),
    }
}

/// `sync`: plan and apply every selected target.
pub(super) async fn sync(config: &Config, args: &SyncArgs) -> u8 {
    let session = match Session::open(config, &args.plan.targets, true).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    // On a terminal: the plan, then the question (before the signal handlers: Ctrl-C at the
    // question ends the process, nothing sent).
    if confirm::asks(args)
        && let Decision::Stop(code) = confirm::confirm(config, &session, args).await
    {
        return code;
    }
    let stop = Arc::new(AtomicBool::new(false));
    if let Err(e) = stop_on_signals(Arc::clone(&stop)) {
        return fail(format!("cannot install the SIGTERM / SIGINT handlers: {e}"));
    }
    let opts = RunOptions {
        trigger: Trigger::Manual,
        targets: args.plan.targets.clone(),
        force: args.force,
        now: chrono::Utc::now(),
        stop,
        refresh: args.refresh,
    };
    match run::execute(
        session.config,
        session.store(),
        &opts,
        Some(&session.connectors),
    )
    .await
    {
        Ok(plan) => print_report(&plan, args.plan.format, false),
        Err(e) => fail(e),
    }
}

/// `dirsync plan --out FILE` (and `sync --dry-run --out FILE`): the dry run, saved with the
/// fingerprints of what it was computed from. The report is printed as usual.
async fn plan_out(config: &Config, args: &PlanArgs, out: &Path, force: bool) -> u8 {
    let session = match Session::open(config, &args.targets, false).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let snapshot = match run::read_source(&config.source).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    // The fingerprint is taken before planning: a change in between makes `apply` refuse
    // (never the reverse).
    let mut fingerprints = BTreeMap::new();
    for t in &session.targets {
        match fingerprint(session.store(), t, &snapshot).await {
            Ok(f) => {
                fingerprints.insert(t.name.clone(), f);
            }
            Err(e) => return fail(e),
        }
    }
    let opts = RunOptions {
        trigger: Trigger::DryRun,
        targets: args.targets.clone(),
        force,
        now: Utc::now(),
        stop: Default::default(),
        refresh: false,
    };
    let scope = Scope::All;
    let plan =
        match run::execute_scoped(config, session.store(), &opts, None, Some(snapshot), &scope)
            .await
        {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
    for (name, f) in &fingerprints {
        if f.unfinished > 0 {
            eprintln!(
                "warning: target {name:?} has {} left unfinished by an interrupted run; \
                 `dirsync apply` will refuse this plan until a `dirsync sync` reconciles them \
                 (then plan again)",
                report::plural(f.unfinished, "operation")
            );
        }
    }
    if let Err(e) = saved_plan::write(out, &plan, config, fingerprints) {
        return fail(e);
    }
    eprintln!(
        "plan saved to {}; review it, then apply it with `dirsync apply {}` (within {})",
        out.display(),
        out.display(),
        report::words::duration(config.safety.max_plan_age)
    );
    print_report(&plan, args.format, true)
}

/// Refusal message of `dirsync apply`.
fn refusal(why: &[String]) -> String {
    format!(
        "the saved plan cannot be applied; nothing was sent:\n  - {}\nMake a new plan with \
         `dirsync plan --out FILE`.",
        why.join("\n  - ")
    )
}

/// `dirsync apply FILE`: checks the plan against the configuration, the state and the source,
/// then applies exactly its operations. Refusals send nothing.
pub(super) async fn apply(config: &Config, args: &ApplyArgs) -> u8 {
    let saved = match saved_plan::read(&args.file) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let why = saved.check_static(config, Utc::now());
    if !why.is_empty() {
        return fail(refusal(&why));
    }
    let names = saved.target_names();
    let mut session = match Session::open(config, &names, false).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let snapshot = match run::read_source(&config.source).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    match saved.check_state(config, session.store(), &snapshot).await {
        Ok(why) if !why.is_empty() => return fail(refusal(&why)),
        Ok(_) => {}
        Err(e) => return fail(e),
    }
    let blocked = saved.blocked();
    if !blocked.is_empty() && !args.force {
        eprintln!(
            "error: the saved plan was blocked by the safety policy; nothing was sent. Review \
             it and apply with --force to override:"
        );
        for (target, reasons) in &blocked {
            for r in reasons {
                eprintln!("  - target {target:?}: {}", r.message);
            }
        }
        return PlanStatus::Blocked.exit_code();
    }
    if let Err(code) = session.connect() {
        return code;
    }
    let stop = Arc::new(AtomicBool::new(false));
    if let Err(e) = stop_on_signals(Arc::clone(&stop)) {
        return fail(format!("cannot install the SIGTERM / SIGINT handlers: {e}"));
    }
    let opts = RunOptions {
        trigger: Trigger::Apply,
        targets: names,
        force: args.force,
        now: Utc::now(),
        stop,
        refresh: false,
    };
    let scope = Scope::Saved(Arc::new(saved));
    match run::execute_scoped(
        config,
        session.store(),
        &opts,
        Some(&session.connectors),
        Some(snapshot),
        &scope,
    )
    .await
    {
        Ok(plan) => print_report(&plan, args.format, false),
        Err(e) => fail(e),
    }
}

/// `dirsync sync --user KEY [--target NAME] [--dry-run]`: one user's operations, journaled and
/// locked like any run, recorded with trigger `user`.
pub(super) async fn sync_user(config: &Config, args: &SyncArgs) -> u8 {
    let Some(key) = args.user.clone() else {
        return fail("--user needs a source key");
    };
    if args.plan.out.is_some() {
        return fail("--out cannot be combined with --user");
    }
    let session = match Session::open(config, &args.plan.targets, !args.dry_run).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let snapshot = match run::read_source(&config.source).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    if snapshot.is_quarantined(&key) {
        let why: Vec<String> = snapshot
            .quarantined_for(&key)
            .map(|q| {
                format!(
                    "{} {}: {} (value {})",
                    q.location, q.field, q.problem, q.value
                )
            })
            .collect();
        return fail(format!(
            "the source record of user {key:?} is quarantined, so nothing is planned for it and \
             its accounts are left as they are until the source is fixed: {}",
            why.join("; ")
        ));
    }
    let mut known = snapshot.get(&key).is_some();
    for t in &session.targets {
        if known {
            break;
        }
        match session.store().load_accounts(&t.name).await {
            Ok(rows) => known = rows.iter().any(|r| r.key == key),
            Err(e) => return fail(e),
        }
    }
    if !known {
        let names: Vec<&str> = session.targets.iter().map(|t| t.name.as_str()).collect();
        return fail(format!(
            "no user with key {key:?} in the source, nor recorded for target(s) {}",
            names.join(", ")
        ));
    }
    let scope = Scope::User(key);
    // On a terminal: this user's plan, then the question.
    if confirm::asks(args) {
        let preview = run::execute_scoped(
            config,
            session.store(),
            &confirm::preview_options(args),
            None,
            Some(snapshot.clone()),
            &scope,
        )
        .await;
        let decision = match preview {
            Ok(p) => confirm::confirm_plan(&p, args).await,
            Err(e) => Decision::Stop(fail(e)),
        };
        if let Decision::Stop(code) = decision {
            return code;
        }
    }
    // A dry run sends nothing; applying, a shutdown request stops dispatch (exit 6).
    let stop = Arc::new(AtomicBool::new(false));
    if !args.dry_run
        && let Err(e) = stop_on_signals(Arc::clone(&stop))
    {
        return fail(format!("cannot install the SIGTERM / SIGINT handlers: {e}"));
    }
    let opts = RunOptions {
        trigger: if args.dry_run {
            Trigger::DryRun
        } else {
            Trigger::User
        },
        targets: args.plan.targets.clone(),
        force: args.force,
        now: Utc::now(),
        stop,
        refresh: false,
    };
    let connectors = (!args.dry_run).then_some(&session.connectors);
    match run::execute_scoped(
        config,
        session.store(),
        &opts,
        connectors,
        Some(snapshot),
        &scope,
    )
    .await
    {
        Ok(plan) => print_report(&plan, args.plan.format, args.dry_run),
        Err(e) => fail(e),
    }
}
