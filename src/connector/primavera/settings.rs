//! Primavera's settings: its credentials (HTTP basic), how long user jobs may run and how
//! often they are polled, their validation and Primavera's [`VendorSpec`].

use std::time::Duration;

use crate::connector::settings::{ProblemSink, RawVendorKeys, check_credentials, duration};
use crate::connector::{Credential, TargetKind, VendorSpec, field};
use crate::mapping::FieldKind;
use crate::secret::SecretRef;

/// A Primavera target's own settings.
#[derive(Debug, Clone)]
pub struct PrimaveraSettings {
    pub username: String,
    pub password: SecretRef,
    /// How long a user job may run before its operations fail (default 10m).
    pub job_timeout: Duration,
    /// The first delay between job status polls; it doubles up to 30s (default 1s).
    pub job_poll_interval: Duration,
}

/// Primavera's own keys that are set (reported when the target is of another kind).
pub(crate) fn keys_set(k: &RawVendorKeys) -> Vec<&'static str> {
    [
        ("job_timeout", k.job_timeout.is_some()),
        ("job_poll_interval", k.job_poll_interval.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect()
}

/// Checks a Primavera target's keys (at `at`, e.g. `target[0]`).
pub(crate) fn validate(
    raw: RawVendorKeys,
    at: &str,
    pr: &mut dyn ProblemSink,
) -> Option<PrimaveraSettings> {
    let job_timeout = match raw.job_timeout.as_deref() {
        Some(v) => duration(v, &format!("{at}.job_timeout"), pr),
        None => Some(Duration::from_secs(600)),
    };
    let job_poll_interval = match raw.job_poll_interval.as_deref() {
        Some(v) => duration(v, &format!("{at}.job_poll_interval"), pr),
        None => Some(Duration::from_secs(1)),
    };
    let c = check_credentials(TargetKind::Primavera, &SPEC, raw, at, pr);
    Some(PrimaveraSettings {
        username: c.username?,
        password: c.password?,
        job_timeout: job_timeout?,
        job_poll_interval: job_poll_interval?,
    })
}

/// Oracle Primavera Administration: the `User` object of `/cloudapi/restapi`. Roles are per
/// tenant (`GET /roles`), so they are not checked here.
pub static SPEC: VendorSpec = VendorSpec {
    fields: &[
        field("loginId", FieldKind::Text, true, Some("{email}")),
        field("emailAddress", FieldKind::Email, true, Some("{email}")),
        field("firstName", FieldKind::Text, true, Some("{given_name}")),
        field("lastName", FieldKind::Text, true, Some("{family_name}")),
        field("middleName", FieldKind::Text, false, Some("{other_name}")),
        field("employeeNumber", FieldKind::Text, false, None),
        // Required by the API and different for every customer: no default.
        field("organization", FieldKind::Text, true, None),
        field("userType", FieldKind::Text, false, None),
    ],
    free_fields: None,
    login_field: "loginId",
    known_roles: None,
    default_roles: &[],
    roles_required: false,
    supports_groups: false,
    default_requests_per_second: None,
    required_credentials: &[Credential::Username, Credential::Password],
    optional_credentials: &[],
    credential_defaults: &[],
};
