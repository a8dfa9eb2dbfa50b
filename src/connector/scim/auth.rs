//! How SCIM requests authenticate: a static bearer token, or OAuth2 client credentials
//! (`grant_type=client_credentials`, the client id and secret in the form body). Bodies of the
//! token endpoint are never logged or kept.

use url::Url;

use crate::connector::http::{HttpClient, HttpError, Request, Token, TokenFetcher, TokenSource};
use crate::secret::Secret;

/// A configured token, sent as it is. A 401 refuses it for the rest of the run.
pub(crate) struct StaticToken {
    pub(crate) target: String,
    pub(crate) token: Secret,
}

#[async_trait::async_trait]
impl TokenSource for StaticToken {
    async fn token(&self) -> Result<Secret, HttpError> {
        Ok(self.token.clone())
    }

    async fn invalidate(&self, _rejected: &Secret) -> Option<HttpError> {
        Some(HttpError::Auth {
            target: self.target.clone(),
            message: "the server refused the bearer token (HTTP 401)".into(),
        })
    }
}

/// OAuth2 client credentials from `token_url`.
pub(crate) struct ClientCredentials {
    pub(crate) http: HttpClient,
    pub(crate) token_url: Url,
    pub(crate) client_id: String,
    pub(crate) client_secret: Secret,
    pub(crate) scope: Option<String>,
}

#[async_trait::async_trait]
impl TokenFetcher for ClientCredentials {
    async fn fetch(&self, _previous: Option<&Token>) -> Result<Token, HttpError> {
        let mut form = vec![
            ("grant_type".to_string(), Secret::new("client_credentials")),
            ("client_id".to_string(), Secret::new(self.client_id.clone())),
            ("client_secret".to_string(), self.client_secret.clone()),
        ];
        if let Some(s) = &self.scope {
            form.push(("scope".to_string(), Secret::new(s.clone())));
        }
        let req = Request::post(self.token_url.clone())
            .form(form)
            .token_grant();
        self.http.client_credentials_token(req).await
    }
}
