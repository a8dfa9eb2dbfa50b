//! `[[notify]]` settings as validated: which runs notify and where (webhook, e-mail).
//! Sending them is `crate::notify`'s job.

use std::time::Duration;

use serde::Serialize;

use crate::secret::Secret;

/// The default time bound of one entry, all attempts included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// When an entry notifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyOn {
    Failed,
    Partial,
    Blocked,
    /// Any run that planned or applied changes.
    Changes,
    /// Every run, dry runs included.
    Always,
}

impl NotifyOn {
    pub const ALL: [NotifyOn; 5] = [
        NotifyOn::Failed,
        NotifyOn::Partial,
        NotifyOn::Blocked,
        NotifyOn::Changes,
        NotifyOn::Always,
    ];
    /// `on` when not set.
    pub const DEFAULT: [NotifyOn; 3] = [NotifyOn::Failed, NotifyOn::Partial, NotifyOn::Blocked];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyOn::Failed => "failed",
            NotifyOn::Partial => "partial",
            NotifyOn::Blocked => "blocked",
            NotifyOn::Changes => "changes",
            NotifyOn::Always => "always",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        NotifyOn::ALL.into_iter().find(|o| o.as_str() == s.trim())
    }
}

/// One validated `[[notify]]` entry.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Non-empty.
    pub on: Vec<NotifyOn>,
    /// Time bound of the whole delivery (all attempts).
    pub timeout: Duration,
    pub channel: Channel,
}

/// Where a notification goes.
#[derive(Debug, Clone)]
pub enum Channel {
    Webhook(WebhookSettings),
    Email(EmailSettings),
}

impl Channel {
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Webhook(_) => "webhook",
            Channel::Email(_) => "email",
        }
    }
}

/// `kind = "webhook"`.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: url::Url,
    /// Signs the body (`X-Dirsync-Signature: sha256=<hex>`).
    pub hmac_secret: Option<Secret>,
}

/// `starttls` of an e-mail entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTls {
    /// STARTTLS or no mail (the default).
    Required,
    /// STARTTLS when the server offers it, else plain text.
    Opportunistic,
    /// Plain text: only for local relays and tests.
    None,
}

impl StartTls {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "required" => Some(StartTls::Required),
            "opportunistic" => Some(StartTls::Opportunistic),
            "none" => Some(StartTls::None),
            _ => None,
        }
    }
}

/// `kind = "email"`.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    pub host: String,
    /// Default 587 (25 with `starttls = "none"`).
    pub port: u16,
    pub starttls: StartTls,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub from: lettre::message::Mailbox,
    /// Non-empty.
    pub to: Vec<lettre::message::Mailbox>,
    /// Default `[dirsync]`.
    pub subject_prefix: String,
}
