//! How progress looks (see `crate::progress` for what it counts): on a terminal, a live status
//! line on stderr (done/total, rate, failures, ETA per task); without one (the service, pipes,
//! CI), a `progress` log event about every 10 s with the same fields; under systemd
//! (`NOTIFY_SOCKET`), `STATUS=` kept current ("covata: 1,234/5,000 applied"). `--quiet` turns
//! the line and the events off (systemd's status is no output: it stays). Never on stdout.
//!
//! Installed once for every command, `run` included (the daemon reports progress through the
//! same observer). A thread of its own reads the running tasks' figures on its clock: the steps
//! only bump counters.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::progress::{self, Figures, Observer, Phase, TaskState};
use crate::telemetry;

/// How often a progress log event is written per running task, by default.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Overrides [`LOG_EVERY`], in milliseconds (for tests; not documented for operators).
const LOG_EVERY_ENV: &str = "DIRSYNC_PROGRESS_INTERVAL_MS";
/// How often the terminal line is redrawn.
const DRAW_EVERY: Duration = Duration::from_millis(200);
/// A task shorter than this never shows on the terminal (no flicker for quick steps).
const SHOW_AFTER: Duration = Duration::from_millis(500);
/// How often systemd's status is brought up to date while tasks run.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Where progress goes.
#[derive(Debug, Clone, Copy)]
struct Outputs {
    terminal: bool,
    log: bool,
    systemd: bool,
    log_every: Duration,
}

/// Installs the renderer for this process: `quiet` turns the terminal line and the log events
/// off. Does nothing when nothing would be shown.
pub fn install(quiet: bool) {
    let terminal = std::io::stderr().is_terminal();
    let log_every = std::env::var(LOG_EVERY_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|ms| Duration::from_millis(ms.max(1)))
        .unwrap_or(LOG_EVERY);
    let out = Outputs {
        terminal: terminal && !quiet,
        log: !terminal && !quiet,
        systemd: std::env::var_os("NOTIFY_SOCKET").is_some(),
        log_every,
    };
    if !(out.terminal || out.log || out.systemd) {
        return;
    }
    let shared = Arc::new(Shared {
        out,
        tasks: Mutex::new(Vec::new()),
    });
    let ticker = Arc::clone(&shared);
    let spawned = std::thread::Builder::new()
        .name("progress".into())
        .spawn(move || ticker.tick_forever());
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the progress display; going on without it");
        return;
    }
    progress::install(Box::new(Renderer(shared)));
}

/// A running task as the renderer follows it.
struct Followed {
    task: Arc<TaskState>,
    /// When its last log event was written (its start before the first).
    logged: Instant,
    /// Whether a log event was written for it (then its end is logged too).
    ever_logged: bool,
    /// Whether it was on the terminal line (then its last figures stay on the terminal).
    ever_drawn: bool,
}

struct Shared {
    out: Outputs,
    tasks: Mutex<Vec<Followed>>,
}

struct Renderer(Arc<Shared>);

impl Observer for Renderer {
    fn started(&self, task: Arc<TaskState>) {
        self.0.lock().push(Followed {
            task,
            logged: Instant::now(),
            ever_logged: false,
            ever_drawn: false,
        });
    }

    fn finished(&self, task: &Arc<TaskState>) {
        let sh = &self.0;
        let mut tasks = sh.lock();
        let Some(i) = tasks.iter().position(|f| Arc::ptr_eq(&f.task, task)) else {
            return;
        };
        let f = tasks.remove(i);
        let fig = f.task.figures();
        if !worth_showing(&fig) {
            return;
        }
        if sh.out.log && f.ever_logged {
            log_event(&fig);
        }
        if sh.out.terminal && f.ever_drawn {
            telemetry::status_line(Some(&finished_line(&fig)), true);
            let rest = terminal_line(&tasks);
            telemetry::status_line(rest.as_deref(), false);
        }
        if sh.out.systemd {
            systemd_status(&status_text(&[fig]));
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Followed>> {
        // A poisoned list is still a list: progress is never worth a panic.
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tick_forever(&self) {
        let tick = if self.out.terminal {
            DRAW_EVERY
        } else {
            self.out.log_every.min(STATUS_EVERY)
        };
        let mut last_status = String::new();
        let mut status_at = Instant::now();
        loop {
            std::thread::sleep(tick);
            let mut tasks = self.lock();
            let now = Instant::now();
            if self.out.log {
                for f in tasks.iter_mut() {
                    if now.duration_since(f.logged) >= self.out.log_every {
                        let fig = f.task.figures();
                        if worth_showing(&fig) {
                            log_event(&fig);
                            f.ever_logged = true;
                        }
                        f.logged = now;
                    }
                }
            }
            if self.out.terminal {
                for f in tasks.iter_mut() {
                    f.ever_drawn |= f.task.figures().elapsed >= SHOW_AFTER;
                }
                if let Some(line) = terminal_line(&tasks) {
                    telemetry::status_line(Some(&line), false);
                }
            }
            if self.out.systemd && now.duration_since(status_at) >= STATUS_EVERY {
                status_at = now;
                let figs: Vec<Figures> = tasks
                    .iter()
                    .map(|f| f.task.figures())
                    .filter(worth_showing)
                    .collect();
                let text = status_text(&figs);
                if !figs.is_empty() && text != last_status {
                    systemd_status(&text);
                    last_status = text;
                }
            }
        }
    }
}

/// An apply or a look-up of nothing is not shown.
fn worth_showing(f: &Figures) -> bool {
    f.total != Some(0)
}

/// The `progress` log event: the same figures as the terminal line, as fields.
fn log_event(f: &Figures) {
    let rate = (f.rate * 10.0).round() / 10.0;
    tracing::info!(
        target = %f.name,
        phase = f.phase.name(),
        done = f.done,
        total = f.total,
        failed = f.failed,
        rate,
        eta_secs = f.eta_secs,
        "progress"
    );
}

fn systemd_status(text: &str) {
    // Without NOTIFY_SOCKET this is a no-op; a failure to notify is not the run's problem.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(text)]);
}

/// The terminal line of the tasks shown so far; `None` when none is.
fn terminal_line(tasks: &[Followed]) -> Option<String> {
    let parts: Vec<String> = tasks
        .iter()
        .filter(|f| f.ever_drawn)
        .map(|f| f.task.figures())
        .filter(worth_showing)
        .map(|f| running_text(&f))
        .collect();
    (!parts.is_empty()).then(|| parts.join("  |  "))
}

/// One running task: `covata: 1,234/5,000 applied (41%), 12.5/s, 3 failed, ETA 5m 02s`.
fn running_text(f: &Figures) -> String {
    let mut s = count_text(f);
    if let Some(t) = f.total.filter(|t| *t > 0) {
        s.push_str(&format!(" ({}%)", f.done.min(t) * 100 / t));
    }
    if f.rate > 0.0 && (f.done > 0 || f.total.is_some()) {
        s.push_str(&format!(", {}/s", rate_text(f.rate)));
    }
    if f.failed > 0 {
        s.push_str(&format!(", {} failed", thousands(f.failed)));
    }
    if let Some(eta) = f.eta_secs.filter(|_| f.total.is_some_and(|t| f.done < t)) {
        s.push_str(&format!(", ETA {}", duration_text(eta)));
    }
    s
}

/// A finished task's last line: `covata: 5,000/5,000 applied, 3 failed, in 6m 40s`.
fn finished_line(f: &Figures) -> String {
    let mut s = count_text(f);
    if f.failed > 0 {
        s.push_str(&format!(", {} failed", thousands(f.failed)));
    }
    s.push_str(&format!(", in {}", duration_text(f.elapsed.as_secs())));
    s
}

/// `covata: 1,234/5,000 applied` (`source: 1,234 read` when the total is unknown).
fn count_text(f: &Figures) -> String {
    match f.total {
        Some(t) => format!(
            "{}: {}/{} {}",
            f.name,
            thousands(f.done),
            thousands(t),
            f.phase.verb()
        ),
        None if f.phase == Phase::Adopt => format!("{}: listing accounts", f.name),
        None => format!("{}: {} {}", f.name, thousands(f.done), f.phase.verb()),
    }
}

/// systemd's status: the running tasks' counts, `; `-separated.
fn status_text(figs: &[Figures]) -> String {
    figs.iter().map(count_text).collect::<Vec<_>>().join("; ")
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rate_text(rate: f64) -> String {
    if rate >= 100.0 {
        thousands(rate.round() as u64)
    } else {
        format!("{rate:.1}")
    }
}

/// `42s`, `5m 02s`, `1h 03m`.
fn duration_text(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        s => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(done: u64, total: Option<u64>, failed: u64, secs: u64, phase: Phase) -> Figures {
        progress::figures(
            "covata",
            phase,
            done,
            total,
            failed,
            Duration::from_secs(secs),
            Some(5.0),
        )
    }

    #[test]
    fn texts_table() {
        let cases = [
            (
                fig(1234, Some(5000), 3, 100, Phase::Apply),
                "covata: 1,234/5,000 applied (24%), 12.3/s, 3 failed, ETA 5m 06s",
                "covata: 1,234/5,000 applied",
            ),
            (
                fig(0, Some(100), 0, 0, Phase::Apply),
                "covata: 0/100 applied (0%), 5.0/s, ETA 20s",
                "covata: 0/100 applied",
            ),
            (
                fig(5000, Some(5000), 0, 2000, Phase::Recover),
                "covata: 5,000/5,000 looked up (100%), 2.5/s",
                "covata: 5,000/5,000 looked up",
            ),
            (
                fig(1_500_000, None, 0, 10, Phase::Read),
                "covata: 1,500,000 read, 150,000/s",
                "covata: 1,500,000 read",
            ),
            (
                fig(0, None, 0, 0, Phase::Adopt),
                "covata: listing accounts",
                "covata: listing accounts",
            ),
        ];
        for (f, running, status) in cases {
            assert_eq!(running_text(&f), running);
            assert_eq!(status_text(std::slice::from_ref(&f)), status);
        }
        assert_eq!(
            finished_line(&fig(5000, Some(5000), 3, 3700, Phase::Apply)),
            "covata: 5,000/5,000 applied, 3 failed, in 1h 01m"
        );
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }
}
