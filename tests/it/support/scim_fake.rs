//! dirsync's own strict SCIM server, on the shared fake base: what a real server may not
//! enforce, switched per test ([`Strictness`]): ETags required (`If-Match` on every write,
//! 428 without, 412 on a stale one), a server without PATCH (501), Bulk with a small
//! `maxOperations`, pages of at most 50, creates answered 200. It records every exchange and
//! answers the shared fault vocabulary (429 with `Retry-After`, ...).

use std::collections::BTreeMap;

use super::fake::prelude::*;
use super::fake::{Fault, PathMatch};
use super::scim::TOKEN;

const MAX_BODY: usize = 8 * 1024 * 1024;

/// What the fake enforces and announces.
#[derive(Debug, Clone)]
pub struct Strictness {
    pub patch: bool,
    /// Writes need `If-Match` with the current version.
    pub etag_required: bool,
    /// `maxOperations` of Bulk (`None`: no Bulk).
    pub bulk_max_operations: Option<usize>,
    /// The most resources one page holds, whatever `count` asks.
    pub page_size: usize,
    /// The status of a successful `POST /Users` (201, or 200).
    pub create_status: u16,
}

impl Default for Strictness {
    fn default() -> Strictness {
        Strictness {
            patch: true,
            etag_required: false,
            bulk_max_operations: None,
            page_size: 50,
            create_status: 201,
        }
    }
}

/// One exchange.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    pub query: Option<String>,
    pub body: String,
    pub if_match: Option<String>,
    pub content_type: Option<String>,
    pub status: u16,
}

impl Exchange {
    /// The body as JSON (`Null` when empty).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// A write (anything but GET).
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }
}

struct Inner {
    strict: Strictness,
    users: BTreeMap<String, Value>,
    groups: BTreeMap<String, Value>,
    versions: BTreeMap<String, u64>,
    next_id: u64,
    exchanges: Vec<Exchange>,
    faults: Faults,
}

type Shared = Arc<Mutex<Inner>>;

pub struct FakeScim(Running<Inner>);

fn scim_error(status: u16, scim_type: Option<&str>, detail: &str) -> Response {
    let mut body = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": status.to_string(),
        "detail": detail,
    });
    if let Some(t) = scim_type {
        body["scimType"] = json!(t);
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        [(header::CONTENT_TYPE, "application/scim+json")],
        body.to_string(),
    )
        .into_response()
}

fn fault_status(status: StatusCode, retry_after: Option<&str>) -> Response {
    with_retry_after(scim_error(status.as_u16(), None, "injected"), retry_after)
}

impl FakeScim {
    pub async fn start(strict: Strictness) -> FakeScim {
        let inner = Inner {
            strict,
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
            versions: BTreeMap::new(),
            next_id: 1,
            exchanges: Vec::new(),
            faults: Faults::default(),
        };
        FakeScim(Running::serve(Listener::bind("scim"), inner, |shared| {
            Router::new().fallback(handle).with_state(shared)
        }))
    }

    /// The OAuth2 token endpoint (client `app`, secret `app-secret`).
    pub fn token_url(&self) -> String {
        format!("{}/token", self.0.url())
    }

    /// The SCIM base (`http://127.0.0.1:PORT/scim/v2`).
    pub fn base_url(&self) -> String {
        format!("{}/scim/v2", self.0.url())
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        self.0.lock().exchanges.clone()
    }

    pub fn clear_exchanges(&self) {
        self.0.lock().exchanges.clear();
    }

    /// The users, by userName.
    pub fn users(&self) -> BTreeMap<String, Value> {
        self.0
            .lock()
            .users
            .values()
            .map(|u| (u["userName"].as_str().unwrap_or("").to_string(), u.clone()))
            .collect()
    }

    /// The member ids of the group `name`, sorted.
    pub fn group_members(&self, name: &str) -> Vec<String> {
        let inner = self.0.lock();
        let mut v: Vec<String> = inner
            .groups
            .values()
            .filter(|g| g["displayName"] == name)
            .flat_map(|g| g["members"].as_array().cloned().unwrap_or_default())
            .filter_map(|m| m["value"].as_str().map(str::to_string))
            .collect();
        v.sort();
        v
    }

    /// Adds a group (id `g-<name>`) with these members.
    pub fn add_group(&self, name: &str, members: &[&str]) -> String {
        let mut inner = self.0.lock();
        let id = format!("g-{name}");
        let members: Vec<Value> = members.iter().map(|m| json!({ "value": m })).collect();
        inner.groups.insert(
            id.clone(),
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "id": id,
                   "displayName": name, "members": members}),
        );
        inner.versions.insert(id.clone(), 1);
        id
    }

    /// Changes the user `user_name` by hand (its version moves).
    pub fn edit_user(&self, user_name: &str, f: impl FnOnce(&mut Value)) {
        let mut inner = self.0.lock();
        let id = inner
            .users
            .iter()
            .find(|(_, u)| u["userName"] == user_name)
            .map(|(id, _)| id.clone())
            .unwrap_or_else(|| panic!("fake scim: no user {user_name}"));
        if let Some(u) = inner.users.get_mut(&id) {
            f(u);
        }
        bump(&mut inner, &id);
    }

    pub fn inject(&self, method: &str, path: impl Into<PathMatch>, fault: Fault, times: usize) {
        self.0
            .lock()
            .faults
            .inject("scim", method, path.into(), fault, times);
    }
}

fn with_meta(inner: &Inner, id: &str, mut r: Value) -> Value {
    let v = inner.versions.get(id).copied().unwrap_or(1);
    r["meta"] = json!({ "version": format!("W/\"{v}\"") });
    r
}

fn etag_of(inner: &Inner, id: &str) -> String {
    format!("W/\"{}\"", inner.versions.get(id).copied().unwrap_or(1))
}

fn json_response(status: u16, inner: &Inner, id: Option<&str>, body: Value) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut resp = (
        code,
        [(header::CONTENT_TYPE, "application/scim+json")],
        body.to_string(),
    )
        .into_response();
    if let Some(id) = id
        && let Ok(v) = HeaderValue::from_str(&etag_of(inner, id))
    {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// The string value of `attr eq "..."` (the value a JSON string, as RFC 7644 writes it).
fn eq_filter(filter: &str, attr: &str) -> Option<String> {
    let rest = filter.strip_prefix(attr)?.trim_start();
    let rest = rest.strip_prefix("eq")?.trim_start();
    serde_json::from_str::<String>(rest).ok()
}

fn query_map(query: Option<&str>) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// Sets `value` at a PATCH path (`attr`, `attr.sub`, `urn:...:attr`), or removes it.
fn set_path(r: &mut Value, path: &str, value: Option<Value>) {
    let (container, rest): (&mut Value, &str) = match path.rsplit_once(':') {
        Some((urn, attr)) if path.starts_with("urn:") => {
            if r.get(urn).is_none() {
                r[urn] = json!({});
            }
            (&mut r[urn], attr)
        }
        _ => (r, path),
    };
    let (obj, key) = match rest.split_once('.') {
        Some((a, sub)) => {
            if container.get(a).is_none() {
                container[a] = json!({});
            }
            (&mut container[a], sub)
        }
        None => (container, rest),
    };
    match (obj.as_object_mut(), value) {
        (Some(m), Some(v)) => {
            m.insert(key.to_string(), v);
        }
        (Some(m), None) => {
            m.remove(key);
        }
        _ => {}
    }
}

/// Applies a PatchOp body; `Err`: the SCIM error.
fn apply_patch(r: &mut Value, body: &Value) -> Result<(), Box<Response>> {
    let ops = body["Operations"]
        .as_array()
        .ok_or_else(|| Box::new(scim_error(400, Some("invalidSyntax"), "no Operations")))?;
    for op in ops {
        let path = op["path"].as_str().unwrap_or("");
        match (
            op["op"].as_str().unwrap_or("").to_lowercase().as_str(),
            path,
        ) {
            ("add", "members") => {
                let mut members = r["members"].as_array().cloned().unwrap_or_default();
                for m in op["value"].as_array().cloned().unwrap_or_default() {
                    if !members.iter().any(|x| x["value"] == m["value"]) {
                        members.push(json!({ "value": m["value"] }));
                    }
                }
                r["members"] = Value::Array(members);
            }
            ("remove", p) if p.starts_with("members[") => {
                let inner = p
                    .strip_prefix("members[")
                    .and_then(|p| p.strip_suffix(']'))
                    .unwrap_or("");
                let id = eq_filter(inner, "value")
                    .ok_or_else(|| Box::new(scim_error(400, Some("invalidFilter"), p)))?;
                if let Some(members) = r["members"].as_array_mut() {
                    members.retain(|m| m["value"] != id.as_str());
                }
            }
            ("replace", "") | ("add", "") => {
                return Err(Box::new(scim_error(
                    400,
                    Some("noTarget"),
                    "path-less operations are not supported",
                )));
            }
            ("replace", p) => set_path(r, p, Some(op["value"].clone())),
            ("remove", p) => set_path(r, p, None),
            (other, _) => {
                return Err(Box::new(scim_error(
                    400,
                    Some("invalidSyntax"),
                    &format!("op {other}"),
                )));
            }
        }
    }
    Ok(())
}

/// The whole request, recorded, faults and auth applied, then dispatched.
async fn handle(State(shared): State<Shared>, request: Request) -> Response {
    let incoming = match Incoming::read(request, MAX_BODY).await {
        Ok(i) => i,
        Err(e) => return scim_error(400, None, &e),
    };
    let headers = incoming.parts.headers.clone();
    let query = incoming.parts.uri.query().map(str::to_owned);
    let (fault, index) = {
        let mut inner = lock(&shared);
        inner.exchanges.push(Exchange {
            method: incoming.method.clone(),
            path: incoming.path.clone(),
            query: query.clone(),
            body: incoming.body_text(),
            if_match: headers
                .get(header::IF_MATCH)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            content_type: content_type(&headers).map(str::to_owned),
            status: 0,
        });
        let index = inner.exchanges.len() - 1;
        let fault = inner.faults.take(&incoming.method, &incoming.path);
        (fault, index)
    };
    let conn = incoming.conn.clone();
    let record = |status: StatusCode| {
        if let Some(e) = lock(&shared).exchanges.get_mut(index) {
            e.status = status.as_u16();
        }
    };
    match before_handler(fault.as_ref(), conn.as_ref(), fault_status).await {
        Before::Answer(r) => {
            record(r.status());
            return r;
        }
        Before::Dropped(r) => return r,
        Before::Proceed => {}
    }
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(format!("Bearer {TOKEN}").as_str());
    let response = if incoming.path == "/token" {
        // An OAuth2 token endpoint: client credentials `app` / `app-secret` get the token.
        let form: BTreeMap<String, String> = url::form_urlencoded::parse(&incoming.body)
            .into_owned()
            .collect();
        let ok = form.get("grant_type").map(String::as_str) == Some("client_credentials")
            && form.get("client_id").map(String::as_str) == Some("app")
            && form.get("client_secret").map(String::as_str) == Some("app-secret");
        if ok {
            let body = json!({"access_token": TOKEN, "token_type": "Bearer", "expires_in": 3600});
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response()
        } else {
            (StatusCode::UNAUTHORIZED, "invalid_client").into_response()
        }
    } else if !authorized {
        scim_error(401, None, "bad token")
    } else {
        let body: Value = serde_json::from_slice(&incoming.body).unwrap_or(Value::Null);
        let path = incoming
            .path
            .strip_prefix("/scim/v2")
            .unwrap_or(&incoming.path)
            .to_string();
        let if_match = headers
            .get(header::IF_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut inner = lock(&shared);
        dispatch(
            &mut inner,
            &incoming.method,
            &path,
            query.as_deref(),
            &body,
            if_match.as_deref(),
        )
    };
    if after_handler(fault.as_ref(), conn.as_ref()).await {
        return response;
    }
    record(response.status());
    response
}

fn check_if_match(inner: &Inner, id: &str, if_match: Option<&str>) -> Result<(), Box<Response>> {
    if !inner.strict.etag_required {
        return Ok(());
    }
    match if_match {
        None => Err(Box::new(scim_error(428, None, "If-Match required"))),
        Some(v) if v == etag_of(inner, id) => Ok(()),
        Some(_) => Err(Box::new(scim_error(
            412,
            None,
            "Failed to update. Resource has changed on the server",
        ))),
    }
}

fn bump(inner: &mut Inner, id: &str) {
    *inner.versions.entry(id.to_string()).or_insert(1) += 1;
}

fn dispatch(
    inner: &mut Inner,
    method: &str,
    path: &str,
    query: Option<&str>,
    body: &Value,
    if_match: Option<&str>,
) -> Response {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segs.as_slice()) {
        ("GET", ["ServiceProviderConfig"]) => {
            let bulk = match inner.strict.bulk_max_operations {
                Some(n) => {
                    json!({"supported": true, "maxOperations": n, "maxPayloadSize": 1_048_576})
                }
                None => json!({"supported": false}),
            };
            json_response(
                200,
                inner,
                None,
                json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
                    "patch": {"supported": inner.strict.patch},
                    "bulk": bulk,
                    "filter": {"supported": true, "maxResults": 200},
                    "etag": {"supported": true},
                    "sort": {"supported": false},
                }),
            )
        }
        ("GET", [kind @ ("Users" | "Groups")]) => {
            let q = query_map(query);
            let (attr, store) = if *kind == "Users" {
                ("userName", &inner.users)
            } else {
                ("displayName", &inner.groups)
            };
            let mut all: Vec<&Value> = store.values().collect();
            if let Some(f) = q.get("filter") {
                let Some(v) = eq_filter(f, attr) else {
                    return scim_error(400, Some("invalidFilter"), f);
                };
                all.retain(|r| r[attr].as_str().is_some_and(|x| x.eq_ignore_ascii_case(&v)));
            }
            let start: usize = q
                .get("startIndex")
                .and_then(|s| s.parse().ok())
                .unwrap_or(1)
                .max(1);
            let count: usize = q.get("count").and_then(|s| s.parse().ok()).unwrap_or(100);
            let count = count.min(inner.strict.page_size);
            let page: Vec<Value> = all
                .iter()
                .skip(start - 1)
                .take(count)
                .map(|r| with_meta(inner, r["id"].as_str().unwrap_or(""), (*r).clone()))
                .collect();
            json_response(
                200,
                inner,
                None,
                json!({
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                    "totalResults": all.len(), "startIndex": start, "itemsPerPage": page.len(),
                    "Resources": page,
                }),
            )
        }
        ("GET", [kind @ ("Users" | "Groups"), id]) => {
            let store = if *kind == "Users" {
                &inner.users
            } else {
                &inner.groups
            };
            match store.get(*id) {
                Some(r) => json_response(200, inner, Some(id), with_meta(inner, id, r.clone())),
                None => scim_error(404, None, "no such resource"),
            }
        }
        ("POST", [kind @ ("Users" | "Groups")]) => {
            let attr = if *kind == "Users" {
                "userName"
            } else {
                "displayName"
            };
            let Some(name) = body[attr].as_str().filter(|s| !s.is_empty()) else {
                return scim_error(400, Some("invalidValue"), &format!("{attr} is required"));
            };
            let store = if *kind == "Users" {
                &inner.users
            } else {
                &inner.groups
            };
            if store.values().any(|r| {
                r[attr]
                    .as_str()
                    .is_some_and(|x| x.eq_ignore_ascii_case(name))
            }) {
                return scim_error(409, Some("uniqueness"), &format!("{attr} {name} is taken"));
            }
            let id = format!(
                "{}{}",
                if *kind == "Users" { "u" } else { "g" },
                inner.next_id
            );
            inner.next_id += 1;
            let mut r = body.clone();
            r["id"] = json!(id);
            inner.versions.insert(id.clone(), 1);
            if *kind == "Users" {
                inner.users.insert(id.clone(), r.clone());
            } else {
                inner.groups.insert(id.clone(), r.clone());
            }
            let status = if *kind == "Users" {
                inner.strict.create_status
            } else {
                201
            };
            json_response(status, inner, Some(&id), with_meta(inner, &id, r))
        }
        ("PATCH" | "PUT", [kind @ ("Users" | "Groups"), id]) => {
            if method == "PATCH" && !inner.strict.patch {
                return scim_error(501, None, "PATCH is not supported");
            }
            let exists = if *kind == "Users" {
                inner.users.contains_key(*id)
            } else {
                inner.groups.contains_key(*id)
            };
            if !exists {
                return scim_error(404, None, "no such resource");
            }
            if let Err(r) = check_if_match(inner, id, if_match) {
                return *r;
            }
            let store = if *kind == "Users" {
                &mut inner.users
            } else {
                &mut inner.groups
            };
            let Some(r) = store.get_mut(*id) else {
                return scim_error(404, None, "no such resource");
            };
            if method == "PATCH" {
                if let Err(e) = apply_patch(r, body) {
                    return *e;
                }
            } else {
                let mut new = body.clone();
                new["id"] = json!(id);
                if let Some(m) = new.as_object_mut() {
                    m.remove("meta");
                }
                *r = new;
            }
            bump(inner, id);
            let mut resp = StatusCode::NO_CONTENT.into_response();
            if let Ok(v) = HeaderValue::from_str(&etag_of(inner, id)) {
                resp.headers_mut().insert(header::ETAG, v);
            }
            resp
        }
        ("DELETE", ["Users", id]) => {
            if !inner.users.contains_key(*id) {
                return scim_error(404, None, "no such user");
            }
            if let Err(r) = check_if_match(inner, id, if_match) {
                return *r;
            }
            inner.users.remove(*id);
            StatusCode::NO_CONTENT.into_response()
        }
        ("POST", ["Bulk"]) => {
            let Some(max) = inner.strict.bulk_max_operations else {
                return scim_error(501, None, "Bulk is not supported");
            };
            let ops = body["Operations"].as_array().cloned().unwrap_or_default();
            if ops.len() > max {
                return scim_error(413, Some("tooMany"), &format!("at most {max} operations"));
            }
            let mut answers = Vec::new();
            for op in ops {
                let m = op["method"].as_str().unwrap_or("");
                let p = op["path"].as_str().unwrap_or("");
                // Bulk operations carry their version in `version`, not a header.
                let version = op["version"].as_str().map(str::to_owned);
                let id = p.rsplit('/').next().unwrap_or("").to_string();
                let saved = inner.strict.etag_required;
                inner.strict.etag_required = saved && version.is_some();
                let r = dispatch(inner, m, p, None, &op["data"], version.as_deref());
                inner.strict.etag_required = saved;
                let mut a =
                    json!({"method": m, "location": p, "status": r.status().as_u16().to_string()});
                if let Some(b) = op.get("bulkId") {
                    a["bulkId"] = b.clone();
                }
                if r.status().is_success() && inner.versions.contains_key(&id) {
                    a["version"] = json!(etag_of(inner, &id));
                }
                answers.push(a);
            }
            json_response(
                200,
                inner,
                None,
                json!({
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkResponse"],
                    "Operations": answers,
                }),
            )
        }
        _ => scim_error(404, None, &format!("no route {method} {path}")),
    }
}
