//! The Valuekeep connector: users under `<base_url>/api/{tenantKey}/{orgKey}/identity/users`
//! (create, per-attribute updates, role deltas, isActive / status, delete, OData listing), with
//! OAuth2 client-credentials tokens from `token_url`.
//!
//! Every API call of a target goes through its one [`HttpClient`], so `requests_per_second`
//! (default 1.0 for Valuekeep: the 60 requests a minute per client of the sibling Jasmin API)
//! paces all of them together; a 429 is retried after its `Retry-After`. Token requests (one
//! per token life, to the identity server) are not paced: the request that needs the token
//! already waited for its slot, and its token is taken right before it is written.
//!
//! # Addressing: `remote_id` and the userKey
//!
//! Valuekeep addresses per-user calls by the CURRENT `userKey`, which the source can change.
//! The remote id dirsync records is the record's `id` (from the create answer, or the
//! listing), which never changes. So:
//! - **delete** goes to `DELETE /identity/users/{id}` ("DELETE User by identifier"): no key
//!   needed; a 404 means already gone (a success, logged).
//! - the other calls need the key. The connector remembers `id → userKey` (from creates,
//!   listings, look-ups, successful calls and the renames it makes itself).
//! - **update** otherwise takes its key from the changes: the `before` of a userKey change,
//!   else the desired `userKey` (both come from the state dirsync recorded, which it keeps up to
//!   date after every update). The userKey PUT is sent LAST, so the earlier calls of the same
//!   update use the old key.
//! - **enable / disable / role changes** otherwise look the key up with
//!   `GET /identity/users/{id}` (one request) first. `StatusItem.login` is deliberately not
//!   used: the recorded login is not refreshed after a userKey change, and the old key may
//!   belong to another user by now — a disable must never hit the wrong account.
//! - a call answered 404 with a remembered or derived key looks the id up and, when the server
//!   knows it under another key (renamed elsewhere), is sent once more to that key.
//!
//! [`Connector::requests_for`] counts the look-up for enable / disable / role changes (it is
//! skipped when an earlier operation of the same run already learned the key, e.g. an update
//! of the same account), so the plan's duration estimate is an upper bound.
//!
//! # Assumptions where the contract is silent
//!
//! - **Token request** (`auth::CLIENT_AUTH`): the client id and secret go in the form body.
//! - **Create answer** (`wire::created_id`): the id is the body (JSON string / number / bare
//!   text, or an object with `id`), else the `Location` header's last segment.
//! - **Clearing** (`wire::field_calls`): an optional attribute no longer mapped (`email`) is
//!   `PUT` as JSON `null`; required ones cannot be cleared.
//! - **Role deltas** (`roles/add`, `roles/remove`): adding a role the user has, or removing one
//!   it lacks, is harmless, so these POSTs are retried like idempotent calls. The add is sent
//!   before the remove (a user is never left without roles in between).
//! - **Listing** (`wire::parse_page`): `GET /identity/users/odata?$top=100&$skip=N` answers
//!   `{"items":[...],"nextPageLink":"..."}`; a `nextPageLink` (absolute on the same origin, or
//!   relative) is followed; without that member a full page means "ask for the next `$skip`".
//! - **Enabled**: `isActive` when listed, else `status` (2 = Inactive), else enabled.
//! - **Invitation** (`wire::invitation_body`): `{"userKey","email","name"}`; a failure is a
//!   note on the created account, not a failed create. Not retried after a 5xx (it could send
//!   the mail twice).
//! - **Delete**: by the record id; a 404 means already gone: a success.

mod auth;
pub mod settings;
mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

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
use crate::plan::{FieldChange, Op};
use settings::ValuekeepSettings;

use auth::ValuekeepAuth;

/// Records asked for per page when listing (the API's maximum).
pub const LIST_PAGE: usize = 100;

/// A listing that has not ended after this many pages is an error (a server looping links).
const MAX_PAGES: usize = 100_000;

/// The Valuekeep connector of one target.
#[derive(Debug)]
pub struct ValuekeepConnector {
    http: HttpClient,
    base: Url,
    tenant_key: String,
    org_key: String,
    tokens: Arc<CachedToken>,
    send_invitation: bool,
    set_status: bool,
    /// Record id → its userKey as last seen (see the module docs).
    keys: Mutex<HashMap<String, String>>,
}

/// One per-user call, addressed by the user's key.
#[derive(Debug)]
enum Call<'a> {
    /// `PUT /identity/users/{userKey}/{attribute}` with the raw JSON value.
    Put {
        attribute: &'a str,
        value: &'a Value,
    },
    /// `POST /identity/users/{userKey}/roles/{add|remove}` with a JSON array.
    Roles {
        action: &'a str,
        roles: &'a [String],
    },
    /// `POST /identity/users/{userKey}/groups/{add|remove}` with a JSON array.
    Groups {
        action: &'a str,
        groups: &'a [String],
    },
    /// `DELETE /identity/users/{userKey}`.
    Delete,
}

fn setup_error(target: &TargetConfig, message: impl Into<String>) -> HttpError {
    HttpError::Setup {
        target: target.name.clone(),
        message: message.into(),
    }
}

impl ValuekeepConnector {
    /// A connector for `target` (base URL, tenant and organization keys, client credentials,
    /// token URL and scope, HTTP settings, `send_invitation`, `set_status`). Nothing is sent
    /// until the first call.
    pub fn new(
        target: &TargetConfig,
        s: &ValuekeepSettings,
    ) -> Result<ValuekeepConnector, HttpError> {
        let missing =
            |what: &str| setup_error(target, format!("valuekeep needs the setting {what}"));
        let text = |v: &String, what: &str| {
            Some(v.clone())
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| missing(what))
        };
        let client_id = text(&s.client_id, "client_id")?;
        let tenant_key = text(&s.tenant_key, "tenant_key")?;
        let org_key = text(&s.org_key, "org_key")?;
        let client_secret = super::read_secret(target, &s.client_secret)?;
        let token_url = s.token_url.clone();
        let scope = Some(s.scope.clone())
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "application".to_string());
        let http = HttpClient::new(&target.name, &target.http)?;
        let tokens = Arc::new(CachedToken::new(
            &http,
            ValuekeepAuth {
                http: http.clone(),
                token_url,
                scope,
                client_id,
                client_secret,
                client_auth: auth::CLIENT_AUTH,
            },
        ));
        let connector = ValuekeepConnector {
            http,
            base: target.base_url.clone(),
            tenant_key,
            org_key,
            tokens,
            send_invitation: s.send_invitation,
            set_status: s.set_status,
            keys: Mutex::new(HashMap::new()),
        };
        // Fail now, not on the first call, when the keys cannot be path segments.
        connector
            .http
            .url(connector.users(None))
            .map_err(|e| setup_error(target, e.to_string()))?;
        Ok(connector)
    }

    /// `<base>/api/{tenantKey}/{orgKey}/identity/users[/{userKey}]`.
    fn users(&self, key: Option<&str>) -> UrlBuilder {
        let mut b = UrlBuilder::new(&self.base)
            .path("api")
            .id(&self.tenant_key)
            .id(&self.org_key)
            .path("identity/users");
        if let Some(k) = key {
            b = b.id(k);
        }
        b
    }

    fn url(&self, key: Option<&str>, tail: &str) -> Result<Url, HttpError> {
        self.http.url(self.users(key).path(tail))
    }

    fn authed(&self, req: Request) -> Request {
        let source: Arc<dyn TokenSource> = self.tokens.clone();
        req.bearer(source)
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, id: &str, key: &str) {
        self.keys().insert(id.to_string(), key.to_string());
    }

    fn forget(&self, id: &str) {
        self.keys().remove(id);
    }

    fn cached_key(&self, id: &str) -> Option<String> {
        self.keys().get(id).cloned()
    }

    /// The userKey of the record `id` as the server has it now (`None`: no such record).
    async fn fetch_key(&self, id: &str) -> Result<Option<String>, OpError> {
        let req = Request::get(self.url(Some(id), "")?);
        let resp = match self.http.send(self.authed(req)).await {
            Ok(r) => r,
            Err(e) if e.status() == Some(404) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let body: Value = resp.json()?;
        let account = wire::remote_account(&body).map_err(|m| resp.decode_error(m))?;
        let key = account.login.unwrap_or_default();
        self.remember(id, &key);
        Ok(Some(key))
    }

    /// Sends one per-user call to `key`.
    async fn send_call(&self, key: &str, call: &Call<'_>) -> Result<(), HttpError> {
        let req = match call {
            Call::Put { attribute, value } => {
                Request::put(self.url(Some(key), attribute)?).json((*value).clone())
            }
            Call::Roles { action, roles } => {
                Request::post(self.url(Some(key), &format!("roles/{action}"))?)
                    .json(wire::strings(roles.iter()))
                    .idempotent(true)
            }
            Call::Groups { action, groups } => {
                Request::post(self.url(Some(key), &format!("groups/{action}"))?)
                    .json(wire::strings(groups.iter()))
                    .idempotent(true)
            }
            Call::Delete => Request::delete(self.url(Some(key), "")?),
        };
        self.http.send(self.authed(req)).await?;
        Ok(())
    }

    /// Sends `call` to the record `id`, addressed by its current key (see the module docs);
    /// returns the key that worked. A 404 with a remembered or hinted key looks the id up and,
    /// when the server knows it under another key, sends the call once more.
    async fn with_key(
        &self,
        id: &str,
        hint: Option<&str>,
        call: &Call<'_>,
    ) -> Result<String, OpError> {
        let guess = self
            .cached_key(id)
            .or_else(|| hint.filter(|h| !h.is_empty()).map(str::to_string));
        let (key, looked_up) = match guess {
            Some(k) => (k, false),
            None => match self.fetch_key(id).await? {
                Some(k) => (k, true),
                None => return Err(not_found(id)),
            },
        };
        match self.send_call(&key, call).await {
            Ok(()) => {
                self.remember(id, &key);
                Ok(key)
            }
            Err(e) if e.status() == Some(404) && !looked_up => match self.fetch_key(id).await? {
                Some(current) if current != key => {
                    tracing::info!(
                        target = %self.http.target(),
                        remote_id = %id,
                        "the account's userKey changed on the target; addressing it by the current one"
                    );
                    self.send_call(&current, call).await?;
                    Ok(current)
                }
                Some(_) => Err(e.into()),
                None => Err(not_found(id)),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// One enable / disable / delete. `StatusItem.login` is not trusted as the key: the
    /// recorded login can be stale after a userKey change, and another user may hold that key
    /// now (see the module docs), so a disable or delete could hit the wrong account.
    async fn status_one(&self, action: StatusAction, item: &StatusItem) -> Result<(), OpError> {
        let id = item.remote_id.as_str();
        let (active, status) = match action {
            StatusAction::Delete => {
                // By the record id ("DELETE User by identifier"): no key needed.
                return match self.send_call(id, &Call::Delete).await {
                    Ok(()) => {
                        self.forget(id);
                        Ok(())
                    }
                    Err(e) if e.status() == Some(404) => {
                        tracing::info!(
                            target = %self.http.target(),
                            remote_id = %id,
                            login = item.login.as_deref().unwrap_or(""),
                            "delete: the account was already gone"
                        );
                        self.forget(id);
                        Ok(())
                    }
                    Err(e) => Err(e.into()),
                };
            }
            StatusAction::Enable => (true, wire::STATUS_ACTIVE),
            StatusAction::Disable => (false, wire::STATUS_INACTIVE),
        };
        let value = Value::Bool(active);
        let key = self
            .with_key(
                id,
                None,
                &Call::Put {
                    attribute: "isActive",
                    value: &value,
                },
            )
            .await?;
        if self.set_status {
            let value = Value::from(status);
            self.with_key(
                id,
                Some(&key),
                &Call::Put {
                    attribute: "status",
                    value: &value,
                },
            )
            .await?;
        }
        Ok(())
    }

    /// `POST /identity/users/sendInvitation`; what went wrong, if anything.
    async fn invite(&self, account: &Account) -> Option<String> {
        let url = match self.url(None, "sendInvitation") {
            Ok(u) => u,
            Err(e) => return Some(format!("the invitation was not sent: {e}")),
        };
        let req = Request::post(url).json(wire::invitation_body(account));
        match self.http.send(self.authed(req)).await {
            Ok(_) => None,
            Err(e) => Some(format!(
                "created, but the invitation could not be sent: {}",
                OpError::from(e)
            )),
        }
    }

    /// One page of the listing.
    async fn page(&self, url: Url) -> Result<wire::Page, OpError> {
        let resp = self.http.send(self.authed(Request::get(url))).await?;
        let body: Value = resp.json()?;
        wire::parse_page(&body).map_err(|m| OpError::from(resp.decode_error(m)))
    }

    /// `.../odata?$top=100&$skip=N` (written literally: `$` is legal in a query).
    fn odata_url(&self, skip: usize) -> Result<Url, HttpError> {
        let mut url = self.url(None, "odata")?;
        url.set_query(Some(&format!("$top={LIST_PAGE}&$skip={skip}")));
        Ok(url)
    }

    /// The URL of a `nextPageLink`: relative links resolve against the page that named them;
    /// absolute ones must stay on the API's origin (the bearer token goes with them).
    fn next_url(&self, current: &Url, link: &str) -> Result<Url, OpError> {
        let next = current.join(link).map_err(|e| OpError::Unavailable {
            message: format!("listing users: unusable nextPageLink {link:?}: {e}"),
        })?;
        if next.origin() != self.base.origin() {
            return Err(OpError::Unavailable {
                message: format!(
                    "listing users: the nextPageLink points to another server ({})",
                    next.origin().ascii_serialization()
                ),
            });
        }
        Ok(next)
    }
}

fn not_found(id: &str) -> OpError {
    OpError::NotFound {
        message: format!("no Valuekeep user with the id {id}"),
    }
}

/// A create's error: 409, or a 400 saying the user exists, is a `Conflict` naming the key.
fn create_error(e: HttpError, user_key: &str) -> OpError {
    let duplicate = match e.status() {
        Some(409) => true,
        Some(400) => e.body().is_some_and(wire::is_duplicate_message),
        _ => false,
    };
    if !duplicate {
        return e.into();
    }
    let said = e
        .body()
        .filter(|b| !b.is_empty())
        .unwrap_or("HTTP 409")
        .to_string();
    OpError::Conflict {
        message: format!("a Valuekeep user with the userKey {user_key} already exists: {said}"),
    }
}

#[async_trait::async_trait]
impl Connector for ValuekeepConnector {
    /// The client-credentials grant (cached for the run's requests): refused credentials and
    /// an unreachable host show here, before anything is journaled.
    async fn preflight(&self) -> Result<(), OpError> {
        self.tokens.token().await.map(|_| ()).map_err(OpError::from)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            bulk_status_batch: None,
            bulk_create_batch: None,
            can_list: true,
            roles: RoleSemantics::AddRemove,
            settle_time: None,
        }
    }

    async fn create(&self, account: &Account) -> Result<Created, OpError> {
        let body =
            wire::create_body(account).map_err(|message| OpError::Unsupported { message })?;
        let user_key = account
            .fields
            .get(wire::USER_KEY)
            .cloned()
            .unwrap_or_default();
        let req = Request::post(self.url(None, "")?).json(body);
        let resp = self
            .http
            .send(self.authed(req))
            .await
            .map_err(|e| create_error(e, &user_key))?;
        let location = resp
            .headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok());
        let Some(id) = wire::created_id(&resp.body, location) else {
            return Err(OpError::Unavailable {
                message: format!(
                    "the user {user_key} was probably created, but the answer names no id"
                ),
            });
        };
        self.remember(&id, &user_key);
        let note = if self.send_invitation {
            self.invite(account).await
        } else {
            None
        };
        Ok(Created {
            remote_id: id,
            note,
        })
    }

    async fn update(
        &self,
        remote_id: &str,
        changes: &[FieldChange],
        desired: &Account,
    ) -> Result<(), OpError> {
        let calls =
            wire::field_calls(changes).map_err(|message| OpError::Unsupported { message })?;
        let mut hint = wire::key_before(changes, desired);
        for call in &calls {
            if call.attribute == wire::USER_KEY {
                let new_key = call.value.as_str().unwrap_or_default();
                // Already renamed (an earlier attempt whose answer was lost): nothing to send.
                if self.cached_key(remote_id).as_deref() == Some(new_key) {
                    continue;
                }
                self.with_key(
                    remote_id,
                    hint.as_deref(),
                    &Call::Put {
                        attribute: wire::USER_KEY,
                        value: &call.value,
                    },
                )
                .await?;
                self.remember(remote_id, new_key);
            } else {
                let used = self
                    .with_key(
                        remote_id,
                        hint.as_deref(),
                        &Call::Put {
                            attribute: &call.attribute,
                            value: &call.value,
                        },
                    )
                    .await?;
                hint = Some(used);
            }
        }
        Ok(())
    }

    async fn set_roles(
        &self,
        remote_id: &str,
        add: &[String],
        remove: &[String],
        _roles: &[String],
    ) -> Result<(), OpError> {
        for (action, roles) in [("add", add), ("remove", remove)] {
            if roles.is_empty() {
                continue;
            }
            self.with_key(remote_id, None, &Call::Roles { action, roles })
                .await?;
        }
        Ok(())
    }

    /// Group deltas, like roles: `groups/add` then `groups/remove`, each only when non-empty.
    async fn set_groups(
        &self,
        remote_id: &str,
        add: &[String],
        remove: &[String],
        _groups: &[String],
    ) -> Result<(), OpError> {
        for (action, groups) in [("add", add), ("remove", remove)] {
            if groups.is_empty() {
                continue;
            }
            self.with_key(remote_id, None, &Call::Groups { action, groups })
                .await?;
        }
        Ok(())
    }

    async fn set_status(
        &self,
        action: StatusAction,
        items: &[StatusItem],
    ) -> Vec<Result<(), OpError>> {
        futures::future::join_all(items.iter().map(|i| self.status_one(action, i))).await
    }

    fn requests_for(&self, op: &Op) -> u32 {
        let n = match op {
            Op::Create { .. } => 1 + usize::from(self.send_invitation),
            Op::Update { changes, .. } => changes.len(),
            Op::SetRoles { add, remove, .. } | Op::SetGroups { add, remove, .. } => {
                let calls = usize::from(!add.is_empty()) + usize::from(!remove.is_empty());
                // + the key look-up (see the module docs).
                calls + usize::from(calls > 0)
            }
            // The key look-up, isActive, and status when configured.
            Op::Enable | Op::Disable { .. } => 2 + usize::from(self.set_status),
            Op::Delete { .. } => 1,
        };
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    async fn list_accounts(&self) -> Result<Vec<RemoteAccount>, OpError> {
        let mut all = Vec::new();
        let mut seen = HashSet::new();
        let mut skip = 0usize;
        let mut url = self.odata_url(skip)?;
        for _ in 0..MAX_PAGES {
            let page = self.page(url.clone()).await?;
            let n = page.items.len();
            let mut new = 0;
            for item in page.items {
                // A record created while listing can shift a page: keep the first copy.
                if seen.insert(item.remote_id.clone()) {
                    if let Some(key) = &item.login {
                        self.remember(&item.remote_id, key);
                    }
                    all.push(item);
                    new += 1;
                }
            }
            if n == 0 {
                return Ok(all);
            }
            if new == 0 {
                return Err(OpError::Unavailable {
                    message: format!(
                        "listing users: the page after {skip} records repeats earlier users \
                         (the server ignores $skip?)"
                    ),
                });
            }
            skip += n;
            url = match (&page.next_link, page.has_link_field) {
                (Some(link), _) => self.next_url(&url, link)?,
                (None, true) => return Ok(all),
                (None, false) if n < LIST_PAGE => return Ok(all),
                (None, false) => self.odata_url(skip)?,
            };
        }
        Err(OpError::Unavailable {
            message: format!("listing users: no end after {MAX_PAGES} pages"),
        })
    }

    async fn find_account(&self, login: &str) -> Result<Option<RemoteAccount>, OpError> {
        let same = |a: &RemoteAccount| {
            a.login
                .as_deref()
                .is_some_and(|l| l == login || l.to_lowercase() == login.to_lowercase())
        };
        let req = Request::get(self.url(Some(login), "")?);
        match self.http.send(self.authed(req)).await {
            Ok(resp) => {
                let found = resp
                    .json::<Value>()
                    .ok()
                    .and_then(|v| wire::remote_account(&v).ok());
                if let Some(a) = found.filter(|a| same(a)) {
                    if let Some(key) = &a.login {
                        self.remember(&a.remote_id, key);
                    }
                    return Ok(Some(a));
                }
            }
            Err(e) if e.status() == Some(404) => return Ok(None),
            Err(e) if matches!(e.status(), Some(400..=499)) && e.status() != Some(401) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(self.list_accounts().await?.into_iter().find(|a| same(a)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    use crate::connector::{HttpSettings, TargetKind, VendorSettings};
    use crate::mapping::{TargetMapping, UserFilter};
    use crate::plan::{DeleteReason, DisableReason};
    use crate::secret::SecretRef;

    fn target() -> TargetConfig {
        TargetConfig {
            name: "vk".into(),
            kind: TargetKind::Valuekeep,
            enabled: true,
            base_url: Url::parse("https://vk.example/prefix/").unwrap(),
            mapping: TargetMapping {
                group_rules: vec![],
                default_groups: vec![],
                fields: vec![],
                role_rules: vec![],
                default_roles: vec![],
                filter: UserFilter::default(),
                login_field: "userKey".into(),
            },
            on_missing: Default::default(),
            delete_after: Duration::ZERO,
            http: HttpSettings::default(),
            batch_size: 500,
            recreate_deleted: false,
            vendor: VendorSettings::Valuekeep(ValuekeepSettings {
                client_id: "cid".into(),
                client_secret: SecretRef::inline("target[0].client_secret", "cs-hunter3"),
                token_url: Url::parse("https://id.example/connect/token").unwrap(),
                scope: "application".into(),
                tenant_key: "ten ant".into(),
                org_key: "org/1".into(),
                send_invitation: false,
                set_status: false,
            }),
        }
    }

    /// The connector of a test target.
    fn connector(t: &TargetConfig) -> Result<ValuekeepConnector, HttpError> {
        match &t.vendor {
            VendorSettings::Valuekeep(s) => ValuekeepConnector::new(t, s),
            other => panic!("not a Valuekeep target: {other:?}"),
        }
    }

    fn settings(t: &mut TargetConfig) -> &mut ValuekeepSettings {
        match &mut t.vendor {
            VendorSettings::Valuekeep(s) => s,
            other => panic!("not a Valuekeep target: {other:?}"),
        }
    }

    fn account() -> Account {
        Account {
            groups: Default::default(),
            key: "E1".into(),
            fields: Default::default(),
            roles: Default::default(),
            enabled: true,
            hash: Default::default(),
        }
    }

    #[test]
    fn capabilities_and_urls() {
        let c = connector(&target()).unwrap();
        assert_eq!(
            c.capabilities(),
            Capabilities {
                bulk_status_batch: None,
                bulk_create_batch: None,
                can_list: true,
                roles: RoleSemantics::AddRemove,
                settle_time: None,
            }
        );
        assert_eq!(
            c.url(Some("j/doe@x"), "userKey").unwrap().as_str(),
            "https://vk.example/prefix/api/ten%20ant/org%2F1/identity/users/j%2Fdoe%40x/userKey"
        );
        assert_eq!(
            c.url(Some("k"), "roles/add").unwrap().as_str(),
            "https://vk.example/prefix/api/ten%20ant/org%2F1/identity/users/k/roles/add"
        );
        assert_eq!(
            c.odata_url(200).unwrap().as_str(),
            "https://vk.example/prefix/api/ten%20ant/org%2F1/identity/users/odata?$top=100&$skip=200"
        );
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter"), "{debug}");
    }

    #[test]
    fn next_links_stay_on_the_origin() {
        let c = connector(&target()).unwrap();
        let current = c.odata_url(0).unwrap();
        let next = c.next_url(&current, "odata?$skip=100&$top=100").unwrap();
        assert!(
            next.as_str()
                .ends_with("/identity/users/odata?$skip=100&$top=100")
        );
        let abs = c
            .next_url(&current, "https://vk.example/prefix/x?$skip=1")
            .unwrap();
        assert_eq!(abs.as_str(), "https://vk.example/prefix/x?$skip=1");
        assert!(c.next_url(&current, "https://evil.example/x").is_err());
    }

    #[test]
    fn missing_settings_are_named() {
        for (what, f) in [
            (
                "client_secret",
                Box::new(|t: &mut TargetConfig| {
                    settings(t).client_secret = SecretRef::inline("target[0].client_secret", " ")
                }) as Box<dyn Fn(&mut TargetConfig)>,
            ),
            (
                "tenant_key",
                Box::new(|t: &mut TargetConfig| settings(t).tenant_key = " ".into()),
            ),
            (
                "org_key",
                Box::new(|t: &mut TargetConfig| settings(t).org_key = String::new()),
            ),
            (
                "client_id",
                Box::new(|t: &mut TargetConfig| settings(t).client_id = String::new()),
            ),
        ] {
            let mut t = target();
            f(&mut t);
            let e = connector(&t).unwrap_err().to_string();
            assert!(e.contains(what) && !e.contains("hunter"), "{e}");
        }
        let mut t = target();
        settings(&mut t).org_key = "..".into();
        assert!(connector(&t).is_err());
    }

    #[test]
    fn request_counts() {
        let mut t = target();
        let c = connector(&t).unwrap();
        let change = |f: &str| FieldChange {
            field: f.into(),
            before: Some("a".into()),
            after: Some("b".into()),
        };
        let update = Op::Update {
            changes: vec![change("name"), change("email"), change("userKey")],
            account: account(),
        };
        let roles = |add: &[&str], remove: &[&str]| Op::SetRoles {
            add: add.iter().map(|s| s.to_string()).collect(),
            remove: remove.iter().map(|s| s.to_string()).collect(),
            roles: vec![],
            account: account(),
        };
        let create = Op::Create { account: account() };
        let disable = Op::Disable {
            reason: DisableReason::SourceDisabled,
        };
        let delete = Op::Delete {
            reason: DeleteReason::MissingFromSource,
        };
        assert_eq!(c.requests_for(&create), 1);
        assert_eq!(c.requests_for(&update), 3);
        assert_eq!(c.requests_for(&roles(&["A", "B"], &[])), 2);
        assert_eq!(c.requests_for(&roles(&["A"], &["C"])), 3);
        assert_eq!(c.requests_for(&roles(&[], &[])), 0);
        assert_eq!(c.requests_for(&Op::Enable), 2);
        assert_eq!(c.requests_for(&disable), 2);
        assert_eq!(c.requests_for(&delete), 1);
        settings(&mut t).send_invitation = true;
        settings(&mut t).set_status = true;
        let c = connector(&t).unwrap();
        assert_eq!(c.requests_for(&create), 2);
        assert_eq!(c.requests_for(&Op::Enable), 3);
        assert_eq!(c.requests_for(&disable), 3);
        assert_eq!(c.requests_for(&delete), 1);
    }

    fn status(status: u16, body: &str) -> HttpError {
        HttpError::Status {
            target: "vk".into(),
            method: "POST".into(),
            path: "/identity/users".into(),
            status,
            body: body.into(),
            attempts: 1,
        }
    }

    #[test]
    fn create_errors() {
        match create_error(status(409, ""), "jdoe") {
            OpError::Conflict { message } => {
                assert!(
                    message.contains("jdoe") && message.contains("409"),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            create_error(status(400, "User already exists"), "jdoe"),
            OpError::Conflict { .. }
        ));
        assert!(matches!(
            create_error(status(400, "name is required"), "jdoe"),
            OpError::Rejected { status: 400, .. }
        ));
        assert!(matches!(
            create_error(status(503, "exists"), "jdoe"),
            OpError::Unavailable { .. }
        ));
    }

    #[test]
    fn the_key_memory() {
        let c = connector(&target()).unwrap();
        assert_eq!(c.cached_key("1"), None);
        c.remember("1", "a");
        c.remember("1", "b");
        assert_eq!(c.cached_key("1").as_deref(), Some("b"));
        c.forget("1");
        assert_eq!(c.cached_key("1"), None);
    }
}
