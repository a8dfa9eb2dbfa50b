//! Quarantined records the planner must still recognise, against the fake Covata and the fake
//! Primavera on both stores: a row whose key is blanked keeps its accounts (found by its
//! email), a row with neither key nor email holds every account missing from the source, and
//! a user one target cannot map (a required field empty) is quarantined for every target and
//! counts toward the quarantine limits.

use crate::support::cmd::{out, stdout};
use crate::support::covata::FakeCovata;
use crate::support::env::{
    Backend, SecretStyle, TestEnv, on_both_backends, suite_env, target_table,
};
use crate::support::primavera::{self, FakePrimavera};

const HEADER: &str = "id,email,first,last,status\n";

suite_env!(Env {
    covata: FakeCovata,
    p6: FakePrimavera,
});

/// The CSV row of user `i` (line `i + 1` of the file).
fn row(i: usize) -> String {
    format!("E{i:05},user{i}@example.com,First{i},Last{i},active\n")
}

fn rows(range: std::ops::RangeInclusive<usize>) -> String {
    range.map(row).collect()
}

impl Env {
    /// Syncs users 1..=20 to both targets.
    async fn first_sync(backend: Backend) -> Env {
        let env = Env {
            env: TestEnv::new(backend).await,
            covata: FakeCovata::start().await,
            p6: FakePrimavera::start().await,
        };
        std::fs::write(env.path("p6-password"), primavera::PASSWORD).unwrap();
        env.config()
            .csv_columns(
                "key = \"id\"\ngiven_name = \"first\"\nfamily_name = \"last\"\nenabled = \"status\"\n",
            )
            .raw("[safety]\nmax_disable_percent = 100")
            .covata(&env.covata.base_url(), SecretStyle::File, "max_backoff = \"1s\"")
            .raw(&target_table(
                "p6",
                "primavera",
                &[
                    ("base_url", &env.p6.base_url()),
                    ("username", primavera::USERNAME),
                    ("password_file", "p6-password"),
                    ("max_backoff", "1s"),
                    ("job_poll_interval", "50ms"),
                ],
                "default_roles = [\"PrimaveraViewer\"]\n[target.fields]\n\
                 loginId = \"{email | lower}\"\nemailAddress = \"{email}\"\n\
                 firstName = \"{given_name}\"\nlastName = \"{family_name}\"\n\
                 organization = \"sfo\"",
            ))
            .write();
        env.write_csv(&rows(1..=20));
        env.run_code(&["sync"], 0);
        assert_eq!(env.covata.users().len(), 20);
        assert_eq!(env.p6.users().len(), 20);
        env
    }

    fn write_csv(&self, body: &str) {
        self.write_users_csv(HEADER, body);
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

    /// User `i`'s accounts are exactly as the first sync left them, on both targets.
    #[track_caller]
    fn assert_untouched(&self, i: usize) {
        assert_eq!(
            self.remote(i),
            (true, Some(format!("Last{i}")), true),
            "user {i}"
        );
    }
}

/// Row 3's key is blanked (its email kept) and its last name changed, user 20 leaves, user 21
/// joins: user 3's accounts are found by the email and left exactly as they are on both
/// targets, the leaver is disabled, the joiner created, exit 7; the report names the line and
/// why the account is left alone. Fixed, the row is planned normally again.
async fn blanked_key_keeps_its_accounts(backend: Backend) {
    let env = Env::first_sync(backend).await;
    let csv = format!(
        "{},user3@example.com,First3,Changed,active\n{}{}",
        rows(1..=2),
        rows(4..=19),
        row(21)
    );
    env.write_csv(&csv);
    let o = env.run_code(&["sync"], 7);
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
    env.assert_untouched(3);
    assert!(
        !env.remote(20).0 && !env.remote(20).2,
        "the leaver is disabled"
    );
    assert_eq!(env.remote(21), (true, Some("Last21".into()), true));

    env.write_csv(&format!("{}{}", rows(1..=19), row(21)));
    let o = env.run_code(&["sync"], 0);
    assert!(!stdout(&o).contains("quarantined"), "{}", out(&o));
    env.assert_untouched(3);
}

on_both_backends!(
    blanked_key_keeps_its_accounts_sqlite,
    blanked_key_keeps_its_accounts_postgres,
    blanked_key_keeps_its_accounts
);

/// Row 3 loses both key and email and user 20 leaves: nothing tells whose row 3 is, so no
/// account is disabled as missing this run (user 20's neither), and the report says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_row_without_key_or_email_holds_every_missing_account() {
    let env = Env::first_sync(Backend::Sqlite).await;
    env.write_csv(&format!(
        "{},,First3,Last3,active\n{}",
        rows(1..=2),
        rows(4..=19)
    ));
    let o = env.run_code(&["sync"], 7);
    let report = stdout(&o);
    assert!(report.contains("has neither key nor email"), "{report}");
    for i in [3, 20] {
        env.assert_untouched(i);
    }
    // The leaver is disabled once the row is fixed.
    env.write_csv(&rows(1..=19));
    let o = env.run_code(&["sync"], 0);
    assert!(!env.remote(20).0 && !env.remote(20).2, "{}", out(&o));
}

/// User 3's first name goes empty (Primavera requires it) and the last name changes: user 3
/// is quarantined for every target, so Covata's account is not updated either; three such
/// users of 20 are over `max_quarantined_percent`: blocked, nothing applied.
async fn unmappable_user_is_quarantined_everywhere(backend: Backend) {
    let env = Env::first_sync(backend).await;
    env.write_csv(&format!(
        "{}E00003,user3@example.com,,Changed,active\n{}",
        rows(1..=2),
        rows(4..=20)
    ));
    let o = env.run_code(&["sync"], 7);
    let line = stdout(&o)
        .lines()
        .find(|l| l.contains("? quarantined"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no quarantined line\n{}", out(&o)));
    assert!(
        line.contains("E00003") && line.contains("target p6: field firstName is empty"),
        "{line}"
    );
    env.assert_untouched(3);

    env.write_csv(&format!(
        "{}E00003,user3@example.com,,Changed,active\nE00004,user4@example.com,,L,active\n\
         E00005,user5@example.com,,L,active\n{}",
        rows(1..=2),
        rows(6..=20)
    ));
    let o = env.run_code(&["sync"], 3);
    assert!(
        stdout(&o).contains("max_quarantined_percent"),
        "{}",
        out(&o)
    );
    for i in 3..=5 {
        env.assert_untouched(i);
    }
}

on_both_backends!(
    unmappable_user_is_quarantined_everywhere_sqlite,
    unmappable_user_is_quarantined_everywhere_postgres,
    unmappable_user_is_quarantined_everywhere
);
