//! Valuekeep's OAuth2 client-credentials grant (`POST token_url`). Bodies of this endpoint are
//! never logged or kept.

use std::time::Duration;

use serde_json::Value;
use url::Url;

use crate::connector::http::{HttpClient, HttpError, Request, Token, TokenFetcher};
use crate::secret::Secret;

/// How the client authenticates to the token endpoint.
///
/// CHOSEN: [`ClientAuth::Form`], the client id and secret as form fields next to
/// `grant_type` and `scope` — the form of the Primavera BSS (Jasmin / Valuekeep) identity
/// server's published examples. HTTP Basic is kept for identity servers that want it.
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientAuth {
    /// `client_id=..&client_secret=..` in the form body.
    Form,
    /// `Authorization: Basic base64(client_id:client_secret)`.
    Basic,
}

/// The choice made for every Valuekeep target.
pub(crate) const CLIENT_AUTH: ClientAuth = ClientAuth::Form;

/// Gets tokens with `grant_type=client_credentials&scope=<scope>`. There is no refresh token
/// in this grant: an expired or refused token is replaced by a new grant.
pub(crate) struct ValuekeepAuth {
    pub(crate) http: HttpClient,
    pub(crate) token_url: Url,
    pub(crate) scope: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: Secret,
    pub(crate) client_auth: ClientAuth,
}

impl ValuekeepAuth {
    fn request(&self) -> Request {
        let mut form = vec![
            ("grant_type".to_string(), Secret::new("client_credentials")),
            ("scope".to_string(), Secret::new(self.scope.clone())),
        ];
        let req = Request::post(self.token_url.clone());
        let req = match self.client_auth {
            ClientAuth::Form => {
                form.push(("client_id".to_string(), Secret::new(self.client_id.clone())));
                form.push(("client_secret".to_string(), self.client_secret.clone()));
                req
            }
            ClientAuth::Basic => req.basic_auth(&self.client_id, self.client_secret.clone()),
        };
        // A token grant: sensitive, retried like an idempotent call (a grant sent twice is
        // harmless), outside the concurrency limit and pacing.
        req.form(form).token_grant()
    }
}

#[async_trait::async_trait]
impl TokenFetcher for ValuekeepAuth {
    async fn fetch(&self, _previous: Option<&Token>) -> Result<Token, HttpError> {
        let resp = match self.http.send(self.request()).await {
            Ok(r) => r,
            Err(HttpError::Status { status, .. }) if matches!(status, 400 | 401 | 403) => {
                return Err(HttpError::Auth {
                    target: self.http.target().to_string(),
                    message: format!(
                        "the token endpoint refused the client credentials (HTTP {status})"
                    ),
                });
            }
            Err(e) => return Err(e),
        };
        let body: Value = resp.json()?;
        let Some(access) = body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        else {
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
            refresh_token: None,
            expires_in: expires_in.map(Duration::from_secs),
        })
    }
}
