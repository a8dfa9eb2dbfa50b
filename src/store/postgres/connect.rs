//! Connecting to Postgres: where the store is (for messages) and connection errors that never
//! echo the URL or its password.

use sqlx::postgres::PgConnectOptions;

use super::{ACQUIRE_TIMEOUT, BACKEND};
use crate::secret::Secret;
use crate::store::StoreError;

/// `host:port, database NAME` (or the socket path), for error messages. Never a password.
pub(super) fn describe_place(options: &PgConnectOptions) -> String {
    let database = options.get_database().unwrap_or("(default database)");
    match options.get_socket() {
        Some(socket) => format!("socket {}, database {database}", socket.display()),
        None => format!(
            "{}:{}, database {database}",
            options.get_host(),
            options.get_port()
        ),
    }
}

/// Builds a `Connect` error from the error's kind, then removes anything of the URL that could
/// still have been echoed (its password, raw or percent-decoded, and the URL itself).
pub(super) fn connect_error(url: &Secret, place: &str, error: &sqlx::Error) -> StoreError {
    let cause = match error {
        sqlx::Error::Configuration(e) => e
            .to_string()
            .trim_start_matches("error with configuration: ")
            .to_owned(),
        sqlx::Error::Database(e) => match e.code() {
            Some(code) => format!("server refused: {} (SQLSTATE {code})", e.message()),
            None => format!("server refused: {}", e.message()),
        },
        sqlx::Error::Io(e) => format!("network error: {e}"),
        sqlx::Error::Tls(e) => format!("TLS error: {e}"),
        sqlx::Error::Protocol(e) => format!("protocol error: {e}"),
        sqlx::Error::PoolTimedOut => format!(
            "timed out after {} s waiting for a connection",
            ACQUIRE_TIMEOUT.as_secs()
        ),
        other => other.to_string(),
    };
    StoreError::Connect {
        backend: BACKEND,
        message: redact(url, &format!("{place}: {cause}")),
    }
}

/// Replaces every occurrence of the URL and of its password in `text` with `***`.
pub(super) fn redact(url: &Secret, text: &str) -> String {
    let mut secrets: Vec<String> = Vec::new();
    if !url.is_empty() {
        secrets.push(url.expose().to_owned());
    }
    if let Ok(parsed) = url::Url::parse(url.expose()) {
        if let Some(password) = parsed.password() {
            secrets.push(password.to_owned());
            if let Ok(decoded) = percent_decode(password) {
                secrets.push(decoded);
            }
        }
        // `?password=...` is accepted too.
        for (name, value) in parsed.query_pairs() {
            if name == "password" {
                secrets.push(value.into_owned());
            }
        }
    }
    // Longest first, so that the URL is replaced as a whole before its password.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret.as_str(), "***");
    }
    out
}

/// Percent-decodes (RFC 3986, no `+` handling) a URL component.
pub(super) fn percent_decode(s: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out)
}

pub(super) fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}
