//! Entries to users, pure: the attributes to request, the key (text, GUID, hex), each field's
//! value checked (UTF-8, control characters, email syntax), the enabled rule, and duplicate
//! keys and emails across users; every problem naming the DN and the attribute.

use std::collections::{BTreeMap, HashMap, HashSet};

use ldap3::SearchEntry;

use super::groups::GroupIndex;
use super::{GroupSource, KeyFormat, LdapProblem, LdapSettings};
use crate::model::{User, email_fold};
use crate::source::rules::{email_error, has_control};

/// How many characters (or bytes) of a value an error message shows.
pub(super) const SHOWN_VALUE: usize = 80;

/// A value as error messages show it: quoted, with quotes, backslashes, control and other
/// non-printable characters escaped (`"Ab\0c"`, `"a\nb"`), so that a NUL or a newline in a
/// directory value cannot end a log line or forge the next one. Values longer than
/// [`SHOWN_VALUE`] characters are cut in the message (only there), which says so.
pub fn shown(v: &str) -> String {
    match v.char_indices().nth(SHOWN_VALUE) {
        None => format!("{v:?}"),
        Some((i, _)) => format!("{:?}... ({} bytes in all)", &v[..i], v.len()),
    }
}

/// [`shown`] for a value that is not UTF-8: ASCII as is, other bytes as `\xNN`.
pub(super) fn shown_bytes(v: &[u8]) -> String {
    if v.len() <= SHOWN_VALUE {
        format!("\"{}\"", v.escape_ascii())
    } else {
        format!(
            "\"{}\"... ({} bytes in all)",
            v[..SHOWN_VALUE].escape_ascii(),
            v.len()
        )
    }
}

/// The attributes to request for users.
pub(super) fn user_attributes(s: &LdapSettings) -> Vec<String> {
    let a = &s.attributes;
    let mut out: Vec<String> = vec![a.key.clone()];
    for list in [
        &a.email,
        &a.given_name,
        &a.family_name,
        &a.other_name,
        &a.display_name,
        &a.mobile,
    ] {
        out.extend(list.iter().cloned());
    }
    if s.user_account_control {
        out.push("userAccountControl".into());
    }
    if let Some(d) = &s.disabled {
        out.push(d.attribute.clone());
    }
    match &s.groups {
        GroupSource::MemberOf { attribute } => out.push(attribute.clone()),
        GroupSource::Search(g) if g.member_uid_attribute.is_some() => {
            out.push(g.user_id_attribute.clone())
        }
        _ => {}
    }
    out.extend(s.extra.values().cloned());
    let mut seen = HashSet::new();
    out.retain(|a| seen.insert(a.to_ascii_lowercase()));
    out
}

/// The values of attribute `name` (case-insensitive; options such as `;binary` ignored), in
/// the server's order for entries read by [`search_entry`]. Called about ten times per entry:
/// it allocates nothing.
pub(super) fn values<'e>(e: &'e SearchEntry, name: &'e str) -> impl Iterator<Item = &'e [u8]> {
    let text = e
        .attrs
        .iter()
        .filter(move |(k, _)| is_attribute(k, name))
        .flat_map(|(_, vs)| vs.iter().map(String::as_bytes));
    let binary = e
        .bin_attrs
        .iter()
        .filter(move |(k, _)| is_attribute(k, name))
        .flat_map(|(_, vs)| vs.iter().map(Vec::as_slice));
    text.chain(binary)
}

/// Whether the attribute description `k` (`mail`, `mail;lang-en`) is of attribute `name`:
/// its part before the first `;` equals `name`, ignoring ASCII case.
pub(super) fn is_attribute(k: &str, name: &str) -> bool {
    let (k, name) = (k.as_bytes(), name.as_bytes());
    k.len() >= name.len()
        && (k.len() == name.len() || k[name.len()] == b';')
        && k[..name.len()].eq_ignore_ascii_case(name)
        && !name.contains(&b';')
}

/// How the value of a text field is checked, besides being UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Check {
    /// Key, email, names, mobile: no control characters other than tab.
    NoControls,
    /// Extra attributes and the user id matched against `memberUid`: anything.
    Any,
}

/// The first non-blank value of the first attribute of `names` present, trimmed, with the
/// name of that attribute. A value that is not UTF-8, or (with [`Check::NoControls`]) holds a
/// control character, is a problem naming the entry and the attribute, and gives `None`: it is
/// never replaced, cut, or passed over for the next value.
pub(super) fn text_field<'n>(
    e: &SearchEntry,
    names: &'n [String],
    check: Check,
    problems: &mut Vec<LdapProblem>,
) -> Option<(&'n str, String)> {
    for name in names {
        for v in values(e, name) {
            let t = match std::str::from_utf8(v) {
                Ok(t) => t.trim(),
                Err(err) => {
                    problems.push(LdapProblem::value(
                        &e.dn,
                        name,
                        format!(
                            "invalid UTF-8 in attribute {name:?} (after byte {} of the value): {}",
                            err.valid_up_to(),
                            shown_bytes(v)
                        ),
                    ));
                    return None;
                }
            };
            if t.is_empty() {
                continue;
            }
            if check == Check::NoControls && has_control(t) {
                problems.push(LdapProblem::value(
                    &e.dn,
                    name,
                    format!("control character in attribute {name:?}: {}", shown(t)),
                ));
                return None;
            }
            return Some((name.as_str(), t.to_string()));
        }
    }
    None
}

pub(super) enum Outcome {
    User(Box<User>),
    NoKey,
    /// No email; the key, when readable.
    NoEmail(Option<String>),
    /// Every problem of the entry, and its key when readable.
    Problems(Vec<LdapProblem>, Option<String>),
}

/// One entry as a user, or every problem of the entry.
pub(super) fn entry_to_user(
    s: &LdapSettings,
    e: &SearchEntry,
    groups: Option<&GroupIndex>,
) -> Outcome {
    let a = &s.attributes;
    let mut problems = Vec::new();
    let mut key_values = values(e, &a.key);
    let Some(raw_key) = key_values.next() else {
        return Outcome::NoKey;
    };
    let more = key_values.count();
    if more > 0 {
        problems.push(LdapProblem::value(
            &e.dn,
            &a.key,
            format!("key attribute {:?} has {} values", a.key, more + 1),
        ));
    }
    let key = match format_key(raw_key, &a.key, s.key_format) {
        Ok(k) if k.is_empty() => {
            problems.push(LdapProblem::value(
                &e.dn,
                &a.key,
                format!("empty key {:?}", a.key),
            ));
            None
        }
        Ok(k) => Some(k),
        Err(m) => {
            problems.push(LdapProblem::value(&e.dn, &a.key, m));
            None
        }
    };
    let before = problems.len();
    let email = text_field(e, &a.email, Check::NoControls, &mut problems);
    if email.is_none() && problems.len() == before {
        return if problems.is_empty() {
            Outcome::NoEmail(key)
        } else {
            Outcome::Problems(problems, key)
        };
    }
    if let Some((attr, email)) = &email
        && let Some(why) = email_error(email)
    {
        problems.push(LdapProblem::value(
            &e.dn,
            attr,
            format!(
                "invalid email in attribute {attr:?}: {} ({why})",
                shown(email)
            ),
        ));
    }
    let mut enabled = true;
    if s.user_account_control
        && let Some(v) = values(e, "userAccountControl").next()
    {
        match std::str::from_utf8(v)
            .ok()
            .and_then(|t| t.trim().parse::<i64>().ok())
        {
            Some(flags) => enabled &= flags & 0x2 == 0,
            None => problems.push(LdapProblem::value(
                &e.dn,
                "userAccountControl",
                format!("userAccountControl {} is not a number", shown_bytes(v)),
            )),
        }
    }
    if let Some(rule) = &s.disabled {
        let mut vs = values(e, &rule.attribute);
        let disabled = if rule.values.is_empty() {
            vs.next().is_some()
        } else {
            vs.any(|v| {
                // A value that is not UTF-8 equals none of the configured (UTF-8) values.
                std::str::from_utf8(v).is_ok_and(|v| {
                    rule.values
                        .iter()
                        .any(|d| d.trim().eq_ignore_ascii_case(v.trim()))
                })
            })
        };
        enabled &= !disabled;
    }
    let group_dns: Vec<String> = match &s.groups {
        GroupSource::None => Vec::new(),
        // Control characters in group DNs are checked once nested groups are known
        // (`group_problems`).
        GroupSource::MemberOf { attribute } => {
            let mut dns = Vec::new();
            for v in values(e, attribute) {
                match std::str::from_utf8(v) {
                    Ok(dn) => dns.push(dn.to_string()),
                    Err(err) => problems.push(LdapProblem::value(
                        &e.dn,
                        attribute,
                        format!(
                            "invalid UTF-8 in attribute {attribute:?} (after byte {} of the value): {}",
                            err.valid_up_to(),
                            shown_bytes(v)
                        ),
                    )),
                }
            }
            dns
        }
        GroupSource::Search(g) => {
            let uid = g.member_uid_attribute.as_ref().and_then(|_| {
                text_field(
                    e,
                    std::slice::from_ref(&g.user_id_attribute),
                    Check::Any,
                    &mut problems,
                )
            });
            groups.map_or_else(Vec::new, |idx| {
                idx.groups_of(&e.dn, uid.as_ref().map(|(_, u)| u.as_str()))
            })
        }
    };
    let mut extra = BTreeMap::new();
    for (name, attr) in &s.extra {
        if let Some((_, v)) = text_field(e, std::slice::from_ref(attr), Check::Any, &mut problems) {
            extra.insert(name.clone(), v);
        }
    }
    let mut field =
        |names: &[String]| text_field(e, names, Check::NoControls, &mut problems).map(|(_, v)| v);
    let given_name = field(&a.given_name);
    let family_name = field(&a.family_name);
    let other_name = field(&a.other_name);
    let display_name = field(&a.display_name);
    let mobile = field(&a.mobile);
    let Some((_, email)) = email else {
        return Outcome::Problems(problems, key);
    };
    let Some(key) = key else {
        return Outcome::Problems(problems, None);
    };
    if !problems.is_empty() {
        return Outcome::Problems(problems, Some(key));
    }
    Outcome::User(Box::new(User {
        key,
        email,
        given_name,
        family_name,
        other_name,
        display_name,
        mobile,
        enabled,
        groups: group_dns,
        extra,
    }))
}

/// Formats a key value.
pub fn format_key(raw: &[u8], attribute: &str, format: KeyFormat) -> Result<String, String> {
    let format = match format {
        KeyFormat::Auto if attribute.eq_ignore_ascii_case("objectGUID") => KeyFormat::Guid,
        KeyFormat::Auto if std::str::from_utf8(raw).is_ok() => KeyFormat::Text,
        KeyFormat::Auto => KeyFormat::Hex,
        f => f,
    };
    match format {
        KeyFormat::Guid => guid_string(raw).ok_or_else(|| {
            format!(
                "key attribute {attribute:?} is {} bytes long, not the 16 of a GUID",
                raw.len()
            )
        }),
        KeyFormat::Hex => Ok(raw.iter().map(|b| format!("{b:02x}")).collect()),
        _ => match std::str::from_utf8(raw).map(str::trim) {
            Ok(t) if has_control(t) => Err(format!(
                "control character in key attribute {attribute:?}: {}",
                shown(t)
            )),
            Ok(t) => Ok(t.to_string()),
            Err(_) => Err(format!(
                "key attribute {attribute:?} is not UTF-8 text: {} (set source.ldap.key_format = \"hex\" or \"guid\")",
                shown_bytes(raw)
            )),
        },
    }
}

/// Active Directory's `objectGUID` (16 bytes, the first three fields little-endian) as the
/// canonical lower-case GUID string.
pub fn guid_string(raw: &[u8]) -> Option<String> {
    let b: [u8; 16] = raw.try_into().ok()?;
    Some(uuid::Uuid::from_bytes_le(b).hyphenated().to_string())
}

/// A DN in a form where equal DNs compare equal: lower case, without spaces around the
/// separators. (Not a full RFC 4514 normalisation: attribute type aliases and hex escapes are
/// not unified, which directories do not produce in member values of their own DNs.)
pub fn dn_key(dn: &str) -> String {
    let mut out = String::with_capacity(dn.len());
    let mut chars = dn.trim().chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push('\\');
                if let Some(n) = chars.next() {
                    out.extend(n.to_lowercase());
                }
            }
            ',' | '+' | '=' => {
                while out.ends_with(' ') && !out.ends_with("\\ ") {
                    out.pop();
                }
                out.push(c);
                while chars.peek() == Some(&' ') {
                    chars.next();
                }
            }
            c => out.extend(c.to_lowercase()),
        }
    }
    out
}

/// Duplicate keys and emails, each naming both DNs; every entry sharing one has a problem.
pub(super) fn duplicates(s: &LdapSettings, users: &[User], dns: &[String]) -> Vec<LdapProblem> {
    let email_attr = s.attributes.email.first().map_or("mail", String::as_str);
    let mut problems = Vec::new();
    let mut keys: HashMap<&str, usize> = HashMap::with_capacity(users.len());
    let mut emails: HashMap<String, usize> = HashMap::with_capacity(users.len());
    for (i, u) in users.iter().enumerate() {
        if let Some(&first) = keys.get(u.key.as_str()) {
            problems.push(
                LdapProblem::value(
                    &dns[first],
                    &s.attributes.key,
                    format!("duplicate key {:?} (also on {:?})", u.key, dns[i]),
                )
                .with_value(&u.key),
            );
            problems.push(
                LdapProblem::value(
                    &dns[i],
                    &s.attributes.key,
                    format!("duplicate key {:?} (also on {:?})", u.key, dns[first]),
                )
                .with_value(&u.key),
            );
        } else {
            keys.insert(&u.key, i);
        }
        let folded = email_fold(&u.email);
        if let Some(&first) = emails.get(&folded) {
            problems.push(
                LdapProblem::value(
                    &dns[first],
                    email_attr,
                    format!(
                        "duplicate email {:?} (also on {:?})",
                        users[first].email, dns[i]
                    ),
                )
                .with_value(&users[first].email),
            );
            problems.push(
                LdapProblem::value(
                    &dns[i],
                    email_attr,
                    format!("duplicate email {:?} (also on {:?})", u.email, dns[first]),
                )
                .with_value(&u.email),
            );
        } else {
            emails.insert(folded, i);
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::super::ServerType;
    use super::*;

    #[test]
    fn guid_is_mixed_endian() {
        // The bytes of {01020304-0506-0708-090a-0b0c0d0e0f10} as AD stores them.
        let raw = [
            0x04, 0x03, 0x02, 0x01, 0x06, 0x05, 0x08, 0x07, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
            0x0f, 0x10,
        ];
        assert_eq!(
            guid_string(&raw).as_deref(),
            Some("01020304-0506-0708-090a-0b0c0d0e0f10")
        );
        assert_eq!(guid_string(&raw[..15]), None);
        // objectGUID is a GUID even when its bytes happen to be valid UTF-8.
        let ascii = *b"ABCDEFGHIJKLMNOP";
        assert_eq!(
            format_key(&ascii, "objectGUID", KeyFormat::Auto).unwrap(),
            "44434241-4645-4847-494a-4b4c4d4e4f50"
        );
    }

    #[test]
    fn key_formats() {
        assert_eq!(
            format_key(b" abc ", "entryUUID", KeyFormat::Auto).unwrap(),
            "abc"
        );
        assert_eq!(
            format_key(&[0xff, 0x01], "x", KeyFormat::Auto).unwrap(),
            "ff01"
        );
        assert!(format_key(&[0xff], "x", KeyFormat::Text).is_err());
        assert!(format_key(b"a\nb", "x", KeyFormat::Text).is_err());
        assert!(format_key(b"abc", "x", KeyFormat::Guid).is_err());
        assert_eq!(format_key(b"AB", "x", KeyFormat::Hex).unwrap(), "4142");
    }

    #[test]
    fn dn_keys() {
        assert_eq!(
            dn_key("CN=Amy Wong + sn=Kroker, OU=People,dc=Example"),
            "cn=amy wong+sn=kroker,ou=people,dc=example"
        );
        assert_eq!(dn_key(r"cn=a\, b,dc=x"), r"cn=a\, b,dc=x");
        assert_eq!(dn_key("cn=x\\ ,dc=y"), "cn=x\\ ,dc=y");
    }

    /// An entry with text attributes (valid UTF-8) and binary ones.
    fn entry(text: &[(&str, &[&str])], binary: &[(&str, &[&[u8]])]) -> SearchEntry {
        SearchEntry {
            dn: "cn=x,dc=example".into(),
            attrs: text
                .iter()
                .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
                .collect(),
            bin_attrs: binary
                .iter()
                .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_vec()).collect()))
                .collect(),
        }
    }

    fn hostile_settings() -> LdapSettings {
        let mut s = LdapSettings::new("ldap://h", "dc=example", ServerType::Generic);
        s.attributes.key = "uid".into();
        s.extra.insert("note".into(), "description".into());
        s
    }

    /// `(attribute, message)` of each problem of the entry; panics when it is a user.
    fn entry_problems(e: &SearchEntry) -> Vec<(Option<String>, String)> {
        match entry_to_user(&hostile_settings(), e, None) {
            Outcome::Problems(ps, _) => {
                for p in &ps {
                    assert_eq!(p.dn.as_deref(), Some("cn=x,dc=example"));
                }
                ps.into_iter().map(|p| (p.attribute, p.message)).collect()
            }
            Outcome::User(u) => panic!("a user: {u:?}"),
            Outcome::NoKey => panic!("no key"),
            Outcome::NoEmail(_) => panic!("no email"),
        }
    }

    fn entry_user(e: &SearchEntry) -> User {
        match entry_to_user(&hostile_settings(), e, None) {
            Outcome::User(u) => *u,
            Outcome::Problems(ps, _) => panic!("{ps:?}"),
            _ => panic!("no user"),
        }
    }

    #[test]
    fn control_characters_are_problems_naming_the_attribute() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "givenName",
                "Ab\0c",
                r#"control character in attribute "givenName": "Ab\0c""#,
            ),
            (
                "sn",
                "Last\r\nerror: forged",
                r#"control character in attribute "sn": "Last\r\nerror: forged""#,
            ),
            (
                "displayName",
                "a\u{85}b",
                r#"control character in attribute "displayName": "a\u{85}b""#,
            ),
            (
                "mobile",
                "+1 555\u{7f}0",
                r#"control character in attribute "mobile": "+1 555\u{7f}0""#,
            ),
            (
                "mail",
                "a\0@example.org",
                r#"control character in attribute "mail": "a\0@example.org""#,
            ),
            (
                "uid",
                "k\0ey",
                r#"control character in key attribute "uid": "k\0ey""#,
            ),
        ];
        for (attr, value, want) in cases {
            let mut attrs: Vec<(&str, &[&str])> =
                vec![("uid", &["k1"]), ("mail", &["a@example.org"])];
            attrs.retain(|(k, _)| k != attr);
            let v = [*value];
            attrs.push((attr, &v));
            let ps = entry_problems(&entry(&attrs, &[]));
            assert_eq!(
                ps,
                vec![(Some(attr.to_string()), want.to_string())],
                "{attr}"
            );
        }
    }

    #[test]
    fn tab_and_surrounding_whitespace_are_fine() {
        let u = entry_user(&entry(
            &[
                ("uid", &[" k1 "]),
                ("mail", &["a@example.org\n"]),
                ("givenName", &["Tab\tbed"]),
                ("sn", &["  Padded\r\n"]),
                ("description", &["line 1\nline 2"]),
            ],
            &[],
        ));
        assert_eq!(u.key, "k1");
        assert_eq!(u.email, "a@example.org");
        assert_eq!(u.given_name.as_deref(), Some("Tab\tbed"));
        assert_eq!(u.family_name.as_deref(), Some("Padded"));
        // Extra attributes may hold anything (as in the CSV source).
        assert_eq!(u.extra["note"], "line 1\nline 2");
    }

    #[test]
    fn non_utf8_values_are_problems_never_replaced() {
        let cases: &[(&str, &[u8], &str)] = &[
            (
                "mail",
                b"J\xfcrgen@example.org",
                r#"invalid UTF-8 in attribute "mail" (after byte 1 of the value): "J\xfcrgen@example.org""#,
            ),
            (
                "givenName",
                b"J\xfcrgen",
                r#"invalid UTF-8 in attribute "givenName" (after byte 1 of the value): "J\xfcrgen""#,
            ),
            (
                "mobile",
                b"+49 \xb1",
                r#"invalid UTF-8 in attribute "mobile" (after byte 4 of the value): "+49 \xb1""#,
            ),
            (
                "description",
                b"x\xc0\xafy",
                r#"invalid UTF-8 in attribute "description" (after byte 1 of the value): "x\xc0\xafy""#,
            ),
            (
                "memberOf",
                b"cn=\xff,dc=x",
                r#"invalid UTF-8 in attribute "memberOf" (after byte 3 of the value): "cn=\xff,dc=x""#,
            ),
        ];
        for (attr, value, want) in cases {
            let mut text: Vec<(&str, &[&str])> =
                vec![("uid", &["k1"]), ("mail", &["a@example.org"])];
            text.retain(|(k, _)| k != attr);
            let v = [*value];
            let ps = entry_problems(&entry(&text, &[(attr, &v)]));
            assert_eq!(
                ps,
                vec![(Some(attr.to_string()), want.to_string())],
                "{attr}"
            );
        }
        // A key that is not UTF-8 is written in hex (key_format = auto).
        let u = entry_user(&entry(
            &[("mail", &["a@example.org"])],
            &[("uid", &[b"\xff\x01"])],
        ));
        assert_eq!(u.key, "ff01");
    }

    #[test]
    fn first_value_is_used_and_checked() {
        // Two mails: the first. A blank first value is passed over.
        let u = entry_user(&entry(
            &[
                ("uid", &["k1"]),
                ("mail", &["first@example.org", "second@example.org"]),
                ("givenName", &[" ", "Second"]),
            ],
            &[],
        ));
        assert_eq!(u.email, "first@example.org");
        assert_eq!(u.given_name.as_deref(), Some("Second"));
        // A bad first value is a problem: the next value is not taken instead.
        let ps = entry_problems(&entry(
            &[
                ("uid", &["k1"]),
                ("mail", &["first@example.org"]),
                ("givenName", &["Bad\0", "Good"]),
            ],
            &[],
        ));
        assert_eq!(ps.len(), 1, "{ps:?}");
        // Two key values.
        let ps = entry_problems(&entry(
            &[("uid", &["k1", "k2"]), ("mail", &["a@example.org"])],
            &[],
        ));
        assert_eq!(
            ps,
            vec![(
                Some("uid".into()),
                r#"key attribute "uid" has 2 values"#.into()
            )]
        );
    }

    #[test]
    fn every_problem_of_an_entry_is_reported() {
        let ps = entry_problems(&entry(
            &[
                ("uid", &["k\n1"]),
                ("mail", &["a b@example.org"]),
                ("givenName", &["G\0"]),
                ("sn", &["S\u{1b}[31m"]),
            ],
            &[],
        ));
        let attrs: Vec<Option<&str>> = ps.iter().map(|(a, _)| a.as_deref()).collect();
        assert_eq!(
            attrs,
            vec![Some("uid"), Some("mail"), Some("givenName"), Some("sn")]
        );
        assert_eq!(
            ps[1].1,
            r#"invalid email in attribute "mail": "a b@example.org" (contains whitespace or control characters)"#
        );
    }

    #[test]
    fn shown_values_are_escaped_and_cut() {
        assert_eq!(shown("a\nb\0\"c\\"), r#""a\nb\0\"c\\""#);
        let long = "é".repeat(100_000);
        let s = shown(&long);
        assert!(s.ends_with("... (200000 bytes in all)"), "{s}");
        assert_eq!(s.chars().filter(|c| *c == 'é').count(), SHOWN_VALUE);
        assert_eq!(shown_bytes(b"J\xfc\"\n"), r#""J\xfc\"\n""#);
        assert!(shown_bytes(&[0xff; 1000]).ends_with("... (1000 bytes in all)"));
    }

    #[test]
    fn attribute_descriptions_match_by_name_without_options() {
        let cases: &[(&str, &str, bool)] = &[
            ("mail", "mail", true),
            ("MAIL", "mail", true),
            ("mail;lang-en", "mail", true),
            ("objectGUID;binary", "objectguid", true),
            ("mailbox", "mail", false),
            ("mai", "mail", false),
            ("mail", "mail;lang-en", false),
            ("mail;lang-en", "mail;lang-en", false),
            ("", "mail", false),
            ("m\u{e4}il", "M\u{c4}IL", false),
        ];
        for (k, name, want) in cases {
            let old = k.split(';').next().unwrap_or(k).eq_ignore_ascii_case(name);
            assert_eq!(is_attribute(k, name), *want, "{k} / {name}");
            assert_eq!(old, *want, "{k} / {name}");
        }
    }
}
