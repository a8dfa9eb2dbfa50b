//! Primavera's settings: its credentials (HTTP basic), how long user jobs may run and how
//! often they are polled, their validation and Primavera's [`VendorSpec`].

use std::time::Duration;

use std::path::PathBuf;

use serde::Deserialize;

use crate::connector::settings::{ProblemSink, VendorContext};
use crate::connector::{VendorSpec, field};
use crate::mapping::FieldKind;
use crate::secret::{Secret, SecretRef};

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

/// A Primavera target's own keys, as written.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PrimaveraKeys {
    username: Option<String>,
    password: Option<Secret>,
    password_file: Option<PathBuf>,
    password_credential: Option<String>,
    job_timeout: Option<String>,
    job_poll_interval: Option<String>,
}

/// Checks a Primavera target's keys.
pub(crate) fn validate(
    raw: PrimaveraKeys,
    cx: &VendorContext<'_>,
    pr: &mut dyn ProblemSink,
) -> Option<PrimaveraSettings> {
    let job_timeout = cx.duration(
        "job_timeout",
        raw.job_timeout.as_deref(),
        Duration::from_secs(600),
        pr,
    );
    let job_poll_interval = cx.duration(
        "job_poll_interval",
        raw.job_poll_interval.as_deref(),
        Duration::from_secs(1),
        pr,
    );
    let username = cx.required("username", raw.username, pr);
    let password = cx.required_secret(
        "password",
        raw.password,
        raw.password_file,
        raw.password_credential,
        pr,
    );
    Some(PrimaveraSettings {
        username: username?,
        password: password?,
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
};
