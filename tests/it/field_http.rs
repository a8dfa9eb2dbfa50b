//! The HTTP layer under field conditions, against the fake vendor servers: tokens that expire
//! while thousands of requests wait in the queue, credentials the vendor refuses, and targets
//! that cannot be reached (refused port, TLS handshake to a plain listener, unknown host).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dirsync::connector::{Connector, OpError};
use dirsync::mapping::Account;

use crate::support::cmd::{code, out};
use crate::support::covata::{self, FakeCovata};
use crate::support::env::{ConfigText, SecretStyle};
use crate::support::faultrun::{self, RUN_LIMIT, run_bounded};
use crate::support::primavera::{self, FakePrimavera};
use crate::support::valuekeep::{self, FakeValuekeep};

/// A Covata target's `[[target]]` keys for a deep queue: 4 requests at once, one create per
/// account (no import).
const COVATA_QUEUE: &str = "concurrency = 4\nbulk_import_min = 1000000\nmax_backoff = \"1s\"\n";

/// The users `user1@example.com ..` of [`faultrun::csv`].
fn emails(n: usize) -> BTreeSet<String> {
    (1..=n).map(|i| format!("user{i}@example.com")).collect()
}

fn connector_of(config: &Path) -> Arc<dyn Connector> {
    let config = dirsync::config::load_with_env(config, &[]).unwrap();
    dirsync::connector::connect(&config.targets[0]).unwrap()
}

fn account(key: &str, fields: &[(&str, String)], roles: &[&str]) -> Account {
    Account {
        key: key.to_string(),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        groups: Default::default(),
        enabled: true,
        hash: Default::default(),
    }
}

fn covata_account(i: usize) -> Account {
    account(
        &format!("E{i:05}"),
        &[
            ("email", format!("user{i}@example.com")),
            ("firstName", format!("First{i}")),
            ("lastName", format!("Last{i}")),
        ],
        &["ROLE_COLLABORATOR"],
    )
}

/// `n` creates through `connector`, all at once (the client's concurrency limit queues them).
async fn create_all(connector: &Arc<dyn Connector>, accounts: Vec<Account>) -> Vec<OpError> {
    let all = accounts.into_iter().map(|a| {
        let c = connector.clone();
        async move { c.create(&a).await }
    });
    futures::future::join_all(all)
        .await
        .into_iter()
        .map(|r| r.expect_err("the create must fail"))
        .collect()
}

fn auth_failures_metric(target: &str) -> u64 {
    let text = dirsync::metrics::render();
    let prefix = format!("dirsync_auth_failures_total{{target=\"{target}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

// ---------------------------------------------------------------------------------------------
// 1. Tokens that expire while requests wait.

/// 2,500 Covata creates through 4 connections, each answered after 5 ms, with tokens living
/// 2 s: the queue outlives many tokens. Nothing fails, at most `concurrency` 401 answers, the
/// fake holds exactly the source.
#[tokio::test(flavor = "multi_thread")]
async fn covata_tokens_expiring_in_a_deep_queue() {
    const N: usize = 2500;
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeCovata::start().await;
    fake.set_token_ttl(Duration::from_secs(2));
    fake.set_latency(Duration::from_millis(5));
    let config =
        faultrun::write_config_with(dir.path(), &fake, "path = \"state.db\"", COVATA_QUEUE);
    sync_users(dir.path(), &config, N);
    let held: BTreeSet<String> = fake.users().into_iter().map(|u| u.email).collect();
    assert_eq!(held, emails(N));
    assert_eq!(fake.users().len(), N);
    let (logins, refreshes) = fake.token_grants();
    assert!(
        logins + refreshes >= 3,
        "the run outlived several tokens ({logins} logins, {refreshes} refreshes)"
    );
    let refused = fake.unauthorized_answers();
    eprintln!("covata: {N} creates, {logins} logins, {refreshes} refreshes, {refused} answers 401");
    assert!(refused <= 4, "{refused} answers were 401");
    assert_eq!(fake.create_attempts(), N, "one create per user");
}

/// Writes `n` users into `users.csv` and syncs them: exit 0.
fn sync_users(dir: &Path, config: &Path, n: usize) {
    std::fs::write(dir.join("users.csv"), faultrun::csv(n, false, usize::MAX)).unwrap();
    let o = run_bounded(config, &["sync"], RUN_LIMIT * 3);
    assert_eq!(code(&o), 0, "{}", out(&o));
}

fn valuekeep_config(dir: &Path, fake: &FakeValuekeep, secret: &str, http: &str) -> PathBuf {
    ConfigText::new(dir, "path = \"state.db\"")
        .csv("email = \"email\"")
        .raw("[safety]\nmax_disable_percent = 100")
        .valuekeep(
            &fake.base_url(),
            &fake.token_url(),
            secret,
            &format!(
                "{http}\n[target.fields]\nuserKey = \"{{email | lower}}\"\nisTechnician = \"false\""
            ),
        )
        .write()
}

/// The same for Valuekeep, paced (500 requests a second) as its targets are: 2,000 creates
/// through 4 connections with 2 s tokens.
#[tokio::test(flavor = "multi_thread")]
async fn valuekeep_tokens_expiring_in_a_deep_queue() {
    const N: usize = 2000;
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeValuekeep::start().await;
    fake.set_rate_limit(None);
    fake.set_token_ttl(Duration::from_secs(2));
    fake.set_latency(Duration::from_millis(5));
    let config = valuekeep_config(
        dir.path(),
        &fake,
        valuekeep::CLIENT_SECRET,
        "concurrency = 4\nrequests_per_second = 500\nmax_backoff = \"1s\"",
    );
    sync_users(dir.path(), &config, N);
    let held: BTreeSet<String> = fake.users().into_iter().map(|u| u.user_key).collect();
    assert_eq!(held, emails(N));
    assert!(
        fake.token_grants() >= 3,
        "the run outlived several tokens ({} grants)",
        fake.token_grants()
    );
    let refused = fake.unauthorized_answers();
    eprintln!(
        "valuekeep: {N} creates, {} grants, {refused} answers 401",
        fake.token_grants()
    );
    assert!(refused <= 4, "{refused} answers were 401");
}

// ---------------------------------------------------------------------------------------------
// 3. Refused credentials: one login (plus one retry) per target per run.

/// Covata with a wrong client secret, a wrong password, or an account whose freshly issued
/// tokens the API refuses: 300 concurrent creates ask the token endpoint at most twice, all
/// fail with `Auth`, nothing is created; the failure is counted once; a new connector (the
/// next run) asks again, once.
#[tokio::test(flavor = "multi_thread")]
async fn covata_refused_credentials_are_asked_once_per_run() {
    for case in ["client secret", "password", "token refused"] {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeCovata::start().await;
        let target = format!("cov-{}", case.replace(' ', "-"));
        let config =
            faultrun::write_config_with(dir.path(), &fake, "path = \"state.db\"", COVATA_QUEUE);
        let text = std::fs::read_to_string(&config).unwrap().replacen(
            "name = \"covata\"",
            &format!("name = \"{target}\""),
            1,
        );
        let text = match case {
            "client secret" => text.replace(
                &format!("client_secret = \"{}\"", covata::CLIENT_SECRET),
                "client_secret = \"not-the-secret\"",
            ),
            "password" => text.replace(
                &format!("password = \"{}\"", covata::PASSWORD),
                "password = \"not-the-password\"",
            ),
            _ => {
                fake.set_refuse_tokens(true);
                text
            }
        };
        std::fs::write(&config, text).unwrap();
        let connector = connector_of(&config);
        let errors = create_all(&connector, (1..=300).map(covata_account).collect()).await;
        for e in &errors {
            assert!(matches!(e, OpError::Auth { .. }), "{case}: {e:?}");
            assert!(e.is_target_fatal());
            let text = e.to_string();
            assert!(
                !text.contains("not-the-") && !text.contains(covata::PASSWORD),
                "{text}"
            );
        }
        assert!(fake.users().is_empty(), "{case}");
        let asked = fake.token_requests();
        assert!(
            (1..=2).contains(&asked),
            "{case}: {asked} token requests for 300 creates"
        );
        if case == "token refused" {
            let refused = fake.unauthorized_answers();
            assert!(refused <= 2 * 4, "{case}: {refused} API calls sent");
        }
        assert_eq!(auth_failures_metric(&target), 1, "{case}");

        // Later calls of the same run ask nobody.
        let before = fake.exchange_count();
        let e = connector.list_accounts().await.unwrap_err();
        assert!(matches!(e, OpError::Auth { .. }), "{case}: {e:?}");
        assert_eq!(fake.exchange_count(), before, "{case}");

        // The next run builds its connector anew and tries again, once.
        let next = connector_of(&config);
        assert!(next.list_accounts().await.is_err());
        let again = fake.token_requests() - asked;
        assert!((1..=2).contains(&again), "{case}: {again}");
        assert_eq!(auth_failures_metric(&target), 2, "{case}");
    }
}

/// Valuekeep with a wrong client secret: one refused grant for 300 concurrent creates.
#[tokio::test(flavor = "multi_thread")]
async fn valuekeep_refused_client_secret_is_asked_once() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeValuekeep::start().await;
    fake.set_rate_limit(None);
    let config = valuekeep_config(
        dir.path(),
        &fake,
        "not-the-secret",
        "concurrency = 4\nrequests_per_second = 1000",
    );
    let connector = connector_of(&config);
    let accounts = (1..=300)
        .map(|i| {
            account(
                &format!("E{i:05}"),
                &[
                    ("userKey", format!("user{i}@example.com")),
                    ("name", format!("User {i}")),
                    ("isTechnician", "false".to_string()),
                ],
                &["REQUESTER"],
            )
        })
        .collect();
    for e in create_all(&connector, accounts).await {
        assert!(matches!(e, OpError::Auth { .. }), "{e:?}");
        assert!(!e.to_string().contains("not-the-secret"), "{e}");
    }
    assert_eq!(fake.token_requests(), 1);
    assert_eq!(fake.token_grants(), 0);
    assert!(fake.users().is_empty());
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.path == valuekeep::TOKEN_PATH),
        "an API call was sent"
    );
    assert_eq!(auth_failures_metric("vk"), 1);
}

/// Primavera (HTTP Basic) with a wrong password: the first 401 stops the client; at most the
/// requests already in flight reach the server.
#[tokio::test(flavor = "multi_thread")]
async fn primavera_refused_password_is_sticky() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakePrimavera::start().await;
    fake.set_latency(Duration::from_millis(20));
    let target = format!(
        r#"
[[target]]
name = "p6-refused"
kind = "primavera"
base_url = "{base}"
username = "{user}"
password = "not-the-password"
concurrency = 4
job_poll_interval = "50ms"
default_roles = ["PrimaveraViewer"]
[target.fields]
loginId = "{{email | lower}}"
emailAddress = "{{email}}"
organization = "sfo"
"#,
        base = fake.base_url(),
        user = primavera::USERNAME,
    );
    let config = ConfigText::new(dir.path(), "path = \"state.db\"")
        .csv_columns("key = \"id\"\nemail = \"email\"")
        .raw(&target)
        .write();
    let connector = connector_of(&config);
    let all = (0..100).map(|_| {
        let c = connector.clone();
        async move { c.list_accounts().await }
    });
    for r in futures::future::join_all(all).await {
        let e = r.unwrap_err();
        assert!(matches!(e, OpError::Auth { .. }), "{e:?}");
        assert!(!e.to_string().contains("not-the-password"), "{e}");
    }
    let sent = fake.requests().len();
    assert!(sent <= 4, "{sent} requests reached the server");
    assert!(fake.requests().iter().all(|r| !r.authorized));
    assert!(fake.users().is_empty());
    assert_eq!(auth_failures_metric("p6-refused"), 1);
}

// ---------------------------------------------------------------------------------------------
// 4. Unreachable targets fail fast as a whole.

/// A TCP listener that counts connections and closes each at once (a TLS client sees its
/// handshake fail).
async fn closing_listener() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            drop(sock);
        }
    });
    (format!("https://{addr}"), count)
}

/// A config of one Covata target at `base_url` (nothing listening there, or not TLS).
fn covata_at(dir: &Path, name: &str, base_url: &str) -> PathBuf {
    ConfigText::new(dir, "path = \"state.db\"")
        .csv_columns("key = \"id\"\nemail = \"email\"")
        .covata_named(
            name,
            base_url,
            SecretStyle::Inline,
            "concurrency = 4\nmax_retries = 5",
        )
        .write()
}

fn retries_metric(target: &str) -> u64 {
    let prefix = format!("dirsync_http_retries_total{{target=\"{target}\"}} ");
    dirsync::metrics::render()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// 300 creates to a refused port: every one fails `Unreachable`, after one probe's retries in
/// all (not a retry series per create).
#[tokio::test(flavor = "multi_thread")]
async fn refused_port_fails_the_whole_target_after_one_probe() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = covata_at(
        dir.path(),
        "cov-refused",
        &format!("http://127.0.0.1:{port}"),
    );
    let connector = connector_of(&config);
    let errors = create_all(&connector, (1..=300).map(covata_account).collect()).await;
    for e in &errors {
        assert!(matches!(e, OpError::Unreachable { .. }), "{e:?}");
        assert!(e.is_target_fatal());
    }
    // The probe's retries (max_retries = 5) plus, at most, the waiting requests' one each
    // among the 4 in flight when the first failed.
    let retries = retries_metric("cov-refused");
    assert!(retries <= 5 + 4, "{retries} retries for 300 creates");
}

/// An https:// target whose port speaks no TLS (closes at once), and a token host under
/// `.invalid`: `Unreachable`, with a bounded number of connections.
#[tokio::test(flavor = "multi_thread")]
async fn tls_and_dns_failures_fail_the_whole_target() {
    let dir = tempfile::tempdir().unwrap();
    let (base, connections) = closing_listener().await;
    let config = covata_at(dir.path(), "cov-tls", &base);
    let connector = connector_of(&config);
    for e in create_all(&connector, (1..=300).map(covata_account).collect()).await {
        assert!(matches!(e, OpError::Unreachable { .. }), "{e:?}");
    }
    let n = connections.load(Ordering::SeqCst);
    assert!((1..=4 + 5).contains(&n), "{n} connections for 300 creates");

    let dir = tempfile::tempdir().unwrap();
    let config = covata_at(dir.path(), "cov-dns", "https://covata.dirsync-test.invalid");
    let connector = connector_of(&config);
    for e in create_all(&connector, (1..=50).map(covata_account).collect()).await {
        assert!(matches!(e, OpError::Unreachable { .. }), "{e:?}");
    }
    let retries = retries_metric("cov-dns");
    assert!(retries <= 5 + 4, "{retries} retries for 50 creates");
}
