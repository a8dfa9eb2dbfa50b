//! The Covata Access Service connector: users under `/api/v1/users` (create, update, roles,
//! bulk status actions, CSV import, listing), with OAuth2 password-grant tokens.
//!
//! # Assumptions where the contract is silent
//!
//! Each is kept in one place (named in brackets) so that a customer whose server differs can be
//! served by changing that place.
//!
//! - **Paging** ([`LIST_PAGE`], `wire::parse_page`): `GET /api/v1/users?offset=N&limit=100`
//!   answers `{"items":[...],"count":N,"offset":N}` as Covata's other lists do; a bare array is
//!   taken as the whole list. Listing stops at an empty page or once `offset + items >= count`
//!   (without `count`: at a short page). A page with only already-seen ids is an error (the
//!   server ignores `offset`).
//! - **Email filter** ([`CovataConnector::find_account`]): `GET /api/v1/users?email=..` filters
//!   by "email contains"; the exact match is made here (case-insensitive). When the filter is
//!   refused (400/404/422) or its page is not the whole result, the full listing is searched.
//! - **Clearing a field** (`wire::CLEARED_VALUE`): a field no longer mapped is sent as `""` in
//!   the PUT (not JSON null, which partial-update APIs often read as "unchanged"). The PUT is
//!   taken to change only the fields it names.
//! - **Email changes**: the PUT has no email field, so an email change is `Unsupported` and
//!   nothing is sent.
//! - **Field types**: every field (`planId` too) is sent as a JSON string; listed values of any
//!   scalar type are read as text, `planId` falls back to `plan.id`, empty values count as
//!   absent, and a record without `enabled` counts as enabled.
//! - **Create conflicts** (`wire::is_duplicate_message`): 409, or a 400 whose body says
//!   "duplicate", "already ..." or "... exists" (not "does not exist"), is a `Conflict`.
//! - **Import CSV** (`wire::import_csv`): header `Email,First Name,Last Name,Mobile Number,Role,
//!   Account Type,Plan` (the admin guide's template), `\n` line ends, several roles joined with
//!   `;`, `Account Type` empty (server default), `Plan` holding `planId`. `otherName` has no
//!   column: it is set by a PUT after the import (a failure there is a note on the created
//!   account). Accounts with a line break in a value are created one by one instead (it would
//!   shift line numbers).
//! - **Import errors** (`wire::match_import_errors`): each string is about the account whose
//!   email it contains (whole address, case-insensitive, longest match), else the account on
//!   the `Line <n>` it names (header = line 1). Duplicate wording → `Conflict`, otherwise
//!   `Rejected` with the import answer's HTTP status (200). An error matching no account is
//!   quoted on every imported account that then cannot be found by the re-listing.
//! - **Bulk actions**: the API answers only 200, so a 2xx means every id of the batch
//!   succeeded; ids unknown to the server are not reported (a delete of a gone account is a
//!   success, as the engine expects).

mod auth;
pub mod settings;
mod wire;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use url::Url;

use crate::connector::TargetConfig;
use crate::connector::api::{
    Capabilities, Connector, Created, OpError, RemoteAccount, RoleSemantics, StatusAction,
    StatusItem,
};
use crate::connector::http::{
    CachedToken, HttpClient, HttpError, Request, TokenSource, UrlBuilder,
};
use crate::mapping::Account;
use crate::model::email_eq;
use crate::plan::FieldChange;
use settings::CovataSettings;

use auth::CovataAuth;

/// Users asked for per page when listing (ASSUMED `limit` parameter).
pub const LIST_PAGE: usize = 100;

/// The Covata connector of one target.
#[derive(Debug)]
pub struct CovataConnector {
    http: HttpClient,
    base: Url,
    tokens: Arc<CachedToken>,
    batch_size: usize,
    expire_sessions_on_disable: bool,
    bulk_import_min: Option<usize>,
    /// Accounts per uploaded import file.
    import_batch_size: usize,
}

fn setup_error(target: &TargetConfig, message: impl Into<String>) -> HttpError {
    HttpError::Setup {
        target: target.name.clone(),
        message: message.into(),
    }
}

impl CovataConnector {
    /// A connector for `target` (its base URL, credentials, HTTP settings, batch size,
    /// `expire_sessions_on_disable` and `bulk_import_min`). Nothing is sent until the first
    /// call.
    pub fn new(target: &TargetConfig, s: &CovataSettings) -> Result<CovataConnector, HttpError> {
        let missing = |what: &str| setup_error(target, format!("covata needs the setting {what}"));
        let username = Some(s.username.clone())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| missing("username"))?;
        let password = super::read_secret(target, &s.password)?;
        let client_id = Some(s.client_id.clone())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| missing("client_id"))?;
        let client_secret = super::read_secret(target, &s.client_secret)?;
        let http = HttpClient::new(&target.name, &target.http)?;
        let token_url = http.url(UrlBuilder::new(&target.base_url).path("api/oauth/token"))?;
        let tokens = Arc::new(CachedToken::new(
            &http,
            CovataAuth {
                http: http.clone(),
                token_url,
                username,
                password,
                client_id,
                client_secret,
            },
        ));
        Ok(CovataConnector {
            http,
            base: target.base_url.clone(),
            tokens,
            batch_size: target.batch_size.max(1),
            expire_sessions_on_disable: s.expire_sessions_on_disable,
            bulk_import_min: s.bulk_import_min,
            import_batch_size: s.import_batch_size.max(1),
        })
    }

    fn url(&self, path: &str, id: Option<&str>) -> Result<Url, OpError> {
        let mut b = UrlBuilder::new(&self.base).path(path);
        if let Some(id) = id {
            b = b.id(id);
        }
        Ok(self.http.url(b)?)
    }

    fn authed(&self, req: Request) -> Request {
        let source: Arc<dyn TokenSource> = self.tokens.clone();
        req.bearer(source)
    }

    /// `POST /api/v1/users/bulk?action=..` with `{"ids":[...]}` (idempotent).
    async fn bulk(&self, action: &str, ids: &[&str]) -> Result<(), OpError> {
        let url = self.url("api/v1/users/bulk", None)?;
        let req = Request::post(url)
            .query("action", action)
            .json(wire::ids_body(ids))
            .idempotent(true);
        self.http.send(self.authed(req)).await?;
        Ok(())
    }

    /// One batch of a status change: expire first when configured, then the action.
    async fn status_batch(&self, action: StatusAction, ids: &[&str]) -> Result<(), OpError> {
        let (name, verb) = match action {
            StatusAction::Enable => ("enable", "enabled"),
            StatusAction::Disable => ("disable", "disabled"),
            StatusAction::Delete => ("delete", "deleted"),
        };
        if self.expire_sessions_on_disable && action != StatusAction::Enable {
            self.bulk("expire", ids).await.map_err(|e| {
                with_context(
                    e,
                    &format!(
                        "expiring the sessions failed, so the accounts were not {verb} \
                         (expire_sessions_on_disable)"
                    ),
                )
            })?;
        }
        self.bulk(name, ids).await
    }

    /// One GET of the user list.
    async fn page(&self, offset: usize, email: Option<&str>) -> Result<wire::Page, OpError> {
        let mut req = Request::get(self.url("api/v1/users", None)?);
        if let Some(e) = email {
            req = req.query("email", e);
        } else {
            req = req.query("offset", &offset.to_string());
        }
        req = req.query("limit", &LIST_PAGE.to_string());
        let resp = self.http.send(self.authed(req)).await?;
        let body: Value = resp.json()?;
        wire::parse_page(&body).map_err(|m| OpError::from(resp.decode_error(m)))
    }

    /// Creates one account per call, concurrently (the client limits how many at once).
    async fn create_each(&self, accounts: &[&Account]) -> Vec<Result<Created, OpError>> {
        futures::future::join_all(accounts.iter().map(|a| self.create(a))).await
    }

    /// Sends one import file. Per account: `Some(result)` when the answer decides it (an
    /// error for it, or the whole call failed), `None` when it should now exist. Also the
    /// errors that match no account, and why the answer could not be read (if so).
    async fn import_batch(&self, accounts: &[&Account]) -> ImportOutcome {
        let fail_all = |e: OpError| ImportOutcome {
            results: accounts.iter().map(|_| Some(Err(e.clone()))).collect(),
            unmatched: Vec::new(),
        };
        let csv = match wire::import_csv(accounts) {
            Ok(c) => c,
            Err(m) => {
                return fail_all(OpError::Unavailable {
                    message: format!("cannot write the import file: {m}"),
                });
            }
        };
        let url = match self.url("api/v1/users/import", None) {
            Ok(u) => u,
            Err(e) => return fail_all(e),
        };
        // Not idempotent: a second import of the same rows would report them as duplicates.
        let req =
            Request::post(url).multipart_file("file", "users.csv", "text/csv", Bytes::from(csv));
        let resp = match self.http.send(self.authed(req)).await {
            Ok(r) => r,
            Err(e) => return fail_all(e.into()),
        };
        let errors = resp
            .json::<Value>()
            .map_err(|e| e.to_string())
            .and_then(|v| wire::import_errors(&v));
        match errors {
            Ok(errors) => {
                let (per, unmatched) = wire::match_import_errors(accounts, &errors);
                ImportOutcome {
                    results: per
                        .iter()
                        .map(|errs| {
                            (!errs.is_empty()).then(|| Err(wire::import_error(resp.status, errs)))
                        })
                        .collect(),
                    unmatched,
                }
            }
            // The rows may well have been imported: let the re-listing decide.
            Err(m) => ImportOutcome {
                results: accounts.iter().map(|_| None).collect(),
                unmatched: vec![format!("the import answer could not be read: {m}")],
            },
        }
    }

    /// Creates through `POST /api/v1/users/import`, then learns the new ids by listing.
    async fn import(&self, accounts: &[Account]) -> Vec<Result<Created, OpError>> {
        let mut results: Vec<Option<Result<Created, OpError>>> = vec![None; accounts.len()];
        let (csv_ok, one_by_one): (Vec<usize>, Vec<usize>) =
            (0..accounts.len()).partition(|&i| wire::importable(&accounts[i]));

        let singles: Vec<&Account> = one_by_one.iter().map(|&i| &accounts[i]).collect();
        for (&i, r) in one_by_one.iter().zip(self.create_each(&singles).await) {
            results[i] = Some(r);
        }

        let mut pending = Vec::new();
        let mut unmatched = Vec::new();
        for chunk in csv_ok.chunks(self.import_batch_size) {
            let batch: Vec<&Account> = chunk.iter().map(|&i| &accounts[i]).collect();
            let outcome = self.import_batch(&batch).await;
            unmatched.extend(outcome.unmatched);
            for (&i, r) in chunk.iter().zip(outcome.results) {
                match r {
                    Some(r) => results[i] = Some(r),
                    None => pending.push(i),
                }
            }
        }

        if !pending.is_empty() {
            let not_found = |why: &str| {
                let mut message = why.to_string();
                if !unmatched.is_empty() {
                    message.push_str(&format!(" (import errors: {})", unmatched.join("; ")));
                }
                OpError::Unavailable {
                    message: crate::connector::http::truncate_body(message.as_bytes()),
                }
            };
            match self.list_accounts().await {
                Ok(listed) => {
                    let by_email: BTreeMap<String, &RemoteAccount> = listed
                        .iter()
                        .filter_map(|r| Some((r.email.as_deref()?.trim().to_lowercase(), r)))
                        .collect();
                    for &i in &pending {
                        let a = &accounts[i];
                        let found = a
                            .fields
                            .get("email")
                            .and_then(|e| by_email.get(&e.trim().to_lowercase()));
                        results[i] = Some(match found {
                            Some(remote) => Ok(Created {
                                remote_id: remote.remote_id.clone(),
                                note: self.after_import(a, remote).await,
                            }),
                            None => Err(not_found("not found after import")),
                        });
                    }
                }
                Err(e) => {
                    for &i in &pending {
                        results[i] = Some(Err(not_found(&format!(
                            "imported, but the users could not be listed to learn the new ids: {e}"
                        ))));
                    }
                }
            }
        }

        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(OpError::Unavailable {
                        message: "no result for this account".to_string(),
                    })
                })
            })
            .collect()
    }

    /// What the import could not set: `otherName` (no CSV column). A failure is a note.
    async fn after_import(&self, account: &Account, remote: &RemoteAccount) -> Option<String> {
        let other = account.fields.get("otherName")?;
        if remote.fields.get("otherName") == Some(other) {
            return None;
        }
        let change = FieldChange {
            field: "otherName".to_string(),
            before: None,
            after: Some(other.clone()),
        };
        match self.update(&remote.remote_id, &[change], account).await {
            Ok(()) => None,
            Err(e) => Some(format!(
                "created by import, but otherName could not be set: {e}"
            )),
        }
    }
}

struct ImportOutcome {
    results: Vec<Option<Result<Created, OpError>>>,
    unmatched: Vec<String>,
}

/// The same error with `context` in front of its message.
fn with_context(e: OpError, context: &str) -> OpError {
    e.map_message(|m| format!("{context}: {m}"))
}

/// A create's error: 409, or a 400 saying the email exists, is a `Conflict` naming the email.
fn create_error(e: HttpError, email: &str) -> OpError {
    let duplicate = match e.status() {
        Some(409) => true,
        Some(400) => e.body().is_some_and(wire::is_duplicate_message),
        _ => false,
    };
    if !duplicate {
        return e.into();
    }
    let said = e.body().filter(|b| !b.is_empty()).unwrap_or("HTTP 409");
    OpError::Conflict {
        message: format!("a Covata user with the email {email} already exists: {said}"),
    }
}

#[async_trait::async_trait]
impl Connector for CovataConnector {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            bulk_status_batch: Some(self.batch_size),
            bulk_create_batch: self.bulk_import_min.map(|_| self.batch_size),
            can_list: true,
            roles: RoleSemantics::Replace,
            settle_time: None,
        }
    }

    async fn create(&self, account: &Account) -> Result<Created, OpError> {
        let email = account
            .fields
            .get("email")
            .map(String::as_str)
            .unwrap_or("");
        let url = self.url("api/v1/users", None)?;
        let req = Request::post(url).json(wire::create_body(account));
        let resp = self
            .http
            .send(self.authed(req))
            .await
            .map_err(|e| create_error(e, email))?;
        let body: Value = resp.json().map_err(|e| OpError::Unavailable {
            message: format!("the user was probably created, but the answer is unreadable: {e}"),
        })?;
        match wire::created_id(&body) {
            Some(id) if !id.is_empty() => Ok(Created {
                remote_id: id,
                note: None,
            }),
            _ => Err(OpError::Unavailable {
                message: format!("the user {email} was probably created, but the answer has no id"),
            }),
        }
    }

    /// The password grant (cached for the run's requests): refused credentials and an
    /// unreachable host show here, before anything is journaled.
    async fn preflight(&self) -> Result<(), OpError> {
        self.tokens.token().await.map(|_| ()).map_err(OpError::from)
    }

    /// With `bulk_import_min` set and reached by the run's creates, all of them go to one
    /// `create_many` call: it uploads files of `import_batch_size` and lists the users once.
    fn bulk_create_unit(&self, total: usize) -> Option<usize> {
        self.bulk_import_min
            .filter(|&min| total >= min.max(1))
            .map(|_| total.max(1))
    }

    /// Called by the engine only when [`Connector::bulk_create_unit`] chose the import (the
    /// run's creates reached `bulk_import_min`), so every account given is imported.
    async fn create_many(&self, accounts: &[Account]) -> Vec<Result<Created, OpError>> {
        match self.bulk_import_min {
            Some(_) => self.import(accounts).await,
            None => {
                let refs: Vec<&Account> = accounts.iter().collect();
                self.create_each(&refs).await
            }
        }
    }

    async fn update(
        &self,
        remote_id: &str,
        changes: &[FieldChange],
        _desired: &Account,
    ) -> Result<(), OpError> {
        let body = match wire::update_body(changes) {
            Ok(Some(body)) => body,
            Ok(None) => return Ok(()),
            Err(message) => return Err(OpError::Unsupported { message }),
        };
        let url = self.url("api/v1/users", Some(remote_id))?;
        self.http
            .send(self.authed(Request::put(url).json(body)))
            .await?;
        Ok(())
    }

    async fn set_roles(
        &self,
        remote_id: &str,
        _add: &[String],
        _remove: &[String],
        roles: &[String],
    ) -> Result<(), OpError> {
        let url = self.url("api/v1/users", Some(remote_id))?;
        self.http
            .send(self.authed(Request::put(url).json(wire::roles_body(roles))))
            .await?;
        Ok(())
    }

    async fn set_status(
        &self,
        action: StatusAction,
        items: &[StatusItem],
    ) -> Vec<Result<(), OpError>> {
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(self.batch_size) {
            let ids: Vec<&str> = chunk.iter().map(|i| i.remote_id.as_str()).collect();
            let result = self.status_batch(action, &ids).await;
            out.extend(chunk.iter().map(|_| result.clone()));
        }
        out
    }

    async fn list_accounts(&self) -> Result<Vec<RemoteAccount>, OpError> {
        let mut all = Vec::new();
        let mut seen = HashSet::new();
        let mut offset = 0usize;
        loop {
            let page = self.page(offset, None).await?;
            let n = page.items.len();
            if n == 0 {
                break;
            }
            let mut new = 0;
            for item in page.items {
                // An account created while listing can shift a page: keep the first copy.
                if seen.insert(item.remote_id.clone()) {
                    all.push(item);
                    new += 1;
                }
            }
            if new == 0 {
                return Err(OpError::Unavailable {
                    message: format!(
                        "listing users: the page at offset {offset} repeats earlier users \
                         (the server ignores the offset parameter?)"
                    ),
                });
            }
            offset += n;
            let done = match page.count {
                Some(count) => offset as u64 >= count,
                None => n < LIST_PAGE,
            };
            if done {
                break;
            }
        }
        Ok(all)
    }

    async fn find_account(&self, login: &str) -> Result<Option<RemoteAccount>, OpError> {
        let matches = |a: &RemoteAccount| a.email.as_deref().is_some_and(|e| email_eq(e, login));
        match self.page(0, Some(login)).await {
            Ok(page) => {
                let complete = match page.count {
                    Some(count) => page.items.len() as u64 >= count,
                    None => page.items.len() < LIST_PAGE,
                };
                if let Some(hit) = page.items.iter().find(|a| matches(a)) {
                    return Ok(Some(hit.clone()));
                }
                if complete {
                    return Ok(None);
                }
            }
            Err(OpError::Rejected { .. } | OpError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        Ok(self.list_accounts().await?.into_iter().find(|a| matches(a)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    use crate::connector::{HttpSettings, TargetKind, VendorSettings};
    use crate::mapping::{TargetMapping, UserFilter};
    use crate::secret::SecretRef;

    fn target(bulk_import_min: Option<usize>) -> TargetConfig {
        TargetConfig {
            name: "cov".into(),
            kind: TargetKind::Covata,
            enabled: true,
            base_url: Url::parse("https://covata.example/prefix/").unwrap(),
            mapping: TargetMapping {
                group_rules: vec![],
                default_groups: vec![],
                fields: vec![],
                role_rules: vec![],
                default_roles: vec![],
                filter: UserFilter::default(),
                login_field: "email".into(),
            },
            on_missing: Default::default(),
            delete_after: Duration::ZERO,
            http: HttpSettings::default(),
            batch_size: 250,
            recreate_deleted: false,
            vendor: VendorSettings::Covata(CovataSettings {
                username: "svc".into(),
                password: SecretRef::inline("target[0].password", "pw-hunter2"),
                client_id: "cid".into(),
                client_secret: SecretRef::inline("target[0].client_secret", "cs-hunter3"),
                expire_sessions_on_disable: true,
                bulk_import_min,
                import_batch_size: 1000,
            }),
        }
    }

    /// The connector of a test target.
    fn connector(t: &TargetConfig) -> Result<CovataConnector, HttpError> {
        match &t.vendor {
            VendorSettings::Covata(s) => CovataConnector::new(t, s),
            other => panic!("not a Covata target: {other:?}"),
        }
    }

    fn settings(t: &mut TargetConfig) -> &mut CovataSettings {
        match &mut t.vendor {
            VendorSettings::Covata(s) => s,
            other => panic!("not a Covata target: {other:?}"),
        }
    }

    #[test]
    fn capabilities_follow_the_settings() {
        let c = connector(&target(None)).unwrap();
        assert_eq!(
            c.capabilities(),
            Capabilities {
                bulk_status_batch: Some(250),
                bulk_create_batch: None,
                can_list: true,
                roles: RoleSemantics::Replace,
                settle_time: None,
            }
        );
        let c = connector(&target(Some(20))).unwrap();
        assert_eq!(c.capabilities().bulk_create_batch, Some(250));
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter"), "{debug}");
        assert_eq!(
            c.url("api/v1/users", Some("a/b")).unwrap().as_str(),
            "https://covata.example/prefix/api/v1/users/a%2Fb"
        );
    }

    #[test]
    fn missing_credentials_are_named() {
        let mut t = target(None);
        settings(&mut t).client_secret = SecretRef::inline("target[0].client_secret", " ");
        let e = connector(&t).unwrap_err();
        assert!(e.to_string().contains("client_secret"), "{e}");
        let mut t = target(None);
        settings(&mut t).password = SecretRef::inline("target[0].password", "");
        let e = connector(&t).unwrap_err();
        assert!(e.to_string().contains("password") && !e.to_string().contains("hunter"));
    }

    fn status(status: u16, body: &str) -> HttpError {
        HttpError::Status {
            target: "cov".into(),
            method: "POST".into(),
            path: "/api/v1/users".into(),
            status,
            body: body.into(),
            attempts: 1,
        }
    }

    #[test]
    fn create_errors() {
        let conflict = |e: OpError| match e {
            OpError::Conflict { message } => message,
            other => panic!("{other:?}"),
        };
        let m = conflict(create_error(status(409, ""), "a@x.io"));
        assert!(m.contains("a@x.io") && m.contains("HTTP 409"), "{m}");
        let m = conflict(create_error(status(400, "User already exists"), "a@x.io"));
        assert!(
            m.contains("a@x.io") && m.contains("User already exists"),
            "{m}"
        );
        assert_eq!(
            create_error(status(400, "invalid role"), "a@x.io"),
            OpError::Rejected {
                status: 400,
                message: "invalid role".into()
            }
        );
        assert!(matches!(
            create_error(status(422, "already there"), "a@x.io"),
            OpError::Rejected { status: 422, .. }
        ));
        assert!(matches!(
            create_error(status(500, "already exists"), "a@x.io"),
            OpError::Unavailable { .. }
        ));
    }

    #[test]
    fn context_keeps_the_kind() {
        let e = with_context(
            OpError::Rejected {
                status: 400,
                message: "bad".into(),
            },
            "expiring failed",
        );
        assert_eq!(
            e,
            OpError::Rejected {
                status: 400,
                message: "expiring failed: bad".into()
            }
        );
    }
}
