//! The LDAP fixtures the LDAP suites share: the data files in `tests/data/ldap/`, the Planet
//! Express directory in a real slapd, and the settings (library and config) that read it.

use std::path::PathBuf;
use std::time::Duration;

use dirsync::secret::Secret;
use dirsync::source::ldap::{DisabledRule, LdapSettings, ServerType};

use super::slapd::{READER_DN, READER_PASSWORD, Slapd, SlapdOptions};

/// Standard base64, for binary values in LDIF (`attr:: <base64>`).
pub use super::fake::base64_encode as base64;

pub const PEOPLE: &str = "ou=people,dc=example,dc=com";
pub const GROUPS: &str = "ou=groups,dc=example,dc=com";

/// A file of `tests/data/ldap/`.
pub fn data(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/ldap")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The Planet Express fixture (50 entries, 49 users: Zoidberg has no mail), with its groups
/// added through the server (memberof overlay).
pub fn planet_express() -> Slapd {
    let server = Slapd::start(SlapdOptions::default(), &data("planet-express.ldif"));
    server.modify(&data("groups.ldif"));
    server
}

/// The library settings that read [`PEOPLE`] as the reader: `nsAccountLock: true` disables,
/// `employeeNumber` is the extra field `employee_number`.
pub fn settings(server: &Slapd) -> LdapSettings {
    let mut s = LdapSettings::new(server.url(), PEOPLE, ServerType::Generic);
    s.bind_dn = Some(READER_DN.into());
    s.bind_password = Some(Secret::new(READER_PASSWORD));
    s.disabled = Some(DisabledRule {
        attribute: "nsAccountLock".into(),
        values: vec!["true".into()],
    });
    s.extra
        .insert("employee_number".into(), "employeeNumber".into());
    s.operation_timeout = Duration::from_secs(20);
    s
}

/// The `[source.ldap]` keys (after the connection's) that read [`PEOPLE`] in the binary.
pub fn people_source_keys(more: &str) -> String {
    format!(
        "base_dn = \"{PEOPLE}\"\ndisabled_attribute = \"nsAccountLock\"\n\
         disabled_values = [\"TRUE\"]\noperation_timeout = \"20s\"\n{more}"
    )
}
