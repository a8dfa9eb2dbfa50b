//! `[[notify]]` entries: webhook and e-mail settings.

use super::*;

pub(super) fn notify_entry(
    raw: crate::config::raw::RawNotify,
    at: &str,
    base: &Path,
    pr: &mut Problems,
) -> Option<crate::config::notify::NotifyConfig> {
    use crate::config::notify::{
        Channel, EmailSettings, NotifyConfig, NotifyOn, StartTls, WebhookSettings,
    };
    let key = |k: &str| format!("{at}.{k}");
    let mut ok = true;
    let on = match raw.on {
        None => NotifyOn::DEFAULT.to_vec(),
        Some(v) if v.is_empty() => {
            pr.push(
                key("on"),
                "empty: list at least one of failed, partial, blocked, changes, always",
            );
            ok = false;
            Vec::new()
        }
        Some(v) => {
            let mut on = Vec::new();
            for (j, s) in v.iter().enumerate() {
                match NotifyOn::parse(s) {
                    Some(o) if !on.contains(&o) => on.push(o),
                    Some(_) => {}
                    None => {
                        pr.push(
                            format!("{at}.on[{j}]"),
                            format!(
                                "unknown value {s:?} (failed, partial, blocked, changes, always)"
                            ),
                        );
                        ok = false;
                    }
                }
            }
            on
        }
    };
    let timeout = match raw.timeout.as_deref() {
        None => crate::config::notify::DEFAULT_TIMEOUT,
        Some(v) => match duration(v, &key("timeout"), pr) {
            Some(d) if d.is_zero() => {
                pr.push(key("timeout"), "must be more than 0s");
                ok = false;
                d
            }
            Some(d) => d,
            None => {
                ok = false;
                Duration::ZERO
            }
        },
    };
    // Keys of the other kind are mistakes worth reporting.
    let webhook_keys = [
        ("url", raw.url.is_some()),
        ("hmac_secret", raw.hmac_secret.is_some()),
        ("hmac_secret_file", raw.hmac_secret_file.is_some()),
        (
            "hmac_secret_credential",
            raw.hmac_secret_credential.is_some(),
        ),
    ];
    let email_keys = [
        ("host", raw.host.is_some()),
        ("port", raw.port.is_some()),
        ("starttls", raw.starttls.is_some()),
        ("username", raw.username.is_some()),
        ("password", raw.password.is_some()),
        ("password_file", raw.password_file.is_some()),
        ("password_credential", raw.password_credential.is_some()),
        ("from", raw.from.is_some()),
        ("to", raw.to.is_some()),
        ("subject_prefix", raw.subject_prefix.is_some()),
    ];
    let mut foreign = |keys: &[(&str, bool)], kind: &str, pr: &mut Problems| {
        for (k, set) in keys {
            if *set {
                pr.push(key(k), format!("not a setting of kind = {kind:?}"));
                ok = false;
            }
        }
    };
    let channel = match raw.kind.as_deref().map(str::trim) {
        Some("webhook") => {
            foreign(&email_keys, "webhook", pr);
            let url = match raw.url.as_deref() {
                None => {
                    pr.push(key("url"), "missing: the URL to POST to (https://...)");
                    None
                }
                Some(v) => webhook_url(v, &key("url"), pr),
            };
            let hmac_secret = secret(
                raw.hmac_secret,
                raw.hmac_secret_file.as_ref(),
                raw.hmac_secret_credential.as_ref(),
                base,
                &key("hmac_secret"),
                pr,
            );
            if hmac_secret.as_ref().is_some_and(Secret::is_empty) {
                pr.push(key("hmac_secret"), "empty: remove it or set a secret");
                ok = false;
            }
            url.map(|url| Channel::Webhook(WebhookSettings { url, hmac_secret }))
        }
        Some("email") => {
            foreign(&webhook_keys, "email", pr);
            let starttls = match raw.starttls.as_deref() {
                None => Some(StartTls::Required),
                Some(v) => StartTls::parse(v).or_else(|| {
                    pr.push(
                        key("starttls"),
                        format!("unknown value {v:?} (required, opportunistic, none)"),
                    );
                    None
                }),
            };
            let host = match raw.host.as_deref().map(str::trim) {
                None | Some("") => {
                    pr.push(key("host"), "missing: the SMTP server");
                    None
                }
                Some(h) => Some(h.to_string()),
            };
            if raw.port == Some(0) {
                pr.push(key("port"), "must be 1-65535");
                ok = false;
            }
            let password = secret(
                raw.password,
                raw.password_file.as_ref(),
                raw.password_credential.as_ref(),
                base,
                &key("password"),
                pr,
            );
            if raw.username.is_some() != password.is_some() {
                pr.push(
                    key(if raw.username.is_some() {
                        "password"
                    } else {
                        "username"
                    }),
                    "set both username and password (or neither)",
                );
                ok = false;
            }
            if password.is_some() && starttls == Some(StartTls::None) {
                pr.push(
                    key("starttls"),
                    "\"none\" would send the password in plain text; use \"required\"",
                );
                ok = false;
            }
            let mailbox = |v: &str, k: String, pr: &mut Problems| {
                v.trim()
                    .parse::<lettre::message::Mailbox>()
                    .map_err(|e| pr.push(k, format!("invalid address {v:?}: {e}")))
                    .ok()
            };
            let from = match raw.from.as_deref() {
                None => {
                    pr.push(key("from"), "missing: the sender address");
                    None
                }
                Some(v) => mailbox(v, key("from"), pr),
            };
            let to = match raw.to.map(crate::config::raw::OneOrMany::into_vec) {
                None => {
                    pr.push(key("to"), "missing: the recipient addresses (a list)");
                    None
                }
                Some(v) if v.is_empty() => {
                    pr.push(key("to"), "empty: list at least one recipient");
                    None
                }
                Some(v) => {
                    let all: Vec<_> = v
                        .iter()
                        .enumerate()
                        .map(|(j, a)| mailbox(a, format!("{at}.to[{j}]"), pr))
                        .collect();
                    all.into_iter().collect::<Option<Vec<_>>>()
                }
            };
            match (host, starttls, from, to) {
                (Some(host), Some(starttls), Some(from), Some(to)) => {
                    Some(Channel::Email(EmailSettings {
                        host,
                        port: raw
                            .port
                            .unwrap_or(if starttls == StartTls::None { 25 } else { 587 }),
                        starttls,
                        username: raw.username,
                        password,
                        from,
                        to,
                        subject_prefix: raw.subject_prefix.unwrap_or_else(|| "[dirsync]".into()),
                    }))
                }
                _ => None,
            }
        }
        Some(other) => {
            pr.push(
                key("kind"),
                format!("unknown notification kind {other:?} (webhook, email)"),
            );
            None
        }
        None => {
            pr.push(key("kind"), "missing (kind = \"webhook\" or \"email\")");
            None
        }
    };
    let channel = channel?;
    ok.then_some(NotifyConfig {
        on,
        timeout,
        channel,
    })
}

/// A webhook URL: http(s), a host, no credentials (a query is allowed: some services put their
/// token there; logs never show it).
pub(super) fn webhook_url(v: &str, key: &str, pr: &mut Problems) -> Option<url::Url> {
    match url::Url::parse(v.trim()) {
        Ok(u) if u.scheme() != "http" && u.scheme() != "https" => {
            pr.push(
                key,
                format!("scheme {:?} not allowed (use https://)", u.scheme()),
            );
            None
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => {
            pr.push(key, "URL has no host");
            None
        }
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            pr.push(
                key,
                "URL must not carry credentials; use hmac_secret to authenticate",
            );
            None
        }
        Ok(u) => Some(u),
        Err(e) => {
            // Never echo the URL: its query may hold a token.
            pr.push(key, format!("invalid URL: {e}"));
            None
        }
    }
}
