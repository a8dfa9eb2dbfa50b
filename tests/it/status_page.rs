//! The read-only status page (`[http] status_page = true`, `GET /status`) of a real daemon that
//! just synced against the fake Covata: in a real headless browser (chromium through
//! chromedriver: the page loads, shows the runs, the target's verdict and counts and the plan's
//! changes, logs no console error and runs no script), and over plain HTTP (off by default,
//! turned on by a SIGHUP reload, every value HTML-escaped, the changes paged), on both store
//! backends.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::covata::FakeCovata;
use crate::support::env::{Backend, SecretStyle, TestEnv, USERS_HEADER, user_rows};
use crate::support::webdriver::Browser;

/// A user whose key and name are markup: the page must show them as text.
const SCRIPT_KEY: &str = "<script>alert(1)</script>";
const SCRIPT_ROW: &str =
    "<script>alert(1)</script>,script@example.com,<b>Eve</b>,<i>x</i>,active,staff\n";

crate::support::env::suite_env!(Env {
    fake: FakeCovata,
    port: u16,
});

impl Env {
    /// `users` numbered users plus the script user; a daemon config that runs once at start,
    /// then hourly, with the listener and `http_extra` lines of `[http]`.
    async fn new(backend: Backend, users: usize, http_extra: &str) -> Env {
        let env = Env {
            env: TestEnv::new(backend).await,
            fake: FakeCovata::start().await,
            port: crate::support::child::free_port().unwrap(),
        };
        env.write_users_csv(
            USERS_HEADER,
            &format!("{}{SCRIPT_ROW}", user_rows(1..=users, |_| false)),
        );
        env.write_config(http_extra);
        env
    }

    fn write_config(&self, http_extra: &str) {
        self.config()
            .csv("")
            .raw(&format!(
                "[schedule]\ninterval = \"1h\"\nrun_on_start = true\n\
                 [http]\nlisten = \"127.0.0.1:{}\"\n{http_extra}",
                self.port
            ))
            .covata(&self.fake.base_url(), SecretStyle::Inline, "")
            .write();
    }

    /// `dirsync run`, its log in a file.
    fn spawn_daemon(&self) -> Daemon {
        Daemon(
            self.command(&["run", "--allow-root"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(self.path("daemon.log")).unwrap())
                .spawn()
                .unwrap(),
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        crate::support::cmd::http_get(self.port, path)
    }

    /// Waits until the daemon's first run has finished (its row is no longer `running`).
    async fn wait_first_run(&self, daemon: &mut Child) {
        // The listener answers once the daemon has opened (and migrated) the store: only then
        // is it opened here (two first migrations at once would race).
        self.wait_status("/healthz", 200, daemon).await;
        let store = self.store().await;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let runs = store.list_runs(1).await.unwrap();
            if runs
                .first()
                .is_some_and(|r| r.status != dirsync::store::RunStatus::Running)
            {
                return;
            }
            if Instant::now() > deadline || daemon.try_wait().unwrap().is_some() {
                let _ = daemon.kill();
                panic!(
                    "the daemon's first run did not finish; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `path` until it answers `status`; the last answer.
    async fn wait_status(&self, path: &str, status: u16, daemon: &mut Child) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((s, body)) = self.get(path)
                && s == status
            {
                return body;
            }
            if Instant::now() > deadline || daemon.try_wait().unwrap().is_some() {
                let _ = daemon.kill();
                panic!(
                    "GET {path} never answered {status} (last: {:?}); log:\n{}",
                    self.get(path),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A running daemon: killed if the test fails before [`stop`], so none outlives its test.
struct Daemon(Child);

impl std::ops::Deref for Daemon {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// SIGTERM, and the daemon exits.
fn stop(mut daemon: Daemon) {
    // SAFETY: kill(2) on our own child's pid with a valid signal number.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    crate::support::cmd::wait_exit(&mut daemon, Duration::from_secs(30), "the daemon");
}

/// The rows of the changes table in a page's HTML.
fn change_rows(html: &str) -> usize {
    html.split("<section id=\"changes\">")
        .nth(1)
        .unwrap_or_default()
        .matches("<tr><td class=\"n\">")
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn status_page_in_headless_chromium_shows_the_synced_daemon() {
    let env = Env::new(Backend::Sqlite, 3, "status_page = true").await;
    let mut daemon = env.spawn_daemon();
    env.wait_first_run(&mut daemon).await;
    assert_eq!(env.fake.users().len(), 4, "the run created every user");

    let browser = Browser::start();
    let url = format!("http://127.0.0.1:{}/status", env.port);
    browser.goto(&url);
    assert_eq!(browser.title(), "dirsync status");

    // The runs: the daemon's scheduled run, succeeded, 4 applied.
    let runs = browser.text("#runs");
    assert!(runs.contains("Recent runs"), "{runs}");
    let first_run = browser.text("#runs tbody tr");
    for want in ["1", "schedule", "succeeded"] {
        assert!(
            first_run.contains(want),
            "{want} missing from {first_run:?}"
        );
    }
    // The target: its verdict and its counts (4 owned, none pending, none failed).
    let target = browser.text("#targets tbody tr");
    let cells: Vec<String> = browser.texts("#targets tbody tr td");
    assert_eq!(cells[0], "covata", "{target}");
    assert_eq!(cells[1], "covata", "{target}");
    assert!(cells[2].starts_with("allowed"), "{target}");
    assert_eq!(cells[3], "create 4", "{target}");
    assert_eq!(&cells[4..8], ["4", "0", "0", "0"], "{target}");
    // The plan's changes: four creates, the script user's key shown as text.
    let changes: Vec<String> = browser.texts("#changes tbody tr");
    assert_eq!(changes.len(), 4, "{changes:#?}");
    assert!(
        changes
            .iter()
            .all(|r| r.contains("create") && r.contains("succeeded"))
    );
    for key in ["E00001", "E00002", "E00003", SCRIPT_KEY] {
        assert!(
            changes.iter().any(|r| r.contains(key)),
            "{key} missing from {changes:#?}"
        );
    }
    // No script on the page (the key is text, not an element), and the console is clean.
    assert!(browser.texts("script").is_empty(), "a script element");
    let console = browser.console();
    let errors: Vec<_> = console.iter().filter(|(l, _)| l == "SEVERE").collect();
    assert!(errors.is_empty(), "console errors: {console:#?}");

    // The console is really read: a page that fails to load logs an error there.
    browser.goto(&format!("http://127.0.0.1:{}/status?page=9", env.port));
    let console = browser.console();
    assert!(
        console
            .iter()
            .any(|(l, m)| l == "SEVERE" && m.contains("404")),
        "a 404 page logged no console error: {console:#?}"
    );
    drop(browser);
    stop(daemon);
}

/// Off by default (404, like any unknown path); on after a SIGHUP reload; every value escaped;
/// 121 changes in two pages of at most 100; a page past the last is 404, a bad page 400.
async fn escaped_paged_and_off_by_default(backend: Backend) {
    let env = Env::new(backend, 120, "").await;
    let mut daemon = env.spawn_daemon();
    env.wait_first_run(&mut daemon).await;
    assert_eq!(env.fake.users().len(), 121, "the run created every user");
    assert_eq!(env.get("/healthz").map(|r| r.0), Some(200));
    assert_eq!(env.get("/status").map(|r| r.0), Some(404), "off by default");

    env.write_config("status_page = true");
    // SAFETY: kill(2) on our own child's pid with a valid signal number.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGHUP) };
    let page1 = env.wait_status("/status", 200, &mut daemon).await;

    // Escaped: the markup of the script user's key is text.
    assert!(!page1.contains("<script"), "unescaped markup:\n{page1}");
    assert!(
        !page1.contains("<b>Eve"),
        "the user's name is not shown:\n{page1}"
    );
    assert!(
        page1.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page1}"
    );
    // The counts: 121 owned, none pending, none failed; the plan.
    assert!(page1.contains("create 121"), "{page1}");
    assert!(
        page1.contains("<td class=\"n\">121</td><td class=\"n\">0</td><td class=\"n\">0</td>"),
        "{page1}"
    );
    // Paged: 100 changes, then 21; no page 3.
    assert!(page1.contains("121 changes; page 1 of 2."), "{page1}");
    assert_eq!(change_rows(&page1), 100, "{page1}");
    assert!(page1.contains("href=\"?page=2#changes\""), "{page1}");
    let (status, page2) = env.get("/status?page=2").unwrap();
    assert_eq!(status, 200, "{page2}");
    assert!(page2.contains("page 2 of 2."), "{page2}");
    assert_eq!(change_rows(&page2), 21, "{page2}");
    assert!(
        page2.contains("<td class=\"n\">121</td>"),
        "rows numbered on: {page2}"
    );
    let (status, body) = env.get("/status?page=3").unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("there are 2 pages"), "{body}");
    let (status, body) = env.get("/status?page=%3Cx%3E").unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("page: \"<x>\" is not a page number"),
        "{body}"
    );
    stop(daemon);
}

crate::support::env::on_both_backends!(
    status_page_is_escaped_paged_and_off_by_default_sqlite,
    status_page_is_escaped_paged_and_off_by_default_postgres,
    escaped_paged_and_off_by_default
);
