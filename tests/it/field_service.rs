//! Service behaviour as an operator sees it: `run --once` exits with its run's code (timer
//! units and `OnFailure=`), exit code 5 when another instance holds every target, runs of a
//! killed process marked `interrupted` (never a live one), and `check --offline` printing the
//! schedule's next run times with crontab's weekday meaning.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Timelike, Utc, Weekday};
use dirsync::store::{RunStatus, Store};

use crate::support::cmd::{assert_has, code, dirsync, out, stderr, stdout, store};
use crate::support::covata::{FakeCovata, Fault, PathMatch};
use crate::support::faultrun::{csv, run_bounded, write_config_with};

/// The state lines of a backend: a SQLite file in `dir`, or a fresh Postgres database.
async fn state_lines(backend: &str, dir: &Path) -> String {
    match backend {
        "sqlite" => format!("path = \"{}\"", dir.join("state.db").display()),
        _ => format!("database_url = \"{}\"", crate::support::pg::pg_url().await),
    }
}

fn write_csv(dir: &Path, body: &str) {
    let tmp = dir.join("users.csv.tmp");
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(tmp, dir.join("users.csv")).unwrap();
}

const LIMIT: Duration = Duration::from_secs(90);

/// `dirsync run --once` and `dirsync sync` on the same state: both exit with `want`.
fn once_and_sync(config: &Path, want: i32, what: &str) {
    let o = run_bounded(config, &["run", "--once", "--allow-root"], LIMIT);
    assert_eq!(code(&o), want, "run --once, {what}: {}", out(&o));
    let o = run_bounded(config, &["sync"], LIMIT);
    assert_eq!(code(&o), want, "sync, {what}: {}", out(&o));
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spawn(config: &Path, args: &[&str], log: &Path) -> Child {
    dirsync(config, args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn sigkill(child: &mut Child) {
    // SAFETY: kill(2) on our own child's pid with a valid signal number.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill failed");
    child.wait().unwrap();
}

/// Starts a slow `sync` (the fake's latency must be set) and waits until its run row is
/// `running` and some users were created; returns the child and its run id.
async fn slow_sync(config: &Path, fake: &FakeCovata, log: &Path, seen: usize) -> (Child, i64) {
    let s = store(config).await;
    let before = s.list_runs(1).await.unwrap().first().map_or(0, |r| r.id);
    let child = spawn(config, &["sync"], log);
    let mut id = 0;
    wait_for("a running sync", LIMIT, async || {
        let runs = s.list_runs(1).await.unwrap();
        match runs.first() {
            Some(r) if r.id > before && r.status == RunStatus::Running => {
                id = r.id;
                fake.users().len() >= seen
            }
            _ => false,
        }
    })
    .await;
    (child, id)
}

#[tokio::test(flavor = "multi_thread")]
async fn run_once_exits_with_the_runs_code() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeCovata::start().await;
    let state = state_lines("sqlite", dir.path()).await;
    let config = write_config_with(
        dir.path(),
        &fake,
        &state,
        "concurrency = 1\nmax_backoff = \"200ms\"\n",
    );
    let set_limit = |percent: u32| {
        let text = std::fs::read_to_string(&config).unwrap();
        let text = text
            .lines()
            .map(|l| {
                if l.starts_with("max_disable_percent") {
                    format!("max_disable_percent = {percent}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&config, text).unwrap();
    };

    // A broken CSV: an error before any run row, exit 1 (it was 0).
    write_csv(dir.path(), "id,email,first\nE1,a@example.com\n");
    once_and_sync(&config, 1, "broken CSV");
    assert!(fake.users().is_empty());

    // Some creates refused by the target: partial, exit 4.
    write_csv(dir.path(), &csv(10, false, usize::MAX));
    fake.inject(
        "POST",
        PathMatch::exact("/api/v1/users"),
        Fault::Status(400),
        3,
    );
    let o = run_bounded(&config, &["run", "--once", "--allow-root"], LIMIT);
    assert_eq!(code(&o), 4, "partial: {}", out(&o));
    assert_eq!(fake.users().len(), 7);
    let s = store(&config).await;
    assert_eq!(s.list_runs(1).await.unwrap()[0].status, RunStatus::Partial);

    // The next run applies the rest: 0.
    once_and_sync(&config, 0, "applied, then nothing to do");
    assert_eq!(fake.users().len(), 10);

    // Eight of ten removed, disables limited to 10 %: blocked, exit 3, nothing sent.
    set_limit(10);
    write_csv(dir.path(), &csv(10, false, 3));
    once_and_sync(&config, 3, "blocked");
    assert!(fake.users().iter().all(|u| u.enabled));
    assert_eq!(s.list_runs(1).await.unwrap()[0].status, RunStatus::Blocked);
    set_limit(100);
    write_csv(dir.path(), &csv(20, false, usize::MAX));

    // A target that cannot be reconciled: a killed run left creates `sent`, and the target
    // fails every look-up. The target fails, exit 1.
    fake.set_latency(Duration::from_millis(300));
    let (mut child, _) = slow_sync(&config, &fake, &dir.path().join("killed.log"), 12).await;
    sigkill(&mut child);
    fake.set_latency(Duration::ZERO);
    let sent = s
        .unfinished_operations("covata")
        .await
        .unwrap()
        .iter()
        .filter(|o| o.status == "sent")
        .count();
    assert!(sent > 0, "the kill left no sent create");
    fake.inject(
        "GET",
        PathMatch::prefix("/api/v1/users"),
        Fault::Status(500),
        100_000,
    );
    once_and_sync(&config, 1, "a target that cannot be reconciled");
    assert_eq!(s.list_runs(1).await.unwrap()[0].status, RunStatus::Failed);

    // And once it can: 0, every user exactly once.
    fake.clear_faults();
    once_and_sync(&config, 0, "recovered");
    assert_eq!(fake.users().len(), 20);
}

/// SIGTERM during `run --once` whose requests outlast `daemon.shutdown_timeout`: exit 6, and the
/// run is then shown `interrupted`.
#[tokio::test(flavor = "multi_thread")]
async fn run_once_stopped_by_sigterm_exits_6() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeCovata::start().await;
    let state = state_lines("sqlite", dir.path()).await;
    let config = write_config_with(dir.path(), &fake, &state, "concurrency = 1\n");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[daemon]\nshutdown_timeout = \"1s\"\n"),
    )
    .unwrap();
    write_csv(dir.path(), &csv(10, false, usize::MAX));
    fake.set_latency(Duration::from_secs(4));
    let s = store(&config).await;
    let log = dir.path().join("once.log");
    let mut child = spawn(&config, &["run", "--once", "--allow-root"], &log);
    let mut id = 0;
    wait_for("a running run", LIMIT, async || {
        match s.list_runs(1).await.unwrap().first() {
            Some(r) if r.status == RunStatus::Running => {
                id = r.id;
                !fake.requests().is_empty()
            }
            _ => false,
        }
    })
    .await;
    // SAFETY: kill(2) on our own child's pid with a valid signal number.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = wait_child(&mut child, LIMIT);
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status, 6, "{err}");
    fake.set_latency(Duration::ZERO);
    let o = run_bounded(&config, &["runs"], LIMIT);
    let listed = stdout(&o);
    let line = listed
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&id.to_string()))
        .unwrap_or_else(|| panic!("run {id} not listed:\n{listed}"));
    assert!(line.contains("interrupted"), "{listed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_target_held_by_another_instance_exits_5() {
    for backend in ["sqlite", "postgres"] {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeCovata::start().await;
        let state = state_lines(backend, dir.path()).await;
        let config = write_config_with(dir.path(), &fake, &state, "");
        write_csv(dir.path(), &csv(5, false, usize::MAX));
        let s = store(&config).await;
        let held = s
            .try_lock_target("covata", "another-host:1")
            .await
            .unwrap()
            .expect("free lock");
        for args in [&["sync"][..], &["run", "--once", "--allow-root"][..]] {
            let o = run_bounded(&config, args, LIMIT);
            assert_eq!(code(&o), 5, "{backend} {args:?}: {}", out(&o));
            assert!(
                out(&o).contains("another dirsync instance is applying"),
                "{backend}: {}",
                out(&o)
            );
        }
        let o = run_bounded(&config, &["sync", "--format", "json"], LIMIT);
        assert_eq!(code(&o), 5, "{backend}: {}", out(&o));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(report["status"], "skipped");
        assert_eq!(report["exit_code"], 5);
        assert!(fake.users().is_empty(), "{backend}: sent while skipped");
        held.release().await.unwrap();
        let o = run_bounded(&config, &["sync"], LIMIT);
        assert_eq!(code(&o), 0, "{backend}: {}", out(&o));
        assert_eq!(fake.users().len(), 5);
    }
}

/// A `sync` killed mid-run is shown `interrupted` by the next `dirsync runs`; a live `sync`
/// running at that moment stays `running` (and then succeeds).
#[tokio::test(flavor = "multi_thread")]
async fn killed_sync_is_interrupted_and_a_live_one_is_not() {
    for backend in ["sqlite", "postgres"] {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeCovata::start().await;
        let state = state_lines(backend, dir.path()).await;
        let config = write_config_with(dir.path(), &fake, &state, "concurrency = 1\n");
        write_csv(dir.path(), &csv(40, false, usize::MAX));
        fake.set_latency(Duration::from_millis(200));
        let (mut killed, killed_id) = slow_sync(&config, &fake, &dir.path().join("a.log"), 2).await;
        sigkill(&mut killed);
        // Before anyone looks, the row still says `running`.
        let s = store(&config).await;
        assert_eq!(
            s.get_run(killed_id).await.unwrap().unwrap().status,
            RunStatus::Running
        );

        // A live run of another process (its start marks the killed one already).
        let log_b = dir.path().join("b.log");
        let (mut live, live_id) = slow_sync(&config, &fake, &log_b, fake.users().len() + 1).await;
        let o = run_bounded(&config, &["runs"], LIMIT);
        assert_eq!(code(&o), 0, "{}", out(&o));
        let listed = stdout(&o);
        let row = |id: i64| {
            listed
                .lines()
                .find(|l| l.split_whitespace().next() == Some(&id.to_string()))
                .unwrap_or_else(|| panic!("run {id} not listed:\n{listed}"))
                .to_string()
        };
        assert!(
            row(killed_id).contains("interrupted"),
            "{backend}:\n{listed}"
        );
        assert!(row(live_id).contains("running"), "{backend}:\n{listed}");
        // A third look from this process (another store) marks nothing either.
        assert!(
            s.interrupt_abandoned_runs().await.unwrap().is_empty(),
            "{backend}: a live run was marked"
        );
        let killed_run = s.get_run(killed_id).await.unwrap().unwrap();
        assert_eq!(killed_run.status, RunStatus::Interrupted);
        assert!(
            killed_run
                .error
                .unwrap_or_default()
                .contains("ended before recording its end"),
            "{backend}"
        );

        // The live run finishes normally, and recovers what the killed one left.
        fake.set_latency(Duration::ZERO);
        let status = wait_child(&mut live, LIMIT);
        assert_eq!(
            status,
            0,
            "{backend}: {}",
            std::fs::read_to_string(&log_b).unwrap_or_default()
        );
        assert_eq!(
            s.get_run(live_id).await.unwrap().unwrap().status,
            RunStatus::Succeeded
        );
        assert_eq!(fake.users().len(), 40, "{backend}");
        let o = run_bounded(&config, &["runs", "--format", "json"], LIMIT);
        let runs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(
            runs["runs"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["status"] != "running"),
            "{backend}: {runs}"
        );
    }
}

fn wait_child(child: &mut Child, limit: Duration) -> i32 {
    crate::support::cmd::wait_exit(child, limit, "the process")
}

/// The store-level contract on both backends: a run of a live store (this process, another
/// store object: another instance) is never marked; once its store is gone (the lease
/// released as when a process dies), it is. Dry runs hold a lease too.
#[tokio::test(flavor = "multi_thread")]
async fn run_leases_decide_what_is_abandoned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let url = dirsync::secret::Secret::new(crate::support::pg::pg_url().await);
    for backend in ["sqlite", "postgres"] {
        let open = async || -> Box<dyn Store> {
            match backend {
                "sqlite" => Box::new(
                    dirsync::store::sqlite::SqliteStore::open(&path)
                        .await
                        .unwrap(),
                ) as Box<dyn Store>,
                _ => Box::new(
                    dirsync::store::postgres::PgStore::connect(&url, 2)
                        .await
                        .unwrap(),
                ),
            }
        };
        let live = open().await;
        live.migrate().await.unwrap();
        let other = open().await;
        let new_run = |trigger| dirsync::store::NewRun {
            trigger,
            started_at: Utc::now(),
            targets: vec!["covata".into()],
            forced: false,
        };
        let a = live
            .begin_run(&new_run(dirsync::store::Trigger::Manual))
            .await
            .unwrap();
        let b = live
            .begin_run(&new_run(dirsync::store::Trigger::DryRun))
            .await
            .unwrap();
        assert!(other.interrupt_abandoned_runs().await.unwrap().is_empty());
        assert!(live.interrupt_abandoned_runs().await.unwrap().is_empty());
        // A finished run is left as it ended.
        live.finish_run(
            a,
            &dirsync::store::RunFinish {
                status: RunStatus::Succeeded,
                finished_at: Utc::now(),
                source_count: Some(1),
                planned: 0,
                applied: 0,
                failed: 0,
                error: None,
                summary: serde_json::json!({}),
            },
        )
        .await
        .unwrap();
        // The holder goes away without finishing `b`.
        drop(live);
        let mut marked = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while marked.is_empty() && Instant::now() < deadline {
            marked = other.interrupt_abandoned_runs().await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(marked, vec![b], "{backend}");
        assert_eq!(
            other.get_run(a).await.unwrap().unwrap().status,
            RunStatus::Succeeded
        );
        assert_eq!(
            other.get_run(b).await.unwrap().unwrap().status,
            RunStatus::Interrupted
        );
        assert!(other.interrupt_abandoned_runs().await.unwrap().is_empty());
    }
}

fn next_runs(stdout: &str) -> Vec<DateTime<Utc>> {
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("next runs"))
        .unwrap_or_else(|| panic!("no next runs line:\n{stdout}"));
    let (_, times) = line.split_once(": ").unwrap();
    times
        .split(", ")
        .map(|t| {
            DateTime::parse_from_rfc3339(t)
                .unwrap_or_else(|e| panic!("{t:?}: {e}"))
                .with_timezone(&Utc)
        })
        .collect()
}

fn check_config(dir: &Path, schedule: &str) -> PathBuf {
    let path = dir.join("dirsync.toml");
    std::fs::write(
        &path,
        format!(
            "[state]\npath = \"state.db\"\n[source]\nkind = \"csv\"\n[source.csv]\npath = \
             \"users.csv\"\n[source.csv.columns]\nkey = \"id\"\n[schedule]\n{schedule}\n\
             [[target]]\nname = \"c\"\nkind = \"covata\"\nbase_url = \"http://127.0.0.1:9\"\n\
             username = \"u\"\npassword = \"p\"\nclient_id = \"i\"\nclient_secret = \"s\"\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn check_offline_prints_the_next_three_run_times() {
    let dir = tempfile::tempdir().unwrap();
    // Weekdays at 03:30: crontab's 1-5 is Monday to Friday.
    let config = check_config(dir.path(), "cron = \"30 3 * * 1-5\"");
    let before = Utc::now();
    let o = dirsync(&config, &["check", "--offline"]).output().unwrap();
    assert_eq!(code(&o), 0, "{}", out(&o));
    let text = stdout(&o);
    assert!(
        text.contains("schedule: cron \"30 3 * * 1-5\" (UTC)"),
        "{text}"
    );
    let times = next_runs(&text);
    assert_eq!(times.len(), 3, "{text}");
    for t in &times {
        assert!(*t > before);
        assert!(
            !matches!(t.weekday(), Weekday::Sat | Weekday::Sun),
            "{t} is a weekend day"
        );
        assert_eq!((t.hour(), t.minute(), t.second()), (3, 30, 0));
    }
    assert!(times.windows(2).all(|w| w[0] < w[1]));

    // Friday only (the cron crate's meaning made 5 a Thursday).
    let config = check_config(dir.path(), "cron = \"0 12 * * 5\"");
    let o = dirsync(&config, &["check", "--offline"]).output().unwrap();
    assert_eq!(code(&o), 0, "{}", out(&o));
    for t in next_runs(&stdout(&o)) {
        assert_eq!(t.weekday(), Weekday::Fri, "{t}");
    }

    // An interval: said in words, the times counted from now.
    let config = check_config(dir.path(), "interval = \"15m\"");
    let before = Utc::now();
    let o = dirsync(&config, &["check", "--offline"]).output().unwrap();
    let after = Utc::now();
    assert_eq!(code(&o), 0, "{}", out(&o));
    let text = stdout(&o);
    assert!(text.contains("schedule: every 15m"), "{text}");
    let times = next_runs(&text);
    assert_eq!(times.len(), 3, "{text}");
    for (k, t) in times.iter().enumerate() {
        let step = chrono::Duration::minutes(15 * (k as i64 + 1));
        let lo = (before + step).with_nanosecond(0).unwrap();
        assert!(*t >= lo && *t <= after + step, "{t} for run {k}");
    }

    // A weekday that does not exist is refused naming the key.
    let config = check_config(dir.path(), "cron = \"0 3 * * 8\"");
    let o = dirsync(&config, &["check", "--offline"]).output().unwrap();
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert_has(&stderr(&o), "schedule.cron");
}
