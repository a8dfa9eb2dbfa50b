//! SCIM attribute paths as `[target.fields]` names them, and reading / writing them in a
//! resource's JSON:
//! - `userName`, `displayName`: a top-level attribute;
//! - `name.givenName`: a sub-attribute of a complex attribute;
//! - `emails.work`, `phoneNumbers.mobile`: the `value` of the entry of that `type` in a
//!   multi-valued attribute ([`TYPED`]);
//! - `urn:...:User:employeeNumber` (or `...:manager.value`): an attribute of a schema
//!   extension, stored under the URN.

use serde_json::{Map, Value};

/// Multi-valued attributes whose entries carry a `type` (RFC 7643 section 4.1.2).
pub const TYPED: &[&str] = &[
    "emails",
    "phoneNumbers",
    "ims",
    "photos",
    "x509Certificates",
];

/// A parsed attribute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrPath {
    /// `attr`, in the core schema (`schema` None) or an extension.
    Simple {
        schema: Option<String>,
        attr: String,
    },
    /// `attr.sub`.
    Sub {
        schema: Option<String>,
        attr: String,
        sub: String,
    },
    /// `attr.type` of a multi-valued attribute with typed entries.
    Typed { attr: String, kind: String },
}

fn attr_name_ok(s: &str) -> bool {
    // RFC 7643 section 2.1: ALPHA *(nameChar), nameChar = "-" / "_" / DIGIT / ALPHA.
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Parses a `[target.fields]` name. Errors say what is wrong.
pub fn parse_path(name: &str) -> Result<AttrPath, String> {
    let (schema, rest) = if name.len() > 4 && name[..4].eq_ignore_ascii_case("urn:") {
        match name.rsplit_once(':') {
            Some((urn, attr)) if !attr.is_empty() && urn.len() > 4 => (Some(urn.to_string()), attr),
            _ => {
                return Err(format!(
                    "{name:?}: an extension path is the schema URN, ':' and the attribute \
                     (urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber)"
                ));
            }
        }
    } else {
        (None, name)
    };
    let parts: Vec<&str> = rest.split('.').collect();
    if parts.len() > 2 || !parts.iter().all(|p| attr_name_ok(p)) {
        return Err(format!(
            "{name:?} is not a SCIM attribute path (attribute, attribute.subAttribute, or a \
             typed value such as emails.work)"
        ));
    }
    Ok(match (schema, parts.as_slice()) {
        (schema, [attr]) => AttrPath::Simple {
            schema,
            attr: (*attr).to_string(),
        },
        (None, [attr, kind]) if TYPED.iter().any(|t| t.eq_ignore_ascii_case(attr)) => {
            AttrPath::Typed {
                attr: (*attr).to_string(),
                kind: (*kind).to_string(),
            }
        }
        (schema, [attr, sub]) => AttrPath::Sub {
            schema,
            attr: (*attr).to_string(),
            sub: (*sub).to_string(),
        },
        _ => unreachable_path(name)?,
    })
}

/// `parts` has one or two elements (checked above); kept as an error, not a panic.
fn unreachable_path(name: &str) -> Result<AttrPath, String> {
    Err(format!("{name:?} is not a SCIM attribute path"))
}

/// The value of `key` in `obj`, matched case-insensitively (SCIM attribute names are).
fn get_ci<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    let map = obj.as_object()?;
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// The key `key` of `map` as the map spells it (or `key` when absent).
fn key_ci(map: &Map<String, Value>, key: &str) -> String {
    if map.contains_key(key) {
        return key.to_string();
    }
    map.keys()
        .find(|k| k.eq_ignore_ascii_case(key))
        .cloned()
        .unwrap_or_else(|| key.to_string())
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The container of a path's attribute: the resource, or its extension object.
fn container<'a>(resource: &'a Value, schema: &Option<String>) -> Option<&'a Value> {
    match schema {
        None => Some(resource),
        Some(urn) => get_ci(resource, urn),
    }
}

/// The entry of a typed multi-valued attribute with this type.
fn typed_entry<'a>(list: &'a Value, kind: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|e| {
        get_ci(e, "type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case(kind))
    })
}

/// Reads the text value at `path` (`None` when absent or not text).
pub fn read(resource: &Value, path: &AttrPath) -> Option<String> {
    match path {
        AttrPath::Simple { schema, attr } => text(get_ci(container(resource, schema)?, attr)?),
        AttrPath::Sub { schema, attr, sub } => {
            text(get_ci(get_ci(container(resource, schema)?, attr)?, sub)?)
        }
        AttrPath::Typed { attr, kind } => text(get_ci(
            typed_entry(get_ci(resource, attr)?, kind)?,
            "value",
        )?),
    }
}

/// Runs `f` on the object at `key` of `map` (made an object when absent or not one).
fn edit_object(map: &mut Map<String, Value>, key: &str, f: impl FnOnce(&mut Map<String, Value>)) {
    let k = key_ci(map, key);
    let mut obj = match map.remove(&k) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    f(&mut obj);
    if !obj.is_empty() {
        map.insert(k, Value::Object(obj));
    }
}

fn set_or_remove(map: &mut Map<String, Value>, attr: &str, value: Option<&str>) {
    let k = key_ci(map, attr);
    match value {
        Some(v) => {
            map.insert(k, Value::String(v.to_string()));
        }
        None => {
            map.remove(&k);
        }
    }
}

/// Sets (or, with `None`, removes) the value at `path` in `resource` (an object), keeping
/// everything else: other sub-attributes, other typed entries (a new typed entry is primary
/// when it is the only one).
pub fn write(resource: &mut Map<String, Value>, path: &AttrPath, value: Option<&str>) {
    match path {
        AttrPath::Simple { schema, attr } => match schema {
            None => set_or_remove(resource, attr, value),
            Some(urn) => edit_object(resource, urn, |m| set_or_remove(m, attr, value)),
        },
        AttrPath::Sub { schema, attr, sub } => match schema {
            None => edit_object(resource, attr, |o| set_or_remove(o, sub, value)),
            Some(urn) => edit_object(resource, urn, |m| {
                edit_object(m, attr, |o| set_or_remove(o, sub, value))
            }),
        },
        AttrPath::Typed { attr, kind } => {
            let k = key_ci(resource, attr);
            let mut list = match resource.remove(&k) {
                Some(Value::Array(a)) => a,
                _ => Vec::new(),
            };
            let is_kind = |e: &Value| {
                get_ci(e, "type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.eq_ignore_ascii_case(kind))
            };
            match value {
                Some(v) => match list.iter_mut().find(|e| is_kind(e)) {
                    Some(Value::Object(e)) => {
                        let vk = key_ci(e, "value");
                        e.insert(vk, Value::String(v.to_string()));
                    }
                    _ => {
                        let mut e = Map::new();
                        e.insert("value".into(), Value::String(v.to_string()));
                        e.insert("type".into(), Value::String(kind.clone()));
                        if list.is_empty() {
                            e.insert("primary".into(), Value::Bool(true));
                        }
                        list.push(Value::Object(e));
                    }
                },
                None => list.retain(|e| !is_kind(e)),
            }
            if !list.is_empty() {
                resource.insert(k, Value::Array(list));
            }
        }
    }
}

/// The schema URN of an extension path.
pub fn schema_of(path: &AttrPath) -> Option<&str> {
    match path {
        AttrPath::Simple { schema, .. } | AttrPath::Sub { schema, .. } => schema.as_deref(),
        AttrPath::Typed { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    #[test]
    fn parse_table() {
        let simple = |a: &str| AttrPath::Simple {
            schema: None,
            attr: a.into(),
        };
        for (name, want) in [
            ("userName", Some(simple("userName"))),
            (
                "name.givenName",
                Some(AttrPath::Sub {
                    schema: None,
                    attr: "name".into(),
                    sub: "givenName".into(),
                }),
            ),
            (
                "emails.work",
                Some(AttrPath::Typed {
                    attr: "emails".into(),
                    kind: "work".into(),
                }),
            ),
            (
                "phoneNumbers.mobile",
                Some(AttrPath::Typed {
                    attr: "phoneNumbers".into(),
                    kind: "mobile".into(),
                }),
            ),
            (
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
                Some(AttrPath::Simple {
                    schema: Some(ENT.into()),
                    attr: "employeeNumber".into(),
                }),
            ),
            (
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
                Some(AttrPath::Sub {
                    schema: Some(ENT.into()),
                    attr: "manager".into(),
                    sub: "value".into(),
                }),
            ),
            ("a.b.c", None),
            ("1abc", None),
            ("name.", None),
            ("emails[type eq \"work\"].value", None),
            ("urn:", None),
        ] {
            assert_eq!(parse_path(name).ok(), want, "{name}");
        }
    }

    #[test]
    fn read_and_write_keep_the_rest() {
        let mut r = json!({
            "userName": "a@x",
            "Name": {"givenName": "A", "formatted": "keep"},
            "emails": [{"value": "h@x", "type": "home"}, {"value": "w@x", "type": "Work"}],
            ENT: {"employeeNumber": "7", "costCenter": "keep"},
        });
        let p = |s: &str| parse_path(s).unwrap();
        assert_eq!(read(&r, &p("name.givenName")).as_deref(), Some("A"));
        assert_eq!(read(&r, &p("emails.work")).as_deref(), Some("w@x"));
        assert_eq!(
            read(&r, &p(&format!("{ENT}:employeeNumber"))).as_deref(),
            Some("7")
        );
        assert_eq!(read(&r, &p("emails.other")), None);
        let m = r.as_object_mut().unwrap();
        write(m, &p("name.givenName"), Some("B"));
        write(m, &p("emails.work"), Some("w2@x"));
        write(m, &p("phoneNumbers.mobile"), Some("+1"));
        write(m, &p(&format!("{ENT}:employeeNumber")), Some("8"));
        write(m, &p("displayName"), None);
        write(m, &p("emails.home"), None);
        assert_eq!(
            r,
            json!({
                "userName": "a@x",
                "Name": {"givenName": "B", "formatted": "keep"},
                "emails": [{"value": "w2@x", "type": "Work"}],
                "phoneNumbers": [{"value": "+1", "type": "mobile", "primary": true}],
                ENT: {"employeeNumber": "8", "costCenter": "keep"},
            })
        );
    }
}
