//! The SCIM target's settings: how it authenticates (a static bearer token, or OAuth2 client
//! credentials), how dirsync's roles are written (`roles_as`), `create_groups`, their
//! validation, the attribute paths `[target.fields]` may name ([`field_kind`]) and the
//! [`VendorSpec`].

use crate::connector::settings::{
    ProblemSink, RawVendorKeys, check_credentials, http_url, refuse_clear_text,
};
use crate::connector::{Credential, TargetKind, VendorSpec, field};
use crate::mapping::FieldKind;
use crate::secret::SecretRef;

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

/// The SCIM target's own keys that are set (reported when the target is of another kind).
pub(crate) fn keys_set(k: &RawVendorKeys) -> Vec<&'static str> {
    [
        ("token", k.token.is_some() || k.token_given_otherwise),
        ("roles_as", k.roles_as.is_some()),
        ("create_groups", k.create_groups.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect()
}

/// Checks a SCIM target's keys (at `at`, e.g. `target[0]`).
pub(crate) fn validate(
    raw: RawVendorKeys,
    at: &str,
    pr: &mut dyn ProblemSink,
) -> Option<ScimSettings> {
    let roles_as = match raw.roles_as.as_deref() {
        None | Some("groups") => Some(RolesAs::Groups),
        Some("roles") => Some(RolesAs::Roles),
        Some("entitlements") => Some(RolesAs::Entitlements),
        Some(other) => {
            pr.push(
                format!("{at}.roles_as"),
                format!("unknown value {other:?} (groups, roles, entitlements)"),
            );
            None
        }
    };
    let create_groups = raw.create_groups.unwrap_or(false);
    if create_groups && roles_as.is_some_and(|r| r != RolesAs::Groups) {
        pr.push(
            format!("{at}.create_groups"),
            "only used with roles_as = \"groups\"".to_string(),
        );
    }
    let token = raw.token.clone();
    let token_given = token.is_some() || raw.token_given_otherwise;
    let token_url_raw = raw.token_url.clone();
    let allow_insecure_http = raw.allow_insecure_http;
    let oauth_given = raw.token_url.is_some()
        || raw.client_id.is_some()
        || raw.client_secret.is_some()
        || raw.client_secret_given_otherwise
        || raw.scope.is_some();
    let client_secret_given_otherwise = raw.client_secret_given_otherwise;
    let c = check_credentials(TargetKind::Scim, &SPEC, raw, at, pr);
    let auth = match (token_given, oauth_given) {
        (true, true) => {
            pr.push(
                format!("{at}.token"),
                "set either token (token_file, token_credential) or the OAuth2 client \
                 credentials (token_url, client_id, client_secret), not both"
                    .to_string(),
            );
            None
        }
        (false, false) => {
            pr.push(
                format!("{at}.token"),
                "required for kind scim (set token, token_file or token_credential; or \
                 token_url, client_id and client_secret for OAuth2 client credentials)"
                    .to_string(),
            );
            None
        }
        // Set in a wrong way: already reported.
        (true, false) => token.map(ScimAuth::Static),
        (false, true) => {
            let key = format!("{at}.token_url");
            let token_url = match token_url_raw.as_deref() {
                Some(u) => http_url(u, &key, pr)
                    .filter(|u| !refuse_clear_text(u, &key, allow_insecure_http, at, pr)),
                None => {
                    pr.push(key, "required with client_id and client_secret".to_string());
                    None
                }
            };
            if c.client_id.is_none() {
                pr.push(
                    format!("{at}.client_id"),
                    "required with token_url".to_string(),
                );
            }
            if c.client_secret.is_none() && !client_secret_given_otherwise {
                pr.push(
                    format!("{at}.client_secret"),
                    "required with token_url (set client_secret, client_secret_file or \
                     client_secret_credential)"
                        .to_string(),
                );
            }
            match (token_url, c.client_id, c.client_secret) {
                (Some(token_url), Some(client_id), Some(client_secret)) => {
                    Some(ScimAuth::ClientCredentials {
                        token_url,
                        client_id,
                        client_secret,
                        scope: c.scope,
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
    required_credentials: &[],
    optional_credentials: &[
        Credential::ClientId,
        Credential::ClientSecret,
        Credential::TokenUrl,
        Credential::Scope,
    ],
    credential_defaults: &[],
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

    #[test]
    fn auth_is_a_token_or_client_credentials() {
        let mut pr = Sink::default();
        let s = validate(
            RawVendorKeys {
                token: Some(SecretRef::inline("target[0].token", "t")),
                ..Default::default()
            },
            "target[0]",
            &mut pr,
        )
        .unwrap();
        assert!(pr.0.is_empty(), "{:?}", pr.0);
        assert!(matches!(s.auth, ScimAuth::Static(_)));
        assert_eq!(s.roles_as, RolesAs::Groups);

        let mut pr = Sink::default();
        assert!(validate(RawVendorKeys::default(), "target[0]", &mut pr).is_none());
        assert_eq!(pr.0[0].0, "target[0].token");

        let mut pr = Sink::default();
        let both = RawVendorKeys {
            token: Some(SecretRef::inline("target[0].token", "t")),
            client_id: Some("c".into()),
            ..Default::default()
        };
        assert!(validate(both, "target[0]", &mut pr).is_none());
        assert!(
            pr.0.iter().any(|(_, m)| m.contains("not both")),
            "{:?}",
            pr.0
        );

        let mut pr = Sink::default();
        let oauth = RawVendorKeys {
            client_id: Some("c".into()),
            client_secret: Some(SecretRef::inline("target[0].client_secret", "s")),
            token_url: Some("https://idp.example/token".into()),
            roles_as: Some("entitlements".into()),
            ..Default::default()
        };
        let s = validate(oauth, "target[0]", &mut pr).unwrap();
        assert!(pr.0.is_empty(), "{:?}", pr.0);
        assert!(matches!(s.auth, ScimAuth::ClientCredentials { .. }));
        assert_eq!(s.roles_as, RolesAs::Entitlements);

        let mut pr = Sink::default();
        let half = RawVendorKeys {
            client_id: Some("c".into()),
            roles_as: Some("teams".into()),
            ..Default::default()
        };
        assert!(validate(half, "target[0]", &mut pr).is_none());
        let keys: Vec<&str> = pr.0.iter().map(|(k, _)| k.as_str()).collect();
        assert!(keys.contains(&"target[0].token_url"), "{keys:?}");
        assert!(keys.contains(&"target[0].client_secret"), "{keys:?}");
        assert!(keys.contains(&"target[0].roles_as"), "{keys:?}");
    }
}
