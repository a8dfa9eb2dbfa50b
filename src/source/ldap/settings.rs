//! What `[source.ldap]` configures: the server and its kind, the search, the attributes read,
//! the enabled rule, where groups come from, and the defaults of each kind of directory.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use ldap3::Scope;

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

    pub(super) fn ldap(self) -> Scope {
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
