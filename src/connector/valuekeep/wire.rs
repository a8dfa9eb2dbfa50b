//! Valuekeep's wire format: the create body built from an account, field changes turned into
//! per-attribute `PUT` calls with raw JSON values, the OData list envelope and `UserResource`
//! records parsed into remote accounts. Pure.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::connector::api::RemoteAccount;
use crate::mapping::{Account, parse_bool};
use crate::plan::FieldChange;

/// The login field: accounts are addressed by it in every per-user path.
pub(crate) const USER_KEY: &str = "userKey";

/// Attributes sent as JSON booleans (`true`), in the create body and in `PUT .../{attribute}`.
const BOOL_ATTRIBUTES: [&str; 2] = ["isTechnician", "isActive"];

/// Attributes sent as JSON numbers (`status`: 1 Active, 2 Inactive, ...).
const NUMBER_ATTRIBUTES: [&str; 1] = ["status"];

/// `status` of an enabled account.
pub(crate) const STATUS_ACTIVE: u8 = 1;
/// `status` of a disabled account.
pub(crate) const STATUS_INACTIVE: u8 = 2;

/// ASSUMED: the value that clears an optional attribute no longer mapped (`email`): JSON
/// `null`. Required attributes (`userKey`, `name`, `isTechnician`) cannot be cleared.
const REQUIRED: [&str; 3] = [USER_KEY, "name", "isTechnician"];

/// The JSON value of one attribute: booleans and numbers typed, everything else a string.
pub(crate) fn attribute_value(attribute: &str, text: &str) -> Result<Value, String> {
    if BOOL_ATTRIBUTES.contains(&attribute) {
        return parse_bool(text)
            .map(Value::Bool)
            .ok_or_else(|| format!("{attribute} must be true or false, not {text:?}"));
    }
    if NUMBER_ATTRIBUTES.contains(&attribute) {
        return text
            .trim()
            .parse::<u64>()
            .map(Value::from)
            .map_err(|_| format!("{attribute} must be a number, not {text:?}"));
    }
    Ok(Value::String(text.to_string()))
}

/// The body of `POST /identity/users` (`ApiUserResource`): every mapped field with its JSON
/// type (`isTechnician` a boolean), and `roles` / `groups` as arrays of keys when there are any.
/// Other mapped fields are sent as strings under their own names.
pub(crate) fn create_body(account: &Account) -> Result<Value, String> {
    let mut m = Map::new();
    for (name, value) in &account.fields {
        m.insert(name.clone(), attribute_value(name, value)?);
    }
    for required in REQUIRED {
        if !m.contains_key(required) {
            return Err(format!(
                "the account has no {required} (required by Valuekeep)"
            ));
        }
    }
    if !account.roles.is_empty() {
        m.insert("roles".to_string(), strings(account.roles.iter()));
    }
    if !account.groups.is_empty() {
        m.insert("groups".to_string(), strings(account.groups.iter()));
    }
    Ok(Value::Object(m))
}

/// A JSON array of strings (the body of `roles/add`, `roles/remove`).
pub(crate) fn strings<'a>(items: impl IntoIterator<Item = &'a String>) -> Value {
    Value::Array(items.into_iter().cloned().map(Value::String).collect())
}

/// One `PUT /identity/users/{userKey}/{attribute}` with its raw JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldCall {
    pub attribute: String,
    pub value: Value,
}

/// The calls an update makes, one per changed attribute in the order of `changes`, except the
/// `userKey` change, which comes LAST (every earlier call is addressed by the old key). Also
/// the new key when it changes.
pub(crate) fn field_calls(changes: &[FieldChange]) -> Result<Vec<FieldCall>, String> {
    let mut calls = Vec::with_capacity(changes.len());
    let mut rename = None;
    for c in changes {
        let value = match &c.after {
            Some(v) => attribute_value(&c.field, v)?,
            None if REQUIRED.contains(&c.field.as_str()) => {
                return Err(format!("{} cannot be cleared on Valuekeep", c.field));
            }
            None => Value::Null,
        };
        let call = FieldCall {
            attribute: c.field.clone(),
            value,
        };
        if c.field == USER_KEY {
            if c.after.as_deref().is_some_and(str::is_empty) {
                return Err("userKey cannot be empty".to_string());
            }
            rename = Some(call);
        } else {
            calls.push(call);
        }
    }
    calls.extend(rename);
    Ok(calls)
}

/// The key of the account before `changes` apply: the `before` of a `userKey` change, else the
/// desired `userKey`.
pub(crate) fn key_before(changes: &[FieldChange], desired: &Account) -> Option<String> {
    changes
        .iter()
        .find(|c| c.field == USER_KEY)
        .and_then(|c| c.before.clone())
        .or_else(|| desired.fields.get(USER_KEY).cloned())
        .filter(|k| !k.is_empty())
}

/// ASSUMED: the body of `POST /identity/users/sendInvitation` (`InvitedUser` is not described):
/// the user's key and, when mapped, its email and name.
pub(crate) fn invitation_body(account: &Account) -> Value {
    let mut m = Map::new();
    for f in [USER_KEY, "email", "name"] {
        if let Some(v) = account.fields.get(f) {
            m.insert(f.to_string(), Value::String(v.clone()));
        }
    }
    Value::Object(m)
}

/// The new record's id from a create answer: the body is the id (a JSON string or number, or
/// bare text), or an object with `id`; else the last segment of the `Location` header.
pub(crate) fn created_id(body: &[u8], location: Option<&str>) -> Option<String> {
    let from_body = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => m.get("id").and_then(scalar_string),
        Ok(v) => scalar_string(&v),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim().trim_matches('"').trim();
            (!text.is_empty() && !text.contains(char::is_whitespace)).then(|| text.to_string())
        }
    };
    from_body.filter(|s| !s.is_empty()).or_else(|| {
        let location = location?.split(['?', '#']).next()?;
        let last = location.trim_end_matches('/').rsplit('/').next()?;
        let id = percent_encoding::percent_decode_str(last)
            .decode_utf8()
            .ok()?
            .into_owned();
        (!id.is_empty()).then_some(id)
    })
}

/// Whether a 400 answer to a create says the userKey exists.
pub(crate) fn is_duplicate_message(text: &str) -> bool {
    let lc = text.to_lowercase();
    lc.contains("duplicate")
        || lc.contains("already")
        || (lc.contains("exists") && !lc.contains("not exist"))
}

/// One page of `GET /identity/users/odata`.
#[derive(Debug)]
pub(crate) struct Page {
    pub items: Vec<RemoteAccount>,
    /// `Some(link)`: the next page; `Some("")` never. `None` with `has_link_field`: last page.
    pub next_link: Option<String>,
    /// The answer has a `nextPageLink` member at all (then it alone decides whether more
    /// pages follow; without it, a full page means there may be more).
    pub has_link_field: bool,
}

/// Parses the ASSUMED envelope `{"items":[...],"nextPageLink":"..."}` (as on Jasmin); also
/// `value` (standard OData) for the items, and a bare array (the whole list).
pub(crate) fn parse_page(body: &Value) -> Result<Page, String> {
    let (items, link, has_link_field) = match body {
        Value::Array(items) => (items, None, true),
        Value::Object(m) => {
            let items = m
                .get("items")
                .or_else(|| m.get("value"))
                .and_then(Value::as_array)
                .ok_or("the answer has no items array")?;
            let link = m
                .get("nextPageLink")
                .or_else(|| m.get("@odata.nextLink"))
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            let has = m.contains_key("nextPageLink") || m.contains_key("@odata.nextLink");
            (items, link, has)
        }
        _ => return Err("the answer is neither a list nor an object".to_string()),
    };
    let items = items
        .iter()
        .map(remote_account)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page {
        items,
        next_link: link,
        has_link_field,
    })
}

/// A `UserResource` as a remote account: `remote_id` is its `id` (else its `userKey`), the
/// login its `userKey`; `enabled` is `isActive` when present, else `status` (2 = inactive),
/// else true. Roles are strings, or objects naming a key.
pub(crate) fn remote_account(user: &Value) -> Result<RemoteAccount, String> {
    let Value::Object(m) = user else {
        return Err("a user record is not an object".to_string());
    };
    let text = |k: &str| m.get(k).and_then(scalar_string).filter(|s| !s.is_empty());
    let user_key = text(USER_KEY).ok_or("a user record has no userKey")?;
    let remote_id = text("id").unwrap_or_else(|| user_key.clone());
    let mut fields = BTreeMap::new();
    for f in [USER_KEY, "name", "email"] {
        if let Some(v) = text(f) {
            fields.insert(f.to_string(), v);
        }
    }
    if let Some(b) = m.get("isTechnician").and_then(boolish) {
        fields.insert("isTechnician".to_string(), b.to_string());
    }
    let roles: BTreeSet<String> = match m.get("roles") {
        Some(Value::Array(items)) => items.iter().filter_map(role_key).collect(),
        _ => BTreeSet::new(),
    };
    let enabled = match m.get("isActive").and_then(boolish) {
        Some(b) => b,
        None => !matches!(
            m.get("status").and_then(scalar_string).as_deref(),
            Some(s) if s == STATUS_INACTIVE.to_string()
        ),
    };
    Ok(RemoteAccount {
        remote_id,
        login: Some(user_key),
        email: fields.get("email").cloned(),
        fields,
        roles,
        enabled,
    })
}

/// A role as listed: a string, or an object with `roleKey`, `key`, `name` or `id`.
fn role_key(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => ["roleKey", "key", "name", "id"]
            .iter()
            .find_map(|k| o.get(*k).and_then(scalar_string))
            .filter(|s| !s.is_empty()),
        _ => None,
    }
}

fn boolish(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => parse_bool(s),
        Value::Number(n) => n.as_u64().map(|n| n != 0),
        _ => None,
    }
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

    use serde_json::json;

    fn account(fields: &[(&str, &str)], roles: &[&str]) -> Account {
        Account {
            groups: Default::default(),
            key: "E1".into(),
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            enabled: true,
            hash: Default::default(),
        }
    }

    fn change(field: &str, before: Option<&str>, after: Option<&str>) -> FieldChange {
        FieldChange {
            field: field.into(),
            before: before.map(str::to_string),
            after: after.map(str::to_string),
        }
    }

    #[test]
    fn create_body_types_and_roles() {
        let a = account(
            &[
                ("userKey", "jdoe"),
                ("name", "Jane Doe"),
                ("email", "jane@x.io"),
                ("isTechnician", "true"),
            ],
            &["TECH", "ADMIN"],
        );
        assert_eq!(
            create_body(&a).unwrap(),
            json!({
                "userKey": "jdoe",
                "name": "Jane Doe",
                "email": "jane@x.io",
                "isTechnician": true,
                "roles": ["ADMIN", "TECH"],
            })
        );
        let a = account(
            &[("userKey", "k"), ("name", "N"), ("isTechnician", "false")],
            &[],
        );
        assert_eq!(
            create_body(&a).unwrap(),
            json!({"userKey": "k", "name": "N", "isTechnician": false})
        );
        let a = account(&[("userKey", "k"), ("isTechnician", "false")], &[]);
        assert!(create_body(&a).unwrap_err().contains("name"));
        let a = account(
            &[("userKey", "k"), ("name", "N"), ("isTechnician", "maybe")],
            &[],
        );
        assert!(create_body(&a).unwrap_err().contains("isTechnician"));
    }

    #[test]
    fn changes_become_raw_value_calls_with_the_key_last() {
        let calls = field_calls(&[
            change("userKey", Some("old"), Some("new")),
            change("email", Some("a@x.io"), Some("b@x.io")),
            change("isTechnician", Some("false"), Some("true")),
            change("name", Some("A"), Some("B")),
        ])
        .unwrap();
        let got: Vec<(&str, String)> = calls
            .iter()
            .map(|c| (c.attribute.as_str(), c.value.to_string()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("email", "\"b@x.io\"".to_string()),
                ("isTechnician", "true".to_string()),
                ("name", "\"B\"".to_string()),
                ("userKey", "\"new\"".to_string()),
            ]
        );
        // Clearing the email sends null; a required field cannot be cleared.
        let calls = field_calls(&[change("email", Some("a@x.io"), None)]).unwrap();
        assert_eq!(calls[0].value, Value::Null);
        assert!(field_calls(&[change("name", Some("A"), None)]).is_err());
        assert!(field_calls(&[change("userKey", Some("a"), Some(""))]).is_err());
        assert!(field_calls(&[]).unwrap().is_empty());
        assert_eq!(attribute_value("status", "2").unwrap(), json!(2));
        assert_eq!(attribute_value("isActive", "false").unwrap(), json!(false));
    }

    #[test]
    fn key_before_prefers_the_old_key() {
        let a = account(&[("userKey", "new")], &[]);
        assert_eq!(
            key_before(&[change("userKey", Some("old"), Some("new"))], &a).as_deref(),
            Some("old")
        );
        assert_eq!(
            key_before(&[change("name", Some("a"), Some("b"))], &a).as_deref(),
            Some("new")
        );
        assert_eq!(key_before(&[], &account(&[], &[])), None);
    }

    #[test]
    fn created_ids() {
        assert_eq!(created_id(b"\"abc-1\"", None).as_deref(), Some("abc-1"));
        assert_eq!(created_id(b"abc-2", None).as_deref(), Some("abc-2"));
        assert_eq!(created_id(b"{\"id\": 42}", None).as_deref(), Some("42"));
        assert_eq!(
            created_id(b"", Some("https://h/api/t/o/identity/users/a%2Fb?x=1")).as_deref(),
            Some("a/b")
        );
        assert_eq!(created_id(b"  ", None), None);
        assert_eq!(created_id(b"{}", None), None);
    }

    #[test]
    fn duplicate_messages() {
        assert!(is_duplicate_message("User jdoe already exists."));
        assert!(is_duplicate_message("Duplicate key"));
        assert!(!is_duplicate_message("Role X does not exist"));
        assert!(!is_duplicate_message("name is required"));
    }

    #[test]
    fn pages_and_records() {
        let page = parse_page(&json!({
            "items": [
                {"id": "1", "userKey": "a", "name": "A", "email": "a@x.io",
                 "isTechnician": true, "isActive": false, "roles": ["R1", {"roleKey": "R2"}],
                 "culture": "en-US"},
                {"id": 2, "userKey": "b", "name": "B", "isTechnician": "false", "status": 2},
                {"userKey": "c", "name": "C", "status": 1},
            ],
            "nextPageLink": "https://h/api/t/o/identity/users/odata?$skip=100&$top=100",
        }))
        .unwrap();
        assert!(page.has_link_field);
        assert!(page.next_link.as_deref().unwrap().contains("$skip=100"));
        let [a, b, c] = &page.items[..] else {
            panic!("{:?}", page.items)
        };
        assert_eq!(a.remote_id, "1");
        assert_eq!(a.login.as_deref(), Some("a"));
        assert_eq!(a.email.as_deref(), Some("a@x.io"));
        assert!(!a.enabled);
        assert_eq!(a.fields["isTechnician"], "true");
        assert_eq!(a.fields["name"], "A");
        assert_eq!(
            a.roles,
            ["R1", "R2"].iter().map(|s| s.to_string()).collect()
        );
        assert_eq!(b.remote_id, "2");
        assert!(!b.enabled);
        assert_eq!(b.fields["isTechnician"], "false");
        assert_eq!(c.remote_id, "c");
        assert!(c.enabled);

        let last = parse_page(&json!({"items": [], "nextPageLink": null})).unwrap();
        assert!(last.has_link_field && last.next_link.is_none());
        let odata = parse_page(&json!({"value": [{"userKey": "z"}]})).unwrap();
        assert!(!odata.has_link_field && odata.items.len() == 1);
        assert!(parse_page(&json!({"items": [{"name": "no key"}]})).is_err());
        assert!(parse_page(&json!("x")).is_err());
    }

    #[test]
    fn invitation_names_the_user() {
        let a = account(
            &[
                ("userKey", "k"),
                ("email", "k@x.io"),
                ("isTechnician", "true"),
            ],
            &[],
        );
        assert_eq!(
            invitation_body(&a),
            json!({"userKey": "k", "email": "k@x.io"})
        );
    }
}
