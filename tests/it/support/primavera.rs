//! A fake Oracle Primavera Administration server (`/cloudapi/restapi`, the contract of
//! `/work/shared/api/README.md`, section "Oracle Primavera Administration"), strict enough that
//! a connector which breaks the contract fails against it.
//!
//! [`FakePrimavera::start`] binds `127.0.0.1:0` and serves from a dedicated thread with its own
//! tokio runtime (the fake keeps answering while a test blocks on a child process); dropping it
//! stops the server.
//!
//! What it enforces:
//! - HTTP Basic ([`USERNAME`] / [`PASSWORD`]) on every path, else 401.
//! - `POST /user` takes a JSON object with only `added` / `modified` / `deleted` arrays (at
//!   least one user in all); an added `User` must have `loginId`, `emailAddress`, `firstName`,
//!   `lastName` (non-empty strings), `disabled` (a boolean) and `organization` (an object with
//!   a `name`); roles must be objects `{"name": ..}`; unknown `User` fields are refused. Any of
//!   that wrong: 400 and no job. The answer is the job id as a plain body (`40870`), and with
//!   [`FakePrimavera::set_location_header`] also a `Location` header.
//! - One job at a time: a `POST /user` while a job runs is answered **409** with
//!   `{"message": "another user job is running: <id>"}` (the contract does not say which
//!   status; chosen here, and the connector also accepts a 400 saying so).
//! - A job runs for [`FakePrimavera::set_job_delay`] (default 200 ms): `GET /user/status/{id}`
//!   answers 202 until then, and 200 with the `UserDataStore` result after. The job's changes
//!   take effect when it completes (not at submit).
//! - Per-user outcomes in the job result: a duplicate `loginId`, an unknown role or
//!   organization, a modified/deleted user the server does not have, and injected failures
//!   ([`FakePrimavera::fail_next`]) leave the user out of `added` / `modified` (deletions go to
//!   `deleteFailed`), with a line `User <loginId>: <reason>` in `exception`.
//!   [`FakePrimavera::partial_next`] makes an addition succeed with a `statusInfo` note.
//! - `PUT /user/change-status`: a JSON array of `{loginId?, id, disabled}`; an unknown id (or
//!   a `loginId` that is not that user's) is left out of the `{"<id>": ""}` answer; a user
//!   that already has the status is not changed (and answered `""`).
//! - `GET /user` (all users, no paging), `GET /user/{loginId}` (404 if absent; the path
//!   segment is percent-decoded, so a login holding `/` only matches when encoded),
//!   `GET /roles`.
//!
//! Faults ([`FakePrimavera::inject`]) fire on the next N requests matching a method and a path
//! prefix (below the base path): the vocabulary of [`super::fake::Fault`] (429/503 with
//! `Retry-After`, any status, latency, a dropped connection before or after the change).

use std::collections::BTreeMap;

pub use super::fake::Fault;
use super::fake::PathMatch;
use super::fake::base64_encode;
use super::fake::prelude::*;

/// The API's base path (the configured base URL ends with it).
pub const BASE_PATH: &str = "/cloudapi/restapi";
/// The HTTP Basic user the tests configure.
pub const USERNAME: &str = "p6-admin";
/// Its password.
pub const PASSWORD: &str = "p6-s3cret!";
/// The tenant's roles (`GET /roles`).
pub const ROLES: [&str; 4] = [
    "PrimaveraUnifierProduction",
    "PrimaveraP6Production",
    "PrimaveraAdmin",
    "PrimaveraViewer",
];
/// The tenant's organizations (an added user must name one).
pub const ORGANIZATIONS: [&str; 2] = ["sfo", "nyc"];
/// The `User` fields the fake accepts in a job.
const USER_FIELDS: [&str; 14] = [
    "id",
    "loginId",
    "emailAddress",
    "firstName",
    "lastName",
    "middleName",
    "employeeNumber",
    "organization",
    "userType",
    "disabled",
    "roles",
    "manager",
    "startDate",
    "endDate",
];
const REQUIRED_TEXT: [&str; 4] = ["loginId", "emailAddress", "firstName", "lastName"];
const MAX_BODY: usize = 64 * 1024 * 1024;

/// A user as the fake holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeUser {
    /// Server-generated (a number as text) unless given to [`FakePrimavera::insert_user`].
    pub id: String,
    pub login_id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub middle_name: Option<String>,
    pub employee_number: Option<String>,
    /// The organization's name.
    pub organization: String,
    pub user_type: Option<String>,
    /// Sorted, without duplicates.
    pub roles: Vec<String>,
    pub disabled: bool,
}

impl FakeUser {
    /// An enabled user in organization `sfo` with these roles; the id is generated on
    /// insertion (set `id` to choose it).
    pub fn new(login_id: &str, email: &str, roles: &[&str]) -> FakeUser {
        FakeUser {
            id: String::new(),
            login_id: login_id.to_owned(),
            email: email.to_owned(),
            first_name: "First".to_owned(),
            last_name: "Last".to_owned(),
            middle_name: None,
            employee_number: None,
            organization: "sfo".to_owned(),
            user_type: None,
            roles: sorted(roles.iter().map(|r| (*r).to_owned()).collect()),
            disabled: false,
        }
    }

    fn to_json(&self, status_info: Option<&str>) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("loginId".into(), json!(self.login_id));
        m.insert("emailAddress".into(), json!(self.email));
        m.insert("firstName".into(), json!(self.first_name));
        m.insert("lastName".into(), json!(self.last_name));
        if let Some(v) = &self.middle_name {
            m.insert("middleName".into(), json!(v));
        }
        if let Some(v) = &self.employee_number {
            m.insert("employeeNumber".into(), json!(v));
        }
        let org_id = ORGANIZATIONS
            .iter()
            .position(|o| *o == self.organization)
            .map_or(0, |i| i + 1);
        m.insert(
            "organization".into(),
            json!({"id": org_id.to_string(), "name": self.organization, "displayName": self.organization.to_uppercase()}),
        );
        if let Some(v) = &self.user_type {
            m.insert("userType".into(), json!(v));
        }
        m.insert(
            "roles".into(),
            Value::Array(self.roles.iter().map(|r| json!({"name": r})).collect()),
        );
        m.insert("disabled".into(), json!(self.disabled));
        m.insert("locked".into(), json!(false));
        m.insert(
            "status".into(),
            json!(if self.disabled { "Disabled" } else { "Active" }),
        );
        if let Some(s) = status_info {
            m.insert("statusInfo".into(), json!(s));
            m.insert("statusInfoOK".into(), json!(!s.contains("but")));
            m.insert("lastAction".into(), json!("processed"));
        }
        Value::Object(m)
    }
}

fn sorted(mut roles: Vec<String>) -> Vec<String> {
    roles.sort();
    roles.dedup();
    roles
}

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// The raw path below [`BASE_PATH`], still percent-encoded (`/user/status/7`).
    pub path: String,
    /// The body, lossily decoded as UTF-8.
    pub body: String,
    pub authorized: bool,
}

impl RecordedRequest {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// What [`FakePrimavera::fail_next`] makes fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOp {
    Add,
    Modify,
    Delete,
}

struct Job {
    id: String,
    body: Map<String, Value>,
    ready_at: Instant,
    result: Option<Value>,
}

struct Inner {
    users: BTreeMap<u64, FakeUser>,
    next_id: u64,
    next_job: u64,
    jobs: Vec<Job>,
    job_delay: Duration,
    location_header: bool,
    requests: Vec<RecordedRequest>,
    faults: Faults,
    /// (operation, lowercased loginId, reason, how many more times).
    fail_next: Vec<(FailOp, String, String)>,
    /// (lowercased loginId, statusInfo) for the next addition.
    partial_next: Vec<(String, String)>,
    /// Sizes of accepted change-status calls.
    status_batches: Vec<usize>,
    /// 409s answered to a second concurrent job.
    busy_refusals: usize,
}

type Shared = Arc<Mutex<Inner>>;

impl Inner {
    fn new() -> Inner {
        Inner {
            users: BTreeMap::new(),
            next_id: 3000,
            next_job: 40870,
            jobs: Vec::new(),
            job_delay: Duration::from_millis(200),
            location_header: false,
            requests: Vec::new(),
            faults: Faults::default(),
            fail_next: Vec::new(),
            partial_next: Vec::new(),
            status_batches: Vec::new(),
            busy_refusals: 0,
        }
    }

    fn seq_by_id(&self, id: &str) -> Option<u64> {
        self.users.iter().find(|(_, u)| u.id == id).map(|(s, _)| *s)
    }

    fn seq_by_login(&self, login: &str) -> Option<u64> {
        self.users
            .iter()
            .find(|(_, u)| u.login_id.eq_ignore_ascii_case(login))
            .map(|(s, _)| *s)
    }

    fn insert(&mut self, mut user: FakeUser) -> String {
        if user.id.is_empty() {
            user.id = self.next_id.to_string();
        }
        self.next_id += 1;
        let seq = self.next_id;
        let id = user.id.clone();
        self.users.insert(seq, user);
        id
    }

    fn take_failure(&mut self, op: FailOp, login: &str) -> Option<String> {
        let lc = login.to_lowercase();
        let i = self
            .fail_next
            .iter()
            .position(|(o, l, _)| *o == op && *l == lc)?;
        Some(self.fail_next.remove(i).2)
    }

    /// Completes the running job if its time has come.
    fn tick(&mut self) {
        let now = Instant::now();
        let due: Vec<usize> = self
            .jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| j.result.is_none() && j.ready_at <= now)
            .map(|(i, _)| i)
            .collect();
        for i in due {
            let body = self.jobs[i].body.clone();
            let result = self.apply(&body);
            self.jobs[i].result = Some(result);
        }
    }

    fn running(&self) -> Option<&Job> {
        self.jobs.iter().find(|j| j.result.is_none())
    }

    /// Applies a job's `UserDataStore`; returns its result.
    fn apply(&mut self, body: &Map<String, Value>) -> Value {
        let list = |k: &str| -> Vec<Value> {
            body.get(k)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let mut added = Vec::new();
        let mut modified = Vec::new();
        let mut deleted = Vec::new();
        let mut delete_failed = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        let mut failed = 0usize;
        for u in list("added") {
            let login = text(&u, "loginId").unwrap_or_default();
            let outcome = (|| {
                if let Some(reason) = self.take_failure(FailOp::Add, &login) {
                    return Err(reason);
                }
                if self.seq_by_login(&login).is_some() {
                    return Err(format!("loginId {login} already exists"));
                }
                let user = user_from(&u, None)?;
                Ok(user)
            })();
            match outcome {
                Ok(user) => {
                    let info = match self
                        .partial_next
                        .iter()
                        .position(|(l, _)| *l == login.to_lowercase())
                    {
                        Some(i) => self.partial_next.remove(i).1,
                        None => "User created".to_string(),
                    };
                    let id = self.insert(user);
                    let seq = self.seq_by_id(&id).unwrap_or_default();
                    added.push(self.users[&seq].to_json(Some(&info)));
                }
                Err(reason) => {
                    failed += 1;
                    errors.push(format!("User {login}: {reason}"));
                }
            }
        }
        for u in list("modified") {
            let id = text(&u, "id");
            let login = text(&u, "loginId");
            let who = login.clone().or(id.clone()).unwrap_or_default();
            let seq = match &id {
                Some(id) => self.seq_by_id(id),
                None => login.as_deref().and_then(|l| self.seq_by_login(l)),
            };
            let outcome = (|| {
                if let Some(reason) = self.take_failure(FailOp::Modify, &who) {
                    return Err(reason);
                }
                let seq = seq.ok_or_else(|| "user not found".to_string())?;
                let current = self.users[&seq].clone();
                if let Some(l) = &login
                    && let Some(other) = self.seq_by_login(l)
                    && other != seq
                {
                    return Err(format!("loginId {l} already exists"));
                }
                let user = user_from(&u, Some(&current))?;
                Ok((seq, user))
            })();
            match outcome {
                Ok((seq, user)) => {
                    modified.push(user.to_json(Some("User updated")));
                    self.users.insert(seq, user);
                }
                Err(reason) => {
                    failed += 1;
                    errors.push(format!("User {who}: {reason}"));
                }
            }
        }
        for u in list("deleted") {
            let id = text(&u, "id");
            let login = text(&u, "loginId");
            let who = login.clone().or(id.clone()).unwrap_or_default();
            let seq = match &id {
                Some(id) => self.seq_by_id(id),
                None => login.as_deref().and_then(|l| self.seq_by_login(l)),
            };
            let outcome = (|| {
                if let Some(reason) = self.take_failure(FailOp::Delete, &who) {
                    return Err(reason);
                }
                seq.ok_or_else(|| "user not found".to_string())
            })();
            match outcome {
                Ok(seq) => {
                    if let Some(user) = self.users.remove(&seq) {
                        deleted.push(user.to_json(Some("User deleted")));
                    }
                }
                Err(reason) => {
                    failed += 1;
                    let mut f = u.clone();
                    if let Value::Object(m) = &mut f {
                        m.insert("statusInfo".into(), json!(reason));
                    }
                    delete_failed.push(f);
                }
            }
        }
        let total = list("added").len() + list("modified").len() + list("deleted").len();
        json!({
            "added": added,
            "modified": modified,
            "deleted": deleted,
            "deleteFailed": delete_failed,
            "exception": if errors.is_empty() { Value::Null } else { json!(errors.join("\n")) },
            "message": format!("{} of {total} users processed; {failed} failed", total - failed),
            "updatedIdMap": {},
        })
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A user built from a `User` object (over `base` for a modification); per-user problems
/// (unknown role / organization) are errors reported in the job result.
fn user_from(u: &Value, base: Option<&FakeUser>) -> Result<FakeUser, String> {
    let mut user = base.cloned().unwrap_or_else(|| FakeUser::new("", "", &[]));
    let get = |k: &str| text(u, k);
    if let Some(v) = get("loginId") {
        user.login_id = v;
    }
    if let Some(v) = get("emailAddress") {
        user.email = v;
    }
    if let Some(v) = get("firstName") {
        user.first_name = v;
    }
    if let Some(v) = get("lastName") {
        user.last_name = v;
    }
    if u.get("middleName").is_some() {
        user.middle_name = get("middleName").filter(|s| !s.is_empty());
    }
    if u.get("employeeNumber").is_some() {
        user.employee_number = get("employeeNumber").filter(|s| !s.is_empty());
    }
    if u.get("userType").is_some() {
        user.user_type = get("userType").filter(|s| !s.is_empty());
    }
    if let Some(org) = u
        .get("organization")
        .and_then(|o| o.get("name"))
        .and_then(Value::as_str)
    {
        if !ORGANIZATIONS.contains(&org) {
            return Err(format!("organization {org} not found"));
        }
        user.organization = org.to_string();
    }
    if let Some(d) = u.get("disabled").and_then(Value::as_bool) {
        user.disabled = d;
    }
    if let Some(Value::Array(roles)) = u.get("roles") {
        let mut names = Vec::new();
        for r in roles {
            let name = r.get("name").and_then(Value::as_str).unwrap_or("");
            if !ROLES.contains(&name) {
                return Err(format!("role {name} not found"));
            }
            names.push(name.to_string());
        }
        user.roles = sorted(names);
    }
    Ok(user)
}

/// Checks a `User` of a job (request-level: a problem is a 400 for the whole job).
fn check_user(list: &str, i: usize, u: &Value) -> Result<(), String> {
    let at = format!("{list}[{i}]");
    let Value::Object(m) = u else {
        return Err(format!("{at}: a User must be a JSON object"));
    };
    for k in m.keys() {
        if !USER_FIELDS.contains(&k.as_str()) {
            return Err(format!("{at}: unknown User field {k:?}"));
        }
    }
    let nonempty = |k: &str| match m.get(k) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(()),
        Some(_) => Err(format!("{at}.{k} must be a non-empty string")),
        None => Err(format!("{at}.{k} is required")),
    };
    match list {
        "added" => {
            for k in REQUIRED_TEXT {
                nonempty(k)?;
            }
            if !m.get("disabled").is_some_and(Value::is_boolean) {
                return Err(format!("{at}.disabled is required (a boolean)"));
            }
            if !m.contains_key("organization") {
                return Err(format!("{at}.organization is required"));
            }
            if m.contains_key("id") {
                return Err(format!("{at}: an added user cannot have an id"));
            }
        }
        "modified" => {
            nonempty("id")?;
            for k in REQUIRED_TEXT {
                if m.contains_key(k) {
                    nonempty(k)?;
                }
            }
            if m.get("disabled").is_some_and(|d| !d.is_boolean()) {
                return Err(format!("{at}.disabled must be a boolean"));
            }
        }
        _ => {
            nonempty("id")?;
        }
    }
    if let Some(org) = m.get("organization") {
        match org.get("name") {
            Some(Value::String(s)) if !s.is_empty() => {}
            _ => {
                return Err(format!("{at}.organization must be an object with a name"));
            }
        }
    }
    if let Some(roles) = m.get("roles") {
        let ok = roles.as_array().is_some_and(|a| {
            a.iter()
                .all(|r| r.get("name").is_some_and(Value::is_string))
        });
        if !ok {
            return Err(format!("{at}.roles must be an array of {{\"name\": ..}}"));
        }
    }
    Ok(())
}

/// The running fake. Dropping it stops the server.
pub struct FakePrimavera(Running<Inner>);

impl FakePrimavera {
    /// Starts the fake on `127.0.0.1:<free port>`.
    pub async fn start() -> FakePrimavera {
        FakePrimavera::start_on(Listener::bind("Primavera"))
    }

    /// Starts the fake on `listener` ([`Listener::bind_port`]).
    pub fn start_on(listener: Listener) -> FakePrimavera {
        FakePrimavera(Running::serve(listener, Inner::new(), router))
    }

    /// `http://127.0.0.1:PORT/cloudapi/restapi`.
    pub fn base_url(&self) -> String {
        format!("{}{BASE_PATH}", self.0.url())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        let mut inner = self.0.lock();
        inner.tick();
        inner
    }

    /// Every user (completed jobs applied), in creation order.
    pub fn users(&self) -> Vec<FakeUser> {
        self.lock().users.values().cloned().collect()
    }

    /// The user with this loginId (case-insensitive).
    pub fn user(&self, login: &str) -> Option<FakeUser> {
        let inner = self.lock();
        let seq = inner.seq_by_login(login)?;
        inner.users.get(&seq).cloned()
    }

    /// Adds a pre-existing user; returns its id. Panics on a duplicate loginId.
    pub fn insert_user(&self, user: FakeUser) -> String {
        let mut inner = self.lock();
        assert!(
            inner.seq_by_login(&user.login_id).is_none(),
            "fake Primavera: duplicate loginId {}",
            user.login_id
        );
        inner.insert(FakeUser {
            roles: sorted(user.roles.clone()),
            ..user
        })
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// The bodies of every accepted `POST /user` (job submission), in order.
    pub fn submitted_jobs(&self) -> Vec<Value> {
        self.lock()
            .jobs
            .iter()
            .map(|j| Value::Object(j.body.clone()))
            .collect()
    }

    /// Whether a job is running now.
    pub fn job_running(&self) -> bool {
        self.lock().running().is_some()
    }

    /// Sizes of the accepted change-status calls.
    pub fn status_batches(&self) -> Vec<usize> {
        self.lock().status_batches.clone()
    }

    /// How many job submissions were refused with 409 because a job was running.
    pub fn busy_refusals(&self) -> usize {
        self.lock().busy_refusals
    }

    /// How long a job runs (from now on; default 200 ms).
    pub fn set_job_delay(&self, delay: Duration) {
        self.lock().job_delay = delay;
    }

    /// Also answer a job submission with `Location: <base>/user/status/<id>`.
    pub fn set_location_header(&self, yes: bool) {
        self.lock().location_header = yes;
    }

    /// A delay added to every request.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().faults.latency = latency;
    }

    /// The next `op` of the user with this loginId (or id, for modifications and deletions
    /// sent without a loginId) fails in its job with `reason`.
    pub fn fail_next(&self, op: FailOp, login: &str, reason: &str) {
        self.lock()
            .fail_next
            .push((op, login.to_lowercase(), reason.to_owned()));
    }

    /// The next addition of this loginId succeeds with this `statusInfo` (partial success).
    pub fn partial_next(&self, login: &str, status_info: &str) {
        self.lock()
            .partial_next
            .push((login.to_lowercase(), status_info.to_owned()));
    }

    /// Applies `fault` to the next `times` requests with this method (`"*"`: any) whose path
    /// below [`BASE_PATH`] starts with `prefix`.
    pub fn inject(&self, method: &str, prefix: &str, fault: Fault, times: usize) {
        self.lock()
            .faults
            .inject("Primavera", method, PathMatch::prefix(prefix), fault, times);
    }

    /// How many fault firings are still pending.
    pub fn pending_faults(&self) -> usize {
        self.lock().faults.pending()
    }
}

// ---------------------------------------------------------------------------------------------
// Errors, routing and the front middleware (recording, Basic auth, latency, faults).

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    let mut r = (status, axum::Json(json!({"message": message}))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"cloudapi\""),
        );
    }
    r
}

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

fn router(shared: Shared) -> Router {
    let api = Router::new()
        .route("/user", get(list_users).post(submit_job))
        .route("/user/change-status", put(change_status))
        .route("/user/status/{job}", get(job_status))
        .route("/user/{login}", get(get_user))
        .route("/roles", get(list_roles))
        .fallback(|method: Method, uri: axum::http::Uri| async move {
            error(
                StatusCode::NOT_FOUND,
                format!("no route for {method} {}", uri.path()),
            )
        })
        .with_state(shared.clone());
    Router::new()
        .nest(BASE_PATH, api)
        .layer(middleware::from_fn_with_state(shared, front))
}

fn authorized(headers: &HeaderMap) -> bool {
    let expected = format!(
        "Basic {}",
        base64_encode(format!("{USERNAME}:{PASSWORD}").as_bytes())
    );
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected)
}

async fn front(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let incoming = match Incoming::read(request, MAX_BODY).await {
        Ok(incoming) => incoming,
        Err(e) => return bad_request(e),
    };
    let conn = incoming.conn.clone();
    let path = incoming
        .path
        .strip_prefix(BASE_PATH)
        .unwrap_or(&incoming.path)
        .to_owned();
    let auth = authorized(&incoming.parts.headers);
    let (latency, fault) = {
        let mut inner = lock(&shared);
        inner.tick();
        inner.requests.push(RecordedRequest {
            method: incoming.method.clone(),
            path: path.clone(),
            body: incoming.body_text(),
            authorized: auth,
        });
        let fault = inner.faults.take(&incoming.method, &path);
        (inner.faults.latency, fault)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match before_handler(fault.as_ref(), conn.as_ref(), fault_status).await {
        Before::Answer(response) | Before::Dropped(response) => return response,
        Before::Proceed => {}
    }
    if !auth {
        return error(
            StatusCode::UNAUTHORIZED,
            "authentication required (HTTP Basic)",
        );
    }
    let response = next.run(incoming.into_request()).await;
    lock(&shared).tick();
    after_handler(fault.as_ref(), conn.as_ref()).await;
    response
}

fn fault_status(status: StatusCode, retry_after: Option<&str>) -> Response {
    with_retry_after(
        error(status, format!("injected fault: {status}")),
        retry_after,
    )
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
}

// ---------------------------------------------------------------------------------------------
// Handlers.

async fn list_users(State(shared): State<Shared>) -> Response {
    let inner = lock(&shared);
    let all: Vec<Value> = inner.users.values().map(|u| u.to_json(None)).collect();
    axum::Json(Value::Array(all)).into_response()
}

async fn get_user(
    State(shared): State<Shared>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(login)) = path else {
        return bad_request("invalid loginId in path");
    };
    let inner = lock(&shared);
    match inner.seq_by_login(&login) {
        Some(seq) => axum::Json(inner.users[&seq].to_json(None)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("user {login} not found")),
    }
}

async fn list_roles() -> Response {
    axum::Json(Value::Array(
        ROLES.iter().map(|r| json!({"name": r})).collect(),
    ))
    .into_response()
}

async fn submit_job(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if !is_json(&headers) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        );
    }
    let store = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return bad_request("the body must be a UserDataStore object"),
        Err(e) => return bad_request(format!("malformed JSON: {e}")),
    };
    let mut total = 0;
    for (k, v) in &store {
        if !["added", "modified", "deleted"].contains(&k.as_str()) {
            return bad_request(format!("unknown UserDataStore field {k:?}"));
        }
        let Some(items) = v.as_array() else {
            return bad_request(format!("{k} must be an array"));
        };
        for (i, u) in items.iter().enumerate() {
            if let Err(m) = check_user(k, i, u) {
                return bad_request(m);
            }
        }
        total += items.len();
    }
    if total == 0 {
        return bad_request("the UserDataStore holds no user");
    }
    let mut inner = lock(&shared);
    inner.tick();
    if let Some(running) = inner.running() {
        let message = format!("another user job is running: {}", running.id);
        inner.busy_refusals += 1;
        return error(StatusCode::CONFLICT, message);
    }
    let id = inner.next_job.to_string();
    inner.next_job += 1;
    let ready_at = Instant::now() + inner.job_delay;
    inner.jobs.push(Job {
        id: id.clone(),
        body: store,
        ready_at,
        result: None,
    });
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain")],
        id.clone(),
    )
        .into_response();
    if inner.location_header
        && let Ok(v) = HeaderValue::from_str(&format!("{BASE_PATH}/user/status/{id}"))
    {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

async fn job_status(
    State(shared): State<Shared>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(job)) = path else {
        return bad_request("invalid job id in path");
    };
    let mut inner = lock(&shared);
    inner.tick();
    match inner.jobs.iter().find(|j| j.id == job) {
        None => error(StatusCode::NOT_FOUND, format!("job {job} not found")),
        Some(Job { result: None, .. }) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({"message": format!("job {job} is running")})),
        )
            .into_response(),
        Some(Job {
            result: Some(r), ..
        }) => axum::Json(r.clone()).into_response(),
    }
}

async fn change_status(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if !is_json(&headers) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        );
    }
    let items = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(a)) if !a.is_empty() => a,
        Ok(_) => return bad_request("the body must be a non-empty array of users"),
        Err(e) => return bad_request(format!("malformed JSON: {e}")),
    };
    for (i, u) in items.iter().enumerate() {
        if text(u, "id").is_none_or(|s| s.is_empty()) {
            return bad_request(format!("[{i}].id is required"));
        }
        if !u.get("disabled").is_some_and(Value::is_boolean) {
            return bad_request(format!("[{i}].disabled is required (a boolean)"));
        }
    }
    let mut inner = lock(&shared);
    inner.status_batches.push(items.len());
    let mut answer = Map::new();
    for u in &items {
        let id = text(u, "id").unwrap_or_default();
        let Some(seq) = inner.seq_by_id(&id) else {
            continue;
        };
        let Some(user) = inner.users.get_mut(&seq) else {
            continue;
        };
        if let Some(l) = text(u, "loginId")
            && !l.eq_ignore_ascii_case(&user.login_id)
        {
            continue;
        }
        let disabled = u.get("disabled").and_then(Value::as_bool).unwrap_or(false);
        // Same status: no change is made.
        user.disabled = disabled;
        answer.insert(id, json!(""));
    }
    axum::Json(Value::Object(answer)).into_response()
}
