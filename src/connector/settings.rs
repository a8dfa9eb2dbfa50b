//! A target's validated settings: the part every vendor shares ([`TargetConfig`],
//! [`HttpSettings`]) and the typed vendor part ([`VendorSettings`]), with the checks they
//! share (target URLs, durations, credentials against the vendor's [`VendorSpec`]).
//!
//! The TOML is flat (`config::raw`); `config` hands a target's vendor keys over as
//! [`RawVendorKeys`] and each vendor folder's `settings.rs` turns them into its own type.

use std::time::Duration;

use super::covata::settings::CovataSettings;
use super::primavera::settings::PrimaveraSettings;
use super::scim::settings::ScimSettings;
use super::valuekeep::settings::ValuekeepSettings;
use super::{Credential, TargetKind, VendorSpec, covata, primavera, scim, valuekeep};
use crate::mapping::TargetMapping;
use crate::plan::OnMissing;
use crate::secret::SecretRef;

/// HTTP behaviour of a target's client.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// TCP + TLS connect timeout (default 10s).
    pub connect_timeout: Duration,
    /// Whole-request timeout (default 30s).
    pub request_timeout: Duration,
    /// Requests in flight at once (default 8).
    pub concurrency: usize,
    /// Requests per second, all of this target's calls together (default: no limit).
    pub requests_per_second: Option<f64>,
    /// Retries of one request after 429 / 503 / a connection error (default 5).
    pub max_retries: u32,
    /// Cap of the exponential backoff between retries, and of an honoured `Retry-After`
    /// (default 60s).
    pub max_backoff: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            concurrency: 8,
            requests_per_second: None,
            max_retries: 5,
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// One `[[target]]`.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub name: String,
    /// Always `vendor.kind()`.
    pub kind: TargetKind,
    /// False: skipped by every command (kept in the file).
    pub enabled: bool,
    pub base_url: url::Url,
    pub mapping: TargetMapping,
    pub on_missing: OnMissing,
    pub delete_after: Duration,
    pub http: HttpSettings,
    /// Accounts per bulk call (enable / disable / delete, batch jobs; default 500).
    pub batch_size: usize,
    /// `sync --refresh`: re-create owned accounts deleted on the target by hand (default
    /// false: they are reported and left alone).
    pub recreate_deleted: bool,
    /// The settings only this target's vendor has (credentials included).
    pub vendor: VendorSettings,
}

/// The settings of one vendor, typed: required credentials are set. Secrets are references
/// (inline value, `_file` path or `_credential` name), read only when a connector is built
/// ([`crate::connector::connect`]): commands that contact no target read none.
#[derive(Debug, Clone)]
pub enum VendorSettings {
    Covata(CovataSettings),
    Primavera(PrimaveraSettings),
    Valuekeep(ValuekeepSettings),
    Scim(ScimSettings),
}

impl VendorSettings {
    pub fn kind(&self) -> TargetKind {
        match self {
            VendorSettings::Covata(_) => TargetKind::Covata,
            VendorSettings::Primavera(_) => TargetKind::Primavera,
            VendorSettings::Valuekeep(_) => TargetKind::Valuekeep,
            VendorSettings::Scim(_) => TargetKind::Scim,
        }
    }

    /// Validates the vendor keys of a target of `kind` (at `at`, e.g. `target[0]`): keys of
    /// other vendors are reported, then `kind`'s own validation runs. `None` when a problem
    /// was pushed.
    pub fn validate(
        kind: TargetKind,
        keys: RawVendorKeys,
        at: &str,
        pr: &mut dyn ProblemSink,
    ) -> Option<VendorSettings> {
        // Settings that belong to one vendor only.
        for owner in TargetKind::ALL {
            if owner == kind {
                continue;
            }
            let set = match owner {
                TargetKind::Covata => covata::settings::keys_set(&keys),
                TargetKind::Primavera => primavera::settings::keys_set(&keys),
                TargetKind::Valuekeep => valuekeep::settings::keys_set(&keys),
                TargetKind::Scim => scim::settings::keys_set(&keys),
            };
            for key in set {
                pr.push(
                    format!("{at}.{key}"),
                    format!(
                        "not a setting of kind {} (only of {})",
                        kind.as_str(),
                        owner.as_str()
                    ),
                );
            }
        }
        Some(match kind {
            TargetKind::Covata => VendorSettings::Covata(covata::settings::validate(keys, at, pr)?),
            TargetKind::Primavera => {
                VendorSettings::Primavera(primavera::settings::validate(keys, at, pr)?)
            }
            TargetKind::Valuekeep => {
                VendorSettings::Valuekeep(valuekeep::settings::validate(keys, at, pr)?)
            }
            TargetKind::Scim => VendorSettings::Scim(scim::settings::validate(keys, at, pr)?),
        })
    }
}

/// Where validation reports a problem: the key path (`target[1].base_url`) and what is wrong.
pub trait ProblemSink {
    fn push(&mut self, key: String, message: String);
}

/// A target's vendor keys as written (flat in the TOML: `config::raw::RawTarget`), with the
/// secrets already turned into references (their three forms checked by `config`).
#[derive(Debug, Default)]
pub struct RawVendorKeys {
    pub username: Option<String>,
    pub password: Option<SecretRef>,
    /// `password_file` or `password_credential` was given (if given wrongly, already reported).
    pub password_given_otherwise: bool,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretRef>,
    /// `client_secret_file` or `client_secret_credential` was given.
    pub client_secret_given_otherwise: bool,
    pub token_url: Option<String>,
    pub scope: Option<String>,
    pub tenant_key: Option<String>,
    pub org_key: Option<String>,
    pub allow_insecure_http: bool,
    pub expire_sessions_on_disable: Option<bool>,
    pub bulk_import_min: Option<usize>,
    pub import_batch_size: Option<usize>,
    pub send_invitation: Option<bool>,
    pub set_status: Option<bool>,
    pub job_timeout: Option<String>,
    pub job_poll_interval: Option<String>,
    /// A bearer token (SCIM).
    pub token: Option<SecretRef>,
    /// `token_file` or `token_credential` was given.
    pub token_given_otherwise: bool,
    pub roles_as: Option<String>,
    pub create_groups: Option<bool>,
}

/// The credentials of a target once checked against its vendor's spec: the ones the vendor
/// needs are set unless a problem was pushed; the vendor takes those it has.
#[derive(Debug, Default)]
pub(crate) struct CheckedCredentials {
    pub username: Option<String>,
    pub password: Option<SecretRef>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretRef>,
    pub token_url: Option<url::Url>,
    pub scope: Option<String>,
    pub tenant_key: Option<String>,
    pub org_key: Option<String>,
}

/// Credentials: the ones `kind` needs must be set; others must not be. Then the defaults of
/// the optional ones (`token_url` checked as a target URL).
pub(crate) fn check_credentials(
    kind: TargetKind,
    spec: &VendorSpec,
    raw: RawVendorKeys,
    at: &str,
    pr: &mut dyn ProblemSink,
) -> CheckedCredentials {
    let mut creds = CheckedCredentials {
        username: raw.username,
        password: raw.password,
        client_id: raw.client_id,
        client_secret: raw.client_secret,
        token_url: None,
        scope: raw.scope,
        tenant_key: raw.tenant_key,
        org_key: raw.org_key,
    };
    let token_url_raw = raw.token_url;
    let is_set = |c: Credential, creds: &CheckedCredentials| match c {
        Credential::Username => creds.username.is_some(),
        Credential::Password => creds.password.is_some(),
        Credential::ClientId => creds.client_id.is_some(),
        Credential::ClientSecret => creds.client_secret.is_some(),
        Credential::TokenUrl => token_url_raw.is_some(),
        Credential::Scope => creds.scope.is_some(),
        Credential::TenantKey => creds.tenant_key.is_some(),
        Credential::OrgKey => creds.org_key.is_some(),
    };
    let secret_key_was_given = |c: Credential| match c {
        // A secret set in a wrong way was already reported.
        Credential::Password => raw.password_given_otherwise,
        Credential::ClientSecret => raw.client_secret_given_otherwise,
        _ => false,
    };
    for c in Credential::ALL {
        let needed = spec.required_credentials.contains(&c);
        let allowed = needed || spec.optional_credentials.contains(&c);
        let set = is_set(c, &creds);
        if needed && !set && !secret_key_was_given(c) {
            let hint = match c {
                Credential::Password | Credential::ClientSecret => {
                    format!(" (set {0}, {0}_file or {0}_credential)", c.key())
                }
                _ => String::new(),
            };
            pr.push(
                format!("{at}.{}", c.key()),
                format!("required for kind {}{hint}", kind.as_str()),
            );
        }
        if !allowed && (set || secret_key_was_given(c)) {
            pr.push(
                format!("{at}.{}", c.key()),
                format!("not a setting of kind {}", kind.as_str()),
            );
        }
    }
    for (c, default) in spec.credential_defaults {
        match c {
            Credential::TokenUrl => {
                let v = token_url_raw.as_deref().unwrap_or(default);
                let key = format!("{at}.token_url");
                creds.token_url = http_url(v, &key, pr)
                    .filter(|u| !refuse_clear_text(u, &key, raw.allow_insecure_http, at, pr));
            }
            Credential::Scope => {
                creds.scope.get_or_insert_with(|| (*default).to_string());
            }
            _ => {}
        }
    }
    creds
}

/// A duration setting (`15m`, `1h 30m`); the problem names the key.
pub fn duration(v: &str, key: &str, pr: &mut dyn ProblemSink) -> Option<Duration> {
    match humantime::parse_duration(v.trim()) {
        Ok(d) => Some(d),
        Err(e) => {
            pr.push(
                key.to_string(),
                format!("invalid duration {v:?}: {e} (examples: 15m, 1h 30m, 30d)"),
            );
            None
        }
    }
}

/// An absolute `http(s)://` URL with a host, no query, fragment or credentials.
pub fn http_url(v: &str, key: &str, pr: &mut dyn ProblemSink) -> Option<url::Url> {
    let mut push = |m: String| pr.push(key.to_string(), m);
    match url::Url::parse(v.trim()) {
        Ok(u) if u.scheme() != "http" && u.scheme() != "https" => {
            push(format!(
                "scheme {:?} not allowed (use https://)",
                u.scheme()
            ));
            None
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => {
            push("URL has no host".into());
            None
        }
        Ok(u) if u.query().is_some() || u.fragment().is_some() => {
            push("URL must not have a query or fragment".into());
            None
        }
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            push("URL must not carry credentials; use the username/password settings".into());
            None
        }
        Ok(u) => Some(u),
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            push(format!(
                "relative URL not allowed: {v:?} (write https://host/...)"
            ));
            None
        }
        Err(e) => {
            push(format!("invalid URL {v:?}: {e}"));
            None
        }
    }
}

/// True for `localhost`, 127.0.0.0/8 and `::1`: clear-text HTTP there never leaves the host.
pub fn is_loopback_host(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A target URL every request to which carries credentials: `http://` only to a loopback host
/// or with `allow_insecure_http = true`. True when refused (and reported).
pub fn refuse_clear_text(
    u: &url::Url,
    key: &str,
    allow: bool,
    at: &str,
    pr: &mut dyn ProblemSink,
) -> bool {
    if u.scheme() == "http" && !allow && !is_loopback_host(u) {
        pr.push(
            key.to_string(),
            format!(
                "http:// sends the credentials and every account in clear text: use https:// \
                 (or set {at}.allow_insecure_http = true on a network you trust)"
            ),
        );
        return true;
    }
    false
}
