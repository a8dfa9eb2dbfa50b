//! One request as the client sends it (kept whole for retries) and a success response.

use super::*;

pub(super) enum Body {
    Empty,
    Json(serde_json::Value),
    /// Form fields; values may be secrets, exposed only when the request is built.
    Form(Vec<(String, Secret)>),
    /// One file part (the body is rebuilt on every attempt).
    File {
        part: String,
        file_name: String,
        mime: String,
        bytes: Bytes,
    },
}

pub(super) enum Auth {
    None,
    Basic { user: String, password: Secret },
    Bearer(Arc<dyn TokenSource>),
}

/// One request to send through [`HttpClient::send`]: kept whole so that every retry sends it
/// again exactly.
pub struct Request {
    pub(super) method: Method,
    pub(super) url: Url,
    pub(super) body: Body,
    pub(super) auth: Auth,
    pub(super) idempotent: bool,
    pub(super) sensitive: bool,
    /// A token endpoint call ([`Request::token_grant`]).
    pub(super) grant: bool,
    /// Extra headers ([`Request::header`]).
    pub(super) headers: Vec<(&'static str, String)>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method.as_str())
            .field("path", &self.url.path())
            .field("idempotent", &self.idempotent)
            .finish_non_exhaustive()
    }
}

impl Request {
    /// A request; GET, HEAD, PUT, DELETE and OPTIONS count as idempotent, others do not.
    pub fn new(method: Method, url: Url) -> Request {
        let idempotent = matches!(
            method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        );
        Request {
            method,
            url,
            body: Body::Empty,
            auth: Auth::None,
            idempotent,
            sensitive: false,
            grant: false,
            headers: Vec::new(),
        }
    }

    pub fn get(url: Url) -> Request {
        Request::new(Method::GET, url)
    }

    pub fn post(url: Url) -> Request {
        Request::new(Method::POST, url)
    }

    pub fn put(url: Url) -> Request {
        Request::new(Method::PUT, url)
    }

    pub fn delete(url: Url) -> Request {
        Request::new(Method::DELETE, url)
    }

    /// Adds a query parameter (form-encoded). Queries never appear in logs or errors.
    pub fn query(mut self, key: &str, value: &str) -> Request {
        self.url.query_pairs_mut().append_pair(key, value);
        self
    }

    /// An extra header (`If-Match`, a vendor's media type). Never one carrying a secret:
    /// credentials go through [`Request::bearer`] or [`Request::basic_auth`]. A
    /// `Content-Type` given here wins over the body's default.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Request {
        self.headers.push((name, value.into()));
        self
    }

    /// A JSON body (`Content-Type: application/json`).
    pub fn json(mut self, body: serde_json::Value) -> Request {
        self.body = Body::Json(body);
        self
    }

    /// An `application/x-www-form-urlencoded` body.
    pub fn form(mut self, fields: Vec<(String, Secret)>) -> Request {
        self.body = Body::Form(fields);
        self
    }

    /// A `multipart/form-data` body with one file part.
    pub fn multipart_file(
        mut self,
        part: &str,
        file_name: &str,
        mime: &str,
        bytes: Bytes,
    ) -> Request {
        self.body = Body::File {
            part: part.to_string(),
            file_name: file_name.to_string(),
            mime: mime.to_string(),
            bytes,
        };
        self
    }

    /// HTTP Basic authentication.
    pub fn basic_auth(mut self, user: &str, password: Secret) -> Request {
        self.auth = Auth::Basic {
            user: user.to_string(),
            password,
        };
        self
    }

    /// A bearer token from `source`, refreshed once on a 401.
    pub fn bearer(mut self, source: Arc<dyn TokenSource>) -> Request {
        self.auth = Auth::Bearer(source);
        self
    }

    /// Whether sending this request twice has the same effect as sending it once (decides
    /// whether 5xx and post-send transport errors are retried).
    pub fn idempotent(mut self, yes: bool) -> Request {
        self.idempotent = yes;
        self
    }

    /// A request whose request and response bodies are secret (token endpoints): neither is
    /// ever logged or kept on an error.
    pub fn sensitive(mut self) -> Request {
        self.sensitive = true;
        self
    }

    /// A call of a token endpoint: sensitive, retried like an idempotent call (a grant sent
    /// twice is harmless), and outside the concurrency limit and the pacing (the request
    /// waiting for the token holds a permit and a slot already). Its credentials are judged
    /// by the fetcher (which turns a refusal into [`HttpError::Auth`]), not by this layer.
    pub fn token_grant(mut self) -> Request {
        self.grant = true;
        self.sensitive = true;
        self.idempotent = true;
        self
    }

    /// Whether the request carries credentials this layer judges (a 401 to it refuses them).
    pub(super) fn carries_credentials(&self) -> bool {
        !self.grant && !matches!(self.auth, Auth::None)
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path (for logs and errors: never the query).
    pub fn path(&self) -> &str {
        self.url.path()
    }

    /// Builds the reqwest request for one attempt: the only place secrets are exposed.
    pub(super) fn build(
        &self,
        client: &reqwest::Client,
        token: Option<&Secret>,
    ) -> Result<reqwest::RequestBuilder, reqwest::Error> {
        let mut b = client.request(self.method.clone(), self.url.clone());
        for (name, value) in &self.headers {
            b = b.header(*name, value.as_str());
        }
        b = match &self.auth {
            Auth::None => b,
            Auth::Basic { user, password } => b.basic_auth(user, Some(password.expose())),
            Auth::Bearer(_) => match token {
                Some(t) => b.bearer_auth(t.expose()),
                None => b,
            },
        };
        Ok(match &self.body {
            Body::Empty => b,
            Body::Json(v) => b.json(v),
            Body::Form(fields) => {
                let pairs: Vec<(&str, &str)> = fields
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.expose()))
                    .collect();
                b.form(&pairs)
            }
            Body::File {
                part,
                file_name,
                mime,
                bytes,
            } => {
                let p = reqwest::multipart::Part::bytes(bytes.to_vec())
                    .file_name(file_name.clone())
                    .mime_str(mime)?;
                b.multipart(reqwest::multipart::Form::new().part(part.clone(), p))
            }
        })
    }
}

/// A success response, read whole.
#[derive(Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub(super) target: String,
    pub(super) method: String,
    pub(super) path: String,
    pub(super) sensitive: bool,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl Response {
    /// The body as JSON of type `T`. For sensitive responses the error does not quote the
    /// body.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| HttpError::Decode {
            target: self.target.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            message: if self.sensitive {
                format!("the body is not the expected JSON ({:?})", e.classify())
            } else {
                format!("{e}")
            },
        })
    }

    /// An error about this response's content (a missing field, ...).
    pub fn decode_error(&self, message: impl Into<String>) -> HttpError {
        HttpError::Decode {
            target: self.target.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            message: message.into(),
        }
    }
}
