//! Pacing (requests per second), `Retry-After` and the retry backoff. The concurrency limit
//! is the client's semaphore ([`super::HttpClient`]).

use super::*;

/// Paces requests: each one reserves the next slot `max(now, last + 1/rps)`.
pub(super) struct Pacer {
    pub(super) interval: Duration,
    pub(super) next: std::sync::Mutex<Instant>,
}

impl Pacer {
    pub(super) async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

/// The delay a `Retry-After` header asks for (delta-seconds or an HTTP date).
pub(super) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Full-jitter exponential backoff: a random delay in `[0, min(cap, 200ms · 2^retries)]`.
pub(super) fn backoff(retries: u32, cap: Duration) -> Duration {
    let factor = 1u32.checked_shl(retries.min(31)).unwrap_or(u32::MAX);
    let ceiling = BASE_BACKOFF.saturating_mul(factor).min(cap);
    let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(0..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::http::test_support::*;

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
