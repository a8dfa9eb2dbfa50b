//! Targets (the SaaS applications): what each vendor's accounts look like — its fields, the
//! roles it documents, the credentials it needs. Connectors that talk to the APIs live in one
//! folder per vendor under this module.

use serde::Serialize;

use std::sync::Arc;

use crate::config::TargetConfig;
use crate::mapping::FieldKind;

// The trait module keeps its name until the connector folder is reorganised (issue 17).
#[allow(clippy::module_inception)]
pub mod connector;
pub mod covata;
pub mod http;
pub mod primavera;
pub mod valuekeep;

pub use connector::{
    Capabilities, Connector, Created, OpError, RemoteAccount, RoleSemantics, StatusAction,
    StatusItem,
};

/// The vendors dirsync can sync to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    Covata,
    Primavera,
    Valuekeep,
}

impl TargetKind {
    pub const ALL: [TargetKind; 3] = [
        TargetKind::Covata,
        TargetKind::Primavera,
        TargetKind::Valuekeep,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Covata => "covata",
            TargetKind::Primavera => "primavera",
            TargetKind::Valuekeep => "valuekeep",
        }
    }

    pub fn parse(s: &str) -> Option<TargetKind> {
        TargetKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The vendor's account shape.
    pub fn spec(self) -> &'static VendorSpec {
        match self {
            TargetKind::Covata => &COVATA,
            TargetKind::Primavera => &PRIMAVERA,
            TargetKind::Valuekeep => &VALUEKEEP,
        }
    }
}

/// A field of a vendor's user record that dirsync can set.
#[derive(Debug)]
pub struct FieldSpec {
    /// The field's name in the vendor API.
    pub name: &'static str,
    pub kind: FieldKind,
    /// The vendor rejects a user without it.
    pub required: bool,
    /// The template used when the config does not map the field (`None`: unset unless mapped).
    pub default_template: Option<&'static str>,
}

/// Credential settings of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Username,
    Password,
    ClientId,
    ClientSecret,
    TokenUrl,
    Scope,
    TenantKey,
    OrgKey,
}

impl Credential {
    pub const ALL: [Credential; 8] = [
        Credential::Username,
        Credential::Password,
        Credential::ClientId,
        Credential::ClientSecret,
        Credential::TokenUrl,
        Credential::Scope,
        Credential::TenantKey,
        Credential::OrgKey,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Credential::Username => "username",
            Credential::Password => "password",
            Credential::ClientId => "client_id",
            Credential::ClientSecret => "client_secret",
            Credential::TokenUrl => "token_url",
            Credential::Scope => "scope",
            Credential::TenantKey => "tenant_key",
            Credential::OrgKey => "org_key",
        }
    }
}

/// What dirsync knows about one vendor's accounts.
#[derive(Debug)]
pub struct VendorSpec {
    pub fields: &'static [FieldSpec],
    /// The field that identifies an account to people and for adoption.
    pub login_field: &'static str,
    /// Roles the vendor documents; `None` when roles are per tenant.
    pub known_roles: Option<&'static [&'static str]>,
    /// Roles used when no rule matches and the config names no `default_roles`.
    pub default_roles: &'static [&'static str],
    /// The vendor rejects a user without any role.
    pub roles_required: bool,
    /// The vendor has user groups besides roles (`[[target.groups]]`).
    pub supports_groups: bool,
    /// Settings this vendor needs.
    pub required_credentials: &'static [Credential],
    /// Settings this vendor accepts but does not need.
    pub optional_credentials: &'static [Credential],
    /// Defaults for optional settings.
    pub credential_defaults: &'static [(Credential, &'static str)],
}

impl VendorSpec {
    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }
}

const fn field(
    name: &'static str,
    kind: FieldKind,
    required: bool,
    default_template: Option<&'static str>,
) -> FieldSpec {
    FieldSpec {
        name,
        kind,
        required,
        default_template,
    }
}

/// Covata Access Service: `POST /api/v1/users` body fields; the five documented roles.
pub static COVATA: VendorSpec = VendorSpec {
    fields: &[
        field("email", FieldKind::Email, true, Some("{email}")),
        field("firstName", FieldKind::Text, false, Some("{given_name}")),
        field("lastName", FieldKind::Text, false, Some("{family_name}")),
        field("otherName", FieldKind::Text, false, Some("{other_name}")),
        field("mobileNumber", FieldKind::Text, false, Some("{mobile}")),
        field("planId", FieldKind::Text, false, None),
    ],
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
    required_credentials: &[
        Credential::Username,
        Credential::Password,
        Credential::ClientId,
        Credential::ClientSecret,
    ],
    optional_credentials: &[],
    credential_defaults: &[],
};

/// Oracle Primavera Administration: the `User` object of `/cloudapi/restapi`. Roles are per
/// tenant (`GET /roles`), so they are not checked here.
pub static PRIMAVERA: VendorSpec = VendorSpec {
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
    login_field: "loginId",
    known_roles: None,
    default_roles: &[],
    roles_required: false,
    supports_groups: false,
    required_credentials: &[Credential::Username, Credential::Password],
    optional_credentials: &[],
    credential_defaults: &[],
};

/// Valuekeep identity/users: `ApiUserResource`.
pub static VALUEKEEP: VendorSpec = VendorSpec {
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
    login_field: "userKey",
    known_roles: None,
    default_roles: &[],
    roles_required: false,
    supports_groups: true,
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

/// Why a target's connector could not be built (its HTTP client; nothing is sent).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConnectError {
    pub target: String,
    /// Names the target.
    pub message: String,
}

/// Builds the connector of a target. Nothing is sent: connectors authenticate on first use.
/// Reads one of `target`'s secrets (inline, `_file` or `_credential`) now, when its connector
/// is built: the error names the target and the config key, never the value.
pub(crate) fn read_secret(
    target: &TargetConfig,
    secret: Option<&crate::secret::SecretRef>,
    what: &str,
) -> Result<crate::secret::Secret, http::HttpError> {
    let setup = |message: String| http::HttpError::Setup {
        target: target.name.clone(),
        message,
    };
    let r = secret
        .ok_or_else(|| setup(format!("{} needs the setting {what}", target.kind.as_str())))?;
    let s = r.resolve().map_err(|e| setup(e.to_string()))?;
    if s.expose().trim().is_empty() {
        return Err(setup(format!("{}: empty", r.key)));
    }
    Ok(s)
}

/// Builds the connector of `target`, reading its secrets (the only place they are read).
pub fn connect(target: &TargetConfig) -> Result<Arc<dyn Connector>, ConnectError> {
    let err = |e: http::HttpError| ConnectError {
        target: target.name.clone(),
        message: e.to_string(),
    };
    Ok(match target.kind {
        TargetKind::Covata => Arc::new(covata::CovataConnector::new(target).map_err(err)?),
        TargetKind::Primavera => Arc::new(primavera::PrimaveraConnector::new(target).map_err(err)?),
        TargetKind::Valuekeep => Arc::new(valuekeep::ValuekeepConnector::new(target).map_err(err)?),
    })
}
