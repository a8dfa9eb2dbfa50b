//! `dirsync drift` and `dirsync sync --refresh` against the fake Covata server and a real
//! store: hand edits in the fake are reported (with GET requests only) and corrected.

use crate::support::cmd::{assert_has, out, stderr, stdout};
use std::process::Output;

use serde_json::Value;

use crate::support::covata::{FakeCovata, FakeUser};
use crate::support::env::Backend;

use crate::support::env::{USERS_HEADER as HEADER, user_rows};

crate::support::env::env_with_fake!(Env, FakeCovata, HEADER, new);

fn users(n: usize) -> String {
    user_rows(1..=n, |i| i == 1)
}

impl Env {
    fn write_config(&self, extra: &str) {
        self.write_covata_config(&self.fake.base_url(), extra);
    }

    /// Non-token requests other than GET, sorted.
    fn writes(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .fake
            .api_requests()
            .into_iter()
            .filter(|(m, _)| m != "GET")
            .collect();
        v.sort();
        v
    }
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", out(o)))
}

fn keys(v: &Value, list: &str, field: &str) -> Vec<String> {
    v[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {v}"))
        .iter()
        .map(|e| e[field].as_str().unwrap_or("").to_string())
        .collect()
}

/// The four hand edits: user2's last name, user1's admin role removed, an account created,
/// user4 deleted. Returns (user1 id, user2 id, user4 id, hand-made id).
fn hand_edits(env: &Env) -> (String, String, String, String) {
    let u1 = env.fake.user_by_email("user1@example.com").unwrap();
    let u2 = env.fake.user_by_email("user2@example.com").unwrap();
    let u4 = env.fake.user_by_email("user4@example.com").unwrap();
    assert_eq!(u1.roles, vec!["ROLE_SYSTEM_ADMIN".to_string()]);
    env.fake
        .update_user(&u2.id, |u| u.last_name = Some("Edited".into()));
    env.fake.update_user(&u1.id, |u| u.roles.clear());
    let mut hand = FakeUser::new("hand@example.com", &["ROLE_COLLABORATOR"]);
    hand.first_name = Some("Hand".into());
    let hand_id = env.fake.insert_user(hand);
    env.fake.remove_user(&u4.id).unwrap();
    (u1.id, u2.id, u4.id, hand_id)
}

async fn drift_and_refresh(backend: Backend) {
    let env = Env::new(backend, &users(5)).await;
    env.run_code(&["sync"], 0);
    assert_eq!(env.fake.users().len(), 5);

    // No hand edits yet: no drift.
    env.fake.clear_requests();
    let o = env.run_code(&["drift"], 0);
    assert!(stdout(&o).contains("No drift."), "{}", out(&o));
    assert!(env.writes().is_empty(), "{:?}", env.fake.api_requests());

    let (u1, u2, u4, hand_id) = hand_edits(&env);
    let store = env.store().await;
    let before = store.load_accounts("covata").await.unwrap();

    // Text: exactly the four.
    env.fake.clear_requests();
    let o = env.run_code(&["drift"], 2);
    let text = stdout(&o);
    assert!(
        text.contains(
            "target covata (covata): 5 remote accounts, 5 owned; 2 changed by hand, 1 deleted remotely, 1 not owned by dirsync"
        ),
        "{}",
        out(&o)
    );
    assert!(
        text.contains(&format!(
            "~ E00001  user1@example.com  {u1}  (changed by hand)"
        )),
        "{text}"
    );
    assert!(text.contains("roles removed: ROLE_SYSTEM_ADMIN"), "{text}");
    assert!(
        text.contains(&format!(
            "~ E00002  user2@example.com  {u2}  (changed by hand)"
        )),
        "{text}"
    );
    assert!(text.contains("lastName: \"Last2\" -> \"Edited\""), "{text}");
    assert!(
        text.contains(&format!(
            "- E00004  user4@example.com  {u4}  (deleted on the target)"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "? -  hand@example.com  {hand_id}  (not managed by dirsync)"
        )),
        "{text}"
    );
    assert_eq!(text.matches("  ~ ").count(), 2, "{text}");
    assert!(env.writes().is_empty(), "{:?}", env.fake.api_requests());
    assert!(!env.fake.api_requests().is_empty());

    // JSON: the same four, versioned.
    let o = env.run_code(&["drift", "--format", "json", "--target", "covata"], 2);
    let v = json(&o);
    assert_eq!(v["schema"], "dirsync.drift");
    assert_eq!(v["version"], 1);
    assert_eq!(v["drift"], true);
    let t = &v["targets"][0];
    assert_eq!(t["name"], "covata");
    assert_eq!(keys(t, "changed", "key"), vec!["E00001", "E00002"]);
    assert_eq!(t["changed"][0]["roles_removed"][0], "ROLE_SYSTEM_ADMIN");
    assert_eq!(t["changed"][0]["fields"].as_array().unwrap().len(), 0);
    assert_eq!(
        t["changed"][1]["fields"],
        serde_json::json!([{"field": "lastName", "recorded": "Last2", "remote": "Edited"}])
    );
    assert_eq!(keys(t, "deleted", "key"), vec!["E00004"]);
    assert_eq!(keys(t, "unowned", "login"), vec!["hand@example.com"]);
    assert_eq!(keys(t, "unowned", "remote_id"), vec![hand_id.clone()]);
    let o = env.run_code(&["drift", "--format", "markdown"], 2);
    assert!(stdout(&o).contains("| deleted | E00004 |"), "{}", out(&o));
    assert!(env.writes().is_empty(), "{:?}", env.fake.api_requests());
    // Drift records nothing.
    assert_eq!(store.load_accounts("covata").await.unwrap(), before);

    // sync --refresh: the field and the role corrected; nothing else sent.
    env.fake.clear_requests();
    let o = env.run_code(&["sync", "--refresh", "--format", "json"], 0);
    let mut expected = vec![
        ("PUT".to_string(), format!("/api/v1/users/{u1}")),
        ("PUT".to_string(), format!("/api/v1/users/{u2}")),
    ];
    expected.sort();
    assert_eq!(env.writes(), expected, "{}", out(&o));
    let v = json(&o);
    let refresh = &v["targets"][0]["refresh"];
    assert_eq!(refresh["corrected_drift"], 2, "{v}");
    assert_eq!(refresh["drifted"], serde_json::json!(["E00001", "E00002"]));
    assert_eq!(refresh["deleted_remotely"], serde_json::json!(["E00004"]));
    assert_eq!(refresh["recreated"], serde_json::json!([]));
    assert_eq!(refresh["unowned"], 1);
    assert_eq!(
        env.fake.user(&u2).unwrap().last_name.as_deref(),
        Some("Last2")
    );
    assert_eq!(
        env.fake.user(&u1).unwrap().roles,
        vec!["ROLE_SYSTEM_ADMIN".to_string()]
    );
    let hand = env.fake.user(&hand_id).unwrap();
    assert_eq!(hand.first_name.as_deref(), Some("Hand"));
    assert_eq!(hand.roles, vec!["ROLE_COLLABORATOR".to_string()]);
    assert!(env.fake.user_by_email("user4@example.com").is_none());
    assert_eq!(env.fake.users().len(), 5);

    // Afterwards: only the hand-made account and the deleted one.
    let o = env.run_code(&["drift", "--format", "json"], 2);
    let t = &json(&o)["targets"][0];
    assert!(t["changed"].as_array().unwrap().is_empty(), "{t}");
    assert_eq!(keys(t, "deleted", "key"), vec!["E00004"]);
    assert_eq!(keys(t, "unowned", "login"), vec!["hand@example.com"]);

    // With recreate_deleted = true, --refresh creates it again.
    env.write_config("recreate_deleted = true");
    env.fake.clear_requests();
    let o = env.run_code(&["sync", "--refresh", "--format", "json"], 0);
    assert_eq!(
        env.writes(),
        vec![("POST".to_string(), "/api/v1/users".to_string())],
        "{}",
        out(&o)
    );
    let v = json(&o);
    assert_eq!(
        v["targets"][0]["refresh"]["recreated"],
        serde_json::json!(["E00004"])
    );
    let again = env.fake.user_by_email("user4@example.com").unwrap();
    assert_ne!(again.id, u4);
    assert_eq!(again.last_name.as_deref(), Some("Last4"));
    let row = crate::support::cmd::recorded(&*store, "covata", "E00004").await;
    assert_eq!(row.remote_id.as_deref(), Some(again.id.as_str()));
    assert!(row.owned);

    // Now only the account dirsync does not own.
    env.fake.clear_requests();
    let o = env.run_code(&["drift"], 2);
    assert!(
        stdout(&o).contains("0 changed by hand, 0 deleted remotely, 1 not owned by dirsync"),
        "{}",
        out(&o)
    );
    assert!(env.writes().is_empty(), "{:?}", env.fake.api_requests());
    // And a refresh with nothing to correct sends only the listing.
    env.run_code(&["sync", "--refresh"], 0);
    assert!(env.writes().is_empty(), "{:?}", env.fake.api_requests());
}

crate::support::env::on_both_backends!(
    drift_reports_hand_edits_and_refresh_corrects_them_sqlite,
    drift_reports_hand_edits_and_refresh_corrects_them_postgres,
    drift_and_refresh
);

#[tokio::test(flavor = "multi_thread")]
async fn refresh_conflicts_with_dry_run_and_recreate_deleted_must_be_a_bool() {
    let env = Env::new(Backend::Sqlite, &users(2)).await;
    let o = env.run_code(&["sync", "--refresh", "--dry-run"], 2);
    assert_has(&stderr(&o), "--refresh");
    env.write_config("recreate_deleted = \"yes\"");
    let o = env.run_code(&["drift"], 1);
    assert_has(&stderr(&o), "recreate_deleted");
    assert!(env.fake.requests().is_empty());
}
