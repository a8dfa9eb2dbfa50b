//! The command line: commands, their output, and exit codes.
//!
//! Exit codes: 0 success / nothing to do; 1 error (config, source, store, a failed target); 2
//! changes pending (`plan`, `sync --dry-run`) or drift found (`drift`); 3 blocked by the safety
//! policy; 4 applied with some operations failed; 5 every target skipped because another
//! instance is applying it; 6 interrupted (SIGTERM); 7 applied, but source records were
//! quarantined. `run --once` exits with its run's code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config};
use crate::report::{self, Format, PlanStatus};
use crate::run::{self, RunOptions};
use crate::store::{self, Store, Trigger};
use crate::telemetry::{self, LogFormat};

/// `print!` to stdout that ignores a closed pipe (`dirsync runs | head`) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}
/// `println!` to stdout that ignores a closed pipe.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Exit codes: an error (1); every selected target skipped because another instance applies
/// it (5); a shutdown request stopped the run (6). Defined with the other exit codes in
/// `report`.
pub use crate::report::{EXIT_ERROR, EXIT_INTERRUPTED, EXIT_SKIPPED};

#[derive(Debug, Parser)]
#[command(
    name = "dirsync",
    version,
    about = "Keep SaaS user accounts in line with your directory (LDAP or a CSV export).",
    long_about = "dirsync reads users from a source of truth (a CSV export, LDAP), compares them \
with what it last applied (kept in a state store: SQLite by default, Postgres in production) and \
plans the creates, updates, role changes, disables and deletes each target application needs. \
`dirsync plan` shows the plan without changing anything.\n\nExit codes: 0 nothing to do / \
success, 1 error (or a target failed), 2 changes pending, 3 blocked by the safety policy, 4 \
applied with failures, 5 skipped (another instance is applying every selected target), 6 \
interrupted, 7 applied but source records quarantined. `dirsync run --once` exits with its \
run's code, as `sync` would."
)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        short,
        long,
        global = true,
        env = "DIRSYNC_CONFIG",
        default_value = config::DEFAULT_PATH
    )]
    pub config: PathBuf,
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "DIRSYNC_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// More log detail: -v debug, -vv trace. `DIRSYNC_LOG` (e.g. `dirsync=debug`) overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as a service: scheduled syncs per [schedule] until SIGTERM (see systemd/).
    ///
    /// With --once: one run, then exit with its code, as `sync` would (0 ok, 1 error or a
    /// failed target, 3 blocked, 4 some operations failed, 5 skipped: another instance is
    /// applying every target, 6 interrupted).
    Run(RunArgs),
    /// Show what a sync would change, without changing anything (a dry run).
    ///
    /// Exit code 0: nothing to do; 2: changes pending; 3: blocked by the safety policy.
    Plan(PlanArgs),
    /// Bring the targets in line with the source. With --dry-run, the same as `plan`.
    ///
    /// Exit code 0: applied (or nothing to do); 1: error or a target failed; 3: blocked by the
    /// safety policy; 4: some operations failed; 5: skipped, another dirsync instance is
    /// applying every selected target; 6: interrupted; 7: applied, but source records were
    /// quarantined (left as they are; listed in the report).
    Sync(SyncArgs),
    /// Validate the configuration and show the schedule's next three run times; without
    /// --offline also open the state store, read the source, and reach each enabled target
    /// (authenticate, one read, role names).
    Check(CheckArgs),
    /// Take over existing accounts of a target: match them to source users and record them as
    /// managed by dirsync. Changes nothing on the target.
    Adopt(AdoptArgs),
    /// Compare each target's accounts with what dirsync recorded: owned accounts changed by
    /// hand (fields, roles, enabled), owned accounts deleted remotely, and accounts dirsync does
    /// not own. Reads only: changes nothing on the targets or in the store.
    ///
    /// Exit code 0: no drift; 2: drift found; 1: error.
    Drift(DriftArgs),
    /// Apply a plan saved with `dirsync plan --out FILE`: exactly its operations, or nothing
    /// if the state, the source or the configuration changed since (or it is older than
    /// safety.max_plan_age).
    ///
    /// Exit code 0: applied; 1: refused or error (nothing sent); 3: blocked (without
    /// --force); 4: some operations failed.
    Apply(ApplyArgs),
    /// Apply the state store's schema migrations.
    Migrate,
    /// List recent runs, or show one.
    Runs(RunsArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// One run, then exit with the run's exit code (for systemd timers or cron).
    #[arg(long)]
    pub once: bool,
    /// Allow running as root (not recommended: use a dedicated system user).
    #[arg(long)]
    pub allow_root: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Only this target (repeatable). Default: every enabled target.
    #[arg(short, long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// Report format.
    #[arg(short, long, value_enum, default_value = "text")]
    pub format: Format,
    /// Also save the plan with its fingerprint, for `dirsync apply FILE` (plans only).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The plan file written by `dirsync plan --out FILE`.
    pub file: PathBuf,
    /// Apply even if the saved plan was blocked by the safety policy (recorded on the run).
    #[arg(long)]
    pub force: bool,
    /// Report format.
    #[arg(short, long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Plan and report only; send nothing to any target.
    #[arg(long)]
    pub dry_run: bool,
    /// Apply even if the safety policy blocks the plan (recorded on the run).
    #[arg(long)]
    pub force: bool,
    /// Plan against the accounts as each target lists them (not as recorded), so changes
    /// made by hand to owned accounts are corrected back to the source.
    #[arg(long, conflicts_with = "dry_run")]
    pub refresh: bool,
    /// Only this user's operations (source key), e.g. to onboard someone now. Percentage
    /// thresholds do not apply; lifecycle rules (on_missing) do.
    #[arg(long, value_name = "KEY", conflicts_with = "refresh")]
    pub user: Option<String>,
    #[command(flatten)]
    pub plan: PlanArgs,
}

#[derive(Debug, Args)]
pub struct DriftArgs {
    /// Only this target (repeatable). Default: every enabled target.
    #[arg(short, long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// Report format.
    #[arg(short, long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct AdoptArgs {
    /// The target whose accounts to adopt.
    #[arg(short, long = "target", value_name = "NAME")]
    pub target: String,
    /// Match remote accounts to source users by email or by the target's login field.
    #[arg(long = "match", value_enum, default_value = "email")]
    pub match_on: crate::adopt::MatchOn,
    /// Show what would be adopted; record nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Report format.
    #[arg(short, long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Only validate the configuration (no store, no source, no network). Suitable for
    /// systemd's ExecStartPre.
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub command: Option<RunsCommand>,
    /// How many runs to list.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub limit: u32,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Show one run: its summary per target and its journaled operations.
    Show {
        /// The run id (from `dirsync runs`).
        id: i64,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "text")]
        format: Format,
    },
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format, cli.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let code = rt.block_on(dispatch(cli));
    ExitCode::from(code)
}

/// An error for the user: printed on stderr, exit code 1.
pub(crate) fn fail(e: impl std::fmt::Display) -> u8 {
    eprintln!("error: {e}");
    EXIT_ERROR
}

async fn dispatch(cli: Cli) -> u8 {
    let config = match config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    for w in config::perms::warnings(&cli.config) {
        tracing::warn!(config = %cli.config.display(), "{w}");
    }
    match cli.command {
        Command::Run(args) => {
            let opts = crate::daemon::DaemonOptions {
                once: args.once,
                allow_root: args.allow_root,
            };
            match crate::daemon::run(&cli.config, config, opts).await {
                Ok(code) => code,
                Err(e) => fail(e),
            }
        }
        Command::Plan(args) => plan(&config, &args, false, true).await,
        Command::Sync(args) => {
            if args.user.is_some() {
                crate::saved_plan::cli_sync_user(&config, &args).await
            } else if args.plan.out.is_some() && !args.dry_run {
                fail("--out saves a plan: use it with `dirsync plan` or `sync --dry-run`")
            } else if args.dry_run {
                plan(&config, &args.plan, args.force, true).await
            } else {
                sync(&config, &args).await
            }
        }
        Command::Adopt(args) => adopt(&config, &args).await,
        Command::Apply(args) => crate::saved_plan::cli_apply(&config, &args).await,
        Command::Drift(args) => drift(&config, &args).await,
        Command::Check(args) => check(&config, args.offline).await,
        Command::Migrate => migrate(&config).await,
        Command::Runs(args) => runs(&config, args).await,
    }
}

/// Opens the configured store and marks the runs left `running` by a process that is gone as
/// `interrupted` (every command that opens the store does, so `dirsync runs` never shows a dead
/// run as running).
pub(crate) async fn open_store(
    config: &Config,
    migrate: bool,
) -> Result<Box<dyn Store>, store::StoreError> {
    let store = store::open(&config.state.location, migrate).await?;
    store::interrupt_abandoned_runs(store.as_ref()).await;
    Ok(store)
}

async fn plan(config: &Config, args: &PlanArgs, force: bool, dry_run: bool) -> u8 {
    // Targets are checked before anything is opened or read.
    if let Err(e) = run::select_targets(config, &args.targets) {
        return fail(e);
    }
    if let Some(out) = &args.out {
        return crate::saved_plan::cli_plan(config, args, out, force).await;
    }
    let store = match open_store(config, config.state.auto_migrate).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let opts = RunOptions {
        trigger: Trigger::DryRun,
        targets: args.targets.clone(),
        force,
        now: chrono::Utc::now(),
        stop: Default::default(),
        refresh: false,
    };
    match run::execute(config, store.as_ref(), &opts, None).await {
        Ok(plan) => print_report(&plan, args.format, dry_run),
        Err(e) => fail(e),
    }
}

/// Prints a report on stdout; returns the exit code of the plan.
pub(crate) fn print_report(plan: &run::RunPlan, format: Format, dry_run: bool) -> u8 {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written = report::write_report(&mut out, plan, format, dry_run)
        .and_then(|()| std::io::Write::flush(&mut out));
    match written {
        // A closed pipe (`dirsync plan | head`) is the reader's choice, not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            fail(format!("cannot write the report: {e}"))
        }
        _ => PlanStatus::of(plan).exit_code(),
    }
}

async fn sync(config: &Config, args: &SyncArgs) -> u8 {
    let targets = match run::select_targets(config, &args.plan.targets) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let mut connectors = run::Connectors::new();
    for t in targets {
        match crate::connector::connect(t) {
            Ok(c) => {
                connectors.insert(t.name.clone(), c);
            }
            Err(e) => return fail(e),
        }
    }
    let store = match open_store(config, config.state.auto_migrate).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Err(e) = stop_on_signals(std::sync::Arc::clone(&stop)) {
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
    match run::execute(config, store.as_ref(), &opts, Some(&connectors)).await {
        Ok(plan) => print_report(&plan, args.plan.format, false),
        Err(e) => fail(e),
    }
}

/// SIGTERM / SIGINT during `sync` (also `sync --user` and `apply`): set `stop`, so dispatch stops at once, requests in flight
/// finish (within the shutdown grace), the run is recorded `interrupted` and `sync` exits 6.
pub(crate) fn stop_on_signals(
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!(
            signal = name,
            "shutdown requested: no new operation is sent; requests in flight may finish"
        );
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    Ok(())
}

/// Exit code of `dirsync drift` when drift was found.
pub const EXIT_DRIFT: u8 = 2;

async fn drift(config: &Config, args: &DriftArgs) -> u8 {
    let targets = match run::select_targets(config, &args.targets) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let mut connectors = Vec::with_capacity(targets.len());
    for t in &targets {
        match crate::connector::connect(t) {
            Ok(c) => connectors.push(c),
            Err(e) => return fail(e),
        }
    }
    let store = match open_store(config, config.state.auto_migrate).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let mut report = crate::drift::DriftReport {
        generated_at: chrono::Utc::now(),
        targets: Vec::with_capacity(targets.len()),
    };
    for (t, c) in targets.iter().zip(&connectors) {
        match crate::drift::detect(store.as_ref(), c.as_ref(), t).await {
            Ok(d) => report.targets.push(d),
            Err(e) => return fail(e),
        }
    }
    out!("{}", crate::drift::render(&report, args.format));
    if report.has_drift() { EXIT_DRIFT } else { 0 }
}

async fn adopt(config: &Config, args: &AdoptArgs) -> u8 {
    let target = match run::select_targets(config, std::slice::from_ref(&args.target)) {
        Ok(t) => t[0],
        Err(e) => return fail(e),
    };
    let connector = match crate::connector::connect(target) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let store = match open_store(config, config.state.auto_migrate).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let snapshot = match run::read_source(&config.source).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    match crate::adopt::adopt(
        store.as_ref(),
        connector.as_ref(),
        target,
        &snapshot,
        args.match_on,
        args.dry_run,
    )
    .await
    {
        Ok(result) => {
            out!("{}", crate::adopt::render(&result, args.format));
            0
        }
        Err(e) => fail(e),
    }
}

fn describe_location(loc: &store::StoreLocation) -> String {
    loc.describe()
}

async fn check(config: &Config, offline: bool) -> u8 {
    outln!("configuration {}: OK", config.path.display());
    outln!("  state:  {}", describe_location(&config.state.location));
    let state_dir_ok = check_state_dir(config);
    match &config.source {
        config::SourceConfig::Csv(c) => outln!("  source: csv {}", c.path.display()),
        config::SourceConfig::Ldap(l) => outln!(
            "  source: ldap {} base {:?} filter {:?}",
            l.url,
            l.base_dn,
            l.filter
        ),
    }
    for t in &config.targets {
        outln!(
            "  target: {} ({}) {}{}",
            t.name,
            t.kind.as_str(),
            t.base_url,
            if t.enabled { "" } else { " [disabled]" }
        );
    }
    print_schedule(&config.schedule, chrono::Utc::now());
    if offline {
        return if state_dir_ok { 0 } else { EXIT_ERROR };
    }
    let mut failed = !state_dir_ok;
    match open_store(config, config.state.auto_migrate).await {
        Ok(_) => outln!("state store: OK"),
        Err(e) => {
            outln!("state store: FAILED: {e}");
            failed = true;
        }
    }
    if let config::SourceConfig::Ldap(l) = &config.source {
        failed |= !check_ldap(l).await;
    } else {
        match run::read_source(&config.source).await {
            Ok(s) if s.quarantined().is_empty() => outln!("source: OK, {} users", s.len()),
            Ok(s) => {
                outln!(
                    "source: OK, {} users, {} record(s) quarantined (a sync leaves their accounts as they are):",
                    s.users().len(),
                    s.quarantined().len()
                );
                for q in s.quarantined() {
                    outln!(
                        "  ? quarantined {} {}: {} (value {})",
                        q.location.escape_debug(),
                        q.field.escape_debug(),
                        q.problem.escape_debug(),
                        q.value
                    );
                }
            }
            Err(e) => {
                outln!("source: FAILED: {e}");
                failed = true;
            }
        }
    }
    for t in config.targets.iter().filter(|t| t.enabled) {
        failed |= !check_target(t).await;
    }
    if failed { EXIT_ERROR } else { 0 }
}

/// The `[schedule]` lines of `check`: the schedule in words and the next three run times of
/// `dirsync run` (RFC 3339, UTC), from the same function the daemon uses.
fn print_schedule(schedule: &config::ScheduleConfig, now: chrono::DateTime<chrono::Utc>) {
    outln!(
        "  schedule: {}{}",
        crate::schedule::describe(schedule),
        if schedule.run_on_start {
            "; the service also runs once at start (run_on_start)"
        } else {
            ""
        }
    );
    let next = crate::schedule::upcoming(schedule, now, 3);
    let times: Vec<String> = next
        .iter()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .collect();
    let from = if schedule.cron.is_some() {
        ""
    } else {
        " (counted from now)"
    };
    outln!("  next runs{from}: {}", times.join(", "));
}

/// `check`: the SQLite state file's directory must exist (it is never created: a missing
/// directory means the path points somewhere the service does not use). False if missing.
fn check_state_dir(config: &Config) -> bool {
    let store::StoreLocation::Sqlite { path } = &config.state.location else {
        return true;
    };
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => {
            outln!(
                "state: FAILED: state.path {}: directory {} does not exist (create it, or set \
                 [state] path; the service's StateDirectory= creates /var/lib/dirsync)",
                path.display(),
                dir.display()
            );
            false
        }
        _ => true,
    }
}

/// `check` of a target: authenticates and reads once; validates role names where the target
/// lists its roles. False when a sync would fail.
async fn check_target(t: &crate::config::TargetConfig) -> bool {
    let connector = match crate::connector::connect(t) {
        Ok(c) => c,
        Err(e) => {
            outln!("target {}: FAILED: {e}", t.name);
            return false;
        }
    };
    if let Err(e) = connector.probe().await {
        outln!("target {}: FAILED: {e}", t.name);
        return false;
    }
    let mut roles: Vec<String> = t.mapping.default_roles.clone();
    for r in &t.mapping.role_rules {
        roles.extend(r.roles.iter().cloned());
    }
    roles.sort();
    roles.dedup();
    match connector.unknown_roles(&roles).await {
        Ok(Some(unknown)) if !unknown.is_empty() => {
            outln!(
                "target {}: FAILED: roles unknown to the target: {}",
                t.name,
                unknown.join(", ")
            );
            false
        }
        Ok(Some(_)) => {
            outln!(
                "target {}: OK (reachable, credentials accepted, {} role names known)",
                t.name,
                roles.len()
            );
            true
        }
        Ok(None) => {
            outln!("target {}: OK (reachable, credentials accepted)", t.name);
            true
        }
        Err(e) => {
            outln!("target {}: FAILED: listing roles: {e}", t.name);
            false
        }
    }
}

/// `check` of an LDAP source: binds, runs the whole search and reports what it found.
/// False when a sync would fail (the search itself); entries with problems are listed (a sync
/// quarantines them).
async fn check_ldap(l: &crate::source::ldap::LdapSettings) -> bool {
    let c = match crate::source::ldap::check(l).await {
        Ok(c) => c,
        Err(e) => {
            outln!("source: FAILED: {e}");
            return false;
        }
    };
    outln!(
        "source: bind and search OK ({} ms): {} entries found, {} users ({} disabled, {} without groups)",
        c.elapsed.as_millis(),
        c.entries,
        c.users,
        c.disabled,
        c.without_groups
    );
    let list = |what: &str, dns: &[String]| {
        if dns.is_empty() {
            return;
        }
        outln!("  {} entries {what}:", dns.len());
        for dn in dns.iter().take(20) {
            outln!("    {dn:?}");
        }
        if dns.len() > 20 {
            outln!("    ... and {} more", dns.len() - 20);
        }
    };
    list(
        &format!("lacking the key attribute {:?}", l.attributes.key),
        &c.without_key,
    );
    let skip = l.missing_email == crate::source::ldap::MissingEmail::Skip;
    list(
        &format!(
            "lacking an email ({}){}",
            l.attributes.email.join(" / "),
            if skip { ", skipped" } else { "" }
        ),
        &c.without_email,
    );
    let other: Vec<_> = c
        .problems
        .iter()
        .filter(|p| p.dn.as_ref().is_none_or(|dn| !c.without_key.contains(dn)))
        .collect();
    if !other.is_empty() {
        outln!("  {} other problems:", other.len());
        for p in other.iter().take(50) {
            outln!("    {p}");
        }
    }
    if !c.problems.is_empty() || !(skip || c.without_email.is_empty()) {
        // Problems of entries: a sync quarantines those entries (problems of the read as a
        // whole are the error above).
        outln!(
            "source: OK; a sync quarantines the entries above (their accounts are left as they are)"
        );
    }
    true
}

async fn migrate(config: &Config) -> u8 {
    match open_store(config, true).await {
        Ok(s) => {
            outln!(
                "migrations applied ({})",
                describe_location(&config.state.location)
            );
            drop(s);
            0
        }
        Err(e) => fail(e),
    }
}

async fn runs(config: &Config, args: RunsArgs) -> u8 {
    let store = match open_store(config, config.state.auto_migrate).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    match args.command {
        None => match store.list_runs(args.limit).await {
            Ok(list) => {
                out!(
                    "{}",
                    report::render_runs(&config.state.location.describe(), &list, args.format)
                );
                0
            }
            Err(e) => fail(e),
        },
        Some(RunsCommand::Show { id, format }) => match store.get_run(id).await {
            Ok(Some(r)) => match store.run_operations(id).await {
                Ok(ops) => {
                    out!("{}", report::render_run(&r, &ops, format));
                    0
                }
                Err(e) => fail(e),
            },
            Ok(None) => fail(format!("no run with id {id} (see `dirsync runs`)")),
            Err(e) => fail(e),
        },
    }
}
