//! The fake Covata Access Service against plain `reqwest`: it must enforce the contract of
//! `/work/shared/api/README.md`, or the connector tests that run against it prove nothing.

use std::time::{Duration, Instant};

use reqwest::multipart::{Form, Part};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

use crate::support::covata::{
    CLIENT_ID, CLIENT_SECRET, DEFAULT_PAGE_LIMIT, DEFAULT_TOKEN_TTL, FakeCovata, FakeUser, Fault,
    IMPORT_COLUMNS, MAX_PAGE_LIMIT, PASSWORD, PathMatch, ROLES, USERNAME,
};

/// A started fake, a client and a valid access token.
struct Api {
    fake: FakeCovata,
    http: Client,
    token: String,
}

impl Api {
    async fn new() -> Api {
        let fake = FakeCovata::start().await;
        let http = Client::new();
        let grant = password_grant(&fake, &http, PASSWORD).await;
        assert_eq!(grant.0, StatusCode::OK, "{}", grant.1);
        let token = grant.1["access_token"].as_str().unwrap().to_owned();
        Api { fake, http, token }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.fake.base_url())
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(&self.token)
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path)).bearer_auth(&self.token)
    }

    fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.put(self.url(path)).bearer_auth(&self.token)
    }

    fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.delete(self.url(path)).bearer_auth(&self.token)
    }

    async fn create(&self, body: Value) -> (StatusCode, Value) {
        read(self.post("/api/v1/users").json(&body).send().await.unwrap()).await
    }

    /// Creates a user that must succeed; returns its id.
    async fn create_ok(&self, email: &str, roles: &[&str]) -> String {
        let (status, body) = self.create(json!({"email": email, "roles": roles})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    async fn bulk(&self, action: &str, body: Value) -> (StatusCode, Value) {
        read(
            self.post("/api/v1/users/bulk")
                .query(&[("action", action)])
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn import(&self, csv: &str) -> (StatusCode, Value) {
        let part = Part::bytes(csv.as_bytes().to_vec())
            .file_name("users.csv")
            .mime_str("text/csv")
            .unwrap();
        let form = Form::new().part("file", part);
        read(
            self.post("/api/v1/users/import")
                .multipart(form)
                .send()
                .await
                .unwrap(),
        )
        .await
    }
}

/// The status and the JSON body (`Null` when the body is empty).
async fn read(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, body)
}

fn token_url(fake: &FakeCovata) -> String {
    format!("{}/api/oauth/token", fake.base_url())
}

async fn password_grant(fake: &FakeCovata, http: &Client, password: &str) -> (StatusCode, Value) {
    let response = http
        .post(token_url(fake))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "password"),
            ("username", USERNAME),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    read(response).await
}

async fn refresh_grant(fake: &FakeCovata, http: &Client, refresh: &str) -> (StatusCode, Value) {
    let response = http
        .post(token_url(fake))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .send()
        .await
        .unwrap();
    read(response).await
}

fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_default()
}

fn emails(fake: &FakeCovata) -> Vec<String> {
    fake.users().into_iter().map(|u| u.email).collect()
}

/// The error and its sources, for assertion messages.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(" <- ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Tokens.

#[tokio::test]
async fn password_grant_then_refresh_rotates_the_pair() {
    let fake = FakeCovata::start().await;
    let http = Client::new();

    let (status, grant) = password_grant(&fake, &http, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{grant}");
    assert_eq!(grant["token_type"], "bearer");
    assert_eq!(grant["expires_in"], DEFAULT_TOKEN_TTL.as_secs());
    let access = grant["access_token"].as_str().unwrap();
    let refresh = grant["refresh_token"].as_str().unwrap();
    assert!(access.len() >= 16 && refresh.len() >= 16 && access != refresh);

    let users = |token: String| {
        let http = http.clone();
        let url = format!("{}/api/v1/users", fake.base_url());
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(users(access.to_owned()).await, StatusCode::OK);

    let (status, renewed) = refresh_grant(&fake, &http, refresh).await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    let new_access = renewed["access_token"].as_str().unwrap();
    let new_refresh = renewed["refresh_token"].as_str().unwrap();
    assert_ne!(new_access, access);
    assert_ne!(new_refresh, refresh);
    assert_eq!(users(new_access.to_owned()).await, StatusCode::OK);

    // The old refresh token is spent.
    let (status, body) = refresh_grant(&fake, &http, refresh).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_grant");
    // The new one works once.
    let (status, _) = refresh_grant(&fake, &http, new_refresh).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fake.token_grants(), (1, 2));

    // Revoked refresh tokens force a new password grant.
    let (_, latest) = password_grant(&fake, &http, PASSWORD).await;
    fake.revoke_refresh_tokens();
    let latest_refresh = latest["refresh_token"].as_str().unwrap();
    let (status, body) = refresh_grant(&fake, &http, latest_refresh).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(fake.token_grants(), (2, 2));
}

#[tokio::test]
async fn token_endpoint_rejects_bad_credentials_and_requests() {
    let fake = FakeCovata::start().await;
    let http = Client::new();

    let (status, body) = password_grant(&fake, &http, "wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_grant");

    let wrong_client = http
        .post(token_url(&fake))
        .basic_auth(CLIENT_ID, Some("nope"))
        .form(&[
            ("grant_type", "password"),
            ("username", USERNAME),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    let (status, body) = read(wrong_client).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");

    // Client credentials in the form instead of HTTP Basic.
    let in_form = http
        .post(token_url(&fake))
        .form(&[
            ("grant_type", "password"),
            ("username", USERNAME),
            ("password", PASSWORD),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap();
    let (status, body) = read(in_form).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");

    // No client-credentials grant.
    let client_credentials = http
        .post(token_url(&fake))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let (status, body) = read(client_credentials).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "unsupported_grant_type");

    // A JSON body is not a form.
    let as_json = http
        .post(token_url(&fake))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .json(&json!({"grant_type": "password", "username": USERNAME, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let (status, body) = read(as_json).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_request");

    assert_eq!(fake.token_grants(), (0, 0));
}

#[tokio::test]
async fn api_calls_need_a_valid_unexpired_bearer_token() {
    let api = Api::new().await;
    let url = api.url("/api/v1/users");

    let no_token = api.http.get(&url).send().await.unwrap();
    assert!(no_token.headers().contains_key("www-authenticate"));
    let (status, body) = read(no_token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_token");

    let garbage = api.http.get(&url).bearer_auth("not-a-token").send();
    assert_eq!(garbage.await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let basic = api.http.get(&url).basic_auth(USERNAME, Some(PASSWORD));
    assert_eq!(
        basic.send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // Even unknown paths under /api/v1 want a token first.
    let unknown = api
        .http
        .get(api.url("/api/v1/groups"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        api.get("/api/v1/users").send().await.unwrap().status(),
        StatusCode::OK
    );
    // A write without a token changes nothing.
    let create = api
        .http
        .post(&url)
        .json(&json!({"email": "a@example.com", "roles": ["ROLE_COLLABORATOR"]}));
    assert_eq!(
        create.send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(api.fake.users().is_empty());

    // expire_all_tokens: the access token dies, the refresh token lives.
    let (_, grant) = password_grant(&api.fake, &api.http, PASSWORD).await;
    api.fake.expire_all_tokens();
    let (status, body) = read(api.get("/api/v1/users").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_token");
    let (status, renewed) = refresh_grant(
        &api.fake,
        &api.http,
        grant["refresh_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let renewed_token = renewed["access_token"].as_str().unwrap();
    let fresh = api.http.get(&url).bearer_auth(renewed_token).send();
    assert_eq!(fresh.await.unwrap().status(), StatusCode::OK);

    // A short TTL.
    api.fake.set_token_ttl(Duration::from_secs(1));
    let (_, short) = password_grant(&api.fake, &api.http, PASSWORD).await;
    assert_eq!(short["expires_in"], 1);
    let short_token = short["access_token"].as_str().unwrap().to_owned();
    let now = api.http.get(&url).bearer_auth(&short_token).send();
    assert_eq!(now.await.unwrap().status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = api
        .http
        .get(&url)
        .bearer_auth(&short_token)
        .send()
        .await
        .unwrap();
    let (status, body) = read(later).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_token");
    assert!(message(&body).contains("expired"), "{body}");

    // The record says which requests carried a valid token.
    let authorized: Vec<bool> = api
        .fake
        .requests_to("GET", "/api/v1/users")
        .into_iter()
        .map(|r| r.authorized)
        .collect();
    assert_eq!(
        authorized,
        [false, false, false, true, false, true, true, false]
    );
}

// ---------------------------------------------------------------------------------------------
// Create, read, update, delete.

#[tokio::test]
async fn create_returns_the_user_with_a_server_id() {
    let api = Api::new().await;
    let (status, body) = api
        .create(json!({
            "email": "Ann.Lee@Example.com",
            "firstName": "Ann",
            "lastName": "Lee",
            "otherName": "Annie",
            "mobileNumber": "+61 400 000 001",
            "roles": ["ROLE_ORIGINATOR", "ROLE_COLLABORATOR", "ROLE_COLLABORATOR"],
            "planId": "plan-7",
        }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap();
    assert_eq!(id.len(), 36, "UUID-like: {id}");
    assert_eq!(id.matches('-').count(), 4, "UUID-like: {id}");
    assert_eq!(body["enabled"], true);
    assert_eq!(body["accountNonLocked"], true);
    assert_eq!(body["numFailedLogins"], 0);
    assert_eq!(
        body["roles"],
        json!(["ROLE_COLLABORATOR", "ROLE_ORIGINATOR"])
    );
    assert_eq!(body["plan"]["id"], "plan-7");

    let users = api.fake.users();
    assert_eq!(users.len(), 1);
    let user = &users[0];
    assert_eq!(user.id, id);
    assert_eq!(user.email, "Ann.Lee@Example.com");
    assert_eq!(user.first_name.as_deref(), Some("Ann"));
    assert_eq!(user.last_name.as_deref(), Some("Lee"));
    assert_eq!(user.other_name.as_deref(), Some("Annie"));
    assert_eq!(user.mobile_number.as_deref(), Some("+61 400 000 001"));
    assert_eq!(user.plan_id.as_deref(), Some("plan-7"));
    assert_eq!(user.account_type, None);
    assert_eq!(user.roles, ["ROLE_COLLABORATOR", "ROLE_ORIGINATOR"]);
    assert!(user.enabled && user.account_non_locked);
    assert_eq!(
        api.fake.user_by_email("ann.lee@example.COM").as_ref(),
        Some(user)
    );
    assert_eq!(api.fake.user(id).as_ref(), Some(user));

    let (status, one) = read(
        api.get(&format!("/api/v1/users/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one, body);
    let (status, body) = read(api.get("/api/v1/users/no-such-id").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");

    // Optional fields may be absent.
    let minimal = api.create_ok("min@example.com", &["ROLE_USER_ADMIN"]).await;
    let minimal = api.fake.user(&minimal).unwrap();
    assert_eq!(minimal.first_name, None);
    assert_eq!(minimal.roles, ["ROLE_USER_ADMIN"]);
}

#[tokio::test]
async fn create_rejects_invalid_bodies_naming_the_problem() {
    let api = Api::new().await;
    let cases = [
        (json!({"roles": ["ROLE_COLLABORATOR"]}), "email"),
        (
            json!({"email": "", "roles": ["ROLE_COLLABORATOR"]}),
            "email",
        ),
        (
            json!({"email": "no-at-sign", "roles": ["ROLE_COLLABORATOR"]}),
            "email",
        ),
        (json!({"email": "a@example.com"}), "roles"),
        (json!({"email": "a@example.com", "roles": []}), "roles"),
        (
            json!({"email": "a@example.com", "roles": "ROLE_COLLABORATOR"}),
            "roles",
        ),
        (
            json!({"email": "a@example.com", "roles": ["ROLE_COLLABORATOR", "ROLE_ADMIN"]}),
            "ROLE_ADMIN",
        ),
        (
            json!({"email": "a@example.com", "roles": ["role_collaborator"]}),
            "role_collaborator",
        ),
        (
            json!({"email": "a@example.com", "roles": ["ROLE_COLLABORATOR"], "enabled": true}),
            "enabled",
        ),
        (
            json!({"email": "a@example.com", "roles": ["ROLE_COLLABORATOR"], "firstName": 5}),
            "firstName",
        ),
        (json!(["a@example.com"]), "object"),
    ];
    for (body, named) in cases {
        let (status, answer) = api.create(body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {answer}");
        assert!(message(&answer).contains(named), "{body} -> {answer}");
    }
    let broken = api
        .post("/api/v1/users")
        .header("content-type", "application/json")
        .body("{\"email\": ");
    assert_eq!(
        broken.send().await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    assert!(api.fake.users().is_empty());

    // Every documented role is accepted.
    let id = api.create_ok("all@example.com", &ROLES).await;
    assert_eq!(api.fake.user(&id).unwrap().roles.len(), ROLES.len());
}

#[tokio::test]
async fn create_with_a_taken_email_is_a_conflict() {
    let api = Api::new().await;
    let existing = api.fake.insert_user(FakeUser {
        first_name: Some("Pre".into()),
        ..FakeUser::new("Pre.Existing@example.com", &["ROLE_COLLABORATOR"])
    });
    api.create_ok("bob@example.com", &["ROLE_COLLABORATOR"])
        .await;

    for email in ["BOB@example.com", "pre.existing@EXAMPLE.com"] {
        let (status, body) = api
            .create(json!({"email": email, "roles": ["ROLE_ORIGINATOR"]}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"], "conflict");
        assert!(message(&body).contains("already exists"), "{body}");
        assert!(message(&body).contains(email), "{body}");
    }
    assert_eq!(
        emails(&api.fake),
        ["Pre.Existing@example.com", "bob@example.com"]
    );
    let pre = api.fake.user(&existing).unwrap();
    assert_eq!(pre.roles, ["ROLE_COLLABORATOR"]);
    assert_eq!(pre.first_name.as_deref(), Some("Pre"));
}

#[tokio::test]
async fn create_requires_a_json_content_type() {
    let api = Api::new().await;
    let body = r#"{"email":"a@example.com","roles":["ROLE_COLLABORATOR"]}"#;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = api.post("/api/v1/users").body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let (status, answer) = read(request.send().await.unwrap()).await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        assert_eq!(answer["error"], "unsupported_media_type");
    }
    assert!(api.fake.users().is_empty());
    let with_charset = api
        .post("/api/v1/users")
        .header("content-type", "application/json; charset=utf-8")
        .body(body);
    assert_eq!(
        with_charset.send().await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(emails(&api.fake), ["a@example.com"]);
}

#[tokio::test]
async fn update_replaces_roles_and_refuses_the_email() {
    let api = Api::new().await;
    let id = api
        .create_ok("ann@example.com", &["ROLE_COLLABORATOR", "ROLE_ORIGINATOR"])
        .await;
    let path = format!("/api/v1/users/{id}");
    let put = |body: Value| {
        let request = api.put(&path).json(&body);
        async move { read(request.send().await.unwrap()).await }
    };

    let (status, body) = put(json!({"email": "other@example.com"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&body).contains("email"), "{body}");
    // Nothing of a rejected body applies, even the valid parts.
    let (status, _) = put(json!({"firstName": "Nope", "roles": ["ROLE_NOPE"]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = put(json!({"roles": []})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = put(json!({"nickname": "x"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let user = api.fake.user(&id).unwrap();
    assert_eq!(user.email, "ann@example.com");
    assert_eq!(user.first_name, None);
    assert_eq!(user.roles, ["ROLE_COLLABORATOR", "ROLE_ORIGINATOR"]);

    let (status, body) = put(json!({
        "firstName": "Ann",
        "lastName": "Lee",
        "otherName": "A.",
        "mobileNumber": "+1 555 0100",
        "planId": 42,
        "roles": ["ROLE_USER_ADMIN"],
        "forceResetPassword": true,
    }))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["roles"], json!(["ROLE_USER_ADMIN"]));
    let user = api.fake.user(&id).unwrap();
    assert_eq!(user.roles, ["ROLE_USER_ADMIN"], "roles replace the set");
    assert_eq!(user.first_name.as_deref(), Some("Ann"));
    assert_eq!(user.plan_id.as_deref(), Some("42"));
    assert!(user.force_reset_password);

    // Absent fields stay; null clears.
    let (status, _) = put(json!({"otherName": null, "resetFailedLogins": true})).await;
    assert_eq!(status, StatusCode::OK);
    let user = api.fake.user(&id).unwrap();
    assert_eq!(user.other_name, None);
    assert_eq!(user.last_name.as_deref(), Some("Lee"));
    assert_eq!(user.num_failed_logins, 0);

    let wrong_type = api
        .put(&path)
        .header("content-type", "text/plain")
        .body("{}");
    assert_eq!(
        wrong_type.send().await.unwrap().status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let unknown = api
        .put("/api/v1/users/unknown-id")
        .json(&json!({"firstName": "X"}));
    assert_eq!(
        unknown.send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn delete_removes_the_user() {
    let api = Api::new().await;
    let gone = api
        .create_ok("gone@example.com", &["ROLE_COLLABORATOR"])
        .await;
    api.create_ok("stays@example.com", &["ROLE_COLLABORATOR"])
        .await;
    let path = format!("/api/v1/users/{gone}");
    assert_eq!(
        api.delete(&path).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(emails(&api.fake), ["stays@example.com"]);
    assert_eq!(
        api.delete(&path).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    // The email is free again.
    api.create_ok("GONE@example.com", &["ROLE_COLLABORATOR"])
        .await;
    assert_eq!(emails(&api.fake), ["stays@example.com", "GONE@example.com"]);
}

#[tokio::test]
async fn the_enable_toggle_flips_and_is_counted() {
    let api = Api::new().await;
    let id = api.create_ok("t@example.com", &["ROLE_COLLABORATOR"]).await;
    let path = format!("/api/v1/users/{id}/enable");
    let (status, body) = read(api.put(&path).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["enabled"], false);
    assert!(!api.fake.user(&id).unwrap().enabled);
    assert_eq!(
        api.put(&path).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert!(api.fake.user(&id).unwrap().enabled);
    let unknown = api.put("/api/v1/users/nobody/enable").send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(api.fake.toggle_calls(), 3);
}

// ---------------------------------------------------------------------------------------------
// Bulk actions.

#[tokio::test]
async fn bulk_rejects_missing_bodies_and_bad_actions() {
    let api = Api::new().await;
    let id = api.create_ok("a@example.com", &["ROLE_COLLABORATOR"]).await;
    let bulk = |query: &'static str| api.post(&format!("/api/v1/users/bulk{query}"));

    let cases = [
        (bulk("?action=disable"), StatusCode::BAD_REQUEST, "body"),
        (
            bulk("?action=disable").header("content-type", "application/json"),
            StatusCode::BAD_REQUEST,
            "body",
        ),
        (
            bulk("?action=disable").json(&json!([id])),
            StatusCode::BAD_REQUEST,
            "object",
        ),
        (
            bulk("?action=disable").json(&json!({"ids": [1, 2]})),
            StatusCode::BAD_REQUEST,
            "ids",
        ),
        (
            bulk("?action=disable").json(&json!({"ids": id})),
            StatusCode::BAD_REQUEST,
            "ids",
        ),
        (
            bulk("?action=disable").json(&json!({"users": [id]})),
            StatusCode::BAD_REQUEST,
            "users",
        ),
        (
            bulk("?action=lock").json(&json!({"ids": [id]})),
            StatusCode::BAD_REQUEST,
            "lock",
        ),
        (
            bulk("").json(&json!({"ids": [id]})),
            StatusCode::BAD_REQUEST,
            "action",
        ),
        (
            bulk("?action=disable&force=true").json(&json!({"ids": [id]})),
            StatusCode::BAD_REQUEST,
            "force",
        ),
        (
            bulk("?action=disable")
                .header("content-type", "text/plain")
                .body(format!("{{\"ids\":[\"{id}\"]}}")),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/json",
        ),
    ];
    for (i, (request, expected, named)) in cases.into_iter().enumerate() {
        let (status, body) = read(request.send().await.unwrap()).await;
        assert_eq!(status, expected, "case {i}: {body}");
        assert!(message(&body).contains(named), "case {i}: {body}");
    }
    assert!(api.fake.user(&id).unwrap().enabled);
    assert!(api.fake.bulk_batches().is_empty());

    // `{}` is the documented minimum: 200, nothing happens.
    let (status, body) = api.bulk("disable", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, Value::Null, "the answer has no body");
    assert!(api.fake.user(&id).unwrap().enabled);
    assert_eq!(api.fake.bulk_batches(), [("disable".to_owned(), 0)]);
}

#[tokio::test]
async fn bulk_actions_apply_to_known_ids() {
    let api = Api::new().await;
    let a = api.create_ok("a@example.com", &["ROLE_COLLABORATOR"]).await;
    let b = api.create_ok("b@example.com", &["ROLE_COLLABORATOR"]).await;
    let c = api.create_ok("c@example.com", &["ROLE_COLLABORATOR"]).await;

    let (status, _) = api
        .bulk("disable", json!({"ids": [a, b, "unknown-id"]}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let enabled: Vec<bool> = api.fake.users().iter().map(|u| u.enabled).collect();
    assert_eq!(enabled, [false, false, true]);

    assert_eq!(
        api.bulk("enable", json!({"ids": [b]})).await.0,
        StatusCode::OK
    );
    let enabled: Vec<bool> = api.fake.users().iter().map(|u| u.enabled).collect();
    assert_eq!(enabled, [false, true, true]);

    assert_eq!(
        api.bulk("expire", json!({"ids": [a, c]})).await.0,
        StatusCode::OK
    );
    assert_eq!(
        api.bulk("expire", json!({"ids": [c]})).await.0,
        StatusCode::OK
    );
    let expired: Vec<u32> = api
        .fake
        .users()
        .iter()
        .map(|u| u.sessions_expired)
        .collect();
    assert_eq!(expired, [1, 0, 2]);

    assert_eq!(
        api.bulk("resetPassword", json!({"ids": [b]})).await.0,
        StatusCode::OK
    );
    let b_user = api.fake.user(&b).unwrap();
    assert_eq!(b_user.password_resets, 1);
    assert!(b_user.force_reset_password);

    assert_eq!(
        api.bulk("delete", json!({"ids": [a, c]})).await.0,
        StatusCode::OK
    );
    assert_eq!(emails(&api.fake), ["b@example.com"]);

    assert_eq!(
        api.fake.bulk_batches(),
        [
            ("disable".to_owned(), 3),
            ("enable".to_owned(), 1),
            ("expire".to_owned(), 2),
            ("expire".to_owned(), 1),
            ("resetPassword".to_owned(), 1),
            ("delete".to_owned(), 2),
        ]
    );

    // A configured batch limit.
    api.fake.set_bulk_limit(Some(2));
    let (status, body) = api.bulk("disable", json!({"ids": [b, "x", "y"]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&body).contains("at most 2"), "{body}");
    assert!(api.fake.user(&b).unwrap().enabled);
    assert_eq!(
        api.bulk("disable", json!({"ids": [b, "x"]})).await.0,
        StatusCode::OK
    );
    assert!(!api.fake.user(&b).unwrap().enabled);
}

// ---------------------------------------------------------------------------------------------
// CSV import.

#[tokio::test]
async fn import_creates_good_rows_and_reports_bad_ones_by_line() {
    let api = Api::new().await;
    api.fake
        .insert_user(FakeUser::new("pre@example.com", &["ROLE_COLLABORATOR"]));
    // Header in another case; a quoted field spanning two physical lines (3-4).
    let csv = "email,FIRST NAME,Last Name,Mobile Number,role,Account Type,Plan\n\
               ann@example.com,Ann,Lee,+61 400 000 001,ROLE_COLLABORATOR,Standard,plan-1\n\
               bob@example.com,\"Bob\nRobert\",Ng,,ROLE_ORIGINATOR; ROLE_USER_ADMIN,,\n\
               cat@example.com,Cat,Wu,,ROLE_SUPERUSER,,\n\
               ANN@example.com,Ann,Again,,ROLE_COLLABORATOR,,\n\
               not-an-email,X,Y,,ROLE_COLLABORATOR,,\n\
               dan@example.com,Dan,Ho,,,,\n\
               Pre@Example.com,Pre,Dup,,ROLE_COLLABORATOR,,\n\
               eve@example.com,Eve,Park,,ROLE_COLLABORATOR\n\
               ,No,Email,,ROLE_COLLABORATOR,,\n\
               fay@example.com,Fay,Kim,,ROLE_ADHOC_COLLABORATOR,,\n";
    let (status, body) = api.import(csv).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let errors: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    let expected_prefixes = [
        "Line 5: cat@example.com: ",
        "Line 6: ANN@example.com: ",
        "Line 7: not-an-email: ",
        "Line 8: dan@example.com: ",
        "Line 9: Pre@Example.com: ",
        "Line 10: eve@example.com: ",
        "Line 11: : ",
    ];
    assert_eq!(errors.len(), expected_prefixes.len(), "{errors:#?}");
    for (error, prefix) in errors.iter().zip(expected_prefixes) {
        assert!(
            error.starts_with(prefix),
            "{error:?} should start with {prefix:?}"
        );
    }
    assert!(errors[0].contains("ROLE_SUPERUSER"), "{}", errors[0]);
    assert!(errors[1].contains("already exists"), "{}", errors[1]);
    assert!(errors[3].contains("Role"), "{}", errors[3]);
    assert!(errors[4].contains("already exists"), "{}", errors[4]);
    assert!(errors[5].contains("fields"), "{}", errors[5]);

    assert_eq!(
        emails(&api.fake),
        [
            "pre@example.com",
            "ann@example.com",
            "bob@example.com",
            "fay@example.com"
        ]
    );
    let ann = api.fake.user_by_email("ann@example.com").unwrap();
    assert_eq!(ann.first_name.as_deref(), Some("Ann"));
    assert_eq!(ann.mobile_number.as_deref(), Some("+61 400 000 001"));
    assert_eq!(ann.account_type.as_deref(), Some("Standard"));
    assert_eq!(ann.plan_id.as_deref(), Some("plan-1"));
    assert!(ann.enabled);
    let bob = api.fake.user_by_email("bob@example.com").unwrap();
    assert_eq!(bob.first_name.as_deref(), Some("Bob\nRobert"));
    assert_eq!(bob.roles, ["ROLE_ORIGINATOR", "ROLE_USER_ADMIN"]);
    assert_eq!(bob.account_type, None);
}

#[tokio::test]
async fn import_rejects_wrong_requests_and_headers() {
    let api = Api::new().await;
    let header = IMPORT_COLUMNS.join(",");
    let good = format!("{header}\nann@example.com,Ann,Lee,,ROLE_COLLABORATOR,,\n");

    // Not multipart.
    let as_csv = api
        .post("/api/v1/users/import")
        .header("content-type", "text/csv")
        .body(good.clone());
    assert_eq!(
        as_csv.send().await.unwrap().status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    // Multipart without a `file` part, or with another part.
    let no_file = Form::new().text("upload", good.clone());
    let (status, body) = read(
        api.post("/api/v1/users/import")
            .multipart(no_file)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&body).contains("upload"), "{body}");
    let empty = Form::new();
    let empty = api.post("/api/v1/users/import").multipart(empty);
    assert_eq!(
        empty.send().await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    // Headers other than the template.
    for csv in [
        "Email,First Name,Last Name,Role\nann@example.com,Ann,Lee,ROLE_COLLABORATOR\n".to_owned(),
        format!("{header},Department\nann@example.com,Ann,Lee,,ROLE_COLLABORATOR,,,Sales\n"),
        String::new(),
    ] {
        let (status, body) = api.import(&csv).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{csv:?}: {body}");
    }
    assert!(api.fake.users().is_empty());

    // The template itself, with a byte-order mark and CRLF line ends.
    let (status, body) = api
        .import(&format!("\u{feff}{}", good.replace('\n', "\r\n")))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"errors": []}));
    assert_eq!(emails(&api.fake), ["ann@example.com"]);
}

// ---------------------------------------------------------------------------------------------
// Listing.

#[tokio::test]
async fn list_pages_by_offset_and_limit_in_creation_order() {
    let api = Api::new().await;
    for i in 0..120 {
        api.fake.insert_user(FakeUser::new(
            &format!("user{i:03}@example.com"),
            &["ROLE_COLLABORATOR"],
        ));
    }
    let page = |query: &'static str| {
        let request = api.get(&format!("/api/v1/users{query}"));
        async move { read(request.send().await.unwrap()).await }
    };
    let page_emails = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["email"].as_str().unwrap().to_owned())
            .collect()
    };

    let (status, first) = page("").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["count"], 120);
    assert_eq!(first["offset"], 0);
    let got = page_emails(&first);
    assert_eq!(got.len(), DEFAULT_PAGE_LIMIT);
    assert_eq!(got[0], "user000@example.com");
    assert_eq!(got[49], "user049@example.com");
    assert!(first["items"][0]["id"].is_string());

    let (_, clamped) = page("?offset=0&limit=500").await;
    assert_eq!(page_emails(&clamped).len(), MAX_PAGE_LIMIT);
    let (_, tail) = page("?offset=100&limit=100").await;
    assert_eq!(tail["offset"], 100);
    assert_eq!(tail["count"], 120);
    let tail = page_emails(&tail);
    assert_eq!(tail.len(), 20);
    assert_eq!(tail[0], "user100@example.com");
    let (_, past) = page("?offset=500").await;
    assert!(page_emails(&past).is_empty());
    assert_eq!(past["count"], 120);

    // Filters apply before paging; `count` is the filtered total.
    let (_, filtered) = page("?email=1@EXAMPLE&limit=3&offset=1").await;
    assert_eq!(filtered["count"], 12);
    assert_eq!(
        page_emails(&filtered),
        [
            "user011@example.com",
            "user021@example.com",
            "user031@example.com"
        ]
    );

    for bad in ["?pageSize=10", "?limit=-1", "?offset=x", "?limit=5&limit=6"] {
        let (status, body) = page(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
}

// ---------------------------------------------------------------------------------------------
// Path ids.

#[tokio::test]
async fn ids_match_only_as_one_percent_encoded_segment() {
    let api = Api::new().await;
    let slash = api.fake.insert_user(FakeUser {
        id: "team/alpha one".into(),
        ..FakeUser::new("slash@example.com", &["ROLE_COLLABORATOR"])
    });
    let percent = api.fake.insert_user(FakeUser {
        id: "a%2Fb".into(),
        ..FakeUser::new("percent@example.com", &["ROLE_COLLABORATOR"])
    });
    assert_eq!(slash, "team/alpha one");
    assert_eq!(percent, "a%2Fb");

    // Encoded as one segment: found.
    let (status, body) = read(
        api.get("/api/v1/users/team%2Falpha%20one")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["email"], "slash@example.com");
    let (status, body) = read(api.get("/api/v1/users/a%252Fb").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["email"], "percent@example.com");

    // Raw: routes nowhere, or to another id.
    let raw = api
        .get("/api/v1/users/team/alpha%20one")
        .send()
        .await
        .unwrap();
    let (status, body) = read(raw).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(message(&body).contains("no route"), "{body}");
    let raw = api.get("/api/v1/users/a%2Fb").send().await.unwrap();
    let (status, body) = read(raw).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(message(&body).contains("\"a/b\""), "decoded to a/b: {body}");
    let raw_delete = api
        .delete("/api/v1/users/team/alpha%20one")
        .send()
        .await
        .unwrap();
    assert_eq!(raw_delete.status(), StatusCode::NOT_FOUND);
    // `team/enable` raw lands on the toggle's route, which has no GET.
    let raw_get = api.get("/api/v1/users/team/enable").send().await.unwrap();
    assert_eq!(raw_get.status(), StatusCode::METHOD_NOT_ALLOWED);

    // An unknown encoded id reaches the handler as one segment.
    let (status, body) = read(api.get("/api/v1/users/nobody%2Fhere").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(message(&body).contains("\"nobody/here\""), "{body}");

    // Deleting by the encoded id works; the raw request above changed nothing.
    assert_eq!(api.fake.users().len(), 2);
    let delete = api
        .delete("/api/v1/users/team%2Falpha%20one")
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::NO_CONTENT);
    assert_eq!(emails(&api.fake), ["percent@example.com"]);
    let recorded: Vec<String> = api
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path)
        .collect();
    assert_eq!(
        recorded,
        [
            "/api/v1/users/team/alpha%20one",
            "/api/v1/users/team%2Falpha%20one"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Recording.

#[tokio::test]
async fn every_request_is_recorded() {
    let fake = FakeCovata::start().await;
    let http = Client::new();
    let (_, grant) = password_grant(&fake, &http, PASSWORD).await;
    let token = grant["access_token"].as_str().unwrap();
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/api/oauth/token");
    assert_eq!(
        requests[0].content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert!(requests[0].body.contains("grant_type=password"));
    assert!(!requests[0].authorized);

    fake.clear_requests();
    let url = format!("{}/api/v1/users/bulk?action=expire", fake.base_url());
    let sent = http
        .post(url)
        .bearer_auth(token)
        .json(&json!({"ids": ["x"]}));
    assert_eq!(sent.send().await.unwrap().status(), StatusCode::OK);
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.query.as_deref()),
        ("POST", "/api/v1/users/bulk", Some("action=expire"))
    );
    assert_eq!(r.body, r#"{"ids":["x"]}"#);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    assert!(r.authorized);
}

// ---------------------------------------------------------------------------------------------
// Faults.

#[tokio::test]
async fn status_faults_fire_on_matching_requests_only() {
    let api = Api::new().await;
    let body = json!({"email": "a@example.com", "roles": ["ROLE_COLLABORATOR"]});

    api.fake.inject(
        "POST",
        "/api/v1/users",
        Fault::Status429 {
            retry_after: Some("2".into()),
        },
        1,
    );
    let response = api.post("/api/v1/users").json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "2");
    let (_, answer) = read(response).await;
    assert_eq!(answer["error"], "too_many_requests");
    assert!(api.fake.users().is_empty(), "a 429 applies nothing");
    assert_eq!(api.fake.pending_faults(), 0);
    api.create_ok("a@example.com", &["ROLE_COLLABORATOR"]).await;

    let date = "Wed, 21 Oct 2037 07:28:00 GMT";
    api.fake.inject(
        "*",
        PathMatch::prefix("/api/v1/"),
        Fault::Status429 {
            retry_after: Some(date.into()),
        },
        1,
    );
    let response = api.get("/api/v1/users").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], date);

    api.fake.inject(
        "GET",
        "/api/v1/users",
        Fault::Status429 { retry_after: None },
        1,
    );
    let response = api.get("/api/v1/users").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(!response.headers().contains_key("retry-after"));

    api.fake.inject(
        "POST",
        "/api/v1/users/bulk",
        Fault::Status503 {
            retry_after: Some("1".into()),
        },
        1,
    );
    let response = api
        .post("/api/v1/users/bulk?action=disable")
        .json(&json!({"ids": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");

    // Status(500) twice on the per-user path only.
    let id = api.fake.user_by_email("a@example.com").unwrap().id;
    api.fake.inject(
        "PUT",
        PathMatch::template("/api/v1/users/{id}"),
        Fault::Status(500),
        2,
    );
    let path = format!("/api/v1/users/{id}");
    let toggle = api.put(&format!("{path}/enable")).send().await.unwrap();
    assert_eq!(
        toggle.status(),
        StatusCode::OK,
        "the template has one segment after users/"
    );
    for _ in 0..2 {
        let (status, answer) = read(
            api.put(&path)
                .json(&json!({"firstName": "X"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(answer["error"], "server_error");
    }
    assert_eq!(
        api.fake.user(&id).unwrap().first_name,
        None,
        "a 500 applies nothing"
    );
    let third = api
        .put(&path)
        .json(&json!({"firstName": "X"}))
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), StatusCode::OK);
    assert_eq!(api.fake.user(&id).unwrap().first_name.as_deref(), Some("X"));

    // Exact `/api/v1/users` does not match `/api/v1/users/bulk`; a prefix does.
    api.fake
        .inject("POST", "/api/v1/users", Fault::Status(502), 1);
    let (status, _) = api.bulk("enable", json!({"ids": [id]})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api.fake.pending_faults(), 1);
    // Nor does another method.
    assert_eq!(
        api.get("/api/v1/users").send().await.unwrap().status(),
        StatusCode::OK
    );
    let (status, _) = api
        .create(json!({"email": "b@example.com", "roles": ["ROLE_COLLABORATOR"]}))
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(api.fake.pending_faults(), 0);
    api.fake.inject(
        "POST",
        PathMatch::prefix("/api/v1/users"),
        Fault::Status(500),
        1,
    );
    let (status, _) = api.bulk("enable", json!({"ids": [id]})).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);

    // The token endpoint can fail too.
    api.fake
        .inject("POST", "/api/oauth/token", Fault::Status(500), 1);
    let (status, _) = password_grant(&api.fake, &api.http, PASSWORD).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(emails(&api.fake), ["a@example.com"]);
}

#[tokio::test]
async fn latency_faults_delay_the_answer() {
    let api = Api::new().await;
    api.fake.inject(
        "GET",
        "/api/v1/users",
        Fault::Latency(Duration::from_millis(400)),
        1,
    );
    let started = Instant::now();
    assert_eq!(
        api.get("/api/v1/users").send().await.unwrap().status(),
        StatusCode::OK
    );
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );

    // The global latency applies to every request, the token endpoint included.
    api.fake.set_latency(Duration::from_millis(250));
    let started = Instant::now();
    let (status, _) = password_grant(&api.fake, &api.http, PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    api.create_ok("slow@example.com", &["ROLE_COLLABORATOR"])
        .await;
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    api.fake.set_latency(Duration::ZERO);
    assert_eq!(emails(&api.fake), ["slow@example.com"]);
}

#[tokio::test]
async fn drop_breaks_the_connection_and_applies_nothing() {
    let api = Api::new().await;
    // A pooled connection exists: the client must not silently retry on it.
    assert_eq!(
        api.get("/api/v1/users").send().await.unwrap().status(),
        StatusCode::OK
    );
    api.fake.inject("POST", "/api/v1/users", Fault::Drop, 1);
    let body = json!({"email": "a@example.com", "roles": ["ROLE_COLLABORATOR"]});
    let error = api
        .post("/api/v1/users")
        .json(&body)
        .send()
        .await
        .expect_err("a dropped connection is an error");
    assert!(
        error.is_request() && !error.is_timeout(),
        "{}",
        chain(&error)
    );
    assert!(
        chain(&error).contains("connection closed before message completed"),
        "{}",
        chain(&error)
    );
    assert!(api.fake.users().is_empty());
    let posts = api.fake.requests_to("POST", "/api/v1/users").len();
    assert_eq!(posts, 1, "received once, not retried by the client");

    // The same client carries on.
    api.create_ok("a@example.com", &["ROLE_COLLABORATOR"]).await;
    assert_eq!(emails(&api.fake), ["a@example.com"]);
}

#[tokio::test]
async fn drop_after_apply_takes_effect_but_never_answers() {
    let api = Api::new().await;
    api.fake
        .inject("POST", "/api/v1/users", Fault::DropAfterApply, 1);
    let body = json!({"email": "a@example.com", "roles": ["ROLE_COLLABORATOR"]});
    let error = api
        .post("/api/v1/users")
        .json(&body)
        .send()
        .await
        .expect_err("the answer is lost");
    assert!(
        error.is_request() && !error.is_timeout(),
        "{}",
        chain(&error)
    );
    let created = api
        .fake
        .user_by_email("a@example.com")
        .expect("the user was created");
    assert!(created.enabled);
    // A blind retry now conflicts.
    let (status, _) = api.create(body).await;
    assert_eq!(status, StatusCode::CONFLICT);

    api.fake.inject(
        "POST",
        PathMatch::prefix("/api/v1/users/bulk"),
        Fault::DropAfterApply,
        1,
    );
    let sent = api
        .post("/api/v1/users/bulk?action=disable")
        .json(&json!({"ids": [created.id]}))
        .send()
        .await;
    assert!(sent.is_err());
    assert!(!api.fake.user(&created.id).unwrap().enabled);
    assert_eq!(api.fake.bulk_batches(), [("disable".to_owned(), 1)]);
}
