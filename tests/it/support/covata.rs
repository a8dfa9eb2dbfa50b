//! A fake Covata Access Service (the contract of `/work/shared/api/README.md`, section "Covata
//! Access Service"), strict enough that a connector which breaks the contract fails against it.
//!
//! [`FakeCovata::start`] binds `127.0.0.1:0` and serves from a dedicated thread with its own
//! tokio runtime, so the fake keeps answering while a test blocks (for example on the real CLI
//! run as a child process); dropping the [`FakeCovata`] stops it.
//!
//! What it enforces: the OAuth2 password grant (client id/secret in HTTP Basic) and a valid,
//! unexpired bearer token on every `/api/v1/...` call; JSON content types; required fields, the
//! five documented roles and no unknown fields; unique emails (case-insensitive); `email` not
//! updatable; a JSON object body on bulk actions; the CSV import template; ids matched exactly
//! after percent-decoding of one path segment (so an id holding `/` or `%` only matches when the
//! client encoded it).
//!
//! Where the contract is silent, the choice made is marked "assumed" where it is made.
//!
//! Faults ([`FakeCovata::inject`]) fire on the next N requests that match a method and a path
//! (exact, prefix or `{param}` template): 429/503 with `Retry-After`, any status, latency, a
//! dropped connection (before or after the change is applied), and a slow answer to a change
//! that is applied anyway (at once, or late and even after the client gave up). Every exchange
//! is logged with the fault it fired and the status answered ([`FakeCovata::exchanges`]). A dropped connection is made by
//! breaking the accepted socket: every later read or write on it fails, so hyper closes the
//! connection without writing a single byte of the response, and the client sees the connection
//! closed before any response (reqwest: "error sending request", caused by hyper's
//! `IncompleteMessage`).

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart};

use super::fake::prelude::*;
pub use super::fake::{Fault, PathMatch};
use super::fake::{TokenRefused, Tokens, basic_credentials, form_fields};

/// The service account the tests configure (password grant `username`).
pub const USERNAME: &str = "svc-dirsync";
/// The service account's password.
pub const PASSWORD: &str = "s3cret-pw!";
/// The OAuth client id (HTTP Basic user on the token endpoint).
pub const CLIENT_ID: &str = "dirsync-client";
/// The OAuth client secret (HTTP Basic password on the token endpoint).
pub const CLIENT_SECRET: &str = "client-s3cret";

/// The five documented roles.
pub const ROLES: [&str; 5] = [
    "ROLE_SYSTEM_ADMIN",
    "ROLE_COLLABORATOR",
    "ROLE_ORIGINATOR",
    "ROLE_ADHOC_COLLABORATOR",
    "ROLE_USER_ADMIN",
];

/// The CSV import template's columns (assumed: the admin guide's template). Matched
/// case-insensitively, in any order; all seven must be present and no other.
pub const IMPORT_COLUMNS: [&str; 7] = [
    "Email",
    "First Name",
    "Last Name",
    "Mobile Number",
    "Role",
    "Account Type",
    "Plan",
];

/// Default access-token lifetime.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);
/// `GET /api/v1/users` page size when `limit` is absent (assumed).
pub const DEFAULT_PAGE_LIMIT: usize = 50;
/// The largest page: a bigger `limit` is clamped to this (assumed).
pub const MAX_PAGE_LIMIT: usize = 100;

/// Query parameters `GET /api/v1/users` accepts; any other is a 400 (assumed, to catch a
/// connector that invents paging parameters).
const LIST_PARAMETERS: [&str; 6] = ["offset", "limit", "email", "name", "role", "enabled"];
const BULK_ACTIONS: [&str; 5] = ["disable", "enable", "expire", "resetPassword", "delete"];
const MAX_BODY: usize = 256 * 1024 * 1024;

/// A user as the fake holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeUser {
    /// Server-generated (UUID v4 text) unless given to [`FakeCovata::insert_user`].
    pub id: String,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub other_name: Option<String>,
    pub mobile_number: Option<String>,
    pub plan_id: Option<String>,
    pub account_type: Option<String>,
    /// Sorted, without duplicates.
    pub roles: Vec<String>,
    pub enabled: bool,
    pub account_non_locked: bool,
    pub num_failed_logins: u32,
    /// Set by `PUT {forceResetPassword}` and by the bulk `resetPassword` action.
    pub force_reset_password: bool,
    /// How many bulk `resetPassword` actions hit this user.
    pub password_resets: u32,
    /// How many bulk `expire` actions hit this user.
    pub sessions_expired: u32,
}

impl FakeUser {
    /// An enabled, unlocked user with these roles and no other field; the id is generated on
    /// insertion (set `id` to choose it).
    pub fn new(email: &str, roles: &[&str]) -> FakeUser {
        FakeUser {
            id: String::new(),
            email: email.to_owned(),
            first_name: None,
            last_name: None,
            other_name: None,
            mobile_number: None,
            plan_id: None,
            account_type: None,
            roles: normalize_roles(roles.iter().map(|r| (*r).to_owned()).collect()),
            enabled: true,
            account_non_locked: true,
            num_failed_logins: 0,
            force_reset_password: false,
            password_resets: 0,
            sessions_expired: 0,
        }
    }
}

/// One request as the fake received it (every request, the token calls included).
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
    /// Whether it carried `Authorization: Bearer <valid unexpired access token>`.
    pub authorized: bool,
}

/// One exchange as the fake saw it: when the request arrived, the fault it fired and the
/// status answered (`None`: no answer was written — a dropped connection, or a client that gave
/// up while the fake was still waiting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub at: Instant,
    pub method: String,
    /// The raw path, as sent.
    pub path: String,
    /// The body, lossily decoded as UTF-8.
    pub body: String,
    pub fault: Option<Fault>,
    pub status: Option<u16>,
}

impl Exchange {
    /// `POST /api/v1/users`: one create attempt.
    pub fn is_create(&self) -> bool {
        self.method == "POST" && self.path == "/api/v1/users"
    }

    /// The `email` of a JSON body (creates), if any.
    pub fn email(&self) -> Option<String> {
        serde_json::from_str::<Value>(&self.body)
            .ok()?
            .get("email")?
            .as_str()
            .map(str::to_owned)
    }
}

struct Inner {
    /// By creation order.
    users: BTreeMap<u64, FakeUser>,
    by_id: HashMap<String, u64>,
    /// Lowercased email.
    by_email: HashMap<String, u64>,
    next_seq: u64,
    access_tokens: Tokens<()>,
    refresh_tokens: HashSet<String>,
    token_ttl: Duration,
    /// Every bearer token is refused (401), freshly issued ones included.
    refuse_tokens: bool,
    /// 401 answers to `/api/v1/...` calls.
    unauthorized: usize,
    password_grants: usize,
    refresh_grants: usize,
    requests: Vec<RecordedRequest>,
    bulk_batches: Vec<(String, usize)>,
    bulk_limit: Option<usize>,
    toggle_calls: usize,
    faults: Faults,
    /// Every exchange, never cleared by [`FakeCovata::clear_requests`].
    exchanges: Vec<Exchange>,
}

type Shared = Arc<Mutex<Inner>>;

impl Inner {
    fn new() -> Inner {
        Inner {
            users: BTreeMap::new(),
            by_id: HashMap::new(),
            by_email: HashMap::new(),
            next_seq: 0,
            access_tokens: Tokens::default(),
            refresh_tokens: HashSet::new(),
            token_ttl: DEFAULT_TOKEN_TTL,
            refuse_tokens: false,
            unauthorized: 0,
            password_grants: 0,
            refresh_grants: 0,
            requests: Vec::new(),
            bulk_batches: Vec::new(),
            bulk_limit: None,
            toggle_calls: 0,
            faults: Faults::default(),
            exchanges: Vec::new(),
        }
    }

    fn email_taken(&self, email: &str) -> bool {
        self.by_email.contains_key(&email.to_lowercase())
    }

    /// Inserts a user whose email is known to be free; generates the id when it is empty.
    fn insert(&mut self, mut user: FakeUser) -> String {
        if user.id.is_empty() {
            user.id = uuid::Uuid::new_v4().to_string();
        }
        assert!(
            !self.by_id.contains_key(&user.id),
            "fake Covata: duplicate user id {:?}",
            user.id
        );
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_id.insert(user.id.clone(), seq);
        self.by_email.insert(user.email.to_lowercase(), seq);
        let id = user.id.clone();
        self.users.insert(seq, user);
        id
    }

    fn user_mut(&mut self, id: &str) -> Option<&mut FakeUser> {
        let seq = *self.by_id.get(id)?;
        self.users.get_mut(&seq)
    }

    fn remove(&mut self, id: &str) -> Option<FakeUser> {
        let seq = self.by_id.remove(id)?;
        let user = self.users.remove(&seq)?;
        self.by_email.remove(&user.email.to_lowercase());
        Some(user)
    }

    fn issue_tokens(&mut self) -> Value {
        // Expires exactly `token_ttl` after the answer; `expires_in` (whole seconds, rounded
        // down) never promises more.
        let access = self.access_tokens.issue((), self.token_ttl);
        let refresh = uuid::Uuid::new_v4().simple().to_string();
        self.refresh_tokens.insert(refresh.clone());
        json!({
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "bearer",
            "expires_in": self.token_ttl.as_secs(),
        })
    }

    fn check_bearer(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let invalid =
            |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", message);
        match self.access_tokens.check(headers) {
            Err(TokenRefused::Missing) => Err(invalid(
                "Full authentication is required to access this resource",
            )),
            Err(TokenRefused::NotBearer) => Err(invalid("expected a Bearer token")),
            _ if self.refuse_tokens => Err(invalid("This account may not use the API")),
            Ok(()) => Ok(()),
            Err(TokenRefused::Expired) => Err(invalid("Access token expired")),
            Err(TokenRefused::Unknown) => Err(invalid("Invalid access token")),
        }
    }
}

/// The running fake. Dropping it stops the server.
pub struct FakeCovata(Running<Inner>);

impl FakeCovata {
    /// Starts the fake on `127.0.0.1:<free port>`.
    pub async fn start() -> FakeCovata {
        FakeCovata::start_on(Listener::bind("Covata"))
    }

    /// Starts the fake on `listener` ([`Listener::bind_port`]).
    pub fn start_on(listener: Listener) -> FakeCovata {
        FakeCovata(Running::serve(listener, Inner::new(), router))
    }

    /// `http://127.0.0.1:PORT` (no trailing slash); the API is under `/api/...`.
    pub fn base_url(&self) -> String {
        self.0.url()
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

    /// The user with this email (case-insensitive).
    pub fn user_by_email(&self, email: &str) -> Option<FakeUser> {
        let inner = self.lock();
        let seq = inner.by_email.get(&email.to_lowercase())?;
        inner.users.get(seq).cloned()
    }

    /// Adds a pre-existing account (no validation of roles); returns its id (generated when
    /// `user.id` is empty). Panics on a duplicate email or id: that is a bug in the test.
    pub fn insert_user(&self, mut user: FakeUser) -> String {
        let mut inner = self.lock();
        assert!(
            !inner.email_taken(&user.email),
            "fake Covata: a user with email {:?} already exists",
            user.email
        );
        user.roles = normalize_roles(std::mem::take(&mut user.roles));
        inner.insert(user)
    }

    /// Changes a user in place, as an admin editing it by hand would (no request recorded).
    /// Panics if there is no such user. Keep the email unchanged (the email index is not
    /// updated).
    pub fn update_user(&self, id: &str, edit: impl FnOnce(&mut FakeUser)) {
        let mut inner = self.lock();
        let user = inner
            .user_mut(id)
            .unwrap_or_else(|| panic!("fake Covata: no user {id:?}"));
        edit(user);
        user.roles = normalize_roles(std::mem::take(&mut user.roles));
    }

    /// Deletes a user by hand (no request recorded); returns it.
    pub fn remove_user(&self, id: &str) -> Option<FakeUser> {
        self.lock().remove(id)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// The requests with this method and exactly this (raw) path, in arrival order.
    pub fn requests_to(&self, method: &str, path: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }

    /// The requests other than token grants, as `(method, path)`.
    pub fn api_requests(&self) -> Vec<(String, String)> {
        self.requests()
            .into_iter()
            .filter(|r| !r.path.starts_with("/api/oauth"))
            .map(|r| (r.method, r.path))
            .collect()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// `(action, number of ids in the body)` of every accepted bulk call, in order.
    pub fn bulk_batches(&self) -> Vec<(String, usize)> {
        self.lock().bulk_batches.clone()
    }

    /// Calls of `PUT /api/v1/users/{id}/enable` (the toggle dirsync must never use).
    pub fn toggle_calls(&self) -> usize {
        self.lock().toggle_calls
    }

    /// `(password grants, refresh grants)` successfully answered.
    pub fn token_grants(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.password_grants, inner.refresh_grants)
    }

    /// Lifetime of the access tokens issued from now on (default 300 s; at least 1 s, as
    /// `expires_in` counts whole seconds). A call with an expired token gets a 401.
    pub fn set_token_ttl(&self, ttl: Duration) {
        assert!(
            ttl >= Duration::from_secs(1),
            "fake Covata: a token lives at least 1 s"
        );
        self.lock().token_ttl = ttl;
    }

    /// Every bearer token is refused with 401 from now on, freshly issued ones included (an
    /// account whose credentials work at the token endpoint but may not use the API).
    pub fn set_refuse_tokens(&self, refuse: bool) {
        self.lock().refuse_tokens = refuse;
    }

    /// 401 answers to `/api/v1/...` calls so far (expired, unknown or refused tokens).
    pub fn unauthorized_answers(&self) -> usize {
        self.lock().unauthorized
    }

    /// Requests to the token endpoint so far, refused ones included.
    pub fn token_requests(&self) -> usize {
        self.lock()
            .exchanges
            .iter()
            .filter(|e| e.path == "/api/oauth/token")
            .count()
    }

    /// Every access token issued so far stops working now; refresh tokens stay valid.
    pub fn expire_all_tokens(&self) {
        self.lock().access_tokens.expire_all();
    }

    /// Every refresh token issued so far stops working (forces a new password grant).
    pub fn revoke_refresh_tokens(&self) {
        self.lock().refresh_tokens.clear();
    }

    /// A bulk call with more ids than this is a 400 (the real limit is undocumented; none by
    /// default).
    pub fn set_bulk_limit(&self, limit: Option<usize>) {
        self.lock().bulk_limit = limit;
    }

    /// A delay added to every request before it is handled.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().faults.latency = latency;
    }

    /// Applies `fault` to the next `times` requests whose method is `method` (`"*"`: any) and
    /// whose raw path matches `path` (a `&str` is an exact path). When several rules match, the
    /// one injected first fires; a request fires at most one rule.
    pub fn inject(&self, method: &str, path: impl Into<PathMatch>, fault: Fault, times: usize) {
        self.lock()
            .faults
            .inject("Covata", method, path.into(), fault, times);
    }

    /// Drops every injected fault that has not fired yet.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// How many fault firings are still pending.
    pub fn pending_faults(&self) -> usize {
        self.lock().faults.pending()
    }

    /// Every exchange so far, in arrival order (see [`Exchange`]).
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.lock().exchanges.clone()
    }

    /// How many requests have arrived so far (cheaper than [`Self::exchanges`]).
    pub fn exchange_count(&self) -> usize {
        self.lock().exchanges.len()
    }

    /// How many create attempts (`POST /api/v1/users`) have arrived so far.
    pub fn create_attempts(&self) -> usize {
        self.lock()
            .exchanges
            .iter()
            .filter(|e| e.is_create())
            .count()
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// A JSON error answer: `{"error": <code>, "message": <text>}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    error: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn not_found(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no user with id {id:?}"),
        )
    }

    fn unsupported_media_type(expected: &str, got: Option<&str>) -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type must be {expected}, got {}",
                got.unwrap_or("none")
            ),
        )
    }

    fn oauth(status: StatusCode, error: &'static str, description: &str) -> ApiError {
        ApiError::new(status, error, description)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = if self.error.starts_with("invalid_")
            || self.error.starts_with("unsupported_grant")
        {
            // OAuth style.
            json!({"error": self.error, "error_description": self.message, "message": self.message})
        } else {
            json!({"error": self.error, "message": self.message})
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = if self.error == "invalid_token" {
                "Bearer error=\"invalid_token\""
            } else {
                "Basic realm=\"oauth2/client\""
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

// ---------------------------------------------------------------------------------------------
// Routing and the front middleware (recording, latency, faults, bearer check).

#[path = "covata_handlers.rs"]
mod handlers;
use handlers::{
    bulk, create_user, delete_user, get_user, import, list_users, toggle_user, token, update_user,
};

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/api/oauth/token", post(token))
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/users/bulk", post(bulk))
        .route("/api/v1/users/import", post(import))
        .route(
            "/api/v1/users/{id}",
            get(get_user).put(update_user).delete(delete_user),
        )
        .route("/api/v1/users/{id}/enable", put(toggle_user))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(shared.clone(), front))
        .with_state(shared)
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not supported on {}", uri.path()),
    )
}

fn needs_bearer(path: &str) -> bool {
    path == "/api/v1" || path.starts_with("/api/v1/")
}

async fn front(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let incoming = match Incoming::read(request, MAX_BODY).await {
        Ok(incoming) => incoming,
        Err(e) => return ApiError::bad_request(e).into_response(),
    };
    let path = incoming.path.clone();
    let conn = incoming.conn.clone();
    let (auth, latency, fault, exchange) = {
        let mut inner = lock(&shared);
        let auth = inner.check_bearer(&incoming.parts.headers);
        inner.requests.push(RecordedRequest {
            method: incoming.method.clone(),
            path: path.clone(),
            query: incoming.parts.uri.query().map(str::to_owned),
            body: incoming.body_text(),
            content_type: content_type(&incoming.parts.headers).map(str::to_owned),
            authorized: auth.is_ok(),
        });
        let fault = inner.faults.take(&incoming.method, &path);
        inner.exchanges.push(Exchange {
            at: Instant::now(),
            method: incoming.method.clone(),
            path: path.clone(),
            body: incoming.body_text(),
            fault: fault.clone(),
            status: None,
        });
        let exchange = inner.exchanges.len() - 1;
        (auth, inner.faults.latency, fault, exchange)
    };
    // The answer's status, once there is one to write.
    let answered = |response: Response| {
        let mut inner = lock(&shared);
        if response.status() == StatusCode::UNAUTHORIZED && needs_bearer(&path) {
            inner.unauthorized += 1;
        }
        inner.exchanges[exchange].status = Some(response.status().as_u16());
        drop(inner);
        response
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(Fault::LatencyThenApplyDetached(delay)) = &fault {
        // A task of its own: it goes on when the client gives up and hyper drops this
        // future with the connection.
        let delay = *delay;
        let request = incoming.into_request();
        let handled = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            match auth {
                Err(e) if needs_bearer(request.uri().path()) => e.into_response(),
                _ => next.run(request).await,
            }
        });
        return match handled.await {
            Ok(response) => answered(response),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        };
    }
    match before_handler(fault.as_ref(), conn.as_ref(), fault_status).await {
        Before::Answer(response) => return answered(response),
        Before::Dropped(response) => return response,
        Before::Proceed => {}
    }
    let response = match auth {
        Err(e) if needs_bearer(&path) => e.into_response(),
        _ => next.run(incoming.into_request()).await,
    };
    if after_handler(fault.as_ref(), conn.as_ref()).await {
        return response;
    }
    answered(response)
}

fn fault_status(status: StatusCode, retry_after: Option<&str>) -> Response {
    let error = match status {
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::SERVICE_UNAVAILABLE => "service_unavailable",
        s if s.is_server_error() => "server_error",
        _ => "injected_fault",
    };
    let body = json!({"error": error, "message": format!("injected fault: {status}")});
    with_retry_after((status, axum::Json(body)).into_response(), retry_after)
}

// ---------------------------------------------------------------------------------------------
// Request helpers.

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    if has_content_type(headers, "application/json") {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type(
            "application/json",
            content_type(headers),
        ))
    }
}

/// The body as a JSON object.
fn json_object(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "a JSON object body is required (at least {})",
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("malformed JSON: {e}"))),
    }
}

/// The path's `{id}`, percent-decoded by axum (an undecodable segment is a 400).
fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id)
        .map_err(|e| ApiError::bad_request(format!("invalid user id in path: {e}")))
}

fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let mut seen = HashSet::new();
    let mut pairs = Vec::new();
    for (key, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if !seen.insert(key.clone().into_owned()) {
            return Err(ApiError::bad_request(format!(
                "query parameter `{key}` given more than once"
            )));
        }
        pairs.push((key.into_owned(), value.into_owned()));
    }
    Ok(pairs)
}

fn opt_string(field: &str, value: &Value) -> Result<Option<String>, ApiError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(ApiError::bad_request(format!(
            "field `{field}` must be a string or null"
        ))),
    }
}

/// `planId`: a string or an integer (assumed; kept as text).
fn plan_id(value: &Value) -> Result<Option<String>, ApiError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        _ => Err(ApiError::bad_request(
            "field `planId` must be a string, an integer or null",
        )),
    }
}

fn boolean(field: &str, value: &Value) -> Result<bool, ApiError> {
    value
        .as_bool()
        .ok_or_else(|| ApiError::bad_request(format!("field `{field}` must be true or false")))
}

fn normalize_roles(mut roles: Vec<String>) -> Vec<String> {
    roles.sort();
    roles.dedup();
    roles
}

fn check_role(role: &str) -> Result<(), String> {
    if ROLES.contains(&role) {
        Ok(())
    } else {
        Err(format!(
            "unknown role `{role}`: expected one of {}",
            ROLES.join(", ")
        ))
    }
}

/// `roles`: a non-empty array of documented roles.
fn roles(value: &Value) -> Result<Vec<String>, ApiError> {
    let Value::Array(items) = value else {
        return Err(ApiError::bad_request(
            "field `roles` must be an array of roles",
        ));
    };
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "field `roles` must hold at least one role",
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(role) = item else {
            return Err(ApiError::bad_request(
                "field `roles` must hold only strings",
            ));
        };
        check_role(role).map_err(ApiError::bad_request)?;
        out.push(role.clone());
    }
    Ok(normalize_roles(out))
}

/// A plausible address: one `@`, a non-empty local part, a dotted domain, no whitespace
/// (assumed; the real rules are undocumented).
fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn user_json(user: &FakeUser) -> Value {
    let plan = user.plan_id.as_ref().map(|id| {
        json!({"id": id, "name": format!("Plan {id}"), "description": null, "quota": null, "default": false})
    });
    json!({
        "id": user.id,
        "email": user.email,
        "firstName": user.first_name,
        "lastName": user.last_name,
        "otherName": user.other_name,
        "mobileNumber": user.mobile_number,
        "planId": user.plan_id,
        "plan": plan,
        "enabled": user.enabled,
        "accountNonLocked": user.account_non_locked,
        "numFailedLogins": user.num_failed_logins,
        "accountType": user.account_type,
        "roles": user.roles,
    })
}
