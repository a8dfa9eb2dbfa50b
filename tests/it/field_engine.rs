//! The apply engine in the field: target-fatal errors (refused credentials, an unreachable
//! host) stop a target as a whole, the Covata import is used when the run's creates reach
//! `bulk_import_min`, SIGTERM stops dispatch and records the run `interrupted`, and sent creates
//! of killed runs are reconciled from one listing, each restart keeping its progress.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dirsync::connector::{
    Capabilities, Connector, Created, OpError, RemoteAccount, RoleSemantics, StatusAction,
    StatusItem,
};
use dirsync::mapping::Account;
use dirsync::plan::FieldChange;
use dirsync::run::{Connectors, RunOptions};
use dirsync::store::{RunStatus, Store, Trigger};

use crate::support::cmd::{code, dirsync, out, stdout};
use crate::support::covata::{self, FakeCovata, Fault, PathMatch};
use crate::support::env::{ConfigText, SecretStyle};
use crate::support::faultrun::{
    RUN_LIMIT, assert_converged, assert_store_agrees, creates, csv, journal_of_run, last_run_id,
    run_bounded, write_config,
};

struct Env {
    dir: tempfile::TempDir,
    fake: FakeCovata,
    config: PathBuf,
}

impl Env {
    async fn new(n: usize, http: &str) -> Env {
        let fake = FakeCovata::start().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("users.csv"), csv(n, false, usize::MAX)).unwrap();
        let config = write_config(dir.path(), &fake, &dir.path().join("state.db"), http);
        Env { dir, fake, config }
    }

    /// Rewrites one `key = "value"` line of the target.
    fn set(&self, key: &str, value: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let text: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with(&format!("{key} = ")) {
                    format!("{key} = \"{value}\"")
                } else {
                    l.to_string()
                }
            })
            .collect();
        std::fs::write(&self.config, text.join("\n")).unwrap();
    }

    fn sync(&self) -> std::process::Output {
        run_bounded(&self.config, &["sync"], RUN_LIMIT)
    }

    fn spawn_sync(&self, args: &[&str]) -> Child {
        dirsync(&self.config, args)
            .env("DIRSYNC_LOG", "dirsync=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    async fn store(&self) -> Box<dyn Store> {
        crate::support::cmd::store(&self.config).await
    }

    fn token_requests(&self) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.path == "/api/oauth/token")
            .count()
    }

    fn create_requests(&self) -> usize {
        self.fake
            .exchanges()
            .iter()
            .filter(|e| e.is_create())
            .count()
    }
}

/// Every journal row of the target, status → count.
async fn all_statuses(store: &dyn Store) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for r in store.list_runs(1000).await.unwrap() {
        for op in store.run_operations(r.id).await.unwrap() {
            *out.entry(op.status).or_default() += 1;
        }
    }
    out
}

fn signal(child: &Child, sig: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} failed");
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_output(child: Child) -> std::process::Output {
    // Bounded: a hang fails the test instead of hanging the suite.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(RUN_LIMIT)
        .expect("dirsync did not exit in time")
        .unwrap()
}

// ---- A. target-fatal errors ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn refused_credentials_fail_the_target_once_and_the_fixed_run_creates_everyone() {
    let env = Env::new(300, "concurrency = 8\nmax_backoff = \"1s\"\n").await;
    env.set("client_secret", "not-the-secret");

    let o = env.sync();
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(
        env.token_requests() <= 2,
        "token endpoint asked {} times\n{}",
        env.token_requests(),
        out(&o)
    );
    assert_eq!(env.create_requests(), 0, "{}", out(&o));
    // One line for the target, naming the refusal; no operation failed one by one.
    let text = stdout(&o);
    let lines = crate::support::cmd::lines_with(&text, "authentication failed");
    assert_eq!(lines.len(), 1, "{text}");
    assert!(!text.contains("! failed"), "{text}");
    let store = env.store().await;
    let statuses = all_statuses(store.as_ref()).await;
    assert_eq!(statuses.get("sent"), None, "{statuses:?}");
    assert_eq!(statuses.get("failed"), None, "{statuses:?}");
    let run = &store.list_runs(1).await.unwrap()[0];
    assert_eq!(run.status, RunStatus::Failed);

    // The credentials fixed: everyone is created exactly once.
    env.set("client_secret", covata::CLIENT_SECRET);
    let o = env.sync();
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(!stdout(&o).contains("cannot reconcile"), "{}", out(&o));
    assert_converged(
        &env.fake,
        &env.config,
        300,
        false,
        usize::MAX,
        "after the fix",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_port_fails_fast_leaves_nothing_sent_and_the_next_run_plans_normally() {
    let env = Env::new(300, "concurrency = 8\nmax_backoff = \"1s\"\n").await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    env.set("base_url", &format!("http://127.0.0.1:{closed}"));
    let started = Instant::now();
    let o = env.sync();
    let took = started.elapsed();
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(stdout(&o).contains("unreachable"), "{}", out(&o));
    let store = env.store().await;
    let statuses = all_statuses(store.as_ref()).await;
    assert_eq!(statuses.get("sent"), None, "{statuses:?}");
    assert_eq!(statuses.get("failed"), None, "{statuses:?}");
    // Failed before anything was journaled: nothing for the next run to reconcile.
    assert!(
        crate::support::cmd::nothing_unfinished(&*store, "covata").await,
        "{statuses:?}"
    );
    eprintln!("refused port: exit 1 after {took:?}");

    env.set("base_url", &env.fake.base_url());
    let o = env.sync();
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(!stdout(&o).contains("cannot reconcile"), "{}", out(&o));
    assert_converged(
        &env.fake,
        &env.config,
        300,
        false,
        usize::MAX,
        "after the fix",
    )
    .await;
}

/// An in-process connector that creates up to `ok` accounts, then fails every call with the
/// given target-fatal error.
struct FailingAfter {
    ok: usize,
    error: OpError,
    calls: AtomicUsize,
    created: std::sync::Mutex<Vec<String>>,
    broken: AtomicBool,
}

#[async_trait::async_trait]
impl Connector for FailingAfter {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            bulk_status_batch: None,
            bulk_create_batch: None,
            can_list: true,
            roles: RoleSemantics::Replace,
            settle_time: None,
        }
    }

    async fn create(&self, account: &Account) -> Result<Created, OpError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2)).await;
        if n >= self.ok && self.broken.load(Ordering::SeqCst) {
            return Err(self.error.clone());
        }
        let mut created = self.created.lock().unwrap();
        created.push(account.key.clone());
        Ok(Created {
            remote_id: format!("id-{}", account.key),
            note: None,
        })
    }

    async fn update(&self, _: &str, _: &[FieldChange], _: &Account) -> Result<(), OpError> {
        Ok(())
    }

    async fn set_roles(
        &self,
        _: &str,
        _: &[String],
        _: &[String],
        _: &[String],
    ) -> Result<(), OpError> {
        Ok(())
    }

    async fn set_status(&self, _: StatusAction, items: &[StatusItem]) -> Vec<Result<(), OpError>> {
        items.iter().map(|_| Ok(())).collect()
    }

    async fn list_accounts(&self) -> Result<Vec<RemoteAccount>, OpError> {
        Ok(Vec::new())
    }

    async fn find_account(&self, _: &str) -> Result<Option<RemoteAccount>, OpError> {
        Ok(None)
    }
}

async fn fatal_mid_run(error: OpError) {
    let fake = FakeCovata::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.csv"), csv(200, false, usize::MAX)).unwrap();
    let config_path = write_config(
        dir.path(),
        &fake,
        &dir.path().join("state.db"),
        "concurrency = 8\n",
    );
    let config = dirsync::config::load_with_env(&config_path, &[]).unwrap();
    let store = crate::support::cmd::store(&config_path).await;
    let connector = Arc::new(FailingAfter {
        ok: 37,
        error: error.clone(),
        calls: AtomicUsize::new(0),
        created: Default::default(),
        broken: AtomicBool::new(true),
    });
    let mut connectors = Connectors::new();
    connectors.insert("covata".into(), connector.clone() as Arc<dyn Connector>);
    let opts = RunOptions {
        trigger: Trigger::Manual,
        targets: vec![],
        force: false,
        now: chrono::Utc::now(),
        stop: Default::default(),
        refresh: false,
    };
    let plan = dirsync::run::execute(&config, store.as_ref(), &opts, Some(&connectors))
        .await
        .unwrap();
    assert_eq!(plan.status(), RunStatus::Failed);
    assert_eq!(dirsync::report::PlanStatus::of(&plan).exit_code(), 1);
    let t = &plan.targets[0];
    let error_line = t.error.as_deref().unwrap();
    assert!(error_line.contains(&error.to_string()), "{error_line}");
    let applied = t.applied.as_ref().unwrap();
    assert_eq!(applied.applied, 37, "exactly the successes");
    assert_eq!(applied.failed, 0, "nothing failed one by one");
    assert!(applied.failures.is_empty());
    assert_eq!(applied.interrupted, 200 - 37);
    // Dispatch stopped: at most the calls already in flight went out after the first error.
    let calls = connector.calls.load(Ordering::SeqCst);
    assert!(calls <= 37 + 8, "{calls} calls");
    let statuses = journal_of_run(&config_path, plan.run_id).await;
    assert_eq!(statuses.get("succeeded"), Some(&37), "{statuses:?}");
    assert_eq!(statuses.get("sent"), None, "{statuses:?}");
    assert_eq!(statuses.get("failed"), None, "{statuses:?}");
    let left = statuses.get("skipped").copied().unwrap_or(0)
        + statuses.get("pending").copied().unwrap_or(0);
    assert_eq!(left, 200 - 37, "{statuses:?}");
    let run = store.get_run(plan.run_id).await.unwrap().unwrap();
    assert_eq!(
        (run.status, run.applied, run.failed),
        (RunStatus::Failed, 37, 0)
    );

    // Fixed: the next run creates the rest, each exactly once.
    connector.broken.store(false, Ordering::SeqCst);
    let opts = RunOptions {
        now: chrono::Utc::now(),
        ..opts
    };
    let plan = dirsync::run::execute(&config, store.as_ref(), &opts, Some(&connectors))
        .await
        .unwrap();
    assert_eq!(
        plan.status(),
        RunStatus::Succeeded,
        "{:?}",
        plan.targets[0].error
    );
    let created = connector.created.lock().unwrap().clone();
    let unique: BTreeSet<&String> = created.iter().collect();
    assert_eq!(created.len(), 200);
    assert_eq!(unique.len(), 200);
    assert!(crate::support::cmd::nothing_unfinished(&*store, "covata").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_refused_mid_run_stops_dispatch_and_leaves_nothing_sent() {
    fatal_mid_run(OpError::Auth {
        message: "the token endpoint refused the credentials (401)".into(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_mid_run_stops_dispatch_and_leaves_nothing_sent() {
    fatal_mid_run(OpError::Unreachable {
        message: "connection refused".into(),
    })
    .await;
}

// ---- B. bulk import -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn bulk_import_min_applies_to_the_runs_creates() {
    // 130 creates, threshold 100 (more than one batch_size of 7 would ever hold), files of 40.
    let env = Env::new(
        130,
        "concurrency = 4\nbatch_size = 7\nbulk_import_min = 100\nimport_batch_size = 40\n",
    )
    .await;
    let o = env.sync();
    assert_eq!(code(&o), 0, "{}", out(&o));
    let imports = env.fake.requests_to("POST", "/api/v1/users/import").len();
    assert_eq!(imports, 130usize.div_ceil(40), "{}", out(&o));
    assert_eq!(env.create_requests(), 0, "no create one by one");
    // Every new id recorded, the fake's users = the source, nothing unfinished.
    assert_eq!(env.fake.users().len(), 130);
    assert_eq!(
        assert_store_agrees(&env.fake, &env.config, "imported").await,
        130
    );
    let store = env.store().await;
    assert!(crate::support::cmd::nothing_unfinished(&*store, "covata").await);
    // A second run has nothing to do.
    let o = env.sync();
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert_eq!(env.fake.users().len(), 130);
}

#[tokio::test(flavor = "multi_thread")]
async fn fewer_creates_than_bulk_import_min_go_one_by_one() {
    let env = Env::new(30, "concurrency = 4\nbulk_import_min = 100\n").await;
    let o = env.sync();
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(
        !env.fake
            .requests()
            .iter()
            .any(|r| r.path == "/api/v1/users/import")
    );
    assert_eq!(env.create_requests(), 30);
    assert_converged(&env.fake, &env.config, 30, false, usize::MAX, "one by one").await;
}

#[test]
fn import_batch_size_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    let path = ConfigText::new(dir.path(), "path = \"state.db\"")
        .csv_columns("key = \"id\"")
        .covata(
            "https://covata.example",
            SecretStyle::Inline,
            "import_batch_size = 0",
        )
        .write();
    let err = dirsync::config::load_with_env(&path, &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("target[0].import_batch_size"), "{err}");
}

// ---- C. SIGTERM -------------------------------------------------------------------------------

/// Create exchanges that arrived after `at`.
fn creates_after(fake: &FakeCovata, at: Instant) -> usize {
    fake.exchanges()
        .iter()
        .filter(|e| e.is_create() && e.at > at)
        .count()
}

async fn assert_interrupted_run_counts(config: &Path, run_id: i64) {
    let store = crate::support::cmd::store(config).await;
    let run = store.get_run(run_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Interrupted, "{run:?}");
    let statuses = journal_of_run(config, run_id).await;
    assert_eq!(
        run.applied as usize,
        statuses.get("succeeded").copied().unwrap_or(0),
        "{statuses:?}"
    );
    assert_eq!(
        run.failed as usize,
        statuses.get("failed").copied().unwrap_or(0),
        "{statuses:?}"
    );
    let left = run.summary["targets"][0]["applied"]["interrupted"]
        .as_u64()
        .unwrap() as usize;
    let unsent = ["pending", "skipped", "sent"]
        .iter()
        .map(|s| statuses.get(*s).copied().unwrap_or(0))
        .sum::<usize>();
    assert_eq!(
        left, unsent,
        "left counted = rows not applied: {statuses:?}"
    );
    assert!(left > 0);
}

/// The concurrency of the SIGTERM tests: at most this many creates reach the server after it.
const SIGTERM_CONCURRENCY: usize = 4;

/// 300 users to create, 40 ms a request.
async fn sigterm_env() -> Env {
    let env = Env::new(
        300,
        &format!("concurrency = {SIGTERM_CONCURRENCY}\nmax_backoff = \"1s\"\n"),
    )
    .await;
    env.fake.set_latency(Duration::from_millis(40));
    env
}

/// `dirsync <args>` sent SIGTERM after 40 creates: it exits `want`, at most the creates in
/// flight reach the server after the signal, and the run is recorded interrupted with exact
/// counts. Returns its output.
async fn sigterm_after_40_creates(env: &Env, args: &[&str], want: i32) -> std::process::Output {
    let child = env.spawn_sync(args);
    wait_until("40 creates", RUN_LIMIT, || env.create_requests() >= 40);
    let at = Instant::now();
    signal(&child, "TERM");
    let o = wait_output(child);
    assert_eq!(code(&o), want, "{}", out(&o));
    let late = creates_after(&env.fake, at);
    assert!(
        late <= SIGTERM_CONCURRENCY,
        "{late} creates reached the server after SIGTERM"
    );
    let run_id = last_run_id(&env.config).await;
    assert_interrupted_run_counts(&env.config, run_id).await;
    o
}

/// A sync without latency after the SIGTERM: everything is there, nothing twice.
async fn converges_after_sigterm(env: &Env) {
    env.fake.set_latency(Duration::ZERO);
    let o = env.sync();
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert_converged(
        &env.fake,
        &env.config,
        300,
        false,
        usize::MAX,
        "after SIGTERM",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_sync_dispatch_and_records_the_run_interrupted() {
    let env = sigterm_env().await;
    let o = sigterm_after_40_creates(&env, &["sync"], 6).await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(stdout(&o).contains("left for the next run"), "{}", out(&o));
    assert!(err.contains("left="), "{err}");
    converges_after_sigterm(&env).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_daemon_run_and_records_it_interrupted() {
    let env = sigterm_env().await;
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        format!("[schedule]\ninterval = \"1h\"\nrun_on_start = true\n[daemon]\nshutdown_timeout = \"10s\"\n{text}"),
    )
    .unwrap();
    sigterm_after_40_creates(&env, &["run", "--allow-root"], 0).await;
    converges_after_sigterm(&env).await;
}

// ---- D. recovery --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn sigkilled_syncs_make_progress_at_every_restart_and_never_create_twice() {
    const CONCURRENCY: usize = 16;
    let env = Env::new(
        400,
        &format!("concurrency = {CONCURRENCY}\nmax_backoff = \"1s\"\n"),
    )
    .await;
    // Creates take effect at once but are answered late: killed runs leave them `sent`.
    env.fake.inject(
        "POST",
        PathMatch::exact("/api/v1/users"),
        Fault::ApplyThenLatency(Duration::from_secs(30)),
        100_000,
    );
    let mut killed_runs = Vec::new();
    let mut last_users = 0;
    for round in 0..3 {
        let before = env.fake.users().len();
        let child = env.spawn_sync(&["sync"]);
        // Only `concurrency` creates are in flight (answered after 30 s): wait for all of them.
        wait_until("more users", RUN_LIMIT, || {
            env.fake.users().len() >= before + CONCURRENCY
        });
        std::thread::sleep(Duration::from_millis(50));
        let mut child = child;
        child.kill().unwrap();
        child.wait().unwrap();
        let users = env.fake.users().len();
        assert!(users > last_users, "round {round}: no progress");
        last_users = users;
        killed_runs.push(last_run_id(&env.config).await);
        if round > 0 {
            // The previous killed run's sent creates were confirmed by this start.
            let prev = killed_runs[round - 1];
            let statuses = journal_of_run(&env.config, prev).await;
            assert_eq!(statuses.get("sent"), None, "round {round}: {statuses:?}");
            assert!(
                statuses.get("succeeded").copied().unwrap_or(0) > 0,
                "round {round}: {statuses:?}"
            );
        }
    }
    let store = env.store().await;
    let sent = store.unfinished_operations("covata").await.unwrap();
    assert!(sent.iter().any(|o| o.status == "sent"));
    drop(store);
    env.fake.clear_faults();
    let o = env.sync();
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(stdout(&o).contains("recovered"), "{}", out(&o));
    assert_converged(
        &env.fake,
        &env.config,
        400,
        false,
        usize::MAX,
        "after kills",
    )
    .await;
    let c = creates(&env.fake);
    assert_eq!(c.max_created_per_email, 1, "{c:?}");
    // Reconciled from listings, not one look-up per create.
    let lookups = env
        .fake
        .requests()
        .iter()
        .filter(|r| {
            r.path == "/api/v1/users"
                && r.method == "GET"
                && r.query.as_deref().is_some_and(|q| q.contains("email="))
        })
        .count();
    assert!(lookups <= 8, "{lookups} single look-ups");
    let _ = &env.dir;
}

/// An in-process job-like target (`settle_time`): creates are answered with an unknown outcome
/// and not found at once; afterwards the target shows half of them, then all.
struct Settling {
    phase2: AtomicBool,
    created: std::sync::Mutex<Vec<String>>,
    lookups: AtomicUsize,
    listings: AtomicUsize,
}

#[async_trait::async_trait]
impl Connector for Settling {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            bulk_status_batch: None,
            bulk_create_batch: None,
            can_list: true,
            roles: RoleSemantics::Replace,
            settle_time: Some(Duration::from_secs(20)),
        }
    }

    async fn create(&self, account: &Account) -> Result<Created, OpError> {
        let email = account.fields.get("email").cloned().unwrap_or_default();
        self.created.lock().unwrap().push(email);
        Err(OpError::Unavailable {
            message: "job accepted, outcome not known yet".into(),
        })
    }

    async fn update(&self, _: &str, _: &[FieldChange], _: &Account) -> Result<(), OpError> {
        Ok(())
    }

    async fn set_roles(
        &self,
        _: &str,
        _: &[String],
        _: &[String],
        _: &[String],
    ) -> Result<(), OpError> {
        Ok(())
    }

    async fn set_status(&self, _: StatusAction, items: &[StatusItem]) -> Vec<Result<(), OpError>> {
        items.iter().map(|_| Ok(())).collect()
    }

    async fn list_accounts(&self) -> Result<Vec<RemoteAccount>, OpError> {
        let n = self.listings.fetch_add(1, Ordering::SeqCst);
        if !self.phase2.load(Ordering::SeqCst) {
            return Ok(Vec::new());
        }
        let created = self.created.lock().unwrap().clone();
        let shown = if n == 0 {
            created.len() / 2
        } else {
            created.len()
        };
        Ok(created[..shown]
            .iter()
            .map(|e| RemoteAccount {
                remote_id: format!("id-{e}"),
                login: Some(e.clone()),
                email: Some(e.clone()),
                fields: Default::default(),
                roles: Default::default(),
                enabled: true,
            })
            .collect())
    }

    async fn find_account(&self, _: &str) -> Result<Option<RemoteAccount>, OpError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        Ok(None)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sent_creates_of_a_settling_target_are_confirmed_from_listings_round_by_round() {
    let fake = FakeCovata::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.csv"), csv(40, false, usize::MAX)).unwrap();
    let config_path = write_config(
        dir.path(),
        &fake,
        &dir.path().join("state.db"),
        "concurrency = 8\n",
    );
    let config = dirsync::config::load_with_env(&config_path, &[]).unwrap();
    let store = crate::support::cmd::store(&config_path).await;
    let connector = Arc::new(Settling {
        phase2: AtomicBool::new(false),
        created: Default::default(),
        lookups: AtomicUsize::new(0),
        listings: AtomicUsize::new(0),
    });
    let mut connectors = Connectors::new();
    connectors.insert("covata".into(), connector.clone() as Arc<dyn Connector>);
    let opts = RunOptions {
        trigger: Trigger::Manual,
        targets: vec![],
        force: false,
        now: chrono::Utc::now(),
        stop: Default::default(),
        refresh: false,
    };
    // First run: every create's outcome unknown, left `sent`.
    let first = dirsync::run::execute(&config, store.as_ref(), &opts, Some(&connectors))
        .await
        .unwrap();
    let statuses = journal_of_run(&config_path, first.run_id).await;
    assert_eq!(statuses.get("sent"), Some(&40), "{statuses:?}");

    // The target settles: half of them are listed at the first look, all at the second.
    connector.phase2.store(true, Ordering::SeqCst);
    connector.lookups.store(0, Ordering::SeqCst);
    connector.listings.store(0, Ordering::SeqCst);
    let opts = RunOptions {
        now: chrono::Utc::now(),
        ..opts
    };
    let second = dirsync::run::execute(&config, store.as_ref(), &opts, Some(&connectors))
        .await
        .unwrap();
    let t = &second.targets[0];
    let recovered = t.recovered.as_ref().unwrap();
    assert_eq!((recovered.confirmed, recovered.replanned), (40, 0));
    assert_eq!(
        connector.listings.load(Ordering::SeqCst),
        2,
        "one listing per round"
    );
    assert_eq!(
        connector.lookups.load(Ordering::SeqCst),
        0,
        "no look-up per user"
    );
    assert_eq!(t.plan.ops.len(), 0, "nothing created again");
    assert_eq!(connector.created.lock().unwrap().len(), 40);
    let statuses = journal_of_run(&config_path, first.run_id).await;
    assert_eq!(statuses.get("succeeded"), Some(&40), "{statuses:?}");
    assert_eq!(store.load_accounts("covata").await.unwrap().len(), 40);
}
