//! Valuekeep's settings: its client credentials, tenant and organization keys, token URL and
//! scope, the invitation and status options, their validation and Valuekeep's [`VendorSpec`].

use std::path::PathBuf;

use serde::Deserialize;

use crate::connector::settings::{ProblemSink, VendorContext};
use crate::connector::{VendorSpec, field};
use crate::mapping::FieldKind;
use crate::secret::{Secret, SecretRef};

/// A Valuekeep target's own settings.
#[derive(Debug, Clone)]
pub struct ValuekeepSettings {
    pub client_id: String,
    pub client_secret: SecretRef,
    pub tenant_key: String,
    pub org_key: String,
    /// The identity server's token endpoint (default Primavera BSS's).
    pub token_url: url::Url,
    /// The token scope (default `application`).
    pub scope: String,
    /// Send the invitation (`POST /identity/users/sendInvitation`) after a create (default
    /// false).
    pub send_invitation: bool,
    /// Also set `status` (1 active, 2 inactive) when enabling / disabling, besides `isActive`
    /// (default false).
    pub set_status: bool,
}

/// The token endpoint when `token_url` is not set: Primavera BSS's identity server.
pub const DEFAULT_TOKEN_URL: &str = "https://identity.primaverabss.com/connect/token";

/// A Valuekeep target's own keys, as written.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ValuekeepKeys {
    client_id: Option<String>,
    client_secret: Option<Secret>,
    client_secret_file: Option<PathBuf>,
    client_secret_credential: Option<String>,
    token_url: Option<String>,
    scope: Option<String>,
    tenant_key: Option<String>,
    org_key: Option<String>,
    send_invitation: Option<bool>,
    set_status: Option<bool>,
}

/// Checks a Valuekeep target's keys.
pub(crate) fn validate(
    raw: ValuekeepKeys,
    cx: &VendorContext<'_>,
    pr: &mut dyn ProblemSink,
) -> Option<ValuekeepSettings> {
    let client_id = cx.required("client_id", raw.client_id, pr);
    let client_secret = cx.required_secret(
        "client_secret",
        raw.client_secret,
        raw.client_secret_file,
        raw.client_secret_credential,
        pr,
    );
    let tenant_key = cx.required("tenant_key", raw.tenant_key, pr);
    let org_key = cx.required("org_key", raw.org_key, pr);
    let token_url = cx.credential_url("token_url", raw.token_url.as_deref(), DEFAULT_TOKEN_URL, pr);
    Some(ValuekeepSettings {
        client_id: client_id?,
        client_secret: client_secret?,
        tenant_key: tenant_key?,
        org_key: org_key?,
        token_url: token_url?,
        scope: raw.scope.unwrap_or_else(|| "application".to_string()),
        send_invitation: raw.send_invitation.unwrap_or(false),
        set_status: raw.set_status.unwrap_or(false),
    })
}

/// Valuekeep identity/users: `ApiUserResource`.
pub static SPEC: VendorSpec = VendorSpec {
    fields: &[
        field("userKey", FieldKind::Text, true, Some("{key}")),
        field(
            "name",
            FieldKind::Text,
            true,
            Some("{given_name} {family_name}"),
        ),
        field("email", FieldKind::Email, false, Some("{email}")),
        field("isTechnician", FieldKind::Bool, true, Some("false")),
    ],
    free_fields: None,
    login_field: "userKey",
    known_roles: None,
    default_roles: &[],
    roles_required: false,
    supports_groups: true,
    // The API allows 60 requests a minute per client: pace at that by default.
    default_requests_per_second: Some(1.0),
};
