//! Process-wide counters for the daemon's `/metrics` (Prometheus text format): runs, operations,
//! run durations, source size, last success, HTTP retries and throttling per target, accounts
//! owned and last success per target, and the build (`dirsync_build_info`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{LazyLock, Mutex, MutexGuard};

/// Upper bounds (seconds) of the run duration histogram.
const DURATION_BUCKETS: [f64; 9] = [0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

#[derive(Debug, Default)]
struct State {
    runs: BTreeMap<&'static str, u64>,
    /// (target, kind, outcome) → count
    operations: BTreeMap<(String, String, &'static str), u64>,
    duration_buckets: [u64; DURATION_BUCKETS.len()],
    duration_sum: f64,
    duration_count: u64,
    source_users: Option<u64>,
    /// Source records quarantined at the last run.
    source_quarantined: Option<u64>,
    last_success: Option<i64>,
    /// target → (retries, 429 answers)
    http: BTreeMap<String, (u64, u64)>,
    /// target → refused credentials (once per client, i.e. per run)
    auth_failures: BTreeMap<String, u64>,
    /// notification kind (`webhook`, `email`) → failed deliveries
    notifications_failed: BTreeMap<&'static str, u64>,
    /// target → accounts dirsync owns there after the last run
    owned: BTreeMap<String, u64>,
    /// target → end of the last run that applied everything it planned for the target
    target_last_success: BTreeMap<String, i64>,
    /// Live sync: change events received from the source, and applied by a live run.
    live_received: u64,
    live_applied: u64,
    /// Seconds from the last applied change (its timestamp in the directory, else its
    /// receipt) to the targets' answer.
    live_lag: Option<f64>,
}

static STATE: LazyLock<Mutex<State>> = LazyLock::new(|| Mutex::new(State::default()));

fn state() -> MutexGuard<'static, State> {
    // A poisoned lock only means a panic elsewhere while counting: the counters stay usable.
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts one retry of an HTTP request of `target`; `throttled` when the answer was 429.
pub fn record_http_retry(target: &str, throttled: bool) {
    let mut s = state();
    let e = s.http.entry(target.to_string()).or_default();
    e.0 += 1;
    if throttled {
        e.1 += 1;
    }
}

/// Counts refused credentials of `target` (once per run: the HTTP client stops asking).
pub fn record_auth_failure(target: &str) {
    *state().auth_failures.entry(target.to_string()).or_default() += 1;
}

/// Counts a notification that could not be delivered (`kind`: `webhook` or `email`).
pub fn record_notification_failed(kind: &'static str) {
    *state().notifications_failed.entry(kind).or_default() += 1;
}

/// What a finished run adds to the counters besides its status and duration (see
/// `outcome::RunPlan::counts`).
#[derive(Debug, Clone, Default)]
pub struct RunCounts {
    /// The source was read only in part (a live run of the changed users): its counts are not
    /// the source's size.
    pub source_partial: bool,
    pub source_users: u64,
    pub source_quarantined: u64,
    /// (target, operation kind, outcome: `succeeded` / `failed` / `skipped`, count > 0)
    pub operations: Vec<(String, String, &'static str, u64)>,
    /// (target, accounts dirsync owns there after the run), for targets that were applied.
    pub owned: Vec<(String, u64)>,
    /// Targets whose plan was applied completely (nothing failed, interrupted or stopped).
    pub complete: Vec<String>,
}

/// Counts a finished run (planned and applied by the daemon); `status` is the run's status
/// as stored (`RunStatus::as_str`).
pub fn record_run(status: &'static str, counts: Option<RunCounts>, seconds: f64) {
    let mut s = state();
    *s.runs.entry(status).or_default() += 1;
    for (i, b) in DURATION_BUCKETS.iter().enumerate() {
        if seconds <= *b {
            s.duration_buckets[i] += 1;
        }
    }
    s.duration_sum += seconds;
    s.duration_count += 1;
    let now = chrono::Utc::now().timestamp();
    if status == "succeeded" {
        s.last_success = Some(now);
    }
    let Some(counts) = counts else { return };
    if !counts.source_partial {
        s.source_users = Some(counts.source_users);
        s.source_quarantined = Some(counts.source_quarantined);
    }
    for (target, owned) in counts.owned {
        s.owned.insert(target, owned);
    }
    for target in counts.complete {
        s.target_last_success.insert(target, now);
    }
    for (target, kind, outcome, n) in counts.operations {
        *s.operations.entry((target, kind, outcome)).or_default() += n;
    }
}

/// Live sync: `n` change events received from the source.
pub fn record_live_received(n: u64) {
    state().live_received += n;
}

/// Live sync: a live run applied `n` events; `lag` seconds from the oldest change among them to
/// the targets' answer.
pub fn record_live_applied(n: u64, lag: f64) {
    let mut s = state();
    s.live_applied += n;
    s.live_lag = Some(lag.max(0.0));
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The counters in Prometheus text exposition format.
pub fn render() -> String {
    let s = state();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# HELP dirsync_build_info The running build: version, git commit, build date (UTC).\n# TYPE dirsync_build_info gauge\ndirsync_build_info{{version=\"{}\",commit=\"{}\",build_date=\"{}\"}} 1",
        label(crate::build_info::VERSION),
        label(crate::build_info::COMMIT),
        label(crate::build_info::BUILD_DATE)
    );
    let _ = writeln!(
        o,
        "# HELP dirsync_runs_total Runs by final status.\n# TYPE dirsync_runs_total counter"
    );
    for status in ["succeeded", "partial", "failed", "blocked"] {
        let _ = writeln!(
            o,
            "dirsync_runs_total{{status=\"{status}\"}} {}",
            s.runs.get(status).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(
        o,
        "# HELP dirsync_operations_total Operations applied, by target, kind and outcome.\n# TYPE dirsync_operations_total counter"
    );
    for ((target, kind, outcome), n) in &s.operations {
        let _ = writeln!(
            o,
            "dirsync_operations_total{{target=\"{}\",kind=\"{}\",outcome=\"{outcome}\"}} {n}",
            label(target),
            label(kind)
        );
    }
    let _ = writeln!(
        o,
        "# HELP dirsync_run_duration_seconds Duration of runs.\n# TYPE dirsync_run_duration_seconds histogram"
    );
    for (i, b) in DURATION_BUCKETS.iter().enumerate() {
        let _ = writeln!(
            o,
            "dirsync_run_duration_seconds_bucket{{le=\"{b}\"}} {}",
            s.duration_buckets[i]
        );
    }
    let _ = writeln!(
        o,
        "dirsync_run_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        s.duration_count
    );
    let _ = writeln!(o, "dirsync_run_duration_seconds_sum {}", s.duration_sum);
    let _ = writeln!(o, "dirsync_run_duration_seconds_count {}", s.duration_count);
    if let Some(n) = s.source_users {
        let _ = writeln!(
            o,
            "# HELP dirsync_source_users Users in the source at the last run.\n# TYPE dirsync_source_users gauge\ndirsync_source_users {n}"
        );
    }
    if let Some(n) = s.source_quarantined {
        let _ = writeln!(
            o,
            "# HELP dirsync_source_quarantined Source records quarantined (their accounts left as they are) at the last run.\n# TYPE dirsync_source_quarantined gauge\ndirsync_source_quarantined {n}"
        );
    }
    if let Some(t) = s.last_success {
        let _ = writeln!(
            o,
            "# HELP dirsync_last_success_timestamp_seconds End of the last succeeded run.\n# TYPE dirsync_last_success_timestamp_seconds gauge\ndirsync_last_success_timestamp_seconds {t}"
        );
    }
    let _ = writeln!(
        o,
        "# HELP dirsync_http_retries_total HTTP requests retried, by target.\n# TYPE dirsync_http_retries_total counter"
    );
    for (target, (retries, _)) in &s.http {
        let _ = writeln!(
            o,
            "dirsync_http_retries_total{{target=\"{}\"}} {retries}",
            label(target)
        );
    }
    let _ = writeln!(
        o,
        "# HELP dirsync_http_throttled_total HTTP 429 answers, by target.\n# TYPE dirsync_http_throttled_total counter"
    );
    for (target, (_, throttled)) in &s.http {
        let _ = writeln!(
            o,
            "dirsync_http_throttled_total{{target=\"{}\"}} {throttled}",
            label(target)
        );
    }
    let _ = writeln!(
        o,
        "# HELP dirsync_auth_failures_total Runs whose credentials a target refused, by target.\n# TYPE dirsync_auth_failures_total counter"
    );
    for (target, n) in &s.auth_failures {
        let _ = writeln!(
            o,
            "dirsync_auth_failures_total{{target=\"{}\"}} {n}",
            label(target)
        );
    }
    let _ = writeln!(
        o,
        "# HELP dirsync_target_owned_accounts Accounts dirsync owns on the target after the last run.\n# TYPE dirsync_target_owned_accounts gauge"
    );
    for (target, n) in &s.owned {
        let _ = writeln!(
            o,
            "dirsync_target_owned_accounts{{target=\"{}\"}} {n}",
            label(target)
        );
    }
    let _ = writeln!(
        o,
        "# HELP dirsync_target_last_success_timestamp_seconds End of the last run that applied every planned operation of the target.\n# TYPE dirsync_target_last_success_timestamp_seconds gauge"
    );
    for (target, t) in &s.target_last_success {
        let _ = writeln!(
            o,
            "dirsync_target_last_success_timestamp_seconds{{target=\"{}\"}} {t}",
            label(target)
        );
    }
    let _ = writeln!(
        o,
        "# HELP dirsync_notifications_failed_total Notifications not delivered, by kind.\n# TYPE dirsync_notifications_failed_total counter"
    );
    for kind in ["webhook", "email"] {
        let _ = writeln!(
            o,
            "dirsync_notifications_failed_total{{kind=\"{kind}\"}} {}",
            s.notifications_failed.get(kind).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(
        o,
        "# HELP dirsync_live_events_received_total Live sync: change events received from the source.\n# TYPE dirsync_live_events_received_total counter\ndirsync_live_events_received_total {}",
        s.live_received
    );
    let _ = writeln!(
        o,
        "# HELP dirsync_live_events_applied_total Live sync: change events a live run applied.\n# TYPE dirsync_live_events_applied_total counter\ndirsync_live_events_applied_total {}",
        s.live_applied
    );
    if let Some(lag) = s.live_lag {
        let _ = writeln!(
            o,
            "# HELP dirsync_live_lag_seconds Live sync: from the last applied change in the directory (its timestamp, else its receipt) to the targets' answer.\n# TYPE dirsync_live_lag_seconds gauge\ndirsync_live_lag_seconds {lag:.3}"
        );
    }
    o
}

/// `dirsync_ready`: 1 when `/readyz` would answer 200 (the daemon computes it per scrape).
pub fn render_ready(ready: bool) -> String {
    format!(
        "# HELP dirsync_ready 1 when /readyz answers 200: the state store answers and the last runs did not all fail.\n# TYPE dirsync_ready gauge\ndirsync_ready {}\n",
        u8::from(ready)
    )
}
