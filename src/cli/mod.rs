//! The command line: the clap definitions, dispatch to one file per command family (`plan`:
//! plan / sync / apply / sync --user; `runs`: runs / runs show / migrate; `adopt`; `drift`;
//! `check`; `run` is the daemon's), and exit codes. `session`: what a command opens, once.
//!
//! Exit codes: 0 success / nothing to do; 1 error (config, source, store, a failed target); 2
//! changes pending (`plan`, `sync --dry-run`) or drift found (`drift`); 3 blocked by the safety
//! policy; 4 applied with some operations failed; 5 every target skipped because another
//! instance is applying it; 6 interrupted (SIGTERM); 7 applied, but source records were
//! quarantined. `run --once` exits with its run's code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config;
use crate::outcome::RunPlan;
use crate::report::{self, Format, PlanStatus};
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
/// Exit code of `dirsync drift` when drift was found.
pub const EXIT_DRIFT: u8 = 2;

/// The end of each command's `--help`: its exit codes and one example (also in the man pages).
mod help {
    pub const DIRSYNC: &str = "\
Exit codes:
  0  success, nothing to do          4  applied, some operations failed
  1  error (or a target failed)      5  skipped: another instance applies every target
  2  changes pending / drift found   6  interrupted (SIGTERM / SIGINT)
  3  blocked by the safety policy    7  applied, but source records were quarantined

Example:
  dirsync plan                       # what a sync would change; changes nothing";
    pub const RUN: &str = "\
Exit codes:
  without --once: 0 stopped by SIGTERM / SIGINT; 1 cannot start (config, store, listener)
  with --once, the run's code, as `sync`:
  0  applied or nothing to do        4  some operations failed
  1  error, or a target failed       5  skipped: another instance applies every target
  3  blocked by the safety policy    6  interrupted
                                     7  applied, but source records were quarantined

Example:
  dirsync run --once --config /etc/dirsync/dirsync.toml";
    pub const PLAN: &str = "\
Exit codes:
  0  nothing to do    2  changes pending
  1  error            3  blocked by the safety policy

Example:
  dirsync plan --target covata-prod --out plan.json";
    pub const SYNC: &str = "\
On a terminal (standard input and error both terminals), `sync` first shows the plan and asks
`Apply these changes? (yes/no)`: only `yes` applies. --yes skips the question; without a
terminal (scripts, timers, the service) it is never asked. A blocked plan still needs --force.

Exit codes:
  0  applied, or nothing to do
  1  error, or a target failed (the other targets were still applied)
  2  not applied: the question was not answered `yes` (with --dry-run: changes pending)
  3  blocked by the safety policy
  4  some operations failed
  5  skipped: another instance is applying every selected target
  6  interrupted (SIGTERM / SIGINT)
  7  applied, but source records were quarantined

Example:
  dirsync sync --yes --target covata-prod";
    pub const CHECK: &str = "\
Exit codes:
  0  the configuration is valid (and, without --offline, everything was reached)
  1  a problem was found (each one is listed)

Example:
  dirsync check --offline --config /etc/dirsync/dirsync.toml";
    pub const ADOPT: &str = "\
It asks no question: it sends nothing to the target. See what it would record with --dry-run.

Exit codes:
  0  adopted (or, with --dry-run, shown)
  1  error

Example:
  dirsync adopt --target covata-prod --match email --dry-run";
    pub const DRIFT: &str = "\
Exit codes:
  0  no drift    1  error    2  drift found

Example:
  dirsync drift --target covata-prod --format json";
    pub const APPLY: &str = "\
It asks no question: the saved plan is the one that was reviewed.

Exit codes:
  0  applied                         4  some operations failed
  1  refused or error (nothing sent) 6  interrupted (SIGTERM / SIGINT)
  3  blocked (without --force)       7  applied, but source records were quarantined

Example:
  dirsync plan --out plan.json && dirsync apply plan.json";
    pub const MIGRATE: &str = "\
Exit codes:
  0  the schema is current    1  error

Example:
  dirsync migrate --config /etc/dirsync/dirsync.toml";
    pub const RUNS: &str = "\
Exit codes:
  0  listed    1  error (or no such run)

Example:
  dirsync runs -n 5 && dirsync runs show 42 --format markdown";
    pub const RUNS_SHOW: &str = "\
Exit codes:
  0  shown    1  error, or no such run

Example:
  dirsync runs show 42 --format markdown";
    pub const PRUNE: &str = "\
Exit codes:
  0  pruned (or nothing to prune)    1  error

Example:
  dirsync prune --keep 30d";
}

mod adopt;
mod check;
mod confirm;
mod drift;
pub mod generate;
mod plan;
mod progress;
mod runs;
mod session;

#[derive(Debug, Parser)]
#[command(
    name = "dirsync",
    version = crate::build_info::VERSION_LINE,
    about = "Keep SaaS user accounts in line with your directory (LDAP or a CSV export).",
    long_about = "dirsync reads users from a source of truth (a CSV export, LDAP), compares them \
with what it last applied (kept in a state store: SQLite by default, Postgres in production) and \
plans the creates, updates, role changes, disables and deletes each target application needs. \
`dirsync plan` shows the plan without changing anything.\n\nExit codes: 0 nothing to do / \
success, 1 error (or a target failed), 2 changes pending, 3 blocked by the safety policy, 4 \
applied with failures, 5 skipped (another instance is applying every selected target), 6 \
interrupted, 7 applied but source records quarantined. `dirsync run --once` exits with its \
run's code, as `sync` would.",
    after_help = help::DIRSYNC
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
    /// No progress display and no progress log events (reports and errors still print).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as a service: scheduled syncs per [schedule] until SIGTERM (see systemd/).
    ///
    /// With --once: one run, then exit with its code, as `sync` would.
    #[command(after_help = help::RUN)]
    Run(RunArgs),
    /// Show what a sync would change, without changing anything (a dry run).
    #[command(after_help = help::PLAN)]
    Plan(PlanArgs),
    /// Bring the targets in line with the source. With --dry-run, the same as `plan`.
    #[command(after_help = help::SYNC)]
    Sync(SyncArgs),
    /// Validate the configuration and show the schedule's next three run times; without
    /// --offline also open the state store, read the source, and reach each enabled target
    /// (authenticate, one read, role names).
    #[command(after_help = help::CHECK)]
    Check(CheckArgs),
    /// Take over existing accounts of a target: match them to source users and record them as
    /// managed by dirsync. Changes nothing on the target.
    #[command(after_help = help::ADOPT)]
    Adopt(AdoptArgs),
    /// Compare each target's accounts with what dirsync recorded: owned accounts changed by
    /// hand (fields, roles, enabled), owned accounts deleted remotely, and accounts dirsync does
    /// not own. Reads only: changes nothing on the targets or in the store.
    #[command(after_help = help::DRIFT)]
    Drift(DriftArgs),
    /// Apply a plan saved with `dirsync plan --out FILE`: exactly its operations, or nothing
    /// if the state, the source or the configuration changed since (or it is older than
    /// safety.max_plan_age).
    #[command(after_help = help::APPLY)]
    Apply(ApplyArgs),
    /// Apply the state store's schema migrations.
    #[command(after_help = help::MIGRATE)]
    Migrate,
    /// List recent runs (real runs first, then dry runs in a section of their own), or show
    /// one.
    #[command(after_help = help::RUNS)]
    Runs(RunsArgs),
    /// Delete runs (and their journal rows) that finished longer ago than [state] keep_runs
    /// (default 90d). Runs still needed are kept: a running run, one with operations not yet
    /// confirmed, and the last good run the safety policy compares against. Accounts are never
    /// touched.
    #[command(after_help = help::PRUNE)]
    Prune(PruneArgs),
    /// Write the man pages or the shell completions into a directory (for packagers).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// What to write.
    #[arg(value_enum)]
    pub what: Generated,
    /// The directory to write into (created if missing).
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Generated {
    /// dirsync(1), a page per command, dirsync.toml(5).
    Man,
    /// bash, zsh and fish completions.
    Completions,
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
    /// Apply without showing the plan and asking first (the question is asked only on a
    /// terminal).
    #[arg(short, long, conflicts_with = "dry_run")]
    pub yes: bool,
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
    /// How many runs to list (of those the filters select; dry runs included).
    #[arg(short = 'n', long, default_value_t = 20)]
    pub limit: u32,
    /// Only runs of these triggers (repeat or separate with commas): schedule (the daemon),
    /// manual (`sync`), dry_run (`plan`), apply (`apply FILE`), user (`sync --user`).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "TRIGGER")]
    pub trigger: Vec<crate::store::Trigger>,
    /// Only runs with these statuses (repeat or separate with commas).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "STATUS")]
    pub status: Vec<crate::store::RunStatus>,
    /// Only runs started within this duration (7d, 12h) or since this date (2026-12-01,
    /// midnight UTC) or time (2026-12-01T08:00:00Z).
    #[arg(long, value_name = "DURATION|DATE")]
    pub since: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Keep runs that finished within this duration instead of [state] keep_runs (at least
    /// 1d; e.g. 30d).
    #[arg(long, value_name = "DURATION")]
    pub keep: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Show one run: its summary per target and its journaled operations.
    #[command(after_help = help::RUNS_SHOW)]
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
    if let Command::Generate(args) = &cli.command {
        // Needs no configuration.
        return ExitCode::from(generate(args));
    }
    telemetry::init(cli.log_format, cli.verbose);
    progress::install(cli.quiet);
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

/// `dirsync generate`: writes the files and lists them.
fn generate(args: &GenerateArgs) -> u8 {
    let written = match args.what {
        Generated::Man => generate::man_pages(&args.dir),
        Generated::Completions => generate::completions(&args.dir),
    };
    match written {
        Ok(files) => {
            for f in files {
                outln!("{}", f.display());
            }
            0
        }
        Err(e) => fail(format!("cannot write into {}: {e}", args.dir.display())),
    }
}

/// An error for the user: printed on stderr, exit code 1.
fn fail(e: impl std::fmt::Display) -> u8 {
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
        Command::Generate(args) => generate(&args),
        Command::Plan(args) => plan::plan(&config, &args, false, true).await,
        Command::Sync(args) => {
            if args.user.is_some() {
                plan::sync_user(&config, &args).await
            } else if args.plan.out.is_some() && !args.dry_run {
                fail("--out saves a plan: use it with `dirsync plan` or `sync --dry-run`")
            } else if args.dry_run {
                plan::plan(&config, &args.plan, args.force, true).await
            } else {
                plan::sync(&config, &args).await
            }
        }
        Command::Adopt(args) => adopt::adopt(&config, &args).await,
        Command::Apply(args) => plan::apply(&config, &args).await,
        Command::Drift(args) => drift::drift(&config, &args).await,
        Command::Check(args) => check::check(&config, args.offline).await,
        Command::Migrate => runs::migrate(&config).await,
        Command::Runs(args) => runs::runs(&config, args).await,
        Command::Prune(args) => runs::prune(&config, &args).await,
    }
}

/// Prints a report on stdout; returns the exit code of the plan.
fn print_report(plan: &RunPlan, format: Format, dry_run: bool) -> u8 {
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

/// SIGTERM / SIGINT during `sync` (also `sync --user` and `apply`): set `stop`, so dispatch stops at once, requests in flight
/// finish (within the shutdown grace), the run is recorded `interrupted` and `sync` exits 6.
fn stop_on_signals(stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::io::Result<()> {
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
