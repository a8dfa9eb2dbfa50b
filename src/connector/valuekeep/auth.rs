//! Valuekeep's OAuth2 client-credentials grant (`POST token_url`). Bodies of this endpoint are
//! never logged or kept.

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
        self.http.client_credentials_token(self.request()).await
    }
}
