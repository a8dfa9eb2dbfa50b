//! The `Connector` trait: what the apply engine asks of a vendor API. The engine never matches
//! on vendor names; it reads [`Capabilities`] and calls these methods.

use serde::Serialize;

use crate::mapping::Account;
pub use crate::mapping::RemoteAccount;
use crate::plan::FieldChange;

/// How a target sets roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleSemantics {
    /// The API takes the complete set (Covata `roles`, Primavera `roles`).
    Replace,
    /// The API adds and removes (Valuekeep `roles/add`, `roles/remove`).
    AddRemove,
}

/// What a connector can do; the engine plans its calls from this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Enable / disable / delete many accounts in one call, at most this many per call.
    /// `None`: one call per account.
    pub bulk_status_batch: Option<usize>,
    /// Create many accounts in one call (at most this many). `None`: one call per account.
    pub bulk_create_batch: Option<usize>,
    /// `list_accounts` is available (adoption, drift, crash reconciliation).
    pub can_list: bool,
    pub roles: RoleSemantics,
    /// Changes the target accepted may still be in progress this long after the request
    /// returned (job-based APIs). After an interruption, reconciliation keeps looking for a
    /// `sent` create for up to this long before it is declared not applied (and re-planned).
    pub settle_time: Option<std::time::Duration>,
}

/// Why one operation failed. Messages carry the target's words (the response body, truncated)
/// and never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The account already exists (duplicate email / login): a conflict to resolve by adoption,
    /// never retried.
    #[error("conflict: {message}")]
    Conflict { message: String },
    /// The account is not there (404 on update / enable / disable).
    #[error("not found: {message}")]
    NotFound { message: String },
    /// The target refused the request (400, 403, 422, ...); not retried.
    #[error("rejected ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// The operation cannot be expressed in this API (e.g. an email change on Covata).
    #[error("unsupported: {message}")]
    Unsupported { message: String },
    /// Transport, timeout, 5xx or 429 after the retry budget: the outcome may be unknown.
    #[error("unavailable: {message}")]
    Unavailable { message: String },
    /// The connector could not authenticate: the credentials were refused (by the token
    /// endpoint, or a 401 on a freshly issued token). Fatal for the whole target.
    #[error("authentication failed: {message}")]
    Auth { message: String },
    /// The request never left: DNS failure, connection refused, TLS handshake failure, connect
    /// timeout (after the HTTP layer's retries). Nothing happened on the target, so the
    /// operation was surely not applied. Fatal for the whole target.
    #[error("unreachable: {message}")]
    Unreachable { message: String },
}

impl OpError {
    /// The same error with its message rewritten (e.g. context put in front).
    pub fn map_message(self, f: impl FnOnce(String) -> String) -> OpError {
        match self {
            OpError::Conflict { message } => OpError::Conflict {
                message: f(message),
            },
            OpError::NotFound { message } => OpError::NotFound {
                message: f(message),
            },
            OpError::Rejected { status, message } => OpError::Rejected {
                status,
                message: f(message),
            },
            OpError::Unsupported { message } => OpError::Unsupported {
                message: f(message),
            },
            OpError::Unavailable { message } => OpError::Unavailable {
                message: f(message),
            },
            OpError::Auth { message } => OpError::Auth {
                message: f(message),
            },
            OpError::Unreachable { message } => OpError::Unreachable {
                message: f(message),
            },
        }
    }

    /// Whether this error condemns every other operation of the target too (credentials
    /// refused, host unreachable): the engine then stops sending to the target at once.
    pub fn is_target_fatal(&self) -> bool {
        matches!(self, OpError::Auth { .. } | OpError::Unreachable { .. })
    }
}

/// The outcome of a create: the new account's id, and anything worth reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub remote_id: String,
    /// A partial success the target reported (kept on the operation record).
    pub note: Option<String>,
}

/// One account in a bulk status call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusItem {
    pub key: String,
    pub remote_id: String,
    /// Login or email, for APIs that address accounts by it.
    pub login: Option<String>,
}

/// A status change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusAction {
    Enable,
    Disable,
    Delete,
}

/// [`Connector::find_accounts`] lists the target instead of looking accounts up one by one
/// when asked for more than this many.
pub const LOOKUPS_BEFORE_LISTING: usize = 8;
/// Look-ups [`Connector::find_accounts`] keeps in flight when it does not list (the HTTP
/// client's own concurrency limit still applies).
pub const LOOKUP_CONCURRENCY: usize = 16;

/// A vendor API. Implementations own their HTTP client, auth and pacing; every method is safe
/// to call concurrently.
#[async_trait::async_trait]
pub trait Connector: Send + Sync {
    fn capabilities(&self) -> Capabilities;

    /// Creates one account (enabled, with its roles).
    async fn create(&self, account: &Account) -> Result<Created, OpError>;

    /// Creates many accounts (only called when `bulk_create_batch` is set). The result has one
    /// entry per input, in order.
    async fn create_many(&self, accounts: &[Account]) -> Vec<Result<Created, OpError>> {
        let mut out = Vec::with_capacity(accounts.len());
        for a in accounts {
            out.push(self.create(a).await);
        }
        out
    }

    /// How many creates one `create_many` call gets when the run creates `total` accounts on
    /// this target (`None`: one `create` call per account). Thresholds that apply to a run's
    /// creates (Covata's `bulk_import_min`) are decided here, from the run's total, not from
    /// one batch. Default: `capabilities().bulk_create_batch`.
    fn bulk_create_unit(&self, total: usize) -> Option<usize> {
        let _ = total;
        self.capabilities().bulk_create_batch
    }

    /// Changes only the given fields; `desired` is the complete desired account.
    async fn update(
        &self,
        remote_id: &str,
        changes: &[FieldChange],
        desired: &Account,
    ) -> Result<(), OpError>;

    /// Sets roles: `roles` is the complete desired set, `add`/`remove` the delta.
    async fn set_roles(
        &self,
        remote_id: &str,
        add: &[String],
        remove: &[String],
        roles: &[String],
    ) -> Result<(), OpError>;

    /// Adds and removes target-side groups (`groups` is the complete desired set). Only called
    /// for targets whose spec has groups.
    async fn set_groups(
        &self,
        remote_id: &str,
        add: &[String],
        remove: &[String],
        groups: &[String],
    ) -> Result<(), OpError> {
        let _ = (remote_id, add, remove, groups);
        Err(OpError::Unsupported {
            message: "this target has no user groups".into(),
        })
    }

    /// Enables, disables or deletes accounts; at most `bulk_status_batch` items per call when
    /// set, else one. One result per item, in order. A delete of an account that is already
    /// gone is a success.
    async fn set_status(
        &self,
        action: StatusAction,
        items: &[StatusItem],
    ) -> Vec<Result<(), OpError>>;

    /// How many requests an operation costs on this API (for the plan's duration estimate on
    /// rate-limited targets). Bulk-capable operations are counted per account; the engine
    /// divides by the batch size.
    fn requests_for(&self, op: &crate::plan::Op) -> u32 {
        let _ = op;
        1
    }

    /// `dirsync check`: authenticates and makes one small read, to prove the target is reachable
    /// with these credentials. Changes nothing.
    async fn probe(&self) -> Result<(), OpError> {
        self.find_account("dirsync-check@invalid.invalid")
            .await
            .map(|_| ())
    }

    /// Before a run journals anything for this target: proves the credentials are accepted and
    /// the host is reachable, so that a target-fatal error (`Auth`, `Unreachable`) fails the
    /// target as a whole before anything is journaled. Default: [`Connector::probe`].
    /// Connectors with a token endpoint fetch the token the run then uses (no extra request);
    /// one whose every request authenticates may skip it (its first request's target-fatal
    /// error stops the target just as well).
    async fn preflight(&self) -> Result<(), OpError> {
        self.probe().await
    }

    /// `dirsync check`: what the target's server says it supports, in one line (`None`:
    /// nothing to say beyond the probe).
    async fn describe(&self) -> Result<Option<String>, OpError> {
        Ok(None)
    }

    /// `dirsync check`: which of these role names the target does not know, where the target
    /// can list its roles (`None`: it cannot tell).
    async fn unknown_roles(&self, roles: &[String]) -> Result<Option<Vec<String>>, OpError> {
        let _ = roles;
        Ok(None)
    }

    /// Every account on the target (paged as the API requires).
    async fn list_accounts(&self) -> Result<Vec<RemoteAccount>, OpError>;

    /// Looks many accounts up at once (crash reconciliation of many `sent` creates): one entry
    /// per login, in order. The default lists the target once when it can list and more than
    /// [`LOOKUPS_BEFORE_LISTING`] logins are asked (matching as the default `find_account`: the
    /// account's login, else its email, case-insensitively), else looks each up, concurrently.
    async fn find_accounts(
        &self,
        logins: &[String],
    ) -> Result<Vec<Option<RemoteAccount>>, OpError> {
        use futures::StreamExt;
        if self.capabilities().can_list && logins.len() > LOOKUPS_BEFORE_LISTING {
            let all = self.list_accounts().await?;
            let mut by_login: std::collections::HashMap<String, RemoteAccount> =
                std::collections::HashMap::with_capacity(all.len());
            for a in all {
                if let Some(l) = a.login.as_deref().or(a.email.as_deref()) {
                    by_login.entry(crate::model::email_fold(l)).or_insert(a);
                }
            }
            return Ok(logins
                .iter()
                .map(|l| by_login.get(&crate::model::email_fold(l)).cloned())
                .collect());
        }
        let mut lookups = Vec::with_capacity(logins.len());
        for l in logins {
            lookups.push(self.find_account(l));
        }
        let found: Vec<Result<Option<RemoteAccount>, OpError>> = futures::stream::iter(lookups)
            .buffered(LOOKUP_CONCURRENCY)
            .collect()
            .await;
        found.into_iter().collect()
    }

    /// Looks an account up by its login / email (crash reconciliation: did a create that was
    /// sent take effect?). The default lists everything.
    async fn find_account(&self, login: &str) -> Result<Option<RemoteAccount>, OpError> {
        let all = self.list_accounts().await?;
        Ok(all.into_iter().find(|a| {
            a.login
                .as_deref()
                .or(a.email.as_deref())
                .is_some_and(|l| crate::model::email_eq(l, login))
        }))
    }
}
