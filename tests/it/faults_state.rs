//! The SQLite state directory failing under a sync: the disk filling up in the middle of a run of
//! hundreds of creates, a disk already full when the run starts, and a read-only state
//! directory. The state directory is a small tmpfs mounted for the test (root can write through
//! any permission, so only a real file system says "full" or "read-only"): the tests need root,
//! or mount rights, and fail saying so otherwise — they never skip.
//!
//! What must hold: the run stops with an error naming the state store and its file (exit 1, as
//! for any store failure), nothing is sent that was not journaled and nothing more is sent once
//! outcomes cannot be recorded; after space is freed (or the directory is writable again) the
//! next run converges exactly — every desired user once, no create sent twice, nothing
//! unfinished in the journal.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::cmd::{code, out, stderr, store};
use crate::support::covata::FakeCovata;
use crate::support::faultrun::{
    DEFAULT_HTTP, RUN_LIMIT, assert_converged, creates, csv, journal_of_run, last_run_id,
    run_bounded, write_config,
};

/// A tmpfs of a fixed size mounted on a fresh temporary directory; unmounted on drop.
struct StateFs {
    dir: tempfile::TempDir,
    mount: PathBuf,
}

impl StateFs {
    fn mount(size: &str) -> StateFs {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("state");
        std::fs::create_dir(&mount).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755")])
            .arg("tmpfs")
            .arg(&mount)
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount(8): {e}"));
        assert!(
            o.status.success(),
            "this test needs root (or the right to mount a tmpfs) to give the state store a \
             small or read-only file system: `mount -t tmpfs -o size={size} tmpfs {}` failed: {}",
            mount.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        );
        StateFs { dir, mount }
    }

    /// The SQLite file's path.
    fn db(&self) -> PathBuf {
        self.mount.join("state.db")
    }

    fn filler(&self) -> PathBuf {
        self.mount.join("filler")
    }

    fn remount(&self, mode: &str) {
        let o = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.mount)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "remount {mode} of {} failed: {}",
            self.mount.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }

    /// Fills the file system to the last byte; returns the bytes written.
    fn fill(&self) -> u64 {
        fill(&self.filler())
    }

    /// Deletes the filler: space is back.
    fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }

    fn work(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for StateFs {
    fn drop(&mut self) {
        // Lazy, so that a process still holding a file cannot leave the mount behind.
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

/// Appends to `path` until the file system has no byte left.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut written = 0u64;
    for chunk in [1 << 20, 4096, 512, 1] {
        let buf = vec![0x5a_u8; chunk];
        loop {
            match f.write(&buf) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    let _ = f.sync_all();
    written
}

/// What the store's error says when the state directory's file system is full.
const NO_SPACE: &str = "no space left on the file system holding";
/// ... or read-only.
const READ_ONLY: &str = "is read-only (dirsync must write its journal there)";

fn write_csv(dir: &Path, body: &str) {
    std::fs::write(dir.join("users.csv"), body).unwrap();
}

/// The store's error names the store and its file.
fn assert_store_error(o: &std::process::Output, db: &Path, what: &str, words: &[&str]) {
    assert_eq!(code(o), 1, "{what}: exit code: {}", out(o));
    let err = stderr(o);
    assert!(
        err.contains("state store (sqlite"),
        "{what}: the error does not name the state store: {}",
        out(o)
    );
    assert!(
        err.contains(&db.display().to_string()),
        "{what}: the error does not name the file {}: {}",
        db.display(),
        out(o)
    );
    for w in words {
        assert!(
            err.to_lowercase().contains(&w.to_lowercase()),
            "{what}: the error does not say {w:?}: {}",
            out(o)
        );
    }
}

/// (1) The disk fills up while a sync of 300 creates is under way (a helper thread fills the
/// tmpfs once the fake has seen 80 create requests; the journal of all 300 was written before).
/// The run must stop with a store error naming the file, having sent only journaled creates and
/// only a bounded number after outcomes stopped being recorded; once space is freed the next run
/// reconciles the creates whose outcomes were lost and converges: 300 users, each created once.
#[tokio::test(flavor = "multi_thread")]
async fn disk_fills_up_mid_sync() {
    const N: usize = 300;
    const FILL_AFTER: usize = 80;
    let fs = StateFs::mount("24m");
    let fake = Arc::new(FakeCovata::start().await);
    // Slow enough that the filler thread acts long before the run's end.
    fake.set_latency(Duration::from_millis(10));
    let config = write_config(fs.work(), &fake, &fs.db(), DEFAULT_HTTP);
    write_csv(fs.work(), &csv(N, false, usize::MAX));

    // Fill the disk once FILL_AFTER creates have reached the target.
    let filled_at_create = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let filler = {
        let (path, filled_at_create, stop) = (fs.filler(), filled_at_create.clone(), stop.clone());
        let fake = fake.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let seen = fake.create_attempts();
                if seen >= FILL_AFTER {
                    let bytes = fill(&path);
                    filled_at_create.store(seen, Ordering::SeqCst);
                    return bytes;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            0
        })
    };
    let started = Instant::now();
    let o = run_bounded(&config, &["sync"], RUN_LIMIT);
    stop.store(true, Ordering::SeqCst);
    let filled_bytes = filler.join().unwrap();
    let took = started.elapsed();
    let at_fill = filled_at_create.load(Ordering::SeqCst);
    assert!(filled_bytes > 0, "the disk was never filled: {}", out(&o));
    assert_store_error(&o, &fs.db(), "disk full mid-run", &[NO_SPACE]);
    let first = creates(&fake);
    assert!(
        first.attempts < N,
        "the run went on sending after the disk was full: {first:?}"
    );

    // Space back: what did the journal keep of the interrupted run?
    fs.free();
    let run1 = last_run_id(&config).await;
    let journal = journal_of_run(&config, run1).await;
    let sent_unrecorded = journal.get("sent").copied().unwrap_or(0);
    let never_sent = journal.get("pending").copied().unwrap_or(0);
    let recorded = journal.get("succeeded").copied().unwrap_or(0);
    assert_eq!(
        journal.values().sum::<usize>(),
        N,
        "every create was journaled before the first request: {journal:?}"
    );
    // Every create the fake saw is journaled as sent or done: nothing went out unjournaled.
    assert!(
        first.created <= recorded + sent_unrecorded,
        "creates the journal does not know as sent: {first:?} vs {journal:?}"
    );
    // Sends stop soon after the outcomes stop being recorded: what is `sent` without a recorded
    // outcome is at most the pipeline's depth — the operations marked `sent` ahead of the
    // workers (a window of 16 and a queue of 32 units), those in flight (4), finished units
    // waiting for the writer (32) and the batch whose write failed.
    assert!(
        sent_unrecorded <= 128,
        "{sent_unrecorded} creates marked sent without their outcome being recorded"
    );
    let made_unrecorded = fake.users().len().saturating_sub(recorded);
    assert!(
        made_unrecorded <= 4 + 32 + 64,
        "{made_unrecorded} accounts made without their outcome being recorded"
    );
    assert!(never_sent > 0, "nothing was left unsent: {journal:?}");

    let o2 = run_bounded(&config, &["sync", "--format", "json"], RUN_LIMIT);
    assert_eq!(code(&o2), 0, "after freeing space: {}", out(&o2));
    let report: serde_json::Value = serde_json::from_slice(&o2.stdout).unwrap();
    let recovered = &report["targets"][0]["recovered"];
    assert_converged(
        &fake,
        &config,
        N,
        false,
        usize::MAX,
        "after the disk was full",
    )
    .await;
    let all = creates(&fake);
    println!(
        "disk full mid-sync: {N} creates planned; disk filled after {at_fill} create requests \
         ({filled_bytes} filler bytes); first run: exit {}, {} create requests, {} recorded, \
         {sent_unrecorded} marked sent but unrecorded ({made_unrecorded} of them made), \
         {never_sent} never sent, took {took:?}; second \
         run: exit 0, recovered {recovered}; creates seen by the fake in all: {} ({} answered 201, {} \
         duplicates); lost: 0",
        code(&o),
        first.attempts,
        recorded,
        all.attempts,
        all.created,
        all.duplicates
    );
}

/// (2) The disk is already full when the run starts — with a state file from earlier runs, and
/// with none yet: the run fails with an error naming the store and its file, and nothing at
/// all reaches the target (not even a token request). Once space is freed, the next run
/// converges.
#[tokio::test(flavor = "multi_thread")]
async fn disk_already_full_at_start() {
    const N: usize = 200;
    let fs = StateFs::mount("16m");
    let fake = FakeCovata::start().await;
    let config = write_config(fs.work(), &fake, &fs.db(), DEFAULT_HTTP);
    write_csv(fs.work(), &csv(N, false, usize::MAX));

    // No state file yet, and no room to make one.
    let filled = fs.fill();
    let o = run_bounded(&config, &["sync"], RUN_LIMIT);
    assert_store_error(&o, &fs.db(), "full before the first run", &[NO_SPACE]);
    assert!(
        fake.exchanges().is_empty(),
        "requests were sent with no state store: {:?}",
        fake.exchanges().len()
    );

    // A state file from an earlier run (half the users), then the disk fills up.
    fs.free();
    write_csv(fs.work(), &csv(N / 2, false, usize::MAX));
    let o = run_bounded(&config, &["sync"], RUN_LIMIT);
    assert_eq!(code(&o), 0, "{}", out(&o));
    write_csv(fs.work(), &csv(N, false, usize::MAX));
    let requests_before = fake.exchange_count();
    let refilled = fs.fill();
    for args in [&["sync"][..], &["sync", "--format", "json"][..]] {
        let o = run_bounded(&config, args, RUN_LIMIT);
        assert_store_error(&o, &fs.db(), "full at the start of a run", &[NO_SPACE]);
    }
    assert_eq!(
        fake.exchange_count(),
        requests_before,
        "requests were sent although nothing could be journaled"
    );

    fs.free();
    let o = run_bounded(&config, &["sync"], RUN_LIMIT);
    assert_eq!(code(&o), 0, "after freeing space: {}", out(&o));
    assert_converged(&fake, &config, N, false, usize::MAX, "after a full disk").await;
    let c = creates(&fake);
    println!(
        "disk full at start: {filled} and {refilled} filler bytes; runs on the full disk: exit 1, \
         0 requests; afterwards {N} users, creates seen by the fake {} ({} answered 201, {} duplicates), \
         lost 0",
        c.attempts, c.created, c.duplicates
    );
}

/// (3) A read-only state directory: `sync` fails before anything is sent, naming the store, its
/// file and the cause. `plan` fails the same way: a dry run records its run in the store
/// (README: "Records a run of trigger `dry_run`"), so a store that cannot record it is an
/// error, not a silent plan without history. Writable again, the next sync converges.
#[tokio::test(flavor = "multi_thread")]
async fn read_only_state_directory() {
    const N: usize = 150;
    let fs = StateFs::mount("16m");
    let fake = FakeCovata::start().await;
    let config = write_config(fs.work(), &fake, &fs.db(), DEFAULT_HTTP);
    write_csv(fs.work(), &csv(N, false, usize::MAX));
    let o = run_bounded(&config, &["sync"], RUN_LIMIT);
    assert_eq!(code(&o), 0, "{}", out(&o));

    // Renames, role changes and leavers pending; the state directory turns read-only.
    write_csv(fs.work(), &csv(N, true, N - 10));
    fs.remount("ro");
    let before = fake.exchange_count();
    let o = run_bounded(&config, &["sync"], RUN_LIMIT);
    assert_store_error(&o, &fs.db(), "read-only sync", &[READ_ONLY]);
    let o = run_bounded(&config, &["plan"], RUN_LIMIT);
    assert_store_error(&o, &fs.db(), "read-only plan", &[READ_ONLY]);
    assert_eq!(
        fake.exchange_count(),
        before,
        "requests were sent with a read-only state store"
    );

    fs.remount("rw");
    let o = run_bounded(&config, &["plan"], RUN_LIMIT);
    assert_eq!(code(&o), 2, "plan once writable: {}", out(&o));
    let s = store(&config).await;
    let runs = s.list_runs(10).await.unwrap();
    assert_eq!(
        runs.len(),
        2,
        "only the runs that could be recorded are: {runs:?}"
    );
    drop(s);

    // A run killed mid-apply leaves the WAL and its index behind; with them SQLite can open the
    // file read-only, so the failure comes from the first write instead of the open: still
    // before anything is sent (the run row is written before the target is touched).
    fake.set_latency(Duration::from_millis(20));
    let mut child = crate::support::cmd::dirsync(&config, &["sync"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.exchange_count() < before + 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    fake.set_latency(Duration::ZERO);
    let wal = fs.mount.join("state.db-wal");
    assert!(wal.exists(), "the killed run left no WAL behind");
    fs.remount("ro");
    let killed_at = fake.exchange_count();
    for args in [&["sync"][..], &["plan"][..]] {
        let o = run_bounded(&config, args, RUN_LIMIT);
        assert_store_error(&o, &fs.db(), "read-only after a kill", &[READ_ONLY]);
    }
    assert_eq!(
        fake.exchange_count(),
        killed_at,
        "requests were sent with a read-only state store (after a kill)"
    );

    fs.remount("rw");
    let o = run_bounded(&config, &["sync"], RUN_LIMIT);
    assert_eq!(code(&o), 0, "sync once writable: {}", out(&o));
    assert_converged(&fake, &config, N, true, N - 10, "after read-only").await;
    println!(
        "read-only state directory: sync and plan exit 1 before any request (fresh close and \
         after a kill); {} requests in all; {N} users converged, 0 duplicates",
        fake.exchange_count()
    );
}
