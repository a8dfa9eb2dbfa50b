//! Apply throughput against the fake Covata server with injected latency.
//!
//! `cargo bench --bench apply` (or with arguments after `--`: `creates=N concurrency=C
//! latency_ms=L disables=N`). Prints wall time, ops/s, the bound set by the connection limit
//! (concurrency / latency) and the ratio to it, and peak RSS. Not a test: nothing is asserted
//! about time.

#[allow(dead_code)]
#[path = "../tests/it/support/covata.rs"]
mod covata;
#[path = "../tests/it/support/killable.rs"]
mod killable;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dirsync::model::{Snapshot, User};
use dirsync::run::plan_target;

fn arg(name: &str, default: u64) -> u64 {
    std::env::args()
        .filter_map(|a| {
            a.strip_prefix(&format!("{name}="))
                .and_then(|v| v.parse().ok())
        })
        .next()
        .unwrap_or(default)
}

fn peak_rss_mb() -> f64 {
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
    let users = (0..n)
        .map(|i| {
            let mut u = User::new(format!("E{i:07}"), format!("user{i}@example.com"));
            u.given_name = Some(format!("First{i}"));
            u.family_name = Some(format!("Last{i}"));
            u.groups = vec!["staff".into()];
            u
        })
        .collect();
    Snapshot::new(users).expect("generated keys are unique")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let creates = arg("creates", 10_000);
    let concurrency = arg("concurrency", 32);
    let latency_ms = arg("latency_ms", 20);
    let disables = arg("disables", creates).min(creates);

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
    let connector = dirsync::target::connect(target).expect("connector");

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
    let secs = t.elapsed().as_secs_f64();
    let bound = concurrency as f64 / (latency_ms as f64 / 1000.0);
    let rate = summary.applied as f64 / secs;
    println!(
        "creates: {} applied, {} failed in {secs:.2} s = {rate:.0} ops/s; bound {bound:.0} ops/s (concurrency {concurrency} / {latency_ms} ms); ratio {:.2}; peak RSS {:.0} MB",
        summary.applied,
        summary.failed,
        rate / bound,
        peak_rss_mb()
    );

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
    let secs = t.elapsed().as_secs_f64();
    let batches: HashMap<String, usize> =
        fake.bulk_batches()
            .into_iter()
            .fold(HashMap::new(), |mut m, (a, _)| {
                *m.entry(a).or_default() += 1;
                m
            });
    println!(
        "disables: {} applied, {} failed in {secs:.2} s = {:.0} ids/s through {} expire + {} disable bulk calls of <= 500; peak RSS {:.0} MB",
        summary.applied,
        summary.failed,
        summary.applied as f64 / secs,
        batches.get("expire").copied().unwrap_or(0),
        batches.get("disable").copied().unwrap_or(0),
        peak_rss_mb()
    );
}
