//! `dirsync run`: the long-lived service. Scheduled runs that never overlap, per-target leader
//! locks (taken by each run), SIGTERM/SIGINT graceful shutdown, SIGHUP reload, systemd
//! notifications (READY, STATUS, WATCHDOG), and the optional health/metrics listener.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{RwLock, watch};
use tracing::{error, info, warn};

use crate::config::{self, Config, ScheduleConfig};
use crate::run::{self, Connectors, RunOptions};
use crate::store::{RunStatus, Store, Trigger};

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(
        "refusing to run as root: run dirsync as its own system user (see systemd/dirsync.service), or pass --allow-root"
    )]
    Root,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("http.listen {addr}: cannot listen: {message}")]
    Listen { addr: SocketAddr, message: String },
}

/// Options of `dirsync run`.
#[derive(Debug, Clone, Copy)]
pub struct DaemonOptions {
    /// One run, then exit (for systemd timers and cron).
    pub once: bool,
    pub allow_root: bool,
}

/// When the next run starts, from `[schedule]`: the next cron time after now, or `last_start`
/// plus the interval (now, if that has passed), plus a random jitter. The run times come from
/// [`crate::schedule::upcoming`], which `dirsync check --offline` prints.
pub fn next_run(schedule: &ScheduleConfig, last_start: DateTime<Utc>) -> DateTime<Utc> {
    let jitter = if schedule.jitter.is_zero() {
        chrono::Duration::zero()
    } else {
        chrono::Duration::milliseconds(fastrand::i64(
            0..=i64::try_from(schedule.jitter.as_millis()).unwrap_or(i64::MAX),
        ))
    };
    let now = Utc::now();
    let from = if schedule.cron.is_some() {
        now
    } else {
        last_start
    };
    let Some(next) = crate::schedule::upcoming(schedule, from, 1)
        .first()
        .copied()
    else {
        // Only a cron expression without a time in the next 50 years, which validation
        // refuses: wait a day and look again rather than spin.
        warn!(schedule = %crate::schedule::describe(schedule), "no next run time found");
        return now + chrono::Duration::days(1);
    };
    if next < now {
        warn!(
            schedule = %crate::schedule::describe(schedule),
            "the last run took longer than the interval; the next run starts now"
        );
        return now;
    }
    next.checked_add_signed(jitter).unwrap_or(next)
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    // Without NOTIFY_SOCKET (not under systemd) this is a no-op.
    let _ = sd_notify::notify(state);
}

/// Shared state of the running daemon.
struct Daemon {
    config: RwLock<Config>,
    config_path: PathBuf,
    store: Box<dyn Store>,
    stop: Arc<AtomicBool>,
    failures_in_row: AtomicU32,
}

/// Runs the daemon until SIGTERM / SIGINT (or one run with `once`). Returns the exit code.
pub async fn run(
    config_path: &Path,
    config: Config,
    opts: DaemonOptions,
) -> Result<u8, DaemonError> {
    // SAFETY: geteuid has no preconditions, touches no memory and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root && !opts.allow_root {
        return Err(DaemonError::Root);
    }
    let store = crate::store::open(&config.state.location, config.state.auto_migrate).await?;
    let listen = config.http.listen;
    let (stop_tx, stop_rx) = watch::channel(false);
    let daemon = Arc::new(Daemon {
        config: RwLock::new(config),
        config_path: config_path.to_path_buf(),
        store,
        stop: Arc::new(AtomicBool::new(false)),
        failures_in_row: AtomicU32::new(0),
    });
    if let Some(addr) = listen {
        let listener =
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| DaemonError::Listen {
                    addr,
                    message: e.to_string(),
                })?;
        info!(%addr, "health and metrics listener started");
        let d = Arc::clone(&daemon);
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let app = router(d);
            let res = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = res {
                error!(error = %e, "health and metrics listener failed");
            }
        });
    }
    spawn_signals(Arc::clone(&daemon), stop_tx);
    spawn_watchdog(stop_rx.clone());
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("waiting for the first run"),
    ]);
    info!(once = opts.once, "dirsync daemon ready");

    let mut first = true;
    let mut last_start = Utc::now();
    // `run --once`: the run's exit code, exactly as `sync` would give it.
    let mut once_code = 0;
    let mut stop_rx = stop_rx;
    // When the run history was last pruned (`[state] keep_runs`): at most once an hour.
    let mut last_prune: Option<Instant> = None;
    loop {
        let (schedule, run_on_start, shutdown_timeout) = {
            let c = daemon.config.read().await;
            (
                c.schedule.clone(),
                c.schedule.run_on_start,
                c.daemon.shutdown_timeout,
            )
        };
        if !(first && (run_on_start || opts.once)) {
            let at = next_run(&schedule, last_start);
            let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            info!(next_run = %at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "waiting for the next scheduled run");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop_rx.wait_for(|s| *s) => {}
            }
        }
        first = false;
        if *stop_rx.borrow() {
            break;
        }
        last_start = Utc::now();
        let run = one_run(&daemon);
        tokio::pin!(run);
        let ended = tokio::select! {
            s = &mut run => s,
            _ = stop_rx.wait_for(|s| *s) => {
                info!(timeout_s = shutdown_timeout.as_secs(), "shutdown requested: letting requests in flight finish");
                match tokio::time::timeout(shutdown_timeout, &mut run).await {
                    Ok(s) => s,
                    Err(_) => {
                        warn!("shutdown timeout reached: stopping; unfinished operations stay journaled for the next start");
                        RunEnd { status: None, code: crate::report::EXIT_INTERRUPTED }
                    }
                }
            }
        };
        once_code = ended.code;
        if !*stop_rx.borrow() && last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(Instant::now());
            prune(&daemon).await;
        }
        if let Some(status) = ended.status {
            notify(&[sd_notify::NotifyState::Status(&format!(
                "last run {} at {}",
                status.as_str(),
                Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
            ))]);
        }
        if opts.once || *stop_rx.borrow() {
            break;
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    info!("dirsync daemon stopped");
    Ok(if opts.once { once_code } else { 0 })
}

/// How often the daemon prunes the run history, at most.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Deletes the runs older than `[state] keep_runs` after a run. A failure is a warning: it
/// never fails the run (the next prune, an hour later, tries again).
async fn prune(d: &Daemon) {
    let keep = d.config.read().await.state.keep_runs;
    let before = crate::store::prune_before(Utc::now(), keep);
    let before_text = before.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match d.store.prune_runs(before).await {
        Ok(pruned) => info!(
            runs = pruned.runs,
            journal_rows = pruned.operations,
            before = %before_text,
            "pruned the run history"
        ),
        Err(e) => warn!(
            error = %e,
            before = %before_text,
            keep = %humantime::format_duration(keep),
            "could not prune the run history (state.keep_runs); the run is not affected"
        ),
    }
}

/// How one scheduled run ended: its status (for STATUS=; none when it never started or was cut
/// off by the shutdown timeout) and the exit code `sync` would have given it (`run --once`).
struct RunEnd {
    status: Option<RunStatus>,
    code: u8,
}

/// One scheduled run of every enabled target. Errors are logged and counted (the daemon goes
/// on); the status is returned for STATUS= and the metrics, with the exit code of the run as
/// `sync` computes it (a target whose client cannot be built makes it 1, as it does `sync`).
async fn one_run(d: &Daemon) -> RunEnd {
    let failed = RunEnd {
        status: Some(RunStatus::Failed),
        code: crate::report::EXIT_ERROR,
    };
    let config = d.config.read().await.clone();
    let started = Instant::now();
    // Runs of other processes (a killed `sync`, a crashed instance) found before each run.
    crate::store::interrupt_abandoned_runs(d.store.as_ref()).await;
    let targets = match run::select_targets(&config, &[]) {
        Ok(t) => t,
        Err(e) => {
            error!(error = %e, "no target to run");
            return failed;
        }
    };
    let (built, not_built) = crate::connector::connect_each(targets);
    for e in &not_built {
        error!(target = %e.target, error = %e, "target skipped");
    }
    let unusable = !not_built.is_empty();
    let names: Vec<String> = built.iter().map(|(name, _)| name.clone()).collect();
    let connectors: Connectors = built.into_iter().collect();
    if names.is_empty() {
        return failed;
    }
    let opts = RunOptions {
        trigger: Trigger::Schedule,
        targets: names,
        force: false,
        now: Utc::now(),
        stop: Arc::clone(&d.stop),
        refresh: false,
    };
    let result = run::execute(&config, d.store.as_ref(), &opts, Some(&connectors)).await;
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(plan) => {
            let status = plan.status();
            crate::metrics::record_run(status.as_str(), Some(plan.counts()), seconds);
            if status == RunStatus::Failed {
                d.failures_in_row.fetch_add(1, Ordering::SeqCst);
            } else {
                d.failures_in_row.store(0, Ordering::SeqCst);
            }
            let code = if status == RunStatus::Interrupted {
                crate::report::EXIT_INTERRUPTED
            } else {
                crate::report::PlanStatus::of(&plan).exit_code()
            };
            RunEnd {
                status: Some(status),
                code: if unusable {
                    crate::report::EXIT_ERROR
                } else {
                    code
                },
            }
        }
        Err(e) => {
            error!(error = %e, "run failed");
            crate::metrics::record_run(RunStatus::Failed.as_str(), None, seconds);
            d.failures_in_row.fetch_add(1, Ordering::SeqCst);
            failed
        }
    }
}

fn spawn_signals(d: Arc<Daemon>, stop_tx: watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            error!("cannot install signal handlers");
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = hup.recv() => {
                    reload(&d).await;
                    continue;
                }
            }
            info!("shutdown signal received");
            notify(&[sd_notify::NotifyState::Stopping]);
            d.stop.store(true, Ordering::SeqCst);
            let _ = stop_tx.send(true);
            return;
        }
    });
}

/// SIGHUP: re-read and validate the configuration; keep the old one if the new one is invalid.
async fn reload(d: &Daemon) {
    notify(&[sd_notify::NotifyState::Reloading]);
    match config::load(&d.config_path) {
        Ok(new) => {
            let mut cur = d.config.write().await;
            if !same_store(&cur, &new) {
                warn!("the [state] settings changed: they take effect after a restart");
            }
            *cur = new;
            info!(path = %d.config_path.display(), "configuration reloaded");
        }
        Err(e) => {
            error!(path = %d.config_path.display(), problems = e.problems.len(), error = %e, "configuration reload rejected; keeping the previous configuration");
        }
    }
    notify(&[sd_notify::NotifyState::Ready]);
}

fn same_store(a: &Config, b: &Config) -> bool {
    use crate::store::StoreLocation as L;
    match (&a.state.location, &b.state.location) {
        (L::Sqlite { path: p1 }, L::Sqlite { path: p2 }) => p1 == p2,
        (L::Postgres { url: u1, .. }, L::Postgres { url: u2, .. }) => u1.expose() == u2.expose(),
        _ => false,
    }
}

/// WATCHDOG=1 at half the interval systemd asks for (`WATCHDOG_USEC`).
fn spawn_watchdog(mut stop: watch::Receiver<bool>) {
    let Some(timeout) = sd_notify::watchdog_enabled().filter(|t| !t.is_zero()) else {
        return;
    };
    let every = timeout / 2;
    tokio::spawn(async move {
        loop {
            notify(&[sd_notify::NotifyState::Watchdog]);
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
}

/// What `/readyz` answers: the store answers and the last `unready_after_failures` runs did
/// not all fail. `/metrics` carries the same as `dirsync_ready`.
async fn readiness(d: &Daemon) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    if let Err(e) = d.store.list_runs(1).await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("state store unreachable: {e}\n"),
        );
    }
    let limit = d.config.read().await.http.unready_after_failures;
    let failures = d.failures_in_row.load(Ordering::SeqCst);
    if failures >= limit {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the last {failures} runs failed\n"),
        );
    }
    (StatusCode::OK, "ready\n".to_string())
}

fn router(d: Arc<Daemon>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get({
                let d = Arc::clone(&d);
                move || {
                    let d = Arc::clone(&d);
                    async move { readiness(&d).await }
                }
            }),
        )
        .route(
            "/metrics",
            get({
                let d = Arc::clone(&d);
                move || {
                    let d = Arc::clone(&d);
                    async move {
                        let ready = readiness(&d).await.0.is_success();
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4",
                            )],
                            crate::metrics::render() + &crate::metrics::render_ready(ready),
                        )
                    }
                }
            }),
        )
}
