//! Run notifications: `[[notify]]` entries send a webhook (a signed JSON POST) or an e-mail
//! (SMTP, STARTTLS) when a run ends in a state the entry asks for.
//!
//! A notification never changes how a run ends: failures are logged (`warn!`) and counted
//! (`dirsync_notifications_failed_total{kind}`), and each entry is bounded in time
//! (its `timeout`, default 10 s, covering every attempt). Entries are sent concurrently.
//!
//! Which runs notify: a real run (`sync`, the daemon) notifies an entry when its status is one of
//! the entry's `on` values (`failed`, `partial`, `blocked`; the default is all three), when `on`
//! has `changes` and the run planned or applied changes, or when `on` has `always`. A dry run
//! (`plan`) notifies only entries whose `on` has `always`.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use tracing::{debug, warn};

pub use crate::config::notify::{
    Channel, DEFAULT_TIMEOUT, EmailSettings, NotifyConfig, NotifyOn, StartTls, WebhookSettings,
};
use crate::outcome::{RunPlan, SourceSummary};
use crate::secret::Secret;
use crate::store::{RunStatus, Trigger};

/// The `schema` field of webhook payloads.
pub const PAYLOAD_SCHEMA: &str = "dirsync.notification";
/// The `version` field of webhook payloads.
pub const PAYLOAD_VERSION: u32 = 1;
/// The header carrying the body's HMAC-SHA256 (`sha256=<hex>`), when a secret is set.
pub const SIGNATURE_HEADER: &str = "X-Dirsync-Signature";
/// Webhook attempts (the first and two retries).
pub const WEBHOOK_ATTEMPTS: u32 = 3;
/// Reports longer than this (bytes) are cut in notifications.
const REPORT_MAX: usize = 256 * 1024;

/// Whether an entry with `on` notifies a run that ended with `status`.
pub fn wants(on: &[NotifyOn], plan: &RunPlan, status: RunStatus) -> bool {
    if on.contains(&NotifyOn::Always) {
        return true;
    }
    if plan.dry_run {
        return false;
    }
    on.iter().any(|o| match o {
        NotifyOn::Failed => status == RunStatus::Failed,
        NotifyOn::Partial => status == RunStatus::Partial,
        NotifyOn::Blocked => status == RunStatus::Blocked,
        NotifyOn::Changes => plan.changes() > 0 || plan.applied_failed().0 > 0,
        NotifyOn::Always => true,
    })
}

/// The webhook body: the run summary and the Markdown report.
pub fn payload(plan: &RunPlan, status: RunStatus, error: Option<&str>) -> serde_json::Value {
    payload_of(plan, status, error, true)
}

/// `recorded` false: the run failed before it had a run row (the source could not be read);
/// `run_id` and `source_users` are null and the report is a short error note.
fn payload_of(
    plan: &RunPlan,
    status: RunStatus,
    error: Option<&str>,
    recorded: bool,
) -> serde_json::Value {
    let targets: Vec<serde_json::Value> = plan
        .targets
        .iter()
        .map(|t| {
            let mut v = serde_json::json!({
                "name": t.name,
                "kind": t.kind,
                "verdict": t.verdict,
                "summary": t.plan.summary,
            });
            if let Some(a) = &t.applied {
                v["applied"] = serde_json::json!(a);
            }
            if let Some(s) = &t.skipped {
                v["skipped"] = serde_json::json!(s);
            }
            // Why the target failed as a whole (refused credentials, unreachable, ...).
            if let Some(e) = &t.error {
                v["error"] = serde_json::json!(e);
            }
            v
        })
        .collect();
    let mut v = serde_json::json!({
        "schema": PAYLOAD_SCHEMA,
        "version": PAYLOAD_VERSION,
        "run_id": plan.run_id,
        "status": status.as_str(),
        "trigger": plan.trigger.as_str(),
        "dry_run": plan.dry_run,
        "forced": plan.forced,
        "generated_at": plan.generated_at,
        "source_users": plan.source.users,
        "source_blocked_by": plan.source.blocked_by,
        "source_quarantined": plan.source.quarantined.len(),
        "targets": targets,
        "report_markdown": report(plan),
    });
    if let Some(e) = error {
        v["error"] = serde_json::json!(e);
    }
    if !recorded {
        v["run_id"] = serde_json::Value::Null;
        v["source_users"] = serde_json::Value::Null;
        v["report_markdown"] = serde_json::json!(format!(
            "# dirsync: run failed\n\nThe run failed before it started planning: {}\n",
            error.unwrap_or("unknown error")
        ));
    }
    v
}

/// The Markdown report, cut at [`REPORT_MAX`] bytes.
fn report(plan: &RunPlan) -> String {
    let mut r = crate::report::render(plan, crate::report::Format::Markdown, plan.dry_run);
    if r.len() > REPORT_MAX {
        let mut cut = REPORT_MAX;
        while !r.is_char_boundary(cut) {
            cut -= 1;
        }
        r.truncate(cut);
        r.push_str(&format!(
            "\n\n… (report cut; see `dirsync runs show {}`)\n",
            plan.run_id
        ));
    }
    r
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`: the value of [`SIGNATURE_HEADER`].
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + digest.len() * 2);
    out.push_str("sha256=");
    for b in digest.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// An error with its causes (`error sending request: ... : Connection refused`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_s = c.to_string();
        if !s.contains(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        cur = c.source();
    }
    s
}

/// The URL without its query (which may carry a token), for logs.
fn shown_url(url: &url::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// Sends the notifications `entries` ask for about a finished run. Never fails and never takes
/// longer than the largest entry `timeout` (entries are sent concurrently); `error` is the
/// run's error when it failed.
pub async fn notify_run(
    entries: &[NotifyConfig],
    plan: &RunPlan,
    status: RunStatus,
    error: Option<&str>,
) {
    notify(entries, plan, status, error, true).await;
}

/// Notifies a run that failed before it was recorded (its source could not be read): a
/// `failed` notification with a null `run_id`. Same bounds as [`notify_run`].
pub async fn notify_source_failure(
    entries: &[NotifyConfig],
    source_kind: &'static str,
    trigger: Trigger,
    force: bool,
    dry_run: bool,
    error: &str,
) {
    if entries.is_empty() {
        return;
    }
    let plan = RunPlan {
        run_id: 0,
        trigger,
        dry_run,
        forced: force,
        generated_at: chrono::Utc::now(),
        store: String::new(),
        source: SourceSummary {
            kind: source_kind,
            users: 0,
            last_applied_users: None,
            blocked_by: Vec::new(),
            quarantined: Vec::new(),
        },
        targets: Vec::new(),
    };
    notify(entries, &plan, RunStatus::Failed, Some(error), false).await;
}

async fn notify(
    entries: &[NotifyConfig],
    plan: &RunPlan,
    status: RunStatus,
    error: Option<&str>,
    recorded: bool,
) {
    let chosen: Vec<(usize, &NotifyConfig)> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| wants(&e.on, plan, status))
        .collect();
    if chosen.is_empty() {
        return;
    }
    let body = payload_of(plan, status, error, recorded);
    let sends = chosen.into_iter().map(|(i, entry)| {
        let body = &body;
        async move {
            let kind = entry.channel.kind();
            let result =
                tokio::time::timeout(entry.timeout, send(entry, plan, status, body)).await;
            let error = match result {
                Ok(Ok(())) => {
                    debug!(run_id = plan.run_id, notify = i, kind, "notification sent");
                    return;
                }
                Ok(Err(e)) => e,
                Err(_) => format!("gave up after {}", humantime::format_duration(entry.timeout)),
            };
            crate::metrics::record_notification_failed(kind);
            warn!(run_id = plan.run_id, notify = i, kind, error = %error, "notification failed (the run is not affected)");
        }
    });
    futures::future::join_all(sends).await;
}

async fn send(
    entry: &NotifyConfig,
    plan: &RunPlan,
    status: RunStatus,
    body: &serde_json::Value,
) -> Result<(), String> {
    match &entry.channel {
        Channel::Webhook(w) => send_webhook(w, entry.timeout, body).await,
        Channel::Email(m) => send_email(m, entry.timeout, plan, status, body).await,
    }
}

async fn send_webhook(
    w: &WebhookSettings,
    timeout: Duration,
    body: &serde_json::Value,
) -> Result<(), String> {
    let bytes = serde_json::to_vec(body).map_err(|e| format!("cannot encode the payload: {e}"))?;
    let client = reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("dirsync/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let shown = shown_url(&w.url);
    let sig = w.hmac_secret.as_ref().map(|s| signature(s, &bytes));
    let mut last = String::new();
    for attempt in 1..=WEBHOOK_ATTEMPTS {
        if attempt > 1 {
            // 0.5 s, 1 s: short enough to stay well inside the entry's time bound.
            tokio::time::sleep(Duration::from_millis(250 << (attempt - 1))).await;
        }
        let mut req = client
            .post(w.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(bytes.clone());
        if let Some(sig) = &sig {
            req = req.header(SIGNATURE_HEADER, sig);
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) if resp.status().is_server_error() => {
                last = format!("POST {shown}: HTTP {}", resp.status());
                debug!(attempt, url = %shown, status = resp.status().as_u16(), "webhook answered a server error; retrying");
            }
            Ok(resp) => {
                // 4xx (and redirects, which are not followed): retrying will not help.
                return Err(format!("POST {shown}: HTTP {}", resp.status()));
            }
            Err(e) => {
                last = format!("POST {shown}: {}", chain(&e.without_url()));
                debug!(attempt, url = %shown, error = %last, "webhook not reached; retrying");
            }
        }
    }
    Err(format!("{last} (after {WEBHOOK_ATTEMPTS} attempts)"))
}

/// The e-mail subject: `<prefix> run <id> <status>`, with the blocked / failed targets.
pub fn subject(prefix: &str, plan: &RunPlan, status: RunStatus) -> String {
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix} ")
    };
    // Run id 0: the run failed before it was recorded.
    let mut s = if plan.run_id > 0 {
        format!("{prefix}run {} {}", plan.run_id, status.as_str())
    } else {
        format!("{prefix}run {} (source unreadable)", status.as_str())
    };
    if plan.dry_run {
        s.push_str(" (dry run)");
    }
    let names: Vec<&str> = plan
        .targets
        .iter()
        .filter(|t| t.verdict.is_blocked() || t.applied.as_ref().is_some_and(|a| a.failed > 0))
        .map(|t| t.name.as_str())
        .collect();
    if !names.is_empty() {
        s.push_str(": ");
        s.push_str(&names.join(", "));
    }
    s
}

async fn send_email(
    m: &EmailSettings,
    timeout: Duration,
    plan: &RunPlan,
    status: RunStatus,
    body: &serde_json::Value,
) -> Result<(), String> {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let mut text = if plan.run_id > 0 {
        format!(
            "dirsync run {} ({}) finished: {}.\n",
            plan.run_id,
            plan.trigger.as_str(),
            status.as_str()
        )
    } else {
        format!(
            "dirsync run ({}) {} before it was recorded.\n",
            plan.trigger.as_str(),
            status.as_str()
        )
    };
    if let Some(e) = body.get("error").and_then(serde_json::Value::as_str) {
        text.push_str(&format!("Error: {e}\n"));
    }
    text.push('\n');
    text.push_str(
        body.get("report_markdown")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default(),
    );
    let mut builder =
        Message::builder()
            .from(m.from.clone())
            .subject(subject(&m.subject_prefix, plan, status));
    for to in &m.to {
        builder = builder.to(to.clone());
    }
    // Quoted-printable keeps the Markdown readable in the raw message.
    let part = lettre::message::SinglePart::builder()
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .header(lettre::message::header::ContentTransferEncoding::QuotedPrintable)
        .body(text);
    let message = builder
        .singlepart(part)
        .map_err(|e| format!("cannot build the message: {e}"))?;
    let tls = match m.starttls {
        StartTls::None => Tls::None,
        StartTls::Required | StartTls::Opportunistic => {
            let params = TlsParameters::new(m.host.clone())
                .map_err(|e| format!("TLS settings for {}: {e}", m.host))?;
            if m.starttls == StartTls::Required {
                Tls::Required(params)
            } else {
                Tls::Opportunistic(params)
            }
        }
    };
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(m.host.as_str())
        .port(m.port)
        .tls(tls)
        .timeout(Some(timeout));
    if let (Some(user), Some(password)) = (&m.username, &m.password) {
        transport = transport.credentials(Credentials::new(
            user.clone(),
            password.expose().to_string(),
        ));
    }
    transport
        .build()
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| format!("SMTP {}:{}: {e}", m.host, m.port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{SourceSummary, TargetOutcome};

    fn plan(dry_run: bool, blocked: bool) -> RunPlan {
        let verdict = if blocked {
            crate::plan::Verdict::Blocked {
                reasons: vec![crate::plan::BlockReason {
                    rule: "min_source_users",
                    limit: 5,
                    actual: 0,
                    message: "the source has 0 users".into(),
                }],
            }
        } else {
            crate::plan::Verdict::Allowed
        };
        RunPlan {
            run_id: 7,
            trigger: if dry_run {
                Trigger::DryRun
            } else {
                Trigger::Manual
            },
            dry_run,
            forced: false,
            generated_at: chrono::Utc::now(),
            store: String::new(),
            source: SourceSummary {
                kind: "csv",
                users: 0,
                last_applied_users: Some(10),
                blocked_by: vec![],
                quarantined: vec![],
            },
            targets: vec![TargetOutcome {
                name: "covata".into(),
                kind: crate::connector::TargetKind::Covata,
                verdict,
                plan: Default::default(),
                recovered: None,
                applied: None,
                estimate: None,
                skipped: None,
                refresh: None,
                error: None,
                existing_unchecked: None,
                held: Vec::new(),
            }],
        }
    }

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231, test case 2.
        let s = signature(&Secret::new("Jefe"), b"what do ya want for nothing?");
        assert_eq!(
            s,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn payload_has_the_documented_fields() {
        let p = plan(false, true);
        let v = payload(&p, RunStatus::Blocked, None);
        assert_eq!(v["schema"], PAYLOAD_SCHEMA);
        assert_eq!(v["version"], 1);
        assert_eq!(v["run_id"], 7);
        assert_eq!(v["status"], "blocked");
        assert_eq!(v["trigger"], "manual");
        assert_eq!(v["dry_run"], false);
        assert_eq!(v["forced"], false);
        assert_eq!(v["source_users"], 0);
        assert_eq!(v["targets"][0]["name"], "covata");
        assert_eq!(v["targets"][0]["verdict"]["status"], "blocked");
        assert!(v["targets"][0].get("applied").is_none());
        assert!(v["targets"][0]["summary"].is_object());
        assert!(v["report_markdown"].as_str().unwrap().contains("covata"));
        assert!(v.get("error").is_none());
        let v = payload(&p, RunStatus::Failed, Some("source: boom"));
        assert_eq!(v["error"], "source: boom");
        assert!(v["targets"][0].get("error").is_none());
    }

    #[test]
    fn a_target_that_failed_as_a_whole_says_why() {
        let mut p = plan(false, false);
        p.targets[0].error = Some(
            "covata: authentication failed: the token endpoint refused the credentials".into(),
        );
        let v = payload(&p, RunStatus::Failed, None);
        assert_eq!(
            v["targets"][0]["error"],
            "covata: authentication failed: the token endpoint refused the credentials"
        );
    }

    #[test]
    fn unrecorded_failure_payload() {
        let mut p = plan(false, false);
        p.run_id = 0;
        p.targets.clear();
        let v = payload_of(&p, RunStatus::Failed, Some("source: ldap down"), false);
        assert!(v["run_id"].is_null());
        assert!(v["source_users"].is_null());
        assert_eq!(v["status"], "failed");
        assert!(v["report_markdown"].as_str().unwrap().contains("ldap down"));
        assert_eq!(
            subject("[dirsync]", &p, RunStatus::Failed),
            "[dirsync] run failed (source unreadable)"
        );
    }

    #[test]
    fn on_filtering() {
        let d = NotifyOn::DEFAULT;
        let real = plan(false, false);
        assert!(!wants(&d, &real, RunStatus::Succeeded));
        assert!(wants(&d, &real, RunStatus::Partial));
        assert!(wants(&d, &real, RunStatus::Failed));
        assert!(wants(&d, &plan(false, true), RunStatus::Blocked));
        // No changes planned: `changes` stays quiet.
        assert!(!wants(&[NotifyOn::Changes], &real, RunStatus::Succeeded));
        assert!(wants(&[NotifyOn::Always], &real, RunStatus::Succeeded));
        // Dry runs: only `always`.
        let dry = plan(true, true);
        assert!(!wants(&d, &dry, RunStatus::Blocked));
        assert!(wants(&[NotifyOn::Always], &dry, RunStatus::Blocked));
    }

    #[test]
    fn subject_names_blocked_targets() {
        let p = plan(false, true);
        assert_eq!(
            subject("[dirsync]", &p, RunStatus::Blocked),
            "[dirsync] run 7 blocked: covata"
        );
        assert_eq!(
            subject("", &plan(true, false), RunStatus::Succeeded),
            "run 7 succeeded (dry run)"
        );
    }

    #[test]
    fn failures_are_counted() {
        crate::metrics::record_notification_failed("email");
        let text = crate::metrics::render();
        assert!(text.contains("# TYPE dirsync_notifications_failed_total counter"));
        assert!(text.contains("dirsync_notifications_failed_total{kind=\"webhook\"}"));
        let line = text
            .lines()
            .find(|l| l.starts_with("dirsync_notifications_failed_total{kind=\"email\"}"))
            .unwrap();
        let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= 1);
    }

    #[test]
    fn parse_on_values() {
        assert_eq!(NotifyOn::parse("changes"), Some(NotifyOn::Changes));
        assert_eq!(NotifyOn::parse("sometimes"), None);
        assert_eq!(StartTls::parse("none"), Some(StartTls::None));
        assert_eq!(StartTls::parse("yes"), None);
    }

    #[test]
    fn shown_url_drops_the_query() {
        let u = url::Url::parse("https://hooks.example.com/x?token=abc").unwrap();
        assert_eq!(shown_url(&u), "https://hooks.example.com/x");
    }
}
