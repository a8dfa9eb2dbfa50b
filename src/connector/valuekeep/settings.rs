//! Valuekeep's settings: its client credentials, tenant and organization keys, token URL and
//! scope, the invitation and status options, their validation and Valuekeep's [`VendorSpec`].

use crate::connector::settings::{ProblemSink, RawVendorKeys, check_credentials};
use crate::connector::{Credential, TargetKind, VendorSpec, field};
use crate::mapping::FieldKind;
use crate::secret::SecretRef;

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

/// Valuekeep's own keys that are set (reported when the target is of another kind).
pub(crate) fn keys_set(k: &RawVendorKeys) -> Vec<&'static str> {
    [
        ("send_invitation", k.send_invitation.is_some()),
        ("set_status", k.set_status.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect()
}

/// Checks a Valuekeep target's keys (at `at`, e.g. `target[0]`).
pub(crate) fn validate(
    raw: RawVendorKeys,
    at: &str,
    pr: &mut dyn ProblemSink,
) -> Option<ValuekeepSettings> {
    let send_invitation = raw.send_invitation.unwrap_or(false);
    let set_status = raw.set_status.unwrap_or(false);
    let c = check_credentials(TargetKind::Valuekeep, &SPEC, raw, at, pr);
    Some(ValuekeepSettings {
        client_id: c.client_id?,
        client_secret: c.client_secret?,
        tenant_key: c.tenant_key?,
        org_key: c.org_key?,
        token_url: c.token_url?,
        scope: c.scope?,
        send_invitation,
        set_status,
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
    required_credentials: &[
        Credential::ClientId,
        Credential::ClientSecret,
        Credential::TenantKey,
        Credential::OrgKey,
    ],
    optional_credentials: &[Credential::TokenUrl, Credential::Scope],
    credential_defaults: &[
        (
            Credential::TokenUrl,
            "https://identity.primaverabss.com/connect/token",
        ),
        (Credential::Scope, "application"),
    ],
};
