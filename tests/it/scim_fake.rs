//! `dirsync sync` / `drift` against dirsync's strict SCIM fake: the exchange log shows what is
//! sent when the server requires ETags, has no PATCH, has Bulk with `maxOperations = 10`,
//! pages at 50, answers 429 or 200 on create; and that a role change is one PATCH on the group
//! carrying only the delta.

use serde_json::json;

use crate::support::cmd::{assert_has, out};
use crate::support::env::{Backend, TestEnv, suite_env};
use crate::support::fake::Fault;
use crate::support::scim::TOKEN;
use crate::support::scim_fake::{Exchange, FakeScim, Strictness};

const HEADER: &str = "id,email,first,last,status,groups\n";

suite_env!(Env { fake: FakeScim });

impl Env {
    async fn new(strict: Strictness, csv: &str, extra: &str) -> Env {
        let env = Env {
            fake: FakeScim::start(strict).await,
            env: TestEnv::new(Backend::Sqlite).await,
        };
        env.write_csv(csv);
        let url = env.fake.base_url();
        env.config()
            .csv("email = \"email\"")
            .no_disable_limits()
            .target(
                "app",
                "scim",
                &[("base_url", &url), ("token", TOKEN), ("max_backoff", "1s")],
                &format!(
                    "default_roles = [\"users\"]\n{extra}\n\
                     [[target.roles]]\ngroup = \"admins\"\nroles = [\"admins\"]"
                ),
            )
            .write();
        env
    }

    fn write_csv(&self, body: &str) {
        self.env.write_users_csv(HEADER, body);
    }

    /// The writes of the exchange log.
    fn writes(&self) -> Vec<Exchange> {
        self.fake
            .exchanges()
            .into_iter()
            .filter(Exchange::is_write)
            .collect()
    }

    fn id_of(&self, user_name: &str) -> String {
        self.fake.users()[user_name]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

fn rows(n: usize) -> String {
    (1..=n)
        .map(|i| format!("E{i:04},user{i}@example.com,First{i},Last{i},active,staff\n"))
        .collect()
}

/// ETags required: every user write carries the current version; a stale one (412) is read
/// again once. A role change is one PATCH on each group with only that member.
#[tokio::test(flavor = "multi_thread")]
async fn etags_required_and_role_deltas() {
    let strict = Strictness {
        etag_required: true,
        ..Strictness::default()
    };
    let env = Env::new(strict, &rows(3), "").await;
    let users_group = env.fake.add_group("users", &[]);
    let admins_group = env.fake.add_group("admins", &[]);
    env.run_code(&["sync"], 0);
    assert_eq!(env.fake.users().len(), 3);
    assert_eq!(env.fake.group_members("users").len(), 3);

    // A rename and a role change of user2.
    let u2 = env.id_of("user2@example.com");
    env.write_csv(
        &rows(3)
            .replace("Last1", "Renamed1")
            .replace("Last2,active,staff", "Last2,active,admins"),
    );
    env.fake.inject(
        "PATCH",
        format!("/scim/v2/Users/{}", env.id_of("user1@example.com")).as_str(),
        Fault::Status(412),
        1,
    );
    env.fake.clear_exchanges();
    let o = env.run_code(&["sync"], 0);
    let writes = env.writes();
    // Every group PATCH carries only the delta; the server's 428 (If-Match required) made the
    // first one of the run be sent again with the version.
    let group_patches: Vec<&Exchange> = writes
        .iter()
        .filter(|e| e.path.contains("/Groups/") && e.status == 204)
        .collect();
    assert_eq!(group_patches.len(), 2, "{writes:#?}\n{}", out(&o));
    assert!(group_patches.iter().all(|e| e.if_match.is_some()));
    assert!(
        writes
            .iter()
            .filter(|e| e.path.contains("/Groups/"))
            .all(|e| e.json()["Operations"].as_array().unwrap().len() == 1)
    );
    let operations_on = |group: &str| {
        group_patches
            .iter()
            .find(|e| e.path.ends_with(group))
            .unwrap()
            .json()["Operations"]
            .clone()
    };
    assert_eq!(
        operations_on(&admins_group),
        json!([{"op": "add", "path": "members", "value": [{"value": u2}]}])
    );
    assert_eq!(
        operations_on(&users_group),
        json!([{"op": "remove", "path": format!("members[value eq \"{u2}\"]")}])
    );
    assert_eq!(env.fake.group_members("admins"), vec![u2.clone()]);
    assert_eq!(env.fake.group_members("users").len(), 2);
    // The user PATCHes: If-Match each time; the 412 was followed by a read and one resend.
    let user_patches: Vec<&Exchange> = writes
        .iter()
        .filter(|e| e.path.contains("/Users/"))
        .collect();
    assert_eq!(user_patches.len(), 2, "{user_patches:#?}");
    assert!(user_patches.iter().all(|e| e.if_match.is_some()));
    assert_eq!(user_patches[0].status, 412);
    assert_eq!(user_patches[1].status, 204);
    assert_eq!(
        user_patches[1].json()["Operations"],
        json!([
            {"op": "replace", "path": "displayName", "value": "First1 Renamed1"},
            {"op": "replace", "path": "name.familyName", "value": "Renamed1"},
        ])
    );
    assert_eq!(
        env.fake.users()["user1@example.com"]["name"]["familyName"],
        "Renamed1"
    );
    assert!(
        writes
            .iter()
            .all(|e| e.content_type.as_deref() == Some("application/scim+json"))
    );
}

/// A server without PATCH: updates and disables are GET + PUT of the whole user, keeping the
/// attributes dirsync does not manage; creates answered 200 are creates.
#[tokio::test(flavor = "multi_thread")]
async fn no_patch_server_gets_put_and_200_creates() {
    let strict = Strictness {
        patch: false,
        create_status: 200,
        ..Strictness::default()
    };
    let env = Env::new(strict, &rows(2), "roles_as = \"entitlements\"").await;
    let o = env.run_code(&["sync"], 0);
    let users = env.fake.users();
    assert_eq!(users.len(), 2, "{}", out(&o));
    assert_eq!(
        users["user1@example.com"]["entitlements"],
        json!([{"value": "users"}])
    );
    let store = env.store().await;
    let rows_now = store.load_accounts("app").await.unwrap();
    assert!(rows_now.iter().all(|r| r.owned && r.remote_id.is_some()));

    env.fake.edit_user("user1@example.com", |u| {
        u["nickName"] = json!("by hand");
    });
    env.write_csv(
        &rows(2)
            .replace("Last1", "Renamed1")
            .replace("Last2,active", "Last2,disabled"),
    );
    env.fake.clear_exchanges();
    let o = env.run_code(&["sync"], 0);
    let writes = env.writes();
    assert!(
        writes.iter().all(|e| e.method == "PUT"),
        "{writes:#?}\n{}",
        out(&o)
    );
    assert_eq!(writes.len(), 2);
    let users = env.fake.users();
    let u1 = &users["user1@example.com"];
    assert_eq!(u1["name"]["familyName"], "Renamed1");
    assert_eq!(u1["nickName"], "by hand");
    assert_eq!(u1["entitlements"], json!([{"value": "users"}]));
    assert_eq!(users["user2@example.com"]["active"], false);
}

/// Bulk with maxOperations = 10: 25 disables go in 3 Bulk requests of at most 10, and each
/// operation's own status is its result.
#[tokio::test(flavor = "multi_thread")]
async fn bulk_respects_max_operations() {
    let strict = Strictness {
        bulk_max_operations: Some(10),
        ..Strictness::default()
    };
    let env = Env::new(strict, &rows(30), "").await;
    env.fake.add_group("users", &[]);
    env.run_code(&["sync"], 0);
    let disabled: String = rows(30)
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let l = if i >= 5 {
                l.replace(",active,", ",disabled,")
            } else {
                l.to_string()
            };
            format!("{l}\n")
        })
        .collect();
    env.write_csv(&disabled);
    env.fake.clear_exchanges();
    let o = env.run_code(&["sync"], 0);
    let writes = env.writes();
    assert!(
        writes.iter().all(|e| e.path.ends_with("/Bulk")),
        "{writes:#?}\n{}",
        out(&o)
    );
    assert_eq!(writes.len(), 3);
    assert!(
        writes
            .iter()
            .all(|e| e.json()["Operations"].as_array().unwrap().len() <= 10)
    );
    let users = env.fake.users();
    let inactive = users.values().filter(|u| u["active"] == false).count();
    assert_eq!(inactive, 25);
}

/// Listing pages at 50 (startIndex 1, 51, 101) and a 429 with Retry-After is waited out.
#[tokio::test(flavor = "multi_thread")]
async fn pagination_and_429() {
    let env = Env::new(Strictness::default(), &rows(120), "").await;
    env.fake.add_group("users", &[]);
    env.fake.inject(
        "POST",
        "/scim/v2/Users",
        Fault::Status429 {
            retry_after: Some("1".into()),
        },
        2,
    );
    env.run_code(&["sync"], 0);
    assert_eq!(env.fake.users().len(), 120);
    env.fake.clear_exchanges();
    env.run_code(&["drift"], 0);
    let exchanges = env.fake.exchanges();
    let listings = exchanges
        .iter()
        .filter(|e| e.method == "GET" && e.path.ends_with("/Users"));
    let starts: Vec<String> = listings
        .filter_map(|e| e.query.clone())
        .filter(|q| !q.contains("filter"))
        .collect();
    assert_eq!(starts.len(), 3, "{starts:?}");
    for (q, want) in starts
        .iter()
        .zip(["startIndex=1&", "startIndex=51&", "startIndex=101&"])
    {
        assert!(q.contains(want), "{q}");
    }
}

/// Bad SCIM settings are config errors naming the key: an attribute path that is not one, a
/// reserved attribute, a token together with client credentials, another vendor's key.
#[tokio::test(flavor = "multi_thread")]
async fn bad_settings_name_their_keys() {
    let env = TestEnv::new(Backend::Sqlite).await;
    env.write_users_csv(HEADER, &rows(1));
    env.config()
        .csv("email = \"email\"")
        .raw(
            r#"
[[target]]
name = "app"
kind = "scim"
base_url = "https://scim.example.com/v2"
token = "t"
client_id = "c"
tenant_key = "x"
roles_as = "teams"
[target.fields]
"a.b.c" = "{key}"
active = "true"
"phoneNumbers.mobile" = "{mobile}"
"#,
        )
        .write();
    let o = env.run(&["check", "--offline"]);
    let text = out(&o);
    assert_eq!(crate::support::cmd::code(&o), 1, "{text}");
    for needle in [
        "target[0].fields.a.b.c",
        "target[0].fields.active",
        "target[0].token",
        "target[0].tenant_key: not a setting of kind scim (only of valuekeep)",
        "target[0].roles_as",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    assert!(!text.contains("phoneNumbers"), "{text}");
}

/// OAuth2 client credentials instead of a static token; `check` reports the server's features
/// and the groups the mapping names that the server lacks (create_groups = false).
#[tokio::test(flavor = "multi_thread")]
async fn client_credentials_and_check() {
    let fake = FakeScim::start(Strictness {
        bulk_max_operations: Some(10),
        ..Strictness::default()
    })
    .await;
    let env = TestEnv::new(Backend::Sqlite).await;
    env.write_users_csv(HEADER, &rows(2));
    let (url, token_url) = (fake.base_url(), fake.token_url());
    let write = |secret: &str| {
        let keys = [
            ("base_url", url.as_str()),
            ("token_url", token_url.as_str()),
            ("client_id", "app"),
            ("client_secret", secret),
        ];
        env.config()
            .csv("email = \"email\"")
            .target("app", "scim", &keys, "default_roles = [\"users\"]")
            .write();
    };
    write("app-secret");
    let o = env.run_code(&["check"], 1);
    let text = out(&o);
    assert_has(
        &text,
        "target app: server supports: PATCH yes, Bulk yes (at most 10 operations",
    );
    assert_has(&text, "roles unknown to the target: users");
    fake.add_group("users", &[]);
    env.run_code(&["check"], 0);
    env.run_code(&["sync"], 0);
    assert_eq!(fake.users().len(), 2);
    assert_eq!(fake.group_members("users").len(), 2);

    // Refused client credentials: the target fails, nothing is sent to it.
    write("wrong");
    env.write_users_csv(HEADER, &rows(3));
    fake.clear_exchanges();
    let o = env.run_code(&["sync"], 1);
    assert!(
        out(&o).contains("refused the client credentials"),
        "{}",
        out(&o)
    );
    assert!(fake.exchanges().iter().all(|e| e.path == "/token"));
    assert_eq!(fake.users().len(), 2);
}
