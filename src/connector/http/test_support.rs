//! What the HTTP layer's tests share: settings, a local server, scripted answers.

pub(super) use super::*;

pub(super) use std::sync::atomic::{AtomicUsize, Ordering};

pub(super) use axum::Router;
pub(super) use axum::http::{HeaderMap as AxHeaders, StatusCode};
pub(super) use axum::response::IntoResponse;
pub(super) use axum::routing::{any, get};
pub(super) use tokio::io::{AsyncReadExt, AsyncWriteExt};
pub(super) use tokio::net::TcpListener;

pub(super) fn settings() -> HttpSettings {
    HttpSettings {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        concurrency: 8,
        requests_per_second: None,
        max_retries: 3,
        max_backoff: Duration::from_millis(20),
    }
}

pub(super) async fn serve(app: Router) -> Url {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Url::parse(&format!("http://{addr}/base/")).unwrap()
}

pub(super) fn url(base: &Url, path: &str) -> Url {
    UrlBuilder::new(base).path(path).build().unwrap()
}

/// A server that answers `path` with the statuses in `script` (then 200) and counts calls.
pub(super) async fn scripted(script: Vec<(u16, Option<String>)>) -> (Url, Arc<AtomicUsize>) {
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
