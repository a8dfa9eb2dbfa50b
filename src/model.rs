//! The source-side domain: `User`, `Snapshot`, and the normalisation rules every source applies.
//!
//! Normalisation (applied once, at the source boundary, by [`User::normalized`]):
//! - every text value is trimmed; a value that is empty after trimming is absent (`None`);
//! - names, display names and extra attributes are put in Unicode NFC, so `é` typed as one code
//!   point or as `e` + combining accent is the same name;
//! - emails are trimmed and kept as written, but compared case-insensitively
//!   ([`email_eq`], [`email_fold`]): `Alice@Example.com` and `alice@example.com` are one address;
//! - groups are trimmed, NFC, de-duplicated case-insensitively and sorted.

use std::collections::BTreeMap;

use unicode_normalization::UnicodeNormalization;

/// One person as the source of truth describes them, after normalisation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct User {
    /// Stable source key (CSV key column, LDAP `entryUUID` / `objectGUID`). Never the email.
    pub key: String,
    pub email: String,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub other_name: Option<String>,
    pub display_name: Option<String>,
    pub mobile: Option<String>,
    /// False when the source marks the person disabled (CSV column, AD flag, ...).
    pub enabled: bool,
    /// Group names (CSV) or DNs (LDAP), sorted and de-duplicated.
    pub groups: Vec<String>,
    /// Further attributes the source was told to read, by name.
    pub extra: BTreeMap<String, String>,
}

/// The names a mapping template may refer to, besides the `extra` attributes.
pub const USER_FIELDS: &[&str] = &[
    "key",
    "email",
    "given_name",
    "family_name",
    "other_name",
    "display_name",
    "mobile",
];

impl User {
    /// A user with only a key and an email; the rest empty and enabled. Handy for tests and
    /// sources that fill fields one by one.
    pub fn new(key: impl Into<String>, email: impl Into<String>) -> Self {
        User {
            key: key.into(),
            email: email.into(),
            given_name: None,
            family_name: None,
            other_name: None,
            display_name: None,
            mobile: None,
            enabled: true,
            groups: Vec::new(),
            extra: BTreeMap::new(),
        }
    }

    /// Applies the normalisation rules of this module.
    pub fn normalized(mut self) -> Self {
        trim_in_place(&mut self.key);
        trim_in_place(&mut self.email);
        for f in [
            &mut self.given_name,
            &mut self.family_name,
            &mut self.other_name,
            &mut self.display_name,
        ] {
            normalize_opt_in_place(f);
        }
        if let Some(m) = &mut self.mobile {
            trim_in_place(m);
        }
        self.mobile = self.mobile.take().filter(|m| !m.is_empty());
        for g in &mut self.groups {
            normalize_in_place(g);
        }
        self.groups.retain(|g| !g.is_empty());
        self.groups.sort_by(|a, b| cmp_lower(a, b));
        self.groups.dedup_by(|a, b| {
            if a.is_ascii() && b.is_ascii() {
                a.eq_ignore_ascii_case(b)
            } else {
                a.to_lowercase() == b.to_lowercase()
            }
        });
        self.extra.retain(|_, v| {
            normalize_in_place(v);
            !v.is_empty()
        });
        self
    }

    /// The value of a named field for templates: one of [`USER_FIELDS`] or an extra attribute.
    /// Absent values are `None`.
    pub fn field(&self, name: &str) -> Option<&str> {
        match name {
            "key" => Some(&self.key),
            "email" => Some(&self.email),
            "given_name" => self.given_name.as_deref(),
            "family_name" => self.family_name.as_deref(),
            "other_name" => self.other_name.as_deref(),
            "display_name" => self.display_name.as_deref(),
            "mobile" => self.mobile.as_deref(),
            other => self.extra.get(other).map(String::as_str),
        }
    }
}

/// Trim + NFC; `None` when nothing is left.
pub fn normalize_text(s: &str) -> Option<String> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    if t.is_ascii() {
        return Some(t.to_string());
    }
    Some(t.nfc().collect())
}

fn trim_in_place(s: &mut String) {
    let end = s.trim_end().len();
    s.truncate(end);
    let start = s.len() - s.trim_start().len();
    if start > 0 {
        s.drain(..start);
    }
}

fn normalize_in_place(s: &mut String) {
    trim_in_place(s);
    if !s.is_ascii() && !unicode_normalization::is_nfc(s) {
        *s = s.nfc().collect();
    }
}

fn normalize_opt_in_place(s: &mut Option<String>) {
    if let Some(v) = s {
        normalize_in_place(v);
    }
    if s.as_deref() == Some("") {
        *s = None;
    }
}

fn cmp_lower(a: &str, b: &str) -> std::cmp::Ordering {
    if a.is_ascii() && b.is_ascii() {
        a.bytes()
            .map(|c| c.to_ascii_lowercase())
            .cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
    } else {
        a.to_lowercase().cmp(&b.to_lowercase())
    }
}

/// The form under which emails are compared and indexed.
pub fn email_fold(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Case-insensitive email comparison.
pub fn email_eq(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim()) || email_fold(a) == email_fold(b)
}

/// How many characters of a quarantined value the report shows.
pub const QUARANTINE_SHOWN: usize = 80;

/// A source record set aside because one of its values is wrong (an invalid email, a control
/// character, an unknown enabled value, an empty or duplicate key, ...). The run plans every
/// other user; for every target the accounts under a quarantined key are left exactly as they
/// are (never created, updated, enabled, disabled or deleted, never "missing").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Quarantined {
    /// The record's source key, when it could be read (not for an empty key).
    pub key: Option<String>,
    /// Where the record is: `file:line` (CSV) or the entry's DN (LDAP).
    pub location: String,
    /// The field (column or attribute) with the problem.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
    /// The value as shown: quoted, escaped (no control character survives) and cut.
    pub value: String,
    /// For a record without a usable key: its email as read (trimmed, possibly invalid), so
    /// that the account recorded for it can be found and left alone
    /// ([`crate::plan::keyless`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

impl Quarantined {
    /// A quarantined record; `value` is escaped and cut here (see [`shown_value`]).
    pub fn new(
        key: Option<&str>,
        location: impl Into<String>,
        field: impl Into<String>,
        problem: impl Into<String>,
        value: &str,
    ) -> Self {
        Quarantined {
            key: key
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_string),
            location: location.into(),
            field: field.into(),
            problem: problem.into(),
            value: shown_value(value),
            email: None,
        }
    }

    /// The same record carrying the email it was read with, when it has no key (see
    /// [`Quarantined::email`]); an empty email or one with a control character is not kept.
    pub fn with_email(mut self, email: Option<&str>) -> Self {
        if self.key.is_none() {
            self.email = email
                .map(str::trim)
                .filter(|e| !e.is_empty() && !e.chars().any(char::is_control))
                .map(str::to_string);
        }
        self
    }
}

/// A value as reports show it: quoted, with quotes, backslashes, control and other
/// non-printable characters escaped, cut after [`QUARANTINE_SHOWN`] characters (saying so).
pub fn shown_value(v: &str) -> String {
    match v.char_indices().nth(QUARANTINE_SHOWN) {
        None => format!("{v:?}"),
        Some((i, _)) => format!("{:?}... ({} bytes in all)", &v[..i], v.len()),
    }
}

/// A validated read of the source: users sorted by key, keys and emails unique, and the
/// records set aside ([`Quarantined`]). A source returns a snapshot or an error: file-level
/// problems fail the read, record-level problems quarantine the record.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    users: Vec<User>,
    /// Users the source holds (more than `users` in a prefiltered snapshot).
    total: usize,
    partial: bool,
    /// Records set aside, in source order.
    quarantined: Vec<Quarantined>,
    /// The keys of `quarantined`, sorted and de-duplicated.
    quarantined_keys: Vec<String>,
}

impl Snapshot {
    /// Builds a snapshot, sorting by key. Callers (sources) have already rejected duplicate
    /// keys and emails with row-level errors; a duplicate key here is reported as an error too.
    pub fn new(users: Vec<User>) -> Result<Self, DuplicateKey> {
        let total = users.len();
        Self::build(users, total, false)
    }

    /// A prefiltered snapshot: the source held `total` users, and `users` are those a
    /// [`crate::plan::Prefilter`] kept (the rest are exactly as recorded on every target).
    pub fn partial(users: Vec<User>, total: usize) -> Result<Self, DuplicateKey> {
        Self::build(users, total, true)
    }

    fn build(mut users: Vec<User>, total: usize, partial: bool) -> Result<Self, DuplicateKey> {
        users.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        if let Some(w) = users.windows(2).find(|w| w[0].key == w[1].key) {
            return Err(DuplicateKey(w[0].key.clone()));
        }
        Ok(Snapshot {
            users,
            total,
            partial,
            quarantined: Vec::new(),
            quarantined_keys: Vec::new(),
        })
    }

    /// Adds the records the source set aside. They count in [`Self::len`] (the source holds
    /// them); a user whose key is quarantined is taken out of the users, so that nothing is
    /// planned for that key.
    pub fn with_quarantined(self, quarantined: Vec<Quarantined>) -> Self {
        self.quarantine_more(quarantined)
    }

    /// Adds more records set aside, found after the read (users a target cannot map): a user
    /// under a quarantined key leaves the users; [`Self::len`] counts each record once.
    pub fn quarantine_more(mut self, more: Vec<Quarantined>) -> Self {
        let mut keys: Vec<String> = more.iter().filter_map(|q| q.key.clone()).collect();
        keys.sort_unstable();
        keys.dedup();
        let before = self.users.len();
        self.users
            .retain(|u| keys.binary_search_by(|k| k.as_str().cmp(&u.key)).is_err());
        let taken = before - self.users.len();
        self.total = self.total - taken.min(self.total) + more.len();
        self.quarantined.extend(more);
        self.quarantined_keys.extend(keys);
        self.quarantined_keys.sort_unstable();
        self.quarantined_keys.dedup();
        self
    }

    /// The users, sorted by key. In a [partial](Self::is_partial) snapshot only those with
    /// something to plan.
    pub fn users(&self) -> &[User] {
        &self.users
    }

    /// How many records the source holds (all of them, also in a partial snapshot, quarantined
    /// records included).
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Prefiltered: users exactly as recorded on every target were left out.
    pub fn is_partial(&self) -> bool {
        self.partial
    }

    /// The records set aside, in source order.
    pub fn quarantined(&self) -> &[Quarantined] {
        &self.quarantined
    }

    /// The keys under which nothing is planned, sorted.
    pub fn quarantined_keys(&self) -> &[String] {
        &self.quarantined_keys
    }

    /// Whether `key` is quarantined.
    pub fn is_quarantined(&self, key: &str) -> bool {
        self.quarantined_keys
            .binary_search_by(|k| k.as_str().cmp(key))
            .is_ok()
    }

    /// The quarantined records under `key`.
    pub fn quarantined_for<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Quarantined> {
        self.quarantined
            .iter()
            .filter(move |q| q.key.as_deref() == Some(key))
    }

    pub fn get(&self, key: &str) -> Option<&User> {
        self.users
            .binary_search_by(|u| u.key.as_str().cmp(key))
            .ok()
            .map(|i| &self.users[i])
    }
}

#[derive(Debug, thiserror::Error)]
#[error("duplicate source key {0:?}")]
pub struct DuplicateKey(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_table() {
        // (input given name, expected)
        let cases: &[(&str, Option<&str>)] = &[
            ("  Alice ", Some("Alice")),
            ("", None),
            ("   ", None),
            // e + combining acute -> precomposed é
            ("Rene\u{301}", Some("Ren\u{e9}")),
            ("Ren\u{e9}", Some("Ren\u{e9}")),
            (
                "Bender Bending Rodr\u{ed}guez",
                Some("Bender Bending Rodr\u{ed}guez"),
            ),
        ];
        for (input, expected) in cases {
            let mut u = User::new("k", "a@example.com");
            u.given_name = Some((*input).to_string());
            let u = u.normalized();
            assert_eq!(u.given_name.as_deref(), *expected, "input {input:?}");
        }
    }

    #[test]
    fn email_rules() {
        let u = User::new(" k1 ", "  Alice@Example.COM ").normalized();
        assert_eq!(u.key, "k1");
        assert_eq!(u.email, "Alice@Example.COM");
        assert!(email_eq(&u.email, "alice@example.com"));
        assert!(!email_eq(&u.email, "alice@example.org"));
        assert_eq!(email_fold("ÄBC@Example.com"), "äbc@example.com");
    }

    #[test]
    fn groups_sorted_deduped() {
        let mut u = User::new("k", "a@b.c");
        u.groups = vec![
            "staff".into(),
            " Admins ".into(),
            "admins".into(),
            "".into(),
        ];
        let u = u.normalized();
        assert_eq!(u.groups, vec!["Admins".to_string(), "staff".to_string()]);
    }

    #[test]
    fn snapshot_sorted_and_unique() {
        let s = Snapshot::new(vec![User::new("b", "b@x"), User::new("a", "a@x")]).unwrap();
        assert_eq!(s.users()[0].key, "a");
        assert!(s.get("b").is_some());
        assert!(s.get("c").is_none());
        assert!(Snapshot::new(vec![User::new("a", "1@x"), User::new("a", "2@x")]).is_err());
    }

    #[test]
    fn quarantined_keys_leave_the_users_and_count_in_the_source() {
        let s = Snapshot::new(vec![User::new("a", "a@x"), User::new("b", "b@x")])
            .unwrap()
            .with_quarantined(vec![
                Quarantined::new(Some("b"), "hr.csv:3", "email", "duplicate email", "b@x"),
                Quarantined::new(Some("b"), "hr.csv:5", "email", "duplicate email", "b@x"),
                Quarantined::new(None, "hr.csv:7", "key", "empty key", ""),
            ]);
        assert_eq!(s.users().len(), 1);
        assert_eq!(s.len(), 4, "1 user + 3 quarantined records");
        assert_eq!(s.quarantined_keys(), ["b".to_string()]);
        assert!(s.is_quarantined("b"));
        assert!(!s.is_quarantined("a"));
        assert!(s.get("b").is_none());
        assert_eq!(s.quarantined_for("b").count(), 2);
    }

    #[test]
    fn quarantined_values_are_escaped_and_cut() {
        let q = Quarantined::new(
            Some(" k "),
            "f:1",
            "given_name",
            "control character",
            "A\nb\0",
        );
        assert_eq!(q.key.as_deref(), Some("k"));
        assert_eq!(q.value, r#""A\nb\0""#);
        let long = "x".repeat(200);
        let q = Quarantined::new(None, "f:1", "mobile", "too long", &long);
        assert!(q.value.ends_with("... (200 bytes in all)"), "{}", q.value);
        assert!(q.value.len() < 120, "{}", q.value);
        assert!(q.key.is_none());
    }
}
