//! A fake Valuekeep identity API (the contract of `/work/shared/api/README.md`, section
//! "Valuekeep", and `valuekeep-identity-users.txt`), strict enough that a connector which
//! breaks the contract fails against it.
//!
//! [`FakeValuekeep::start`] binds `127.0.0.1:0` and serves from a dedicated thread with its own
//! tokio runtime, so the fake keeps answering while a test blocks on the real CLI run as a
//! child process; dropping the [`FakeValuekeep`] stops it.
//!
//! What it enforces:
//! - `POST /connect/token` (the identity server; form `grant_type=client_credentials` and
//!   `scope=application`, client id / secret as form fields or HTTP Basic) is the only source
//!   of bearer tokens; every `/api/...` call needs a valid one (401 otherwise).
//! - Paths are `/api/{tenantKey}/{orgKey}/identity/users/...` with this fake's keys (404
//!   otherwise); a userKey holding `/` only matches when the client encoded it.
//! - Create: JSON object, `userKey`, `name` (strings) and `isTechnician` (boolean) required,
//!   `email` a string, `roles` / `groups` arrays of known keys, `status` 1-4, no unknown
//!   field (400); a duplicate userKey (case-insensitive) is a 409. Answers 201, the new id as
//!   a JSON string body, and a `Location` header.
//! - `PUT .../{userKey}/{attribute}`: the raw JSON value with the attribute's type (`"text"`,
//!   `true`, `2`); an object such as `{"value": ..}` is a 400. Unknown user → 404.
//! - `POST .../{userKey}/roles|groups/add|remove`: a non-empty JSON array of known keys.
//! - `DELETE .../{userKey}` (or the id) → 204; unknown → 404.
//! - `GET .../odata`: `$top` at most 100 (more is a 400), `$skip`; answers
//!   `{"items":[...],"nextPageLink":<absolute URL or null>}` in creation order.
//! - A limiter of N API requests per window per client (default 60 per 60 s), answering 429
//!   with `Retry-After` (whole seconds until the window ends); rejected requests do not count.
//!
//! Faults ([`FakeValuekeep::inject`]) fire on the next N requests that match a method and a
//! path (exact, prefix or `{param}` template, matched on the raw path): 429/503 with
//! `Retry-After`, any status, latency, and a dropped connection (before or after the change is
//! applied): the vocabulary of [`super::fake::Fault`], shared with the other fakes.

use std::collections::{BTreeMap, HashMap};

use super::fake::prelude::*;
pub use super::fake::{Fault, PathMatch};
use super::fake::{TokenRefused, Tokens, basic_credentials, form_fields};

/// The OAuth client id the tests configure.
pub const CLIENT_ID: &str = "vk-dirsync-app";
/// The OAuth client secret.
pub const CLIENT_SECRET: &str = "vk-client-s3cret";
/// The scope the client-credentials grant must ask for.
pub const SCOPE: &str = "application";
/// The tenant key in every API path.
pub const TENANT: &str = "t100";
/// The organization key in every API path (with a space: clients must encode it).
pub const ORG: &str = "ORG 1";
/// The token endpoint's path.
pub const TOKEN_PATH: &str = "/connect/token";
/// Role keys this tenant knows.
pub const ROLES: [&str; 4] = ["ADMIN", "TECHNICIAN", "REQUESTER", "PLANNER"];
/// Group keys this tenant knows.
pub const GROUPS: [&str; 2] = ["MAINT", "OFFICE"];
/// The most records a list request may ask for.
pub const MAX_TOP: usize = 100;
/// Default access-token lifetime ([`FakeValuekeep::set_token_ttl`] changes it).
pub const TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The default limiter: this many API requests ...
pub const DEFAULT_LIMIT: usize = 60;
/// ... per this window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

const MAX_BODY: usize = 16 * 1024 * 1024;

/// A user as the fake holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeUser {
    /// Server-generated (UUID v4 text) unless given to [`FakeValuekeep::insert_user`].
    pub id: String,
    pub user_key: String,
    pub name: String,
    pub email: Option<String>,
    pub is_technician: bool,
    pub is_active: bool,
    /// 1 Active, 2 Inactive, 3 InvitationSent, 4 InvitationExpired.
    pub status: u8,
    /// Sorted, without duplicates.
    pub roles: Vec<String>,
    /// Sorted, without duplicates.
    pub groups: Vec<String>,
    /// Invitations sent to this user.
    pub invitations: u32,
}

impl FakeUser {
    /// An active user with these roles; the id is generated on insertion.
    pub fn new(user_key: &str, name: &str, roles: &[&str]) -> FakeUser {
        FakeUser {
            id: String::new(),
            user_key: user_key.to_owned(),
            name: name.to_owned(),
            email: None,
            is_technician: false,
            is_active: true,
            status: 1,
            roles: normalize(roles.iter().map(|r| (*r).to_owned()).collect()),
            groups: Vec::new(),
            invitations: 0,
        }
    }
}

/// One request as the fake received it (token calls included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// The raw path, as sent (still percent-encoded).
    pub path: String,
    /// The raw query string, without `?`.
    pub query: Option<String>,
    /// The body, lossily decoded as UTF-8.
    pub body: String,
    pub content_type: Option<String>,
    /// Whether it carried a valid, unexpired bearer token.
    pub authorized: bool,
    /// The status the fake answered (0 when the connection was dropped).
    pub status: u16,
}

impl RecordedRequest {
    /// The path after `/api/{tenant}/{org}/identity/users` (`""`, `/odata`, `/jdoe/email`,
    /// ...), still encoded; `None` for other paths.
    pub fn user_path(&self) -> Option<&str> {
        self.path.strip_prefix(&users_prefix())
    }
}

/// `/api/t100/ORG%201/identity/users`: the encoded prefix of every user path.
pub fn users_prefix() -> String {
    format!("/api/{TENANT}/{}/identity/users", ORG.replace(' ', "%20"))
}

/// The fixed-window limiter of one client.
struct Limiter {
    limit: usize,
    window: Duration,
    started: Option<Instant>,
    used: usize,
}

impl Limiter {
    /// `Ok` to admit a request, else the seconds to wait.
    fn admit(&mut self, now: Instant) -> Result<(), u64> {
        let start = match self.started {
            Some(s) if now.duration_since(s) < self.window => s,
            _ => {
                self.started = Some(now);
                self.used = 0;
                now
            }
        };
        if self.used < self.limit {
            self.used += 1;
            return Ok(());
        }
        let left = self.window.saturating_sub(now.duration_since(start));
        Err(left.as_secs_f64().ceil().max(1.0) as u64)
    }
}

struct Inner {
    base_url: String,
    /// By creation order.
    users: BTreeMap<u64, FakeUser>,
    by_id: HashMap<String, u64>,
    /// Lowercased userKey.
    by_key: HashMap<String, u64>,
    next_seq: u64,
    /// Access token → (client id, expiry).
    tokens: Tokens<String>,
    token_ttl: Duration,
    /// Requests to the token endpoint, refused ones included.
    token_requests: usize,
    grants: usize,
    requests: Vec<RecordedRequest>,
    faults: Faults,
    /// `None`: no limit.
    limit: Option<(usize, Duration)>,
    limiters: HashMap<String, Limiter>,
    rate_limited: usize,
}

type Shared = Arc<Mutex<Inner>>;

impl Inner {
    fn seq_of(&self, id_or_key: &str) -> Option<u64> {
        self.by_id
            .get(id_or_key)
            .or_else(|| self.by_key.get(&id_or_key.to_lowercase()))
            .copied()
    }

    fn seq_of_key(&self, key: &str) -> Option<u64> {
        self.by_key.get(&key.to_lowercase()).copied()
    }

    fn insert(&mut self, mut user: FakeUser) -> String {
        if user.id.is_empty() {
            user.id = uuid::Uuid::new_v4().to_string();
        }
        assert!(
            !self.by_id.contains_key(&user.id),
            "fake Valuekeep: duplicate id {:?}",
            user.id
        );
        assert!(
            !self.by_key.contains_key(&user.user_key.to_lowercase()),
            "fake Valuekeep: duplicate userKey {:?}",
            user.user_key
        );
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_id.insert(user.id.clone(), seq);
        self.by_key.insert(user.user_key.to_lowercase(), seq);
        let id = user.id.clone();
        self.users.insert(seq, user);
        id
    }

    fn remove(&mut self, seq: u64) {
        if let Some(user) = self.users.remove(&seq) {
            self.by_id.remove(&user.id);
            self.by_key.remove(&user.user_key.to_lowercase());
        }
    }

    /// The client id of a valid bearer token.
    fn check_bearer(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        let invalid = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
        self.tokens.check(headers).map_err(|refused| match refused {
            TokenRefused::Missing => invalid("a bearer token is required"),
            TokenRefused::NotBearer => invalid("expected a Bearer token"),
            TokenRefused::Expired => invalid("the access token expired"),
            TokenRefused::Unknown => invalid("invalid access token"),
        })
    }
}

/// The running fake. Dropping it stops the server.
pub struct FakeValuekeep(Running<Inner>);

impl FakeValuekeep {
    /// Starts the fake on `127.0.0.1:<free port>` with the default limiter (60 per minute).
    pub async fn start() -> FakeValuekeep {
        FakeValuekeep::start_on(Listener::bind("Valuekeep"))
    }

    /// Starts the fake on `listener` ([`Listener::bind_port`]), with the default limiter.
    pub fn start_on(listener: Listener) -> FakeValuekeep {
        let inner = Inner {
            base_url: format!("http://{}", listener.addr()),
            users: BTreeMap::new(),
            by_id: HashMap::new(),
            by_key: HashMap::new(),
            next_seq: 0,
            tokens: Tokens::default(),
            token_ttl: TOKEN_TTL,
            token_requests: 0,
            grants: 0,
            requests: Vec::new(),
            faults: Faults::default(),
            limit: Some((DEFAULT_LIMIT, DEFAULT_WINDOW)),
            limiters: HashMap::new(),
            rate_limited: 0,
        };
        FakeValuekeep(Running::serve(listener, inner, router))
    }

    /// `http://127.0.0.1:PORT` (no trailing slash): the API host (and the identity server).
    pub fn base_url(&self) -> String {
        self.0.url()
    }

    /// The token endpoint's URL.
    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.0.url())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock()
    }

    /// Every user, in creation order.
    pub fn users(&self) -> Vec<FakeUser> {
        self.lock().users.values().cloned().collect()
    }

    /// The user with this id.
    pub fn user(&self, id: &str) -> Option<FakeUser> {
        let inner = self.lock();
        let seq = inner.by_id.get(id)?;
        inner.users.get(seq).cloned()
    }

    /// The user with this userKey (case-insensitive).
    pub fn user_by_key(&self, key: &str) -> Option<FakeUser> {
        let inner = self.lock();
        let seq = inner.seq_of_key(key)?;
        inner.users.get(&seq).cloned()
    }

    /// Adds a pre-existing user (roles not checked); returns its id. Panics on a duplicate
    /// userKey or id.
    pub fn insert_user(&self, mut user: FakeUser) -> String {
        user.roles = normalize(std::mem::take(&mut user.roles));
        user.groups = normalize(std::mem::take(&mut user.groups));
        self.lock().insert(user)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Successful client-credentials grants.
    pub fn token_grants(&self) -> usize {
        self.lock().grants
    }

    /// Requests to the token endpoint so far, refused ones included.
    pub fn token_requests(&self) -> usize {
        self.lock().token_requests
    }

    /// Lifetime of the access tokens issued from now on (default [`TOKEN_TTL`]; at least 1 s,
    /// as `expires_in` counts whole seconds). A call with an expired token gets a 401.
    pub fn set_token_ttl(&self, ttl: Duration) {
        assert!(
            ttl >= Duration::from_secs(1),
            "fake Valuekeep: a token lives at least 1 s"
        );
        self.lock().token_ttl = ttl;
    }

    /// 401 answers to API calls so far (expired or unknown tokens).
    pub fn unauthorized_answers(&self) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.status == 401 && r.path.starts_with("/api/"))
            .count()
    }

    /// Every access token issued so far stops working now.
    pub fn expire_all_tokens(&self) {
        self.lock().tokens.expire_all();
    }

    /// The limiter: `limit` API requests per `window` per client (`None`: unlimited).
    pub fn set_rate_limit(&self, limit: Option<(usize, Duration)>) {
        let mut inner = self.lock();
        inner.limit = limit;
        inner.limiters.clear();
    }

    /// How many requests the limiter refused with 429.
    pub fn rate_limited(&self) -> usize {
        self.lock().rate_limited
    }

    /// A delay added to every request before it is handled.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().faults.latency = latency;
    }

    /// Applies `fault` to the next `times` requests whose method is `method` (`"*"`: any) and
    /// whose raw path matches `path`. The rule injected first fires first.
    pub fn inject(&self, method: &str, path: impl Into<PathMatch>, fault: Fault, times: usize) {
        self.lock()
            .faults
            .inject("Valuekeep", method, path.into(), fault, times);
    }

    /// How many fault firings are still pending.
    pub fn pending_faults(&self) -> usize {
        self.lock().faults.pending()
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// A JSON error answer `{"message": ..}` (the shape is not documented; assumed).
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("the user {what:?} does not exist"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"message": self.message});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        response
    }
}

// ---------------------------------------------------------------------------------------------
// Routing and the front middleware (recording, faults, limiter, bearer check).

fn router(shared: Shared) -> Router {
    let users = "/api/{tenant}/{org}/identity/users";
    Router::new()
        .route(TOKEN_PATH, post(token))
        .route(users, post(create_user))
        .route(&format!("{users}/odata"), get(list_users))
        .route(&format!("{users}/sendInvitation"), post(send_invitation))
        .route(
            &format!("{users}/{{key}}"),
            get(get_user).delete(delete_user),
        )
        .route(
            &format!("{users}/{{key}}/{{attribute}}"),
            put(set_attribute),
        )
        .route(
            &format!("{users}/{{key}}/{{list}}/{{action}}"),
            post(add_remove),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(no_route)
        .layer(middleware::from_fn_with_state(shared.clone(), front))
        .with_state(shared)
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not supported on {}", uri.path()),
    )
}

async fn front(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let incoming = match Incoming::read(request, MAX_BODY).await {
        Ok(incoming) => incoming,
        Err(e) => return ApiError::bad_request(e).into_response(),
    };
    let conn = incoming.conn.clone();
    let api = incoming.path.starts_with("/api/");
    let (auth, latency, fault, index) = {
        let mut inner = lock(&shared);
        let auth = inner.check_bearer(&incoming.parts.headers);
        inner.requests.push(RecordedRequest {
            method: incoming.method.clone(),
            path: incoming.path.clone(),
            query: incoming.parts.uri.query().map(str::to_owned),
            body: incoming.body_text(),
            content_type: content_type(&incoming.parts.headers).map(str::to_owned),
            authorized: auth.is_ok(),
            status: 0,
        });
        let index = inner.requests.len() - 1;
        let fault = inner.faults.take(&incoming.method, &incoming.path);
        (auth, inner.faults.latency, fault, index)
    };
    let record = |status: StatusCode| {
        if let Some(r) = lock(&shared).requests.get_mut(index) {
            r.status = status.as_u16();
        }
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match before_handler(fault.as_ref(), conn.as_ref(), fault_status).await {
        Before::Answer(response) => {
            record(response.status());
            return response;
        }
        Before::Dropped(response) => return response,
        Before::Proceed => {}
    }
    let response = if !api {
        next.run(incoming.into_request()).await
    } else {
        match auth {
            Err(e) => e.into_response(),
            Ok(client) => {
                let waited = {
                    let mut inner = lock(&shared);
                    match inner.limit {
                        None => Ok(()),
                        Some((limit, window)) => {
                            let admitted = inner
                                .limiters
                                .entry(client)
                                .or_insert(Limiter {
                                    limit,
                                    window,
                                    started: None,
                                    used: 0,
                                })
                                .admit(Instant::now());
                            if admitted.is_err() {
                                inner.rate_limited += 1;
                            }
                            admitted
                        }
                    }
                };
                match waited {
                    Ok(()) => next.run(incoming.into_request()).await,
                    Err(secs) => {
                        fault_status(StatusCode::TOO_MANY_REQUESTS, Some(&secs.to_string()))
                    }
                }
            }
        }
    };
    if after_handler(fault.as_ref(), conn.as_ref()).await {
        return response;
    }
    record(response.status());
    response
}

fn fault_status(status: StatusCode, retry_after: Option<&str>) -> Response {
    let body = json!({"message": format!("{status}")});
    with_retry_after((status, axum::Json(body)).into_response(), retry_after)
}

// ---------------------------------------------------------------------------------------------
// Request helpers.

/// The body as JSON (`Content-Type: application/json` required).
fn json_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    if !has_content_type(headers, "application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type must be application/json, got {}",
                content_type(headers).unwrap_or("none")
            ),
        ));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

/// The tenant and organization of the path; other keys are a 404.
fn check_scope(tenant: &str, org: &str) -> Result<(), ApiError> {
    if tenant == TENANT && org == ORG {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown tenant / organization {tenant:?} / {org:?}"),
        ))
    }
}

fn normalize(mut items: Vec<String>) -> Vec<String> {
    items.sort();
    items.dedup();
    items
}

/// An array of known keys (`roles` or `groups`); `non_empty` for add / remove bodies.
fn keys(field: &str, value: &Value, non_empty: bool) -> Result<Vec<String>, ApiError> {
    let known: &[&str] = if field == "groups" { &GROUPS } else { &ROLES };
    let Value::Array(items) = value else {
        return Err(ApiError::bad_request(format!(
            "`{field}` must be a JSON array of keys"
        )));
    };
    if non_empty && items.is_empty() {
        return Err(ApiError::bad_request(format!(
            "the list of {field} must not be empty"
        )));
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(k) = item else {
            return Err(ApiError::bad_request(format!(
                "`{field}` must hold only strings"
            )));
        };
        if !known.contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown {field} key {k:?} (known: {})",
                known.join(", ")
            )));
        }
        out.push(k.clone());
    }
    Ok(normalize(out))
}

fn string(field: &str, value: &Value) -> Result<String, ApiError> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| ApiError::bad_request(format!("`{field}` must be a JSON string")))
}

fn non_empty_string(field: &str, value: &Value) -> Result<String, ApiError> {
    let s = string(field, value)?;
    if s.trim().is_empty() {
        return Err(ApiError::bad_request(format!(
            "`{field}` must not be empty"
        )));
    }
    Ok(s)
}

fn boolean(field: &str, value: &Value) -> Result<bool, ApiError> {
    value
        .as_bool()
        .ok_or_else(|| ApiError::bad_request(format!("`{field}` must be a JSON boolean")))
}

fn status_value(value: &Value) -> Result<u8, ApiError> {
    match value.as_u64() {
        Some(n @ 1..=4) => Ok(n as u8),
        _ => Err(ApiError::bad_request(
            "`status` must be 1 (Active), 2 (Inactive), 3 or 4",
        )),
    }
}

fn email(value: &Value) -> Result<Option<String>, ApiError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) if s.contains('@') && !s.contains(char::is_whitespace) => {
            Ok(Some(s.clone()))
        }
        _ => Err(ApiError::bad_request(
            "`email` must be a JSON string holding an address, or null",
        )),
    }
}

fn user_json(u: &FakeUser) -> Value {
    json!({
        "id": u.id,
        "userKey": u.user_key,
        "name": u.name,
        "culture": "en-US",
        "isTechnician": u.is_technician,
        "isActive": u.is_active,
        "email": u.email,
        "roles": u.roles,
        "groups": u.groups,
        "status": u.status,
    })
}

type ScopePath = Result<Path<(String, String)>, PathRejection>;
type KeyPath = Result<Path<(String, String, String)>, PathRejection>;
type AttributePath = Result<Path<(String, String, String, String)>, PathRejection>;
type ListPath = Result<Path<(String, String, String, String, String)>, PathRejection>;

fn path_error(e: PathRejection) -> ApiError {
    ApiError::bad_request(format!("invalid path: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Handlers.

/// `POST /connect/token`: the client-credentials grant.
async fn token(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    lock(&shared).token_requests += 1;
    let oauth = |status: StatusCode, error: &str, description: &str| {
        (
            status,
            axum::Json(json!({"error": error, "error_description": description})),
        )
            .into_response()
    };
    if !has_content_type(&headers, "application/x-www-form-urlencoded") {
        return Ok(oauth(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let form = match form_fields(&body) {
        Ok(form) => form,
        Err(key) => {
            return Ok(oauth(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("parameter {key} given more than once"),
            ));
        }
    };
    let in_form = match (form.get("client_id"), form.get("client_secret")) {
        (Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
        _ => None,
    };
    let in_header = basic_credentials(&headers);
    let client = match (in_form, in_header) {
        (Some(_), Some(_)) => {
            return Ok(oauth(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "client credentials given twice",
            ));
        }
        (Some(c), None) | (None, Some(c)) => c,
        (None, None) => {
            return Ok(oauth(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "no client credentials",
            ));
        }
    };
    if client.0 != CLIENT_ID || client.1 != CLIENT_SECRET {
        return Ok(oauth(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "unknown client or wrong secret",
        ));
    }
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(_) => {
            return Ok(oauth(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only client_credentials",
            ));
        }
        None => {
            return Ok(oauth(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "missing grant_type",
            ));
        }
    }
    if form.get("scope").map(String::as_str) != Some(SCOPE) {
        return Ok(oauth(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "the scope must be application",
        ));
    }
    let mut inner = lock(&shared);
    let ttl = inner.token_ttl;
    let access = inner.tokens.issue(client.0, ttl);
    inner.grants += 1;
    drop(inner);
    let mut response = axum::Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ttl.as_secs(),
        "scope": SCOPE,
    }))
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET .../identity/users/odata?$top=&$skip=`.
async fn list_users(
    State(shared): State<Shared>,
    path: ScopePath,
    RawQuery(query): RawQuery,
) -> Result<axum::Json<Value>, ApiError> {
    let Path((tenant, org)) = path.map_err(path_error)?;
    check_scope(&tenant, &org)?;
    let mut top = MAX_TOP;
    let mut skip = 0usize;
    for (key, value) in url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        let number = || {
            value
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("{key} must be a non-negative integer")))
        };
        match key.as_ref() {
            "$top" => top = number()?,
            "$skip" => skip = number()?,
            "$select" | "$orderby" => {}
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unsupported query option {key}"
                )));
            }
        }
    }
    if top > MAX_TOP {
        return Err(ApiError::bad_request(format!(
            "$top must be at most {MAX_TOP}"
        )));
    }
    let inner = lock(&shared);
    let total = inner.users.len();
    let items: Vec<Value> = inner
        .users
        .values()
        .skip(skip)
        .take(top)
        .map(user_json)
        .collect();
    let next = (top > 0 && skip + top < total).then(|| {
        format!(
            "{}{}/odata?$skip={}&$top={top}",
            inner.base_url,
            users_prefix(),
            skip + top
        )
    });
    Ok(axum::Json(json!({"items": items, "nextPageLink": next})))
}

/// `GET .../identity/users/{id or userKey}`.
async fn get_user(
    State(shared): State<Shared>,
    path: KeyPath,
) -> Result<axum::Json<Value>, ApiError> {
    let Path((tenant, org, key)) = path.map_err(path_error)?;
    check_scope(&tenant, &org)?;
    let inner = lock(&shared);
    let seq = inner
        .seq_of(&key)
        .ok_or_else(|| ApiError::not_found(&key))?;
    Ok(axum::Json(user_json(&inner.users[&seq])))
}

/// `POST .../identity/users`.
async fn create_user(
    State(shared): State<Shared>,
    path: ScopePath,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Path((tenant, org)) = path.map_err(path_error)?;
    check_scope(&tenant, &org)?;
    let Value::Object(fields) = json_body(&headers, &body)? else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    let mut user = FakeUser::new("", "", &[]);
    let (mut key, mut name, mut technician) = (None, None, None);
    for (field, value) in &fields {
        match field.as_str() {
            "userKey" => key = Some(non_empty_string(field, value)?),
            "name" => name = Some(non_empty_string(field, value)?),
            "isTechnician" => technician = Some(boolean(field, value)?),
            "email" => user.email = email(value)?,
            "roles" => user.roles = keys("roles", value, false)?,
            "groups" => user.groups = keys("groups", value, false)?,
            "status" => user.status = status_value(value)?,
            "picture" | "lastLogin" => {}
            _ => return Err(ApiError::bad_request(format!("unknown field {field:?}"))),
        }
    }
    user.user_key = key.ok_or_else(|| ApiError::bad_request("userKey is required"))?;
    user.name = name.ok_or_else(|| ApiError::bad_request("name is required"))?;
    user.is_technician =
        technician.ok_or_else(|| ApiError::bad_request("isTechnician is required"))?;
    user.is_active = user.status != 2;
    let mut inner = lock(&shared);
    if inner.seq_of_key(&user.user_key).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("a user with the userKey {:?} already exists", user.user_key),
        ));
    }
    let id = inner.insert(user);
    drop(inner);
    let mut response = (StatusCode::CREATED, axum::Json(Value::String(id.clone()))).into_response();
    let location = format!("{}/{}", users_prefix(), id);
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// `PUT .../identity/users/{userKey}/{attribute}` with the raw JSON value.
async fn set_attribute(
    State(shared): State<Shared>,
    path: AttributePath,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let Path((tenant, org, key, attribute)) = path.map_err(path_error)?;
    check_scope(&tenant, &org)?;
    let value = json_body(&headers, &body)?;
    let mut inner = lock(&shared);
    let seq = inner
        .seq_of_key(&key)
        .ok_or_else(|| ApiError::not_found(&key))?;
    if attribute == "userKey" {
        let new_key = non_empty_string("userKey", &value)?;
        if let Some(other) = inner.seq_of_key(&new_key)
            && other != seq
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("a user with the userKey {new_key:?} already exists"),
            ));
        }
        let user = inner.users.get_mut(&seq).expect("indexed");
        let old = std::mem::replace(&mut user.user_key, new_key.clone());
        inner.by_key.remove(&old.to_lowercase());
        inner.by_key.insert(new_key.to_lowercase(), seq);
        return Ok(StatusCode::OK);
    }
    let user = inner.users.get_mut(&seq).expect("indexed");
    match attribute.as_str() {
        "name" => user.name = non_empty_string("name", &value)?,
        "email" => user.email = email(&value)?,
        "isActive" => user.is_active = boolean("isActive", &value)?,
        "isTechnician" => user.is_technician = boolean("isTechnician", &value)?,
        "status" => user.status = status_value(&value)?,
        other => {
            return Err(ApiError::bad_request(format!(
                "attribute {other:?} cannot be set by this fake"
            )));
        }
    }
    Ok(StatusCode::OK)
}

/// `POST .../identity/users/{userKey}/{roles|groups}/{add|remove}` with a JSON array of keys.
async fn add_remove(
    State(shared): State<Shared>,
    path: ListPath,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let Path((tenant, org, key, list, action)) = path.map_err(path_error)?;
    check_scope(&tenant, &org)?;
    if !matches!(list.as_str(), "roles" | "groups") || !matches!(action.as_str(), "add" | "remove")
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no operation {list}/{action}"),
        ));
    }
    let items = keys(&list, &json_body(&headers, &body)?, true)?;
    let mut inner = lock(&shared);
    let seq = inner
        .seq_of_key(&key)
        .ok_or_else(|| ApiError::not_found(&key))?;
    let user = inner.users.get_mut(&seq).expect("indexed");
    let target = if list == "roles" {
        &mut user.roles
    } else {
        &mut user.groups
    };
    if action == "add" {
        target.extend(items);
        *target = normalize(std::mem::take(target));
    } else {
        target.retain(|k| !items.contains(k));
    }
    Ok(StatusCode::OK)
}

/// `DELETE .../identity/users/{userKey or id}`.
async fn delete_user(State(shared): State<Shared>, path: KeyPath) -> Result<StatusCode, ApiError> {
    let Path((tenant, org, key)) = path.map_err(path_error)?;
    check_scope(&tenant, &org)?;
    let mut inner = lock(&shared);
    let seq = inner
        .seq_of(&key)
        .ok_or_else(|| ApiError::not_found(&key))?;
    inner.remove(seq);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST .../identity/users/sendInvitation` with `{"userKey": ..}` (assumed shape).
async fn send_invitation(
    State(shared): State<Shared>,
    path: ScopePath,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let Path((tenant, org)) = path.map_err(path_error)?;
    check_scope(&tenant, &org)?;
    let Value::Object(fields) = json_body(&headers, &body)? else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    let key = fields
        .get("userKey")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("userKey is required"))?;
    let mut inner = lock(&shared);
    let seq = inner
        .seq_of_key(key)
        .ok_or_else(|| ApiError::not_found(key))?;
    let user = inner.users.get_mut(&seq).expect("indexed");
    user.invitations += 1;
    Ok(axum::Json(Value::String("sent".into())))
}
