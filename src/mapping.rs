//! Source user → target account: field templates, group → role rules, default roles, filters,
//! and the content hash of a mapped account. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{USER_FIELDS, User};

/// How a target field's values compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// Compared exactly (after the source's trim + NFC).
    Text,
    /// Compared case-insensitively.
    Email,
    /// `true` / `false` (accepts 1/0/yes/no when rendered; stored canonical).
    Bool,
}

/// A mapped value template: literal text with `{field}` or `{field | filter | ...}` holes.
/// Fields are [`USER_FIELDS`] or extra attribute names; filters are `lower`, `upper`, `trim`.
/// `{{` and `}}` are literal braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field { name: String, filters: Vec<Filter> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    Lower,
    Upper,
    Trim,
}

impl Template {
    /// Parses a template. Errors say what is wrong and where.
    pub fn parse(src: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = src.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    lit.push('}');
                }
                '}' => return Err(format!("unmatched '}}' at position {i}")),
                '{' => {
                    let mut inner = String::new();
                    let mut closed = false;
                    for (_, c) in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        inner.push(c);
                    }
                    if !closed {
                        return Err(format!("unclosed '{{' at position {i}"));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut lit)));
                    }
                    let mut pieces = inner.split('|').map(str::trim);
                    let name = pieces.next().unwrap_or_default();
                    if name.is_empty() {
                        return Err(format!("empty field name at position {i}"));
                    }
                    let filters = pieces
                        .map(|f| match f {
                            "lower" => Ok(Filter::Lower),
                            "upper" => Ok(Filter::Upper),
                            "trim" => Ok(Filter::Trim),
                            other => Err(format!(
                                "unknown filter {other:?} (known: lower, upper, trim)"
                            )),
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    parts.push(Part::Field {
                        name: name.to_string(),
                        filters,
                    });
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        Ok(Template {
            source: src.to_string(),
            parts,
        })
    }

    /// The field names the template refers to.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field { name, .. } => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Checks every field against the user fields and the given extra attribute names.
    pub fn check_fields(&self, extra: &[String]) -> Result<(), String> {
        for f in self.fields() {
            if !USER_FIELDS.contains(&f) && !extra.iter().any(|e| e == f) {
                let mut known: Vec<&str> = USER_FIELDS.to_vec();
                known.extend(extra.iter().map(String::as_str));
                return Err(format!(
                    "unknown field {f:?} in template {:?}; known fields: {}",
                    self.source,
                    known.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Renders for a user. Absent fields render as empty text; the result is trimmed, and the
    /// space a template puts around an absent field is not doubled (`{given_name}
    /// {other_name} {family_name}` without an other name is `Amy Wong`). Spaces inside source
    /// values are kept as they are.
    pub fn render(&self, user: &User) -> String {
        let mut out = String::new();
        // An absent (empty) field just followed a space: a literal's leading spaces are a gap.
        let mut gap = false;
        for p in &self.parts {
            match p {
                Part::Literal(l) => {
                    if gap {
                        out.push_str(l.trim_start_matches(' '));
                    } else {
                        out.push_str(l);
                    }
                    gap = false;
                }
                Part::Field { name, filters } => {
                    let v = user.field(name).unwrap_or("");
                    let start = out.len();
                    if filters.is_empty() {
                        out.push_str(v);
                    } else {
                        let mut v = v.to_string();
                        for f in filters {
                            v = match f {
                                Filter::Lower => v.to_lowercase(),
                                Filter::Upper => v.to_uppercase(),
                                Filter::Trim => v.trim().to_string(),
                            };
                        }
                        out.push_str(&v);
                    }
                    if out.len() == start {
                        gap = gap || out.is_empty() || out.ends_with(' ');
                    }
                }
            }
        }
        let trimmed = out.trim();
        if trimmed.len() != out.len() {
            trimmed.to_string()
        } else {
            out
        }
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether [`Self::render`] gives empty text for `user`, without rendering: every literal
    /// and every field value is blank (the filters never turn blank text into non-blank).
    pub fn renders_empty(&self, user: &User) -> bool {
        self.parts.iter().all(|p| match p {
            Part::Literal(l) => l.trim().is_empty(),
            Part::Field { name, .. } => user.field(name).unwrap_or("").trim().is_empty(),
        })
    }

    /// Whether the template names a field (else it renders the same text for everyone).
    fn has_fields(&self) -> bool {
        self.fields().next().is_some()
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn required_empty(fm: &FieldMapping) -> String {
    format!(
        "field {} is empty (template {:?}) but the target requires it",
        fm.name,
        fm.template.as_str()
    )
}

fn not_bool(fm: &FieldMapping, v: &str) -> String {
    format!(
        "field {} must be true or false, template {:?} gave {v:?}",
        fm.name,
        fm.template.as_str()
    )
}

/// One target field: its name in the vendor API, how it compares, and its template.
#[derive(Debug, Clone)]
pub struct FieldMapping {
    pub name: String,
    pub kind: FieldKind,
    pub required: bool,
    pub template: Template,
}

/// A group → roles rule. `group` matches a user's group case-insensitively, either whole (a
/// name, or a full DN) or, when `group` holds no `=`, the value of a DN's first RDN
/// (`cn=Admins,ou=groups,dc=example,dc=com` matches `admins`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRule {
    pub group: String,
    pub roles: Vec<String>,
}

impl RoleRule {
    pub fn matches(&self, group: &str) -> bool {
        if eq_fold(group, &self.group) {
            return true;
        }
        if self.group.contains('=') {
            return false;
        }
        first_rdn_value(group).is_some_and(|v| eq_fold(&v, &self.group))
    }
}

/// Case-insensitive equality as `to_lowercase() ==` says, without allocating for ASCII (this
/// runs for every group of every user on every run).
fn eq_fold(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    // Whole-string lowering (Greek final sigma depends on its neighbours).
    a.to_lowercase() == b.to_lowercase()
}

/// The value of the first RDN of a DN-looking string (`cn=Amy Wong+sn=Kroker,ou=x` → `Amy Wong`),
/// with `\,`-style escapes undone. `None` when the string is not DN-shaped.
fn first_rdn_value(dn: &str) -> Option<String> {
    let eq = dn.find('=')?;
    // Bytes, so that hex escapes of multi-byte UTF-8 (`\C3\A9`) decode whole (RFC 4514).
    let mut out: Vec<u8> = Vec::new();
    let rest = &dn.as_bytes()[eq + 1..];
    let mut i = 0;
    while i < rest.len() {
        match rest[i] {
            b'\\' => {
                // Two hex digits exactly (`from_str_radix` alone would take a sign: `\+b`).
                let hex = rest
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => match dn[eq + 1 + i + 1..].chars().next() {
                        Some(c) => {
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            i += 1 + c.len_utf8();
                        }
                        None => i += 1,
                    },
                }
            }
            b',' | b'+' => break,
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    let v = String::from_utf8_lossy(&out);
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_string())
}

/// Which source users a target receives.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// When non-empty, a user must be in at least one of these groups (matched like role rules).
    pub include_groups: Vec<String>,
    /// A user in any of these groups is out of scope.
    pub exclude_groups: Vec<String>,
}

/// Why a target's filters leave a user out of its scope.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum OutOfScope {
    /// The user is in this `exclude_groups` entry.
    ExcludedGroup { group: String },
    /// `include_groups` is set and the user is in none of them.
    NotIncluded,
}

impl std::fmt::Display for OutOfScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutOfScope::ExcludedGroup { group } => write!(f, "excluded group {group}"),
            OutOfScope::NotIncluded => f.write_str("in none of the included groups"),
        }
    }
}

impl UserFilter {
    pub fn admits(&self, user: &User) -> bool {
        self.out_of_scope(user).is_none()
    }

    /// Why the user is out of scope (the first excluded group it is in, else not in any
    /// included group), or `None` when the target receives it.
    pub fn out_of_scope(&self, user: &User) -> Option<OutOfScope> {
        let matches = |g: &String| {
            let rule = RoleRule {
                group: g.clone(),
                roles: Vec::new(),
            };
            user.groups.iter().any(|ug| rule.matches(ug))
        };
        if let Some(group) = self.exclude_groups.iter().find(|g| matches(g)) {
            return Some(OutOfScope::ExcludedGroup {
                group: group.clone(),
            });
        }
        if !self.include_groups.is_empty() && !self.include_groups.iter().any(matches) {
            return Some(OutOfScope::NotIncluded);
        }
        None
    }
}

/// The complete mapping of one target.
#[derive(Debug, Clone)]
pub struct TargetMapping {
    pub fields: Vec<FieldMapping>,
    pub role_rules: Vec<RoleRule>,
    pub default_roles: Vec<String>,
    /// Source group → target groups (targets with groups only; `RoleRule::roles` holds the
    /// target groups here).
    pub group_rules: Vec<RoleRule>,
    /// Target groups of users no group rule matches.
    pub default_groups: Vec<String>,
    pub filter: UserFilter,
    /// The field that identifies the account to a human and for adoption (email or login).
    pub login_field: String,
}

/// A mapped (desired) account: the target's fields, roles and enabled flag for one source key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub key: String,
    pub fields: BTreeMap<String, String>,
    pub roles: BTreeSet<String>,
    /// Target-side groups (targets that have them; empty elsewhere).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub groups: BTreeSet<String>,
    pub enabled: bool,
    /// [`content_hash`] of `fields`, `roles` and `groups` (not `enabled`, which is compared
    /// directly).
    pub hash: ContentHash,
}

/// A 128-bit content hash (xxh3-128), 16 bytes in memory and 32 lowercase hex digits in the
/// store, in saved plans and in logs. Kept as bytes (alignment 1) so that a million recorded
/// accounts do not carry a million hex strings.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ContentHash([u8; 16]);

impl ContentHash {
    pub fn from_u128(v: u128) -> ContentHash {
        ContentHash(v.to_be_bytes())
    }

    /// Parses 32 hex digits; anything else is `None`.
    pub fn parse(s: &str) -> Option<ContentHash> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(ContentHash::from_u128)
    }

    /// [`parse`](Self::parse), or the all-zero hash for text that is not a content hash (it
    /// equals no account's hash, so such a row is simply updated by the next plan).
    pub fn parse_lenient(s: &str) -> ContentHash {
        Self::parse(s).unwrap_or_default()
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", u128::from_be_bytes(self.0))
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        ContentHash::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not a content hash: {text:?}")))
    }
}

impl Account {
    /// The login (or email) shown to humans and used for adoption.
    pub fn login<'a>(&'a self, mapping: &TargetMapping) -> Option<&'a str> {
        self.fields.get(&mapping.login_field).map(String::as_str)
    }
}

/// The outcome of mapping one source user for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    Account(Account),
    /// Out of this target's scope (filters): treated as absent from the source.
    Filtered,
    /// Cannot be mapped (a required field is empty). Left untouched and reported.
    Invalid(String),
}

impl TargetMapping {
    /// Maps one user.
    pub fn map(&self, user: &User) -> Mapped {
        if !self.filter.admits(user) {
            return Mapped::Filtered;
        }
        let mut fields = BTreeMap::new();
        for fm in &self.fields {
            let v = fm.template.render(user);
            if v.is_empty() {
                if fm.required {
                    return Mapped::Invalid(required_empty(fm));
                }
                continue;
            }
            let v = match fm.kind {
                FieldKind::Bool => match parse_bool(&v) {
                    Some(b) => b.to_string(),
                    None => return Mapped::Invalid(not_bool(fm, &v)),
                },
                FieldKind::Text | FieldKind::Email => v,
            };
            fields.insert(fm.name.clone(), v);
        }
        let mut roles = BTreeSet::new();
        for rule in &self.role_rules {
            if user.groups.iter().any(|g| rule.matches(g)) {
                roles.extend(rule.roles.iter().cloned());
            }
        }
        if roles.is_empty() {
            roles.extend(self.default_roles.iter().cloned());
        }
        let mut groups = BTreeSet::new();
        for rule in &self.group_rules {
            if user.groups.iter().any(|g| rule.matches(g)) {
                groups.extend(rule.roles.iter().cloned());
            }
        }
        if groups.is_empty() {
            groups.extend(self.default_groups.iter().cloned());
        }
        let hash = content_hash(self, &fields, &roles, &groups);
        Mapped::Account(Account {
            key: user.key.clone(),
            fields,
            roles,
            groups,
            enabled: user.enabled,
            hash,
        })
    }

    /// Whether [`Self::map`] would find the user invalid, and why: (field, problem). Cheaper
    /// than mapping (only required and bool fields are looked at; nothing is built). A user
    /// out of this target's scope is never unmappable here.
    pub fn unmappable(&self, user: &User) -> Option<(String, String)> {
        if !self.filter.admits(user) {
            return None;
        }
        for fm in &self.fields {
            if fm.required && fm.template.renders_empty(user) {
                return Some((fm.name.clone(), required_empty(fm)));
            }
            if fm.kind == FieldKind::Bool && fm.template.has_fields() {
                let v = fm.template.render(user);
                if !v.is_empty() && parse_bool(&v).is_none() {
                    return Some((fm.name.clone(), not_bool(fm, &v)));
                }
            }
        }
        None
    }

    pub fn field_kind(&self, name: &str) -> FieldKind {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.kind)
            .unwrap_or(FieldKind::Text)
    }

    /// Whether two values of a field are the same for this target.
    pub fn same_value(&self, field: &str, a: &str, b: &str) -> bool {
        match self.field_kind(field) {
            FieldKind::Email => crate::model::email_eq(a, b),
            FieldKind::Text | FieldKind::Bool => a == b,
        }
    }
}

/// Parses the boolean spellings accepted in templates and sources.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" => Some(true),
        "false" | "0" | "no" | "n" => Some(false),
        _ => None,
    }
}

/// A stable 128-bit content hash (XXH3, hex) of an account's fields, roles and groups. Email
/// fields are hashed case-folded, so a change of case alone does not count as a change. The
/// encoding is length-prefixed, so no two different accounts share an input; groups are hashed
/// only when there are some, so accounts of targets without groups hash as before.
pub fn content_hash(
    mapping: &TargetMapping,
    fields: &BTreeMap<String, String>,
    roles: &BTreeSet<String>,
    groups: &BTreeSet<String>,
) -> ContentHash {
    let mut buf = Vec::with_capacity(256);
    let mut put = |s: &str| {
        buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
        buf.extend_from_slice(s.as_bytes());
    };
    put("dirsync.account.v1");
    for (k, v) in fields {
        put(k);
        match mapping.field_kind(k) {
            FieldKind::Email => put(&crate::model::email_fold(v)),
            FieldKind::Text | FieldKind::Bool => put(v),
        }
    }
    put("roles");
    for r in roles {
        put(r);
    }
    if !groups.is_empty() {
        put("groups");
        for g in groups {
            put(g);
        }
    }
    ContentHash::from_u128(xxhash_rust::xxh3::xxh3_128(&buf))
}

/// Maps every user of the snapshot for one target: the accounts (sorted by key) and the users
/// that cannot be mapped, with why (for adoption, saved plans and tests; the planner maps
/// lazily).
pub fn map_all(
    mapping: &TargetMapping,
    snapshot: &crate::model::Snapshot,
) -> (Vec<Account>, Vec<(String, String)>) {
    let mut desired = Vec::with_capacity(snapshot.len());
    let mut invalid = Vec::new();
    for u in snapshot.users() {
        match mapping.map(u) {
            Mapped::Account(a) => desired.push(a),
            Mapped::Filtered => {}
            Mapped::Invalid(why) => invalid.push((u.key.clone(), why)),
        }
    }
    (desired, invalid)
}

// What the store recorded and what a target lists: the accounts plans are made against.

/// One recorded account, light form: what the planner needs for every account on every run.
/// The applied attributes ([`AccountState`]) are loaded only for accounts whose hash differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedAccount {
    pub key: String,
    pub remote_id: Option<String>,
    pub login: Option<String>,
    /// Content hash of the last applied mapped account (see `mapping::Account::hash`).
    pub hash: ContentHash,
    pub enabled: bool,
    /// dirsync created or adopted it. Accounts with `owned = false` are never changed.
    pub owned: bool,
    pub adopted: bool,
    /// When dirsync last disabled it (start of the `delete_after` grace period).
    pub disabled_at: Option<DateTime<Utc>>,
}

/// The last applied attributes of an account: target field name → value, and its roles.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AccountState {
    pub fields: BTreeMap<String, String>,
    pub roles: BTreeSet<String>,
    /// Target-side groups, for targets that have them (Valuekeep).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub groups: BTreeSet<String>,
}

/// One account as the target reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoteAccount {
    pub remote_id: String,
    /// The login or email the target shows (what adoption matches on).
    pub login: Option<String>,
    pub email: Option<String>,
    /// Target field name → value, in the same names as the mapping's fields.
    pub fields: BTreeMap<String, String>,
    pub roles: BTreeSet<String>,
    pub enabled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        let mut u = User::new("E1", "Alice.Smith@Example.com");
        u.given_name = Some("Alice".into());
        u.family_name = Some("Smith".into());
        u.groups = vec![
            "cn=Admins,ou=groups,dc=example,dc=com".into(),
            "staff".into(),
        ];
        u.extra.insert("department".into(), "Eng".into());
        u
    }

    fn mapping() -> TargetMapping {
        TargetMapping {
            fields: vec![
                FieldMapping {
                    name: "email".into(),
                    kind: FieldKind::Email,
                    required: true,
                    template: Template::parse("{email}").unwrap(),
                },
                FieldMapping {
                    name: "name".into(),
                    kind: FieldKind::Text,
                    required: false,
                    template: Template::parse("{given_name} {other_name} {family_name}").unwrap(),
                },
                FieldMapping {
                    name: "login".into(),
                    kind: FieldKind::Text,
                    required: true,
                    template: Template::parse("{email | lower}").unwrap(),
                },
            ],
            role_rules: vec![RoleRule {
                group: "admins".into(),
                roles: vec!["ROLE_SYSTEM_ADMIN".into()],
            }],
            default_roles: vec!["ROLE_COLLABORATOR".into()],
            group_rules: vec![],
            default_groups: vec![],
            filter: UserFilter::default(),
            login_field: "login".into(),
        }
    }

    #[test]
    fn templates_table() {
        let u = user();
        let cases: &[(&str, &str)] = &[
            ("{email}", "Alice.Smith@Example.com"),
            ("{email | lower}", "alice.smith@example.com"),
            ("{given_name|upper}", "ALICE"),
            ("{given_name} {family_name}", "Alice Smith"),
            ("{given_name} {other_name} {family_name}", "Alice Smith"),
            ("{{literal}} {key}", "{literal} E1"),
            ("{department}-{key}", "Eng-E1"),
            ("{mobile}", ""),
            ("{mobile} {given_name}", "Alice"),
            ("{given_name} {mobile}", "Alice"),
            (
                "{given_name} {mobile} {other_name} {family_name}",
                "Alice Smith",
            ),
            ("{given_name} ({mobile})", "Alice ()"),
        ];
        for (src, want) in cases {
            let t = Template::parse(src).unwrap();
            assert_eq!(t.render(&u), *want, "template {src}");
        }
        // Spaces inside a source value are the source's: kept.
        let mut v = u.clone();
        v.given_name = Some("Anne  Marie".into());
        let t = Template::parse("{given_name} {other_name} {family_name}").unwrap();
        assert_eq!(t.render(&v), "Anne  Marie Smith");
    }

    #[test]
    fn template_errors() {
        for bad in ["{email", "email}", "{}", "{email | shout}"] {
            assert!(Template::parse(bad).is_err(), "{bad} should fail");
        }
        let t = Template::parse("{emial}").unwrap();
        let err = t.check_fields(&["department".into()]).unwrap_err();
        assert!(err.contains("\"emial\""), "{err}");
        assert!(err.contains("department"), "{err}");
        assert!(
            Template::parse("{department}")
                .unwrap()
                .check_fields(&["department".into()])
                .is_ok()
        );
    }

    #[test]
    fn role_rules_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("admins", "admins", true),
            ("Admins", "admins", true),
            ("admins", "cn=Admins,ou=groups,dc=example,dc=com", true),
            // RFC 4514 escapes as servers return them: hex pairs and escaped specials.
            ("#admins", "cn=\\23admins,ou=groups,dc=example,dc=com", true),
            ("R&D, Europe", "cn=R&D\\2C Europe,ou=groups,dc=x", true),
            ("R&D, Europe", "cn=R&D\\, Europe,ou=groups,dc=x", true),
            ("josé", "cn=jos\\C3\\A9,dc=x", true),
            ("josé", "cn=jos\\é,dc=x", true),
            ("a+b", "cn=a\\+b+sn=c,dc=x", true),
            (
                "cn=admins,ou=groups,dc=example,dc=com",
                "cn=Admins,ou=groups,dc=example,dc=com",
                true,
            ),
            (
                "cn=admins,ou=other",
                "cn=Admins,ou=groups,dc=example,dc=com",
                false,
            ),
            ("Amy Wong", "cn=Amy Wong+sn=Kroker,ou=people", true),
            ("a,b", "cn=a\\,b,ou=g", true),
            ("admin", "admins", false),
        ];
        for (rule, group, want) in cases {
            let r = RoleRule {
                group: (*rule).into(),
                roles: vec![],
            };
            assert_eq!(r.matches(group), *want, "rule {rule} group {group}");
        }
    }

    #[test]
    fn maps_roles_and_defaults() {
        let m = mapping();
        let Mapped::Account(a) = m.map(&user()) else {
            panic!("not mapped")
        };
        assert_eq!(
            a.roles.iter().collect::<Vec<_>>(),
            vec!["ROLE_SYSTEM_ADMIN"]
        );
        assert_eq!(a.fields["login"], "alice.smith@example.com");
        assert_eq!(a.login(&m), Some("alice.smith@example.com"));
        let mut u = user();
        u.groups.clear();
        let Mapped::Account(b) = m.map(&u) else {
            panic!("not mapped")
        };
        assert_eq!(
            b.roles.iter().collect::<Vec<_>>(),
            vec!["ROLE_COLLABORATOR"]
        );
    }

    #[test]
    fn required_empty_is_invalid() {
        let mut m = mapping();
        m.fields[1].required = true;
        let mut u = user();
        u.given_name = None;
        u.family_name = None;
        assert!(matches!(m.map(&u), Mapped::Invalid(msg) if msg.contains("name")));
    }

    #[test]
    fn filters() {
        let mut m = mapping();
        m.filter.include_groups = vec!["staff".into()];
        assert!(matches!(m.map(&user()), Mapped::Account(_)));
        m.filter.exclude_groups = vec!["admins".into()];
        assert_eq!(m.map(&user()), Mapped::Filtered);
        m.filter = UserFilter {
            include_groups: vec!["contractors".into()],
            exclude_groups: vec![],
        };
        assert_eq!(m.map(&user()), Mapped::Filtered);
    }

    #[test]
    fn hash_is_stable_and_case_insensitive_for_email() {
        let m = mapping();
        let Mapped::Account(a) = m.map(&user()) else {
            panic!()
        };
        let mut u = user();
        u.email = "alice.smith@example.com".into();
        let Mapped::Account(b) = m.map(&u) else {
            panic!()
        };
        assert_eq!(a.hash, b.hash, "email case must not change the hash");
        u.family_name = Some("Smyth".into());
        let Mapped::Account(c) = m.map(&u) else {
            panic!()
        };
        assert_ne!(a.hash, c.hash);
        // Pinned: the hash is persisted, so its encoding must never change silently.
        assert_eq!(a.hash.to_string().len(), 32);
        assert_eq!(ContentHash::parse(&a.hash.to_string()), Some(a.hash));
        assert_eq!(ContentHash::parse("+0000000000000000000000000000000"), None);
        assert_eq!(ContentHash::parse_lenient("h"), ContentHash::default());
        let again = content_hash(&m, &a.fields, &a.roles, &a.groups);
        assert_eq!(again, a.hash);
    }

    #[test]
    fn bool_fields() {
        let mut m = mapping();
        m.fields.push(FieldMapping {
            name: "isTechnician".into(),
            kind: FieldKind::Bool,
            required: false,
            template: Template::parse("yes").unwrap(),
        });
        let Mapped::Account(a) = m.map(&user()) else {
            panic!()
        };
        assert_eq!(a.fields["isTechnician"], "true");
        m.fields.last_mut().unwrap().template = Template::parse("{department}").unwrap();
        assert!(matches!(m.map(&user()), Mapped::Invalid(_)));
    }
}
