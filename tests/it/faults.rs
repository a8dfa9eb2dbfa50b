//! Evidence that a kill never loses or duplicates a change: `dirsync sync` killed with SIGKILL at
//! many different points of runs with hundreds of operations, then run again; afterwards the
//! fake target holds exactly the desired users (no duplicate creates), every change is there,
//! and the journal holds nothing unfinished.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::cmd::{assert_has, code, code as code_of, dirsync, out, stderr, store};
use crate::support::covata::FakeCovata;
use crate::support::env::{ConfigText, SecretStyle};

use crate::support::faultrun::{HEADER, assert_user_count, assert_users_as_in_csv, rows as csv};

fn write_config(dir: &Path, fake: &FakeCovata, db: Option<&str>) -> PathBuf {
    let state = match db {
        // A short store deadline: a call on a session Postgres killed fails fast.
        Some(url) => format!("database_url = \"{url}\"\ntimeout = \"5s\""),
        None => "path = \"state.db\"".into(),
    };
    crate::support::faultrun::write_config_with(
        dir,
        fake,
        &state,
        crate::support::faultrun::DEFAULT_HTTP,
    )
}

/// A deterministic spread of kill delays (ms) over the run's length.
fn kill_delay(i: u64, span_ms: u64) -> Duration {
    Duration::from_millis(5 + (i * 7919) % span_ms)
}

/// Starts `dirsync sync`, kills it with SIGKILL after `delay`, waits for it. True when the kill
/// landed while the run was still going.
fn sync_killed_after(config: &Path, delay: Duration) -> bool {
    let mut child = dirsync(config, &["sync"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + delay;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false; // finished before the kill point
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
    true
}

/// Checks the fake against the CSV: each desired user exactly once, with the desired last name
/// and enabled flag; users not in the CSV any more disabled.
///
/// `csv`: the arguments of the CSV's [`csv`]`(n, renamed, removed_from)`.
async fn assert_converged_after_kills(
    fake: &FakeCovata,
    config: &Path,
    (n, renamed, removed_from): (usize, bool, usize),
    what: &str,
) {
    assert_user_count(fake, n, what);
    assert_users_as_in_csv(fake, n, renamed, removed_from, what);
    let s = store(config).await;
    let accounts = s.load_accounts("covata").await.unwrap();
    assert_eq!(accounts.len(), n, "{what}: account rows");
    assert!(accounts.iter().all(|a| a.owned), "{what}: all owned");
    assert!(
        s.unfinished_operations("covata").await.unwrap().is_empty(),
        "{what}: unfinished operations left"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sixty_kills_at_different_points_lose_and_duplicate_nothing() {
    const N: usize = 120;
    let mut kills = 0;
    let mut interrupted = 0u32;
    for round in 0..12u64 {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeCovata::start().await;
        fake.set_latency(Duration::from_millis(4));
        // Every fourth round against Postgres, the others against SQLite.
        let db = if round % 4 == 3 {
            Some(crate::support::pg::pg_url().await)
        } else {
            None
        };
        let config = write_config(dir.path(), &fake, db.as_deref());
        let write_csv = |body: String| {
            std::fs::write(dir.path().join("users.csv"), format!("{HEADER}{body}")).unwrap()
        };

        // Phase 1: creates, killed at several points (each restart resumes the same run's work).
        write_csv(csv(N, false, usize::MAX));
        for k in 0..3 {
            interrupted += u32::from(sync_killed_after(&config, kill_delay(round * 10 + k, 250)));
            kills += 1;
        }
        let o = dirsync(&config, &["sync"]).output().unwrap();
        assert_eq!(code(&o), 0, "round {round} creates: {}", out(&o));
        assert_converged_after_kills(
            &fake,
            &config,
            (N, false, usize::MAX),
            &format!("round {round} creates"),
        )
        .await;

        // Phase 2: renames, role changes and removals (updates, PUT roles, bulk expire +
        // disable), killed at several points.
        write_csv(csv(N, true, N - 20));
        for k in 0..2 {
            interrupted += u32::from(sync_killed_after(
                &config,
                kill_delay(round * 10 + 5 + k, 120),
            ));
            kills += 1;
        }
        let o = dirsync(&config, &["sync"]).output().unwrap();
        assert_eq!(code(&o), 0, "round {round} changes: {}", out(&o));
        assert_converged_after_kills(
            &fake,
            &config,
            (N, true, N - 20),
            &format!("round {round} changes"),
        )
        .await;

        // And a further run has nothing to do: no request at all.
        fake.clear_requests();
        let o = dirsync(&config, &["sync"]).output().unwrap();
        assert_eq!(code(&o), 0, "{}", out(&o));
        assert!(
            fake.requests().is_empty(),
            "round {round}: requests after convergence"
        );
    }
    assert_eq!(kills, 60);
    // Most kills must land mid-run, or this proves little.
    assert!(
        interrupted >= 40,
        "only {interrupted} of 60 kills interrupted a run"
    );
    println!("{interrupted} of 60 kills interrupted a run");
}

/// A CSV of keys only and a Covata target nobody answers for (plans only).
fn plan_config(dir: &Path) -> PathBuf {
    ConfigText::new(dir, "path = \"state.db\"")
        .csv_columns("key = \"id\"")
        .covata("https://covata.invalid", SecretStyle::Inline, "")
        .write()
}

fn rows(n: usize, tag: &str) -> String {
    let mut s = String::from("id,email\n");
    for i in 0..n {
        s.push_str(&format!("{tag}{i:06},{tag}{i}@example.com\n"));
    }
    s
}

/// A file replaced by rename while dirsync reads it: every read sees one whole version.
#[tokio::test(flavor = "multi_thread")]
async fn csv_replaced_by_rename_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let config = plan_config(dir.path());
    let (a, b) = (rows(3000, "A"), rows(1000, "B"));
    std::fs::write(dir.path().join("users.csv"), &a).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (dir, stop) = (dir.path().to_path_buf(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let tmp = dir.join("users.csv.tmp");
                std::fs::write(&tmp, if n.is_multiple_of(2) { &b } else { &a }).unwrap();
                std::fs::rename(&tmp, dir.join("users.csv")).unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(3));
            }
            n
        })
    };
    for _ in 0..15 {
        let o = dirsync(&config, &["plan", "--format", "json"])
            .output()
            .unwrap();
        assert_eq!(code(&o), 2, "{}", out(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let users = v["source"]["users"].as_u64().unwrap();
        assert!(
            users == 3000 || users == 1000,
            "a mixed read: {users} users"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let swaps = writer.join().unwrap();
    assert!(swaps > 10, "the file was hardly replaced ({swaps})");
}

/// A file rewritten in place while dirsync reads it: refused, nothing planned from it.
#[tokio::test(flavor = "multi_thread")]
async fn csv_changed_during_the_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = plan_config(dir.path());
    let path = dir.path().join("users.csv");
    std::fs::write(&path, rows(300_000, "A")).unwrap();
    let mut child = dirsync(&config, &["plan"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Keep appending rows while the read is under way.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        writeln!(f, "Z{i:06},z{i}@example.com").unwrap();
        i += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert_has(&stderr(&o), "changed while it was being read");
    let s = store(&config).await;
    assert!(
        s.list_runs(10).await.unwrap().is_empty(),
        "a run was recorded"
    );
}

/// The token endpoint failing: briefly (absorbed by retries), then for a whole run (every
/// operation fails, nothing is recorded as done, the next run does everything exactly once).
#[tokio::test(flavor = "multi_thread")]
async fn token_endpoint_failures() {
    use crate::support::covata::{Fault, PathMatch};
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeCovata::start().await;
    let config = write_config(dir.path(), &fake, None);
    std::fs::write(
        dir.path().join("users.csv"),
        format!("{HEADER}{}", csv(10, false, usize::MAX)),
    )
    .unwrap();

    // Two 503s from the token endpoint: retried, the run succeeds.
    fake.inject(
        "POST",
        PathMatch::exact("/api/oauth/token"),
        Fault::Status503 { retry_after: None },
        2,
    );
    let o = dirsync(&config, &["sync"]).output().unwrap();
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert_eq!(fake.users().len(), 10);

    // The token endpoint down for a whole run: the changes fail, none is recorded as done.
    std::fs::write(
        dir.path().join("users.csv"),
        format!("{HEADER}{}", csv(10, true, 9)),
    )
    .unwrap();
    fake.expire_all_tokens();
    fake.inject(
        "*",
        PathMatch::exact("/api/oauth/token"),
        Fault::Status(500),
        10_000,
    );
    let o = dirsync(&config, &["sync"]).output().unwrap();
    assert_eq!(code(&o), 4, "{}", out(&o));
    assert!(
        fake.users()
            .iter()
            .all(|u| u.enabled && !u.last_name.as_deref().unwrap_or("").starts_with("Renamed"))
    );
    let s = store(&config).await;
    assert!(
        s.load_accounts("covata")
            .await
            .unwrap()
            .iter()
            .all(|a| a.enabled)
    );

    // Back up: the next run applies everything, once.
    fake.clear_faults();
    let o = dirsync(&config, &["sync"]).output().unwrap();
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert_converged_after_kills(&fake, &config, (10, true, 9), "after the token outage").await;
}

/// Waits for a child that must end on its own; fails with the end of its log if it does not.
fn wait_bounded(child: &mut std::process::Child, log: &Path, limit: Duration, what: &str) -> i32 {
    let end = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            panic!(
                "{what}: the run did not end within {} s; last log lines:\n{}",
                limit.as_secs(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Postgres drops dirsync's connections mid-run (what a server restart or a failover does to
/// its clients), several times: the run ends (it used to wait forever when the outcome writer
/// failed while the workers were still busy) and the following runs converge exactly.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_connections_dropped_mid_run() {
    use sqlx::Connection;
    const N: usize = 150;
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeCovata::start().await;
    let url = crate::support::pg::pg_url().await;
    let config = write_config(dir.path(), &fake, Some(&url));
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut terminated = 0i64;
    let mut failed_runs = 0;
    for round in 1..=4usize {
        fake.set_latency(Duration::from_millis(10));
        std::fs::write(
            dir.path().join("users.csv"),
            format!("{HEADER}{}", csv(N * round, false, usize::MAX)),
        )
        .unwrap();
        let log_path = dir.path().join(format!("run-{round}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = dirsync(&config, &["sync"])
            .env("DIRSYNC_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        // Terminate dirsync's sessions every 40-100 ms while the run goes on.
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(40 + 20 * round as u64)).await;
            let n: i64 = sqlx::query_scalar(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                 AND application_name = 'dirsync'",
            )
            .fetch_one(&mut admin)
            .await
            .unwrap();
            terminated += n;
        }
        let code = wait_bounded(
            &mut child,
            &log_path,
            Duration::from_secs(30),
            "dropped connections",
        );
        if code != 0 {
            failed_runs += 1;
        }
        fake.set_latency(Duration::ZERO);
        // The next run (or two, if the first still meets dropped state) converges exactly.
        let o = dirsync(&config, &["sync"]).output().unwrap();
        assert!(code_of(&o) == 0 || code_of(&o) == 4, "{}", out(&o));
        let o = dirsync(&config, &["sync"]).output().unwrap();
        assert_eq!(code_of(&o), 0, "{}", out(&o));
        assert_converged_after_kills(
            &fake,
            &config,
            (N * round, false, usize::MAX),
            &format!("round {round} after dropped connections"),
        )
        .await;
    }
    assert!(
        terminated > 0,
        "no connection was dropped: the runs ended too soon"
    );
    eprintln!(
        "dropped connections: {terminated} sessions terminated, {failed_runs} of 4 runs failed, all converged"
    );
}

/// The Postgres server is restarted (fast shutdown, then started again) in the middle of runs:
/// each run ends with a clear error or succeeds, and the next runs converge exactly: no
/// duplicate creates, nothing lost, an empty journal.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_restarted_mid_run() {
    const N: usize = 120;
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeCovata::start().await;
    let mut server = crate::support::pg::OwnServer::start();
    let config = write_config(dir.path(), &fake, Some(&server.url()));
    let mut failed_runs = 0;
    let mut restarts_mid_run = 0u32;
    for round in 1..=3usize {
        fake.set_latency(Duration::from_millis(15));
        std::fs::write(
            dir.path().join("users.csv"),
            format!("{HEADER}{}", csv(N * round, false, usize::MAX)),
        )
        .unwrap();
        let log_path = dir.path().join(format!("run-{round}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = dirsync(&config, &["sync"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100 + 150 * round as u64));
        let running = child.try_wait().unwrap().is_none();
        restarts_mid_run += u32::from(running);
        server.restart();
        let code = wait_bounded(
            &mut child,
            &log_path,
            Duration::from_secs(60),
            "postgres restart",
        );
        if code != 0 {
            failed_runs += 1;
            let text = std::fs::read_to_string(&log_path).unwrap();
            assert!(
                text.contains("state store (postgres)"),
                "round {round}: unclear error:\n{text}"
            );
        }
        eprintln!("restart round {round}: restarted while running = {running}, exit {code}");
        fake.set_latency(Duration::ZERO);
        let o = dirsync(&config, &["sync"]).output().unwrap();
        assert!(code_of(&o) == 0 || code_of(&o) == 4, "{}", out(&o));
        let o = dirsync(&config, &["sync"]).output().unwrap();
        assert_eq!(code_of(&o), 0, "{}", out(&o));
        assert_converged_after_kills(
            &fake,
            &config,
            (N * round, false, usize::MAX),
            &format!("round {round} after a Postgres restart"),
        )
        .await;
    }
    assert!(
        restarts_mid_run > 0,
        "no restart landed while a run was going"
    );
    eprintln!(
        "postgres restarts: {restarts_mid_run} mid-run, {failed_runs} runs failed, all converged"
    );
    server.stop();
}
