//! Covata's settings: its credentials (password grant + client credentials), session expiry,
//! the bulk import thresholds, their validation and Covata's [`VendorSpec`].

use crate::connector::settings::{ProblemSink, RawVendorKeys, check_credentials};
use crate::connector::{Credential, TargetKind, VendorSpec, field};
use crate::mapping::FieldKind;
use crate::secret::SecretRef;

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

/// Covata's own keys that are set (reported when the target is of another kind).
pub(crate) fn keys_set(k: &RawVendorKeys) -> Vec<&'static str> {
    [
        (
            "expire_sessions_on_disable",
            k.expire_sessions_on_disable.is_some(),
        ),
        ("bulk_import_min", k.bulk_import_min.is_some()),
        ("import_batch_size", k.import_batch_size.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect()
}

/// Checks a Covata target's keys (at `at`, e.g. `target[0]`).
pub(crate) fn validate(
    raw: RawVendorKeys,
    at: &str,
    pr: &mut dyn ProblemSink,
) -> Option<CovataSettings> {
    if raw.bulk_import_min == Some(0) {
        pr.push(
            format!("{at}.bulk_import_min"),
            "must be at least 1 (leave it unset to never import)".into(),
        );
    }
    if let Some(n) = raw.import_batch_size
        && !(1..=MAX_IMPORT_BATCH).contains(&n)
    {
        pr.push(
            format!("{at}.import_batch_size"),
            format!("must be between 1 and {MAX_IMPORT_BATCH} (got {n})"),
        );
    }
    let expire_sessions_on_disable = raw.expire_sessions_on_disable.unwrap_or(true);
    let bulk_import_min = raw.bulk_import_min;
    let import_batch_size = raw.import_batch_size.unwrap_or(DEFAULT_IMPORT_BATCH);
    let c = check_credentials(TargetKind::Covata, &SPEC, raw, at, pr);
    Some(CovataSettings {
        username: c.username?,
        password: c.password?,
        client_id: c.client_id?,
        client_secret: c.client_secret?,
        expire_sessions_on_disable,
        bulk_import_min,
        import_batch_size,
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
    required_credentials: &[
        Credential::Username,
        Credential::Password,
        Credential::ClientId,
        Credential::ClientSecret,
    ],
    optional_credentials: &[],
    credential_defaults: &[],
};
