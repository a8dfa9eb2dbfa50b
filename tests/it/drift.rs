//! `dirsync drift` and `dirsync sync --refresh` against the fake Covata server and a real
//! store: hand edits in the fake are reported (with GET requests only) and corrected.

use crate::support::cmd::{code, out, stdout};
use std::path::PathBuf;
use std::process::Output;

use dirsync::store::Store;
use serde_json::Value;

use crate::support::covata::{self, FakeCovata, FakeUser};

const HEADER: &str = "id,email,first,last,status,groups\n";

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

struct Env {
    dir: tempfile::TempDir,
    fake: FakeCovata,
    db_url: Option<String>,
}

fn users(n: usize) -> String {
    (1..=n)
        .map(|i| {
            let groups = if i == 1 { "staff;admins" } else { "staff" };
            format!("E{i:05},user{i}@example.com,First{i},Last{i},active,{groups}\n")
        })
        .collect()
}

impl Env {
    async fn new(backend: Backend, csv: &str) -> Env {
        let fake = FakeCovata::start().await;
        let db_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(crate::support::pg::pg_url().await),
        };
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
            fake,
            db_url,
        };
        std::fs::write(env.dir.path().join("users.csv"), format!("{HEADER}{csv}")).unwrap();
        env.write_config("");
        env
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("dirsync.toml")
    }

    fn write_config(&self, extra: &str) {
        let state = match &self.db_url {
            Some(url) => format!("database_url = \"{url}\""),
            None => "path = \"state.db\"".to_string(),
        };
        std::fs::write(
            self.dir.path().join("client-secret"),
            format!("{}\n", covata::CLIENT_SECRET),
        )
        .unwrap();
        let text = format!(
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
groups = "groups"

[[target]]
name = "covata"
kind = "covata"
base_url = "{base}"
username = "{user}"
password = "{password}"
client_id = "{client}"
client_secret_file = "client-secret"
max_backoff = "2s"
{extra}
[[target.roles]]
group = "admins"
roles = ["ROLE_SYSTEM_ADMIN"]
"#,
            base = self.fake.base_url(),
            user = covata::USERNAME,
            password = covata::PASSWORD,
            client = covata::CLIENT_ID,
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    fn run(&self, args: &[&str]) -> Output {
        crate::support::cmd::dirsync(&self.config_path(), args)
            .output()
            .unwrap()
    }

    async fn store(&self) -> Box<dyn Store> {
        crate::support::cmd::store(&self.config_path()).await
    }

    /// Non-token requests the fake received: (method, path).
    fn api_requests(&self) -> Vec<(String, String)> {
        self.fake
            .requests()
            .into_iter()
            .filter(|r| !r.path.starts_with("/api/oauth"))
            .map(|r| (r.method, r.path))
            .collect()
    }

    /// Non-token requests other than GET, sorted.
    fn writes(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
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
    let o = env.run(&["sync"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert_eq!(env.fake.users().len(), 5);

    // No hand edits yet: no drift.
    env.fake.clear_requests();
    let o = env.run(&["drift"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(stdout(&o).contains("No drift."), "{}", out(&o));
    assert!(env.writes().is_empty(), "{:?}", env.api_requests());

    let (u1, u2, u4, hand_id) = hand_edits(&env);
    let store = env.store().await;
    let before = store.load_accounts("covata").await.unwrap();

    // Text: exactly the four.
    env.fake.clear_requests();
    let o = env.run(&["drift"]);
    assert_eq!(code(&o), 2, "{}", out(&o));
    let text = stdout(&o);
    assert!(
        text.contains(
            "target covata (covata): 5 remote account(s), 5 owned; 2 changed by hand, 1 deleted remotely, 1 not owned by dirsync"
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
    assert!(env.writes().is_empty(), "{:?}", env.api_requests());
    assert!(!env.api_requests().is_empty());

    // JSON: the same four, versioned.
    let o = env.run(&["drift", "--format", "json", "--target", "covata"]);
    assert_eq!(code(&o), 2, "{}", out(&o));
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
    let o = env.run(&["drift", "--format", "markdown"]);
    assert_eq!(code(&o), 2, "{}", out(&o));
    assert!(stdout(&o).contains("| deleted | E00004 |"), "{}", out(&o));
    assert!(env.writes().is_empty(), "{:?}", env.api_requests());
    // Drift records nothing.
    assert_eq!(store.load_accounts("covata").await.unwrap(), before);

    // sync --refresh: the field and the role corrected; nothing else sent.
    env.fake.clear_requests();
    let o = env.run(&["sync", "--refresh", "--format", "json"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
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
    let o = env.run(&["drift", "--format", "json"]);
    assert_eq!(code(&o), 2, "{}", out(&o));
    let t = &json(&o)["targets"][0];
    assert!(t["changed"].as_array().unwrap().is_empty(), "{t}");
    assert_eq!(keys(t, "deleted", "key"), vec!["E00004"]);
    assert_eq!(keys(t, "unowned", "login"), vec!["hand@example.com"]);

    // With recreate_deleted = true, --refresh creates it again.
    env.write_config("recreate_deleted = true");
    env.fake.clear_requests();
    let o = env.run(&["sync", "--refresh", "--format", "json"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
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
    let row = store
        .load_accounts("covata")
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.key == "E00004")
        .unwrap();
    assert_eq!(row.remote_id.as_deref(), Some(again.id.as_str()));
    assert!(row.owned);

    // Now only the account dirsync does not own.
    env.fake.clear_requests();
    let o = env.run(&["drift"]);
    assert_eq!(code(&o), 2, "{}", out(&o));
    assert!(
        stdout(&o).contains("0 changed by hand, 0 deleted remotely, 1 not owned by dirsync"),
        "{}",
        out(&o)
    );
    assert!(env.writes().is_empty(), "{:?}", env.api_requests());
    // And a refresh with nothing to correct sends only the listing.
    let o = env.run(&["sync", "--refresh"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(env.writes().is_empty(), "{:?}", env.api_requests());
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_reports_hand_edits_and_refresh_corrects_them_postgres() {
    drift_and_refresh(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_reports_hand_edits_and_refresh_corrects_them_sqlite() {
    drift_and_refresh(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_conflicts_with_dry_run_and_recreate_deleted_must_be_a_bool() {
    let env = Env::new(Backend::Sqlite, &users(2)).await;
    let o = env.run(&["sync", "--refresh", "--dry-run"]);
    assert_eq!(code(&o), 2, "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--refresh"),
        "{}",
        out(&o)
    );
    env.write_config("recreate_deleted = \"yes\"");
    let o = env.run(&["drift"]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("recreate_deleted"),
        "{}",
        out(&o)
    );
    assert!(env.fake.requests().is_empty());
}
