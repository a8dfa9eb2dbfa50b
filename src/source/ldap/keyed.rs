//! Live sync's read of the changed users only: the configured search narrowed to the changed
//! keys (`(&<filter>(|(key=v1)(key=v2)…))`), decoded exactly as a full read decodes.

use super::{KeyFormat, LdapSettings, LdapSourceError, read};
use crate::model::Snapshot;

/// Above this many keys one read of the whole directory is cheaper than the filter.
pub const MAX_KEYS_IN_FILTER: usize = 500;

/// Reads the users of `keys` (sorted) that the configured search still returns. A key it does
/// not return is gone (deleted, or out of the filter); a search that fails fails the read (an
/// unreachable directory is never an empty answer).
pub async fn load_keys(
    settings: &LdapSettings,
    keys: &[String],
) -> Result<Snapshot, LdapSourceError> {
    let narrowed = match key_filter(settings, keys) {
        Some(f) => LdapSettings {
            filter: f,
            ..settings.clone()
        },
        None => settings.clone(),
    };
    let read = read(&narrowed).await?;
    Ok(only_keys(read.snapshot, keys))
}

/// The snapshot's users and quarantined records of `keys` only (sorted keys).
pub fn only_keys(snapshot: Snapshot, keys: &[String]) -> Snapshot {
    let wanted = |k: &str| keys.binary_search_by(|x| x.as_str().cmp(k)).is_ok();
    let users = snapshot
        .users()
        .iter()
        .filter(|u| wanted(&u.key))
        .cloned()
        .collect();
    let quarantined = snapshot
        .quarantined()
        .iter()
        .filter(|q| q.key.as_deref().is_some_and(wanted))
        .cloned()
        .collect();
    // Keys are unique in the snapshot the users come from.
    Snapshot::new(users)
        .unwrap_or_default()
        .with_quarantined(quarantined)
}

/// The configured filter narrowed to the keys, or `None` when there are too many keys (or
/// none) for one filter, or a key cannot be written as the attribute's value.
pub fn key_filter(settings: &LdapSettings, keys: &[String]) -> Option<String> {
    if keys.is_empty() || keys.len() > MAX_KEYS_IN_FILTER {
        return None;
    }
    let attribute = &settings.attributes.key;
    let format = match settings.key_format {
        KeyFormat::Auto if attribute.eq_ignore_ascii_case("objectGUID") => KeyFormat::Guid,
        KeyFormat::Auto => KeyFormat::Text,
        f => f,
    };
    let mut out = format!("(&{}(|", wrap(&settings.filter));
    for k in keys {
        let value = match format {
            KeyFormat::Guid => escape_bytes(&uuid::Uuid::parse_str(k).ok()?.to_bytes_le()),
            KeyFormat::Hex => escape_bytes(&hex_bytes(k)?),
            _ => escape_text(k),
        };
        out.push_str(&format!("({attribute}={value})"));
    }
    out.push_str("))");
    Some(out)
}

fn wrap(filter: &str) -> String {
    let f = filter.trim();
    if f.starts_with('(') {
        f.to_string()
    } else {
        format!("({f})")
    }
}

/// RFC 4515 escaping of a text value.
pub fn escape_text(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

fn escape_bytes(b: &[u8]) -> String {
    b.iter().map(|b| format!("\\{b:02x}")).collect()
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ldap::ServerType;

    #[test]
    fn filters_name_each_key_escaped() {
        let mut s = LdapSettings::new("ldap://h", "dc=x", ServerType::Generic);
        s.filter = "(objectClass=inetOrgPerson)".into();
        s.attributes.key = "uid".into();
        s.key_format = KeyFormat::Auto;
        assert_eq!(
            key_filter(&s, &["a*b".into(), "c(d)".into()]).as_deref(),
            Some("(&(objectClass=inetOrgPerson)(|(uid=a\\2ab)(uid=c\\28d\\29)))")
        );
        assert_eq!(key_filter(&s, &[]), None);
        let many: Vec<String> = (0..=MAX_KEYS_IN_FILTER).map(|i| i.to_string()).collect();
        assert_eq!(key_filter(&s, &many), None);
        s.attributes.key = "objectGUID".into();
        let f = key_filter(&s, &["01020304-0506-0708-090a-0b0c0d0e0f10".into()]).unwrap();
        assert!(
            f.contains("(objectGUID=\\04\\03\\02\\01\\06\\05\\08\\07\\09\\0a"),
            "{f}"
        );
        assert_eq!(key_filter(&s, &["not-a-guid".into()]), None);
        s.key_format = KeyFormat::Hex;
        assert!(
            key_filter(&s, &["0aff".into()])
                .unwrap()
                .contains("=\\0a\\ff)")
        );
    }
}
