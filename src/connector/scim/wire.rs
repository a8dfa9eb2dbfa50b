//! SCIM JSON: the User body of a create, PATCH operations of an update, the whole resource of a
//! PUT (keeping what dirsync does not manage), users read back, list answers and error bodies.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::paths::{self, AttrPath};
use super::settings::RolesAs;
use crate::connector::api::RemoteAccount;
use crate::connector::http::{HttpError, Response};
use crate::mapping::Account;
use crate::plan::FieldChange;

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
/// The media type of SCIM bodies.
pub const MEDIA_TYPE: &str = "application/scim+json";

/// The mapped fields of a target as parsed attribute paths (`[target.fields]` names).
#[derive(Debug, Clone, Default)]
pub struct FieldPaths {
    pub list: Vec<(String, AttrPath)>,
}

impl FieldPaths {
    /// Parses `names`; a name that is not a path (validation refused it already) is an error.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<FieldPaths, String> {
        let mut list = Vec::new();
        for n in names {
            list.push((n.to_string(), paths::parse_path(n)?));
        }
        Ok(FieldPaths { list })
    }

    fn path(&self, field: &str) -> Result<AttrPath, String> {
        match self.list.iter().find(|(n, _)| n == field) {
            Some((_, p)) => Ok(p.clone()),
            None => paths::parse_path(field),
        }
    }

    /// The extension schemas the fields use.
    fn extensions(&self) -> BTreeSet<&str> {
        self.list
            .iter()
            .filter_map(|(_, p)| paths::schema_of(p))
            .collect()
    }
}

/// `[{"value": r}, ...]`.
pub fn values<'a>(items: impl IntoIterator<Item = &'a String>) -> Value {
    Value::Array(items.into_iter().map(|r| json!({ "value": r })).collect())
}

/// The values of a multi-valued attribute (`roles`, `entitlements`): each entry's `value`
/// (or `display`).
pub fn value_set(v: Option<&Value>) -> BTreeSet<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|e| match e {
                    Value::String(s) => Some(s.clone()),
                    e => e
                        .get("value")
                        .or_else(|| e.get("display"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The typed entries of `attr` the account has, `work` first (it is the primary).
fn typed_entries(account: &Account, fields: &FieldPaths, attr: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = fields
        .list
        .iter()
        .filter_map(|(name, p)| match p {
            AttrPath::Typed { attr: a, kind } if a == attr => {
                account.fields.get(name).map(|v| (kind.clone(), v.clone()))
            }
            _ => None,
        })
        .collect();
    out.sort_by_key(|(k, _)| !k.eq_ignore_ascii_case("work"));
    out
}

fn typed_list(entries: &[(String, String)]) -> Value {
    Value::Array(
        entries
            .iter()
            .enumerate()
            .map(|(i, (kind, v))| {
                let mut e = json!({ "value": v, "type": kind });
                if i == 0 {
                    e["primary"] = Value::Bool(true);
                }
                e
            })
            .collect(),
    )
}

/// The body of `POST /Users`: the schemas, the mapped attributes, `active`, and the roles
/// when they are an attribute of the user.
pub fn user_body(account: &Account, fields: &FieldPaths, roles_as: RolesAs) -> Value {
    let mut m = Map::new();
    let mut schemas = vec![Value::String(USER_SCHEMA.into())];
    schemas.extend(
        fields
            .extensions()
            .into_iter()
            .map(|s| Value::String(s.into())),
    );
    m.insert("schemas".into(), Value::Array(schemas));
    let mut typed_done = BTreeSet::new();
    for (name, p) in &fields.list {
        match p {
            AttrPath::Typed { attr, .. } => {
                if typed_done.insert(attr.clone()) {
                    let entries = typed_entries(account, fields, attr);
                    if !entries.is_empty() {
                        m.insert(attr.clone(), typed_list(&entries));
                    }
                }
            }
            p => {
                if let Some(v) = account.fields.get(name) {
                    paths::write(&mut m, p, Some(v));
                }
            }
        }
    }
    m.insert("active".into(), Value::Bool(account.enabled));
    if let Some(attr) = roles_attribute(roles_as)
        && !account.roles.is_empty()
    {
        m.insert(attr.into(), values(&account.roles));
    }
    Value::Object(m)
}

/// The user attribute holding the roles (`None`: they are groups).
pub fn roles_attribute(roles_as: RolesAs) -> Option<&'static str> {
    match roles_as {
        RolesAs::Groups => None,
        RolesAs::Roles => Some("roles"),
        RolesAs::Entitlements => Some("entitlements"),
    }
}

/// The PATCH `path` of an attribute path.
fn patch_path(p: &AttrPath) -> String {
    match p {
        AttrPath::Simple { schema: None, attr } => attr.clone(),
        AttrPath::Simple {
            schema: Some(s),
            attr,
        } => format!("{s}:{attr}"),
        AttrPath::Sub {
            schema: None,
            attr,
            sub,
        } => format!("{attr}.{sub}"),
        AttrPath::Sub {
            schema: Some(s),
            attr,
            sub,
        } => format!("{s}:{attr}.{sub}"),
        AttrPath::Typed { attr, .. } => attr.clone(),
    }
}

/// `replace` (or `remove`) operations for just the changed fields. A typed value (`emails.work`)
/// replaces the attribute's whole list with the entries dirsync maps (filtered paths such as
/// `emails[type eq "work"].value` are not supported by every server).
pub fn patch_ops(
    changes: &[FieldChange],
    desired: &Account,
    fields: &FieldPaths,
) -> Result<Vec<Value>, String> {
    let mut ops = Vec::new();
    let mut typed_done = BTreeSet::new();
    for c in changes {
        let p = fields.path(&c.field)?;
        match &p {
            AttrPath::Typed { attr, .. } => {
                if !typed_done.insert(attr.clone()) {
                    continue;
                }
                let entries = typed_entries(desired, fields, attr);
                if entries.is_empty() {
                    ops.push(json!({ "op": "remove", "path": attr }));
                } else {
                    ops.push(
                        json!({ "op": "replace", "path": attr, "value": typed_list(&entries) }),
                    );
                }
            }
            p => match &c.after {
                Some(v) => ops.push(json!({ "op": "replace", "path": patch_path(p), "value": v })),
                None => ops.push(json!({ "op": "remove", "path": patch_path(p) })),
            },
        }
    }
    Ok(ops)
}

/// A PatchOp body.
pub fn patch_body(ops: Vec<Value>) -> Value {
    json!({ "schemas": [PATCH_SCHEMA], "Operations": ops })
}

/// The resource to `PUT` on a server without PATCH: the current one with every mapped field
/// set as `desired` has it (other attributes, other typed entries and `active` kept; `meta`
/// dropped), and the roles attribute when `roles` is given.
pub fn merged_resource(
    current: &Value,
    desired: &Account,
    fields: &FieldPaths,
    roles: Option<(&str, &BTreeSet<String>)>,
) -> Value {
    let mut m = current.as_object().cloned().unwrap_or_default();
    m.remove("meta");
    let mut schemas: Vec<Value> = m
        .get("schemas")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_else(|| vec![Value::String(USER_SCHEMA.into())]);
    for ext in fields.extensions() {
        if !schemas.iter().any(|s| s.as_str() == Some(ext)) {
            schemas.push(Value::String(ext.into()));
        }
    }
    m.insert("schemas".into(), Value::Array(schemas));
    for (name, p) in &fields.list {
        paths::write(&mut m, p, desired.fields.get(name).map(String::as_str));
    }
    if let Some((attr, set)) = roles {
        if set.is_empty() {
            m.remove(attr);
        } else {
            m.insert(attr.into(), values(set));
        }
    }
    Value::Object(m)
}

/// A user resource as dirsync compares it (`fields` in the mapping's names).
pub fn remote_account(
    resource: &Value,
    fields: &FieldPaths,
    roles_as: RolesAs,
) -> Result<RemoteAccount, String> {
    let id = match resource.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err("a user without an id".into()),
    };
    let login = resource
        .get("userName")
        .and_then(Value::as_str)
        .map(str::to_string);
    let email = primary_email(resource);
    let mut out = std::collections::BTreeMap::new();
    for (name, p) in &fields.list {
        if let Some(v) = paths::read(resource, p) {
            out.insert(name.clone(), v);
        }
    }
    let enabled = match resource.get("active") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => !s.eq_ignore_ascii_case("false"),
        _ => true,
    };
    let roles = match roles_attribute(roles_as) {
        Some(attr) => value_set(resource.get(attr)),
        // The user's read-only `groups`, when the server gives it (by display name).
        None => resource
            .get("groups")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|g| g.get("display").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    };
    Ok(RemoteAccount {
        remote_id: id,
        login,
        email,
        fields: out,
        roles,
        enabled,
    })
}

/// The primary email, else the work one, else the first.
fn primary_email(resource: &Value) -> Option<String> {
    let list = resource.get("emails")?.as_array()?;
    let value = |e: &Value| e.get("value").and_then(Value::as_str).map(str::to_string);
    list.iter()
        .find(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
        .and_then(value)
        .or_else(|| {
            list.iter()
                .find(|e| e.get("type").and_then(Value::as_str) == Some("work"))
                .and_then(value)
        })
        .or_else(|| list.first().and_then(value))
}

/// One page of a `ListResponse`.
pub struct Page {
    pub total: Option<usize>,
    pub resources: Vec<Value>,
}

pub fn page(body: Value) -> Result<Page, String> {
    let Value::Object(mut m) = body else {
        return Err("a list answer that is not a JSON object".into());
    };
    let total = m
        .get("totalResults")
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok());
    let resources = match m.remove("Resources").or_else(|| m.remove("resources")) {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err("Resources is not a list".into()),
    };
    Ok(Page { total, resources })
}

/// The resource version of an answer: its `ETag` header, else `meta.version` of the body.
pub fn version(resp: &Response) -> Option<String> {
    if let Some(v) = resp
        .headers
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    {
        return Some(v.to_string());
    }
    let body: Value = serde_json::from_slice(&resp.body).ok()?;
    body_version(&body)
}

/// `meta.version` of a resource.
pub fn body_version(body: &Value) -> Option<String> {
    body.get("meta")?
        .get("version")?
        .as_str()
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// A SCIM error body (`scimType`, `detail`) of a failed exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimError {
    pub scim_type: Option<String>,
    pub detail: Option<String>,
}

pub fn scim_error(e: &HttpError) -> Option<ScimError> {
    let body: Value = serde_json::from_str(e.body()?).ok()?;
    scim_error_body(&body)
}

pub fn scim_error_body(body: &Value) -> Option<ScimError> {
    let text = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let (scim_type, detail) = (text("scimType"), text("detail"));
    (scim_type.is_some() || detail.is_some()).then_some(ScimError { scim_type, detail })
}

impl std::fmt::Display for ScimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.scim_type, &self.detail) {
            (Some(t), Some(d)) => write!(f, "{t}: {d}"),
            (Some(t), None) => f.write_str(t),
            (None, Some(d)) => f.write_str(d),
            (None, None) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    fn fields() -> FieldPaths {
        FieldPaths::new([
            "userName",
            "name.givenName",
            "emails.work",
            "emails.home",
            "phoneNumbers.mobile",
            &format!("{ENT}:employeeNumber"),
        ])
        .unwrap()
    }

    fn account(pairs: &[(&str, &str)]) -> Account {
        Account {
            key: "E1".into(),
            fields: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            enabled: true,
            ..Default::default()
        }
    }

    fn change(f: &str, before: Option<&str>, after: Option<&str>) -> FieldChange {
        FieldChange {
            field: f.into(),
            before: before.map(str::to_string),
            after: after.map(str::to_string),
        }
    }

    #[test]
    fn create_body() {
        let mut a = account(&[
            ("userName", "amy@x"),
            ("name.givenName", "Amy"),
            ("emails.home", "amy@home"),
            ("emails.work", "amy@x"),
            (&format!("{ENT}:employeeNumber"), "E1"),
        ]);
        a.roles = ["r1".to_string()].into();
        let body = user_body(&a, &fields(), RolesAs::Roles);
        assert_eq!(
            body,
            json!({
                "schemas": [USER_SCHEMA, ENT],
                "userName": "amy@x",
                "name": {"givenName": "Amy"},
                "emails": [
                    {"value": "amy@x", "type": "work", "primary": true},
                    {"value": "amy@home", "type": "home"},
                ],
                ENT: {"employeeNumber": "E1"},
                "active": true,
                "roles": [{"value": "r1"}],
            })
        );
        assert!(
            user_body(&a, &fields(), RolesAs::Groups)
                .get("roles")
                .is_none()
        );
    }

    #[test]
    fn patch_building_table() {
        let desired = account(&[
            ("userName", "new@x"),
            ("emails.work", "new@x"),
            ("emails.home", "h@x"),
        ]);
        let f = fields();
        for (changes, want) in [
            (vec![], json!([])),
            (
                vec![change("userName", Some("old@x"), Some("new@x"))],
                json!([{"op": "replace", "path": "userName", "value": "new@x"}]),
            ),
            (
                vec![change("name.givenName", Some("A"), None)],
                json!([{"op": "remove", "path": "name.givenName"}]),
            ),
            (
                // Both typed emails changed: one replace of the whole list.
                vec![
                    change("emails.work", Some("old@x"), Some("new@x")),
                    change("emails.home", None, Some("h@x")),
                ],
                json!([{"op": "replace", "path": "emails", "value": [
                    {"value": "new@x", "type": "work", "primary": true},
                    {"value": "h@x", "type": "home"},
                ]}]),
            ),
            (
                vec![change("phoneNumbers.mobile", Some("+1"), None)],
                json!([{"op": "remove", "path": "phoneNumbers"}]),
            ),
            (
                vec![change(
                    &format!("{ENT}:employeeNumber"),
                    Some("1"),
                    Some("2"),
                )],
                json!([{"op": "replace", "path": format!("{ENT}:employeeNumber"), "value": "2"}]),
            ),
        ] {
            let ops = patch_ops(&changes, &desired, &f).unwrap();
            assert_eq!(Value::Array(ops), want, "{changes:?}");
        }
    }

    #[test]
    fn put_keeps_what_dirsync_does_not_manage() {
        let current = json!({
            "schemas": [USER_SCHEMA], "id": "u1", "meta": {"version": "W/\"1\""},
            "userName": "amy@x", "nickName": "hand-set", "active": false,
            "name": {"givenName": "Amy", "familyName": "Hand"},
            "emails": [{"value": "amy@x", "type": "work", "primary": true},
                       {"value": "other@x", "type": "other"}],
        });
        let desired = account(&[
            ("userName", "amy@x"),
            ("name.givenName", "Amelia"),
            ("emails.work", "amy@x"),
        ]);
        let roles: BTreeSet<String> = ["a".to_string()].into();
        let put = merged_resource(
            &current,
            &desired,
            &fields(),
            Some(("entitlements", &roles)),
        );
        assert_eq!(
            put,
            json!({
                "schemas": [USER_SCHEMA, ENT], "id": "u1",
                "userName": "amy@x", "nickName": "hand-set", "active": false,
                "name": {"givenName": "Amelia", "familyName": "Hand"},
                "emails": [{"value": "amy@x", "type": "work", "primary": true},
                           {"value": "other@x", "type": "other"}],
                "entitlements": [{"value": "a"}],
            })
        );
    }

    #[test]
    fn users_read_back() {
        let r = json!({"id": "u1", "userName": "amy@x", "active": false,
                       "emails": [{"value": "h@x", "type": "home"}, {"value": "amy@x", "type": "work", "primary": true}],
                       "roles": [{"value": "r1"}, {"value": "r2"}]});
        let a = remote_account(&r, &fields(), RolesAs::Roles).unwrap();
        assert_eq!(a.remote_id, "u1");
        assert_eq!(a.login.as_deref(), Some("amy@x"));
        assert_eq!(a.email.as_deref(), Some("amy@x"));
        assert!(!a.enabled);
        assert_eq!(a.fields.get("emails.home").map(String::as_str), Some("h@x"));
        assert_eq!(a.roles.len(), 2);
        assert!(remote_account(&json!({"userName": "x"}), &fields(), RolesAs::Roles).is_err());
    }

    #[test]
    fn error_bodies() {
        let b = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "409",
                       "scimType": "uniqueness", "detail": "userName taken"});
        let e = scim_error_body(&b).unwrap();
        assert_eq!(e.scim_type.as_deref(), Some("uniqueness"));
        assert_eq!(e.to_string(), "uniqueness: userName taken");
        assert!(scim_error_body(&json!({"status": "500"})).is_none());
    }
}
