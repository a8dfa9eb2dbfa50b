//! `dirsync run` as a real process: scheduled runs against real Postgres and the fake Covata,
//! metrics that match the runs, SIGHUP reloads, SIGTERM mid-run with nothing lost, and two
//! instances that never apply a target at the same time. Also the store's target locks.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dirsync::store::Store;

use crate::support::covata::FakeCovata;
use crate::support::daemon::Daemon;
use crate::support::env::{Backend, SecretStyle, TestEnv};

use crate::support::env::{USERS_HEADER as HEADER, user_rows};

fn users(n: usize) -> String {
    user_rows(1..=n, |_| false)
}

fn free_port() -> u16 {
    crate::support::child::free_port().unwrap()
}

crate::support::env::suite_env!(Env {
    fake: FakeCovata,
    port: u16,
});

impl Env {
    async fn new(csv: &str, interval: &str, extra: &str) -> Env {
        let env = Env {
            env: TestEnv::new(Backend::Postgres).await,
            fake: FakeCovata::start().await,
            port: free_port(),
        };
        env.write_csv(csv);
        env.write_config(interval, extra, "");
        env
    }

    fn write_csv(&self, body: &str) {
        let tmp = self.path("users.csv.tmp");
        std::fs::write(&tmp, format!("{HEADER}{body}")).unwrap();
        std::fs::rename(tmp, self.path("users.csv")).unwrap();
    }

    fn write_config(&self, interval: &str, extra: &str, target_extra: &str) {
        self.config()
            .csv("")
            .raw(&format!(
                "[schedule]\ninterval = \"{interval}\"\n[daemon]\nshutdown_timeout = \"10s\"\n\
                 [http]\nlisten = \"127.0.0.1:{port}\"\n{extra}",
                port = self.port
            ))
            .covata(&self.fake.base_url(), SecretStyle::Inline, target_extra)
            .write();
    }

    /// Starts `dirsync run`; its log goes to a file (a pipe nobody reads could fill up).
    fn spawn_daemon(&self) -> Daemon {
        self.spawn_daemon_logged(&format!("daemon-{}", free_port()))
    }

    async fn store(&self) -> Box<dyn Store> {
        crate::support::cmd::store(&self.config_path()).await
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        crate::support::cmd::http_get(self.port, path)
    }

    /// The value of a metric line (exact name with labels), if present.
    fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_runs_on_schedule_serves_metrics_reloads_and_stops() {
    let env = Env::new(&users(5), "1s", "").await;
    let child = env.spawn_daemon();
    wait_for("the first run", Duration::from_secs(30), || {
        env.fake.users().len() == 5
    })
    .await;
    assert_eq!(env.get("/healthz").map(|r| r.0), Some(200));
    wait_for("readyz", Duration::from_secs(10), || {
        env.get("/readyz").map(|r| r.0) == Some(200)
    })
    .await;
    wait_for(
        "a succeeded run in metrics",
        Duration::from_secs(10),
        || {
            env.metric("dirsync_runs_total{status=\"succeeded\"}")
                .unwrap_or(0.0)
                >= 1.0
        },
    )
    .await;
    assert_eq!(env.metric("dirsync_source_users"), Some(5.0));
    assert_eq!(
        env.metric(
            "dirsync_operations_total{target=\"covata\",kind=\"create\",outcome=\"succeeded\"}"
        ),
        Some(5.0)
    );

    // A CSV change is picked up by the next scheduled run.
    env.write_csv(&users(5).replace("First2,Last2", "First2,Renamed"));
    wait_for("the rename", Duration::from_secs(20), || {
        env.fake
            .user_by_email("user2@example.com")
            .and_then(|u| u.last_name)
            .as_deref()
            == Some("Renamed")
    })
    .await;

    // SIGHUP with an invalid config: rejected, the daemon keeps going with the old one.
    let good = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(
        env.config_path(),
        good.replace("[schedule]", "[schedule]\nbogus_key = 1"),
    )
    .unwrap();
    child.signal(libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SIGHUP with a valid change: admins get a role.
    std::fs::write(
        env.config_path(),
        format!("{good}\n[[target.roles]]\ngroup = \"staff\"\nroles = [\"ROLE_ORIGINATOR\"]\n"),
    )
    .unwrap();
    child.signal(libc::SIGHUP);
    wait_for("the reloaded role rule", Duration::from_secs(20), || {
        env.fake
            .users()
            .iter()
            .all(|u| u.roles == vec!["ROLE_ORIGINATOR".to_string()])
    })
    .await;

    // Metrics match the runs recorded in the store.
    let store = env.store().await;
    let metric_runs: f64 = ["succeeded", "partial", "failed", "blocked"]
        .iter()
        .map(|s| {
            env.metric(&format!("dirsync_runs_total{{status=\"{s}\"}}"))
                .unwrap_or(0.0)
        })
        .sum();
    child.signal(libc::SIGTERM);
    let (code, stderr) = child.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("configuration reload rejected"), "{stderr}");
    assert!(stderr.contains("bogus_key"), "{stderr}");
    assert!(stderr.contains("configuration reloaded"), "{stderr}");
    let runs = store.list_runs(1000).await.unwrap();
    let scheduled = runs
        .iter()
        .filter(|r| {
            r.trigger == dirsync::store::Trigger::Schedule
                && r.status != dirsync::store::RunStatus::Running
        })
        .count() as f64;
    assert!(
        scheduled >= metric_runs && scheduled <= metric_runs + 2.0,
        "store has {scheduled} finished scheduled runs, metrics counted {metric_runs}"
    );
    // The stored report of a run renders as Markdown.
    let id = runs.iter().find(|r| r.applied > 0).unwrap().id.to_string();
    let o = env
        .command(&["runs", "show", &id, "--format", "markdown"])
        .output()
        .unwrap();
    let md = String::from_utf8_lossy(&o.stdout);
    assert!(md.contains("## covata (covata)"), "{md}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_run_loses_nothing() {
    let env = Env::new(&users(60), "1h", "").await;
    env.write_config("1h", "", "concurrency = 2");
    env.fake.set_latency(Duration::from_millis(100));
    let child = env.spawn_daemon();
    wait_for("some creates", Duration::from_secs(30), || {
        env.fake.users().len() >= 6
    })
    .await;
    child.signal(libc::SIGTERM);
    let (code, stderr) = child.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "{stderr}");
    let done = env.fake.users().len();
    assert!(done < 60, "the run finished before the signal ({done})");
    assert!(stderr.contains("shutdown"), "{stderr}");
    // The next start completes the rest: every user exactly once.
    env.fake.set_latency(Duration::ZERO);
    let o = env
        .command(&["run", "--once", "--allow-root"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut emails: Vec<String> = env.fake.users().into_iter().map(|u| u.email).collect();
    emails.sort();
    let n = emails.len();
    emails.dedup();
    assert_eq!((n, emails.len()), (60, 60));
    let store = env.store().await;
    assert_eq!(store.load_accounts("covata").await.unwrap().len(), 60);
    assert!(crate::support::cmd::nothing_unfinished(&*store, "covata").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_never_apply_a_target_at_once() {
    let env = Env::new(&users(300), "1s", "").await;
    env.write_config("1s", "", "concurrency = 4");
    // Slow enough that the first run (300 creates, 4 at a time) takes seconds: the second
    // instance is started while the first applies, so the two meet at the target's lock.
    env.fake.set_latency(Duration::from_millis(50));
    let a = env.spawn_daemon();
    // The second instance needs its own listener port.
    let second = tempfile::NamedTempFile::new().unwrap();
    let text = std::fs::read_to_string(env.config_path())
        .unwrap()
        .replace(
            &format!("127.0.0.1:{}", env.port),
            &format!("127.0.0.1:{}", free_port()),
        )
        .replace(
            "path = \"users.csv\"",
            &format!("path = {:?}", env.dir.path().join("users.csv")),
        );
    std::fs::write(second.path(), text).unwrap();
    wait_for(
        "the first instance to apply",
        Duration::from_secs(60),
        || !env.fake.users().is_empty(),
    )
    .await;
    let log_b = env.dir.path().join("daemon-b.log");
    let b = Daemon {
        child: Command::new(env!("CARGO_BIN_EXE_dirsync"))
            .args(["run", "--allow-root", "--config"])
            .arg(second.path())
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_b).unwrap())
            .spawn()
            .unwrap(),
        log: log_b,
    };
    wait_for("all users", Duration::from_secs(60), || {
        env.fake.users().len() == 300
    })
    .await;
    // A few more scheduled runs from both, including removals to apply.
    env.write_csv(&users(290));
    let store = env.store().await;
    let disabled = || async {
        store
            .load_accounts("covata")
            .await
            .unwrap()
            .iter()
            .filter(|a| !a.enabled)
            .count()
    };
    // Generous: on a loaded machine a scheduled run can take many seconds.
    let deadline = Instant::now() + Duration::from_secs(120);
    while disabled().await < 10 {
        assert!(
            Instant::now() < deadline,
            "the disables were not applied\n--- a\n{}\n--- b\n{}",
            std::fs::read_to_string(&a.log).unwrap_or_default(),
            std::fs::read_to_string(&b.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.signal(libc::SIGTERM);
    b.signal(libc::SIGTERM);
    let (ca, ea) = a.finish(Duration::from_secs(30));
    let (cb, eb) = b.finish(Duration::from_secs(30));
    assert_eq!((ca, cb), (0, 0), "{ea}\n{eb}");
    // Nobody created twice, nothing conflicting.
    assert_eq!(env.fake.users().len(), 300);
    assert!(
        !ea.contains("conflict") && !eb.contains("conflict"),
        "{ea}\n{eb}"
    );
    // Runs that applied something never overlap in time.
    let runs = store.list_runs(10_000).await.unwrap();
    let mut applied: Vec<_> = runs
        .iter()
        .filter(|r| r.applied > 0)
        .map(|r| (r.started_at, r.finished_at.unwrap()))
        .collect();
    applied.sort();
    assert!(applied.len() >= 2, "{applied:?}");
    for w in applied.windows(2) {
        assert!(w[0].1 <= w[1].0, "two runs applied at once: {w:?}");
    }
    let both = format!("{ea}{eb}");
    assert!(
        both.contains("another dirsync instance is applying this target"),
        "the instances never met: {both}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_root_without_allow_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return; // Only meaningful as root; CI runs as root, so CI always checks it.
    }
    let env = Env::new(&users(1), "1h", "").await;
    let o = env.command(&["run"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing to run as root"));
    assert!(env.fake.requests().is_empty());
}

async fn locks(store: &dyn Store, other: &dyn Store) {
    store.migrate().await.unwrap();
    let a = store
        .try_lock_target("t1", "a")
        .await
        .unwrap()
        .expect("free lock");
    assert!(
        other.try_lock_target("t1", "b").await.unwrap().is_none(),
        "lock taken twice"
    );
    // Another target is independent.
    let c = other
        .try_lock_target("t2", "b")
        .await
        .unwrap()
        .expect("other target");
    a.release().await.unwrap();
    let b = other
        .try_lock_target("t1", "b")
        .await
        .unwrap()
        .expect("released lock");
    b.release().await.unwrap();
    c.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn target_locks_exclude_other_instances() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let s1 = dirsync::store::sqlite::SqliteStore::open(&path)
        .await
        .unwrap();
    let s2 = dirsync::store::sqlite::SqliteStore::open(&path)
        .await
        .unwrap();
    locks(&s1, &s2).await;
    let url = dirsync::secret::Secret::new(crate::support::pg::pg_url().await);
    let p1 = dirsync::store::postgres::PgStore::connect(&url, 2)
        .await
        .unwrap();
    let p2 = dirsync::store::postgres::PgStore::connect(&url, 2)
        .await
        .unwrap();
    locks(&p1, &p2).await;
    // A dropped (crashed) Postgres holder releases with its session.
    let held = p1.try_lock_target("t3", "a").await.unwrap().unwrap();
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(p2.try_lock_target("t3", "b").await.unwrap().is_some());
}

/// After its run the daemon prunes runs older than `[state] keep_runs`; the run itself stays.
#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_prunes_old_runs_after_a_run() {
    let env = Env::new(&users(3), "1h", "").await;
    let store = env.store().await;
    let now = chrono::Utc::now();
    let old = store
        .begin_run(&dirsync::store::NewRun {
            trigger: dirsync::store::Trigger::Schedule,
            started_at: now - chrono::Duration::days(100),
            targets: vec!["covata".into()],
            forced: false,
        })
        .await
        .unwrap();
    store
        .finish_run(
            old,
            &dirsync::store::RunFinish {
                status: dirsync::store::RunStatus::Failed,
                finished_at: now - chrono::Duration::days(100),
                source_count: None,
                planned: 0,
                applied: 0,
                failed: 0,
                error: None,
                summary: serde_json::Value::Null,
            },
        )
        .await
        .unwrap();
    let o = env
        .command(&["run", "--once", "--allow-root"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("pruned the run history"), "{stderr}");
    assert!(store.get_run(old).await.unwrap().is_none());
    let runs = store.list_runs(10).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(store.load_accounts("covata").await.unwrap().len(), 3);
}
