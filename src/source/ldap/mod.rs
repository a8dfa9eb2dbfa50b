//! LDAP source of truth (OpenLDAP, 389-DS, FreeIPA, Active Directory): one paged search of
//! the user entries into a complete [`Snapshot`] (entries with problems quarantined), or an
//! error when the read as a whole fails.
//!
//! # Reading
//!
//! - Connects to `ldap://` (optionally upgraded with StartTLS) or `ldaps://`, verifying the
//!   server certificate against [`LdapSettings::ca_file`] (else the system roots). Skipping
//!   verification is possible and logged loudly at every connect.
//! - Simple bind with a DN and password, or no bind at all (anonymous) when so configured.
//! - The users are read with the Simple Paged Results control ([`LdapSettings::page_size`]
//!   entries a page), so a directory bigger than the server's size limit is read completely.
//! - **A read that is cut short is an error, never a partial snapshot:** any page ending with
//!   a result code other than success (sizeLimitExceeded, timeLimitExceeded, referral, busy,
//!   ...), continuation references the server wants us to follow elsewhere, a connection
//!   dropped or an operation timing out: the whole read fails.
//!
//! # Entries
//!
//! - Key: [`LdapAttributes::key`] (default `entryUUID`; `objectGUID` for Active Directory,
//!   whose 16 bytes are written as the canonical GUID string
//!   `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lower case). An entry without it is a problem
//!   naming its DN. The DN is never the key: it changes when an entry is renamed or moved.
//! - Each mapped field lists one or more attributes; the first one present wins, and of a
//!   multi-valued attribute the first (non-blank) value is used; the other values are not read.
//!   Values go through [`User::normalized`] (trim, NFC).
//! - **Values are checked, never repaired** (the rules of the CSV source): a value used for a
//!   field that is not UTF-8 is a problem (`invalid UTF-8 in attribute "mail" ...`), and so is
//!   a control character other than tab (C0, DEL, C1: a NUL, a newline) in the key, the
//!   email, a name, the mobile number or a group DN (`control character in attribute
//!   "givenName": "Ab\0c"`). Extra attributes may hold control characters but must be UTF-8.
//!   Each problem names the entry's DN and the attribute; values are shown escaped and cut
//!   ([`shown`]), so no value can break a log line. A non-UTF-8 key is written in hex (or as a
//!   GUID), as [`KeyFormat`] says.
//! - No email: skipped and reported ([`MissingEmail::Skip`], the default) or a problem.
//! - Enabled: Active Directory's `userAccountControl` bit 0x2 (ACCOUNTDISABLE) and / or a
//!   configured attribute with disabled values (`nsAccountLock: TRUE`) or whose presence
//!   means disabled (`pwdAccountLockedTime`).
//! - Groups (as DNs): the `memberOf` attribute, or a search of group entries under a group
//!   base (`member` / `uniqueMember` DNs, `memberUid` user ids); nested groups optionally.
//! - Duplicate keys and duplicate emails (case-insensitive) are problems of every entry
//!   sharing one, each naming the other's DN.
//! - **An entry with problems is quarantined** ([`Quarantined`]: its key when readable, its
//!   DN, the attribute of its first problem, every problem joined, the value escaped and cut):
//!   it is not a user, and the planner leaves every account under its key as it is. Problems
//!   of the read as a whole (bind refused, connection lost, a search cut short, a size or time
//!   limit, `source.timeout`) fail it: never a partial snapshot.
//!
//! # Prefiltered reads
//!
//! A whole-source run reads through [`load_filtered`]: each user, built and checked as above and
//! with its groups complete, is offered to the run's [`crate::plan::Prefilter`] as its entry
//! arrives, and only the users it keeps stay in memory. Any entry problem, or two equal hashes of
//! keys or emails, makes it search again whole, so that exactly the whole read's entries are
//! quarantined.

mod conn;
mod decode;
mod groups;
mod keyed;
mod settings;
pub mod syncrepl;
pub mod usn;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use ldap3::Ldap;
use tracing::{debug, info, warn};

use super::rules::{fold_into, has_control, write_problems};
use crate::model::{Quarantined, Snapshot, User};
use conn::{connect, paged_search};
use decode::{Outcome, duplicates, entry_to_user, user_attributes, values};
pub use decode::{dn_key, format_key, guid_string, shown};
use groups::{group_index, group_problems, nest_member_of};
pub use keyed::{load_keys, only_keys};
pub use settings::{
    DisabledRule, GroupSearch, GroupSource, KeyFormat, LdapAttributes, LdapSettings, MissingEmail,
    SearchScope, ServerType,
};

/// Everything wrong with a read. Displayed one problem a line, at most 50 of them.
#[derive(Debug, thiserror::Error)]
pub struct LdapSourceError {
    /// The server URL.
    pub server: String,
    pub problems: Vec<LdapProblem>,
}

/// One problem, of one entry when `dn` is set, else of the whole read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapProblem {
    pub dn: Option<String>,
    /// The attribute concerned (as configured), when the problem is one of its values. The
    /// message names it as well.
    pub attribute: Option<String>,
    /// What is wrong. Values quoted in it are escaped ([`shown`]), so it is one line.
    pub message: String,
    /// The value concerned, when the problem is found after the entry is read (duplicates,
    /// groups): what a quarantined record shows.
    pub value: Option<String>,
}

impl fmt::Display for LdapProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dn {
            Some(dn) => write!(f, "entry {dn:?}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl fmt::Display for LdapSourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_problems(f, &self.problems, |f, p| write!(f, "{}: {p}", self.server))
    }
}

impl LdapProblem {
    fn read(message: impl Into<String>) -> Self {
        LdapProblem {
            dn: None,
            attribute: None,
            message: message.into(),
            value: None,
        }
    }

    fn entry(dn: &str, message: impl Into<String>) -> Self {
        LdapProblem {
            dn: Some(dn.to_string()),
            attribute: None,
            message: message.into(),
            value: None,
        }
    }

    /// A problem of a value of `attribute` of entry `dn`.
    fn value(dn: &str, attribute: &str, message: impl Into<String>) -> Self {
        LdapProblem {
            dn: Some(dn.to_string()),
            attribute: Some(attribute.to_string()),
            message: message.into(),
            value: None,
        }
    }

    fn with_value(mut self, value: &str) -> Self {
        self.value = Some(value.to_string());
        self
    }
}

/// A complete read: the snapshot, and the entries left out of it (no email, with
/// [`MissingEmail::Skip`]).
pub struct LdapRead {
    pub snapshot: Snapshot,
    /// Entries matched by the filter.
    pub entries: u64,
    pub skipped: Vec<LdapProblem>,
    pub elapsed: Duration,
}

impl fmt::Debug for LdapRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the users: a snapshot may hold 100k of them.
        f.debug_struct("LdapRead")
            .field("users", &self.snapshot.len())
            .field("entries", &self.entries)
            .field("skipped", &self.skipped)
            .field("elapsed", &self.elapsed)
            .finish()
    }
}

/// What `dirsync check` reports: the search ran to the end, and what it found.
#[derive(Debug, Default)]
pub struct LdapCheck {
    pub entries: u64,
    /// Entries that would be users.
    pub users: u64,
    pub disabled: u64,
    pub without_groups: u64,
    /// DNs of entries without the key attribute.
    pub without_key: Vec<String>,
    /// DNs of entries without an email.
    pub without_email: Vec<String>,
    /// Every problem that would make a sync fail (missing keys, duplicates, ...).
    pub problems: Vec<LdapProblem>,
    pub elapsed: Duration,
}

/// Reads the source into a snapshot; skipped entries are logged as warnings.
pub async fn load(settings: &LdapSettings) -> Result<Snapshot, LdapSourceError> {
    let read = read(settings).await?;
    log_read(&read, None);
    Ok(read.snapshot)
}

/// Reads the source, keeping only the users `keep` accepts (see [`crate::plan::Prefilter`]):
/// a [partial](Snapshot::is_partial) snapshot, whose memory grows with the users kept, not with
/// the directory. Every entry is checked as in [`load`], and `keep` sees each user exactly as
/// [`load`] builds it: normalised, with its groups complete (nested ones included). Duplicate
/// keys and emails across all users are found from 64-bit hashes; when any two hashes are equal
/// (a duplicate, or a collision) or any entry has a problem, the directory is read again whole,
/// so that entries are quarantined exactly as [`load`] quarantines them (and a mere collision
/// gives a whole snapshot). A search that is cut short fails as in [`load`].
///
/// With groups from `memberOf` and `nested_groups`, the parents of each group are only looked
/// up once every entry is read: the users are then kept until the end of the read and offered
/// to `keep` after it (memory as in [`load`]; the planner still sees only the kept users).
pub async fn load_filtered(
    settings: &LdapSettings,
    keep: &mut (dyn FnMut(&User) -> bool + Send),
) -> Result<Snapshot, LdapSourceError> {
    let started = Instant::now();
    let mut filter = Filter::new(keep);
    let c = collect(settings, Some(&mut filter)).await?;
    if !filter.again && c.problems.is_empty() && filter.unique() {
        let skipped = skipped_entries(settings, &c.without_email);
        if settings.missing_email == MissingEmail::Skip || skipped.is_empty() {
            let kept = filter.kept.len();
            let fail = |d: crate::model::DuplicateKey| LdapSourceError {
                server: settings.url.clone(),
                problems: vec![LdapProblem::read(d.to_string())],
            };
            let snapshot =
                Snapshot::partial(std::mem::take(&mut filter.kept), filter.total).map_err(fail)?;
            let read = LdapRead {
                snapshot,
                entries: c.entries,
                skipped,
                elapsed: started.elapsed(),
            };
            log_read(&read, Some(kept));
            return Ok(read.snapshot);
        }
    }
    debug!(
        "LDAP source: a problem or two equal key or email hashes in the filtered read; reading it again whole"
    );
    load(settings).await
}

/// Logs a read: skipped entries as a warning, then what was read (and kept, when filtered).
fn log_read(read: &LdapRead, kept: Option<usize>) {
    if !read.skipped.is_empty() {
        let shown: Vec<String> = read
            .skipped
            .iter()
            .take(20)
            .map(ToString::to_string)
            .collect();
        warn!(
            skipped = read.skipped.len(),
            "LDAP source: {} entries left out of the snapshot: {}{}",
            read.skipped.len(),
            shown.join("; "),
            if read.skipped.len() > 20 { "; ..." } else { "" }
        );
    }
    let quarantined = read.snapshot.quarantined();
    if !quarantined.is_empty() {
        let shown: Vec<String> = quarantined
            .iter()
            .take(20)
            .map(|q| format!("entry {:?}: {}", q.location, q.problem))
            .collect();
        warn!(
            quarantined = quarantined.len(),
            "LDAP source: {} entries quarantined (their accounts are left as they are): {}{}",
            quarantined.len(),
            shown.join("; "),
            if quarantined.len() > 20 { "; ..." } else { "" }
        );
    }
    match kept {
        None => info!(
            entries = read.entries,
            users = read.snapshot.len(),
            elapsed_ms = read.elapsed.as_millis() as u64,
            "LDAP source read"
        ),
        Some(kept) => info!(
            entries = read.entries,
            users = read.snapshot.len(),
            kept,
            elapsed_ms = read.elapsed.as_millis() as u64,
            "LDAP source read (prefiltered)"
        ),
    }
}

/// The entries without an email, as [`LdapRead::skipped`] lists them.
fn skipped_entries(settings: &LdapSettings, without_email: &[String]) -> Vec<LdapProblem> {
    without_email
        .iter()
        .map(|dn| {
            LdapProblem::entry(
                dn,
                format!(
                    "skipped: no email ({})",
                    settings.attributes.email.join(" / ")
                ),
            )
        })
        .collect()
}

/// A filtered read in progress (see [`load_filtered`]).
struct Filter<'k> {
    keep: &'k mut (dyn FnMut(&User) -> bool + Send),
    /// The users `keep` accepted.
    kept: Vec<User>,
    /// Users read (all of them, kept or not).
    total: usize,
    /// Hash of every user's key and of every folded email.
    keys: Vec<u64>,
    emails: Vec<u64>,
    fold: Vec<u8>,
    /// Something a whole read reports as a problem was seen: read again whole.
    again: bool,
}

impl<'k> Filter<'k> {
    fn new(keep: &'k mut (dyn FnMut(&User) -> bool + Send)) -> Self {
        Filter {
            keep,
            kept: Vec::new(),
            total: 0,
            keys: Vec::new(),
            emails: Vec::new(),
            fold: Vec::new(),
            again: false,
        }
    }

    /// A user complete as [`collect_on`] makes it (groups resolved, normalised). Groups with
    /// a control character are a problem (see [`group_problems`]): read again whole.
    fn offer(&mut self, user: User) {
        if self.again {
            return;
        }
        if user.groups.iter().any(|g| has_control(g)) {
            self.again = true;
            return;
        }
        self.total += 1;
        self.keys
            .push(xxhash_rust::xxh3::xxh3_64(user.key.as_bytes()));
        self.emails.push(xxhash_rust::xxh3::xxh3_64(fold_into(
            &user.email,
            &mut self.fold,
        )));
        if (self.keep)(&user) {
            self.kept.push(user);
        }
    }

    /// No two keys and no two emails have the same hash.
    fn unique(&mut self) -> bool {
        let distinct = |v: &mut Vec<u64>| {
            v.sort_unstable();
            !v.windows(2).any(|w| w[0] == w[1])
        };
        distinct(&mut self.keys) && distinct(&mut self.emails)
    }
}

/// Reads the source completely: a snapshot with the entries that have problems quarantined
/// ([`quarantine`]), or the error of a read that failed as a whole.
pub async fn read(settings: &LdapSettings) -> Result<LdapRead, LdapSourceError> {
    let started = Instant::now();
    let c = collect(settings, None).await?;
    let mut problems = c.problems;
    if settings.missing_email == MissingEmail::Error {
        let attribute = settings
            .attributes
            .email
            .first()
            .map_or("mail", String::as_str);
        problems.extend(c.without_email.iter().map(|dn| {
            LdapProblem::value(
                dn,
                attribute,
                format!(
                    "no email ({}); set source.ldap.missing_email = \"skip\" to leave such entries out",
                    settings.attributes.email.join(" / ")
                ),
            )
        }));
    }
    let fail = |problems| LdapSourceError {
        server: settings.url.clone(),
        problems,
    };
    let skipped = skipped_entries(settings, &c.without_email);
    let quarantined = quarantine(&problems, &c.users, &c.dns, &c.bad, &c.keyless_email);
    let mut users = c.users;
    if !quarantined.is_empty() {
        // The entries quarantined leave the users (duplicates among them); `with_quarantined`
        // then takes out any other user under a quarantined key.
        let out: HashSet<&str> = quarantined.iter().map(|q| q.location.as_str()).collect();
        let mut dns = c.dns.iter();
        users.retain(|_| dns.next().is_none_or(|dn| !out.contains(dn.as_str())));
    }
    let snapshot = Snapshot::new(users)
        .map_err(|d| fail(vec![LdapProblem::read(d.to_string())]))?
        .with_quarantined(quarantined);
    Ok(LdapRead {
        snapshot,
        entries: c.entries,
        skipped,
        elapsed: started.elapsed(),
    })
}

/// The quarantined records of a whole read: one per entry with problems (all of them entry
/// problems: problems of the read as a whole fail it before), in the order the problems came,
/// its problems joined; the field and value are those of its first problem.
fn quarantine(
    problems: &[LdapProblem],
    users: &[User],
    dns: &[String],
    bad: &HashMap<String, (Option<String>, String)>,
    keyless_email: &HashMap<String, String>,
) -> Vec<Quarantined> {
    let user_of: HashMap<&str, &User> = dns.iter().map(String::as_str).zip(users).collect();
    // DN -> indexes of its problems, in first-seen order.
    let mut order: Vec<&str> = Vec::new();
    let mut by_dn: HashMap<&str, Vec<&LdapProblem>> = HashMap::new();
    for p in problems {
        let Some(dn) = p.dn.as_deref() else { continue };
        let ps = by_dn.entry(dn).or_default();
        if ps.is_empty() {
            order.push(dn);
        }
        ps.push(p);
    }
    let mut out = Vec::with_capacity(order.len());
    for dn in order {
        let ps = &by_dn[dn];
        let Some(first) = ps.first() else { continue };
        let (key, value) = match (bad.get(dn), user_of.get(dn)) {
            (Some((key, value)), _) => (key.as_deref(), value.as_str()),
            (None, Some(u)) => (Some(u.key.as_str()), ""),
            (None, None) => (None, ""),
        };
        let value = first.value.as_deref().unwrap_or(value);
        let problem = ps
            .iter()
            .map(|p| p.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        out.push(
            Quarantined::new(
                key,
                dn,
                first.attribute.clone().unwrap_or_default(),
                problem,
                value,
            )
            .with_email(keyless_email.get(dn).map(String::as_str)),
        );
    }
    out
}

/// Binds and runs the whole search, reporting what a sync would find. Connection, bind and
/// search failures are errors; problems of entries are in the report.
pub async fn check(settings: &LdapSettings) -> Result<LdapCheck, LdapSourceError> {
    let started = Instant::now();
    let c = collect(settings, None).await?;
    Ok(LdapCheck {
        entries: c.entries,
        users: c.users.len() as u64,
        disabled: c.users.iter().filter(|u| !u.enabled).count() as u64,
        without_groups: c.users.iter().filter(|u| u.groups.is_empty()).count() as u64,
        without_key: c.without_key,
        without_email: c.without_email,
        problems: c.problems,
        elapsed: started.elapsed(),
    })
}

/// The raw outcome of a read: users, and the entries that could not be users.
struct Collected {
    entries: u64,
    users: Vec<User>,
    without_key: Vec<String>,
    without_email: Vec<String>,
    problems: Vec<LdapProblem>,
    /// DN of each of `users` (whole reads only).
    dns: Vec<String>,
    /// Entries that are not users because of a problem (or no email): DN -> (key when
    /// readable, the value of the first attribute named by its problems).
    bad: HashMap<String, (Option<String>, String)>,
    /// Entries without a usable key: DN -> their email as read, so that the account recorded
    /// for them can be found and left alone.
    keyless_email: HashMap<String, String>,
}

/// Connects, reads, unbinds. With a `filter` (see [`load_filtered`]), the users are offered to
/// it instead of being collected (problems are still collected).
async fn collect(
    s: &LdapSettings,
    filter: Option<&mut Filter<'_>>,
) -> Result<Collected, LdapSourceError> {
    let fail = |message: String| LdapSourceError {
        server: s.url.clone(),
        problems: vec![LdapProblem::read(message)],
    };
    // `source.timeout` bounds the whole read (connect, bind, every page), whatever the
    // server does; the per-operation timeouts bound each request within it.
    let whole = async {
        let mut ldap = connect(s).await?;
        let result = collect_on(s, &mut ldap, filter).await;
        // Best effort: the server closes the connection on its own anyway.
        let _ = tokio::time::timeout(Duration::from_secs(2), ldap.unbind()).await;
        result
    };
    match tokio::time::timeout(s.timeout, whole).await {
        Ok(result) => result.map_err(fail),
        Err(_) => Err(fail(format!(
            "the read took longer than source.timeout ({})",
            humantime::format_duration(s.timeout)
        ))),
    }
}

async fn collect_on(
    s: &LdapSettings,
    ldap: &mut Ldap,
    mut filter: Option<&mut Filter<'_>>,
) -> Result<Collected, String> {
    // Group search first: the user pass then needs only one lookup per entry.
    let index = match &s.groups {
        GroupSource::Search(g) => Some(group_index(s, g, ldap).await?),
        _ => None,
    };
    let attrs = user_attributes(s);
    let mut c = Collected {
        entries: 0,
        users: Vec::new(),
        without_key: Vec::new(),
        without_email: Vec::new(),
        problems: Vec::new(),
        dns: Vec::new(),
        bad: HashMap::new(),
        keyless_email: HashMap::new(),
    };
    // Nested groups from `memberOf` are looked up once every entry is read: until then a
    // user's groups are not complete, so a filtered read offers the users after the search.
    let streamed = !(s.nested_groups && matches!(s.groups, GroupSource::MemberOf { .. }));
    // DN of each user, for duplicate reports.
    let mut dns: Vec<String> = Vec::new();
    paged_search(
        s,
        ldap,
        &s.base_dn,
        s.scope,
        &s.filter,
        &attrs,
        "users",
        |e| {
            c.entries += 1;
            let offer_to = match filter.as_deref_mut() {
                Some(f) if streamed => {
                    if f.again || !c.problems.is_empty() || !c.without_key.is_empty() {
                        // It will be read again whole: only the entries are counted now.
                        return;
                    }
                    Some(f)
                }
                _ => None,
            };
            let outcome = entry_to_user(s, &e, index.as_ref());
            if matches!(outcome, Outcome::NoKey | Outcome::Problems(_, None))
                && let Some(email) = s.attributes.email.iter().find_map(|a| values(&e, a).next())
            {
                c.keyless_email
                    .insert(e.dn.clone(), String::from_utf8_lossy(email).into_owned());
            }
            match outcome {
                Outcome::User(mut u) => match offer_to {
                    Some(f) => {
                        // As the whole read below: nested groups, then normalised.
                        if s.nested_groups
                            && let Some(index) = &index
                        {
                            u.groups = index.closure(&u.groups);
                        }
                        f.offer(u.normalized());
                    }
                    None => {
                        c.users.push(*u);
                        dns.push(e.dn);
                    }
                },
                Outcome::NoKey => c.without_key.push(e.dn),
                Outcome::NoEmail(key) => {
                    if offer_to.is_none() {
                        c.bad.insert(e.dn.clone(), (key, String::new()));
                    }
                    c.without_email.push(e.dn);
                }
                Outcome::Problems(p, key) => {
                    if offer_to.is_none() {
                        // The value quarantine reports: the first value of the first
                        // attribute named.
                        let value = p
                            .iter()
                            .find_map(|p| p.attribute.as_deref())
                            .and_then(|a| values(&e, a).next())
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                            .unwrap_or_default();
                        c.bad.insert(e.dn.clone(), (key, value));
                    }
                    c.problems.extend(p);
                }
            }
        },
    )
    .await?;
    if s.nested_groups {
        match (&s.groups, &index) {
            (GroupSource::Search(_), Some(index)) => {
                for u in &mut c.users {
                    u.groups = index.closure(&u.groups);
                }
            }
            (GroupSource::MemberOf { attribute }, _) => {
                nest_member_of(s, ldap, attribute, &mut c.users).await?;
            }
            _ => {}
        }
    }
    let users = std::mem::take(&mut c.users);
    c.users = users.into_iter().map(User::normalized).collect();
    c.problems.extend(group_problems(s, &c.users, &dns));
    for dn in &c.without_key {
        c.problems.push(LdapProblem::value(
            dn,
            &s.attributes.key,
            format!(
                "no key attribute {:?} (is it readable by the bind DN?)",
                s.attributes.key
            ),
        ));
    }
    c.problems.extend(duplicates(s, &c.users, &dns));
    c.dns = dns;
    if let Some(f) = filter
        && !streamed
        && c.problems.is_empty()
    {
        // Groups are complete now: offer the users in the order they came.
        for u in std::mem::take(&mut c.users) {
            f.offer(u);
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lists_problems() {
        let e = LdapSourceError {
            server: "ldap://h".into(),
            problems: vec![
                LdapProblem::read("cannot connect"),
                LdapProblem::entry("uid=a,dc=x", "no key"),
            ],
        };
        assert_eq!(
            e.to_string(),
            "ldap://h: cannot connect\nldap://h: entry \"uid=a,dc=x\": no key"
        );
    }
}
