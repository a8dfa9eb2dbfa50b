//! The SCIM target's settings: how it authenticates (a static bearer token, or OAuth2 client
//! credentials), how dirsync's roles are written (`roles_as`), `create_groups`, their
//! validation, the attribute paths `[target.fields]` may name ([`field_kind`]) and the
//! [`VendorSpec`].

use std::path::PathBuf;

use serde::Deserialize;

use crate::connector::settings::{ProblemSink, VendorContext, secret_ref};
use crate::connector::{VendorSpec, field};
use crate::mapping::FieldKind;
use crate::secret::{Secret, SecretRef};

use super::paths::{AttrPath, parse_path};

/// How dirsync's roles are written on a SCIM server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolesAs {
    /// SCIM Groups, by `displayName`: membership deltas on `/Groups/{id}`.
    Groups,
    /// The User's multi-valued `roles` attribute, replaced as a set.
    Roles,
    /// The User's multi-valued `entitlements` attribute, replaced as a set.
    Entitlements,
}

impl RolesAs {
    pub fn as_str(self) -> &'static str {
        match self {
            RolesAs::Groups => "groups",
            RolesAs::Roles => "roles",
            RolesAs::Entitlements => "entitlements",
        }
    }
}

/// How requests authenticate.
#[derive(Debug, Clone)]
pub enum ScimAuth {
    /// `Authorization: Bearer <token>` (`token`, `token_file` or `token_credential`).
    Static(SecretRef),
    /// OAuth2 client credentials from `token_url`.
    ClientCredentials {
        token_url: url::Url,
        client_id: String,
        client_secret: SecretRef,
        scope: Option<String>,
    },
}

/// A SCIM target's own settings.
#[derive(Debug, Clone)]
pub struct ScimSettings {
    pub auth: ScimAuth,
    /// Default [`RolesAs::Groups`].
    pub roles_as: RolesAs,
    /// With `roles_as = "groups"`: create a group that does not exist (default false: an
    /// error at `check` and for the operations that need it).
    pub create_groups: bool,
}

/// A SCIM target's own keys, as written.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ScimKeys {
    token: Option<Secret>,
    token_file: Option<PathBuf>,
    token_credential: Option<String>,
    token_url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<Secret>,
    client_secret_file: Option<PathBuf>,
    client_secret_credential: Option<String>,
    scope: Option<String>,
    roles_as: Option<String>,
    create_groups: Option<bool>,
}

/// Checks a SCIM target's keys: a bearer token, or OAuth2 client credentials (not both).
pub(crate) fn validate(
    raw: ScimKeys,
    cx: &VendorContext<'_>,
    pr: &mut dyn ProblemSink,
) -> Option<ScimSettings> {
    let roles_as = match raw.roles_as.as_deref() {
        None | Some("groups") => Some(RolesAs::Groups),
        Some("roles") => Some(RolesAs::Roles),
        Some("entitlements") => Some(RolesAs::Entitlements),
        Some(other) => {
            pr.push(
                cx.key("roles_as"),
                format!("unknown value {other:?} (groups, roles, entitlements)"),
            );
            None
        }
    };
    let create_groups = raw.create_groups.unwrap_or(false);
    if create_groups && roles_as.is_some_and(|r| r != RolesAs::Groups) {
        pr.push(
            cx.key("create_groups"),
            "only used with roles_as = \"groups\"".to_string(),
        );
    }
    let token_given =
        raw.token.is_some() || raw.token_file.is_some() || raw.token_credential.is_some();
    let secret_given = raw.client_secret.is_some()
        || raw.client_secret_file.is_some()
        || raw.client_secret_credential.is_some();
    let oauth_given =
        raw.token_url.is_some() || raw.client_id.is_some() || secret_given || raw.scope.is_some();
    let auth = match (token_given, oauth_given) {
        (true, true) => {
            pr.push(
                cx.key("token"),
                "set either token (token_file, token_credential) or the OAuth2 client \
                 credentials (token_url, client_id, client_secret), not both"
                    .to_string(),
            );
            None
        }
        (false, false) => {
            pr.push(
                cx.key("token"),
                "required for kind scim (set token, token_file or token_credential; or \
                 token_url, client_id and client_secret for OAuth2 client credentials)"
                    .to_string(),
            );
            None
        }
        (true, false) => secret_ref(
            raw.token,
            raw.token_file.as_ref(),
            raw.token_credential.as_ref(),
            cx.base,
            &cx.key("token"),
            pr,
        )
        .map(ScimAuth::Static),
        (false, true) => {
            let token_url = match raw.token_url.as_deref() {
                Some(u) => cx.credential_url("token_url", Some(u), u, pr),
                None => {
                    pr.push(
                        cx.key("token_url"),
                        "required with client_id and client_secret".to_string(),
                    );
                    None
                }
            };
            if raw.client_id.is_none() {
                pr.push(cx.key("client_id"), "required with token_url".to_string());
            }
            let client_secret = cx.required_secret(
                "client_secret",
                raw.client_secret,
                raw.client_secret_file,
                raw.client_secret_credential,
                pr,
            );
            match (token_url, raw.client_id, client_secret) {
                (Some(token_url), Some(client_id), Some(client_secret)) => {
                    Some(ScimAuth::ClientCredentials {
                        token_url,
                        client_id,
                        client_secret,
                        scope: raw.scope,
                    })
                }
                _ => None,
            }
        }
    };
    Some(ScimSettings {
        auth: auth?,
        roles_as: roles_as?,
        create_groups,
    })
}

/// Attributes `[target.fields]` may not name: dirsync writes them itself (`active`, the
/// roles), the server owns them (`id`, `meta`, `groups`), or dirsync never provisions them.
const RESERVED: &[&str] = &[
    "id",
    "meta",
    "schemas",
    "active",
    "groups",
    "roles",
    "entitlements",
    "password",
    "members",
];

/// Whether `[target.fields]` may name the SCIM attribute path `name`, and how its values
/// compare (the [`VendorSpec::free_fields`] check): `userName`, `name.givenName`,
/// `emails.work`, `urn:...:enterprise:2.0:User:employeeNumber`.
pub fn field_kind(name: &str) -> Result<FieldKind, String> {
    let path = parse_path(name)?;
    let top = match &path {
        AttrPath::Simple { attr, .. }
        | AttrPath::Sub { attr, .. }
        | AttrPath::Typed { attr, .. } => attr,
    };
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(top)) {
        return Err(format!(
            "{top:?} is not a field dirsync maps (dirsync sets active and the roles itself; \
             id, meta and groups are the server's)"
        ));
    }
    Ok(match &path {
        AttrPath::Typed { attr, .. } if attr.eq_ignore_ascii_case("emails") => FieldKind::Email,
        _ => FieldKind::Text,
    })
}

/// SCIM 2.0 Users (RFC 7643 section 4.1), with these defaults; any other attribute path is
/// accepted when [`field_kind`] accepts it.
pub static SPEC: VendorSpec = VendorSpec {
    fields: &[
        field("userName", FieldKind::Text, true, Some("{email}")),
        field("externalId", FieldKind::Text, false, Some("{key}")),
        field(
            "name.givenName",
            FieldKind::Text,
            false,
            Some("{given_name}"),
        ),
        field(
            "name.familyName",
            FieldKind::Text,
            false,
            Some("{family_name}"),
        ),
        field(
            "displayName",
            FieldKind::Text,
            false,
            Some("{given_name} {family_name}"),
        ),
        field("emails.work", FieldKind::Email, false, Some("{email}")),
    ],
    free_fields: Some(field_kind),
    login_field: "userName",
    known_roles: None,
    default_roles: &[],
    roles_required: false,
    supports_groups: false,
    default_requests_per_second: None,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Sink(Vec<(String, String)>);

    impl ProblemSink for Sink {
        fn push(&mut self, key: String, message: String) {
            self.0.push((key, message));
        }
    }

    #[test]
    fn field_paths() {
        for (name, ok) in [
            ("userName", Some(FieldKind::Text)),
            ("name.givenName", Some(FieldKind::Text)),
            ("emails.work", Some(FieldKind::Email)),
            ("phoneNumbers.mobile", Some(FieldKind::Text)),
            (
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
                Some(FieldKind::Text),
            ),
            (
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
                Some(FieldKind::Text),
            ),
            ("active", None),
            ("roles", None),
            ("id", None),
            ("a.b.c", None),
            ("bad name", None),
            ("", None),
            ("urn:x:", None),
        ] {
            assert_eq!(field_kind(name).ok(), ok, "{name}");
        }
    }

    fn run(keys: serde_json::Value) -> (Option<ScimSettings>, Vec<(String, String)>) {
        let mut pr = Sink::default();
        let cx = VendorContext {
            at: "target[0]",
            kind: crate::connector::TargetKind::Scim,
            base: std::path::Path::new("/etc/dirsync"),
            allow_insecure_http: false,
        };
        let keys = match keys {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        let s = cx
            .keys::<ScimKeys>(keys, &mut pr)
            .and_then(|k| validate(k, &cx, &mut pr));
        (s, pr.0)
    }

    #[test]
    fn auth_is_a_token_or_client_credentials() {
        let (s, pr) = run(serde_json::json!({"token_file": "wiki-token"}));
        assert!(pr.is_empty(), "{pr:?}");
        let s = s.unwrap();
        assert!(matches!(s.auth, ScimAuth::Static(_)));
        assert_eq!(s.roles_as, RolesAs::Groups);

        let (s, pr) = run(serde_json::json!({}));
        assert!(s.is_none());
        assert_eq!(pr[0].0, "target[0].token");

        let (s, pr) = run(serde_json::json!({"token": "t", "client_id": "c"}));
        assert!(s.is_none());
        assert!(pr.iter().any(|(_, m)| m.contains("not both")), "{pr:?}");

        let (s, pr) = run(serde_json::json!({
            "client_id": "c", "client_secret": "s",
            "token_url": "https://idp.example/token", "roles_as": "entitlements",
        }));
        assert!(pr.is_empty(), "{pr:?}");
        let s = s.unwrap();
        assert!(matches!(s.auth, ScimAuth::ClientCredentials { .. }));
        assert_eq!(s.roles_as, RolesAs::Entitlements);

        let (s, pr) =
            run(serde_json::json!({"client_id": "c", "roles_as": "teams", "tenant_key": "x"}));
        assert!(s.is_none());
        let keys: Vec<&str> = pr.iter().map(|(k, _)| k.as_str()).collect();
        assert!(keys.contains(&"target[0].tenant_key"), "{keys:?}");
    }
}
