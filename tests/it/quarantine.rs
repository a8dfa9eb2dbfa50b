//! Quarantined source records against the fake Covata and a real store (SQLite and
//! Postgres): a record-level problem sets the record aside and everyone else is synced; its
//! account is left exactly as it is (never disabled as missing); a duplicate key quarantines
//! every record sharing it; more bad records than the threshold block the run; file-level
//! problems still fail the read.

use crate::support::cmd::{code, out, stderr, stdout};
use std::process::Output;

use dirsync::store::RunStatus;

use crate::support::covata::FakeCovata;
use crate::support::env::{Backend, SecretStyle};

use crate::support::env::{USERS_HEADER as HEADER, user_rows};

crate::support::env::env_with_fake!(Env, FakeCovata, HEADER);

/// The CSV row of user `i` (line `i + 1` of the file).
fn row(i: usize) -> String {
    user_rows([i], |_| false)
}

fn rows(range: std::ops::RangeInclusive<usize>) -> String {
    user_rows(range, |_| false)
}

impl Env {
    async fn new(backend: Backend, csv: &str) -> Env {
        let env = Env::with_csv(backend, csv).await;
        env.config()
            .csv("")
            .covata(
                &env.fake.base_url(),
                SecretStyle::File,
                "max_backoff = \"2s\"",
            )
            .write();
        env
    }

    /// Syncs 20 users: all created.
    async fn first_sync(backend: Backend) -> Env {
        let env = Env::new(backend, &rows(1..=20)).await;
        env.run_code(&["sync"], 0);
        assert_eq!(env.fake.users().len(), 20);
        env
    }

    /// The fake's user with this email: (enabled, first name).
    fn remote(&self, email: &str) -> (bool, Option<String>) {
        let u = self
            .fake
            .user_by_email(email)
            .unwrap_or_else(|| panic!("{email} not on the fake"));
        (u.enabled, u.first_name)
    }
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {}", out(o)))
}

/// One user's row turns bad (invalid email, and a name change and "disabled" that must not be
/// applied) while a joiner is added: the joiner is created, the bad row's account is untouched
/// (not disabled, not updated), the report names the line, the run ends `partial` with exit 7;
/// once the row is fixed it is planned normally.
async fn bad_row_is_quarantined_and_the_rest_synced(backend: Backend) {
    let env = Env::first_sync(backend).await;
    let bad = "E00003,user3.example.com,Changed,Last3,disabled,staff\n";
    env.write_csv(&format!("{}{bad}{}{}", rows(1..=2), rows(4..=20), row(21)));

    let o = env.run(&["check"]);
    let checked = stdout(&o);
    assert!(
        checked.contains("source: OK, 20 users, 1 record quarantined")
            && checked.contains("users.csv:4"),
        "{}",
        out(&o)
    );

    let o = env.run_code(&["plan"], 2);
    let text = stdout(&o);
    let line = text
        .lines()
        .find(|l| l.contains("? quarantined"))
        .unwrap_or_else(|| panic!("no quarantined line:\n{text}"));
    assert!(line.contains("users.csv:4"), "{line}");
    assert!(
        line.contains("E00003") && line.contains("invalid email"),
        "{line}"
    );
    assert!(line.contains("\"user3.example.com\""), "{line}");
    assert!(text.contains("1 create,"), "{text}");
    assert!(text.contains("1 quarantined"), "{text}");
    assert!(!text.contains("disable E00003"), "{text}");

    let o = env.run_code(&["sync", "--format", "json"], 7);
    let report = json(&o);
    assert_eq!(report["status"], "quarantined");
    assert_eq!(report["exit_code"], 7);
    let q = &report["source"]["quarantined"];
    assert_eq!(q.as_array().map(Vec::len), Some(1), "{q}");
    assert!(
        q[0]["location"].as_str().unwrap().ends_with("users.csv:4"),
        "{q}"
    );
    assert_eq!(q[0]["key"], "E00003");
    assert_eq!(q[0]["field"], "email");
    assert_eq!(q[0]["value"], "\"user3.example.com\"");
    assert_eq!(report["source"]["users"], 21);
    assert_eq!(report["targets"][0]["summary"]["quarantined"], 1);
    assert_eq!(report["targets"][0]["summary"]["disable"], 0);

    // The joiner is created; the quarantined user's account is exactly as it was.
    assert_eq!(env.fake.users().len(), 21);
    assert_eq!(
        env.remote("user21@example.com"),
        (true, Some("First21".into()))
    );
    assert_eq!(
        env.remote("user3@example.com"),
        (true, Some("First3".into()))
    );
    let store = env.store().await;
    let rows_now = store.load_accounts("covata").await.unwrap();
    let e3 = rows_now.iter().find(|r| r.key == "E00003").unwrap();
    assert!(e3.enabled && e3.disabled_at.is_none(), "{e3:?}");
    let runs = store.list_runs(1).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Partial);

    // `runs show` and `sync --user` say why.
    let o = env.run(&["runs", "show", &runs[0].id.to_string()]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(
        stdout(&o).contains("source records quarantined: 1"),
        "{}",
        out(&o)
    );
    let o = env.run_code(&["sync", "--user", "E00003"], 1);
    assert!(
        stderr(&o).contains("quarantined") && stderr(&o).contains("users.csv:4"),
        "{}",
        out(&o)
    );
    assert_eq!(
        env.remote("user3@example.com"),
        (true, Some("First3".into()))
    );

    // Fixed: planned normally (the name change and the disable are applied now).
    env.write_csv(&format!(
        "{}E00003,user3@example.com,Changed,Last3,disabled,staff\n{}{}",
        rows(1..=2),
        rows(4..=20),
        row(21)
    ));
    env.run_code(&["sync"], 0);
    assert_eq!(
        env.remote("user3@example.com"),
        (false, Some("Changed".into()))
    );
}

crate::support::env::on_both_backends!(
    bad_row_is_quarantined_sqlite,
    bad_row_is_quarantined_postgres,
    bad_row_is_quarantined_and_the_rest_synced
);

/// A second record with an existing key: both records are quarantined, the existing account
/// is neither updated nor disabled, both lines are named.
async fn duplicate_key_quarantines_both(backend: Backend) {
    let env = Env::first_sync(backend).await;
    env.write_csv(&format!(
        "{}E00002,other@example.com,Other,Person,active,staff\n",
        rows(1..=20)
    ));
    let o = env.run_code(&["sync"], 7);
    let text = stdout(&o);
    let quarantined = crate::support::cmd::lines_with(&text, "? quarantined");
    assert_eq!(quarantined.len(), 2, "{text}");
    assert!(quarantined[0].contains("users.csv:3") && quarantined[0].contains("again on line 22"));
    assert!(quarantined[1].contains("users.csv:22") && quarantined[1].contains("first on line 3"));
    assert_eq!(env.fake.users().len(), 20, "the duplicate is not created");
    assert!(env.fake.user_by_email("other@example.com").is_none());
    assert_eq!(
        env.remote("user2@example.com"),
        (true, Some("First2".into()))
    );
    let store = env.store().await;
    let rows_now = store.load_accounts("covata").await.unwrap();
    assert!(rows_now.iter().all(|r| r.enabled), "{rows_now:?}");
}

crate::support::env::on_both_backends!(
    duplicate_key_quarantines_both_sqlite,
    duplicate_key_quarantines_both_postgres,
    duplicate_key_quarantines_both
);

/// Three bad records of 21 is over `max_quarantined_percent` (5 %, floor 2): blocked, exit 3,
/// nothing applied (not even the joiner); `--force` applies everything else.
async fn over_the_threshold_is_blocked(backend: Backend) {
    let env = Env::first_sync(backend).await;
    let csv = format!(
        "{}E00003,bad3,F,L,active,staff\nE00004,bad4,F,L,active,staff\nE00005,bad5,F,L,active,staff\n{}{}",
        rows(1..=2),
        rows(6..=20),
        row(21)
    );
    env.write_csv(&csv);
    let before = env.fake.requests().len();
    let o = env.run_code(&["sync"], 3);
    assert!(
        stdout(&o).contains("max_quarantined_percent"),
        "{}",
        out(&o)
    );
    assert_eq!(env.fake.users().len(), 20, "nothing applied");
    let sent: Vec<_> = env.fake.requests()[before..]
        .iter()
        .filter(|r| r.method != "GET" && !r.path.starts_with("/api/oauth"))
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    assert!(sent.is_empty(), "{sent:?}");

    env.run_code(&["sync", "--force"], 7);
    assert_eq!(env.fake.users().len(), 21);
    for i in 3..=5 {
        assert_eq!(
            env.remote(&format!("user{i}@example.com")),
            (true, Some(format!("First{i}")))
        );
    }
}

crate::support::env::on_both_backends!(
    over_the_threshold_is_blocked_sqlite,
    over_the_threshold_is_blocked_postgres,
    over_the_threshold_is_blocked
);

/// A missing column or a row with the wrong number of fields fails the read as before:
/// exit 1, the line named, nothing applied (the joiner not created, nobody disabled).
async fn file_level_problems_still_fail(backend: Backend) {
    let env = Env::first_sync(backend).await;
    env.write_csv(&format!("{}E00021,user21@example.com,F\n", rows(1..=20)));
    let o = env.run_code(&["sync"], 1);
    assert!(
        stderr(&o).contains("users.csv:22: expected 6 fields as in the header, found 3"),
        "{}",
        out(&o)
    );
    std::fs::write(
        env.dir.path().join("users.csv"),
        format!("id,email,first,last,status\n{}", rows(1..=21)),
    )
    .unwrap();
    let o = env.run_code(&["sync"], 1);
    assert!(
        stderr(&o).contains("missing column \"groups\""),
        "{}",
        out(&o)
    );
    assert_eq!(env.fake.users().len(), 20);
    assert!(env.fake.users().iter().all(|u| u.enabled));
}

crate::support::env::on_both_backends!(
    file_level_problems_still_fail_sqlite,
    file_level_problems_still_fail_postgres,
    file_level_problems_still_fail
);
