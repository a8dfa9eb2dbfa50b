//! Progress of the long steps (applying a target, reconciling an interrupted run, reading the
//! source, adopting), as plain counters the steps bump and the front renders.
//!
//! A step calls [`start`] and gets a [`Task`]: a handful of atomics it advances as work is done
//! (no allocation, no lock, no call into the renderer on the hot path). The front (`cli`)
//! installs one process-wide [`Observer`] at start-up, told when a task starts and ends; it
//! reads the tasks' [`Figures`] on its own clock (a terminal line, a log event about every 10 s,
//! systemd's `STATUS=`). Without an observer (library use, tests) [`start`] returns a task that
//! counts for nobody. This module does no I/O: what progress looks like is the front's choice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// What a task is doing, as its figures name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the source (a total is not known in advance).
    Read,
    /// Looking up creates an interrupted run left `sent`.
    Recover,
    /// Applying a target's plan.
    Apply,
    /// Matching a target's accounts to source users (`dirsync adopt`).
    Adopt,
}

impl Phase {
    /// The phase as logs name it.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Read => "read",
            Phase::Recover => "recover",
            Phase::Apply => "apply",
            Phase::Adopt => "adopt",
        }
    }

    /// What `done` counts, as a participle: "1,234/5,000 applied".
    pub fn verb(self) -> &'static str {
        match self {
            Phase::Read => "read",
            Phase::Recover => "looked up",
            Phase::Apply => "applied",
            Phase::Adopt => "compared",
        }
    }
}

/// One running task's counters.
#[derive(Debug)]
pub struct TaskState {
    /// The target (or `source` for a read).
    pub name: String,
    pub phase: Phase,
    started: Instant,
    /// Operations per second the target's pacing allows, for an ETA before anything finished.
    pace: Option<f64>,
    total: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
}

/// A task's figures at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub name: String,
    pub phase: Phase,
    pub done: u64,
    /// Unknown for a source read.
    pub total: Option<u64>,
    pub failed: u64,
    /// Done per second so far (the pacing's rate before the first is done).
    pub rate: f64,
    /// Seconds left at `rate`, when the total is known and the rate is not zero.
    pub eta_secs: Option<u64>,
    pub elapsed: Duration,
}

impl TaskState {
    /// The figures now.
    pub fn figures(&self) -> Figures {
        figures(
            &self.name,
            self.phase,
            self.done.load(Ordering::Relaxed),
            match self.total.load(Ordering::Relaxed) {
                u64::MAX => None,
                t => Some(t),
            },
            self.failed.load(Ordering::Relaxed),
            self.started.elapsed(),
            self.pace,
        )
    }
}

/// Below this much elapsed time a measured rate says little: the pacing's is preferred.
const MEASURE_AFTER: Duration = Duration::from_secs(1);

/// The figures of `done` of `total` after `elapsed` (pure: the clock is a value). The rate is
/// the pacing's until something is done and a second has passed, then the measured one (the
/// measured one also before, on a target without pacing).
pub fn figures(
    name: &str,
    phase: Phase,
    done: u64,
    total: Option<u64>,
    failed: u64,
    elapsed: Duration,
    pace: Option<f64>,
) -> Figures {
    let secs = elapsed.as_secs_f64();
    let measured = (done > 0 && secs > 0.0).then(|| done as f64 / secs);
    let rate = if elapsed < MEASURE_AFTER {
        pace.or(measured)
    } else {
        measured.or(pace)
    }
    .unwrap_or(0.0);
    let eta_secs = match total {
        Some(t) if rate > 0.0 => Some((t.saturating_sub(done) as f64 / rate).ceil() as u64),
        _ => None,
    };
    Figures {
        name: name.to_string(),
        phase,
        done,
        total,
        failed,
        rate,
        eta_secs,
        elapsed,
    }
}

/// What the front installs to be told about tasks (see the module docs).
pub trait Observer: Send + Sync {
    /// A task started; the observer keeps the `Arc` to read its figures.
    fn started(&self, task: Arc<TaskState>);
    /// The task ended (done, failed or abandoned); `task` has its last figures.
    fn finished(&self, task: &Arc<TaskState>);
}

static OBSERVER: OnceLock<Box<dyn Observer>> = OnceLock::new();

/// Installs the process's observer; false if one was installed already (it stays).
pub fn install(observer: Box<dyn Observer>) -> bool {
    OBSERVER.set(observer).is_ok()
}

/// A running task: advanced by the step, reported finished when dropped.
#[derive(Debug)]
pub struct Task(Arc<TaskState>);

/// Starts a task of `total` items (`None`: not known) for `name`; `pace` is the target's
/// operations per second, if it is paced.
pub fn start(name: &str, phase: Phase, total: Option<u64>, pace: Option<f64>) -> Task {
    let state = Arc::new(TaskState {
        name: name.to_string(),
        phase,
        started: Instant::now(),
        pace: pace.filter(|p| p.is_finite() && *p > 0.0),
        total: AtomicU64::new(total.unwrap_or(u64::MAX)),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    if let Some(o) = OBSERVER.get() {
        o.started(Arc::clone(&state));
    }
    Task(state)
}

impl Task {
    /// Sets the counts: `done` items so far, `failed` of them.
    pub fn set(&self, done: u64, failed: u64) {
        self.0.done.store(done, Ordering::Relaxed);
        self.0.failed.store(failed, Ordering::Relaxed);
    }

    /// Adds `n` done items.
    pub fn advance(&self, n: u64) {
        self.0.done.fetch_add(n, Ordering::Relaxed);
    }

    /// The total, once it is known (or when it changes).
    pub fn set_total(&self, total: u64) {
        self.0.total.store(total, Ordering::Relaxed);
    }

    pub fn figures(&self) -> Figures {
        self.0.figures()
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(o) = OBSERVER.get() {
            o.finished(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_table() {
        let s = Duration::from_secs;
        // (done, total, elapsed, pace) → (rate, eta)
        type Case = (u64, Option<u64>, Duration, Option<f64>, f64, Option<u64>);
        let cases: &[Case] = &[
            // Nothing done yet: the pacing gives the rate and the ETA.
            (0, Some(100), s(0), Some(5.0), 5.0, Some(20)),
            // Unpaced and nothing done: no rate, no ETA.
            (0, Some(100), s(3), None, 0.0, None),
            // Measured after a second: 50 in 10 s = 5/s, 50 left = 10 s.
            (50, Some(100), s(10), Some(1.0), 5.0, Some(10)),
            // Under a second: still the pacing; without pacing, the measured rate.
            (
                10,
                Some(100),
                Duration::from_millis(500),
                Some(2.0),
                2.0,
                Some(45),
            ),
            (
                10,
                Some(100),
                Duration::from_millis(500),
                None,
                20.0,
                Some(5),
            ),
            // Done: ETA 0.
            (100, Some(100), s(20), None, 5.0, Some(0)),
            // Unknown total (a read): a rate, no ETA.
            (300, None, s(3), None, 100.0, None),
        ];
        for &(done, total, elapsed, pace, rate, eta) in cases {
            let f = figures("t", Phase::Apply, done, total, 1, elapsed, pace);
            assert!((f.rate - rate).abs() < 1e-9, "{done} {total:?}: {f:?}");
            assert_eq!(f.eta_secs, eta, "{done} {total:?}: {f:?}");
        }
    }

    #[test]
    fn a_task_counts_without_an_observer() {
        let t = start("covata", Phase::Apply, Some(10), None);
        t.set(4, 1);
        t.advance(2);
        let f = t.figures();
        assert_eq!((f.done, f.total, f.failed), (6, Some(10), 1));
        let r = start("source", Phase::Read, None, Some(f64::NAN));
        assert_eq!(r.figures().total, None);
        assert_eq!(r.figures().rate, 0.0);
    }
}
