//! `dirsync sync` / `plan` / `adopt` against the fake Valuekeep server and a real store: what
//! is sent (one call per changed attribute, role deltas, per-user status calls), what the fake
//! ends up holding, pacing and 429s, and OData paging.

use crate::support::cmd::{assert_has, code, out, stdout};
use std::time::{Duration, Instant};

use crate::support::env::Backend;
use crate::support::valuekeep::{self, FakeUser, FakeValuekeep, Fault, PathMatch, users_prefix};

const HEADER: &str = "id,login,email,first,last,status,groups,tech\n";

crate::support::env::env_with_fake!(Env, FakeValuekeep, HEADER);

/// `n` users `E00001..`: login `u1..`, staff (every 10th also admins), not technicians.
fn users(n: usize) -> String {
    (1..=n)
        .map(|i| {
            let groups = if i % 10 == 1 { "staff;admins" } else { "staff" };
            format!("E{i:05},u{i},user{i}@example.com,First{i},Last{i},active,{groups},false\n")
        })
        .collect()
}

impl Env {
    /// The fake without its limiter (tests that exercise it set one).
    async fn new(backend: Backend, csv: &str) -> Env {
        let env = Env::with_csv(backend, csv).await;
        env.fake.set_rate_limit(None);
        env.write_config(Some(1000.0), "");
        env
    }

    /// `rps`: `requests_per_second` (`None`: the Valuekeep default of 1/s); `extra`: more keys
    /// of the `[[target]]` table.
    fn write_config(&self, rps: Option<f64>, extra: &str) {
        let rps = rps
            .map(|r| format!("requests_per_second = {r}"))
            .unwrap_or_default();
        self.config()
            .csv("email = \"email\"\n[source.csv.extra]\nlogin = \"login\"\ntech = \"tech\"")
            .valuekeep(
                &self.fake.base_url(),
                &self.fake.token_url(),
                valuekeep::CLIENT_SECRET,
                &format!(
                    "max_backoff = \"2s\"\n{rps}\n{extra}\n[target.fields]\n\
                     userKey = \"{{login}}\"\nisTechnician = \"{{tech}}\""
                ),
            )
            .role("admins", &["ADMIN"])
            .role("techs", &["TECHNICIAN"])
            .write();
    }

    /// API requests (not the token endpoint) as `(method, path after .../identity/users,
    /// body)`, sorted.
    fn api_calls(&self) -> Vec<(String, String, String)> {
        let mut v: Vec<(String, String, String)> = self
            .fake
            .requests()
            .into_iter()
            .filter(|r| r.path != valuekeep::TOKEN_PATH)
            .map(|r| {
                let path = r.user_path().unwrap_or(&r.path).to_string();
                (r.method, path, r.body)
            })
            .collect();
        v.sort();
        v
    }
}

fn call(method: &str, path: &str, body: &str) -> (String, String, String) {
    (method.to_string(), path.to_string(), body.to_string())
}

fn keys(fake: &FakeValuekeep) -> Vec<String> {
    let mut v: Vec<String> = fake.users().into_iter().map(|u| u.user_key).collect();
    v.sort();
    v
}

const FIVE: &str = "\
E1,jdoe,jane@example.com,Jane,Doe,active,admins,true
E2,bsmith,bob@example.com,Bob,Smith,active,staff,false
E3,cjones,carol@example.com,Carol,Jones,active,staff,false
E4,dking,dave@example.com,Dave,King,active,staff,false
E5,eeve,eve@example.com,Eve,Eve,active,staff;techs,false
";

async fn lifecycle(backend: Backend) {
    let env = Env::new(backend, FIVE).await;

    // First sync: everyone created with the mapped fields and roles, one POST each.
    env.run_code(&["sync"], 0);
    assert_eq!(
        keys(&env.fake),
        vec!["bsmith", "cjones", "dking", "eeve", "jdoe"]
    );
    let jane = env.fake.user_by_key("jdoe").unwrap();
    assert_eq!(jane.name, "Jane Doe");
    assert_eq!(jane.email.as_deref(), Some("jane@example.com"));
    assert!(jane.is_technician && jane.is_active);
    assert_eq!(jane.roles, vec!["ADMIN"]);
    let eve = env.fake.user_by_key("eeve").unwrap();
    assert_eq!(eve.roles, vec!["TECHNICIAN"]);
    assert!(!eve.is_technician);
    assert_eq!(
        env.fake.user_by_key("bsmith").unwrap().roles,
        vec!["REQUESTER"]
    );
    // First contact: one listing of the tenant, then the five creates.
    let calls = env.api_calls();
    assert_eq!(calls.len(), 6, "{calls:?}");
    assert_eq!(calls[0].0, "GET", "{calls:?}");
    assert!(
        calls[1..]
            .iter()
            .all(|(m, p, _)| m == "POST" && p.is_empty())
    );
    assert!(env.fake.requests().iter().all(|r| r.status != 401));
    assert_eq!(env.fake.token_grants(), 1);
    let store = env.store().await;
    let accounts = store.load_accounts("vk").await.unwrap();
    assert_eq!(accounts.len(), 5);
    let row = |key: &str, accounts: &[dirsync::store::RecordedAccount]| {
        accounts.iter().find(|a| a.key == key).unwrap().clone()
    };
    assert_eq!(
        row("E1", &accounts).remote_id.as_deref(),
        Some(jane.id.as_str())
    );
    assert!(accounts.iter().all(|a| a.owned && a.enabled));

    // Second sync, nothing changed: not a single request, not even a token.
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    assert!(env.fake.requests().is_empty(), "{:?}", env.fake.requests());

    // Rename, email change, role delta (staff → admins), source disable, userKey change.
    let changed = FIVE
        .replace("Jane,Doe", "Jane,Roe")
        .replace("bob@example.com", "bob.smith@example.com")
        .replace("Carol,Jones,active,staff", "Carol,Jones,active,admins")
        .replace("Dave,King,active", "Dave,King,disabled")
        .replace("E5,eeve,", "E5,eve.e,");
    env.write_csv(&changed);
    env.fake.clear_requests();
    let o = env.run_code(&["sync"], 0);
    let carol = env.fake.user_by_key("cjones").unwrap();
    let dave = env.fake.user_by_key("dking").unwrap();
    let mut expected = vec![
        call("PUT", "/jdoe/name", "\"Jane Roe\""),
        call("PUT", "/bsmith/email", "\"bob.smith@example.com\""),
        // The role change needs the userKey of the recorded id: one lookup, then the delta.
        call("GET", &format!("/{}", carol.id), ""),
        call("POST", "/cjones/roles/add", "[\"ADMIN\"]"),
        call("POST", "/cjones/roles/remove", "[\"REQUESTER\"]"),
        // The disable looks the key up by the recorded id too.
        call("GET", &format!("/{}", dave.id), ""),
        call("PUT", "/dking/isActive", "false"),
        call("PUT", "/eeve/userKey", "\"eve.e\""),
    ];
    expected.sort();
    assert_eq!(env.api_calls(), expected, "{}", out(&o));
    assert_eq!(env.fake.user(&jane.id).unwrap().name, "Jane Roe");
    assert_eq!(
        env.fake.user_by_key("bsmith").unwrap().email.as_deref(),
        Some("bob.smith@example.com")
    );
    assert_eq!(carol.roles, vec!["ADMIN"]);
    assert!(!env.fake.user_by_key("dking").unwrap().is_active);
    let renamed = env.fake.user(&eve.id).unwrap();
    assert_eq!(renamed.user_key, "eve.e");
    assert_eq!(renamed.roles, vec!["TECHNICIAN"]);
    assert_eq!(env.fake.users().len(), 5, "nothing deleted or created");

    // A role added on top (one add, no remove); Dave enabled again; a name change on the
    // renamed account goes to its new key.
    let changed2 = changed
        .replace(
            "Carol,Jones,active,admins",
            "Carol,Jones,active,admins;techs",
        )
        .replace("Dave,King,disabled", "Dave,King,active")
        .replace("Eve,Eve", "Eve,Evans");
    env.write_csv(&changed2);
    env.fake.clear_requests();
    let o = env.run_code(&["sync"], 0);
    let mut expected = vec![
        call("GET", &format!("/{}", carol.id), ""),
        call("POST", "/cjones/roles/add", "[\"TECHNICIAN\"]"),
        call("GET", &format!("/{}", dave.id), ""),
        call("PUT", "/dking/isActive", "true"),
        call("PUT", "/eve.e/name", "\"Eve Evans\""),
    ];
    expected.sort();
    assert_eq!(env.api_calls(), expected, "{}", out(&o));
    assert_eq!(
        env.fake.user_by_key("cjones").unwrap().roles,
        vec!["ADMIN", "TECHNICIAN"]
    );
    assert!(env.fake.user_by_key("dking").unwrap().is_active);
    assert_eq!(env.fake.user(&eve.id).unwrap().name, "Eve Evans");

    // And then nothing again.
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    assert!(env.api_calls().is_empty(), "{:?}", env.api_calls());

    // Deletes: Bob leaves the source; Carol leaves too but was already deleted by hand.
    env.write_config(Some(1000.0), "on_missing = \"delete\"");
    let bob = env.fake.user_by_key("bsmith").unwrap();
    // Carol is deleted by hand, behind dirsync's back.
    let gone = env.fake.user_by_key("cjones").unwrap();
    delete_by_hand(&env.fake, &gone.user_key).await;
    let without = changed2
        .lines()
        .filter(|l| !l.starts_with("E2,") && !l.starts_with("E3,"))
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    env.write_csv(&without);
    env.fake.clear_requests();
    let o = env.run_code(&["sync", "--force"], 0);
    assert!(env.fake.user(&bob.id).is_none());
    assert_eq!(keys(&env.fake), vec!["dking", "eve.e", "jdoe"]);
    // Deletes go to the record id; Carol's answers 404, which counts as done.
    let mut expected = vec![
        call("DELETE", &format!("/{}", bob.id), ""),
        call("DELETE", &format!("/{}", gone.id), ""),
    ];
    expected.sort();
    assert_eq!(env.api_calls(), expected, "{}", out(&o));
    let run = &store.list_runs(1).await.unwrap()[0];
    let ops = store.run_operations(run.id).await.unwrap();
    assert_eq!(ops.len(), 2);
    assert!(ops.iter().all(|o| o.status == "succeeded"), "{ops:?}");
    let accounts = store.load_accounts("vk").await.unwrap();
    assert!(!accounts.iter().any(|a| a.key == "E2" || a.key == "E3"));

    // Finally nothing again.
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    assert!(env.api_calls().is_empty(), "{:?}", env.api_calls());
}

/// Deletes a user on the fake with a client of its own (as an administrator would).
async fn delete_by_hand(fake: &FakeValuekeep, key: &str) {
    let client = reqwest::Client::new();
    let token: serde_json::Value = client
        .post(fake.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", valuekeep::SCOPE),
            ("client_id", valuekeep::CLIENT_ID),
            ("client_secret", valuekeep::CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_string();
    let resp = client
        .delete(format!("{}{}/{key}", fake.base_url(), users_prefix()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
}

crate::support::env::on_both_backends!(
    lifecycle_against_fake_valuekeep_sqlite,
    lifecycle_against_fake_valuekeep_postgres,
    lifecycle
);

#[tokio::test(flavor = "multi_thread")]
async fn invitation_and_status_settings() {
    let env = Env::new(Backend::Sqlite, FIVE).await;
    env.write_config(Some(1000.0), "send_invitation = true\nset_status = true");
    env.run_code(&["sync"], 0);
    let calls = env.api_calls();
    let invitations = calls
        .iter()
        .filter(|(m, p, _)| m == "POST" && p == "/sendInvitation")
        .count();
    assert_eq!(invitations, 5, "{calls:?}");
    assert!(env.fake.users().iter().all(|u| u.invitations == 1));

    env.write_csv(&FIVE.replace("Dave,King,active", "Dave,King,disabled"));
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    let dave = env.fake.user_by_key("dking").unwrap();
    assert_eq!(
        env.api_calls(),
        vec![
            call("GET", &format!("/{}", dave.id), ""),
            call("PUT", "/dking/isActive", "false"),
            call("PUT", "/dking/status", "2"),
        ]
    );
    assert!(!dave.is_active);
    assert_eq!(dave.status, 2);

    env.write_csv(FIVE);
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    assert_eq!(
        env.api_calls(),
        vec![
            call("GET", &format!("/{}", dave.id), ""),
            call("PUT", "/dking/isActive", "true"),
            call("PUT", "/dking/status", "1"),
        ]
    );
    assert_eq!(env.fake.user_by_key("dking").unwrap().status, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn injected_429s_and_503s_are_absorbed() {
    let env = Env::new(Backend::Sqlite, &users(6)).await;
    let create = users_prefix();
    env.fake.inject(
        "POST",
        PathMatch::exact(&create),
        Fault::Status429 {
            retry_after: Some("1".into()),
        },
        3,
    );
    env.fake.inject(
        "*",
        PathMatch::prefix(&create),
        Fault::Status503 { retry_after: None },
        2,
    );
    env.run_code(&["sync"], 0);
    assert_eq!(env.fake.users().len(), 6);
    assert_eq!(env.fake.pending_faults(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_servers_limiter_is_absorbed() {
    // 40 creates against 15 requests a second, sent as fast as the client can: the fake
    // answers 429 with Retry-After and the run still completes.
    let env = Env::new(Backend::Sqlite, &users(40)).await;
    env.fake.set_rate_limit(Some((15, Duration::from_secs(1))));
    env.run_code(&["sync"], 0);
    assert_eq!(env.fake.users().len(), 40);
    assert!(env.fake.rate_limited() > 0, "the limiter never fired");
}

#[tokio::test(flavor = "multi_thread")]
async fn pacing_keeps_under_the_limit() {
    // The production shape scaled down 50 times: 60 requests a second allowed, the client
    // paced at 50 a second, 100 creates: no 429 at all.
    let env = Env::new(Backend::Sqlite, &users(100)).await;
    env.fake.set_rate_limit(Some((60, Duration::from_secs(1))));
    env.write_config(Some(50.0), "");
    let started = Instant::now();
    env.run_code(&["sync"], 0);
    assert_eq!(env.fake.users().len(), 100);
    assert_eq!(env.fake.rate_limited(), 0);
    // 101 requests (a token and 100 creates) 20 ms apart.
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_reports_the_expected_duration() {
    // The default pacing of Valuekeep (60 a minute): 500 creates take 500 s.
    let env = Env::new(Backend::Sqlite, &users(500)).await;
    env.write_config(None, "");
    let o = env.run(&["plan"]);
    // 2: changes pending.
    assert_eq!(code(&o), 2, "{}", out(&o));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        text.contains("expected duration: about 8 minutes 20 seconds (500 requests at 1/s)"),
        "{text}"
    );
    // A dry run on first contact only reads (one listing); it changes nothing.
    assert!(
        env.api_calls().iter().all(|(m, _, _)| m == "GET"),
        "{:?}",
        env.api_calls()
    );
    assert!(env.fake.users().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn adoption_pages_over_250_users() {
    let env = Env::new(Backend::Postgres, &users(260)).await;
    for i in 1..=260 {
        let roles: &[&str] = if i % 10 == 1 {
            &["ADMIN"]
        } else {
            &["REQUESTER"]
        };
        env.fake.insert_user(FakeUser {
            email: Some(format!("user{i}@example.com")),
            ..FakeUser::new(&format!("u{i}"), &format!("First{i} Last{i}"), roles)
        });
    }
    // One account nobody in the source matches.
    env.fake
        .insert_user(FakeUser::new("stranger", "Some One", &[]));
    let o = env.run_code(&["adopt", "--target", "vk", "--match", "login"], 0);
    assert_has(&stdout(&o), "adopted 260");
    let lists: Vec<_> = env
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path != valuekeep::TOKEN_PATH)
        .collect();
    assert_eq!(lists.len(), 3, "{lists:?}");
    assert!(
        lists
            .iter()
            .all(|r| r.method == "GET" && r.user_path() == Some("/odata"))
    );
    assert_eq!(lists[0].query.as_deref(), Some("$top=100&$skip=0"));
    let store = env.store().await;
    let accounts = store.load_accounts("vk").await.unwrap();
    assert_eq!(accounts.len(), 260);
    assert!(accounts.iter().all(|a| a.owned && a.adopted));
    let u7 = env.fake.user_by_key("u7").unwrap();
    assert_eq!(
        accounts
            .iter()
            .find(|a| a.key == "E00007")
            .unwrap()
            .remote_id
            .as_deref(),
        Some(u7.id.as_str())
    );
    // The adopted accounts already match the source: the sync sends nothing and creates
    // nobody.
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    assert!(env.api_calls().is_empty(), "{:?}", env.api_calls());
    assert_eq!(env.fake.users().len(), 261);
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_user_key_is_a_conflict_then_adopted() {
    // A first sync without u2 (first contact with an empty tenant), then u2 made by hand and
    // added to the source: its create meets the hand-made account.
    let all = users(3);
    let without2 = all.replace(&all[users(1).len()..users(2).len()], "");
    let env = Env::new(Backend::Sqlite, &without2).await;
    env.run_code(&["sync"], 0);
    let hand = env
        .fake
        .insert_user(FakeUser::new("u2", "Hand Made", &["PLANNER"]));
    env.write_csv(&all);
    let o = env.run_code(&["sync"], 4);
    assert_has(&stdout(&o), "conflict");
    assert_eq!(env.fake.user(&hand).unwrap().name, "Hand Made");
    env.run_code(&["adopt", "--target", "vk", "--match", "login"], 0);
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    let u = env.fake.user(&hand).unwrap();
    assert_eq!(u.name, "First2 Last2");
    assert_eq!(u.email.as_deref(), Some("user2@example.com"));
    assert_eq!(u.roles, vec!["REQUESTER"]);
    // One PUT per changed attribute; the roles as one add and one remove.
    let methods: Vec<(String, String)> = env
        .api_calls()
        .into_iter()
        .filter(|(m, _, _)| m != "GET")
        .map(|(m, p, _)| (m, p))
        .collect();
    assert_eq!(
        methods,
        vec![
            ("POST".to_string(), "/u2/roles/add".to_string()),
            ("POST".to_string(), "/u2/roles/remove".to_string()),
            ("PUT".to_string(), "/u2/email".to_string()),
            ("PUT".to_string(), "/u2/name".to_string()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_client_secret_fails_without_printing_it() {
    let env = Env::new(Backend::Sqlite, &users(300)).await;
    let good = std::fs::read_to_string(env.config_path()).unwrap();
    let cfg = good.replace(valuekeep::CLIENT_SECRET, "wrong-vk-secret");
    std::fs::write(env.config_path(), cfg).unwrap();
    let o = env.run(&["sync", "-vv"]);
    // Refused credentials fail the target as a whole (exit 1), not operation by operation:
    // at most one login and its retry, and no API request at all.
    assert_eq!(code(&o), 1, "{}", out(&o));
    let all = out(&o);
    assert!(all.contains("authentication"), "{all}");
    assert!(!all.contains("wrong-vk-secret"), "secret printed");
    assert!(env.fake.users().is_empty());
    let reqs = env.fake.requests();
    let logins = reqs
        .iter()
        .filter(|r| r.path == valuekeep::TOKEN_PATH)
        .count();
    assert!((1..=2).contains(&logins), "{logins} token requests");
    assert_eq!(reqs.len(), logins, "only token requests");
    // The secret fixed: everyone is created, once.
    std::fs::write(env.config_path(), good).unwrap();
    env.run_code(&["sync"], 0);
    assert_eq!(env.fake.users().len(), 300);
}

// ---------------------------------------------------------------------------------------------
// The connector itself against the fake: tokens, faults, accounts renamed behind its back.

mod connector {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;
    use std::time::Duration;

    use dirsync::connector::{Connector, OpError, StatusAction, StatusItem};
    use dirsync::mapping::Account;

    use super::{Backend, Env};
    use crate::support::valuekeep::{FakeUser, Fault, PathMatch, users_prefix};

    async fn connect(env: &Env) -> Arc<dyn Connector> {
        let config = dirsync::config::load_with_env(&env.config_path(), &[]).unwrap();
        dirsync::connector::connect(&config.targets[0]).unwrap()
    }

    fn account(key: &str, roles: &[&str]) -> Account {
        let fields: BTreeMap<String, String> = [
            ("userKey", key),
            ("name", "Test User"),
            ("isTechnician", "false"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Account {
            groups: Default::default(),
            key: key.to_string(),
            fields,
            roles: roles.iter().map(|r| r.to_string()).collect::<BTreeSet<_>>(),
            enabled: true,
            hash: Default::default(),
        }
    }

    fn item(id: &str, login: &str) -> StatusItem {
        StatusItem {
            key: "K".into(),
            remote_id: id.into(),
            login: Some(login.into()),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn expired_tokens_are_replaced() {
        let env = Env::new(Backend::Sqlite, "").await;
        let c = connect(&env).await;
        let created = c.create(&account("t1", &["ADMIN"])).await.unwrap();
        assert_eq!(env.fake.token_grants(), 1);
        env.fake.expire_all_tokens();
        c.set_status(StatusAction::Disable, &[item(&created.remote_id, "t1")])
            .await
            .into_iter()
            .for_each(|r| r.unwrap());
        assert_eq!(env.fake.token_grants(), 2);
        assert!(!env.fake.user_by_key("t1").unwrap().is_active);
        let statuses: Vec<u16> = env.fake.requests().iter().map(|r| r.status).collect();
        assert!(statuses.contains(&401), "{statuses:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn renamed_accounts_are_found_by_id() {
        let env = Env::new(Backend::Sqlite, "").await;
        let id = env
            .fake
            .insert_user(FakeUser::new("now-key", "Renamed", &["REQUESTER"]));
        // Another user holds the old key now: it must not be touched.
        let other = env
            .fake
            .insert_user(FakeUser::new("old-key", "Someone Else", &["PLANNER"]));
        let c = connect(&env).await;
        // The login of the item is stale (renamed elsewhere): the key is looked up by id.
        let r = c
            .set_status(StatusAction::Disable, &[item(&id, "old-key")])
            .await;
        assert!(r.into_iter().all(|r| r.is_ok()));
        assert!(!env.fake.user(&id).unwrap().is_active);
        assert!(env.fake.user(&other).unwrap().is_active);
        let paths: Vec<String> = env
            .fake
            .requests()
            .iter()
            .filter_map(|r| r.user_path().map(|p| format!("{} {p}", r.method)))
            .collect();
        assert_eq!(
            paths,
            vec![format!("GET /{id}"), "PUT /now-key/isActive".to_string()]
        );
        // Now remembered: role deltas go straight to the current key.
        env.fake.clear_requests();
        c.set_roles(&id, &["ADMIN".into()], &[], &[]).await.unwrap();
        assert_eq!(env.fake.requests().len(), 1);
        assert_eq!(
            env.fake.user(&id).unwrap().roles,
            vec!["ADMIN", "REQUESTER"]
        );
        // A delete of an id the server no longer has is a success.
        c.set_status(StatusAction::Delete, &[item(&id, "now-key")])
            .await
            .into_iter()
            .for_each(|r| r.unwrap());
        c.set_status(StatusAction::Delete, &[item(&id, "now-key")])
            .await
            .into_iter()
            .for_each(|r| r.unwrap());
        assert_eq!(env.fake.users().len(), 1);
        // An enable of it is not.
        let r = c
            .set_status(StatusAction::Enable, &[item(&id, "now-key")])
            .await;
        assert!(matches!(r[0], Err(OpError::NotFound { .. })), "{r:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_update_follows_a_rename_made_elsewhere() {
        let env = Env::new(Backend::Sqlite, "").await;
        let id = env.fake.insert_user(FakeUser::new("k1", "Old Name", &[]));
        let c = connect(&env).await;
        // dirsync still believes the key is k0.
        let mut desired = account("k0", &[]);
        desired.fields.insert("name".into(), "New Name".into());
        let change = dirsync::plan::FieldChange {
            field: "name".into(),
            before: Some("Old Name".into()),
            after: Some("New Name".into()),
        };
        c.update(&id, &[change], &desired).await.unwrap();
        assert_eq!(env.fake.user(&id).unwrap().name, "New Name");
        let paths: Vec<String> = env
            .fake
            .requests()
            .iter()
            .filter_map(|r| {
                r.user_path()
                    .map(|p| format!("{} {p} {}", r.method, r.status))
            })
            .collect();
        assert_eq!(
            paths,
            vec![
                "PUT /k0/name 404".to_string(),
                format!("GET /{id} 200"),
                "PUT /k1/name 200".to_string(),
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn idempotent_calls_survive_drops_and_500s() {
        let env = Env::new(Backend::Sqlite, "").await;
        let c = connect(&env).await;
        let created = c.create(&account("f1", &[])).await.unwrap();
        let prefix = users_prefix();
        env.fake.inject(
            "PUT",
            PathMatch::template(&format!("{prefix}/{{key}}/isActive")),
            Fault::Drop,
            1,
        );
        env.fake.inject(
            "POST",
            PathMatch::template(&format!("{prefix}/{{key}}/roles/add")),
            Fault::Status(500),
            1,
        );
        env.fake.inject(
            "GET",
            PathMatch::prefix(&format!("{prefix}/odata")),
            Fault::Latency(Duration::from_millis(50)),
            1,
        );
        env.fake.set_latency(Duration::from_millis(5));
        let r = c
            .set_status(StatusAction::Disable, &[item(&created.remote_id, "f1")])
            .await;
        assert!(r[0].is_ok(), "{r:?}");
        c.set_roles(&created.remote_id, &["PLANNER".into()], &[], &[])
            .await
            .unwrap();
        let listed = c.list_accounts().await.unwrap();
        env.fake.set_latency(Duration::ZERO);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].remote_id, created.remote_id);
        assert!(!listed[0].enabled);
        assert_eq!(listed[0].roles.len(), 1);
        assert_eq!(env.fake.pending_faults(), 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn keys_are_encoded_as_one_path_segment() {
        let env = Env::new(Backend::Sqlite, "").await;
        let c = connect(&env).await;
        let key = "a/b+c@x.io Zoë";
        let created = c.create(&account(key, &["REQUESTER"])).await.unwrap();
        let mut desired = account(key, &["REQUESTER"]);
        desired.fields.insert("name".into(), "New Name".into());
        let change = dirsync::plan::FieldChange {
            field: "name".into(),
            before: Some("Test User".into()),
            after: Some("New Name".into()),
        };
        c.update(&created.remote_id, &[change], &desired)
            .await
            .unwrap();
        c.set_roles(
            &created.remote_id,
            &["ADMIN".into()],
            &["REQUESTER".into()],
            &[],
        )
        .await
        .unwrap();
        let u = env.fake.user(&created.remote_id).unwrap();
        assert_eq!(
            (u.name.as_str(), u.roles.clone()),
            ("New Name", vec!["ADMIN".to_string()])
        );
        let paths: Vec<String> = env
            .fake
            .requests()
            .iter()
            .filter_map(|r| r.user_path().map(str::to_string))
            .collect();
        assert!(
            paths.contains(&"/a%2Fb%2Bc%40x.io%20Zo%C3%AB/name".to_string()),
            "{paths:?}"
        );
        c.set_status(StatusAction::Delete, &[item(&created.remote_id, key)])
            .await
            .into_iter()
            .for_each(|r| r.unwrap());
        assert!(env.fake.users().is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_create_whose_answer_is_lost_is_found_again() {
        let env = Env::new(Backend::Sqlite, "").await;
        let c = connect(&env).await;
        env.fake.inject(
            "POST",
            PathMatch::exact(&users_prefix()),
            Fault::DropAfterApply,
            1,
        );
        let e = c.create(&account("lost", &[])).await.unwrap_err();
        assert!(matches!(e, OpError::Unavailable { .. }), "{e:?}");
        let found = c.find_account("lost").await.unwrap().unwrap();
        assert_eq!(found.remote_id, env.fake.user_by_key("lost").unwrap().id);
        assert!(c.find_account("nobody").await.unwrap().is_none());
        // A second create of the same key is a conflict, not a second user.
        let e = c.create(&account("lost", &[])).await.unwrap_err();
        assert!(matches!(e, OpError::Conflict { .. }), "{e:?}");
        assert_eq!(env.fake.users().len(), 1);
    }
}

crate::support::env::on_both_backends!(
    groups_are_created_and_changed_by_delta_sqlite,
    groups_are_created_and_changed_by_delta_postgres,
    groups_by_delta
);

async fn groups_by_delta(backend: Backend) {
    let env = Env::new(backend, FIVE).await;
    env.write_config(
        Some(1000.0),
        "default_groups = [\"OFFICE\"]\n[[target.groups]]\ngroup = \"techs\"\ngroups = [\"MAINT\"]\n",
    );
    env.run_code(&["sync"], 0);
    assert_eq!(
        env.fake.user_by_key("eeve").unwrap().groups,
        vec!["MAINT".to_string()]
    );
    assert_eq!(
        env.fake.user_by_key("bsmith").unwrap().groups,
        vec!["OFFICE".to_string()]
    );
    // Groups went with the creates: no separate group calls.
    assert!(
        !env.api_calls()
            .iter()
            .any(|(_, p, _)| p.contains("/groups/"))
    );

    // Bob joins the techs: the plan says so, and the sync sends exactly one add and one remove.
    env.write_csv(&FIVE.replace(
        "Bob,Smith,active,staff,false",
        "Bob,Smith,active,staff;techs,false",
    ));
    let o = env.run_code(&["plan"], 2);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        text.contains("~ groups   E2 (bsmith)  +MAINT -OFFICE"),
        "{text}"
    );
    assert!(text.contains("1 group change"), "{text}");
    env.fake.clear_requests();
    let o = env.run_code(&["sync"], 0);
    // (Joining techs also brings the TECHNICIAN role: its delta goes separately.)
    let calls: Vec<_> = env
        .api_calls()
        .into_iter()
        .filter(|(m, _, _)| m != "GET")
        .collect();
    assert_eq!(
        calls,
        vec![
            call("POST", "/bsmith/groups/add", "[\"MAINT\"]"),
            call("POST", "/bsmith/groups/remove", "[\"OFFICE\"]"),
            call("POST", "/bsmith/roles/add", "[\"TECHNICIAN\"]"),
            call("POST", "/bsmith/roles/remove", "[\"REQUESTER\"]"),
        ],
        "{}",
        out(&o)
    );
    assert_eq!(
        env.fake.user_by_key("bsmith").unwrap().groups,
        vec!["MAINT".to_string()]
    );

    // Nothing left to do.
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    assert!(env.fake.requests().is_empty(), "{:?}", env.fake.requests());
}
