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
use crate::connector::api::OpError;
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

mod client;
mod error;
mod limits;
mod request;
#[cfg(test)]
mod test_support;
mod token;
mod url_builder;

pub use client::*;
pub use error::*;
use limits::*;
pub use request::*;
pub use token::*;
pub use url_builder::*;
