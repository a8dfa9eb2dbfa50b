//! Quarantined records the planner must still recognise, against the fake Covata and the fake
//! Primavera on both stores: a row whose key is blanked keeps its accounts (found by its
//! email), a row with neither key nor email holds every account missing from the source, and
//! a user one target cannot map (a required field empty) is quarantined for every target and
//! counts toward the quarantine limits.

use std::path::PathBuf;
use std::process::Output;

use crate::support::cmd::{code, out, stdout};
use crate::support::covata::{self, FakeCovata};
use crate::support::primavera::{self, FakePrimavera};

const HEADER: &str = "id,email,first,last,status\n";

struct Env {
    dir: tempfile::TempDir,
    covata: FakeCovata,
    p6: FakePrimavera,
}

/// The CSV row of user `i` (line `i + 1` of the file).
fn row(i: usize) -> String {
    format!("E{i:05},user{i}@example.com,First{i},Last{i},active\n")
}

fn rows(range: std::ops::RangeInclusive<usize>) -> String {
    range.map(row).collect()
}

impl Env {
    /// Syncs users 1..=20 to both targets.
    async fn first_sync(postgres: bool) -> Env {
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
            covata: FakeCovata::start().await,
            p6: FakePrimavera::start().await,
        };
        let state = if postgres {
            format!("database_url = \"{}\"", crate::support::pg::pg_url().await)
        } else {
            "path = \"state.db\"".to_string()
        };
        let dir = env.dir.path();
        std::fs::write(dir.join("covata-secret"), covata::CLIENT_SECRET).unwrap();
        std::fs::write(dir.join("p6-password"), primavera::PASSWORD).unwrap();
        let config = format!(
            r#"
[state]
{state}

[source]
kind = "csv"
[source.csv]
path = "users.csv"
[source.csv.columns]
key = "id"
given_name = "first"
family_name = "last"
enabled = "status"

[safety]
max_disable_percent = 100

[[target]]
name = "covata"
kind = "covata"
base_url = "{covata}"
username = "{c_user}"
password = "{c_password}"
client_id = "{c_client}"
client_secret_file = "covata-secret"
max_backoff = "1s"

[[target]]
name = "p6"
kind = "primavera"
base_url = "{p6}"
username = "{p_user}"
password_file = "p6-password"
max_backoff = "1s"
job_poll_interval = "50ms"
default_roles = ["PrimaveraViewer"]
[target.fields]
loginId = "{{email | lower}}"
emailAddress = "{{email}}"
firstName = "{{given_name}}"
lastName = "{{family_name}}"
organization = "sfo"
"#,
            covata = env.covata.base_url(),
            c_user = covata::USERNAME,
            c_password = covata::PASSWORD,
            c_client = covata::CLIENT_ID,
            p6 = env.p6.base_url(),
            p_user = primavera::USERNAME,
        );
        std::fs::write(env.config_path(), config).unwrap();
        env.write_csv(&rows(1..=20));
        let o = env.run(&["sync"]);
        assert_eq!(code(&o), 0, "{}", out(&o));
        assert_eq!(env.covata.users().len(), 20);
        assert_eq!(env.p6.users().len(), 20);
        env
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("dirsync.toml")
    }

    fn write_csv(&self, body: &str) {
        std::fs::write(self.dir.path().join("users.csv"), format!("{HEADER}{body}")).unwrap();
    }

    fn run(&self, args: &[&str]) -> Output {
        crate::support::cmd::dirsync(&self.config_path(), args)
            .output()
            .unwrap()
    }

    /// User `i` on both targets: (Covata enabled, Covata last name, Primavera enabled).
    fn remote(&self, i: usize) -> (bool, Option<String>, bool) {
        let email = format!("user{i}@example.com");
        let c = self
            .covata
            .user_by_email(&email)
            .unwrap_or_else(|| panic!("{email} not on Covata"));
        let p = self
            .p6
            .user(&email)
            .unwrap_or_else(|| panic!("{email} not on Primavera"));
        (c.enabled, c.last_name, !p.disabled)
    }
}

/// Row 3's key is blanked (its email kept) and its last name changed, user 20 leaves, user 21
/// joins: user 3's accounts are found by the email and left exactly as they are on both
/// targets, the leaver is disabled, the joiner created, exit 7; the report names the line and
/// why the account is left alone. Fixed, the row is planned normally again.
async fn blanked_key_keeps_its_accounts(postgres: bool) {
    let env = Env::first_sync(postgres).await;
    let csv = format!(
        "{},user3@example.com,First3,Changed,active\n{}{}",
        rows(1..=2),
        rows(4..=19),
        row(21)
    );
    env.write_csv(&csv);
    let o = env.run(&["sync"]);
    assert_eq!(code(&o), 7, "{}", out(&o));
    let report = stdout(&o);
    assert!(
        report.lines().any(|l| l.contains("? quarantined")
            && l.contains("users.csv:4")
            && l.contains("empty key")),
        "{report}"
    );
    assert!(
        report.contains("E00003: left alone: the quarantined record at")
            && report.contains("has no key, and its email \"user3@example.com\" is this account's"),
        "{report}"
    );
    assert_eq!(
        env.remote(3),
        (true, Some("Last3".into()), true),
        "untouched"
    );
    assert!(
        !env.remote(20).0 && !env.remote(20).2,
        "the leaver is disabled"
    );
    assert_eq!(env.remote(21), (true, Some("Last21".into()), true));

    env.write_csv(&format!("{}{}", rows(1..=19), row(21)));
    let o = env.run(&["sync"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(!stdout(&o).contains("quarantined"), "{}", out(&o));
    assert_eq!(env.remote(3), (true, Some("Last3".into()), true));
}

#[tokio::test(flavor = "multi_thread")]
async fn blanked_key_keeps_its_accounts_sqlite() {
    blanked_key_keeps_its_accounts(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn blanked_key_keeps_its_accounts_postgres() {
    blanked_key_keeps_its_accounts(true).await;
}

/// Row 3 loses both key and email and user 20 leaves: nothing tells whose row 3 is, so no
/// account is disabled as missing this run (user 20's neither), and the report says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_row_without_key_or_email_holds_every_missing_account() {
    let env = Env::first_sync(false).await;
    env.write_csv(&format!(
        "{},,First3,Last3,active\n{}",
        rows(1..=2),
        rows(4..=19)
    ));
    let o = env.run(&["sync"]);
    assert_eq!(code(&o), 7, "{}", out(&o));
    let report = stdout(&o);
    assert!(report.contains("has neither key nor email"), "{report}");
    for i in [3, 20] {
        assert_eq!(
            env.remote(i),
            (true, Some(format!("Last{i}")), true),
            "user {i}"
        );
    }
    // The leaver is disabled once the row is fixed.
    env.write_csv(&rows(1..=19));
    let o = env.run(&["sync"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(!env.remote(20).0 && !env.remote(20).2, "{}", out(&o));
}

/// User 3's first name goes empty (Primavera requires it) and the last name changes: user 3
/// is quarantined for every target, so Covata's account is not updated either; three such
/// users of 20 are over `max_quarantined_percent`: blocked, nothing applied.
async fn unmappable_user_is_quarantined_everywhere(postgres: bool) {
    let env = Env::first_sync(postgres).await;
    env.write_csv(&format!(
        "{}E00003,user3@example.com,,Changed,active\n{}",
        rows(1..=2),
        rows(4..=20)
    ));
    let o = env.run(&["sync"]);
    assert_eq!(code(&o), 7, "{}", out(&o));
    let line = stdout(&o)
        .lines()
        .find(|l| l.contains("? quarantined"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no quarantined line\n{}", out(&o)));
    assert!(
        line.contains("E00003") && line.contains("target p6: field firstName is empty"),
        "{line}"
    );
    assert_eq!(
        env.remote(3),
        (true, Some("Last3".into()), true),
        "untouched"
    );

    env.write_csv(&format!(
        "{}E00003,user3@example.com,,Changed,active\nE00004,user4@example.com,,L,active\n\
         E00005,user5@example.com,,L,active\n{}",
        rows(1..=2),
        rows(6..=20)
    ));
    let o = env.run(&["sync"]);
    assert_eq!(code(&o), 3, "{}", out(&o));
    assert!(
        stdout(&o).contains("max_quarantined_percent"),
        "{}",
        out(&o)
    );
    for i in 3..=5 {
        assert_eq!(
            env.remote(i),
            (true, Some(format!("Last{i}")), true),
            "user {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unmappable_user_is_quarantined_everywhere_sqlite() {
    unmappable_user_is_quarantined_everywhere(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unmappable_user_is_quarantined_everywhere_postgres() {
    unmappable_user_is_quarantined_everywhere(true).await;
}
