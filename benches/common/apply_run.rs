//! The apply benchmark shared by `benches/apply.rs` and `benches/scale.rs`: creates through the
//! real engine and Covata connector against the fake Covata server with injected latency, then
//! bulk disables of some of them. SQLite state store in a temp dir.
//!
//! The including crate declares `mod covata` (tests/it/support/covata.rs) and `mod killable`
//! at its root.
//!
//! With `DIRSYNC_LOG` set (e.g. `dirsync=debug`), the engine's log goes to stderr: the phases of
//! each apply (journaled, account records loaded, windows marked sent) with their times.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dirsync::model::{Snapshot, User};
use dirsync::run::plan_target;

use crate::covata;

/// What to apply.
#[derive(Debug, Clone, Copy)]
pub struct ApplyParams {
    pub creates: u64,
    pub concurrency: u64,
    pub latency_ms: u64,
    /// At most `creates`.
    pub disables: u64,
    /// Also create this many other accounts through the connector alone (no engine, no
    /// store) against the same fake with the same concurrency: the measured bound of the
    /// creates. 0: not measured.
    pub connector_creates: u64,
}

/// What happened.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct ApplyResult {
    pub creates_applied: u64,
    pub creates_failed: u64,
    pub creates_secs: f64,
    /// Peak RSS of this process after the creates (MB).
    pub creates_peak_rss_mb: f64,
    pub disables_applied: u64,
    pub disables_failed: u64,
    pub disables_secs: f64,
    pub expire_calls: u64,
    pub disable_calls: u64,
    pub peak_rss_mb: f64,
    /// The connector alone (see [`ApplyParams::connector_creates`]).
    #[serde(default)]
    pub connector_created: u64,
    #[serde(default)]
    pub connector_secs: f64,
}

/// VmHWM of this process, in MB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn snapshot(n: u64) -> Snapshot {
    snapshot_of(n, "E", "user")
}

fn snapshot_of(n: u64, key: &str, mail: &str) -> Snapshot {
    let users = (0..n)
        .map(|i| {
            let mut u = User::new(format!("{key}{i:07}"), format!("{mail}{i}@example.com"));
            u.given_name = Some(format!("First{i}"));
            u.family_name = Some(format!("Last{i}"));
            u.groups = vec!["staff".into()];
            u
        })
        .collect();
    Snapshot::new(users).expect("generated keys are unique")
}

/// Runs the creates, then the disables (of the first `disables` users).
pub async fn run(p: ApplyParams) -> ApplyResult {
    let ApplyParams {
        creates,
        concurrency,
        latency_ms,
        disables,
        connector_creates,
    } = p;
    let disables = disables.min(creates);
    if std::env::var_os("DIRSYNC_LOG").is_some() {
        dirsync::telemetry::init(dirsync::telemetry::LogFormat::Text, 0);
    }

    let fake = covata::FakeCovata::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users.csv"), "id,email\n").expect("write csv");
    let config_text = format!(
        r#"
[state]
path = "state.db"
[source]
kind = "csv"
[source.csv]
path = "users.csv"
columns = {{ key = "id" }}
[safety]
max_disable_percent = 100
[[target]]
name = "covata"
kind = "covata"
base_url = "{base}"
username = "{u}"
password = "{p}"
client_id = "{ci}"
client_secret = "{cs}"
concurrency = {concurrency}
batch_size = 500
request_timeout = "60s"
"#,
        base = fake.base_url(),
        u = covata::USERNAME,
        p = covata::PASSWORD,
        ci = covata::CLIENT_ID,
        cs = covata::CLIENT_SECRET,
    );
    let path = dir.path().join("dirsync.toml");
    std::fs::write(&path, config_text).expect("write config");
    let config = dirsync::config::load_with_env(&path, &[]).expect("config");
    let target = &config.targets[0];
    let store = dirsync::store::open(&config.state.location, true)
        .await
        .expect("store");
    let connector = dirsync::connector::connect(target).expect("connector");

    // Warm the token outside the measurement; then inject the latency.
    let _ = connector.list_accounts().await;
    fake.set_latency(Duration::from_millis(latency_ms));

    let snap = snapshot(creates);
    let now = chrono::Utc::now();
    let plan = plan_target(store.as_ref(), target, &snap, now)
        .await
        .expect("plan");
    let run_id = store
        .begin_run(&dirsync::store::NewRun {
            trigger: dirsync::store::Trigger::Manual,
            started_at: now,
            targets: vec![target.name.clone()],
            forced: false,
        })
        .await
        .expect("run");
    let t = Instant::now();
    let summary = dirsync::engine::apply(
        store.as_ref(),
        connector.as_ref(),
        target,
        run_id,
        &plan,
        now,
        &Default::default(),
    )
    .await
    .expect("apply");
    let mut result = ApplyResult {
        creates_applied: summary.applied,
        creates_failed: summary.failed,
        creates_secs: t.elapsed().as_secs_f64(),
        creates_peak_rss_mb: peak_rss_mb(),
        ..ApplyResult::default()
    };

    // Bulk disables of the first `disables` users (everyone else stays).
    let keep: Vec<User> = snap.users()[disables as usize..].to_vec();
    let snap2 = Snapshot::new(keep).expect("unique");
    let plan = plan_target(store.as_ref(), target, &snap2, now)
        .await
        .expect("plan");
    let t = Instant::now();
    let summary = dirsync::engine::apply(
        store.as_ref(),
        connector.as_ref(),
        target,
        run_id,
        &plan,
        now,
        &Default::default(),
    )
    .await
    .expect("apply");
    result.disables_secs = t.elapsed().as_secs_f64();
    result.disables_applied = summary.applied;
    result.disables_failed = summary.failed;
    let batches: HashMap<String, u64> =
        fake.bulk_batches()
            .into_iter()
            .fold(HashMap::new(), |mut m, (a, _)| {
                *m.entry(a).or_default() += 1;
                m
            });
    result.expire_calls = batches.get("expire").copied().unwrap_or(0);
    result.disable_calls = batches.get("disable").copied().unwrap_or(0);
    result.peak_rss_mb = peak_rss_mb();

    // The bound: other accounts created through the connector alone, as many at a time.
    if connector_creates > 0 {
        use futures::StreamExt;
        let (accounts, _) =
            dirsync::run::map_users(target, &snapshot_of(connector_creates, "C", "bound"));
        let t = Instant::now();
        let created = futures::stream::iter(accounts.iter())
            .map(|a| connector.create(a))
            .buffer_unordered(concurrency as usize)
            .filter(|r| std::future::ready(r.is_ok()))
            .count()
            .await;
        result.connector_secs = t.elapsed().as_secs_f64();
        result.connector_created = created as u64;
    }
    result
}
