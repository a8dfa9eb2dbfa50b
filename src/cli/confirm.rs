//! `dirsync sync` on a terminal: the plan first, then `Apply these changes? (yes/no)`, as
//! `terraform apply` asks. Only `yes` applies. `--yes` skips the question; without a terminal
//! (standard input or error not one: scripts, timers, the service) it is never asked.
//!
//! The question is about a dry run's plan (recorded as a `dry_run` run, like `plan`); the sync
//! that follows plans again under the target locks, so what it applies is what the source and
//! the state hold then (its report says what was done). Exactly a reviewed plan is applied
//! with `plan --out FILE` and `apply FILE`.

use std::io::{IsTerminal, Write};

use crate::config::Config;
use crate::outcome::RunPlan;
use crate::report::{self, Format, PlanStatus};
use crate::run::{self, RunOptions};
use crate::store::Trigger;

use super::session::Session;
use super::{SyncArgs, fail};

/// What the operator decided.
pub(super) enum Decision {
    /// Apply (also when there is nothing to ask about).
    Apply,
    /// Stop with this exit code: declined, blocked, or the plan could not be made.
    Stop(u8),
}

/// Whether `sync` asks first: on a terminal (standard input and standard error both
/// terminals), unless `--yes` (or a dry run, which applies nothing).
pub(super) fn asks(args: &SyncArgs) -> bool {
    !args.yes && !args.dry_run && std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// The options of the dry run whose plan is shown.
pub(super) fn preview_options(args: &SyncArgs) -> RunOptions {
    RunOptions {
        trigger: Trigger::DryRun,
        targets: args.plan.targets.clone(),
        force: args.force,
        now: chrono::Utc::now(),
        stop: Default::default(),
        refresh: false,
    }
}

/// Plans (a dry run of the whole source), then asks (see [`confirm_plan`]).
pub(super) async fn confirm(config: &Config, session: &Session<'_>, args: &SyncArgs) -> Decision {
    let opts = preview_options(args);
    match run::execute(config, session.store(), &opts, None).await {
        Ok(p) => confirm_plan(&p, args).await,
        Err(e) => Decision::Stop(fail(e)),
    }
}

/// Shows the dry run's plan on stderr (stdout keeps the report of the sync) and asks. Nothing
/// to change: no question. Blocked without `--force`: the plan is shown and `sync` stops with
/// the blocked exit code (3), as it would after planning.
pub(super) async fn confirm_plan(preview: &RunPlan, args: &SyncArgs) -> Decision {
    let status = PlanStatus::of(preview);
    if status == PlanStatus::NoChanges && !args.refresh {
        return Decision::Apply;
    }
    let mut err = std::io::stderr().lock();
    let _ = report::write_report(&mut err, preview, Format::Text, true);
    if status == PlanStatus::Blocked {
        let _ = writeln!(
            err,
            "\nThe safety policy blocks this plan: nothing was applied. Review it, then run \
             `dirsync sync --force` to override."
        );
        return Decision::Stop(status.exit_code());
    }
    if args.refresh {
        let _ = writeln!(
            err,
            "\n--refresh: applying also corrects changes made by hand to owned accounts, which \
             this plan (against the recorded state) does not show."
        );
    }
    let _ = write!(
        err,
        "\ndirsync will apply the changes above (planned again when applying).\nOnly 'yes' \
         applies them.\n\nApply these changes? (yes/no) "
    );
    let _ = err.flush();
    drop(err);
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await;
    match answer {
        Ok(Ok(a)) if a.trim() == "yes" => Decision::Apply,
        Ok(Err(e)) => Decision::Stop(fail(format!("cannot read the answer: {e}"))),
        _ => {
            eprintln!("Not applied (the answer was not 'yes'): nothing was sent.");
            Decision::Stop(PlanStatus::ChangesPending.exit_code())
        }
    }
}
