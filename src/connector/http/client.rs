//! The client of one target: the request loop (permit, pacing slot, token, retries), the
//! unreachable-target probe and sticky refused credentials.

use super::*;

/// Whether the client's target can be connected to (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reach {
    Reachable,
    /// One request is retrying its connect; the others wait for its verdict.
    Probing,
    /// The probe never connected: why (the last connect error).
    Unreachable(String),
}

pub(super) struct Inner {
    pub(super) client: reqwest::Client,
    pub(super) target: String,
    pub(super) settings: HttpSettings,
    pub(super) permits: Semaphore,
    pub(super) pacer: Option<Pacer>,
    pub(super) reach: watch::Sender<Reach>,
    /// Refused credentials (sticky; see the module doc).
    pub(super) auth_failure: std::sync::Mutex<Option<HttpError>>,
    /// Exchanges started on the network (every attempt that got past the gates).
    pub(super) attempts: AtomicU64,
}

/// Held by the request probing the target; a probe that ends without a verdict (its request
/// was dropped) lets the next failing request probe.
pub(super) struct Probe<'a> {
    pub(super) reach: &'a watch::Sender<Reach>,
    pub(super) started: Instant,
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
pub(super) enum Attempt {
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
    pub(super) inner: Arc<Inner>,
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
pub(super) struct Failure {
    pub(super) message: String,
    /// Failed to connect: nothing was sent.
    pub(super) not_sent: bool,
    pub(super) timeout: bool,
    /// The request could not be built: retrying cannot help.
    pub(super) fatal: bool,
}

impl Failure {
    pub(super) fn from_reqwest(e: reqwest::Error) -> Failure {
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
    pub(super) fn auth_failure(&self) -> Option<HttpError> {
        self.inner
            .auth_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records refused credentials (counted once) and returns the error every later request
    /// gets (the first one recorded).
    pub(super) fn refuse_credentials(&self, e: HttpError) -> HttpError {
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
    pub(super) fn token_failed(&self, e: HttpError) -> HttpError {
        match e {
            HttpError::Auth { .. } => self.refuse_credentials(e),
            other => other,
        }
    }

    /// Waits while another request probes the target; `Err` (the reason) when it is known
    /// unreachable. Token grants do not wait (the probe may need the permit their caller
    /// holds).
    pub(super) async fn reach_gate(&self, grant: bool) -> Result<(), String> {
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
    pub(super) fn reached(&self) {
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
    pub(super) fn start_probe(&self) -> Result<Option<Probe<'_>>, String> {
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
    pub(super) async fn attempt(&self, req: &Request, attempt: u32, is_probe: bool) -> Attempt {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::http::test_support::*;

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
}
