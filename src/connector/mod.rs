//! Connectors to the targets (the SaaS applications): the vendor kinds, what each vendor's
//! accounts look like ([`VendorSpec`]), and [`connect`], which builds a target's connector from
//! its typed settings. Each vendor's folder owns its connector, settings, validation and spec.

use serde::Serialize;

use std::sync::Arc;

use crate::mapping::FieldKind;

pub mod api;
pub mod covata;
pub mod http;
pub mod primavera;
pub mod scim;
pub mod settings;
pub mod valuekeep;

pub use api::{
    Capabilities, Connector, Created, OpError, RemoteAccount, RoleSemantics, StatusAction,
    StatusItem,
};
pub use settings::{HttpSettings, TargetConfig, VendorSettings};

/// The vendors dirsync can sync to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    Covata,
    Primavera,
    Valuekeep,
    Scim,
}

impl TargetKind {
    pub const ALL: [TargetKind; 4] = [
        TargetKind::Covata,
        TargetKind::Primavera,
        TargetKind::Valuekeep,
        TargetKind::Scim,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Covata => "covata",
            TargetKind::Primavera => "primavera",
            TargetKind::Valuekeep => "valuekeep",
            TargetKind::Scim => "scim",
        }
    }

    pub fn parse(s: &str) -> Option<TargetKind> {
        TargetKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The vendor's account shape.
    pub fn spec(self) -> &'static VendorSpec {
        match self {
            TargetKind::Covata => &covata::settings::SPEC,
            TargetKind::Primavera => &primavera::settings::SPEC,
            TargetKind::Valuekeep => &valuekeep::settings::SPEC,
            TargetKind::Scim => &scim::settings::SPEC,
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

/// A vendor's check of a free-form field name: how its values compare, or why the name is
/// refused.
pub type FieldCheck = fn(&str) -> Result<FieldKind, String>;

/// What dirsync knows about one vendor's accounts.
#[derive(Debug)]
pub struct VendorSpec {
    pub fields: &'static [FieldSpec],
    /// `None`: `[target.fields]` may name only `fields`. `Some(check)`: the vendor's field
    /// names are free-form (any attribute path of a generic protocol): a name not in `fields`
    /// is accepted when `check` accepts it (giving how its values compare), optional and
    /// without a default.
    pub free_fields: Option<FieldCheck>,
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
    /// Requests per second when the config sets none (the vendor's documented rate limit).
    pub default_requests_per_second: Option<f64>,
}

impl VendorSpec {
    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }
}

pub(crate) const fn field(
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

/// Why a target's connector could not be built (its HTTP client; nothing is sent).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConnectError {
    pub target: String,
    /// Names the target.
    pub message: String,
}

/// Reads one of a target's secrets (inline, `_file` or `_credential`) now, when its connector
/// is built: the error names the target and the config key, never the value.
pub(crate) fn read_secret(
    target: &TargetConfig,
    secret: &crate::secret::SecretRef,
) -> Result<crate::secret::Secret, http::HttpError> {
    let setup = |message: String| http::HttpError::Setup {
        target: target.name.clone(),
        message,
    };
    let s = secret.resolve().map_err(|e| setup(e.to_string()))?;
    if s.expose().trim().is_empty() {
        return Err(setup(format!("{}: empty", secret.key)));
    }
    Ok(s)
}

/// Builds the connector of `target`, reading its secrets (the only place they are read).
/// Nothing is sent: connectors authenticate on first use.
pub fn connect(target: &TargetConfig) -> Result<Arc<dyn Connector>, ConnectError> {
    let err = |e: http::HttpError| ConnectError {
        target: target.name.clone(),
        message: e.to_string(),
    };
    Ok(match &target.vendor {
        VendorSettings::Covata(s) => {
            Arc::new(covata::CovataConnector::new(target, s).map_err(err)?)
        }
        VendorSettings::Primavera(s) => {
            Arc::new(primavera::PrimaveraConnector::new(target, s).map_err(err)?)
        }
        VendorSettings::Valuekeep(s) => {
            Arc::new(valuekeep::ValuekeepConnector::new(target, s).map_err(err)?)
        }
        VendorSettings::Scim(s) => Arc::new(scim::ScimConnector::new(target, s).map_err(err)?),
    })
}

/// Builds the connectors of `targets` ([`connect`] each), keyed by target name; the first
/// that cannot be built is the error.
pub fn connect_all<'a, C>(
    targets: impl IntoIterator<Item = &'a TargetConfig>,
) -> Result<C, ConnectError>
where
    C: FromIterator<(String, Arc<dyn Connector>)>,
{
    targets
        .into_iter()
        .map(|t| Ok((t.name.clone(), connect(t)?)))
        .collect()
}

/// A target's name and its connector.
pub type NamedConnector = (String, Arc<dyn Connector>);

/// Builds the connector of each of `targets` ([`connect`]): those that could be built, keyed
/// by target name, and the errors of the others (the daemon runs the first and reports the
/// second; the command line stops at the first error with [`connect_all`]).
pub fn connect_each<'a>(
    targets: impl IntoIterator<Item = &'a TargetConfig>,
) -> (Vec<NamedConnector>, Vec<ConnectError>) {
    let mut built = Vec::new();
    let mut failed = Vec::new();
    for t in targets {
        match connect(t) {
            Ok(c) => built.push((t.name.clone(), c)),
            Err(e) => failed.push(e),
        }
    }
    (built, failed)
}
