//! Crash reconciliation against the fake Covata server with injected latency: `sent` creates
//! of an interrupted run, all of which the target has, confirmed by `engine::recover`.
//!
//! `cargo bench --bench recovery` (or with arguments after `--`: `creates=N latency_ms=L
//! lookups=M`). Prints the reconciliation's wall time and the listing requests it made, and, for
//! comparison, the time of `lookups` single look-ups (`find_account`, one after the other, as
//! reconciliation did before) extrapolated to `creates`. Not a test: nothing is asserted about
//! time; the figures go to BENCHMARKS.md.

#[allow(dead_code)]
#[path = "../tests/it/support/covata.rs"]
mod covata;
#[allow(dead_code)]
#[path = "../tests/it/support/fake/mod.rs"]
mod fake;
#[path = "../tests/it/support/killable.rs"]
mod killable;

use std::time::{Duration, Instant};

use dirsync::mapping::Mapped;
use dirsync::model::User;
use dirsync::store::{NewOperation, NewRun, Trigger};

fn arg(name: &str, default: u64) -> u64 {
    std::env::args()
        .filter_map(|a| {
            a.strip_prefix(&format!("{name}="))
                .and_then(|v| v.parse().ok())
        })
        .next()
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let creates = arg("creates", 10_000) as usize;
    let latency_ms = arg("latency_ms", 20);
    let lookups = arg("lookups", 50) as usize;
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
[[target]]
name = "covata"
kind = "covata"
base_url = "{base}"
username = "{u}"
password = "{p}"
client_id = "{ci}"
client_secret = "{cs}"
concurrency = 16
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

    // The interrupted run: every create journaled and marked `sent`, and every account made on
    // the target (its answers were lost).
    let now = chrono::Utc::now();
    let run_id = store
        .begin_run(&NewRun {
            trigger: Trigger::Manual,
            started_at: now,
            targets: vec![target.name.clone()],
            forced: false,
        })
        .await
        .expect("run");
    let mut ops = Vec::with_capacity(creates);
    for i in 0..creates {
        let mut u = User::new(format!("E{i:07}"), format!("user{i}@example.com"));
        u.given_name = Some(format!("First{i}"));
        u.family_name = Some(format!("Last{i}"));
        let Mapped::Account(account) = target.mapping.map(&u) else {
            panic!("user {i} does not map");
        };
        fake.insert_user(covata::FakeUser::new(
            &format!("user{i}@example.com"),
            &["ROLE_COLLABORATOR"],
        ));
        ops.push(NewOperation {
            source_key: u.key.clone(),
            kind: "create".into(),
            payload: serde_json::value::to_raw_value(&serde_json::json!({ "account": account }))
                .expect("payload"),
        });
    }
    let ids = store
        .journal(run_id, &target.name, &ops)
        .await
        .expect("journal");
    store.mark_sent(&ids).await.expect("mark sent");

    // Warm the token outside the measurement; then inject the latency.
    let _ = connector.find_account("warm-up@example.com").await;
    fake.set_latency(Duration::from_millis(latency_ms));
    fake.clear_requests();

    let run2 = store
        .begin_run(&NewRun {
            trigger: Trigger::Manual,
            started_at: now,
            targets: vec![target.name.clone()],
            forced: false,
        })
        .await
        .expect("run");
    let t = Instant::now();
    let summary = dirsync::engine::recover(store.as_ref(), connector.as_ref(), target, run2)
        .await
        .expect("recover");
    let secs = t.elapsed().as_secs_f64();
    let requests = fake.requests().len();
    let left = store
        .unfinished_operations(&target.name)
        .await
        .expect("unfinished")
        .len();
    println!(
        "recovery: {} of {creates} sent creates confirmed, {} re-planned, {left} left unfinished, in {secs:.2} s ({requests} requests, latency {latency_ms} ms)",
        summary.confirmed, summary.replanned
    );

    // For comparison: single look-ups one after the other (the former reconciliation).
    fake.clear_requests();
    let t = Instant::now();
    for i in 0..lookups.min(creates) {
        let _ = connector
            .find_account(&format!("user{i}@example.com"))
            .await
            .expect("look-up");
    }
    let per = t.elapsed().as_secs_f64() / lookups.max(1) as f64;
    println!(
        "one look-up each: {:.1} ms per create ({} requests for {lookups}); {creates} creates would take {:.1} s",
        per * 1000.0,
        fake.requests().len(),
        per * creates as f64
    );
}
