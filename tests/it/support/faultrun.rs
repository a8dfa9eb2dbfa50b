//! Shared by the fault suites that run the real `dirsync sync` against the fake Covata with a few
//! hundred operations (`faults_state.rs`, `faults_target.rs`): the CSV and configuration, runs
//! bounded in time, and the checks that nothing was lost or created twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::support::cmd::{dirsync, output_within, store};
use crate::support::covata::FakeCovata;
use crate::support::env::{ConfigText, SecretStyle};

pub const HEADER: &str = "id,email,first,last,status,groups\n";

/// `n` users `E00001..`; with `renamed` every third gets another last name; users from
/// `removed_from` on are left out (they get disabled); every seventh is an admin.
pub fn csv(n: usize, renamed: bool, removed_from: usize) -> String {
    format!("{HEADER}{}", rows(n, renamed, removed_from))
}

/// [`csv`] without its header.
pub fn rows(n: usize, renamed: bool, removed_from: usize) -> String {
    (1..=n)
        .filter(|i| *i < removed_from)
        .map(|i| {
            let last = if renamed && i % 3 == 0 {
                format!("Renamed{i}")
            } else {
                format!("Last{i}")
            };
            let groups = if i % 7 == 0 { "staff;admins" } else { "staff" };
            format!("E{i:05},user{i}@example.com,First{i},{last},active,{groups}\n")
        })
        .collect()
}

/// The HTTP settings of the target unless a test gives its own.
pub const DEFAULT_HTTP: &str = "concurrency = 4\nbatch_size = 7\nmax_backoff = \"1s\"\n";

/// A configuration with the SQLite store at `state` (absolute) and one Covata target with
/// these HTTP settings (`[[target]]` keys, one a line).
pub fn write_config(dir: &Path, fake: &FakeCovata, state: &Path, http: &str) -> PathBuf {
    write_config_with(dir, fake, &format!("path = \"{}\"", state.display()), http)
}

/// [`write_config`] with the `[state]` table's keys given as TOML lines.
pub fn write_config_with(dir: &Path, fake: &FakeCovata, state: &str, http: &str) -> PathBuf {
    ConfigText::new(dir, state)
        .csv("")
        .raw("[safety]\nmax_disable_percent = 100")
        .covata(&fake.base_url(), SecretStyle::Inline, http)
        .role("admins", &["ROLE_SYSTEM_ADMIN"])
        .write()
}

/// The longest one `dirsync` run of these suites may take before it is killed.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Runs `dirsync <args>` to its end, but kills it after `limit` and fails the test saying so
/// (with its output so far), so that a hanging run fails instead of hanging the suite.
pub fn run_bounded(config: &Path, args: &[&str], limit: Duration) -> Output {
    match output_within(&mut dirsync(config, args), limit) {
        Ok(output) => output,
        Err(output) => {
            let err = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = err.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "`dirsync {}` did not finish within {limit:?} and was killed (a hang: if the \
                 state store failed mid-apply, this is the known engine pipeline hang of \
                 src/engine.rs `apply`).\n--- stderr (last lines)\n{}",
                args.join(" "),
                tail.join("\n")
            );
        }
    }
}

/// What the fake saw of create attempts (`POST /api/v1/users`) since it started.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Creates {
    /// Every attempt, retries included.
    pub attempts: usize,
    /// Answered 201 (an account was made; one made whose answer was lost is not counted).
    pub created: usize,
    /// Answered 409: an attempt to create an account that already existed (a duplicate create).
    pub duplicates: usize,
    /// Attempts that fired an injected fault.
    pub faulted: usize,
    /// The most 201 answers for one email (must be 1).
    pub max_created_per_email: usize,
}

pub fn creates(fake: &FakeCovata) -> Creates {
    let mut c = Creates::default();
    let mut per_email: BTreeMap<String, usize> = BTreeMap::new();
    for e in fake.exchanges().iter().filter(|e| e.is_create()) {
        c.attempts += 1;
        c.faulted += usize::from(e.fault.is_some());
        match e.status {
            Some(201) => {
                c.created += 1;
                *per_email
                    .entry(e.email().unwrap_or_default().to_lowercase())
                    .or_default() += 1;
            }
            Some(409) => c.duplicates += 1,
            _ => {}
        }
    }
    c.max_created_per_email = per_email.values().copied().max().unwrap_or(0);
    c
}

/// The fake holds exactly the desired users (each once, with the desired last name, roles and
/// enabled flag; users no longer in the CSV disabled), the store holds one owned row per user,
/// and the journal holds nothing unfinished. No create was ever answered 409 and no email was
/// created twice.
pub async fn assert_converged(
    fake: &FakeCovata,
    config: &Path,
    n: usize,
    renamed: bool,
    removed_from: usize,
    what: &str,
) {
    assert_user_count(fake, n, what);
    assert_users_as_in_csv(fake, n, renamed, removed_from, what);
    let c = creates(fake);
    assert_eq!(c.duplicates, 0, "{what}: duplicate creates: {c:?}");
    assert_eq!(
        c.max_created_per_email, 1,
        "{what}: an email created twice: {c:?}"
    );
    let agreed = assert_store_agrees(fake, config, what).await;
    assert_eq!(agreed, n, "{what}: account rows");
    let s = store(config).await;
    assert!(
        s.unfinished_operations("covata").await.unwrap().is_empty(),
        "{what}: unfinished operations left"
    );
}

/// The fake holds exactly `n` users, no email twice (case-insensitive).
pub fn assert_user_count(fake: &FakeCovata, n: usize, what: &str) {
    let users = fake.users();
    let mut emails: Vec<String> = users.iter().map(|u| u.email.to_lowercase()).collect();
    emails.sort();
    let before = emails.len();
    emails.dedup();
    assert_eq!(
        before,
        emails.len(),
        "{what}: duplicate users on the target"
    );
    assert_eq!(users.len(), n, "{what}: user count");
}

/// Each user of [`csv`]`(n, renamed, removed_from)` is on the fake, with the CSV's last name
/// and admin role, and disabled if the CSV left it out.
pub fn assert_users_as_in_csv(
    fake: &FakeCovata,
    n: usize,
    renamed: bool,
    removed_from: usize,
    what: &str,
) {
    for i in 1..=n {
        let u = fake
            .user_by_email(&format!("user{i}@example.com"))
            .unwrap_or_else(|| panic!("{what}: user{i} missing"));
        let gone = i >= removed_from;
        assert_eq!(u.enabled, !gone, "{what}: user{i} enabled");
        if !gone {
            let last = if renamed && i % 3 == 0 {
                format!("Renamed{i}")
            } else {
                format!("Last{i}")
            };
            assert_eq!(
                u.last_name.as_deref(),
                Some(last.as_str()),
                "{what}: user{i} name"
            );
            assert_eq!(
                u.roles.contains(&"ROLE_SYSTEM_ADMIN".to_string()),
                i % 7 == 0,
                "{what}: user{i} roles"
            );
        }
    }
}

/// The store and the fake agree on who exists: every account row is owned and names a user the
/// fake has (same id, same email, same enabled flag), and every user of the fake has a row.
/// Returns the number of rows.
pub async fn assert_store_agrees(fake: &FakeCovata, config: &Path, what: &str) -> usize {
    assert_store_agrees_on(fake, config, what, true).await
}

/// [`assert_store_agrees`], comparing the enabled flags only with `enabled` (a status change
/// whose answer timed out may have taken effect although it is recorded as failed).
pub async fn assert_store_agrees_on(
    fake: &FakeCovata,
    config: &Path,
    what: &str,
    enabled: bool,
) -> usize {
    let s = store(config).await;
    let rows = s.load_accounts("covata").await.unwrap();
    for a in &rows {
        assert!(
            a.owned,
            "{what}: {} recorded as not owned (a conflict)",
            a.key
        );
        let id = a
            .remote_id
            .as_deref()
            .unwrap_or_else(|| panic!("{what}: {} has no remote id", a.key));
        let u = fake
            .user(id)
            .unwrap_or_else(|| panic!("{what}: {} is recorded but not on the target", a.key));
        assert_eq!(
            Some(u.email.to_lowercase()),
            a.login.as_ref().map(|l| l.to_lowercase()),
            "{what}: {} email",
            a.key
        );
        if enabled {
            assert_eq!(u.enabled, a.enabled, "{what}: {} enabled flag", a.key);
        }
    }
    let recorded: std::collections::HashSet<&str> =
        rows.iter().filter_map(|a| a.remote_id.as_deref()).collect();
    for u in fake.users() {
        assert!(
            recorded.contains(u.id.as_str()),
            "{what}: {} is on the target but not recorded (lost)",
            u.email
        );
    }
    rows.len()
}

/// Journal statuses of one run: status → count.
pub async fn journal_of_run(config: &Path, run_id: i64) -> BTreeMap<String, usize> {
    let s = store(config).await;
    let mut out = BTreeMap::new();
    for op in s.run_operations(run_id).await.unwrap() {
        *out.entry(op.status).or_default() += 1;
    }
    out
}

/// The id of the newest run.
pub async fn last_run_id(config: &Path) -> i64 {
    let s = store(config).await;
    s.list_runs(1).await.unwrap()[0].id
}
