//! The HTTP layer every connector uses: one client per target with timeouts, a concurrency
//! limit, request pacing, retries with backoff, cached bearer tokens, URL building and logging
//! that never shows a secret.
//!
//! Retry rules (in one place, [`HttpClient::send`]):
//! - 429 and 503: retried for every request, after `Retry-After` (delta-seconds or an HTTP
//!   date, capped by `max_backoff`) or else capped exponential backoff with full jitter.
//! - other 5xx: retried only for requests marked idempotent ([`Request::idempotent`]; GET, PUT,
//!   DELETE are by default, POST is not).
//! - a failure to *connect* (refused, DNS, TLS handshake, connect timeout) means nothing was
//!   sent (`not_sent`, [`OpError::Unreachable`]). The first request that fails so becomes the
//!   client's *probe*: it alone retries its connect (at most `max_retries` times, backoff capped
//!   at [`CONNECT_BACKOFF_CAP`], no new retry once [`PROBE_BUDGET`] has passed since the probe
//!   began, at least one); requests failing meanwhile wait for its verdict instead of starting
//!   their own series. If the probe never connects, the client is *unreachable*: every later
//!   request fails at once with `not_sent`, without a connect attempt. Any answer (of any
//!   status) to any request makes the client reachable again. Connectors are built per run,
//!   so the next run asks again.
//! - any later transport failure (request timeout, connection dropped mid-exchange) may have
//!   reached the server and is retried only for idempotent requests.
//! - 401 with a bearer token: the token is invalidated and the request sent again with its
//!   replacement (not counted as a retry; at most [`MAX_REAUTH`] times per request).
//!   400/403/404/409/422 and every other status are never retried.
//!
//! Bearer tokens ([`CachedToken`]):
//! - a request takes its token right before it is written: after its concurrency permit and its
//!   pacing slot, so a token never ages in the queue.
//! - a token is refreshed ahead of its expiry by a margin of `min(life / 2, max(life / 10,
//!   request_timeout))`, counted from when it was requested: a token taken just before the
//!   refresh point still has `request_timeout` (the longest an exchange may take) to reach the
//!   server, and tokens living less than twice that are renewed at half their life (a 2 s token
//!   every second, a 30 s token every 15 s with the default 30 s timeout, a 1 h token after
//!   54 minutes).
//! - one fetch at a time: callers waiting meanwhile reuse its result; a 401 invalidates the
//!   rejected token only if it is still the current one, so all the requests holding it share
//!   one replacement.
//! - token grants ([`Request::token_grant`]) skip the concurrency limit and the pacing: the
//!   request that needs the token already holds a permit and a slot.
//!
//! Refused credentials are sticky for the client (for the run): a token endpoint answering
//! 400/401/403 (the fetchers' [`HttpError::Auth`]), a 401 on a token issued to replace a rejected
//! one before any request succeeded with it, and a 401 to an HTTP Basic request. From then on
//! every request of the client fails at once with the same [`HttpError::Auth`]
//! ([`OpError::Auth`]), sending nothing and asking no token endpoint: at most one login plus
//! one retry per target per run. Each client counts its refusal once in
//! `dirsync_auth_failures_total`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, Semaphore, watch};
use url::Url;

pub use reqwest::Method;

use crate::connector::HttpSettings;
use crate::connector::connector::OpError;
use crate::secret::Secret;

/// The `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("dirsync/", env!("CARGO_PKG_VERSION"));

/// How much of a failing response's body is kept on the error (bytes).
pub const MAX_ERROR_BODY: usize = 2048;

/// The first step of the exponential backoff.
const BASE_BACKOFF: Duration = Duration::from_millis(200);

/// The longest wait between two connect attempts of a probe (see the module doc).
pub const CONNECT_BACKOFF_CAP: Duration = Duration::from_secs(1);

/// After this long a probe starts no new connect attempt (see the module doc).
pub const PROBE_BUDGET: Duration = Duration::from_secs(4);

/// How often one request is sent again after a 401 with a replaced bearer token.
pub const MAX_REAUTH: u32 = 2;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A failed HTTP exchange. Carries the target, method and path (never the query string, a
/// header, a token or a credential); a failing response's body is truncated to
/// [`MAX_ERROR_BODY`] and withheld entirely for sensitive requests (token endpoints).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The client could not be set up (bad settings, missing credentials).
    #[error("{target}: {message}")]
    Setup { target: String, message: String },
    /// A URL could not be built (an id that cannot be one path segment, a base URL that
    /// cannot take a path).
    #[error("{target}: {message}")]
    Url { target: String, message: String },
    /// The server answered with a non-success status (after the retries this layer makes).
    #[error("{target}: {method} {path}: HTTP {status} after {attempts} attempt(s){}", body_suffix(.body))]
    Status {
        target: String,
        method: String,
        path: String,
        status: u16,
        /// The response body, truncated; empty for sensitive requests.
        body: String,
        attempts: u32,
    },
    /// No response: connect failure, timeout, connection dropped (after the retries).
    #[error("{target}: {method} {path}: {message} after {attempts} attempt(s)")]
    Transport {
        target: String,
        method: String,
        path: String,
        message: String,
        /// The request surely never reached the server (connect failure).
        not_sent: bool,
        timeout: bool,
        attempts: u32,
    },
    /// A success response whose body is not what the API documents.
    #[error("{target}: {method} {path}: unexpected response: {message}")]
    Decode {
        target: String,
        method: String,
        path: String,
        message: String,
    },
    /// The token endpoint refused the credentials.
    #[error("{target}: authentication failed: {message}")]
    Auth { target: String, message: String },
}

fn body_suffix(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

impl HttpError {
    /// The HTTP status of a [`HttpError::Status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The (truncated) response body of a [`HttpError::Status`].
    pub fn body(&self) -> Option<&str> {
        match self {
            HttpError::Status { body, .. } => Some(body),
            _ => None,
        }
    }

    /// What the engine records: the server's words when there are some, else this error.
    fn message(&self) -> String {
        match self {
            HttpError::Status {
                body,
                status,
                method,
                path,
                ..
            } if body.is_empty() => format!("HTTP {status} from {method} {path}"),
            HttpError::Status { body, .. } => body.clone(),
            other => other.to_string(),
        }
    }
}

/// The shared mapping of HTTP outcomes to operation errors: 401 → `Auth`, 404 → `NotFound`,
/// 409 → `Conflict`, a transport error before anything was sent → `Unreachable`, 429/5xx/other
/// transport errors → `Unavailable`, other 4xx → `Rejected` (with the
/// truncated body). Connectors refine it where the vendor says more (a 400 "email exists").
impl From<HttpError> for OpError {
    fn from(e: HttpError) -> OpError {
        match &e {
            HttpError::Status { status, .. } => match *status {
                401 => OpError::Auth {
                    message: e.to_string(),
                },
                404 => OpError::NotFound {
                    message: e.message(),
                },
                409 => OpError::Conflict {
                    message: e.message(),
                },
                429 | 500..=599 => OpError::Unavailable {
                    message: e.to_string(),
                },
                status => OpError::Rejected {
                    status,
                    message: e.message(),
                },
            },
            HttpError::Auth { target, message } => OpError::Auth {
                message: format!("{target}: {message}"),
            },
            HttpError::Url { .. } | HttpError::Setup { .. } => OpError::Unsupported {
                message: e.to_string(),
            },
            // Nothing left this machine (DNS, refused, TLS handshake): surely not applied.
            HttpError::Transport { not_sent: true, .. } => OpError::Unreachable {
                message: e.to_string(),
            },
            HttpError::Transport { .. } | HttpError::Decode { .. } => OpError::Unavailable {
                message: e.to_string(),
            },
        }
    }
}

/// Cuts `body` to at most [`MAX_ERROR_BODY`] bytes (on a character boundary), saying so.
pub fn truncate_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.len() <= MAX_ERROR_BODY {
        return text.to_string();
    }
    let mut end = MAX_ERROR_BODY;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

// ---------------------------------------------------------------------------------------------
// URLs
// ---------------------------------------------------------------------------------------------

/// Everything outside RFC 3986 unreserved characters (`A-Za-z0-9-._~`) is encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes `id` as ONE path segment: `/`, `?`, `#`, `%`, spaces, `@`, `+` and
/// non-ASCII (as UTF-8) are all encoded. The dot segments `.` and `..` are written `%2E`
/// (a URL parser still resolves those, so [`UrlBuilder`] refuses them).
pub fn path_segment(id: &str) -> String {
    if id == "." || id == ".." {
        return id.replace('.', "%2E");
    }
    utf8_percent_encode(id, SEGMENT).to_string()
}

/// Builds `base` + literal path parts + encoded ids, keeping the base URL's own path
/// (`https://h/prefix` + `api/v1/users` → `https://h/prefix/api/v1/users`). The base's query
/// and fragment are dropped.
#[derive(Debug, Clone)]
pub struct UrlBuilder {
    base: Url,
    path: String,
    error: Option<String>,
}

impl UrlBuilder {
    pub fn new(base: &Url) -> UrlBuilder {
        UrlBuilder {
            base: base.clone(),
            path: base.path().trim_end_matches('/').to_string(),
            error: None,
        }
    }

    /// Appends a literal path written in code (`"api/v1/users"`), not encoded.
    pub fn path(mut self, literal: &str) -> UrlBuilder {
        for part in literal.split('/').filter(|p| !p.is_empty()) {
            self.path.push('/');
            self.path.push_str(part);
        }
        self
    }

    /// Appends `id` as one encoded segment. An empty id, `.` or `..` makes [`Self::build`]
    /// fail: they would address another resource.
    pub fn id(mut self, id: &str) -> UrlBuilder {
        if id.is_empty() || id == "." || id == ".." {
            self.error.get_or_insert_with(|| {
                format!("the id {id:?} cannot be used as a URL path segment")
            });
        }
        self.path.push('/');
        self.path.push_str(&path_segment(id));
        self
    }

    /// The URL, or why it cannot be built.
    pub fn build(self) -> Result<Url, String> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut url = self.base;
        if url.cannot_be_a_base() {
            return Err(format!("the base URL {url} cannot take a path"));
        }
        url.set_query(None);
        url.set_fragment(None);
        let wanted = if self.path.is_empty() {
            "/".to_string()
        } else {
            self.path
        };
        url.set_path(&wanted);
        if url.path() != wanted {
            return Err(format!(
                "the path {wanted:?} would be rewritten to {:?}",
                url.path()
            ));
        }
        Ok(url)
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

/// An access token as a token endpoint issued it.
#[derive(Debug, Clone)]
pub struct Token {
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    /// The token's life from when it was requested (`expires_in`); `None`: until a 401.
    pub expires_in: Option<Duration>,
}

/// Something that hands out a bearer token for requests.
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync {
    /// A token believed valid (fetching or refreshing one when needed).
    async fn token(&self) -> Result<Secret, HttpError>;
    /// The server refused `rejected` (401): the next [`Self::token`] gets a new one unless
    /// another caller already replaced it. `Some` when this means the credentials are refused
    /// (then every later [`Self::token`] fails with that error).
    async fn invalidate(&self, rejected: &Secret) -> Option<HttpError>;
    /// The server answered a request carrying `accepted` with something else than a 401.
    fn confirm(&self, _accepted: &Secret) {}
}

/// Gets a token from a vendor's token endpoint.
#[async_trait::async_trait]
pub trait TokenFetcher: Send + Sync {
    /// A new token. `previous` is the token being replaced, if any (its refresh token may be
    /// used; a fetcher whose refresh fails falls back to a full login itself).
    async fn fetch(&self, previous: Option<&Token>) -> Result<Token, HttpError>;
}

struct CachedEntry {
    token: Token,
    /// When to fetch a new one ahead of expiry.
    refresh_at: Option<Instant>,
    /// When it stops working.
    expires_at: Option<Instant>,
    /// A 401 said it no longer works.
    rejected: bool,
    /// It was fetched because the one before was rejected: a 401 on it before any success
    /// means the credentials are refused.
    replaces_rejected: bool,
}

struct TokenState {
    entry: Option<CachedEntry>,
    /// The credentials were refused: every later call fails with this, asking nobody.
    refused: Option<HttpError>,
}

/// A [`TokenSource`] that caches the token of a [`TokenFetcher`], refreshes it ahead of its
/// expiry (the margin rule of the module doc) and after a 401, and remembers refused
/// credentials for good. One fetch at a time: concurrent callers wait for it and reuse its
/// result.
pub struct CachedToken {
    target: String,
    request_timeout: Duration,
    fetcher: Box<dyn TokenFetcher>,
    state: Mutex<TokenState>,
    /// The last token some request was answered with something else than a 401.
    confirmed: std::sync::Mutex<Option<Secret>>,
}

impl fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CachedToken { .. }")
    }
}

impl CachedToken {
    /// A cache for the tokens `fetcher` gets for the requests of `http` (its target name and
    /// `request_timeout`, which sets the refresh margin).
    pub fn new(http: &HttpClient, fetcher: impl TokenFetcher + 'static) -> CachedToken {
        CachedToken {
            target: http.target().to_string(),
            request_timeout: http.settings().request_timeout,
            fetcher: Box::new(fetcher),
            state: Mutex::new(TokenState {
                entry: None,
                refused: None,
            }),
            confirmed: std::sync::Mutex::new(None),
        }
    }
}

/// How long before its expiry a token of this life is refreshed: `min(life / 2, max(life / 10,
/// request_timeout))` (the module doc says why).
fn refresh_margin(life: Duration, request_timeout: Duration) -> Duration {
    (life / 2).min((life / 10).max(request_timeout))
}

/// When a token of this life, requested at `start`, is refreshed.
fn refresh_deadline(start: Instant, life: Duration, request_timeout: Duration) -> Instant {
    start + life.saturating_sub(refresh_margin(life, request_timeout))
}

#[async_trait::async_trait]
impl TokenSource for CachedToken {
    async fn token(&self) -> Result<Secret, HttpError> {
        let mut state = self.state.lock().await;
        if let Some(e) = &state.refused {
            return Err(e.clone());
        }
        let now = Instant::now();
        if let Some(entry) = state.entry.as_ref()
            && !entry.rejected
            && entry.refresh_at.is_none_or(|t| now < t)
        {
            return Ok(entry.token.access_token.clone());
        }
        let replaces_rejected = state.entry.as_ref().is_some_and(|e| e.rejected);
        let start = Instant::now();
        let previous = state.entry.as_ref().map(|e| &e.token);
        match self.fetcher.fetch(previous).await {
            Ok(token) => {
                let access = token.access_token.clone();
                state.entry = Some(CachedEntry {
                    refresh_at: token
                        .expires_in
                        .map(|l| refresh_deadline(start, l, self.request_timeout)),
                    expires_at: token.expires_in.map(|l| start + l),
                    token,
                    rejected: false,
                    replaces_rejected,
                });
                Ok(access)
            }
            Err(e @ HttpError::Auth { .. }) => {
                state.refused = Some(e.clone());
                Err(e)
            }
            Err(e) => match state.entry.as_ref() {
                // An early refresh failed, but the current token still works for a while.
                Some(entry)
                    if !entry.rejected && entry.expires_at.is_some_and(|t| Instant::now() < t) =>
                {
                    tracing::warn!(target = %self.target, error = %e, "token refresh failed; using the current token until it expires");
                    Ok(entry.token.access_token.clone())
                }
                _ => Err(e),
            },
        }
    }

    async fn invalidate(&self, rejected: &Secret) -> Option<HttpError> {
        let mut state = self.state.lock().await;
        if let Some(e) = &state.refused {
            return Some(e.clone());
        }
        let confirmed = self
            .confirmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            == Some(rejected);
        let entry = state.entry.as_mut()?;
        if entry.token.access_token != *rejected {
            // Already replaced by another caller: its replacement is used.
            return None;
        }
        if entry.replaces_rejected && !confirmed {
            let e = HttpError::Auth {
                target: self.target.clone(),
                message: "the server refused a freshly issued access token (HTTP 401)".to_string(),
            };
            state.refused = Some(e.clone());
            return Some(e);
        }
        entry.rejected = true;
        None
    }

    fn confirm(&self, accepted: &Secret) {
        let mut confirmed = self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
        if confirmed.as_ref() != Some(accepted) {
            *confirmed = Some(accepted.clone());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests and responses
// ---------------------------------------------------------------------------------------------

enum Body {
    Empty,
    Json(serde_json::Value),
    /// Form fields; values may be secrets, exposed only when the request is built.
    Form(Vec<(String, Secret)>),
    /// One file part (the body is rebuilt on every attempt).
    File {
        part: String,
        file_name: String,
        mime: String,
        bytes: Bytes,
    },
}

enum Auth {
    None,
    Basic { user: String, password: Secret },
    Bearer(Arc<dyn TokenSource>),
}

/// One request to send through [`HttpClient::send`]: kept whole so that every retry sends it
/// again exactly.
pub struct Request {
    method: Method,
    url: Url,
    body: Body,
    auth: Auth,
    idempotent: bool,
    sensitive: bool,
    /// A token endpoint call ([`Request::token_grant`]).
    grant: bool,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method.as_str())
            .field("path", &self.url.path())
            .field("idempotent", &self.idempotent)
            .finish_non_exhaustive()
    }
}

impl Request {
    /// A request; GET, HEAD, PUT, DELETE and OPTIONS count as idempotent, others do not.
    pub fn new(method: Method, url: Url) -> Request {
        let idempotent = matches!(
            method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        );
        Request {
            method,
            url,
            body: Body::Empty,
            auth: Auth::None,
            idempotent,
            sensitive: false,
            grant: false,
        }
    }

    pub fn get(url: Url) -> Request {
        Request::new(Method::GET, url)
    }

    pub fn post(url: Url) -> Request {
        Request::new(Method::POST, url)
    }

    pub fn put(url: Url) -> Request {
        Request::new(Method::PUT, url)
    }

    pub fn delete(url: Url) -> Request {
        Request::new(Method::DELETE, url)
    }

    /// Adds a query parameter (form-encoded). Queries never appear in logs or errors.
    pub fn query(mut self, key: &str, value: &str) -> Request {
        self.url.query_pairs_mut().append_pair(key, value);
        self
    }

    /// A JSON body (`Content-Type: application/json`).
    pub fn json(mut self, body: serde_json::Value) -> Request {
        self.body = Body::Json(body);
        self
    }

    /// An `application/x-www-form-urlencoded` body.
    pub fn form(mut self, fields: Vec<(String, Secret)>) -> Request {
        self.body = Body::Form(fields);
        self
    }

    /// A `multipart/form-data` body with one file part.
    pub fn multipart_file(
        mut self,
        part: &str,
        file_name: &str,
        mime: &str,
        bytes: Bytes,
    ) -> Request {
        self.body = Body::File {
            part: part.to_string(),
            file_name: file_name.to_string(),
            mime: mime.to_string(),
            bytes,
        };
        self
    }

    /// HTTP Basic authentication.
    pub fn basic_auth(mut self, user: &str, password: Secret) -> Request {
        self.auth = Auth::Basic {
            user: user.to_string(),
            password,
        };
        self
    }

    /// A bearer token from `source`, refreshed once on a 401.
    pub fn bearer(mut self, source: Arc<dyn TokenSource>) -> Request {
        self.auth = Auth::Bearer(source);
        self
    }

    /// Whether sending this request twice has the same effect as sending it once (decides
    /// whether 5xx and post-send transport errors are retried).
    pub fn idempotent(mut self, yes: bool) -> Request {
        self.idempotent = yes;
        self
    }

    /// A request whose request and response bodies are secret (token endpoints): neither is
    /// ever logged or kept on an error.
    pub fn sensitive(mut self) -> Request {
        self.sensitive = true;
        self
    }

    /// A call of a token endpoint: sensitive, retried like an idempotent call (a grant sent
    /// twice is harmless), and outside the concurrency limit and the pacing (the request
    /// waiting for the token holds a permit and a slot already). Its credentials are judged
    /// by the fetcher (which turns a refusal into [`HttpError::Auth`]), not by this layer.
    pub fn token_grant(mut self) -> Request {
        self.grant = true;
        self.sensitive = true;
        self.idempotent = true;
        self
    }

    /// Whether the request carries credentials this layer judges (a 401 to it refuses them).
    fn carries_credentials(&self) -> bool {
        !self.grant && !matches!(self.auth, Auth::None)
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path (for logs and errors: never the query).
    pub fn path(&self) -> &str {
        self.url.path()
    }

    /// Builds the reqwest request for one attempt: the only place secrets are exposed.
    fn build(
        &self,
        client: &reqwest::Client,
        token: Option<&Secret>,
    ) -> Result<reqwest::RequestBuilder, reqwest::Error> {
        let mut b = client.request(self.method.clone(), self.url.clone());
        b = match &self.auth {
            Auth::None => b,
            Auth::Basic { user, password } => b.basic_auth(user, Some(password.expose())),
            Auth::Bearer(_) => match token {
                Some(t) => b.bearer_auth(t.expose()),
                None => b,
            },
        };
        Ok(match &self.body {
            Body::Empty => b,
            Body::Json(v) => b.json(v),
            Body::Form(fields) => {
                let pairs: Vec<(&str, &str)> = fields
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.expose()))
                    .collect();
                b.form(&pairs)
            }
            Body::File {
                part,
                file_name,
                mime,
                bytes,
            } => {
                let p = reqwest::multipart::Part::bytes(bytes.to_vec())
                    .file_name(file_name.clone())
                    .mime_str(mime)?;
                b.multipart(reqwest::multipart::Form::new().part(part.clone(), p))
            }
        })
    }
}

/// A success response, read whole.
#[derive(Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    target: String,
    method: String,
    path: String,
    sensitive: bool,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl Response {
    /// The body as JSON of type `T`. For sensitive responses the error does not quote the
    /// body.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| HttpError::Decode {
            target: self.target.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            message: if self.sensitive {
                format!("the body is not the expected JSON ({:?})", e.classify())
            } else {
                format!("{e}")
            },
        })
    }

    /// An error about this response's content (a missing field, ...).
    pub fn decode_error(&self, message: impl Into<String>) -> HttpError {
        HttpError::Decode {
            target: self.target.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            message: message.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// Paces requests: each one reserves the next slot `max(now, last + 1/rps)`.
struct Pacer {
    interval: Duration,
    next: std::sync::Mutex<Instant>,
}

impl Pacer {
    async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

/// Whether the client's target can be connected to (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reach {
    Reachable,
    /// One request is retrying its connect; the others wait for its verdict.
    Probing,
    /// The probe never connected: why (the last connect error).
    Unreachable(String),
}

struct Inner {
    client: reqwest::Client,
    target: String,
    settings: HttpSettings,
    permits: Semaphore,
    pacer: Option<Pacer>,
    reach: watch::Sender<Reach>,
    /// Refused credentials (sticky; see the module doc).
    auth_failure: std::sync::Mutex<Option<HttpError>>,
    /// Exchanges started on the network (every attempt that got past the gates).
    attempts: AtomicU64,
}

/// Held by the request probing the target; a probe that ends without a verdict (its request
/// was dropped) lets the next failing request probe.
struct Probe<'a> {
    reach: &'a watch::Sender<Reach>,
    started: Instant,
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        self.reach.send_if_modified(|r| {
            let probing = *r == Reach::Probing;
            if probing {
                *r = Reach::Reachable;
            }
            probing
        });
    }
}

/// What one attempt came to.
enum Attempt {
    /// An answer (any status), with the bearer token it carried.
    Answered(Response, Option<Secret>),
    /// No answer.
    Failed(Failure),
    /// No bearer token could be had: nothing was sent.
    Token(HttpError),
    /// While this request waited for its permit, the credentials were refused or the target
    /// found unreachable: nothing was sent.
    Stopped(HttpError),
    /// Another request is probing the target: back to the gate, nothing was sent.
    Wait,
}

/// The HTTP client of one target; cheap to clone (clones share limits and pacing).
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("target", &self.inner.target)
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

/// Why one attempt got no response.
struct Failure {
    message: String,
    /// Failed to connect: nothing was sent.
    not_sent: bool,
    timeout: bool,
    /// The request could not be built: retrying cannot help.
    fatal: bool,
}

impl Failure {
    fn from_reqwest(e: reqwest::Error) -> Failure {
        let not_sent = e.is_connect();
        let timeout = e.is_timeout();
        let fatal = e.is_builder();
        let e = e.without_url();
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let s_text = s.to_string();
            if !message.contains(&s_text) {
                message.push_str(": ");
                message.push_str(&s_text);
            }
            source = s.source();
        }
        Failure {
            message,
            not_sent,
            timeout,
            fatal,
        }
    }
}

impl HttpClient {
    /// A client for the target `target_name` with its HTTP settings (rustls, timeouts,
    /// concurrency, pacing, retries). Redirects are not followed.
    pub fn new(target_name: &str, settings: &HttpSettings) -> Result<HttpClient, HttpError> {
        let client = reqwest::Client::builder()
            .tls_backend_rustls()
            .user_agent(USER_AGENT)
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| HttpError::Setup {
                target: target_name.to_string(),
                message: format!(
                    "cannot build the HTTP client: {}",
                    Failure::from_reqwest(e).message
                ),
            })?;
        let pacer = match settings.requests_per_second {
            None => None,
            Some(rps) => {
                let interval = if rps.is_finite() && rps > 0.0 {
                    Duration::try_from_secs_f64(1.0 / rps).ok()
                } else {
                    None
                };
                let Some(interval) = interval else {
                    return Err(HttpError::Setup {
                        target: target_name.to_string(),
                        message: format!(
                            "requests_per_second must be a positive number, not {rps}"
                        ),
                    });
                };
                Some(Pacer {
                    interval,
                    next: std::sync::Mutex::new(Instant::now()),
                })
            }
        };
        Ok(HttpClient {
            inner: Arc::new(Inner {
                client,
                target: target_name.to_string(),
                settings: settings.clone(),
                permits: Semaphore::new(settings.concurrency.max(1)),
                pacer,
                reach: watch::Sender::new(Reach::Reachable),
                auth_failure: std::sync::Mutex::new(None),
                attempts: AtomicU64::new(0),
            }),
        })
    }

    /// The target's name (as in errors and logs).
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    pub fn settings(&self) -> &HttpSettings {
        &self.inner.settings
    }

    /// `UrlBuilder::build`, with the error as an [`HttpError::Url`] of this target.
    pub fn url(&self, builder: UrlBuilder) -> Result<Url, HttpError> {
        builder.build().map_err(|message| HttpError::Url {
            target: self.inner.target.clone(),
            message,
        })
    }

    /// How many exchanges this client started on the network so far (connect attempts
    /// included; requests refused by the unreachable or refused-credentials state are not).
    pub fn attempts(&self) -> u64 {
        self.inner.attempts.load(Ordering::Relaxed)
    }

    /// The refused-credentials error, if the credentials were refused.
    fn auth_failure(&self) -> Option<HttpError> {
        self.inner
            .auth_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records refused credentials (counted once) and returns the error every later request
    /// gets (the first one recorded).
    fn refuse_credentials(&self, e: HttpError) -> HttpError {
        let mut failure = self
            .inner
            .auth_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(first) = failure.as_ref() {
            return first.clone();
        }
        tracing::error!(
            target = %self.inner.target,
            error = %e,
            "credentials refused: no more requests to this target in this run"
        );
        crate::metrics::record_auth_failure(&self.inner.target);
        *failure = Some(e.clone());
        e
    }

    /// A failed token fetch: refused credentials become sticky.
    fn token_failed(&self, e: HttpError) -> HttpError {
        match e {
            HttpError::Auth { .. } => self.refuse_credentials(e),
            other => other,
        }
    }

    /// Waits while another request probes the target; `Err` (the reason) when it is known
    /// unreachable. Token grants do not wait (the probe may need the permit their caller
    /// holds).
    async fn reach_gate(&self, grant: bool) -> Result<(), String> {
        let mut rx = self.inner.reach.subscribe();
        let verdict = if grant {
            rx.borrow().clone()
        } else {
            match rx.wait_for(|r| *r != Reach::Probing).await {
                Ok(r) => r.clone(),
                // The sender lives as long as `self`: cannot happen.
                Err(_) => Reach::Reachable,
            }
        };
        match verdict {
            Reach::Unreachable(message) => Err(message),
            Reach::Reachable | Reach::Probing => Ok(()),
        }
    }

    /// An answer came: the target is reachable.
    fn reached(&self) {
        self.inner.reach.send_if_modified(|r| {
            let changed = *r != Reach::Reachable;
            if changed {
                tracing::info!(target = %self.inner.target, "target reachable again");
                *r = Reach::Reachable;
            }
            changed
        });
    }

    /// After a connect failure: this request becomes the probe when none runs (`Ok(Some)`),
    /// or waits for the running one (`Ok(None)`); `Err` when the target is known unreachable.
    fn start_probe(&self) -> Result<Option<Probe<'_>>, String> {
        let mut verdict = Ok(false);
        self.inner.reach.send_if_modified(|r| match r {
            Reach::Reachable => {
                *r = Reach::Probing;
                verdict = Ok(true);
                true
            }
            Reach::Probing => false,
            Reach::Unreachable(m) => {
                verdict = Err(m.clone());
                false
            }
        });
        match verdict {
            Ok(true) => Ok(Some(Probe {
                reach: &self.inner.reach,
                started: Instant::now(),
            })),
            Ok(false) => Ok(None),
            Err(m) => Err(m),
        }
    }

    /// Sends `req`, retrying as the module documents. `Ok` only for a 2xx response; any
    /// other final status is an [`HttpError::Status`].
    pub async fn send(&self, req: Request) -> Result<Response, HttpError> {
        let settings = &self.inner.settings;
        let method = req.method.as_str().to_string();
        let path = req.path().to_string();
        let transport =
            |message: String, not_sent: bool, timeout: bool, attempts: u32| HttpError::Transport {
                target: self.inner.target.clone(),
                method: method.clone(),
                path: path.clone(),
                message,
                not_sent,
                timeout,
                attempts,
            };
        let mut attempt: u32 = 0;
        let mut retries: u32 = 0;
        let mut reauths: u32 = 0;
        let mut probe: Option<Probe<'_>> = None;
        loop {
            if req.carries_credentials()
                && let Some(e) = self.auth_failure()
            {
                return Err(e);
            }
            if probe.is_none()
                && let Err(reason) = self.reach_gate(req.grant).await
            {
                return Err(transport(
                    format!("target unreachable ({reason})"),
                    true,
                    false,
                    attempt,
                ));
            }
            attempt += 1;
            let (reason, retry_after) = match self.attempt(&req, attempt, probe.is_some()).await {
                Attempt::Token(e) => return Err(self.token_failed(e)),
                Attempt::Stopped(e) => return Err(e),
                Attempt::Wait => {
                    attempt -= 1;
                    continue;
                }
                Attempt::Answered(resp, token) => {
                    self.reached();
                    probe = None;
                    let status = resp.status;
                    if (200..300).contains(&status) {
                        if let (Auth::Bearer(source), Some(token)) = (&req.auth, &token) {
                            source.confirm(token);
                        }
                        return Ok(resp);
                    }
                    match (&req.auth, token.as_ref()) {
                        (Auth::Bearer(source), Some(token)) if status == 401 => {
                            if let Some(e) = source.invalidate(token).await {
                                return Err(self.refuse_credentials(e));
                            }
                            if reauths < MAX_REAUTH {
                                reauths += 1;
                                tracing::warn!(
                                    target = %self.inner.target,
                                    method = %method,
                                    path = %path,
                                    attempt,
                                    "HTTP 401: sending again with a new token"
                                );
                                continue;
                            }
                        }
                        (Auth::Bearer(source), Some(token)) => source.confirm(token),
                        (Auth::Basic { .. }, _) if status == 401 && !req.grant => {
                            return Err(self.refuse_credentials(HttpError::Auth {
                                target: self.inner.target.clone(),
                                message: format!(
                                    "{method} {path}: HTTP 401: the credentials were refused"
                                ),
                            }));
                        }
                        _ => {}
                    }
                    let retryable = status == 429
                        || status == 503
                        || (req.idempotent && (500..600).contains(&status));
                    if !retryable || retries >= settings.max_retries {
                        return Err(HttpError::Status {
                            target: self.inner.target.clone(),
                            method,
                            path,
                            status,
                            body: if req.sensitive {
                                String::new()
                            } else {
                                truncate_body(&resp.body)
                            },
                            attempts: attempt,
                        });
                    }
                    let after = retry_after(&resp.headers, SystemTime::now());
                    (format!("HTTP {status}"), after)
                }
                Attempt::Failed(f) if f.not_sent && !f.fatal => {
                    // Nothing was sent: one probe per client decides (module doc).
                    if probe.is_none() {
                        match self.start_probe() {
                            Ok(Some(p)) => probe = Some(p),
                            Ok(None) => {
                                // Another request probes: wait for its verdict at the gate.
                                if retries >= settings.max_retries {
                                    return Err(transport(f.message, true, f.timeout, attempt));
                                }
                                retries += 1;
                                continue;
                            }
                            Err(_) => return Err(transport(f.message, true, f.timeout, attempt)),
                        }
                    }
                    let spent = probe
                        .as_ref()
                        .is_some_and(|p| retries > 0 && p.started.elapsed() >= PROBE_BUDGET);
                    if retries >= settings.max_retries || spent {
                        self.inner.reach.send_if_modified(|r| {
                            let probing = *r == Reach::Probing;
                            if probing {
                                *r = Reach::Unreachable(f.message.clone());
                            }
                            probing
                        });
                        tracing::error!(
                            target = %self.inner.target,
                            attempts = attempt,
                            error = %f.message,
                            "target unreachable: failing its requests at once"
                        );
                        return Err(transport(f.message, true, f.timeout, attempt));
                    }
                    let delay = backoff(retries, settings.max_backoff.min(CONNECT_BACKOFF_CAP));
                    (f.message, Some(delay))
                }
                Attempt::Failed(f) => {
                    if !f.not_sent {
                        // It connected: the target is reachable.
                        self.reached();
                        probe = None;
                    }
                    let retryable = !f.fatal && req.idempotent;
                    if !retryable || retries >= settings.max_retries {
                        return Err(transport(f.message, f.not_sent, f.timeout, attempt));
                    }
                    (f.message, None)
                }
            };
            let delay = match retry_after {
                Some(d) => d.min(settings.max_backoff),
                None => backoff(retries, settings.max_backoff),
            };
            retries += 1;
            crate::metrics::record_http_retry(&self.inner.target, reason == "HTTP 429");
            tracing::warn!(
                target = %self.inner.target,
                method = %method,
                path = %path,
                attempt,
                reason = %reason,
                delay_ms = delay.as_millis() as u64,
                "retrying"
            );
            // No permit is held here: the sleep does not block other requests.
            tokio::time::sleep(delay).await;
        }
    }

    /// [`Self::send`], then the body as JSON.
    pub async fn send_json<T: DeserializeOwned>(&self, req: Request) -> Result<T, HttpError> {
        self.send(req).await?.json()
    }

    /// One attempt: a concurrency permit, then a pacing slot (neither for token grants), then
    /// the bearer token, then the exchange (body read whole). The permit is released before
    /// any retry delay.
    async fn attempt(&self, req: &Request, attempt: u32, is_probe: bool) -> Attempt {
        let _permit = if req.grant {
            None
        } else {
            match self.inner.permits.acquire().await {
                Ok(p) => Some(p),
                Err(_) => {
                    return Attempt::Failed(Failure {
                        message: "the HTTP client is shut down".to_string(),
                        not_sent: true,
                        timeout: false,
                        fatal: true,
                    });
                }
            }
        };
        if !req.grant
            && let Some(pacer) = &self.inner.pacer
        {
            pacer.wait().await;
        }
        // The queue may have been long: what it learnt meanwhile stops this request here.
        if req.carries_credentials()
            && let Some(e) = self.auth_failure()
        {
            return Attempt::Stopped(e);
        }
        if !req.grant && !is_probe {
            let reach = self.inner.reach.borrow().clone();
            match reach {
                Reach::Reachable => {}
                // Not waited for here: the probe may need this permit.
                Reach::Probing => return Attempt::Wait,
                Reach::Unreachable(reason) => {
                    return Attempt::Stopped(HttpError::Transport {
                        target: self.inner.target.clone(),
                        method: req.method.as_str().to_string(),
                        path: req.path().to_string(),
                        message: format!("target unreachable ({reason})"),
                        not_sent: true,
                        timeout: false,
                        attempts: attempt - 1,
                    });
                }
            }
        }
        // Taken now, right before the request is written: it never ages in the queue.
        let token = match &req.auth {
            Auth::Bearer(source) => match source.token().await {
                Ok(t) => Some(t),
                Err(e) => return Attempt::Token(e),
            },
            _ => None,
        };
        self.inner.attempts.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = async {
            let resp = req
                .build(&self.inner.client, token.as_ref())?
                .send()
                .await?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        }
        .await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let method = req.method.as_str();
        let path = req.path();
        match result {
            Ok((status, headers, body)) => {
                tracing::debug!(
                    target = %self.inner.target,
                    method,
                    path,
                    status,
                    attempt,
                    elapsed_ms,
                    "http response"
                );
                Attempt::Answered(
                    Response {
                        status,
                        headers,
                        body,
                        target: self.inner.target.clone(),
                        method: method.to_string(),
                        path: path.to_string(),
                        sensitive: req.sensitive,
                    },
                    token,
                )
            }
            Err(e) => {
                let f = Failure::from_reqwest(e);
                tracing::debug!(
                    target = %self.inner.target,
                    method,
                    path,
                    attempt,
                    elapsed_ms,
                    error = %f.message,
                    "http request failed"
                );
                Attempt::Failed(f)
            }
        }
    }
}

/// The delay a `Retry-After` header asks for (delta-seconds or an HTTP date).
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Full-jitter exponential backoff: a random delay in `[0, min(cap, 200ms · 2^retries)]`.
fn backoff(retries: u32, cap: Duration) -> Duration {
    let factor = 1u32.checked_shl(retries.min(31)).unwrap_or(u32::MAX);
    let ceiling = BASE_BACKOFF.saturating_mul(factor).min(cap);
    let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(0..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::http::{HeaderMap as AxHeaders, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::{any, get};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn settings() -> HttpSettings {
        HttpSettings {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            concurrency: 8,
            requests_per_second: None,
            max_retries: 3,
            max_backoff: Duration::from_millis(20),
        }
    }

    async fn serve(app: Router) -> Url {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Url::parse(&format!("http://{addr}/base/")).unwrap()
    }

    fn url(base: &Url, path: &str) -> Url {
        UrlBuilder::new(base).path(path).build().unwrap()
    }

    /// A server that answers `path` with the statuses in `script` (then 200) and counts calls.
    async fn scripted(script: Vec<(u16, Option<String>)>) -> (Url, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let script = Arc::new(script);
        let app = Router::new().route(
            "/base/x",
            any(move || {
                let c = c.clone();
                let script = script.clone();
                async move {
                    let n = c.fetch_add(1, Ordering::SeqCst);
                    match script.get(n) {
                        Some((status, retry_after)) => {
                            let mut h = AxHeaders::new();
                            if let Some(ra) = retry_after {
                                h.insert("retry-after", ra.parse().unwrap());
                            }
                            (StatusCode::from_u16(*status).unwrap(), h, "nope").into_response()
                        }
                        None => (StatusCode::OK, "{\"ok\":true}").into_response(),
                    }
                }
            }),
        );
        (serve(app).await, calls)
    }

    #[tokio::test]
    async fn retries_429_after_retry_after_seconds() {
        let (base, calls) = scripted(vec![(429, Some("1".into()))]).await;
        let mut s = settings();
        s.max_backoff = Duration::from_secs(5);
        let c = HttpClient::new("t", &s).unwrap();
        let t = Instant::now();
        let r = c.send(Request::post(url(&base, "x"))).await.unwrap();
        assert_eq!(r.status, 200);
        assert!(
            t.elapsed() >= Duration::from_millis(950),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn retries_429_after_retry_after_date() {
        let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
        let (base, calls) = scripted(vec![(429, Some(date))]).await;
        let mut s = settings();
        s.max_backoff = Duration::from_secs(5);
        let c = HttpClient::new("t", &s).unwrap();
        let t = Instant::now();
        c.send(Request::get(url(&base, "x"))).await.unwrap();
        // The date has whole seconds: the wait is between 1 and 2 seconds.
        assert!(
            t.elapsed() >= Duration::from_millis(900),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn retry_after_is_capped_by_max_backoff() {
        let (base, calls) = scripted(vec![(503, Some("30".into()))]).await;
        let c = HttpClient::new("t", &settings()).unwrap();
        let t = Instant::now();
        c.send(Request::get(url(&base, "x"))).await.unwrap();
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn gives_up_after_max_retries_with_last_status() {
        let (base, calls) = scripted(vec![(429, None); 10]).await;
        let mut s = settings();
        s.max_retries = 2;
        let c = HttpClient::new("t", &s).unwrap();
        let e = c.send(Request::get(url(&base, "x"))).await.unwrap_err();
        assert_eq!(e.status(), Some(429));
        assert!(matches!(e, HttpError::Status { attempts: 3, .. }), "{e:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(matches!(OpError::from(e), OpError::Unavailable { .. }));
    }

    #[tokio::test]
    async fn non_idempotent_post_not_retried_on_500() {
        let (base, calls) = scripted(vec![(500, None); 10]).await;
        let c = HttpClient::new("t", &settings()).unwrap();
        let e = c.send(Request::post(url(&base, "x"))).await.unwrap_err();
        assert_eq!(e.status(), Some(500));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn idempotent_put_and_marked_post_retried_on_500() {
        let (base, calls) = scripted(vec![(500, None), (502, None)]).await;
        let c = HttpClient::new("t", &settings()).unwrap();
        c.send(Request::put(url(&base, "x"))).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let (base, calls) = scripted(vec![(500, None)]).await;
        c.send(Request::post(url(&base, "x")).idempotent(true))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn client_errors_never_retried() {
        for status in [400u16, 403, 404, 409, 422] {
            let (base, calls) = scripted(vec![(status, None); 3]).await;
            let c = HttpClient::new("t", &settings()).unwrap();
            let e = c.send(Request::put(url(&base, "x"))).await.unwrap_err();
            assert_eq!(e.status(), Some(status));
            assert_eq!(calls.load(Ordering::SeqCst), 1, "status {status}");
        }
    }

    /// A closed port on 127.0.0.1.
    async fn refused_base() -> Url {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        Url::parse(&format!("http://{addr}/")).unwrap()
    }

    fn assert_unreachable(e: HttpError) {
        assert!(
            matches!(e, HttpError::Transport { not_sent: true, .. }),
            "{e:?}"
        );
        assert!(
            matches!(OpError::from(e), OpError::Unreachable { .. }),
            "not Unreachable"
        );
    }

    #[tokio::test]
    async fn connection_refused_probed_then_failing_fast() {
        let base = refused_base().await;
        let c = HttpClient::new("t", &settings()).unwrap();
        // Nothing was sent, so even a POST is retried: the probe.
        let e = c.send(Request::post(url(&base, "x"))).await.unwrap_err();
        match &e {
            HttpError::Transport {
                attempts, not_sent, ..
            } => {
                assert_eq!(*attempts, 4);
                assert!(*not_sent);
            }
            other => panic!("{other:?}"),
        }
        assert!(!e.to_string().contains(base.authority()), "{e}");
        assert_unreachable(e);
        assert_eq!(c.attempts(), 4);
        // Known unreachable: the next requests fail without a connect attempt.
        for _ in 0..3 {
            assert_unreachable(c.send(Request::get(url(&base, "y"))).await.unwrap_err());
        }
        assert_eq!(c.attempts(), 4);
    }

    #[tokio::test]
    async fn concurrent_requests_to_a_refused_port_share_one_probe() {
        let base = refused_base().await;
        let mut s = settings();
        s.concurrency = 4;
        s.max_retries = 5;
        let c = HttpClient::new("t", &s).unwrap();
        let calls = (0..200).map(|i| {
            let c = c.clone();
            let u = url(&base, &format!("u{i}"));
            async move { c.send(Request::post(u)).await }
        });
        let results = futures::future::join_all(calls).await;
        for r in results {
            assert_unreachable(r.unwrap_err());
        }
        // The requests in flight when the first failed, plus the probe's retries.
        let attempts = c.attempts();
        assert!(attempts <= 4 + 5, "{attempts} connect attempts");
    }

    /// A TCP listener that counts connections and answers each with `reply` (then closes).
    async fn raw_listener(reply: &'static [u8]) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    let _ = sock.write_all(reply).await;
                });
            }
        });
        (addr, count)
    }

    #[tokio::test]
    async fn tls_handshake_failures_are_not_sent() {
        for reply in [&b""[..], b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"] {
            let (addr, conns) = raw_listener(reply).await;
            let c = HttpClient::new("t", &settings()).unwrap();
            let base = Url::parse(&format!("https://{addr}/")).unwrap();
            let calls = (0..20).map(|_| {
                let c = c.clone();
                let u = url(&base, "x");
                async move { c.send(Request::post(u)).await }
            });
            for r in futures::future::join_all(calls).await {
                assert_unreachable(r.unwrap_err());
            }
            let n = conns.load(Ordering::SeqCst);
            assert!(n <= 8 + 3, "{n} connections for {reply:?}");
            assert_eq!(c.attempts() as usize, n);
        }
    }

    #[tokio::test]
    async fn unknown_host_is_not_sent() {
        let c = HttpClient::new("t", &settings()).unwrap();
        let base = Url::parse("http://dirsync-test.invalid/").unwrap();
        let e = c.send(Request::post(url(&base, "x"))).await.unwrap_err();
        assert_unreachable(e);
    }

    #[tokio::test]
    async fn an_answer_clears_unreachable() {
        let slow = Router::new().route(
            "/base/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(600)).await;
                "ok"
            }),
        );
        let good = serve(slow).await;
        let refused = refused_base().await;
        let mut s = settings();
        s.max_retries = 1;
        let c = HttpClient::new("t", &s).unwrap();
        // A request in flight while another finds the client's target unreachable.
        let in_flight = {
            let c = c.clone();
            let u = url(&good, "slow");
            tokio::spawn(async move { c.send(Request::get(u)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_unreachable(c.send(Request::get(url(&refused, "x"))).await.unwrap_err());
        let before = c.attempts();
        assert_unreachable(c.send(Request::get(url(&refused, "x"))).await.unwrap_err());
        assert_eq!(c.attempts(), before, "failed at once");
        in_flight.await.unwrap().unwrap();
        // Its answer made the client reachable again: the next request tries.
        assert_unreachable(c.send(Request::get(url(&refused, "x"))).await.unwrap_err());
        assert!(c.attempts() > before);
    }

    /// A raw server that drops the first `drops` connections after reading the request, then
    /// answers 200. Returns the base URL and the connection count.
    async fn dropping(drops: usize) -> (Url, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let n = c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    if n >= drops {
                        let _ = sock
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                            .await;
                    }
                    // Dropping the socket closes the connection without an answer.
                });
            }
        });
        (Url::parse(&format!("http://{addr}/")).unwrap(), count)
    }

    #[tokio::test]
    async fn dropped_connection_retried_only_when_idempotent() {
        let (base, count) = dropping(2).await;
        let c = HttpClient::new("t", &settings()).unwrap();
        let r = c.send(Request::get(url(&base, "x"))).await.unwrap();
        assert_eq!(&r.body[..], b"ok");
        assert_eq!(count.load(Ordering::SeqCst), 3);

        let (base, count) = dropping(1).await;
        let e = c.send(Request::post(url(&base, "x"))).await.unwrap_err();
        assert!(
            matches!(
                e,
                HttpError::Transport {
                    attempts: 1,
                    not_sent: false,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrency_limit_never_exceeded() {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (f, p) = (in_flight.clone(), peak.clone());
        let app = Router::new().route(
            "/base/x",
            get(move || {
                let (f, p) = (f.clone(), p.clone());
                async move {
                    let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(40)).await;
                    f.fetch_sub(1, Ordering::SeqCst);
                    "ok"
                }
            }),
        );
        let base = serve(app).await;
        let mut s = settings();
        s.concurrency = 3;
        let c = HttpClient::new("t", &s).unwrap();
        let calls = (0..12).map(|_| {
            let c = c.clone();
            let u = url(&base, "x");
            async move { c.send(Request::get(u)).await }
        });
        for r in futures::future::join_all(calls).await {
            r.unwrap();
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!(peak <= 3, "peak {peak}");
        assert!(peak >= 2, "peak {peak}");
    }

    #[tokio::test]
    async fn requests_per_second_paces_calls() {
        let (base, calls) = scripted(vec![]).await;
        let mut s = settings();
        s.requests_per_second = Some(20.0);
        let c = HttpClient::new("t", &s).unwrap();
        let t = Instant::now();
        let all = (0..10).map(|_| {
            let c = c.clone();
            let u = url(&base, "x");
            async move { c.send(Request::get(u)).await }
        });
        for r in futures::future::join_all(all).await {
            r.unwrap();
        }
        // 10 slots 50 ms apart: the last starts 450 ms after the first.
        assert!(
            t.elapsed() >= Duration::from_millis(440),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(calls.load(Ordering::SeqCst), 10);
    }

    /// A fetcher that issues `tok-1`, `tok-2`, ... slowly, and counts.
    struct CountingFetcher {
        fetches: Arc<AtomicUsize>,
        life: Option<Duration>,
        saw_previous: Arc<AtomicUsize>,
    }

    #[async_trait::async_trait]
    impl TokenFetcher for CountingFetcher {
        async fn fetch(&self, previous: Option<&Token>) -> Result<Token, HttpError> {
            if previous.is_some_and(|p| p.refresh_token.is_some()) {
                self.saw_previous.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
            let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(Token {
                access_token: Secret::new(format!("tok-{n}")),
                refresh_token: Some(Secret::new(format!("refresh-{n}"))),
                expires_in: self.life,
            })
        }
    }

    fn counting(life: Option<Duration>) -> (Arc<CachedToken>, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let fetches = Arc::new(AtomicUsize::new(0));
        let prev = Arc::new(AtomicUsize::new(0));
        let http = HttpClient::new("t", &settings()).unwrap();
        let src = Arc::new(CachedToken::new(
            &http,
            CountingFetcher {
                fetches: fetches.clone(),
                life,
                saw_previous: prev.clone(),
            },
        ));
        (src, fetches, prev)
    }

    #[tokio::test]
    async fn one_token_refresh_on_401_for_concurrent_callers() {
        // The server accepts only the token named in `valid`.
        let valid = Arc::new(std::sync::Mutex::new("tok-1".to_string()));
        let v = valid.clone();
        let app = Router::new().route(
            "/base/x",
            get(move |h: AxHeaders| {
                let v = v.clone();
                async move {
                    let want = format!("Bearer {}", v.lock().unwrap());
                    let got = h.get("authorization").and_then(|x| x.to_str().ok());
                    if got == Some(want.as_str()) {
                        StatusCode::OK
                    } else {
                        StatusCode::UNAUTHORIZED
                    }
                }
            }),
        );
        let base = serve(app).await;
        let c = HttpClient::new("t", &settings()).unwrap();
        let (src, fetches, prev) = counting(None);
        let source: Arc<dyn TokenSource> = src.clone();
        c.send(Request::get(url(&base, "x")).bearer(source.clone()))
            .await
            .unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 1);

        *valid.lock().unwrap() = "tok-2".to_string();
        let calls = (0..8).map(|_| {
            let c = c.clone();
            let u = url(&base, "x");
            let s = source.clone();
            async move { c.send(Request::get(u).bearer(s)).await }
        });
        for r in futures::future::join_all(calls).await {
            r.unwrap();
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        assert_eq!(
            prev.load(Ordering::SeqCst),
            1,
            "the refresh saw the old token"
        );

        // Every token refused: the confirmed tok-2 is replaced once (tok-3); a 401 on that
        // fresh token means refused credentials → Auth, sticky.
        *valid.lock().unwrap() = "never".to_string();
        let e = c
            .send(Request::get(url(&base, "x")).bearer(source.clone()))
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::Auth { .. }), "{e:?}");
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
        assert!(!e.to_string().contains("tok-"), "{e}");
        assert!(matches!(OpError::from(e), OpError::Auth { .. }));
        let sent = c.attempts();
        let e = c
            .send(Request::get(url(&base, "x")).bearer(source.clone()))
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::Auth { .. }), "{e:?}");
        assert_eq!(fetches.load(Ordering::SeqCst), 3, "no new login");
        assert_eq!(c.attempts(), sent, "nothing sent");
    }

    #[tokio::test]
    async fn token_refreshed_before_expiry() {
        // A 2 s life with a 5 s request timeout: refreshed at half its life.
        let (src, fetches, _) = counting(Some(Duration::from_secs(2)));
        assert_eq!(src.token().await.unwrap().expose(), "tok-1");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(src.token().await.unwrap().expose(), "tok-1");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(src.token().await.unwrap().expose(), "tok-2");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        // An invalidation of a token no longer current changes nothing.
        assert!(src.invalidate(&Secret::new("tok-1")).await.is_none());
        assert_eq!(src.token().await.unwrap().expose(), "tok-2");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn refresh_margins() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let cases = [
            // (life, request_timeout, refreshed after)
            (s(3600), s(30), s(3240)),
            (s(300), s(30), s(270)),
            (s(60), s(30), s(30)),
            (s(30), s(30), s(15)),
            (s(30), s(5), s(25)),
            (s(5), s(30), ms(2500)),
            (s(2), s(30), s(1)),
            (s(1), s(30), ms(500)),
            (Duration::ZERO, s(30), Duration::ZERO),
        ];
        for (life, timeout, after) in cases {
            assert_eq!(
                refresh_deadline(t, life, timeout),
                t + after,
                "life {life:?}, timeout {timeout:?}"
            );
            // A token taken just before its refresh point outlives a request, or half of it is
            // left when the life is shorter than two requests.
            assert!(life - after >= timeout.min(life / 2));
        }
    }

    /// A server whose tokens (`tok-N`, issued by [`ExpiringFetcher`]) live `life` from their
    /// issue; counts 401 answers and successes. Answers after `latency`.
    struct Expiring {
        issued: Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>>,
        fetches: Arc<AtomicUsize>,
        unauthorized: Arc<AtomicUsize>,
        ok: Arc<AtomicUsize>,
    }

    struct ExpiringFetcher {
        issued: Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>>,
        fetches: Arc<AtomicUsize>,
        life: Duration,
    }

    #[async_trait::async_trait]
    impl TokenFetcher for ExpiringFetcher {
        async fn fetch(&self, _previous: Option<&Token>) -> Result<Token, HttpError> {
            let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
            let t = format!("tok-{n}");
            self.issued
                .lock()
                .unwrap()
                .insert(t.clone(), Instant::now());
            Ok(Token {
                access_token: Secret::new(t),
                refresh_token: None,
                expires_in: Some(self.life),
            })
        }
    }

    async fn expiring(life: Duration, latency: Duration) -> (Url, Expiring) {
        let e = Expiring {
            issued: Default::default(),
            fetches: Default::default(),
            unauthorized: Default::default(),
            ok: Default::default(),
        };
        let (issued, unauthorized, ok) = (e.issued.clone(), e.unauthorized.clone(), e.ok.clone());
        let app = Router::new().route(
            "/base/x",
            any(move |h: AxHeaders| {
                let (issued, unauthorized, ok) = (issued.clone(), unauthorized.clone(), ok.clone());
                async move {
                    let token = h
                        .get("authorization")
                        .and_then(|x| x.to_str().ok())
                        .and_then(|x| x.strip_prefix("Bearer "))
                        .unwrap_or("")
                        .to_string();
                    let valid = issued
                        .lock()
                        .unwrap()
                        .get(&token)
                        .is_some_and(|at| at.elapsed() < life);
                    tokio::time::sleep(latency).await;
                    if valid {
                        ok.fetch_add(1, Ordering::SeqCst);
                        StatusCode::OK
                    } else {
                        unauthorized.fetch_add(1, Ordering::SeqCst);
                        StatusCode::UNAUTHORIZED
                    }
                }
            }),
        );
        (serve(app).await, e)
    }

    #[tokio::test]
    async fn queued_requests_never_carry_an_expired_token() {
        // 1 s tokens, a queue 4 s deep (40 requests of 100 ms through one permit).
        let life = Duration::from_secs(1);
        let (base, server) = expiring(life, Duration::from_millis(100)).await;
        let mut s = settings();
        s.concurrency = 1;
        let c = HttpClient::new("t", &s).unwrap();
        let source: Arc<dyn TokenSource> = Arc::new(CachedToken::new(
            &c,
            ExpiringFetcher {
                issued: server.issued.clone(),
                fetches: server.fetches.clone(),
                life,
            },
        ));
        let calls = (0..40).map(|_| {
            let c = c.clone();
            let u = url(&base, "x");
            let s = source.clone();
            async move { c.send(Request::post(u).bearer(s)).await }
        });
        for r in futures::future::join_all(calls).await {
            r.unwrap();
        }
        assert_eq!(server.ok.load(Ordering::SeqCst), 40);
        assert_eq!(server.unauthorized.load(Ordering::SeqCst), 0);
        // A new token about every half second of queue, not one per request.
        let fetches = server.fetches.load(Ordering::SeqCst);
        assert!((4..=12).contains(&fetches), "{fetches} fetches");
    }

    #[tokio::test]
    async fn concurrent_401s_share_one_refresh() {
        // Tokens the server forgets at once: every request holding tok-1 gets a 401.
        let (base, server) = expiring(Duration::from_secs(3600), Duration::from_millis(20)).await;
        let mut s = settings();
        s.concurrency = 8;
        let c = HttpClient::new("t", &s).unwrap();
        let source: Arc<dyn TokenSource> = Arc::new(CachedToken::new(
            &c,
            ExpiringFetcher {
                issued: server.issued.clone(),
                fetches: server.fetches.clone(),
                life: Duration::from_secs(3600),
            },
        ));
        c.send(Request::get(url(&base, "x")).bearer(source.clone()))
            .await
            .unwrap();
        server.issued.lock().unwrap().clear();
        let calls = (0..64).map(|_| {
            let c = c.clone();
            let u = url(&base, "x");
            let s = source.clone();
            async move { c.send(Request::get(u).bearer(s)).await }
        });
        for r in futures::future::join_all(calls).await {
            r.unwrap();
        }
        assert_eq!(server.fetches.load(Ordering::SeqCst), 2, "one refresh");
        let refused = server.unauthorized.load(Ordering::SeqCst);
        assert!(refused <= 8, "{refused} 401 answers");
    }

    /// A fetcher whose token endpoint refuses the credentials.
    struct RefusingFetcher(Arc<AtomicUsize>);

    #[async_trait::async_trait]
    impl TokenFetcher for RefusingFetcher {
        async fn fetch(&self, _previous: Option<&Token>) -> Result<Token, HttpError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err(HttpError::Auth {
                target: "t".into(),
                message: "the token endpoint refused the credentials (HTTP 401)".into(),
            })
        }
    }

    #[tokio::test]
    async fn refused_credentials_are_sticky() {
        let (base, calls) = scripted(vec![]).await;
        let c = HttpClient::new("t", &settings()).unwrap();
        let fetches = Arc::new(AtomicUsize::new(0));
        let source: Arc<dyn TokenSource> =
            Arc::new(CachedToken::new(&c, RefusingFetcher(fetches.clone())));
        let all = (0..100).map(|_| {
            let c = c.clone();
            let u = url(&base, "x");
            let s = source.clone();
            async move { c.send(Request::post(u).bearer(s)).await }
        });
        for r in futures::future::join_all(all).await {
            let e = r.unwrap_err();
            assert!(matches!(OpError::from(e), OpError::Auth { .. }));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "one login attempt");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert!(crate::metrics::render().contains("dirsync_auth_failures_total{target=\"t\"}"));
    }

    #[tokio::test]
    async fn fresh_tokens_refused_are_sticky() {
        // The server refuses every token: one login, one replacement, then Auth for all.
        let (base, server) = expiring(Duration::ZERO, Duration::from_millis(5)).await;
        let c = HttpClient::new("t", &settings()).unwrap();
        let source: Arc<dyn TokenSource> = Arc::new(CachedToken::new(
            &c,
            ExpiringFetcher {
                issued: server.issued.clone(),
                fetches: server.fetches.clone(),
                life: Duration::from_secs(3600),
            },
        ));
        let all = (0..100).map(|_| {
            let c = c.clone();
            let u = url(&base, "x");
            let s = source.clone();
            async move { c.send(Request::post(u).bearer(s)).await }
        });
        for r in futures::future::join_all(all).await {
            assert!(matches!(r.unwrap_err(), HttpError::Auth { .. }));
        }
        assert_eq!(server.fetches.load(Ordering::SeqCst), 2);
        // Two rounds of at most `concurrency` requests.
        let sent = server.unauthorized.load(Ordering::SeqCst);
        assert!(sent <= 16, "{sent} requests sent");
    }

    #[tokio::test]
    async fn basic_auth_401_is_sticky() {
        let (base, calls) = scripted(vec![(401, None); 1000]).await;
        let c = HttpClient::new("t", &settings()).unwrap();
        let all = (0..100).map(|_| {
            let c = c.clone();
            let u = url(&base, "x");
            async move {
                c.send(Request::get(u).basic_auth("u", Secret::new("wrong")))
                    .await
            }
        });
        for r in futures::future::join_all(all).await {
            let e = r.unwrap_err();
            assert!(matches!(e, HttpError::Auth { .. }), "{e:?}");
            assert!(!e.to_string().contains("wrong"));
        }
        let sent = calls.load(Ordering::SeqCst);
        assert!(sent <= 8, "{sent} requests sent");
    }

    #[test]
    fn path_segment_table() {
        let cases = [
            ("abc", "abc"),
            ("a/b", "a%2Fb"),
            ("a b", "a%20b"),
            ("ä", "%C3%A4"),
            ("%", "%25"),
            ("?#", "%3F%23"),
            ("..", "%2E%2E"),
            (".", "%2E"),
            ("a.b-c_d~e", "a.b-c_d~e"),
            ("jo+x@example.com", "jo%2Bx%40example.com"),
            ("a;b=c&d", "a%3Bb%3Dc%26d"),
        ];
        for (id, want) in cases {
            assert_eq!(path_segment(id), want, "{id:?}");
        }
    }

    #[test]
    fn url_builder_keeps_base_path_and_refuses_dot_ids() {
        let cases = [
            ("https://h.example/", "https://h.example/api/v1/users/a%2Fb"),
            ("https://h.example", "https://h.example/api/v1/users/a%2Fb"),
            (
                "https://h.example/pre/fix/",
                "https://h.example/pre/fix/api/v1/users/a%2Fb",
            ),
            (
                "https://h.example/pre?x=1#f",
                "https://h.example/pre/api/v1/users/a%2Fb",
            ),
        ];
        for (base, want) in cases {
            let base = Url::parse(base).unwrap();
            let u = UrlBuilder::new(&base)
                .path("/api/v1/users/")
                .id("a/b")
                .build()
                .unwrap();
            assert_eq!(u.as_str(), want);
        }
        let base = Url::parse("https://h.example/p/").unwrap();
        for bad in ["", ".", ".."] {
            assert!(
                UrlBuilder::new(&base)
                    .path("users")
                    .id(bad)
                    .build()
                    .is_err(),
                "{bad:?}"
            );
        }
        let u = UrlBuilder::new(&base)
            .path("users")
            .id("ä ?")
            .path("enable")
            .build()
            .unwrap();
        assert_eq!(u.as_str(), "https://h.example/p/users/%C3%A4%20%3F/enable");
        let q = Request::get(u).query("email", "a+b@x.y");
        assert_eq!(q.url.query(), Some("email=a%2Bb%40x.y"));
        assert_eq!(q.path(), "/p/users/%C3%A4%20%3F/enable");
    }

    #[tokio::test]
    async fn failure_bodies_truncated_and_sensitive_ones_withheld() {
        let big = "x".repeat(10_000);
        let app = Router::new().route(
            "/base/x",
            any(move || {
                let big = big.clone();
                async move { (StatusCode::BAD_REQUEST, big) }
            }),
        );
        let base = serve(app).await;
        let c = HttpClient::new("t", &settings()).unwrap();
        let e = c.send(Request::post(url(&base, "x"))).await.unwrap_err();
        let body = e.body().unwrap();
        assert!(body.len() < MAX_ERROR_BODY + 40, "{}", body.len());
        assert!(body.starts_with("xxxx") && body.ends_with("(10000 bytes in all)"));
        match OpError::from(e) {
            OpError::Rejected { status, message } => {
                assert_eq!(status, 400);
                assert!(message.len() < MAX_ERROR_BODY + 40);
            }
            other => panic!("{other:?}"),
        }

        let e = c
            .send(
                Request::post(url(&base, "x"))
                    .form(vec![("password".into(), Secret::new("hunter2"))])
                    .basic_auth("id", Secret::new("s3cret"))
                    .sensitive(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.body(), Some(""));
        let text = format!("{e} {e:?}");
        assert!(!text.contains("xxx") && !text.contains("hunter2") && !text.contains("s3cret"));
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        let s = "ä".repeat(MAX_ERROR_BODY);
        let t = truncate_body(s.as_bytes());
        assert!(t.starts_with('ä'));
        assert!(t.len() <= MAX_ERROR_BODY + 40);
        assert_eq!(truncate_body(b"  short \n"), "short");
    }

    #[test]
    fn retry_after_parsing() {
        let now = SystemTime::now();
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(10));
        h.insert(RETRY_AFTER, date.parse().unwrap());
        let d = retry_after(&h, now).unwrap();
        assert!(
            d > Duration::from_secs(8) && d <= Duration::from_secs(10),
            "{d:?}"
        );
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        for r in 0..40 {
            assert!(backoff(r, Duration::from_secs(1)) <= Duration::from_secs(1));
        }
        assert!(backoff(0, Duration::from_secs(60)) <= BASE_BACKOFF);
    }
}
