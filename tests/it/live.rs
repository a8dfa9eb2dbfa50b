//! Live sync in `dirsync run`: a CSV export renamed into place triggers one live run, and a
//! stream of disables over the rolling window is held while creates still go through.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use dirsync::store::{Store, Trigger};

use crate::support::covata::FakeCovata;
use crate::support::daemon::Daemon;
use crate::support::env::{Backend, SecretStyle, TestEnv};
use crate::support::env::{USERS_HEADER as HEADER, user_rows};

crate::support::env::suite_env!(Env {
    fake: FakeCovata,
    port: u16,
});

impl Env {
    async fn new(backend: Backend, csv: &str, safety: &str) -> Env {
        let env = Env {
            env: TestEnv::new(backend).await,
            fake: FakeCovata::start().await,
            port: crate::support::child::free_port().unwrap(),
        };
        env.write_csv(csv);
        env.config()
            .raw(
                "[source]\nkind = \"csv\"\n[source.csv]\npath = \"users.csv\"\nwatch = true\n\
                 settle = \"300ms\"\n[source.csv.columns]\nkey = \"id\"\ngiven_name = \"first\"\n\
                 family_name = \"last\"\nenabled = \"status\"\ngroups = \"groups\"",
            )
            .raw(&format!(
                "[schedule]\ninterval = \"24h\"\n[daemon]\nshutdown_timeout = \"10s\"\n\
                 [http]\nlisten = \"127.0.0.1:{}\"\n[safety]\n{safety}",
                env.port
            ))
            .covata(&env.fake.base_url(), SecretStyle::Inline, "")
            .write();
        env
    }

    /// A new export, written beside and renamed into place (as export jobs do).
    fn write_csv(&self, body: &str) {
        let tmp = self.path("users.csv.tmp");
        std::fs::write(&tmp, format!("{HEADER}{body}")).unwrap();
        std::fs::rename(tmp, self.path("users.csv")).unwrap();
    }

    fn spawn_daemon(&self) -> Daemon {
        self.spawn_daemon_logged("daemon")
    }

    async fn store(&self) -> Box<dyn Store> {
        crate::support::cmd::store(&self.config_path()).await
    }

    fn readyz(&self) -> String {
        TestEnv::readyz(self, self.port)
    }

    fn enabled(&self, n: usize) -> Option<bool> {
        self.fake
            .user_by_email(&format!("user{n}@example.com"))
            .map(|u| u.enabled)
    }
}

/// Waits (polling, generous deadline) until `f` holds; the log helps when it never does.
async fn wait_for(what: &str, log: &PathBuf, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}; daemon log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Live runs recorded as finished.
async fn live_runs(store: &dyn Store) -> usize {
    store
        .list_runs(100)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.trigger == Trigger::Live && r.finished_at.is_some())
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_watch_export_renamed_into_place_triggers_exactly_one_run() {
    let env = Env::new(Backend::Sqlite, &user_rows(1..=5, |_| false), "").await;
    let d = env.spawn_daemon();
    wait_for("the first (full) run", &d.log, || {
        env.fake.users().len() == 5
    })
    .await;
    let store = env.store().await;
    assert_eq!(live_runs(store.as_ref()).await, 0);
    // A leaver (5) and a joiner (6), in one export renamed into place.
    env.write_csv(&user_rows((1..=4).chain([6]), |_| false));
    wait_for("the live run", &d.log, || {
        env.enabled(5) == Some(false) && env.enabled(6) == Some(true)
    })
    .await;
    wait_for("the live run's row", &d.log, || {
        futures::executor::block_on(live_runs(store.as_ref())) == 1
    })
    .await;
    // The directory changes, the export does not: no run.
    std::fs::write(env.path("unrelated.txt"), "x").unwrap();
    wait_for("/readyz to show the watch", &d.log, || {
        env.readyz()
            .contains("live watch: watching (1 events received)")
    })
    .await;
    let runs = store.list_runs(100).await.unwrap();
    let live: Vec<_> = runs.iter().filter(|r| r.trigger == Trigger::Live).collect();
    assert_eq!(live.len(), 1, "{runs:#?}");
    assert_eq!(live[0].applied, 2);
    assert_eq!(env.fake.users().len(), 6);
    d.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn live_disables_over_the_window_are_held_and_creates_go_on() {
    // 100 owned accounts; at most 2 disables per run and per window.
    let env = Env::new(
        Backend::Sqlite,
        &user_rows(1..=100, |_| false),
        "max_disables = 2",
    )
    .await;
    let d = env.spawn_daemon();
    wait_for("the first (full) run", &d.log, || {
        env.fake.users().len() == 100
    })
    .await;
    // Two leavers: within the limit, applied.
    env.write_csv(&user_rows(3..=100, |_| false));
    wait_for("two disables", &d.log, || {
        env.enabled(1) == Some(false) && env.enabled(2) == Some(false)
    })
    .await;
    // One more leaver and a joiner: 3 disables within the window, over max_disables = 2. The
    // joiner is created, the leaver is held.
    env.write_csv(&user_rows((4..=100).chain([101]), |_| false));
    wait_for("the joiner", &d.log, || env.enabled(101) == Some(true)).await;
    wait_for("/readyz to say the stream holds", &d.log, || {
        env.readyz().contains("holding disables and deletes")
    })
    .await;
    assert_eq!(env.enabled(3), Some(true), "the held disable was sent");
    let store = env.store().await;
    wait_for("the live runs' rows", &d.log, || {
        futures::executor::block_on(live_runs(store.as_ref())) >= 2
    })
    .await;
    let runs = store.list_runs(100).await.unwrap();
    let last = runs
        .iter()
        .find(|r| r.trigger == Trigger::Live && r.applied == 1)
        .expect("the live run of the joiner");
    let report = last.summary["report_markdown"].as_str().unwrap_or_default();
    assert!(report.contains("disable held"), "{report}");
    let log = d.stop();
    assert!(log.contains("disables and deletes held"), "{log}");
}
