//! Covata's OAuth2 token endpoint: the password grant, the refresh grant, and the fallback
//! from a failed refresh to a new login. Bodies of this endpoint are never logged or kept.

use std::time::Duration;

use serde_json::Value;
use url::Url;

use crate::connector::http::{HttpClient, HttpError, Request, Token, TokenFetcher};
use crate::secret::Secret;

/// Gets tokens from `POST {base}/api/oauth/token` with HTTP Basic `client_id:client_secret`.
pub(crate) struct CovataAuth {
    pub(crate) http: HttpClient,
    pub(crate) token_url: Url,
    pub(crate) username: String,
    pub(crate) password: Secret,
    pub(crate) client_id: String,
    pub(crate) client_secret: Secret,
}

impl CovataAuth {
    async fn grant(&self, form: Vec<(String, Secret)>) -> Result<Token, HttpError> {
        // A token grant: sensitive, retried like an idempotent call (sending it twice is
        // harmless), outside the concurrency limit and pacing.
        let req = Request::post(self.token_url.clone())
            .basic_auth(&self.client_id, self.client_secret.clone())
            .form(form)
            .token_grant();
        let resp = match self.http.send(req).await {
            Ok(r) => r,
            Err(HttpError::Status { status, .. }) if matches!(status, 400 | 401 | 403) => {
                return Err(HttpError::Auth {
                    target: self.http.target().to_string(),
                    message: format!("the token endpoint refused the credentials (HTTP {status})"),
                });
            }
            Err(e) => return Err(e),
        };
        let body: Value = resp.json()?;
        let text = |k: &str| {
            body.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let Some(access) = text("access_token") else {
            return Err(HttpError::Auth {
                target: self.http.target().to_string(),
                message: "the token endpoint answered without an access_token".to_string(),
            });
        };
        let expires_in = body.get("expires_in").and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        });
        Ok(Token {
            access_token: Secret::new(access),
            refresh_token: text("refresh_token").map(Secret::new),
            expires_in: expires_in.map(Duration::from_secs),
        })
    }

    async fn login(&self) -> Result<Token, HttpError> {
        self.grant(vec![
            ("grant_type".to_string(), Secret::new("password")),
            ("username".to_string(), Secret::new(self.username.clone())),
            ("password".to_string(), self.password.clone()),
        ])
        .await
    }
}

#[async_trait::async_trait]
impl TokenFetcher for CovataAuth {
    async fn fetch(&self, previous: Option<&Token>) -> Result<Token, HttpError> {
        if let Some(refresh) = previous.and_then(|p| p.refresh_token.as_ref()) {
            let form = vec![
                ("grant_type".to_string(), Secret::new("refresh_token")),
                ("refresh_token".to_string(), refresh.clone()),
            ];
            match self.grant(form).await {
                Ok(mut token) => {
                    // A refresh answer without a new refresh token keeps the old one.
                    if token.refresh_token.is_none() {
                        token.refresh_token = Some(refresh.clone());
                    }
                    return Ok(token);
                }
                Err(e) => {
                    tracing::info!(
                        target = %self.http.target(),
                        error = %e,
                        "token refresh failed; logging in again"
                    );
                }
            }
        }
        self.login().await
    }
}
