//! Covata's settings: its credentials (password grant + client credentials), session expiry,
//! the bulk import thresholds, their validation and Covata's [`VendorSpec`].

use std::path::PathBuf;

use serde::Deserialize;

use crate::connector::settings::{ProblemSink, VendorContext};
use crate::connector::{VendorSpec, field};
use crate::mapping::FieldKind;
use crate::secret::{Secret, SecretRef};

/// `import_batch_size`: the default, and the most accounts one import file may hold.
pub const DEFAULT_IMPORT_BATCH: usize = 1000;
pub const MAX_IMPORT_BATCH: usize = 100_000;

/// A Covata target's own settings.
#[derive(Debug, Clone)]
pub struct CovataSettings {
    pub username: String,
    pub password: SecretRef,
    pub client_id: String,
    pub client_secret: SecretRef,
    /// End a user's sessions (`action=expire`) before disabling or deleting it (default true).
    pub expire_sessions_on_disable: bool,
    /// Create through the CSV import endpoint when a run has at least this many creates
    /// (default: never).
    pub bulk_import_min: Option<usize>,
    /// Accounts per uploaded import file (default 1000).
    pub import_batch_size: usize,
}

/// A Covata target's own keys, as written.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CovataKeys {
    username: Option<String>,
    password: Option<Secret>,
    password_file: Option<PathBuf>,
    password_credential: Option<String>,
    client_id: Option<String>,
    client_secret: Option<Secret>,
    client_secret_file: Option<PathBuf>,
    client_secret_credential: Option<String>,
    expire_sessions_on_disable: Option<bool>,
    bulk_import_min: Option<usize>,
    import_batch_size: Option<usize>,
}

/// Checks a Covata target's keys.
pub(crate) fn validate(
    raw: CovataKeys,
    cx: &VendorContext<'_>,
    pr: &mut dyn ProblemSink,
) -> Option<CovataSettings> {
    if raw.bulk_import_min == Some(0) {
        pr.push(
            cx.key("bulk_import_min"),
            "must be at least 1 (leave it unset to never import)".into(),
        );
    }
    if let Some(n) = raw.import_batch_size
        && !(1..=MAX_IMPORT_BATCH).contains(&n)
    {
        pr.push(
            cx.key("import_batch_size"),
            format!("must be between 1 and {MAX_IMPORT_BATCH} (got {n})"),
        );
    }
    let username = cx.required("username", raw.username, pr);
    let password = cx.required_secret(
        "password",
        raw.password,
        raw.password_file,
        raw.password_credential,
        pr,
    );
    let client_id = cx.required("client_id", raw.client_id, pr);
    let client_secret = cx.required_secret(
        "client_secret",
        raw.client_secret,
        raw.client_secret_file,
        raw.client_secret_credential,
        pr,
    );
    Some(CovataSettings {
        username: username?,
        password: password?,
        client_id: client_id?,
        client_secret: client_secret?,
        expire_sessions_on_disable: raw.expire_sessions_on_disable.unwrap_or(true),
        bulk_import_min: raw.bulk_import_min,
        import_batch_size: raw.import_batch_size.unwrap_or(DEFAULT_IMPORT_BATCH),
    })
}

/// Covata Access Service: `POST /api/v1/users` body fields; the five documented roles.
pub static SPEC: VendorSpec = VendorSpec {
    fields: &[
        field("email", FieldKind::Email, true, Some("{email}")),
        field("firstName", FieldKind::Text, false, Some("{given_name}")),
        field("lastName", FieldKind::Text, false, Some("{family_name}")),
        field("otherName", FieldKind::Text, false, Some("{other_name}")),
        field("mobileNumber", FieldKind::Text, false, Some("{mobile}")),
        field("planId", FieldKind::Text, false, None),
    ],
    free_fields: None,
    login_field: "email",
    known_roles: Some(&[
        "ROLE_SYSTEM_ADMIN",
        "ROLE_COLLABORATOR",
        "ROLE_ORIGINATOR",
        "ROLE_ADHOC_COLLABORATOR",
        "ROLE_USER_ADMIN",
    ]),
    default_roles: &["ROLE_COLLABORATOR"],
    roles_required: true,
    supports_groups: false,
    default_requests_per_second: None,
};
