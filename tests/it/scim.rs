//! `dirsync sync` / `adopt` / `drift` / `check` against a real SCIM server (`scim2-server`, a
//! child process per test): what the server holds afterwards (users, attributes, groups and
//! their members), a no-change run that writes nothing, and a kill mid-run without duplicates.

use std::time::Duration;

use serde_json::json;

use crate::support::cmd::{code, out, stdout};
use crate::support::env::{Backend, TestEnv, suite_env};
use crate::support::scim::{Scim2Server, TOKEN};

const HEADER: &str = "id,email,first,last,status,groups\n";
const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

suite_env!(Env {
    server: Scim2Server
});

impl Env {
    async fn new(backend: Backend, csv: &str) -> Env {
        let env = Env {
            server: Scim2Server::start(),
            env: TestEnv::new(backend).await,
        };
        env.write_csv(csv);
        env.write_config("");
        env
    }

    fn write_csv(&self, body: &str) {
        self.env.write_users_csv(HEADER, body);
    }

    /// The `wiki` target: the token in a file, groups created as needed, `admins` →
    /// `wiki-admins`, everyone else `wiki-users`; `extra`: more target keys.
    fn write_config(&self, extra: &str) {
        std::fs::write(self.path("wiki-token"), format!("{TOKEN}\n")).unwrap();
        let url = self.server.base_url();
        let more = format!(
            "create_groups = true\ndefault_roles = [\"wiki-users\"]\n{extra}\n\
             [target.fields]\n\"{ENT}:employeeNumber\" = \"{{key}}\"\n\
             [[target.roles]]\ngroup = \"admins\"\nroles = [\"wiki-admins\"]"
        );
        self.config()
            .csv("email = \"email\"")
            .no_disable_limits()
            .target(
                "wiki",
                "scim",
                &[
                    ("base_url", &url),
                    ("token_file", "wiki-token"),
                    ("max_backoff", "1s"),
                ],
                &more,
            )
            .write();
    }

    fn id_of(&self, user_name: &str) -> String {
        let users = self.server.users();
        let u = users
            .get(user_name)
            .unwrap_or_else(|| panic!("no user {user_name} on the server: {users:?}"));
        u["id"].as_str().unwrap().to_string()
    }
}

const FIVE: &str = "\
E1,jane@example.com,Jane,Doe,active,admins
E2,bob@example.com,Bob,Smith,active,staff
E3,carol@example.com,Carol,Jones,active,staff
E4,dave@example.com,Dave,King,active,staff
E5,eve@example.com,Eve,Evans,active,staff
";

async fn lifecycle(backend: Backend) {
    let env = Env::new(backend, FIVE).await;

    // Creates: the mapped attributes, active, and the groups (created on demand).
    let o = env.run_code(&["sync"], 0);
    let users = env.server.users();
    assert_eq!(users.len(), 5, "{}", out(&o));
    let jane = &users["jane@example.com"];
    assert_eq!(jane["externalId"], "E1");
    assert_eq!(jane["name"]["givenName"], "Jane");
    assert_eq!(jane["name"]["familyName"], "Doe");
    assert_eq!(jane["displayName"], "Jane Doe");
    assert_eq!(jane["emails"][0]["value"], "jane@example.com");
    assert_eq!(jane["emails"][0]["type"], "work");
    assert_eq!(jane["emails"][0]["primary"], true);
    assert_eq!(jane[ENT]["employeeNumber"], "E1");
    assert_eq!(jane["active"], true);
    let ids = |names: &[&str]| {
        let mut v: Vec<String> = names.iter().map(|n| env.id_of(n)).collect();
        v.sort();
        v
    };
    assert_eq!(
        env.server.group_members("wiki-admins"),
        ids(&["jane@example.com"])
    );
    assert_eq!(
        env.server.group_members("wiki-users"),
        ids(&[
            "bob@example.com",
            "carol@example.com",
            "dave@example.com",
            "eve@example.com"
        ])
    );
    let store = env.store().await;
    let rows = store.load_accounts("wiki").await.unwrap();
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r.owned && r.enabled));
    let jane_row = rows.iter().find(|r| r.key == "E1").unwrap();
    assert_eq!(
        jane_row.remote_id.as_deref(),
        Some(env.id_of("jane@example.com").as_str())
    );

    // No change: nothing to do, and no resource's version moves (nothing written).
    let before = env.server.versions();
    env.assert_nothing_to_do(&["sync"]);
    assert_eq!(env.server.versions(), before);

    // A rename, a login (userName + email) change, a role change, a disable.
    let bob_id = env.id_of("bob@example.com");
    let carol_id = env.id_of("carol@example.com");
    let changed = FIVE
        .replace("Jane,Doe", "Jane,Roe")
        .replace("bob@example.com", "bob.smith@example.com")
        .replace("Carol,Jones,active,staff", "Carol,Jones,active,admins")
        .replace("Dave,King,active", "Dave,King,disabled");
    env.write_csv(&changed);
    let o = env.run_code(&["sync"], 0);
    let users = env.server.users();
    assert_eq!(users.len(), 5, "{}", out(&o));
    assert_eq!(users["jane@example.com"]["name"]["familyName"], "Roe");
    assert_eq!(users["jane@example.com"]["displayName"], "Jane Roe");
    // The same resource renamed, never deleted and created.
    let bob = &users["bob.smith@example.com"];
    assert_eq!(bob["id"].as_str(), Some(bob_id.as_str()));
    assert_eq!(bob["emails"][0]["value"], "bob.smith@example.com");
    assert_eq!(users["dave@example.com"]["active"], false);
    assert!(env.server.group_members("wiki-admins").contains(&carol_id));
    assert!(!env.server.group_members("wiki-users").contains(&carol_id));
    assert_eq!(env.server.group_members("wiki-users").len(), 3);

    // Enabled again; Eve leaves the source and is deleted.
    env.write_config("on_missing = \"delete\"");
    let again = changed
        .replace("Dave,King,disabled", "Dave,King,active")
        .replace("E5,eve@example.com,Eve,Evans,active,staff\n", "");
    env.write_csv(&again);
    let o = env.run_code(&["sync"], 0);
    let users = env.server.users();
    assert_eq!(users.len(), 4, "{}", out(&o));
    assert!(!users.contains_key("eve@example.com"));
    assert_eq!(users["dave@example.com"]["active"], true);
    let rows = store.load_accounts("wiki").await.unwrap();
    assert!(rows.iter().all(|r| r.key != "E5" || !r.owned), "{rows:?}");
    env.assert_nothing_to_do(&["sync"]);
}
crate::support::env::on_both_backends!(
    lifecycle_on_a_real_scim_server_sqlite,
    lifecycle_on_a_real_scim_server_postgres,
    lifecycle
);

/// An account made by hand before dirsync's first run is held back (not owned), adopted by
/// `dirsync adopt`, then brought to the mapped values; a hand change is reported by
/// `dirsync drift`; `check` says what the server supports.
#[tokio::test(flavor = "multi_thread")]
async fn adoption_drift_and_check() {
    let env = Env::new(Backend::Sqlite, FIVE).await;
    env.server.call(
        "POST",
        "/Users",
        Some(&json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "bob@example.com",
            "nickName": "kept",
            "emails": [{"value": "bob@example.com", "type": "work", "primary": true}],
        })),
    );
    let hand_id = env.id_of("bob@example.com");

    let o = env.run_code(&["check"], 0);
    assert!(
        stdout(&o).contains("target wiki: server supports: PATCH yes, Bulk yes"),
        "{}",
        out(&o)
    );

    let o = env.run(&["sync"]);
    assert!(matches!(code(&o), 0 | 4), "{}", out(&o));
    assert_eq!(env.server.users().len(), 5, "no second bob: {}", out(&o));
    let store = env.store().await;
    let bob = crate::support::cmd::recorded(store.as_ref(), "wiki", "E2").await;
    assert!(!bob.owned, "{bob:?}");

    let o = env.run_code(&["adopt", "--target", "wiki"], 0);
    let bob = crate::support::cmd::recorded(store.as_ref(), "wiki", "E2").await;
    assert!(bob.owned, "{}", out(&o));
    assert_eq!(bob.remote_id.as_deref(), Some(hand_id.as_str()));
    env.run_code(&["sync"], 0);
    let users = env.server.users();
    let bob = &users["bob@example.com"];
    assert_eq!(bob["id"].as_str(), Some(hand_id.as_str()));
    assert_eq!(bob["name"]["givenName"], "Bob");
    assert_eq!(bob["externalId"], "E2");
    // What dirsync does not manage is left as it was.
    assert_eq!(bob["nickName"], "kept");
    assert!(env.server.group_members("wiki-users").contains(&hand_id));
    env.assert_nothing_to_do(&["sync"]);

    // A change by hand: drift reports it (exit 2) and changes nothing.
    let carol = env.id_of("carol@example.com");
    env.server.call(
        "PATCH",
        &format!("/Users/{carol}"),
        Some(&json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "name.givenName", "value": "Karol"}],
        })),
    );
    let o = env.run_code(&["drift"], 2);
    let text = stdout(&o);
    assert!(text.contains("E3") && text.contains("Karol"), "{}", out(&o));
    assert_eq!(
        env.server.users()["carol@example.com"]["name"]["givenName"],
        "Karol"
    );
}

/// `dirsync sync` killed (SIGKILL) once the server holds some of 120 new users: the next run
/// finds the created ones (no duplicate, no conflict) and creates the rest.
#[tokio::test(flavor = "multi_thread")]
async fn a_kill_mid_run_leaves_no_duplicate() {
    let rows: String = (1..=120)
        .map(|i| format!("E{i:04},user{i}@example.com,First{i},Last{i},active,staff\n"))
        .collect();
    let env = Env::new(Backend::Sqlite, &rows).await;
    env.write_config("concurrency = 2");
    let mut child = env
        .command(&["sync"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait (bounded) until some users exist, then kill.
    let mut killed = false;
    for _ in 0..3000 {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if env.server.user_count() >= 20 {
            child.kill().unwrap();
            killed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.wait();
    assert!(
        killed,
        "the first run ended before the server held 20 users"
    );
    let o = env.run_code(&["sync"], 0);
    let users = env.server.users();
    assert_eq!(users.len(), 120, "killed: {killed}; {}", out(&o));
    let store = env.store().await;
    let accounts = store.load_accounts("wiki").await.unwrap();
    assert_eq!(accounts.len(), 120);
    assert!(
        accounts.iter().all(|a| a.owned),
        "a create came back as a conflict"
    );
    assert!(crate::support::cmd::nothing_unfinished(store.as_ref(), "wiki").await);
    // A kill between a user's POST and its group PATCH leaves the membership missing while
    // the row records it: `sync --refresh` compares with the server and adds it.
    env.run_code(&["sync", "--refresh"], 0);
    assert_eq!(env.server.group_members("wiki-users").len(), 120);
    env.assert_nothing_to_do(&["sync"]);
}
