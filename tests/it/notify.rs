//! `[[notify]]`: a blocked run posts a signed webhook and sends an e-mail; `on` filtering;
//! webhook retries; a dead webhook never changes a run's exit code; config errors.

use crate::support::cmd::{assert_has, code, out, stderr};
use std::collections::VecDeque;
use std::process::Output;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{KeyInit, Mac};

use crate::support::covata::FakeCovata;
use crate::support::env::{Backend, SecretStyle};
use crate::support::smtp::SmtpSink;

use crate::support::env::{USERS_HEADER as HEADER, user_rows};
const SECRET: &str = "webhook-s3cret";

fn users(n: usize) -> String {
    user_rows(1..=n, |_| false)
}

/// What the webhook receiver got: headers and raw body.
#[derive(Clone)]
struct Hit {
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    /// Statuses to answer first (then 200).
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    async fn start(script: &[u16]) -> (Receiver, String) {
        let r = Receiver::default();
        r.script.lock().unwrap().extend(script);
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (r, url)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.hits.lock().unwrap().push(Hit { headers, body });
    let code = r.script.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(code).unwrap()
}

crate::support::env::env_with_fake!(Env, FakeCovata, HEADER);

impl Env {
    async fn new(postgres: bool, csv: &str) -> Env {
        let env = Env::with_csv(Backend::of(postgres), csv).await;
        std::fs::write(env.dir.path().join("hook-secret"), format!("{SECRET}\n")).unwrap();
        env
    }

    /// The config with `notify` appended (whole `[[notify]]` tables).
    fn write_config(&self, notify: &str) {
        self.config()
            .csv("")
            .raw("[safety]\nmin_source_users = 5")
            .covata(
                &self.fake.base_url(),
                SecretStyle::Inline,
                "max_backoff = \"2s\"",
            )
            .raw(notify)
            .write();
    }

    async fn run(&self, args: &[&str]) -> Output {
        // The receivers run on this test's runtime: wait for the child without blocking it.
        tokio::process::Command::from(self.command(args))
            .output()
            .await
            .unwrap()
    }
}

fn webhook(url: &str, extra: &str) -> String {
    format!("[[notify]]\nkind = \"webhook\"\nurl = \"{url}\"\n{extra}\n")
}

fn verify(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    expected == hex
}

#[tokio::test(flavor = "multi_thread")]
async fn blocked_run_posts_signed_webhook_and_sends_email() {
    let env = Env::new(true, &users(10)).await;
    let (receiver, url) = Receiver::start(&[]).await;
    let sink = SmtpSink::start().await;
    env.write_config(&format!(
        "{}\n[[notify]]\nkind = \"email\"\nhost = \"127.0.0.1\"\nport = {}\nstarttls = \"none\"\n\
         from = \"dirsync <dirsync@example.com>\"\nto = [\"ops@example.com\", \"Second <second@example.com>\"]\n",
        webhook(&url, "hmac_secret_file = \"hook-secret\""),
        sink.port()
    ));

    // A succeeded run: the default `on` (failed, partial, blocked) stays quiet.
    let o = env.run(&["sync"]).await;
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert_eq!(env.fake.users().len(), 10);
    assert!(receiver.hits().is_empty());
    assert!(sink.mails().is_empty());

    // The export is emptied: blocked by min_source_users, both notifications go out.
    env.write_csv("");
    let o = env.run(&["sync"]).await;
    assert_eq!(code(&o), 3, "{}", out(&o));
    assert!(env.fake.users().iter().all(|u| u.enabled));

    let hits = receiver.hits();
    assert_eq!(hits.len(), 1, "{}", out(&o));
    let hit = &hits[0];
    assert_eq!(hit.headers["content-type"], "application/json");
    let sig = hit.headers["x-dirsync-signature"].to_str().unwrap();
    assert!(verify(SECRET, &hit.body, sig), "bad signature {sig}");
    assert!(!verify("other", &hit.body, sig));
    let v: serde_json::Value = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(v["schema"], "dirsync.notification");
    assert_eq!(v["version"], 1);
    assert_eq!(v["status"], "blocked");
    assert_eq!(v["trigger"], "manual");
    assert_eq!(v["dry_run"], false);
    assert_eq!(v["source_users"], 0);
    assert!(v["run_id"].as_i64().unwrap() > 0);
    assert_eq!(v["targets"][0]["name"], "covata");
    assert_eq!(v["targets"][0]["verdict"]["status"], "blocked");
    let report = v["report_markdown"].as_str().unwrap();
    assert!(report.contains("min_source_users"), "{report}");
    // The secret itself is never sent.
    assert!(!String::from_utf8_lossy(&hit.body).contains(SECRET));

    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.from, "dirsync@example.com");
    assert_eq!(mail.to, vec!["ops@example.com", "second@example.com"]);
    let subject = mail.header("Subject").unwrap();
    assert!(subject.starts_with("[dirsync] run "), "{subject}");
    assert!(subject.contains("blocked"), "{subject}");
    assert!(subject.contains("covata"), "{subject}");
    let body = mail.data.replace("=\r\n", "");
    assert!(body.contains("finished: blocked"), "{body}");
    assert!(body.contains("min_source_users"), "{body}");

    // A dry run notifies only `on = ["always"]` entries: nothing new here.
    let o = env.run(&["plan"]).await;
    assert_eq!(code(&o), 3, "{}", out(&o));
    assert_eq!(receiver.hits().len(), 1);
    assert_eq!(sink.mails().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_retries_server_errors() {
    let env = Env::new(false, &users(6)).await;
    let (receiver, url) = Receiver::start(&[500, 503]).await;
    env.write_config(&webhook(&url, "on = [\"changes\"]"));
    let o = env.run(&["sync"]).await;
    assert_eq!(code(&o), 0, "{}", out(&o));
    let hits = receiver.hits();
    assert_eq!(hits.len(), 3, "{}", out(&o));
    // No secret: no signature header.
    assert!(hits[2].headers.get("x-dirsync-signature").is_none());
    let v: serde_json::Value = serde_json::from_slice(&hits[2].body).unwrap();
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["targets"][0]["applied"]["applied"], 6);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("notification failed"));

    // Nothing to change: `changes` stays quiet.
    let o = env.run(&["sync"]).await;
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert_eq!(receiver.hits().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_errors_are_not_retried() {
    let env = Env::new(false, &users(6)).await;
    let (receiver, url) = Receiver::start(&[400, 400, 400]).await;
    env.write_config(&webhook(&url, "on = [\"always\"]"));
    let o = env.run(&["sync"]).await;
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert_eq!(receiver.hits().len(), 1);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("notification failed"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_webhook_keeps_the_exit_code() {
    let env = Env::new(false, &users(6)).await;
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    env.write_config(&webhook(
        &format!("http://127.0.0.1:{port}/hook?token=tok3n"),
        "on = [\"always\"]\nhmac_secret = \"inline-s3cret\"\ntimeout = \"5s\"",
    ));
    let o = env.run(&["sync"]).await;
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert_eq!(env.fake.users().len(), 6);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("notification failed"), "{err}");
    assert!(err.contains("webhook"), "{err}");
    assert!(err.contains("after 3 attempts"), "{err}");
    assert!(!err.contains("tok3n"), "{err}");
    assert!(!err.contains("inline-s3cret"), "{err}");
    // A blocked run keeps its own code too.
    env.write_csv("");
    let o = env.run(&["sync"]).await;
    assert_eq!(code(&o), 3, "{}", out(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn config_errors_name_their_keys() {
    let env = Env::new(false, &users(1)).await;
    env.write_config(
        r#"
[[notify]]
kind = "webhook"
url = "ftp://example.com/hook"

[[notify]]
kind = "webhook"
url = "https://hooks.example.com/x"
on = ["blocked", "sometimes"]

[[notify]]
kind = "email"
host = "smtp.example.com"
from = "dirsync@example.com"
starttls = "maybe"

[[notify]]
kind = "email"
host = "smtp.example.com"
from = "not an address"
to = ["ops@example.com"]
url = "https://x.example.com"

[[notify]]
kind = "pager"

[[notify]]
kind = "webhook"
url = "https://hooks.example.com/x"
hmac_secret = ""
timeout = "soon"

[[notify]]
kind = "email"
host = "smtp.example.com"
from = "dirsync@example.com"
to = "ops@example.com"
username = "mailer"
"#,
    );
    let err = dirsync::config::load_with_env(&env.config_path(), &[]).unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    for k in [
        "notify[0].url",
        "notify[1].on[1]",
        "notify[2].to",
        "notify[2].starttls",
        "notify[3].from",
        "notify[3].url",
        "notify[4].kind",
        "notify[5].hmac_secret",
        "notify[5].timeout",
        "notify[6].password",
    ] {
        assert!(keys.contains(&k), "{k} missing in {err}");
    }
    // `dirsync check` shows the same.
    let o = env.run(&["check", "--offline"]).await;
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert_has(&stderr(&o), "notify[1].on[1]");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreadable_source_notifies_failed() {
    let env = Env::new(false, &users(6)).await;
    let (receiver, url) = Receiver::start(&[]).await;
    env.write_config(&webhook(&url, "hmac_secret = \"s\""));
    std::fs::remove_file(env.dir.path().join("users.csv")).unwrap();
    let o = env.run(&["sync"]).await;
    assert_eq!(code(&o), 1, "{}", out(&o));
    let hits = receiver.hits();
    assert_eq!(hits.len(), 1, "{}", out(&o));
    let v: serde_json::Value = serde_json::from_slice(&hits[0].body).unwrap();
    assert_eq!(v["status"], "failed");
    assert!(v["run_id"].is_null());
    assert!(v["error"].as_str().unwrap().contains("source"), "{v}");
    assert!(v["targets"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn required_starttls_never_falls_back_to_plain_text() {
    let env = Env::new(false, &users(6)).await;
    // The sink does not offer STARTTLS: "required" must not send the mail in the clear.
    let sink = SmtpSink::start().await;
    env.write_config(&format!(
        "[[notify]]\nkind = \"email\"\non = [\"always\"]\nhost = \"127.0.0.1\"\nport = {}\n\
         from = \"dirsync@example.com\"\nto = [\"ops@example.com\"]\nusername = \"mailer\"\n\
         password = \"smtp-pa55\"\n",
        sink.port()
    ));
    let o = env.run(&["sync"]).await;
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(sink.mails().is_empty());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("notification failed"), "{err}");
    assert!(err.contains("email"), "{err}");
    assert!(!err.contains("smtp-pa55"), "{err}");
}
