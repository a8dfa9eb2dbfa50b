//! Primavera's wire format: `User` bodies built from accounts, the `UserDataStore` of a job,
//! job ids, job results matched back to the users sent, the change-status answer, and user
//! records parsed into remote accounts. Pure.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value, json};

use crate::connector::api::{OpError, RemoteAccount};
use crate::connector::http::truncate_body;
use crate::model::email_eq;

/// `User` fields sent as JSON strings, in the mapping's names (= the API's names).
pub(crate) const TEXT_FIELDS: [&str; 7] = [
    "loginId",
    "emailAddress",
    "firstName",
    "lastName",
    "middleName",
    "employeeNumber",
    "userType",
];

/// The mapped field sent as an object `{"name": value}`.
pub(crate) const ORGANIZATION: &str = "organization";

/// The `UserDataStore` arrays the server fills when a job is done.
pub(crate) const RESULT_LISTS: [&str; 3] = ["added", "modified", "deleted"];

/// One `User` body: the mapped text fields, the organization as `{"name": ..}`, `disabled`,
/// the server id when known, and the roles as `[{"name": ..}]` when `roles` is given (ASSUMED:
/// a modification without `roles` leaves the user's roles as they are; the README says roles
/// "when sent, replace").
pub(crate) fn user_body(
    fields: &BTreeMap<String, String>,
    enabled: bool,
    id: Option<&str>,
    roles: Option<&BTreeSet<String>>,
) -> Value {
    let mut m = Map::new();
    if let Some(id) = id {
        m.insert("id".into(), Value::String(id.to_string()));
    }
    for f in TEXT_FIELDS {
        if let Some(v) = fields.get(f) {
            m.insert(f.into(), Value::String(v.clone()));
        }
    }
    if let Some(org) = fields.get(ORGANIZATION) {
        m.insert(ORGANIZATION.into(), json!({ "name": org }));
    }
    m.insert("disabled".into(), Value::Bool(!enabled));
    if let Some(roles) = roles {
        m.insert("roles".into(), roles_value(roles));
    }
    Value::Object(m)
}

/// `[{"name": r}, ...]`.
pub(crate) fn roles_value<'a>(roles: impl IntoIterator<Item = &'a String>) -> Value {
    Value::Array(roles.into_iter().map(|r| json!({ "name": r })).collect())
}

/// An item of the `deleted` list (kept in this one place: the public excerpts do not show
/// its type): a `User` with `loginId` (when known) and `id`.
pub(crate) fn delete_item(login: Option<&str>, id: &str) -> Value {
    let mut m = Map::new();
    if let Some(l) = login {
        m.insert("loginId".into(), Value::String(l.to_string()));
    }
    m.insert("id".into(), Value::String(id.to_string()));
    Value::Object(m)
}

/// The `POST /user` body. All three arrays are always present.
pub(crate) fn store_body(added: Vec<Value>, modified: Vec<Value>, deleted: Vec<Value>) -> Value {
    json!({ "added": added, "modified": modified, "deleted": deleted })
}

/// The `PUT /user/change-status` body.
pub(crate) fn status_body(items: &[(Option<&str>, &str)], disabled: bool) -> Value {
    Value::Array(
        items
            .iter()
            .map(|(login, id)| {
                let mut m = Map::new();
                if let Some(l) = login {
                    m.insert("loginId".into(), Value::String((*l).to_string()));
                }
                m.insert("id".into(), Value::String((*id).to_string()));
                m.insert("disabled".into(), Value::Bool(disabled));
                Value::Object(m)
            })
            .collect(),
    )
}

/// The job id of a `POST /user` answer: the last path segment of a `Location` header when one
/// is sent, else the body: a bare number or string (`40870`, `"40870"`), or an object with
/// `jobId` / `id`.
pub(crate) fn job_id(body: &[u8], location: Option<&str>) -> Option<String> {
    if let Some(loc) = location {
        let path = loc.split(['?', '#']).next().unwrap_or("");
        if let Some(last) = path.trim_end_matches('/').rsplit('/').next()
            && !last.is_empty()
        {
            let decoded = percent_encoding::percent_decode_str(last)
                .decode_utf8_lossy()
                .into_owned();
            return Some(decoded);
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let id = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => ["jobId", "jobid", "id"]
            .iter()
            .find_map(|k| m.get(*k).and_then(scalar_string)),
        Ok(v) => scalar_string(&v),
        Err(_) => Some(text.to_string()),
    }?;
    let id = id.trim().to_string();
    (!id.is_empty() && !id.contains(char::is_whitespace)).then_some(id)
}

/// The answer of `GET /user/status/{jobId}` with 200: a `UserDataStore`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct JobResult {
    /// `added`, `modified`, `deleted`: the users as the server now has them.
    pub lists: [Vec<Value>; 3],
    pub delete_failed: Vec<Value>,
    pub exception: Option<String>,
    pub message: Option<String>,
}

/// Which list of a job a user was sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListKind {
    Added = 0,
    Modified = 1,
    Deleted = 2,
}

/// Parses a finished job's answer. Missing arrays are empty; `exception` and `message` are
/// read as text whatever their JSON type.
pub(crate) fn job_result(body: &Value) -> Result<JobResult, String> {
    let Value::Object(m) = body else {
        return Err("the job result is not a JSON object (UserDataStore)".into());
    };
    let list = |k: &str| -> Result<Vec<Value>, String> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(_) => Err(format!("the job result's {k:?} is not an array")),
        }
    };
    let text = |k: &str| -> Option<String> {
        match m.get(k)? {
            Value::Null => None,
            Value::String(s) if s.trim().is_empty() => None,
            Value::String(s) => Some(s.trim().to_string()),
            other => Some(other.to_string()),
        }
    };
    Ok(JobResult {
        lists: [list("added")?, list("modified")?, list("deleted")?],
        delete_failed: list("deleteFailed")?,
        exception: text("exception"),
        message: text("message"),
    })
}

/// A user as it was sent in a job: how to find it in the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sent {
    pub kind: ListKind,
    pub login: Option<String>,
    pub id: Option<String>,
}

fn same_user(v: &Value, sent: &Sent) -> bool {
    match v {
        Value::Object(m) => {
            let id = m.get("id").and_then(scalar_string);
            if let (Some(a), Some(b)) = (id.as_deref(), sent.id.as_deref())
                && !a.is_empty()
            {
                return a == b;
            }
            let login = m.get("loginId").and_then(scalar_string);
            matches!((login.as_deref(), sent.login.as_deref()), (Some(a), Some(b)) if email_eq(a, b))
        }
        // `deleteFailed` may hold bare ids or logins.
        other => scalar_string(other).is_some_and(|s| {
            sent.id.as_deref() == Some(s.as_str())
                || sent.login.as_deref().is_some_and(|l| email_eq(l, &s))
        }),
    }
}

/// What the job did with one user it was sent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum UserOutcome {
    /// In its result list: the user as the server has it, and a partial-success note.
    Done {
        user: Value,
        note: Option<String>,
    },
    Failed(OpError),
}

/// The outcome of `sent` in a finished job. A deletion in `deleteFailed`, or any user absent
/// from its list, failed; the error quotes what the job said about it (`exception`,
/// `message`, its `statusInfo`). Duplicate wording on an addition is a `Conflict`.
pub(crate) fn outcome(job: &str, result: &JobResult, sent: &Sent) -> UserOutcome {
    let who = sent
        .login
        .as_deref()
        .or(sent.id.as_deref())
        .unwrap_or("(unknown)");
    if sent.kind == ListKind::Deleted
        && let Some(f) = result.delete_failed.iter().find(|v| same_user(v, sent))
    {
        let detail = status_info(f);
        return UserOutcome::Failed(failure(job, result, sent, who, "in deleteFailed", detail));
    }
    match result.lists[sent.kind as usize]
        .iter()
        .find(|v| same_user(v, sent))
    {
        Some(user) => UserOutcome::Done {
            user: user.clone(),
            note: note(user),
        },
        None => UserOutcome::Failed(failure(
            job,
            result,
            sent,
            who,
            &format!(
                "not in the job's {:?} list",
                RESULT_LISTS[sent.kind as usize]
            ),
            None,
        )),
    }
}

fn failure(
    job: &str,
    result: &JobResult,
    sent: &Sent,
    who: &str,
    why: &str,
    detail: Option<String>,
) -> OpError {
    let mut said: Vec<String> = detail.into_iter().collect();
    for text in [&result.exception, &result.message].into_iter().flatten() {
        // Prefer the parts that name this user; else quote the whole text.
        let parts: Vec<&str> = text
            .split(['\n', ';'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        let mine: Vec<&str> = parts
            .iter()
            .copied()
            .filter(|p| {
                let lc = p.to_lowercase();
                [sent.login.as_deref(), sent.id.as_deref()]
                    .into_iter()
                    .flatten()
                    .any(|k| !k.is_empty() && lc.contains(&k.to_lowercase()))
            })
            .collect();
        if mine.is_empty() {
            said.push(text.clone());
        } else {
            said.push(mine.join("; "));
        }
    }
    let mut message = format!("job {job}: user {who} failed ({why})");
    if !said.is_empty() {
        message.push_str(": ");
        message.push_str(&said.join(" | "));
    }
    let message = truncate_body(message.as_bytes());
    if sent.kind == ListKind::Added && said.iter().any(|s| is_duplicate_message(s)) {
        OpError::Conflict { message }
    } else {
        OpError::Rejected {
            status: 200,
            message,
        }
    }
}

/// Duplicate wording ("duplicate", "already ...", "... exists" but not "does not exist").
pub(crate) fn is_duplicate_message(text: &str) -> bool {
    let lc = text.to_lowercase();
    lc.contains("duplicate")
        || lc.contains("already")
        || (lc.contains("exists") && !lc.contains("not exist"))
}

fn status_info(user: &Value) -> Option<String> {
    user.get("statusInfo")
        .and_then(scalar_string)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// A partial success to report: the user's `statusInfo` unless `statusInfoOK` is `true`
/// (ASSUMED: a server that fills `statusInfo` on every success also sets `statusInfoOK`).
pub(crate) fn note(user: &Value) -> Option<String> {
    if user.get("statusInfoOK").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    status_info(user)
}

/// The server id of a user in a job result.
pub(crate) fn user_id(user: &Value) -> Option<String> {
    user.get("id")
        .and_then(scalar_string)
        .filter(|s| !s.trim().is_empty())
}

/// The change-status answer `{"<id>": "", ...}`: id → text (empty: done).
pub(crate) fn status_answer(body: &Value) -> Result<HashMap<String, String>, String> {
    let Value::Object(m) = body else {
        return Err("the change-status answer is not a JSON object".into());
    };
    Ok(m.iter()
        .map(|(k, v)| (k.clone(), scalar_string(v).unwrap_or_default()))
        .collect())
}

/// `GET /user`: an array of `User` (ASSUMED fallbacks: an object holding it under `users` or
/// `items`).
pub(crate) fn users(body: &Value) -> Result<Vec<RemoteAccount>, String> {
    let items = match body {
        Value::Array(a) => a,
        Value::Object(m) => match m.get("users").or_else(|| m.get("items")) {
            Some(Value::Array(a)) => a,
            _ => return Err("the user list is not a JSON array".into()),
        },
        _ => return Err("the user list is not a JSON array".into()),
    };
    Ok(items.iter().filter_map(remote_account).collect())
}

/// A listed `User` as a remote account (`None` without an id). Field names are the
/// mapping's; the organization is its `name` (or `displayName`); roles are their names;
/// a user without `disabled` counts as enabled.
pub(crate) fn remote_account(user: &Value) -> Option<RemoteAccount> {
    let Value::Object(m) = user else { return None };
    let remote_id = user_id(user)?;
    let mut fields = BTreeMap::new();
    for f in TEXT_FIELDS {
        if let Some(v) = m.get(f).and_then(scalar_string).filter(|v| !v.is_empty()) {
            fields.insert(f.to_string(), v);
        }
    }
    let org = match m.get(ORGANIZATION) {
        Some(Value::Object(o)) => o
            .get("name")
            .and_then(scalar_string)
            .filter(|s| !s.is_empty())
            .or_else(|| o.get("displayName").and_then(scalar_string)),
        Some(v) => scalar_string(v),
        None => None,
    };
    if let Some(o) = org.filter(|s| !s.is_empty()) {
        fields.insert(ORGANIZATION.to_string(), o);
    }
    let roles = match m.get("roles") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|r| match r {
                Value::Object(o) => o.get("name").and_then(scalar_string),
                other => scalar_string(other),
            })
            .filter(|r| !r.is_empty())
            .collect(),
        _ => BTreeSet::new(),
    };
    let enabled = !m.get("disabled").and_then(Value::as_bool).unwrap_or(false);
    Some(RemoteAccount {
        remote_id,
        login: fields.get("loginId").cloned(),
        email: fields.get("emailAddress").cloned(),
        fields,
        roles,
        enabled,
    })
}

/// Role names of `GET /roles`: an array of objects with `name` (or of strings).
pub(crate) fn role_names(body: &Value) -> Result<Vec<String>, String> {
    let items = match body {
        Value::Array(a) => a,
        Value::Object(m) => match m.get("roles").or_else(|| m.get("items")) {
            Some(Value::Array(a)) => a,
            _ => return Err("the role list is not a JSON array".into()),
        },
        _ => return Err("the role list is not a JSON array".into()),
    };
    Ok(items
        .iter()
        .filter_map(|r| match r {
            Value::Object(o) => o.get("name").and_then(scalar_string),
            other => scalar_string(other),
        })
        .collect())
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn user_body_has_objects_for_organization_and_roles() {
        let f = fields(&[
            ("loginId", "jsmith"),
            ("emailAddress", "j@x.io"),
            ("firstName", "John"),
            ("lastName", "Smith"),
            ("organization", "sfo"),
            ("userType", "EMP"),
            ("unknown", "ignored"),
        ]);
        let roles: BTreeSet<String> = ["B".to_string(), "A".to_string()].into();
        let v = user_body(&f, true, None, Some(&roles));
        assert_eq!(
            v,
            json!({
                "loginId": "jsmith", "emailAddress": "j@x.io", "firstName": "John",
                "lastName": "Smith", "userType": "EMP", "organization": {"name": "sfo"},
                "disabled": false, "roles": [{"name": "A"}, {"name": "B"}]
            })
        );
        let v = user_body(&f, false, Some("3336"), None);
        assert_eq!(v["id"], "3336");
        assert_eq!(v["disabled"], true);
        assert!(v.get("roles").is_none());
        assert_eq!(
            delete_item(Some("jsmith"), "3336"),
            json!({"loginId": "jsmith", "id": "3336"})
        );
        assert_eq!(
            store_body(vec![], vec![json!(1)], vec![]),
            json!({"added": [], "modified": [1], "deleted": []})
        );
        assert_eq!(
            status_body(&[(Some("A"), "1"), (None, "2")], true),
            json!([{"loginId": "A", "id": "1", "disabled": true}, {"id": "2", "disabled": true}])
        );
    }

    #[test]
    fn job_ids() {
        assert_eq!(job_id(b"40870", None).as_deref(), Some("40870"));
        assert_eq!(job_id(b" 40870\n", None).as_deref(), Some("40870"));
        assert_eq!(job_id(b"\"40870\"", None).as_deref(), Some("40870"));
        assert_eq!(job_id(br#"{"jobId": 7}"#, None).as_deref(), Some("7"));
        assert_eq!(
            job_id(b"", Some("https://h/cloudapi/restapi/user/status/99")).as_deref(),
            Some("99")
        );
        assert_eq!(
            job_id(b"12", Some("/user/status/a%20b/")).as_deref(),
            Some("a b")
        );
        assert_eq!(job_id(b"", None), None);
        assert_eq!(job_id(b"{}", None), None);
        assert_eq!(job_id(b"not a job", None), None);
    }

    fn sent(kind: ListKind, login: &str, id: Option<&str>) -> Sent {
        Sent {
            kind,
            login: Some(login.into()),
            id: id.map(str::to_string),
        }
    }

    #[test]
    fn job_result_partial_success() {
        let body = json!({
            "added": [
                {"id": 11, "loginId": "A@x.io", "statusInfo": "User created, but Application Access failed"},
                {"id": "12", "loginId": "b@x.io", "statusInfo": "ok", "statusInfoOK": true}
            ],
            "modified": [{"id": "20", "loginId": "m"}],
            "deleted": [{"id": "30", "loginId": "d1"}],
            "deleteFailed": [{"id": "31", "loginId": "d2", "statusInfo": "has projects"}, "32"],
            "exception": "User c@x.io: loginId already exists; User e@x.io: bad org",
            "message": "2 of 4 users failed",
            "updatedIdMap": {}
        });
        let r = job_result(&body).unwrap();
        match outcome("7", &r, &sent(ListKind::Added, "a@x.io", None)) {
            UserOutcome::Done { user, note } => {
                assert_eq!(user_id(&user).as_deref(), Some("11"));
                assert_eq!(
                    note.as_deref(),
                    Some("User created, but Application Access failed")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            outcome("7", &r, &sent(ListKind::Added, "b@x.io", None)),
            UserOutcome::Done { note: None, .. }
        ));
        match outcome("7", &r, &sent(ListKind::Added, "c@x.io", None)) {
            UserOutcome::Failed(OpError::Conflict { message }) => {
                assert!(message.contains("already exists"), "{message}");
                assert!(!message.contains("bad org"), "{message}");
                assert!(message.contains("2 of 4"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        match outcome("7", &r, &sent(ListKind::Added, "e@x.io", None)) {
            UserOutcome::Failed(OpError::Rejected {
                status: 200,
                message,
            }) => {
                assert!(
                    message.contains("bad org") && message.contains("job 7"),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
        // Matched by id first; a login in the wrong list does not count.
        assert!(matches!(
            outcome("7", &r, &sent(ListKind::Modified, "other", Some("20"))),
            UserOutcome::Done { .. }
        ));
        assert!(matches!(
            outcome("7", &r, &sent(ListKind::Modified, "d1", Some("99"))),
            UserOutcome::Failed(_)
        ));
        assert!(matches!(
            outcome("7", &r, &sent(ListKind::Deleted, "d1", Some("30"))),
            UserOutcome::Done { .. }
        ));
        match outcome("7", &r, &sent(ListKind::Deleted, "d2", Some("31"))) {
            UserOutcome::Failed(OpError::Rejected { message, .. }) => {
                assert!(message.contains("has projects"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            outcome("7", &r, &sent(ListKind::Deleted, "d3", Some("32"))),
            UserOutcome::Failed(_)
        ));
        assert!(job_result(&json!([])).is_err());
        assert!(job_result(&json!({"added": {}})).is_err());
        let empty = job_result(&json!({"exception": null, "message": ""})).unwrap();
        assert_eq!(empty, JobResult::default());
    }

    #[test]
    fn change_status_answer() {
        let a = status_answer(&json!({"3336": "", "3449": "", "7": 1})).unwrap();
        assert_eq!(a.get("3336").map(String::as_str), Some(""));
        assert_eq!(a.get("7").map(String::as_str), Some("1"));
        assert!(!a.contains_key("1"));
        assert!(status_answer(&json!([])).is_err());
    }

    #[test]
    fn listed_users() {
        let body = json!([
            {"id": 5, "loginId": "jsmith", "emailAddress": "j@x.io", "firstName": "John",
             "lastName": "Smith", "disabled": true,
             "organization": {"id": "1", "name": "sfo", "displayName": "SFO"},
             "roles": [{"name": "R1"}, {"name": "R2"}], "status": "Active"},
            {"loginId": "no-id"}
        ]);
        let all = users(&body).unwrap();
        assert_eq!(all.len(), 1);
        let u = &all[0];
        assert_eq!(u.remote_id, "5");
        assert_eq!(u.login.as_deref(), Some("jsmith"));
        assert_eq!(u.email.as_deref(), Some("j@x.io"));
        assert_eq!(
            u.fields.get("organization").map(String::as_str),
            Some("sfo")
        );
        assert_eq!(u.roles, ["R1".to_string(), "R2".to_string()].into());
        assert!(!u.enabled);
        assert!(users(&json!("x")).is_err());
        assert_eq!(
            role_names(&json!([{"name": "A"}, "B", {"x": 1}])).unwrap(),
            vec!["A".to_string(), "B".to_string()]
        );
    }
}
