//! `dirsync sync` against the fake Covata server and a real store: what is sent, what the
//! fake ends up holding, what the journal and the account rows say, and what happens under
//! faults and kills.

use crate::support::cmd::{assert_has, code, out, stderr, stdout, str_fields};
use std::process::Stdio;
use std::time::Duration;

use crate::support::covata::{self, FakeCovata, FakeUser, Fault, PathMatch};
use crate::support::env::Backend;

use crate::support::env::{USERS_HEADER as HEADER, target_table, user_rows};

crate::support::env::env_with_fake!(Env, FakeCovata, HEADER, new);

fn users(n: usize) -> String {
    user_rows(1..=n, |i| i % 10 == 1)
}

impl Env {
    fn write_config(&self, extra: &str) {
        self.write_covata_config(&self.fake.base_url(), extra);
    }
}

fn emails(fake: &FakeCovata) -> Vec<String> {
    let mut v: Vec<String> = fake.users().into_iter().map(|u| u.email).collect();
    v.sort();
    v
}

async fn full_lifecycle(backend: Backend) {
    let env = Env::new(backend, &users(5)).await;

    // First sync: everyone created with the right roles.
    let o = env.run_code(&["sync"], 0);
    assert_has(&stdout(&o), "Applied 5 changes.");
    let fake_users = env.fake.users();
    assert_eq!(fake_users.len(), 5);
    let alice = env.fake.user_by_email("user1@example.com").unwrap();
    assert_eq!(alice.roles, vec!["ROLE_SYSTEM_ADMIN".to_string()]);
    assert_eq!(alice.first_name.as_deref(), Some("First1"));
    let bob = env.fake.user_by_email("user2@example.com").unwrap();
    assert_eq!(bob.roles, vec!["ROLE_COLLABORATOR".to_string()]);
    let store = env.store().await;
    let accounts = store.load_accounts("covata").await.unwrap();
    assert_eq!(accounts.len(), 5);
    assert!(
        accounts
            .iter()
            .all(|a| a.owned && a.enabled && a.remote_id.is_some())
    );
    assert_eq!(
        accounts
            .iter()
            .find(|a| a.key == "E00001")
            .unwrap()
            .remote_id
            .as_deref(),
        Some(alice.id.as_str())
    );
    let run = &store.list_runs(1).await.unwrap()[0];
    assert_eq!(run.status, dirsync::store::RunStatus::Succeeded);
    assert_eq!(run.applied, 5);
    let ops = store.run_operations(run.id).await.unwrap();
    assert_eq!(ops.len(), 5);
    assert!(
        ops.iter()
            .all(|o| o.status == "succeeded" && o.remote_id.is_some())
    );

    // Second sync, nothing changed: not a single request, not even a token.
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    assert!(env.fake.requests().is_empty(), "{:?}", env.fake.requests());

    // Rename, role change, source disable, removal.
    let mut csv = users(5);
    csv = csv.replace(
        "E00001,user1@example.com,First1,Last1",
        "E00001,user1@example.com,First1,Renamed",
    );
    csv = csv.replace(
        "E00002,user2@example.com,First2,Last2,active,staff",
        "E00002,user2@example.com,First2,Last2,active,staff;admins",
    );
    csv = csv.replace(
        "E00003,user3@example.com,First3,Last3,active",
        "E00003,user3@example.com,First3,Last3,disabled",
    );
    csv = csv.replace("E00004,user4@example.com,First4,Last4,active,staff\n", "");
    env.write_csv(&csv);
    env.write_config("max_disable_percent = 50");
    // (max_disable_percent is a [safety] key, not a target key: the config must refuse it.)
    env.run_code(&["sync"], 1);
    env.write_config("");
    env.fake.clear_requests();
    let o = env.run_code(&["sync"], 0);
    let bob_id = bob.id.clone();
    let carol = env.fake.user_by_email("user3@example.com").unwrap();
    let dave = env.fake.user_by_email("user4@example.com").unwrap();
    let mut reqs = env.fake.api_requests();
    reqs.sort();
    let mut expected = vec![
        ("PUT".to_string(), format!("/api/v1/users/{}", alice.id)),
        ("PUT".to_string(), format!("/api/v1/users/{bob_id}")),
        ("POST".to_string(), "/api/v1/users/bulk".to_string()),
        ("POST".to_string(), "/api/v1/users/bulk".to_string()),
    ];
    expected.sort();
    assert_eq!(reqs, expected, "{}", out(&o));
    assert_eq!(
        env.fake.bulk_batches(),
        vec![("expire".to_string(), 2), ("disable".to_string(), 2)]
    );
    assert_eq!(
        env.fake.user(&alice.id).unwrap().last_name.as_deref(),
        Some("Renamed")
    );
    let mut bob_roles = env.fake.user(&bob_id).unwrap().roles;
    bob_roles.sort();
    assert_eq!(bob_roles, vec!["ROLE_SYSTEM_ADMIN".to_string()]);
    assert!(!env.fake.user(&carol.id).unwrap().enabled);
    assert!(!env.fake.user(&dave.id).unwrap().enabled);
    assert_eq!(env.fake.user(&dave.id).unwrap().sessions_expired, 1);
    assert_eq!(env.fake.toggle_calls(), 0);
    let accounts = store.load_accounts("covata").await.unwrap();
    let dave_row = accounts.iter().find(|a| a.key == "E00004").unwrap();
    assert!(!dave_row.enabled && dave_row.disabled_at.is_some());

    // Carol enabled again in the source: one bulk enable; nothing else.
    env.write_csv(&csv.replace("First3,Last3,disabled", "First3,Last3,active"));
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    assert_eq!(
        env.fake.api_requests(),
        vec![("POST".to_string(), "/api/v1/users/bulk".to_string())]
    );
    assert!(env.fake.user(&carol.id).unwrap().enabled);

    // And then nothing again.
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    assert!(
        env.fake.api_requests().is_empty(),
        "{:?}",
        env.fake.api_requests()
    );

    // A dry run against the same config sends nothing at all.
    env.write_csv(&users(5));
    env.fake.clear_requests();
    env.run_code(&["sync", "--dry-run"], 2);
    assert!(env.fake.requests().is_empty());
}

crate::support::env::on_both_backends!(
    lifecycle_against_fake_covata_sqlite,
    lifecycle_against_fake_covata_postgres,
    full_lifecycle
);

#[tokio::test(flavor = "multi_thread")]
async fn bulk_disables_are_batched() {
    let env = Env::new(Backend::Postgres, &users(1234)).await;
    env.write_config("concurrency = 32");
    env.run_code(&["sync"], 0);
    assert_eq!(env.fake.users().len(), 1234);
    // Everyone leaves: blocked without --force, applied in 3 batches with it.
    env.write_csv("X1,x1@example.com,X,One,active,staff\n");
    env.run_code(&["sync"], 3);
    assert!(env.fake.users().iter().all(|u| u.enabled));
    env.run_code(&["sync", "--force"], 0);
    let disables: Vec<usize> = env
        .fake
        .bulk_batches()
        .into_iter()
        .filter(|(a, _)| a == "disable")
        .map(|(_, n)| n)
        .collect();
    let mut sorted = disables.clone();
    sorted.sort();
    assert_eq!(sorted, vec![234, 500, 500], "{disables:?}");
    assert_eq!(env.fake.users().iter().filter(|u| !u.enabled).count(), 1234);
    let store = env.store().await;
    let run = &store.list_runs(1).await.unwrap()[0];
    assert!(run.forced);
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_storm_is_absorbed() {
    let env = Env::new(Backend::Sqlite, &users(6)).await;
    env.fake.inject(
        "POST",
        PathMatch::exact("/api/v1/users"),
        Fault::Status429 {
            retry_after: Some("1".into()),
        },
        3,
    );
    env.fake.inject(
        "*",
        PathMatch::prefix("/api/v1/users"),
        Fault::Status503 { retry_after: None },
        2,
    );
    env.run_code(&["sync"], 0);
    assert_eq!(env.fake.users().len(), 6);
    assert_eq!(env.fake.pending_faults(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_error_fails_one_operation_and_the_next_run_retries_it() {
    let env = Env::new(Backend::Sqlite, &users(4)).await;
    env.fake.inject(
        "POST",
        PathMatch::exact("/api/v1/users"),
        Fault::Status(500),
        1,
    );
    let o = env.run_code(&["sync"], 4);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(text.contains("failed 1"), "{text}");
    assert_eq!(env.fake.users().len(), 3);
    let store = env.store().await;
    let run = &store.list_runs(1).await.unwrap()[0];
    assert_eq!(run.status, dirsync::store::RunStatus::Partial);
    assert_eq!((run.applied, run.failed), (3, 1));
    let ops = store.run_operations(run.id).await.unwrap();
    // A create answered 500 whose look-up found nothing: its outcome is unknown, so its row
    // stays `sent` for the next run to look up before creating it again.
    let failed: Vec<_> = ops.iter().filter(|o| o.status == "sent").collect();
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("500"),
        "{failed:?}"
    );
    // Next run: only the failed one is created.
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    assert_eq!(env.fake.users().len(), 4);
    let creates = env
        .fake
        .api_requests()
        .iter()
        .filter(|(m, p)| m == "POST" && p == "/api/v1/users")
        .count();
    assert_eq!(creates, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_response_after_create_creates_nobody_twice() {
    let env = Env::new(Backend::Postgres, &users(5)).await;
    env.fake.inject(
        "POST",
        PathMatch::exact("/api/v1/users"),
        Fault::DropAfterApply,
        2,
    );
    env.run_code(&["sync"], 0);
    assert_eq!(emails(&env.fake).len(), 5);
    let store = env.store().await;
    assert_eq!(store.load_accounts("covata").await.unwrap().len(), 5);
    // A second run sends nothing and creates nothing.
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    assert!(
        env.fake.api_requests().is_empty(),
        "{:?}",
        env.fake.api_requests()
    );
    assert_eq!(env.fake.users().len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_mid_run_then_restarted_creates_nobody_twice() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let env = Env::new(backend, &users(40)).await;
        env.write_config("concurrency = 4");
        env.fake.set_latency(Duration::from_millis(150));
        let mut child = env
            .command(&["sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Let some creates through, then kill -9 in the middle.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while env.fake.users().len() < 8 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let created_before = env.fake.users().len();
        assert!(
            created_before > 0 && created_before < 40,
            "{created_before}"
        );
        env.fake.set_latency(Duration::ZERO);
        let o = env.run(&["sync"]);
        assert_eq!(code(&o), 0, "{backend:?}: {}", out(&o));
        let all = emails(&env.fake);
        let mut unique = all.clone();
        unique.dedup();
        assert_eq!(all.len(), 40, "{backend:?}");
        assert_eq!(unique.len(), 40, "{backend:?}: duplicate creates");
        let store = env.store().await;
        let accounts = store.load_accounts("covata").await.unwrap();
        assert_eq!(accounts.len(), 40);
        assert!(accounts.iter().all(|a| a.owned));
        // Nothing is left unfinished in the journal.
        assert!(crate::support::cmd::nothing_unfinished(&*store, "covata").await);
        // And the third run has nothing to do.
        env.assert_nothing_to_do(&["sync"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conflict_without_adoption_then_adopt() {
    let env = Env::new(Backend::Sqlite, &users(3)).await;
    // Someone created user2 by hand; user3 exists with different names.
    let hand = env.fake.insert_user(FakeUser {
        first_name: Some("Hand".into()),
        ..FakeUser::new("User2@Example.com", &["ROLE_ORIGINATOR"])
    });
    // First contact: the existing account is found in the target's list and not created.
    let o = env.run_code(&["sync"], 0);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(text.contains("exists, not owned: adopt first"), "{text}");
    assert_eq!(env.fake.create_attempts(), 2);
    // The hand-made account is untouched; dirsync remembers it as not owned.
    let u = env.fake.user(&hand).unwrap();
    assert_eq!(u.first_name.as_deref(), Some("Hand"));
    let store = env.store().await;
    let row = crate::support::cmd::recorded(&*store, "covata", "E00002").await;
    assert!(!row.owned);
    // The next plan reports it instead of creating again.
    let o = env.run_code(&["plan"], 0);
    assert_has(&stdout(&o), "dirsync adopt");

    // Adopt: dry run records nothing; then for real.
    env.fake.clear_requests();
    let o = env.run_code(&["adopt", "--target", "covata", "--dry-run"], 0);
    assert_has(&stdout(&o), "would adopt 1");
    let row = crate::support::cmd::recorded(&*store, "covata", "E00002").await;
    assert!(!row.owned);
    let o = env.run_code(&["adopt", "--target", "covata"], 0);
    assert_has(&stdout(&o), "adopted 1");
    // Adoption changed nothing remotely: only listing calls.
    assert!(
        env.fake.api_requests().iter().all(|(m, _)| m == "GET"),
        "{:?}",
        env.fake.api_requests()
    );
    let row = crate::support::cmd::recorded(&*store, "covata", "E00002").await;
    assert!(row.owned && row.adopted);
    assert_eq!(row.remote_id.as_deref(), Some(hand.as_str()));
    // Now sync brings it in line: name and roles, no create.
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    assert!(
        !env.fake
            .api_requests()
            .iter()
            .any(|(m, p)| m == "POST" && p == "/api/v1/users")
    );
    let u = env.fake.user(&hand).unwrap();
    assert_eq!(u.first_name.as_deref(), Some("First2"));
    assert_eq!(u.roles, vec!["ROLE_COLLABORATOR".to_string()]);
    assert_eq!(env.fake.users().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reaches_the_target() {
    let env = Env::new(Backend::Sqlite, &users(2)).await;
    let o = env.run_code(&["check"], 0);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(text.contains("target covata: OK"), "{text}");
    // Only reads: no user was created or changed.
    assert!(env.fake.users().is_empty());
    assert!(
        env.fake
            .requests()
            .iter()
            .all(|r| r.method == "GET" || r.path.starts_with("/api/oauth"))
    );
    // Wrong credentials: check fails and says so, without the secret.
    let cfg = std::fs::read_to_string(env.config_path())
        .unwrap()
        .replace(covata::PASSWORD, "not-the-password");
    std::fs::write(env.config_path(), cfg).unwrap();
    let o = env.run_code(&["check"], 1);
    let all = out(&o);
    assert!(all.contains("target covata: FAILED"), "{all}");
    assert!(!all.contains("not-the-password"), "{all}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_fail_clearly_without_secrets() {
    let env = Env::new(Backend::Sqlite, &users(2)).await;
    std::fs::write(
        env.dir.path().join("client-secret"),
        "wrong-client-secret\n",
    )
    .unwrap();
    let cfg = std::fs::read_to_string(env.config_path()).unwrap().replace(
        "client_secret_file = \"client-secret\"",
        "client_secret = \"wrong-client-secret\"",
    );
    std::fs::write(env.config_path(), cfg).unwrap();
    let o = env.run(&["sync", "-vv"]);
    // Refused credentials fail the target as a whole (exit 1), not operation by operation.
    assert_eq!(code(&o), 1, "{}", out(&o));
    let all = out(&o);
    assert!(all.contains("authentication"), "{all}");
    for secret in [covata::PASSWORD, "wrong-client-secret"] {
        assert!(!all.contains(secret), "secret {secret} printed");
    }
    assert!(env.fake.users().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn large_creates_go_through_the_csv_import() {
    let env = Env::new(Backend::Sqlite, &users(30)).await;
    env.write_config("bulk_import_min = 10");
    // One of them exists already (made by hand): found on first contact, not imported.
    let hand = env
        .fake
        .insert_user(FakeUser::new("user7@example.com", &["ROLE_ORIGINATOR"]));
    env.run_code(&["sync"], 0);
    let imports = env
        .fake
        .api_requests()
        .into_iter()
        .filter(|(m, p)| m == "POST" && p == "/api/v1/users/import")
        .count();
    assert_eq!(imports, 1, "{:?}", env.fake.api_requests());
    assert!(
        !env.fake
            .api_requests()
            .iter()
            .any(|(m, p)| m == "POST" && p == "/api/v1/users")
    );
    assert_eq!(env.fake.users().len(), 30);
    // Every created user is recorded with the id the listing gave; the conflict is not owned.
    let store = env.store().await;
    let accounts = store.load_accounts("covata").await.unwrap();
    assert_eq!(accounts.len(), 30);
    for a in &accounts {
        let email = format!(
            "user{}@example.com",
            a.key.trim_start_matches('E').trim_start_matches('0')
        );
        let fake_user = env.fake.user_by_email(&email).unwrap();
        if a.key == "E00007" {
            assert!(!a.owned);
            assert_eq!(fake_user.id, hand);
        } else {
            assert!(a.owned, "{a:?}");
            assert_eq!(a.remote_id.as_deref(), Some(fake_user.id.as_str()));
        }
    }
    // Next run: nothing to create; the conflict is reported, not retried.
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    assert!(
        env.fake.api_requests().is_empty(),
        "{:?}",
        env.fake.api_requests()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_target_does_not_stop_the_others() {
    let env = Env::new(Backend::Sqlite, &users(3)).await;
    // A second target nothing listens for (connection refused); max_retries 0 keeps it quick.
    let mut cfg = std::fs::read_to_string(env.config_path()).unwrap();
    cfg.push_str(&target_table(
        "covata-down",
        "covata",
        &[
            ("base_url", "http://127.0.0.1:9"),
            ("username", covata::USERNAME),
            ("password", covata::PASSWORD),
            ("client_id", covata::CLIENT_ID),
            ("client_secret", "x"),
        ],
        "max_retries = 0\nconnect_timeout = \"1s\"",
    ));
    std::fs::write(env.config_path(), cfg).unwrap();
    // --refresh must list each target first: the second cannot be listed.
    let o = env.run_code(&["sync", "--refresh"], 1);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        text.contains("target covata-down (covata): FAILED"),
        "{text}"
    );
    assert!(
        text.contains("Failed: covata-down could not be synced"),
        "{text}"
    );
    // The reachable target was applied all the same.
    assert_eq!(env.fake.users().len(), 3);
    let store = env.store().await;
    let run = &store.list_runs(1).await.unwrap()[0];
    assert_eq!(run.status, dirsync::store::RunStatus::Failed);
    assert_eq!(run.applied, 3);
}

/// A source outage with default safety settings: an empty export (header only) and one with
/// 40 % of the users missing are blocked (exit 3), nobody is disabled on the target, the report
/// and the log say which rule; `--force` then applies the shrunken source.
#[tokio::test(flavor = "multi_thread")]
async fn empty_or_shrunken_source_blocks_sync_and_force_applies() {
    let env = Env::new(Backend::Sqlite, &users(50)).await;
    env.run_code(&["sync"], 0);
    assert_eq!(env.fake.users().len(), 50);
    for (what, body, rule) in [
        ("empty", String::new(), "min_source_users"),
        ("40 % fewer", users(30), "max_source_drop_percent"),
    ] {
        env.write_csv(&body);
        env.fake.clear_requests();
        let o = env.run(&["sync"]);
        assert_eq!(code(&o), 3, "{what}: {}", out(&o));
        assert!(stdout(&o).contains("BLOCKED"), "{what}: {}", out(&o));
        assert!(
            stdout(&o).contains(rule),
            "{what}: report names {rule}: {}",
            out(&o)
        );
        assert!(
            stderr(&o).contains("blocked by safety policy"),
            "{what}: {}",
            out(&o)
        );
        assert!(
            stderr(&o).contains(rule),
            "{what}: log names {rule}: {}",
            out(&o)
        );
        assert!(
            env.fake.users().iter().all(|u| u.enabled),
            "{what}: somebody was disabled"
        );
        assert!(
            env.fake
                .requests()
                .iter()
                .all(|r| r.method == "GET" || r.path.contains("token")),
            "{what}: a change was sent: {:?}",
            env.fake.requests()
        );
    }
    env.run_code(&["sync", "--force"], 0);
    let fake_users = env.fake.users();
    assert_eq!(fake_users.iter().filter(|u| u.enabled).count(), 30);
    assert_eq!(fake_users.iter().filter(|u| !u.enabled).count(), 20);
}

/// First contact with an existing tenant: `plan` and `sync` list the target once and report the
/// source users whose accounts exist (by login) as "exists, not owned: adopt first"; `sync`
/// sends no create for them and remembers them as not owned; `adopt` then takes them.
#[tokio::test(flavor = "multi_thread")]
async fn existing_tenant_is_not_sent_creates() {
    let env = Env::new(Backend::Sqlite, &users(6)).await;
    let hand2 = env.fake.insert_user(FakeUser {
        first_name: Some("Hand".into()),
        ..FakeUser::new("User2@Example.com", &["ROLE_ORIGINATOR"])
    });
    let hand4 = env
        .fake
        .insert_user(FakeUser::new("user4@example.com", &["ROLE_COLLABORATOR"]));
    env.fake.insert_user(FakeUser::new(
        "stranger@example.com",
        &["ROLE_COLLABORATOR"],
    ));

    // The dry run: 4 creates, 2 held back, nothing written but the run row.
    let o = env.run_code(&["plan", "--format", "json"], 2);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let t = &report["targets"][0];
    assert_eq!(t["summary"]["create"], 4, "{t}");
    assert_eq!(t["summary"]["exists_unowned"], 2, "{t}");
    let held: Vec<(String, String)> = str_fields(&t["existing"], ["key", "remote_id"])
        .into_iter()
        .map(|[key, remote_id]| (key, remote_id))
        .collect();
    assert_eq!(
        held,
        vec![
            ("E00002".to_string(), hand2.clone()),
            ("E00004".to_string(), hand4.clone())
        ]
    );
    assert!(
        t["ops"]
            .as_array()
            .unwrap()
            .iter()
            .all(|op| op["key"] != "E00002" && op["key"] != "E00004"),
        "{t}"
    );
    let o = env.run_code(&["plan"], 2);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        text.contains("2 accounts already exist on the target, not owned by dirsync"),
        "{text}"
    );
    assert!(
        text.contains("E00002 (User2@Example.com)") || text.contains("E00002 (user2@example.com)"),
        "{text}"
    );
    assert!(text.contains("exists, not owned: adopt first"), "{text}");
    let store = env.store().await;
    assert!(store.load_accounts("covata").await.unwrap().is_empty());
    assert_eq!(env.fake.create_attempts(), 0);

    // The sync: exactly the 4 new accounts, no conflict collected.
    env.run_code(&["sync"], 0);
    assert_eq!(
        env.fake.create_attempts(),
        4,
        "{:?}",
        env.fake.api_requests()
    );
    assert_eq!(env.fake.users().len(), 7);
    assert_eq!(
        env.fake.user(&hand2).unwrap().first_name.as_deref(),
        Some("Hand")
    );
    let accounts = store.load_accounts("covata").await.unwrap();
    assert_eq!(accounts.len(), 6);
    for a in &accounts {
        match a.key.as_str() {
            "E00002" => {
                assert!(!a.owned);
                assert_eq!(a.remote_id.as_deref(), Some(hand2.as_str()));
            }
            "E00004" => {
                assert!(!a.owned);
                assert_eq!(a.remote_id.as_deref(), Some(hand4.as_str()));
            }
            _ => assert!(a.owned && a.remote_id.is_some(), "{a:?}"),
        }
    }

    // Later runs: no create for them either; the plan points to adopt.
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    assert!(
        env.fake.api_requests().is_empty(),
        "{:?}",
        env.fake.api_requests()
    );
    env.run_code(&["adopt", "--target", "covata"], 0);
    let accounts = store.load_accounts("covata").await.unwrap();
    assert!(accounts.iter().all(|a| a.owned), "{accounts:?}");
    // Adopted: the hand-made names are now corrected like any owned account's.
    env.run_code(&["sync"], 0);
    assert_eq!(
        env.fake.user(&hand2).unwrap().first_name.as_deref(),
        Some("First2")
    );
    assert_eq!(env.fake.users().len(), 7);
}

/// First contact when the target's accounts cannot be listed: `sync` fails the target and sends
/// nothing (it cannot tell which creates would collide); `plan` still plans and says so.
#[tokio::test(flavor = "multi_thread")]
async fn first_contact_without_a_listing_sends_nothing() {
    let env = Env::new(Backend::Sqlite, &users(3)).await;
    env.write_config("max_retries = 1");
    env.fake
        .insert_user(FakeUser::new("user2@example.com", &["ROLE_ORIGINATOR"]));
    env.fake.inject(
        "GET",
        PathMatch::exact("/api/v1/users"),
        Fault::Status(500),
        100,
    );
    let o = env.run_code(&["sync"], 1);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        text.contains("cannot list the existing accounts before a first sync"),
        "{text}"
    );
    assert_eq!(env.fake.create_attempts(), 0);
    assert_eq!(env.fake.users().len(), 1);
    let o = env.run_code(&["plan"], 2);
    assert_has(&stdout(&o), "existing accounts not checked");
    // The target answers again: the next sync holds user2 back and creates the others.
    env.fake.clear_faults();
    env.run_code(&["sync"], 0);
    assert_eq!(env.fake.create_attempts(), 2);
    assert_eq!(env.fake.users().len(), 3);
}
