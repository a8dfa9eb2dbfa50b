//! The base every fake vendor server extends: a listener on `127.0.0.1:0` served from a thread
//! of its own (stopped on drop), path matching, the one fault vocabulary and its firing rules,
//! and the auth helpers (HTTP Basic, bearer tokens with expiry).
//!
//! A fake keeps its own routes, state, contract checks and request log; its front middleware
//! reads the request ([`Incoming::read`]), takes the fault of the request from its
//! [`Faults`], and calls [`before_handler`] and [`after_handler`] around its handler, so that
//! every fake answers every [`Fault`] the same way.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

use super::killable::{ConnHandle, KillListener};

/// What every fake's module uses: the axum and JSON vocabulary and this base.
pub mod prelude {
    pub use std::sync::{Arc, Mutex, MutexGuard};
    pub use std::time::{Duration, Instant};

    pub use axum::Router;
    pub use axum::body::Bytes;
    pub use axum::extract::rejection::PathRejection;
    pub use axum::extract::{Path, RawQuery, Request, State};
    pub use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
    pub use axum::middleware::{self, Next};
    pub use axum::response::{IntoResponse, Response};
    pub use axum::routing::{get, post, put};
    pub use serde_json::{Map, Value, json};

    pub use super::{
        Before, Faults, Incoming, Listener, Running, after_handler, before_handler, content_type,
        has_content_type, lock, with_retry_after,
    };
}

/// The lock of a fake's state; a test that panicked while holding it does not poison it for
/// the others.
pub fn lock<T>(shared: &Mutex<T>) -> MutexGuard<'_, T> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The server.

/// A bound listener, not serving yet (its address is known before the router is built).
pub struct Listener {
    name: &'static str,
    listener: std::net::TcpListener,
    addr: SocketAddr,
}

impl Listener {
    /// Binds `127.0.0.1:<free port>`; `name` names the fake in thread names and panics.
    pub fn bind(name: &'static str) -> Listener {
        Listener::bind_port(name, 0)
    }

    /// Binds `127.0.0.1:port` (0: a free port), as `examples/demo-vendors.rs` does.
    pub fn bind_port(name: &'static str, port: u16) -> Listener {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("fake {name}: bind 127.0.0.1:{port}: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("fake {name}: set_nonblocking: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("fake {name}: local_addr: {e}"));
        Listener {
            name,
            listener,
            addr,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `app` from a dedicated thread with its own tokio runtime, so the fake keeps
    /// answering while a test blocks (for example on the real CLI run as a child process).
    /// Connections carry a [`ConnHandle`] (a fault can break them).
    pub fn serve(self, app: Router) -> Server {
        let Listener {
            name,
            listener,
            addr,
        } = self;
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("fake-{}-{}", name.to_lowercase(), addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("fake {name}: runtime: {e}"));
                runtime.block_on(async move {
                    let listener = KillListener {
                        inner: TcpListener::from_std(listener)
                            .unwrap_or_else(|e| panic!("fake {name}: listener: {e}")),
                    };
                    let server = axum::serve(
                        listener,
                        app.into_make_service_with_connect_info::<ConnHandle>(),
                    );
                    tokio::select! {
                        result = std::future::IntoFuture::into_future(server) => {
                            result.unwrap_or_else(|e| panic!("fake {name}: server: {e}"));
                        }
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime cancels the connection tasks.
            })
            .unwrap_or_else(|e| panic!("fake {name}: thread: {e}"));
        Server {
            addr,
            shutdown: Some(shutdown),
        }
    }
}

/// A running fake server. Dropping it stops it.
pub struct Server {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // The server thread may already be gone; nothing to do then.
            let _ = shutdown.send(());
        }
    }
}

/// A running fake: its server and the state its handlers share. Dropping it stops the server.
pub struct Running<S> {
    server: Server,
    shared: std::sync::Arc<Mutex<S>>,
}

impl<S: Send + 'static> Running<S> {
    /// Serves the router `router` builds on the shared `state` from `listener`.
    pub fn serve(
        listener: Listener,
        state: S,
        router: impl FnOnce(std::sync::Arc<Mutex<S>>) -> Router,
    ) -> Running<S> {
        let shared = std::sync::Arc::new(Mutex::new(state));
        let server = listener.serve(router(shared.clone()));
        Running { server, shared }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The shared state (see [`lock`]).
    pub fn lock(&self) -> MutexGuard<'_, S> {
        lock(&self.shared)
    }
}

// ---------------------------------------------------------------------------------------------
// Requests.

/// A request as a front middleware sees it: its connection, head and whole body.
pub struct Incoming {
    pub conn: Option<ConnHandle>,
    pub parts: Parts,
    pub body: Bytes,
    pub method: String,
    /// The raw path, still percent-encoded.
    pub path: String,
}

impl Incoming {
    /// Reads the whole body (at most `max` bytes); `Err`: why it could not be read.
    pub async fn read(request: Request, max: usize) -> Result<Incoming, String> {
        let conn = request
            .extensions()
            .get::<ConnectInfo<ConnHandle>>()
            .map(|info| info.0.clone());
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, max)
            .await
            .map_err(|e| format!("unreadable body: {e}"))?;
        let method = parts.method.as_str().to_owned();
        let path = parts.uri.path().to_owned();
        Ok(Incoming {
            conn,
            parts,
            body,
            method,
            path,
        })
    }

    /// The body, lossily decoded as UTF-8.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The request again, to hand to the handler.
    pub fn into_request(self) -> Request {
        Request::from_parts(self.parts, axum::body::Body::from(self.body))
    }
}

pub fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::CONTENT_TYPE)?.to_str().ok()
}

/// Whether the content type's essence (before `;`) is `expected`.
pub fn has_content_type(headers: &HeaderMap, expected: &str) -> bool {
    content_type(headers).is_some_and(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case(expected)
    })
}

// ---------------------------------------------------------------------------------------------
// Faults.

/// Which request paths a fault applies to (matched against the raw, still-encoded path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The path equals this.
    Exact(String),
    /// The path starts with this (`/api/v1/users` also matches `/api/v1/users/bulk`).
    Prefix(String),
    /// Same number of segments; a `{..}` segment matches any one segment
    /// (`/api/v1/users/{id}` matches `/api/v1/users/42`, not `/api/v1/users/42/enable`).
    Template(String),
}

impl PathMatch {
    pub fn exact(path: &str) -> PathMatch {
        PathMatch::Exact(path.to_owned())
    }

    pub fn prefix(path: &str) -> PathMatch {
        PathMatch::Prefix(path.to_owned())
    }

    pub fn template(path: &str) -> PathMatch {
        PathMatch::Template(path.to_owned())
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Template(t) => {
                let want: Vec<&str> = t.split('/').collect();
                let got: Vec<&str> = path.split('/').collect();
                want.len() == got.len()
                    && want.iter().zip(&got).all(|(w, g)| {
                        (w.starts_with('{') && w.ends_with('}') && !g.is_empty()) || w == g
                    })
            }
        }
    }
}

/// An exact path.
impl From<&str> for PathMatch {
    fn from(path: &str) -> PathMatch {
        PathMatch::exact(path)
    }
}

/// What an injected fault does to a matching request: the one vocabulary of every fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 with the fake's error body and, if given, `Retry-After` (seconds or an HTTP date,
    /// sent verbatim). Nothing is applied.
    Status429 { retry_after: Option<String> },
    /// 503 with the fake's error body and, if given, `Retry-After`. Nothing is applied.
    Status503 { retry_after: Option<String> },
    /// This status with the fake's error body. Nothing is applied.
    Status(u16),
    /// Wait, then handle the request normally.
    Latency(Duration),
    /// Close the connection without any response. Nothing is applied.
    Drop,
    /// Handle the request (the change takes effect), then close the connection without any
    /// response.
    DropAfterApply,
    /// Handle the request (the change takes effect at once), then wait this long before
    /// answering: a client whose request timeout is shorter gives up on a change that was made.
    ApplyThenLatency(Duration),
    /// Wait this long, then handle the request even if the client has gone away meanwhile (a
    /// server that finishes queued work after its client timed out): the change takes effect
    /// late, possibly after the client has already looked for it. With [`Fault::Latency`] the
    /// handler is dropped with the connection, so nothing is applied. Only fakes whose front
    /// runs the handler in a task of its own answer it (Covata); the others treat it as
    /// [`Fault::Latency`].
    LatencyThenApplyDetached(Duration),
}

struct FaultRule {
    method: String,
    path: PathMatch,
    fault: Fault,
    remaining: usize,
}

/// A fake's injected faults and the latency it adds to every request.
#[derive(Default)]
pub struct Faults {
    rules: Vec<FaultRule>,
    /// Added to every request before it is handled.
    pub latency: Duration,
}

impl Faults {
    /// Applies `fault` to the next `times` requests whose method is `method` (`"*"`: any) and
    /// whose raw path matches `path`. When several rules match, the one injected first fires;
    /// a request fires at most one rule. Panics (naming the fake) on an invalid status.
    pub fn inject(
        &mut self,
        fake: &str,
        method: &str,
        path: PathMatch,
        fault: Fault,
        times: usize,
    ) {
        if let Fault::Status(code) = fault {
            assert!(
                StatusCode::from_u16(code).is_ok(),
                "fake {fake}: invalid status {code}"
            );
        }
        self.rules.push(FaultRule {
            method: method.to_owned(),
            path,
            fault,
            remaining: times,
        });
    }

    /// The fault this request fires, if any (counted down).
    pub fn take(&mut self, method: &str, path: &str) -> Option<Fault> {
        let rule = self.rules.iter_mut().find(|r| {
            r.remaining > 0
                && (r.method == "*" || r.method.eq_ignore_ascii_case(method))
                && r.path.matches(path)
        })?;
        rule.remaining -= 1;
        let fault = rule.fault.clone();
        self.rules.retain(|r| r.remaining > 0);
        Some(fault)
    }

    /// Drops every fault that has not fired yet.
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// How many fault firings are still pending.
    pub fn pending(&self) -> usize {
        self.rules.iter().map(|r| r.remaining).sum()
    }
}

/// What the front does after [`before_handler`].
pub enum Before {
    /// Answer this (an injected status); nothing is applied.
    Answer(Response),
    /// The connection was broken; return this (it is never written). Nothing is applied.
    Dropped(Response),
    /// Handle the request.
    Proceed,
}

/// The part of `fault` that acts before the handler: injected statuses (answered by `answer`,
/// the fake's error body for a status and an optional `Retry-After`), latency, a dropped
/// connection.
pub async fn before_handler(
    fault: Option<&Fault>,
    conn: Option<&ConnHandle>,
    answer: impl Fn(StatusCode, Option<&str>) -> Response,
) -> Before {
    match fault {
        Some(Fault::Status429 { retry_after }) => Before::Answer(answer(
            StatusCode::TOO_MANY_REQUESTS,
            retry_after.as_deref(),
        )),
        Some(Fault::Status503 { retry_after }) => Before::Answer(answer(
            StatusCode::SERVICE_UNAVAILABLE,
            retry_after.as_deref(),
        )),
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Before::Answer(answer(status, None))
        }
        Some(Fault::Latency(delay) | Fault::LatencyThenApplyDetached(delay)) => {
            tokio::time::sleep(*delay).await;
            Before::Proceed
        }
        Some(Fault::Drop) => {
            kill(conn);
            // Never written: the connection fails first.
            Before::Dropped(StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Some(Fault::DropAfterApply | Fault::ApplyThenLatency(_)) | None => Before::Proceed,
    }
}

/// The part of `fault` that acts after the handler has applied the request: the connection
/// broken (returns `true`: the answer is never written) or the answer delayed.
pub async fn after_handler(fault: Option<&Fault>, conn: Option<&ConnHandle>) -> bool {
    match fault {
        Some(Fault::DropAfterApply) => {
            kill(conn);
            true
        }
        Some(Fault::ApplyThenLatency(delay)) => {
            tokio::time::sleep(*delay).await;
            false
        }
        _ => false,
    }
}

/// Breaks the connection: every later read or write on it fails, so hyper closes it without
/// writing a byte of the response.
pub fn kill(conn: Option<&ConnHandle>) {
    conn.expect("fake: the connection handle is always set")
        .kill();
}

/// Sets `Retry-After` (verbatim) on `response`.
pub fn with_retry_after(mut response: Response, retry_after: Option<&str>) -> Response {
    if let Some(retry_after) = retry_after {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(retry_after).expect("fake: Retry-After header value"),
        );
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Auth.

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(input: &[u8]) -> String {
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 (padding optional); `None` on any other character.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The HTTP Basic credentials.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64_decode(encoded.trim())?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// The fields of a form body (`application/x-www-form-urlencoded`); `Err`: a key given more
/// than once.
pub fn form_fields(body: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut form = HashMap::new();
    for (key, value) in url::form_urlencoded::parse(body) {
        if form
            .insert(key.clone().into_owned(), value.into_owned())
            .is_some()
        {
            return Err(key.into_owned());
        }
    }
    Ok(form)
}

/// Why a request's bearer token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefused {
    /// No `Authorization` header.
    Missing,
    /// Another scheme than `Bearer`.
    NotBearer,
    /// A token this fake issued, expired.
    Expired,
    /// A token this fake never issued.
    Unknown,
}

/// The access tokens a fake issued, each with its owner (e.g. the client id) and expiry.
pub struct Tokens<T> {
    issued: HashMap<String, (T, Instant)>,
}

impl<T> Default for Tokens<T> {
    fn default() -> Tokens<T> {
        Tokens {
            issued: HashMap::new(),
        }
    }
}

impl<T: Clone> Tokens<T> {
    /// A new random token of `owner`, valid for exactly `ttl` from now.
    pub fn issue(&mut self, owner: T, ttl: Duration) -> String {
        let token = uuid::Uuid::new_v4().simple().to_string();
        self.issued
            .insert(token.clone(), (owner, Instant::now() + ttl));
        token
    }

    /// The owner of the valid, unexpired bearer token of `headers`.
    pub fn check(&self, headers: &HeaderMap) -> Result<T, TokenRefused> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(TokenRefused::Missing)?
            .to_str()
            .unwrap_or("");
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(TokenRefused::NotBearer),
        };
        match self.issued.get(token) {
            Some((owner, expiry)) if Instant::now() < *expiry => Ok(owner.clone()),
            Some(_) => Err(TokenRefused::Expired),
            None => Err(TokenRefused::Unknown),
        }
    }

    /// Every token issued so far stops working now.
    pub fn expire_all(&mut self) {
        let now = Instant::now();
        for (_, expiry) in self.issued.values_mut() {
            *expiry = now;
        }
    }
}
