//! Bearer tokens: the cache shared by a client's requests (refresh margin, one fetch at a
//! time, one replacement after a 401) and sticky refused credentials.

use super::*;

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

pub(super) struct CachedEntry {
    pub(super) token: Token,
    /// When to fetch a new one ahead of expiry.
    pub(super) refresh_at: Option<Instant>,
    /// When it stops working.
    pub(super) expires_at: Option<Instant>,
    /// A 401 said it no longer works.
    pub(super) rejected: bool,
    /// It was fetched because the one before was rejected: a 401 on it before any success
    /// means the credentials are refused.
    pub(super) replaces_rejected: bool,
}

pub(super) struct TokenState {
    pub(super) entry: Option<CachedEntry>,
    /// The credentials were refused: every later call fails with this, asking nobody.
    pub(super) refused: Option<HttpError>,
}

/// A [`TokenSource`] that caches the token of a [`TokenFetcher`], refreshes it ahead of its
/// expiry (the margin rule of the module doc) and after a 401, and remembers refused
/// credentials for good. One fetch at a time: concurrent callers wait for it and reuse its
/// result.
pub struct CachedToken {
    pub(super) target: String,
    pub(super) request_timeout: Duration,
    pub(super) fetcher: Box<dyn TokenFetcher>,
    pub(super) state: Mutex<TokenState>,
    /// The last token some request was answered with something else than a 401.
    pub(super) confirmed: std::sync::Mutex<Option<Secret>>,
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
pub(super) fn refresh_margin(life: Duration, request_timeout: Duration) -> Duration {
    (life / 2).min((life / 10).max(request_timeout))
}

/// When a token of this life, requested at `start`, is refreshed.
pub(super) fn refresh_deadline(
    start: Instant,
    life: Duration,
    request_timeout: Duration,
) -> Instant {
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

impl HttpClient {
    /// Sends an OAuth2 client-credentials token request and reads the answer: a refusal (400,
    /// 401, 403) is an authentication error, and so is an answer without an `access_token`;
    /// `expires_in` may be a number or a numeric string.
    pub async fn client_credentials_token(&self, req: Request) -> Result<Token, HttpError> {
        let resp = match self.send(req).await {
            Ok(r) => r,
            Err(HttpError::Status { status, .. }) if matches!(status, 400 | 401 | 403) => {
                return Err(HttpError::Auth {
                    target: self.target().to_string(),
                    message: format!(
                        "the token endpoint refused the client credentials (HTTP {status})"
                    ),
                });
            }
            Err(e) => return Err(e),
        };
        let body: serde_json::Value = resp.json()?;
        let Some(access) = body
            .get("access_token")
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
        else {
            return Err(HttpError::Auth {
                target: self.target().to_string(),
                message: "the token endpoint answered without an access_token".to_string(),
            });
        };
        let expires_in = body.get("expires_in").and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        });
        Ok(Token {
            access_token: Secret::new(access),
            refresh_token: None,
            expires_in: expires_in.map(Duration::from_secs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::http::test_support::*;

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
}
