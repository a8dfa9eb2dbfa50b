//! The SCIM 2.0 connector (RFC 7643 / 7644): Users under `<base_url>/Users`, roles as Groups
//! (membership deltas) or as the user's `roles` / `entitlements` attribute.
//!
//! - **Discovery**: `/ServiceProviderConfig` is read once per connector (connectors are built
//!   per run) before the first call that depends on it; `Connector::preflight` reads it before
//!   anything is journaled, so `capabilities()` (Bulk batch sizes) reflects it when the engine
//!   plans its calls. A server without it (404) gets [`discovery::Features::assumed`].
//! - **Create**: `POST /Users` (schemas, mapped attributes, `active`); the answer's `id` is the
//!   remote id (200 or 201). A 409 (or any `scimType: uniqueness`) is a conflict. With
//!   `roles_as = "groups"` the groups are resolved BEFORE the user is created (a missing group
//!   fails the create with nothing sent), then the user is added to each.
//! - **Update**: `PATCH` with `replace` / `remove` operations for the changed fields only; a
//!   typed value (`emails.work`) replaces the attribute's whole list. Without PATCH: `GET`, the
//!   mapped fields set on the resource as read (everything else kept), `PUT`.
//! - **ETags**: when advertised, user writes carry `If-Match` with the version last seen (from
//!   the create, a listing, a look-up or a previous write; read with one `GET` when unknown); a
//!   412 re-reads the resource once and sends again. Group membership PATCHes (deltas: their
//!   order does not matter) carry none unless the server demands one (428).
//! - **Status**: `PATCH` of `active` (or GET + PUT), `DELETE /Users/{id}` (404: already gone);
//!   in `/Bulk` requests when advertised (at most `maxOperations` and `maxPayloadSize`).
//! - **Listing**: `GET /Users?startIndex=&count=` until `totalResults`; look-ups by
//!   `filter=userName eq "..."` (escaped: [`filter`]).
//! - **Errors**: the SCIM error body (`scimType: detail`) is the operation's failure message;
//!   429 / 503 with `Retry-After` are retried by the shared HTTP layer.

mod auth;
mod bulk;
pub mod discovery;
pub mod filter;
mod groups;
pub mod paths;
pub mod settings;
pub mod wire;
mod writes;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use url::Url;

use crate::connector::TargetConfig;
use crate::connector::api::{
    Capabilities, Connector, Created, OpError, RemoteAccount, RoleSemantics, StatusAction,
    StatusItem,
};
use crate::connector::http::{
    CachedToken, HttpClient, HttpError, Method, Request, Response, TokenSource, UrlBuilder,
};
use crate::mapping::Account;
use crate::plan::{FieldChange, Op};
use discovery::Features;
use settings::{RolesAs, ScimAuth, ScimSettings};
use wire::FieldPaths;

/// Resources asked for per page when listing.
pub const LIST_PAGE: usize = 100;

/// A listing that has not ended after this many pages is an error.
const MAX_PAGES: usize = 100_000;

/// The SCIM connector of one target.
pub struct ScimConnector {
    http: HttpClient,
    base: Url,
    tokens: Arc<dyn TokenSource>,
    roles_as: RolesAs,
    create_groups: bool,
    fields: FieldPaths,
    /// Every role the mapping can give (the groups dirsync manages).
    managed_roles: BTreeSet<String>,
    batch_size: usize,
    features: tokio::sync::OnceCell<Features>,
    /// `Users/{id}` / `Groups/{id}` → the version (ETag) last seen.
    versions: Mutex<HashMap<String, String>>,
    groups: groups::GroupCache,
}

impl std::fmt::Debug for ScimConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScimConnector")
            .field("target", &self.http.target())
            .field("base", &self.base.as_str())
            .field("roles_as", &self.roles_as)
            .finish_non_exhaustive()
    }
}

/// Which kind of resource a version belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Users,
    Groups,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Users => "Users",
            Kind::Groups => "Groups",
        }
    }
}

impl ScimConnector {
    /// A connector for `target`, reading its token or client secret now. Nothing is sent until
    /// the first call.
    pub fn new(target: &TargetConfig, s: &ScimSettings) -> Result<ScimConnector, HttpError> {
        let setup = |message: String| HttpError::Setup {
            target: target.name.clone(),
            message,
        };
        let http = HttpClient::new(&target.name, &target.http)?;
        let tokens: Arc<dyn TokenSource> = match &s.auth {
            ScimAuth::Static(r) => Arc::new(auth::StaticToken {
                target: target.name.clone(),
                token: super::read_secret(target, r)?,
            }),
            ScimAuth::ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
            } => {
                if client_id.trim().is_empty() {
                    return Err(setup("scim needs the setting client_id".into()));
                }
                Arc::new(CachedToken::new(
                    &http,
                    auth::ClientCredentials {
                        http: http.clone(),
                        token_url: token_url.clone(),
                        client_id: client_id.clone(),
                        client_secret: super::read_secret(target, client_secret)?,
                        scope: scope.clone().filter(|s| !s.trim().is_empty()),
                    },
                ))
            }
        };
        let fields = FieldPaths::new(target.mapping.fields.iter().map(|f| f.name.as_str()))
            .map_err(setup)?;
        let mut managed_roles: BTreeSet<String> =
            target.mapping.default_roles.iter().cloned().collect();
        for r in &target.mapping.role_rules {
            managed_roles.extend(r.roles.iter().cloned());
        }
        Ok(ScimConnector {
            http,
            base: target.base_url.clone(),
            tokens,
            roles_as: s.roles_as,
            create_groups: s.create_groups,
            fields,
            managed_roles,
            batch_size: target.batch_size.max(1),
            features: tokio::sync::OnceCell::new(),
            versions: Mutex::new(HashMap::new()),
            groups: groups::GroupCache::default(),
        })
    }

    fn url(&self, kind: &str, id: Option<&str>) -> Result<Url, OpError> {
        let mut b = UrlBuilder::new(&self.base).path(kind);
        if let Some(id) = id {
            b = b.id(id);
        }
        Ok(self.http.url(b)?)
    }

    /// A request with the bearer token and the SCIM media type.
    fn request(&self, method: Method, url: Url) -> Request {
        Request::new(method, url)
            .header("Accept", wire::MEDIA_TYPE)
            .bearer(self.tokens.clone())
    }

    /// [`Self::request`] with a JSON body in the SCIM media type.
    fn request_json(&self, method: Method, url: Url, body: Value) -> Request {
        self.request(method, url)
            .header("Content-Type", wire::MEDIA_TYPE)
            .json(body)
    }

    /// Sends; a failure names `what` and carries the SCIM error body.
    async fn send(&self, req: Request, what: &str) -> Result<Response, OpError> {
        self.http.send(req).await.map_err(|e| op_error(e, what))
    }

    /// What the server supports (read once).
    pub async fn features(&self) -> Result<&Features, OpError> {
        self.features
            .get_or_try_init(|| async {
                let url = self.url("ServiceProviderConfig", None)?;
                let f = match self.http.send(self.request(Method::GET, url)).await {
                    Ok(resp) => {
                        let body: Value = resp.json()?;
                        discovery::parse(&body).map_err(|m| resp.decode_error(m))?
                    }
                    Err(e) if matches!(e.status(), Some(404 | 501)) => Features::assumed(),
                    Err(e) => return Err(op_error(e, "reading /ServiceProviderConfig")),
                };
                tracing::info!(target = %self.http.target(), features = %f, "SCIM server features");
                Ok(f)
            })
            .await
    }

    fn versions(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.versions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember_version(&self, kind: Kind, id: &str, version: Option<String>) {
        let key = format!("{}/{id}", kind.as_str());
        match version {
            Some(v) => self.versions().insert(key, v),
            None => self.versions().remove(&key),
        };
    }

    fn cached_version(&self, kind: Kind, id: &str) -> Option<String> {
        self.versions()
            .get(&format!("{}/{id}", kind.as_str()))
            .cloned()
    }

    /// `GET` of one resource (groups without their members): the body, its version noted.
    /// `None`: 404.
    async fn read(&self, kind: Kind, id: &str) -> Result<Option<Value>, OpError> {
        let mut req = self.request(Method::GET, self.url(kind.as_str(), Some(id))?);
        if kind == Kind::Groups {
            req = req.query("excludedAttributes", "members");
        }
        let resp = match self.http.send(req).await {
            Ok(r) => r,
            Err(e) if e.status() == Some(404) => return Ok(None),
            Err(e) => return Err(op_error(e, &format!("reading {} {id}", kind.as_str()))),
        };
        let body: Value = resp.json()?;
        self.remember_version(kind, id, wire::version(&resp));
        Ok(Some(body))
    }

    /// The version to send in `If-Match` (a `GET` when none is known).
    async fn fresh_version(&self, kind: Kind, id: &str) -> Result<Option<String>, OpError> {
        match self.read(kind, id).await? {
            Some(_) => Ok(self.cached_version(kind, id)),
            None => Err(not_found(kind, id)),
        }
    }

    /// Every resource of `kind` (`GET /{kind}?startIndex=&count=` until `totalResults`).
    async fn list_all(&self, kind: &str, query: &[(&str, &str)]) -> Result<Vec<Value>, OpError> {
        let mut all = Vec::new();
        let mut start = 1usize;
        for _ in 0..MAX_PAGES {
            let mut req = self.request(Method::GET, self.url(kind, None)?);
            for (k, v) in query {
                req = req.query(k, v);
            }
            let req = req
                .query("startIndex", &start.to_string())
                .query("count", &LIST_PAGE.to_string());
            let resp = self.send(req, &format!("listing {kind}")).await?;
            let page = wire::page(resp.json()?).map_err(|m| resp.decode_error(m))?;
            let n = page.resources.len();
            all.extend(page.resources);
            start += n;
            let done = match page.total {
                Some(total) => start > total,
                None => n < LIST_PAGE,
            };
            if n == 0 || done {
                return Ok(all);
            }
        }
        Err(OpError::Unavailable {
            message: format!("listing {kind}: no end after {MAX_PAGES} pages"),
        })
    }

    /// `GET /{kind}?filter=...` (one page: look-ups match few resources).
    async fn filtered(
        &self,
        kind: &str,
        filter: &str,
        extra: &[(&str, &str)],
    ) -> Result<Vec<Value>, OpError> {
        let mut req = self
            .request(Method::GET, self.url(kind, None)?)
            .query("filter", filter);
        for (k, v) in extra {
            req = req.query(k, v);
        }
        let resp = self.send(req, &format!("looking up {kind}")).await?;
        Ok(wire::page(resp.json()?)
            .map_err(|m| resp.decode_error(m))?
            .resources)
    }

    fn account_of(&self, resource: &Value) -> Result<RemoteAccount, String> {
        let a = wire::remote_account(resource, &self.fields, self.roles_as)?;
        self.remember_version(Kind::Users, &a.remote_id, wire::body_version(resource));
        Ok(a)
    }
}

fn not_found(kind: Kind, id: &str) -> OpError {
    OpError::NotFound {
        message: format!("{} {id} is not on the target", kind.as_str()),
    }
}

/// The shared mapping of an HTTP failure, with the SCIM error body (`scimType: detail`) as the
/// message; `scimType: uniqueness` is a conflict whatever the status.
fn op_error(e: HttpError, what: &str) -> OpError {
    let scim = wire::scim_error(&e);
    let status = e.status();
    let base = OpError::from(e);
    match (status, scim) {
        (Some(status), Some(s)) => {
            let message = format!("{what}: HTTP {status}: {s}");
            if s.scim_type.as_deref() == Some("uniqueness") {
                OpError::Conflict { message }
            } else {
                base.map_message(|_| message)
            }
        }
        _ => base.map_message(|m| format!("{what}: {m}")),
    }
}

#[async_trait::async_trait]
impl Connector for ScimConnector {
    fn capabilities(&self) -> Capabilities {
        let bulk = self
            .features
            .get()
            .and_then(|f| f.bulk)
            .map(|b| b.max_operations.min(self.batch_size));
        Capabilities {
            bulk_status_batch: bulk,
            bulk_create_batch: None,
            can_list: true,
            roles: match self.roles_as {
                RolesAs::Groups => RoleSemantics::AddRemove,
                RolesAs::Roles | RolesAs::Entitlements => RoleSemantics::Replace,
            },
            settle_time: None,
        }
    }

    async fn create(&self, account: &Account) -> Result<Created, OpError> {
        self.features().await?;
        let login = account.fields.get("userName").cloned().unwrap_or_default();
        // Groups first: a missing group fails the create before the user exists.
        let mut group_ids = Vec::new();
        if self.roles_as == RolesAs::Groups {
            for role in &account.roles {
                group_ids.push((role.clone(), self.group_id(role, true).await?));
            }
        }
        let body = wire::user_body(account, &self.fields, self.roles_as);
        let req = self.request_json(Method::POST, self.url("Users", None)?, body);
        let resp = self.send(req, &format!("creating {login}")).await?;
        let created: Value = resp.json()?;
        let Some(id) = created
            .get("id")
            .and_then(|v| {
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| v.as_u64().map(|n| n.to_string()))
            })
            .filter(|s| !s.is_empty())
        else {
            return Err(OpError::Unavailable {
                message: format!(
                    "the user {login} was probably created, but the answer names no id"
                ),
            });
        };
        self.remember_version(Kind::Users, &id, wire::version(&resp));
        let mut failed = Vec::new();
        for (role, gid) in group_ids {
            if let Err(e) = self.membership(&gid, &id, true).await {
                failed.push(format!("{role}: {e}"));
            }
        }
        Ok(Created {
            remote_id: id,
            note: (!failed.is_empty()).then(|| {
                format!(
                    "created, but not added to every group ({}); `dirsync drift` shows it",
                    failed.join("; ")
                )
            }),
        })
    }

    async fn update(
        &self,
        remote_id: &str,
        changes: &[FieldChange],
        desired: &Account,
    ) -> Result<(), OpError> {
        if self.features().await?.patch {
            let ops = wire::patch_ops(changes, desired, &self.fields)
                .map_err(|message| OpError::Unsupported { message })?;
            if ops.is_empty() {
                return Ok(());
            }
            self.patch(Kind::Users, remote_id, ops, true).await
        } else {
            let fields = &self.fields;
            self.put_user(remote_id, &|cur: &Value| {
                wire::merged_resource(cur, desired, fields, None)
            })
            .await
        }
    }

    async fn set_roles(
        &self,
        remote_id: &str,
        add: &[String],
        remove: &[String],
        roles: &[String],
    ) -> Result<(), OpError> {
        let Some(attr) = wire::roles_attribute(self.roles_as) else {
            for r in add {
                let gid = self.group_id(r, true).await?;
                self.membership(&gid, remote_id, true).await?;
            }
            for r in remove {
                // A group that is gone has no member to remove.
                if let Some(gid) = self.find_group_id(r).await? {
                    self.membership(&gid, remote_id, false).await?;
                }
            }
            return Ok(());
        };
        let set: BTreeSet<String> = roles.iter().cloned().collect();
        if self.features().await?.patch {
            let op = if set.is_empty() {
                serde_json::json!({ "op": "remove", "path": attr })
            } else {
                serde_json::json!({ "op": "replace", "path": attr, "value": wire::values(&set) })
            };
            self.patch(Kind::Users, remote_id, vec![op], true).await
        } else {
            self.put_user(remote_id, &|cur: &Value| {
                let mut m = cur.as_object().cloned().unwrap_or_default();
                m.remove("meta");
                if set.is_empty() {
                    m.remove(attr);
                } else {
                    m.insert(attr.into(), wire::values(&set));
                }
                Value::Object(m)
            })
            .await
        }
    }

    async fn set_status(
        &self,
        action: StatusAction,
        items: &[StatusItem],
    ) -> Vec<Result<(), OpError>> {
        let features = match self.features().await {
            Ok(f) => f.clone(),
            Err(e) => return items.iter().map(|_| Err(e.clone())).collect(),
        };
        match features.bulk {
            Some(limits)
                if items.len() > 1 && (features.patch || action == StatusAction::Delete) =>
            {
                self.status_bulk(action, items, limits).await
            }
            _ => futures::future::join_all(items.iter().map(|i| self.status_one(action, i))).await,
        }
    }

    fn requests_for(&self, op: &Op) -> u32 {
        let patch = self.features.get().is_none_or(|f| f.patch);
        let write = if patch { 1 } else { 2 };
        let n = match op {
            Op::Create { account } => {
                1 + if self.roles_as == RolesAs::Groups {
                    account.roles.len()
                } else {
                    0
                }
            }
            Op::Update { .. } => write,
            Op::SetRoles { add, remove, .. } => match self.roles_as {
                RolesAs::Groups => add.len() + remove.len(),
                _ => write,
            },
            Op::SetGroups { .. } => 0,
            Op::Enable | Op::Disable { .. } => write,
            Op::Delete { .. } => 1,
        };
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    async fn probe(&self) -> Result<(), OpError> {
        self.features().await?;
        let req = self
            .request(Method::GET, self.url("Users", None)?)
            .query("startIndex", "1")
            .query("count", "1");
        self.send(req, "listing Users").await.map(|_| ())
    }

    async fn preflight(&self) -> Result<(), OpError> {
        // Discovery before anything is journaled: capabilities() then knows about Bulk.
        self.features().await.map(|_| ())
    }

    async fn describe(&self) -> Result<Option<String>, OpError> {
        Ok(Some(format!("server supports: {}", self.features().await?)))
    }

    async fn unknown_roles(&self, roles: &[String]) -> Result<Option<Vec<String>>, OpError> {
        if self.roles_as != RolesAs::Groups {
            return Ok(None);
        }
        let mut unknown = Vec::new();
        for r in roles {
            if self.find_group_id(r).await?.is_none() && !self.create_groups {
                unknown.push(r.clone());
            }
        }
        Ok(Some(unknown))
    }

    async fn list_accounts(&self) -> Result<Vec<RemoteAccount>, OpError> {
        let resources = self.list_all("Users", &[]).await?;
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(resources.len());
        for r in &resources {
            let a = self.account_of(r).map_err(|m| OpError::Unavailable {
                message: format!("listing Users: {m}"),
            })?;
            if seen.insert(a.remote_id.clone()) {
                out.push(a);
            }
        }
        if self.roles_as == RolesAs::Groups {
            let members = self.managed_members().await?;
            for a in &mut out {
                a.roles = members.get(&a.remote_id).cloned().unwrap_or_default();
            }
        }
        Ok(out)
    }

    async fn find_account(&self, login: &str) -> Result<Option<RemoteAccount>, OpError> {
        let same = |a: &RemoteAccount| {
            a.login
                .as_deref()
                .is_some_and(|l| crate::model::email_eq(l, login))
        };
        if !self.features().await?.filter {
            return Ok(self.list_accounts().await?.into_iter().find(same));
        }
        let found = self
            .filtered("Users", &filter::eq("userName", login), &[])
            .await?;
        for r in &found {
            if let Ok(a) = self.account_of(r)
                && same(&a)
            {
                return Ok(Some(a));
            }
        }
        Ok(None)
    }
}
