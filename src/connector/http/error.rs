//! Errors of the HTTP layer: what a failed exchange says (never a secret), its mapping to
//! the engine's [`OpError`], and truncated failure bodies.

use super::*;

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

pub(super) fn body_suffix(body: &str) -> String {
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
    pub(super) fn message(&self) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::http::test_support::*;

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
}
