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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ldap3::controls::{Control, ControlType, PagedResults, RawControl};
use ldap3::{DerefAliases, Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use tracing::{debug, info, warn};

use crate::model::{Quarantined, Snapshot, User, email_fold};
use crate::secret::Secret;

/// Which kind of directory: decides the defaults of the key, the filter, the enabled rule and
/// the groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerType {
    /// OpenLDAP, 389-DS, FreeIPA and other RFC 4512 directories.
    Generic,
    ActiveDirectory,
}

impl ServerType {
    pub fn parse(s: &str) -> Option<ServerType> {
        match s.trim().to_ascii_lowercase().as_str() {
            "generic" | "openldap" | "389ds" | "389-ds" | "freeipa" => Some(ServerType::Generic),
            "active_directory" | "ad" | "activedirectory" => Some(ServerType::ActiveDirectory),
            _ => None,
        }
    }
}

/// Search scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchScope {
    Base,
    One,
    Sub,
}

impl SearchScope {
    pub fn parse(s: &str) -> Option<SearchScope> {
        match s.trim().to_ascii_lowercase().as_str() {
            "base" => Some(SearchScope::Base),
            "one" | "onelevel" | "one_level" | "single_level" => Some(SearchScope::One),
            "sub" | "subtree" | "whole_subtree" => Some(SearchScope::Sub),
            _ => None,
        }
    }

    fn ldap(self) -> Scope {
        match self {
            SearchScope::Base => Scope::Base,
            SearchScope::One => Scope::OneLevel,
            SearchScope::Sub => Scope::Subtree,
        }
    }
}

/// How the key attribute's value becomes the key string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// `objectGUID` as a GUID; any other attribute as text, or lower-case hex when it is not
    /// UTF-8.
    Auto,
    /// UTF-8 text (an entry whose value is not UTF-8 is an error).
    Text,
    /// 16 bytes in Microsoft's mixed-endian layout, written as the canonical GUID string.
    Guid,
    /// Lower-case hex of the raw bytes.
    Hex,
}

impl KeyFormat {
    pub fn parse(s: &str) -> Option<KeyFormat> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(KeyFormat::Auto),
            "text" => Some(KeyFormat::Text),
            "guid" => Some(KeyFormat::Guid),
            "hex" => Some(KeyFormat::Hex),
            _ => None,
        }
    }
}

/// Which attributes feed which field. Every list is tried in order; the first attribute
/// present on the entry wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapAttributes {
    pub key: String,
    pub email: Vec<String>,
    pub given_name: Vec<String>,
    pub family_name: Vec<String>,
    pub other_name: Vec<String>,
    pub display_name: Vec<String>,
    pub mobile: Vec<String>,
}

impl LdapAttributes {
    pub fn defaults(server: ServerType) -> Self {
        let v = |names: &[&str]| names.iter().map(|s| (*s).to_string()).collect();
        LdapAttributes {
            key: match server {
                ServerType::Generic => "entryUUID".into(),
                ServerType::ActiveDirectory => "objectGUID".into(),
            },
            email: v(&["mail"]),
            given_name: v(&["givenName"]),
            family_name: v(&["sn"]),
            other_name: Vec::new(),
            display_name: v(&["displayName"]),
            mobile: v(&["mobile", "telephoneNumber"]),
        }
    }
}

/// A configured attribute that marks accounts disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisabledRule {
    pub attribute: String,
    /// Values (compared trimmed, case-insensitively) that mean disabled. Empty: the
    /// attribute's presence means disabled.
    pub values: Vec<String>,
}

/// Where group memberships come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupSource {
    None,
    /// A DN-valued attribute of the user entry (`memberOf`).
    MemberOf {
        attribute: String,
    },
    /// A search of group entries.
    Search(GroupSearch),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSearch {
    pub base_dn: String,
    pub scope: SearchScope,
    pub filter: String,
    /// Attributes of a group holding member DNs (`member`, `uniqueMember`).
    pub member_attributes: Vec<String>,
    /// Attribute of a group holding member user ids (`memberUid`), matched against
    /// [`GroupSearch::user_id_attribute`] of the users.
    pub member_uid_attribute: Option<String>,
    pub user_id_attribute: String,
}

impl GroupSearch {
    pub fn new(base_dn: impl Into<String>) -> Self {
        GroupSearch {
            base_dn: base_dn.into(),
            scope: SearchScope::Sub,
            filter: "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=posixGroup))"
                .into(),
            member_attributes: vec!["member".into(), "uniqueMember".into()],
            member_uid_attribute: Some("memberUid".into()),
            user_id_attribute: "uid".into(),
        }
    }
}

/// What to do with an entry without an email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingEmail {
    /// Leave the entry out of the snapshot and report it (a warning per run).
    Skip,
    /// A problem of the entry: it is quarantined.
    Error,
}

/// How to read the LDAP source (`[source.ldap]` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapSettings {
    /// `ldap://host[:port]` or `ldaps://host[:port]`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    pub starttls: bool,
    /// PEM file of the CA certificates to trust (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate. Logged as a warning at every connect.
    pub tls_skip_verify: bool,
    /// `None`: anonymous (no bind).
    pub bind_dn: Option<String>,
    /// The bind password itself (programmatic settings); when `None`, `bind_password_ref`.
    pub bind_password: Option<Secret>,
    /// The configured bind password (`bind_password`, `_file` or `_credential`), read when
    /// the source is read, so commands that read no source (`runs`, `migrate`) never need it.
    pub bind_password_ref: Option<crate::secret::SecretRef>,
    pub connect_timeout: Duration,
    /// Per operation; for a search, the longest wait for the next entry.
    pub operation_timeout: Duration,
    /// `source.timeout`: the longest one whole read (connect, bind, searches) may take.
    pub timeout: Duration,
    pub base_dn: String,
    pub scope: SearchScope,
    pub filter: String,
    /// Entries per page of the paged search; 0: no paging (for servers without the control;
    /// the read then fails when the server's size limit is hit).
    pub page_size: u32,
    pub attributes: LdapAttributes,
    pub key_format: KeyFormat,
    /// Disabled when bit 0x2 of `userAccountControl` is set.
    pub user_account_control: bool,
    pub disabled: Option<DisabledRule>,
    pub groups: GroupSource,
    pub nested_groups: bool,
    pub missing_email: MissingEmail,
    /// Extra attributes: attribute name (for templates) -> LDAP attribute.
    pub extra: BTreeMap<String, String>,
}

impl LdapSettings {
    /// The default user filter of a server type.
    pub fn default_filter(server: ServerType) -> &'static str {
        match server {
            ServerType::Generic => "(objectClass=inetOrgPerson)",
            ServerType::ActiveDirectory => "(&(objectCategory=person)(objectClass=user))",
        }
    }

    /// Settings with every default of `server`: anonymous, subtree, paged by 500, groups from
    /// `memberOf`, users without an email skipped.
    pub fn new(url: impl Into<String>, base_dn: impl Into<String>, server: ServerType) -> Self {
        LdapSettings {
            url: url.into(),
            starttls: false,
            ca_file: None,
            tls_skip_verify: false,
            bind_dn: None,
            bind_password: None,
            bind_password_ref: None,
            connect_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(60),
            timeout: crate::source::csv::DEFAULT_TIMEOUT,
            base_dn: base_dn.into(),
            scope: SearchScope::Sub,
            filter: Self::default_filter(server).into(),
            page_size: 500,
            attributes: LdapAttributes::defaults(server),
            key_format: KeyFormat::Auto,
            user_account_control: server == ServerType::ActiveDirectory,
            disabled: None,
            groups: GroupSource::MemberOf {
                attribute: "memberOf".into(),
            },
            nested_groups: false,
            missing_email: MissingEmail::Skip,
            extra: BTreeMap::new(),
        }
    }
}

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

const SHOWN_PROBLEMS: usize = 50;

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
        for (i, p) in self.problems.iter().take(SHOWN_PROBLEMS).enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {p}", self.server)?;
        }
        if self.problems.len() > SHOWN_PROBLEMS {
            write!(
                f,
                "\n... and {} more problems",
                self.problems.len() - SHOWN_PROBLEMS
            )?;
        }
        Ok(())
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

/// How many characters (or bytes) of a value an error message shows.
const SHOWN_VALUE: usize = 80;

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
fn shown_bytes(v: &[u8]) -> String {
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

/// Control characters other than tab: C0, DEL and C1 (the rule of the CSV source).
fn has_control(s: &str) -> bool {
    s.chars().any(|c| c.is_control() && c != '\t')
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

/// [`email_fold`] into `buf`, without allocating for ASCII emails.
fn fold_into<'b>(email: &str, buf: &'b mut Vec<u8>) -> &'b [u8] {
    buf.clear();
    if email.is_ascii() {
        buf.extend(email.trim().bytes().map(|b| b.to_ascii_lowercase()));
    } else {
        buf.extend_from_slice(email_fold(email).as_bytes());
    }
    buf
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

/// Opens, secures and binds a connection.
async fn connect(s: &LdapSettings) -> Result<Ldap, String> {
    let url = url::Url::parse(&s.url).map_err(|e| format!("invalid URL: {e}"))?;
    let tls = url.scheme() == "ldaps" || s.starttls;
    let mut cs = LdapConnSettings::new()
        .set_conn_timeout(s.connect_timeout)
        .set_starttls(s.starttls && url.scheme() == "ldap");
    if tls && s.tls_skip_verify {
        warn!(
            server = %s.url,
            "source.ldap.tls_skip_verify is set: the LDAP server's certificate is NOT verified; \
             anyone able to intercept the connection can read the bind password and feed dirsync \
             a forged directory"
        );
        cs = cs.set_no_tls_verify(true);
    } else if tls && let Some(ca) = &s.ca_file {
        cs = cs.set_config(tls_config(ca)?);
    }
    if !tls && s.bind_dn.is_some() && !is_loopback(&url) {
        warn!(
            server = %s.url,
            "the LDAP bind password is sent unencrypted: use ldaps:// or starttls = true"
        );
    }
    let (conn, mut ldap) = LdapConnAsync::with_settings(cs, &s.url)
        .await
        .map_err(|e| format!("cannot connect: {}", describe(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.drive().await {
            debug!("LDAP connection ended: {e}");
        }
    });
    if let Some(dn) = &s.bind_dn {
        let resolved = match (&s.bind_password, &s.bind_password_ref) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(r)) => Some(r.resolve().map_err(|e| e.to_string())?),
            (None, None) => None,
        };
        let pw = resolved.as_ref().map(Secret::expose).unwrap_or("");
        let res = ldap
            .with_timeout(s.operation_timeout)
            .simple_bind(dn, pw)
            .await
            .map_err(|e| format!("bind as {dn:?}: {}", describe(&e)))?;
        if res.rc != 0 {
            return Err(format!(
                "bind as {dn:?} failed: {} ({}){}",
                rc_name(res.rc),
                res.rc,
                text(&res.text)
            ));
        }
    }
    Ok(ldap)
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        // `ldap:` is not a special scheme: the URL parser keeps an IP address as an opaque
        // host name.
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost")
                || d.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_loopback())
        }
        None => true,
    }
}

/// A rustls config trusting only the certificates of `ca` (PEM).
fn tls_config(ca: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bytes =
        std::fs::read(ca).map_err(|e| format!("cannot read ca_file {}: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "ca_file {}: no PEM certificate in it",
            ca.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A search of every entry, page by page; `on_entry` sees each entry. Fails on anything but
/// a complete result.
#[allow(clippy::too_many_arguments)]
async fn paged_search(
    s: &LdapSettings,
    ldap: &mut Ldap,
    base: &str,
    scope: SearchScope,
    filter: &str,
    attrs: &[String],
    what: &str,
    mut on_entry: impl FnMut(SearchEntry),
) -> Result<(), String> {
    let mut cookie: Vec<u8> = Vec::new();
    let mut pages = 0u64;
    loop {
        pages += 1;
        if s.page_size > 0 {
            let control: RawControl = PagedResults {
                size: i32::try_from(s.page_size).unwrap_or(i32::MAX),
                cookie: std::mem::take(&mut cookie),
            }
            .into();
            ldap.with_controls(control);
        }
        ldap.with_timeout(s.operation_timeout)
            .with_search_options(ldap3::SearchOptions::new().deref(DerefAliases::Never));
        let at = || format!("search of {what} (base {base:?}, filter {filter:?}, page {pages})");
        let mut stream = ldap
            .streaming_search(base, scope.ldap(), filter, attrs.to_vec())
            .await
            .map_err(|e| {
                let incomplete = if pages > 1 { INCOMPLETE } else { "" };
                format!("{}: {}{incomplete}", at(), describe(&e))
            })?;
        let mut refs: Vec<String> = Vec::new();
        loop {
            match stream.next().await {
                Ok(Some(re)) if re.is_ref() => refs.extend(ldap3::parse_refs(re.0)),
                Ok(Some(re)) if re.is_intermediate() => {}
                Ok(Some(re)) => match search_entry(re.0) {
                    Ok(e) => on_entry(e),
                    Err(m) => {
                        let _ = stream.finish().await;
                        return Err(format!("{}: {m}{INCOMPLETE}", at()));
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    let _ = stream.finish().await;
                    return Err(format!("{}: {}{INCOMPLETE}", at(), describe(&e)));
                }
            }
        }
        let res = stream.finish().await;
        if res.rc != 0 {
            let hint = match res.rc {
                4 => {
                    " (the server's size limit cut the result short: does it allow paged \
                       results beyond its size limit? OpenLDAP: `limits ... size.prtotal=unlimited`)"
                }
                3 => " (the server's time limit cut the result short)",
                10 => {
                    " (the server referred to another server, which dirsync does not follow: \
                        point source.ldap.url at a server holding the base DN, e.g. an AD global \
                        catalog)"
                }
                _ => "",
            };
            let mut m = format!(
                "{}: {} ({}){}{hint}",
                at(),
                rc_name(res.rc),
                res.rc,
                text(&res.text)
            );
            if !res.refs.is_empty() {
                m.push_str(&format!("; referrals: {}", res.refs.join(", ")));
            }
            return Err(m);
        }
        if !refs.is_empty() {
            return Err(format!(
                "{}: the server returned continuation references that dirsync does not follow \
                 ({}): the read would be incomplete",
                at(),
                refs.join(", ")
            ));
        }
        let next = res.ctrls.iter().find_map(|c| match c {
            Control(Some(ControlType::PagedResults), raw) => Some(raw.parse::<PagedResults>()),
            _ => None,
        });
        match next {
            Some(pr) if !pr.cookie.is_empty() => cookie = pr.cookie,
            _ => return Ok(()),
        }
    }
}

/// Said of a search that failed after entries came in.
const INCOMPLETE: &str = " (the read is incomplete: nothing is synced)";

/// The server's diagnostic text, if any, for a message (escaped when it holds control
/// characters, so that it stays one line).
fn text(t: &str) -> String {
    let t = t.trim();
    if t.is_empty() {
        String::new()
    } else if has_control(t) {
        format!(": {}", shown(t))
    } else {
        format!(": {t}")
    }
}

fn describe(e: &ldap3::LdapError) -> String {
    match e {
        ldap3::LdapError::EndOfStream
        | ldap3::LdapError::OpSend { .. }
        | ldap3::LdapError::ResultRecv { .. }
        | ldap3::LdapError::IdScrubSend { .. } => "the connection to the server was lost".into(),
        ldap3::LdapError::Timeout { .. } => "timed out (source.ldap.operation_timeout)".into(),
        ldap3::LdapError::LdapResult { result } => format!(
            "{} ({}){}",
            rc_name(result.rc),
            result.rc,
            text(&result.text)
        ),
        e => e.to_string(),
    }
}

/// The name of an LDAP result code (RFC 4511).
fn rc_name(rc: u32) -> &'static str {
    match rc {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        7 => "authMethodNotSupported",
        8 => "strongerAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        13 => "confidentialityRequired",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        80 => "other",
        85 => "timeout",
        87 => "filterError",
        88 => "userCanceled",
        _ => "error",
    }
}

/// An entry of a search result, as [`SearchEntry::construct`] builds it but without its
/// panics (a DN or an attribute description that is not UTF-8, a malformed entry: an error)
/// and keeping the values of each attribute in the server's order (`construct` moves the
/// non-UTF-8 values of a mixed attribute before the others, so "the first value" would be
/// another one). All values are in `bin_attrs`, as bytes; [`values`] reads both maps.
fn search_entry(re: ldap3::asn1::StructureTag) -> Result<SearchEntry, String> {
    let malformed = || "the server sent a malformed entry".to_string();
    let mut parts = re
        .match_id(4)
        .and_then(|t| t.expect_constructed())
        .ok_or_else(malformed)?
        .into_iter();
    let dn = parts
        .next()
        .and_then(|t| t.expect_primitive())
        .ok_or_else(malformed)?;
    let dn = String::from_utf8(dn).map_err(|e| {
        format!(
            "the server sent an entry whose DN is not UTF-8: {}",
            shown_bytes(e.as_bytes())
        )
    })?;
    let attributes = parts
        .next()
        .and_then(|t| t.expect_constructed())
        .ok_or_else(malformed)?;
    let mut bin_attrs: HashMap<String, Vec<Vec<u8>>> = HashMap::with_capacity(attributes.len());
    for attribute in attributes {
        let mut a = attribute
            .expect_constructed()
            .ok_or_else(malformed)?
            .into_iter();
        let name = a
            .next()
            .and_then(|t| t.expect_primitive())
            .ok_or_else(malformed)?;
        let name = String::from_utf8(name).map_err(|e| {
            format!(
                "entry {dn:?}: an attribute description is not UTF-8: {}",
                shown_bytes(e.as_bytes())
            )
        })?;
        let vals = a
            .next()
            .and_then(|t| t.expect_constructed())
            .ok_or_else(malformed)?;
        let slot = bin_attrs.entry(name).or_default();
        slot.reserve_exact(vals.len());
        for v in vals {
            slot.push(v.expect_primitive().ok_or_else(malformed)?);
        }
    }
    Ok(SearchEntry {
        dn,
        attrs: HashMap::new(),
        bin_attrs,
    })
}

/// The attributes to request for users.
fn user_attributes(s: &LdapSettings) -> Vec<String> {
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
fn values<'e>(e: &'e SearchEntry, name: &'e str) -> impl Iterator<Item = &'e [u8]> {
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
fn is_attribute(k: &str, name: &str) -> bool {
    let (k, name) = (k.as_bytes(), name.as_bytes());
    k.len() >= name.len()
        && (k.len() == name.len() || k[name.len()] == b';')
        && k[..name.len()].eq_ignore_ascii_case(name)
        && !name.contains(&b';')
}

/// How the value of a text field is checked, besides being UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Key, email, names, mobile: no control characters other than tab.
    NoControls,
    /// Extra attributes and the user id matched against `memberUid`: anything.
    Any,
}

/// The first non-blank value of the first attribute of `names` present, trimmed, with the
/// name of that attribute. A value that is not UTF-8, or (with [`Check::NoControls`]) holds a
/// control character, is a problem naming the entry and the attribute, and gives `None`: it is
/// never replaced, cut, or passed over for the next value.
fn text_field<'n>(
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

enum Outcome {
    User(Box<User>),
    NoKey,
    /// No email; the key, when readable.
    NoEmail(Option<String>),
    /// Every problem of the entry, and its key when readable.
    Problems(Vec<LdapProblem>, Option<String>),
}

/// One entry as a user, or every problem of the entry.
fn entry_to_user(s: &LdapSettings, e: &SearchEntry, groups: Option<&GroupIndex>) -> Outcome {
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

/// Why `email` (trimmed, not empty) is not a usable address, if it is not. The rule of the
/// CSV source: one `@`, something on both sides, no whitespace or control characters.
fn email_error(email: &str) -> Option<&'static str> {
    let Some((local, domain)) = email.split_once('@') else {
        return Some("no \"@\"");
    };
    if domain.contains('@') {
        return Some("more than one \"@\"");
    }
    if local.is_empty() {
        return Some("nothing before \"@\"");
    }
    if domain.is_empty() {
        return Some("nothing after \"@\"");
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("contains whitespace or control characters");
    }
    None
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

/// A `uniqueMember` value (Name and Optional UID, RFC 4517) without its optional
/// `#'0101'B` UID suffix. A `#` elsewhere is part of the DN (`cn=Room #5,...`: RFC 4514 only
/// escapes a leading `#`).
fn without_uid_suffix(member: &str) -> &str {
    if let Some((dn, bits)) = member.rsplit_once("#'")
        && let Some(bits) = bits.strip_suffix("'B")
        && bits.bytes().all(|b| b == b'0' || b == b'1')
    {
        return dn;
    }
    member
}

/// Memberships read from group entries.
struct GroupIndex {
    /// Member DN key -> DNs of the groups listing it.
    by_member_dn: HashMap<String, Vec<Arc<str>>>,
    /// Member user id -> DNs of the groups listing it.
    by_uid: HashMap<String, Vec<Arc<str>>>,
}

impl GroupIndex {
    fn groups_of(&self, dn: &str, uid: Option<&str>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if let Some(gs) = self.by_member_dn.get(&dn_key(dn)) {
            out.extend(gs.iter().map(|g| g.to_string()));
        }
        if let Some(uid) = uid
            && let Some(gs) = self.by_uid.get(uid)
        {
            out.extend(gs.iter().map(|g| g.to_string()));
        }
        out
    }

    /// `groups` and every group that contains one of them, transitively (cycles are fine).
    fn closure(&self, groups: &[String]) -> Vec<String> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        let mut todo: Vec<String> = groups.to_vec();
        while let Some(g) = todo.pop() {
            if !seen.insert(dn_key(&g)) {
                continue;
            }
            if let Some(parents) = self.by_member_dn.get(&dn_key(&g)) {
                todo.extend(parents.iter().map(|p| p.to_string()));
            }
            out.push(g);
        }
        out
    }
}

async fn group_index(
    s: &LdapSettings,
    g: &GroupSearch,
    ldap: &mut Ldap,
) -> Result<GroupIndex, String> {
    let mut attrs = g.member_attributes.clone();
    attrs.extend(g.member_uid_attribute.iter().cloned());
    let mut index = GroupIndex {
        by_member_dn: HashMap::new(),
        by_uid: HashMap::new(),
    };
    paged_search(
        s,
        ldap,
        &g.base_dn,
        g.scope,
        &g.filter,
        &attrs,
        "groups",
        |e| {
            let dn: Arc<str> = Arc::from(e.dn.as_str());
            // A value that is not UTF-8 can name no user: user DNs are UTF-8, and so must be
            // the user ids matched against memberUid (else the user's entry is a problem).
            let text = |attr: &str, v: &[u8]| match std::str::from_utf8(v) {
                Ok(t) => Some(t.to_string()),
                Err(_) => {
                    warn!(
                        group = ?e.dn,
                        "LDAP group: a value of attribute {attr:?} is not UTF-8 and matches no user: {}",
                        shown_bytes(v)
                    );
                    None
                }
            };
            for m in &g.member_attributes {
                for v in values(&e, m) {
                    let Some(member) = text(m, v) else { continue };
                    index
                        .by_member_dn
                        .entry(dn_key(without_uid_suffix(&member)))
                        .or_default()
                        .push(Arc::clone(&dn));
                }
            }
            if let Some(mu) = &g.member_uid_attribute {
                for v in values(&e, mu) {
                    let Some(uid) = text(mu, v) else { continue };
                    index
                        .by_uid
                        .entry(uid.trim().to_string())
                        .or_default()
                        .push(Arc::clone(&dn));
                }
            }
        },
    )
    .await?;
    Ok(index)
}

/// Adds, to each user's groups, the groups containing them (read from each group's
/// `memberOf`, one base search per group).
async fn nest_member_of(
    s: &LdapSettings,
    ldap: &mut Ldap,
    attribute: &str,
    users: &mut [User],
) -> Result<(), String> {
    let mut parents: HashMap<String, Vec<String>> = HashMap::new();
    let mut todo: Vec<String> = users.iter().flat_map(|u| u.groups.clone()).collect();
    while let Some(g) = todo.pop() {
        let k = dn_key(&g);
        if parents.contains_key(&k) {
            continue;
        }
        let mut found = Vec::new();
        let mut res = ldap
            .with_timeout(s.operation_timeout)
            .search(&g, Scope::Base, "(objectClass=*)", vec![attribute])
            .await
            .map_err(|e| format!("reading the groups of group {g:?}: {}", describe(&e)))?;
        match res.1.rc {
            0 => {
                for re in std::mem::take(&mut res.0) {
                    let e = search_entry(re.0)
                        .map_err(|m| format!("reading the groups of group {g:?}: {m}"))?;
                    for v in values(&e, attribute) {
                        let parent = std::str::from_utf8(v).map_err(|err| {
                            format!(
                                "reading the groups of group {g:?}: invalid UTF-8 in attribute \
                                 {attribute:?} (after byte {} of the value): {}",
                                err.valid_up_to(),
                                shown_bytes(v)
                            )
                        })?;
                        found.push(parent.to_string());
                    }
                }
            }
            // A memberOf value pointing at an entry we cannot see: no parents.
            32 => {}
            rc => {
                return Err(format!(
                    "reading the groups of group {g:?}: {} ({rc}){}",
                    rc_name(rc),
                    text(&res.1.text)
                ));
            }
        }
        todo.extend(found.iter().cloned());
        parents.insert(k, found);
    }
    for u in users {
        let mut seen: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        let mut todo = u.groups.clone();
        while let Some(g) = todo.pop() {
            let k = dn_key(&g);
            if !seen.insert(k.clone()) {
                continue;
            }
            if let Some(p) = parents.get(&k) {
                todo.extend(p.iter().cloned());
            }
            out.push(g);
        }
        u.groups = out;
    }
    Ok(())
}

/// Groups (nested ones included) whose DN holds a control character, each naming the user's
/// DN and where its groups come from.
fn group_problems(s: &LdapSettings, users: &[User], dns: &[String]) -> Vec<LdapProblem> {
    let mut problems = Vec::new();
    for (u, dn) in users.iter().zip(dns) {
        for g in u.groups.iter().filter(|g| has_control(g)) {
            problems.push(match &s.groups {
                GroupSource::MemberOf { attribute } => LdapProblem::value(
                    dn,
                    attribute,
                    format!(
                        "control character in a group of attribute {attribute:?}: {}",
                        shown(g)
                    ),
                )
                .with_value(g),
                _ => LdapProblem::entry(
                    dn,
                    format!(
                        "control character in the DN of a group found by the group search: {}",
                        shown(g)
                    ),
                )
                .with_value(g),
            });
        }
    }
    problems
}

/// Duplicate keys and emails, each naming both DNs; every entry sharing one has a problem.
fn duplicates(s: &LdapSettings, users: &[User], dns: &[String]) -> Vec<LdapProblem> {
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

    #[test]
    fn group_closure_handles_cycles() {
        let g = |s: &str| -> Arc<str> { Arc::from(s) };
        let mut by_member_dn = HashMap::new();
        by_member_dn.insert("cn=a".to_string(), vec![g("cn=B")]);
        by_member_dn.insert("cn=b".to_string(), vec![g("cn=C")]);
        by_member_dn.insert("cn=c".to_string(), vec![g("cn=A")]);
        let idx = GroupIndex {
            by_member_dn,
            by_uid: HashMap::new(),
        };
        let mut all = idx.closure(&["cn=A".to_string()]);
        all.sort();
        assert_eq!(all, vec!["cn=A", "cn=B", "cn=C"]);
    }

    #[test]
    fn emails_checked() {
        assert!(email_error("a@b.c").is_none());
        assert!(email_error("ab.c").is_some());
        assert!(email_error("a b@c").is_some());
        assert!(email_error("@c").is_some());
        assert_eq!(email_error("a@b@c"), Some("more than one \"@\""));
        assert!(email_error("jos\u{e9}@ex\u{e4}mple.org").is_none());
        assert!(email_error("x?y#z%/..@example.org").is_none());
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

    /// A search result entry as the server sends it: `(type, values)` pairs.
    fn result_entry(dn: &[u8], attrs: &[(&[u8], &[&[u8]])]) -> ldap3::asn1::StructureTag {
        use ldap3::asn1::{PL, StructureTag, TagClass};
        let prim = |id: u64, v: &[u8]| StructureTag {
            class: TagClass::Universal,
            id,
            payload: PL::P(v.to_vec()),
        };
        let cons = |id: u64, inner: Vec<StructureTag>| StructureTag {
            class: TagClass::Universal,
            id,
            payload: PL::C(inner),
        };
        let attrs = attrs
            .iter()
            .map(|(name, vals)| {
                cons(
                    16,
                    vec![
                        prim(4, name),
                        cons(17, vals.iter().map(|v| prim(4, v)).collect()),
                    ],
                )
            })
            .collect();
        StructureTag {
            class: TagClass::Application,
            id: 4,
            payload: PL::C(vec![prim(4, dn), cons(16, attrs)]),
        }
    }

    #[test]
    fn entries_keep_value_order_and_never_panic() {
        let e = search_entry(result_entry(
            b"cn=x,dc=example",
            &[(b"mail", &[b"first@example.org", b"J\xfcrgen@example.org"])],
        ))
        .unwrap();
        assert_eq!(
            values(&e, "mail").collect::<Vec<_>>(),
            vec![&b"first@example.org"[..], &b"J\xfcrgen@example.org"[..]]
        );
        // ldap3's own construct puts the non-UTF-8 value first.
        let c = SearchEntry::construct(ldap3::ResultEntry::new(result_entry(
            b"cn=x,dc=example",
            &[(b"mail", &[b"first@example.org", b"J\xfcrgen@example.org"])],
        )));
        assert_eq!(c.bin_attrs["mail"][0], b"J\xfcrgen@example.org");
        // So the first value is the one used.
        let s = LdapSettings::new("ldap://h", "dc=example", ServerType::Generic);
        let e = search_entry(result_entry(
            b"cn=x,dc=example",
            &[
                (b"entryUUID", &[b"k1"]),
                (b"mail", &[b"first@example.org", b"J\xfcrgen@example.org"]),
            ],
        ))
        .unwrap();
        match entry_to_user(&s, &e, None) {
            Outcome::User(u) => assert_eq!(u.email, "first@example.org"),
            _ => panic!("not a user"),
        }
        // A DN or an attribute description that is not UTF-8 is an error, not a panic.
        let err = search_entry(result_entry(b"cn=\xff,dc=x", &[])).unwrap_err();
        assert!(err.contains(r#""cn=\xff,dc=x""#), "{err}");
        let err = search_entry(result_entry(b"cn=x", &[(b"m\xffil", &[b"v"])])).unwrap_err();
        assert!(err.contains("attribute description is not UTF-8"), "{err}");
        let malformed = ldap3::asn1::StructureTag {
            class: ldap3::asn1::TagClass::Application,
            id: 4,
            payload: ldap3::asn1::PL::P(b"x".to_vec()),
        };
        assert!(search_entry(malformed).is_err());
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

    #[test]
    fn loopback_urls() {
        let lo = |u: &str| is_loopback(&url::Url::parse(u).unwrap());
        assert!(lo("ldap://127.0.0.1:389"));
        assert!(lo("ldap://127.1.2.3"));
        assert!(lo("ldap://[::1]:389"));
        assert!(lo("ldap://localhost"));
        assert!(!lo("ldap://10.0.0.1"));
        assert!(!lo("ldap://ldap.example.com"));
        assert!(!lo("ldap://127.0.0.1.example.com"));
    }

    #[test]
    fn unique_member_uid_suffix() {
        assert_eq!(without_uid_suffix("cn=a,dc=x#'0101'B"), "cn=a,dc=x");
        assert_eq!(without_uid_suffix("cn=a,dc=x#''B"), "cn=a,dc=x");
        assert_eq!(without_uid_suffix("cn=Room #5,dc=x"), "cn=Room #5,dc=x");
        assert_eq!(without_uid_suffix("cn=a #'x'B,dc=x"), "cn=a #'x'B,dc=x");
    }

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
