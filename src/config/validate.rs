//! Raw → validated configuration. Every check pushes a problem with its key path and goes on,
//! so one `dirsync check` shows everything that is wrong.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{RawConfig, RawCsv, RawLdap, RawSafety, RawSchedule, RawState, RawTarget};
use super::{
    Config, ConfigProblem, Credentials, DaemonConfig, HttpListenConfig, HttpSettings,
    ScheduleConfig, SourceConfig, StateConfig, TargetConfig,
};
use crate::connector::{Credential, TargetKind};
use crate::mapping::{FieldMapping, RoleRule, TargetMapping, Template, UserFilter};
use crate::plan::{OnMissing, SafetySettings};
use crate::secret::{Secret, SecretRef, SecretSource};
use crate::source::csv::{CsvColumns, CsvSettings};
use crate::store::StoreLocation;

/// Covata `import_batch_size`: the default, and the most accounts one import file may hold.
pub const DEFAULT_IMPORT_BATCH: usize = 1000;
pub const MAX_IMPORT_BATCH: usize = 100_000;

/// The problems found so far, and what reading the secrets needed at load takes
/// (`$CREDENTIALS_DIRECTORY`, from the environment the configuration is loaded with).
struct Problems<'a>(&'a mut Vec<ConfigProblem>, Option<std::ffi::OsString>);

impl Problems<'_> {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem {
            key: key.into(),
            message: message.into(),
        });
    }
}

/// Resolves a path from the config against the config file's directory.
fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// A secret given inline, as `<key>_file` or as `<key>_credential` (at most one), left unread:
/// the command that needs it resolves it ([`SecretRef::resolve`]), so `plan` never reads a
/// target's password file. `None` when none of the three is set.
fn secret_ref(
    inline: Option<Secret>,
    file: Option<&PathBuf>,
    credential: Option<&String>,
    base: &Path,
    key: &str,
    pr: &mut Problems,
) -> Option<SecretRef> {
    let given = [inline.is_some(), file.is_some(), credential.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if given > 1 {
        pr.push(
            key,
            format!("set only one of {key}, {key}_file and {key}_credential"),
        );
        return None;
    }
    if let Some(s) = inline {
        if s.is_empty() {
            pr.push(key, "empty: remove it or set a secret");
            return None;
        }
        return Some(SecretRef {
            key: key.to_string(),
            source: SecretSource::Inline(s),
        });
    }
    if let Some(f) = file {
        if f.as_os_str().is_empty() {
            pr.push(format!("{key}_file"), "empty path");
            return None;
        }
        return Some(SecretRef {
            key: format!("{key}_file"),
            source: SecretSource::File(resolve(base, f)),
        });
    }
    let name = credential?;
    let k = format!("{key}_credential");
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        pr.push(
            k,
            format!(
                "{name:?} is not a credential name (the name given to LoadCredential=, \
                 without '/')"
            ),
        );
        return None;
    }
    Some(SecretRef {
        key: k,
        source: SecretSource::Credential(name.clone()),
    })
}

/// Like [`secret_ref`], read now: for the secrets every command using them needs at once
/// (the state's `database_url`, notification secrets).
fn secret(
    inline: Option<Secret>,
    file: Option<&PathBuf>,
    credential: Option<&String>,
    base: &Path,
    key: &str,
    pr: &mut Problems,
) -> Option<Secret> {
    let r = secret_ref(inline, file, credential, base, key, pr)?;
    match r.resolve_with(pr.1.as_deref()) {
        Ok(s) => Some(s),
        Err(e) => {
            pr.push(e.key, e.message);
            None
        }
    }
}

fn duration(v: &str, key: &str, pr: &mut Problems) -> Option<Duration> {
    match humantime::parse_duration(v.trim()) {
        Ok(d) => Some(d),
        Err(e) => {
            pr.push(
                key,
                format!("invalid duration {v:?}: {e} (examples: 15m, 1h 30m, 30d)"),
            );
            None
        }
    }
}

fn http_url(v: &str, key: &str, pr: &mut Problems) -> Option<url::Url> {
    match url::Url::parse(v.trim()) {
        Ok(u) if u.scheme() != "http" && u.scheme() != "https" => {
            pr.push(
                key,
                format!("scheme {:?} not allowed (use https://)", u.scheme()),
            );
            None
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => {
            pr.push(key, "URL has no host");
            None
        }
        Ok(u) if u.query().is_some() || u.fragment().is_some() => {
            pr.push(key, "URL must not have a query or fragment");
            None
        }
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            pr.push(
                key,
                "URL must not carry credentials; use the username/password settings",
            );
            None
        }
        Ok(u) => Some(u),
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            pr.push(
                key,
                format!("relative URL not allowed: {v:?} (write https://host/...)"),
            );
            None
        }
        Err(e) => {
            pr.push(key, format!("invalid URL {v:?}: {e}"));
            None
        }
    }
}

/// True for `localhost`, 127.0.0.0/8 and `::1`: clear-text HTTP there never leaves the host.
pub(crate) fn is_loopback_host(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A target URL every request to which carries credentials: `http://` only to a loopback host
/// or with `allow_insecure_http = true`.
fn refuse_clear_text(u: &url::Url, key: &str, allow: bool, at: &str, pr: &mut Problems) -> bool {
    if u.scheme() == "http" && !allow && !is_loopback_host(u) {
        pr.push(
            key,
            format!(
                "http:// sends the credentials and every account in clear text: use https:// \
                 (or set {at}.allow_insecure_http = true on a network you trust)"
            ),
        );
        return true;
    }
    false
}

pub fn validate(
    raw: RawConfig,
    path: &Path,
    base: &Path,
    credentials_dir: Option<std::ffi::OsString>,
    problems: &mut Vec<ConfigProblem>,
) -> Option<Config> {
    let mut pr = Problems(problems, credentials_dir);
    let state = state(raw.state, base, &mut pr);
    let source = match raw.source {
        None => {
            pr.push("source", "missing [source] section (kind = \"csv\")");
            None
        }
        Some(s) => match s.kind.as_deref() {
            Some("csv") => match s.csv {
                Some(csv) => csv_source(csv, base, &mut pr).map(|mut c| {
                    if let SourceConfig::Csv(csv) = &mut c {
                        csv.timeout = source_timeout(s.timeout.as_deref(), &mut pr);
                    }
                    c
                }),
                None => {
                    pr.push(
                        "source.csv",
                        "missing [source.csv] section for kind = \"csv\"",
                    );
                    None
                }
            },
            Some("ldap") => match s.ldap {
                Some(ldap) => ldap_source(ldap, base, &mut pr).map(|mut c| {
                    if let SourceConfig::Ldap(l) = &mut c {
                        l.timeout = source_timeout(s.timeout.as_deref(), &mut pr);
                    }
                    c
                }),
                None => {
                    pr.push(
                        "source.ldap",
                        "missing [source.ldap] section for kind = \"ldap\"",
                    );
                    None
                }
            },
            Some(other) => {
                pr.push(
                    "source.kind",
                    format!("unknown source kind {other:?} (known: csv, ldap)"),
                );
                None
            }
            None => {
                pr.push("source.kind", "missing (kind = \"csv\" or \"ldap\")");
                None
            }
        },
    };
    let safety = safety(raw.safety, &mut pr);
    let schedule = schedule(raw.schedule, &mut pr);
    let daemon = DaemonConfig {
        shutdown_timeout: match raw.daemon.shutdown_timeout.as_deref() {
            Some(v) => duration(v, "daemon.shutdown_timeout", &mut pr).unwrap_or_default(),
            None => Duration::from_secs(30),
        },
    };
    let listen = match raw.http.listen.as_deref() {
        None => None,
        Some(v) => match v.parse::<std::net::SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                pr.push(
                    "http.listen",
                    format!("{v:?} is not an address:port (e.g. \"127.0.0.1:9187\"; the address is required)"),
                );
                None
            }
        },
    };
    let http = HttpListenConfig {
        listen,
        unready_after_failures: raw.http.unready_after_failures.unwrap_or(3).max(1),
    };
    let extra = source
        .as_ref()
        .map(SourceConfig::extra_attributes)
        .unwrap_or_default();
    // Exact names, and their environment spelling (DIRSYNC_TARGET__<NAME>__...), which
    // folds case and '-' / '.' to '_': two targets with one spelling could not be told apart.
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut env_names: HashMap<String, (usize, String)> = HashMap::new();
    let mut targets = Vec::new();
    if raw.target.is_empty() {
        pr.push("target", "no [[target]] configured");
    }
    for (i, t) in raw.target.into_iter().enumerate() {
        let at = format!("target[{i}]");
        if let Some(n) = &t.name {
            let env = super::raw::env_name(n);
            if let Some(first) = names.get(n) {
                pr.push(
                    format!("{at}.name"),
                    format!("duplicate target name {n:?} (also target[{first}].name)"),
                );
            } else if let Some((first, other)) = env_names.get(&env) {
                pr.push(
                    format!("{at}.name"),
                    format!(
                        "{n:?} and target[{first}].name {other:?} are the same name in \
                         {}TARGET__{env}__* (names may not differ only in case, '-', '_' or \
                         '.')",
                        super::ENV_PREFIX
                    ),
                );
            }
            names.entry(n.clone()).or_insert(i);
            env_names.entry(env).or_insert((i, n.clone()));
        }
        if let Some(t) = target(t, &at, base, &extra, &mut pr) {
            targets.push(t);
        }
    }
    let notify = raw
        .notify
        .into_iter()
        .enumerate()
        .filter_map(|(i, n)| notify_entry(n, &format!("notify[{i}]"), base, &mut pr))
        .collect();
    Some(Config {
        path: path.to_path_buf(),
        state: state?,
        source: source?,
        safety,
        schedule: schedule?,
        daemon,
        http,
        targets,
        notify,
    })
}

/// One `[[notify]]` entry.
fn notify_entry(
    raw: super::raw::RawNotify,
    at: &str,
    base: &Path,
    pr: &mut Problems,
) -> Option<super::notify::NotifyConfig> {
    use super::notify::{
        Channel, EmailSettings, NotifyConfig, NotifyOn, StartTls, WebhookSettings,
    };
    let key = |k: &str| format!("{at}.{k}");
    let mut ok = true;
    let on = match raw.on {
        None => NotifyOn::DEFAULT.to_vec(),
        Some(v) if v.is_empty() => {
            pr.push(
                key("on"),
                "empty: list at least one of failed, partial, blocked, changes, always",
            );
            ok = false;
            Vec::new()
        }
        Some(v) => {
            let mut on = Vec::new();
            for (j, s) in v.iter().enumerate() {
                match NotifyOn::parse(s) {
                    Some(o) if !on.contains(&o) => on.push(o),
                    Some(_) => {}
                    None => {
                        pr.push(
                            format!("{at}.on[{j}]"),
                            format!(
                                "unknown value {s:?} (failed, partial, blocked, changes, always)"
                            ),
                        );
                        ok = false;
                    }
                }
            }
            on
        }
    };
    let timeout = match raw.timeout.as_deref() {
        None => super::notify::DEFAULT_TIMEOUT,
        Some(v) => match duration(v, &key("timeout"), pr) {
            Some(d) if d.is_zero() => {
                pr.push(key("timeout"), "must be more than 0s");
                ok = false;
                d
            }
            Some(d) => d,
            None => {
                ok = false;
                Duration::ZERO
            }
        },
    };
    // Keys of the other kind are mistakes worth reporting.
    let webhook_keys = [
        ("url", raw.url.is_some()),
        ("hmac_secret", raw.hmac_secret.is_some()),
        ("hmac_secret_file", raw.hmac_secret_file.is_some()),
        (
            "hmac_secret_credential",
            raw.hmac_secret_credential.is_some(),
        ),
    ];
    let email_keys = [
        ("host", raw.host.is_some()),
        ("port", raw.port.is_some()),
        ("starttls", raw.starttls.is_some()),
        ("username", raw.username.is_some()),
        ("password", raw.password.is_some()),
        ("password_file", raw.password_file.is_some()),
        ("password_credential", raw.password_credential.is_some()),
        ("from", raw.from.is_some()),
        ("to", raw.to.is_some()),
        ("subject_prefix", raw.subject_prefix.is_some()),
    ];
    let mut foreign = |keys: &[(&str, bool)], kind: &str, pr: &mut Problems| {
        for (k, set) in keys {
            if *set {
                pr.push(key(k), format!("not a setting of kind = {kind:?}"));
                ok = false;
            }
        }
    };
    let channel = match raw.kind.as_deref().map(str::trim) {
        Some("webhook") => {
            foreign(&email_keys, "webhook", pr);
            let url = match raw.url.as_deref() {
                None => {
                    pr.push(key("url"), "missing: the URL to POST to (https://...)");
                    None
                }
                Some(v) => webhook_url(v, &key("url"), pr),
            };
            let hmac_secret = secret(
                raw.hmac_secret,
                raw.hmac_secret_file.as_ref(),
                raw.hmac_secret_credential.as_ref(),
                base,
                &key("hmac_secret"),
                pr,
            );
            if hmac_secret.as_ref().is_some_and(Secret::is_empty) {
                pr.push(key("hmac_secret"), "empty: remove it or set a secret");
                ok = false;
            }
            url.map(|url| Channel::Webhook(WebhookSettings { url, hmac_secret }))
        }
        Some("email") => {
            foreign(&webhook_keys, "email", pr);
            let starttls = match raw.starttls.as_deref() {
                None => Some(StartTls::Required),
                Some(v) => StartTls::parse(v).or_else(|| {
                    pr.push(
                        key("starttls"),
                        format!("unknown value {v:?} (required, opportunistic, none)"),
                    );
                    None
                }),
            };
            let host = match raw.host.as_deref().map(str::trim) {
                None | Some("") => {
                    pr.push(key("host"), "missing: the SMTP server");
                    None
                }
                Some(h) => Some(h.to_string()),
            };
            if raw.port == Some(0) {
                pr.push(key("port"), "must be 1-65535");
                ok = false;
            }
            let password = secret(
                raw.password,
                raw.password_file.as_ref(),
                raw.password_credential.as_ref(),
                base,
                &key("password"),
                pr,
            );
            if raw.username.is_some() != password.is_some() {
                pr.push(
                    key(if raw.username.is_some() {
                        "password"
                    } else {
                        "username"
                    }),
                    "set both username and password (or neither)",
                );
                ok = false;
            }
            if password.is_some() && starttls == Some(StartTls::None) {
                pr.push(
                    key("starttls"),
                    "\"none\" would send the password in plain text; use \"required\"",
                );
                ok = false;
            }
            let mailbox = |v: &str, k: String, pr: &mut Problems| {
                v.trim()
                    .parse::<lettre::message::Mailbox>()
                    .map_err(|e| pr.push(k, format!("invalid address {v:?}: {e}")))
                    .ok()
            };
            let from = match raw.from.as_deref() {
                None => {
                    pr.push(key("from"), "missing: the sender address");
                    None
                }
                Some(v) => mailbox(v, key("from"), pr),
            };
            let to = match raw.to.map(super::raw::OneOrMany::into_vec) {
                None => {
                    pr.push(key("to"), "missing: the recipient addresses (a list)");
                    None
                }
                Some(v) if v.is_empty() => {
                    pr.push(key("to"), "empty: list at least one recipient");
                    None
                }
                Some(v) => {
                    let all: Vec<_> = v
                        .iter()
                        .enumerate()
                        .map(|(j, a)| mailbox(a, format!("{at}.to[{j}]"), pr))
                        .collect();
                    all.into_iter().collect::<Option<Vec<_>>>()
                }
            };
            match (host, starttls, from, to) {
                (Some(host), Some(starttls), Some(from), Some(to)) => {
                    Some(Channel::Email(EmailSettings {
                        host,
                        port: raw
                            .port
                            .unwrap_or(if starttls == StartTls::None { 25 } else { 587 }),
                        starttls,
                        username: raw.username,
                        password,
                        from,
                        to,
                        subject_prefix: raw.subject_prefix.unwrap_or_else(|| "[dirsync]".into()),
                    }))
                }
                _ => None,
            }
        }
        Some(other) => {
            pr.push(
                key("kind"),
                format!("unknown notification kind {other:?} (webhook, email)"),
            );
            None
        }
        None => {
            pr.push(key("kind"), "missing (kind = \"webhook\" or \"email\")");
            None
        }
    };
    let channel = channel?;
    ok.then_some(NotifyConfig {
        on,
        timeout,
        channel,
    })
}

/// A webhook URL: http(s), a host, no credentials (a query is allowed: some services put their
/// token there; logs never show it).
fn webhook_url(v: &str, key: &str, pr: &mut Problems) -> Option<url::Url> {
    match url::Url::parse(v.trim()) {
        Ok(u) if u.scheme() != "http" && u.scheme() != "https" => {
            pr.push(
                key,
                format!("scheme {:?} not allowed (use https://)", u.scheme()),
            );
            None
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => {
            pr.push(key, "URL has no host");
            None
        }
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            pr.push(
                key,
                "URL must not carry credentials; use hmac_secret to authenticate",
            );
            None
        }
        Ok(u) => Some(u),
        Err(e) => {
            // Never echo the URL: its query may hold a token.
            pr.push(key, format!("invalid URL: {e}"));
            None
        }
    }
}

fn state(raw: RawState, base: &Path, pr: &mut Problems) -> Option<StateConfig> {
    let url = secret(
        raw.database_url,
        raw.database_url_file.as_ref(),
        raw.database_url_credential.as_ref(),
        base,
        "state.database_url",
        pr,
    );
    let max_connections = raw.max_connections.unwrap_or(5);
    if max_connections == 0 {
        pr.push("state.max_connections", "must be at least 1");
    }
    let timeout = match raw.timeout.as_deref() {
        None => Duration::from_secs(120),
        Some(v) => match duration(v, "state.timeout", pr) {
            Some(d) if d.is_zero() => {
                pr.push("state.timeout", "must be more than 0s");
                Duration::from_secs(120)
            }
            Some(d) => d,
            None => Duration::from_secs(120),
        },
    };
    let location = match url {
        Some(url) => {
            if raw.path.is_some() {
                pr.push(
                    "state.path",
                    "set either database_url (Postgres) or path (SQLite), not both",
                );
            }
            let u = url.expose();
            if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) {
                // Never echo the URL: it may hold a password.
                pr.push(
                    "state.database_url",
                    "must be a postgres:// or postgresql:// URL (leave it unset for the embedded SQLite store)",
                );
                return None;
            }
            StoreLocation::Postgres {
                url,
                max_connections,
                timeout,
            }
        }
        None => {
            let path = match raw.path {
                Some(p) => resolve(base, &p),
                None => default_sqlite_path(),
            };
            StoreLocation::Sqlite { path }
        }
    };
    Some(StateConfig {
        location,
        auto_migrate: raw.auto_migrate.unwrap_or(true),
    })
}

/// The installed layout's state file, the same for the service and an admin shell:
/// `$STATE_DIRECTORY/dirsync.db` under systemd (`StateDirectory=dirsync`, i.e.
/// `/var/lib/dirsync`), else [`super::DEFAULT_STATE_PATH`].
fn default_sqlite_path() -> PathBuf {
    match std::env::var_os("STATE_DIRECTORY") {
        Some(dir) if !dir.is_empty() => {
            // systemd may pass several directories separated by ':'; the first is ours.
            let first = dir
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or("")
                .to_string();
            PathBuf::from(first).join("dirsync.db")
        }
        _ => PathBuf::from(super::DEFAULT_STATE_PATH),
    }
}

fn ldap_source(raw: RawLdap, base: &Path, pr: &mut Problems) -> Option<SourceConfig> {
    use crate::source::ldap::{
        DisabledRule, GroupSearch, GroupSource, KeyFormat, LdapAttributes, LdapSettings,
        MissingEmail, SearchScope, ServerType,
    };
    let at = |k: &str| format!("source.ldap.{k}");
    let mut ok = true;
    let server = match raw.server_type.as_deref() {
        None => ServerType::Generic,
        Some(t) => ServerType::parse(t).unwrap_or_else(|| {
            pr.push(
                at("server_type"),
                format!("unknown server type {t:?} (generic, active_directory)"),
            );
            ok = false;
            ServerType::Generic
        }),
    };
    let url = match raw.url.as_deref().map(str::trim) {
        None | Some("") => {
            pr.push(
                at("url"),
                "missing: the server, ldap://host:389 or ldaps://host:636",
            );
            None
        }
        Some(u) => match url::Url::parse(u) {
            Ok(p) if p.scheme() != "ldap" && p.scheme() != "ldaps" => {
                pr.push(
                    at("url"),
                    format!(
                        "scheme {:?} not supported (ldap:// or ldaps://)",
                        p.scheme()
                    ),
                );
                None
            }
            Ok(p) if p.host_str().is_none_or(str::is_empty) => {
                pr.push(at("url"), "URL has no host");
                None
            }
            Ok(p) if !matches!(p.path(), "" | "/") || p.query().is_some() => {
                pr.push(
                    at("url"),
                    "only scheme, host and port: set the base DN, scope and filter with base_dn, \
                     scope and filter",
                );
                None
            }
            Ok(p) if !p.username().is_empty() || p.password().is_some() => {
                pr.push(
                    at("url"),
                    "URL must not carry credentials; use bind_dn and bind_password",
                );
                None
            }
            Ok(p) => Some(p),
            Err(e) => {
                pr.push(at("url"), format!("invalid URL {u:?}: {e}"));
                None
            }
        },
    };
    let starttls = raw.starttls.unwrap_or(false);
    if starttls && url.as_ref().is_some_and(|u| u.scheme() == "ldaps") {
        pr.push(
            at("starttls"),
            "StartTLS is for ldap:// URLs; ldaps:// is already encrypted",
        );
        ok = false;
    }
    let tls = starttls || url.as_ref().is_some_and(|u| u.scheme() == "ldaps");
    let tls_skip_verify = raw.tls_skip_verify.unwrap_or(false);
    let ca_file = raw.ca_file.map(|p| resolve(base, &p));
    if let Some(ca) = &ca_file {
        if !tls {
            pr.push(at("ca_file"), "only used with ldaps:// or starttls = true");
            ok = false;
        } else if tls_skip_verify {
            pr.push(
                at("ca_file"),
                "set either ca_file or tls_skip_verify, not both",
            );
            ok = false;
        } else if let Err(e) = std::fs::metadata(ca) {
            pr.push(at("ca_file"), format!("cannot read {}: {e}", ca.display()));
            ok = false;
        }
    }
    if tls_skip_verify && !tls {
        pr.push(
            at("tls_skip_verify"),
            "only used with ldaps:// or starttls = true",
        );
        ok = false;
    }
    let password_given = raw.bind_password.is_some()
        || raw.bind_password_file.is_some()
        || raw.bind_password_credential.is_some();
    let password = secret_ref(
        raw.bind_password,
        raw.bind_password_file.as_ref(),
        raw.bind_password_credential.as_ref(),
        base,
        &at("bind_password"),
        pr,
    );
    let anonymous = raw.anonymous.unwrap_or(false);
    let bind_dn = raw.bind_dn.map(|d| d.trim().to_string());
    match (&bind_dn, anonymous) {
        (Some(_), true) => {
            pr.push(
                at("anonymous"),
                "set either bind_dn or anonymous = true, not both",
            );
            ok = false;
        }
        (Some(d), false) if d.is_empty() => {
            pr.push(
                at("bind_dn"),
                "empty (for an anonymous bind set anonymous = true)",
            );
            ok = false;
        }
        (Some(_), false) => {
            if !password_given {
                pr.push(
                    at("bind_password"),
                    "required with bind_dn (set bind_password, bind_password_file or \
                     bind_password_credential)",
                );
                ok = false;
            }
        }
        (None, false) => {
            pr.push(
                at("bind_dn"),
                "missing: the DN to bind as (or anonymous = true to read without binding)",
            );
            ok = false;
        }
        (None, true) => {
            if password_given {
                pr.push(at("bind_password"), "not used with anonymous = true");
                ok = false;
            }
        }
    }
    let timeout = |v: Option<&str>, key: &str, default: u64, pr: &mut Problems| match v {
        None => Some(Duration::from_secs(default)),
        Some(v) => {
            let d = duration(v, &at(key), pr)?;
            if d.is_zero() {
                pr.push(at(key), "must be more than 0");
                return None;
            }
            Some(d)
        }
    };
    let connect_timeout = timeout(raw.connect_timeout.as_deref(), "connect_timeout", 10, pr);
    let operation_timeout = timeout(
        raw.operation_timeout.as_deref(),
        "operation_timeout",
        60,
        pr,
    );
    let base_dn = match raw.base_dn.as_deref().map(str::trim) {
        None | Some("") => {
            pr.push(
                at("base_dn"),
                "missing: where the users are (ou=people,dc=example,dc=com)",
            );
            None
        }
        Some(d) if !d.contains('=') => {
            pr.push(
                at("base_dn"),
                format!("{d:?} is not a DN (ou=people,dc=example,dc=com)"),
            );
            None
        }
        Some(d) => Some(d.to_string()),
    };
    let scope = |v: Option<&str>, key: &str, pr: &mut Problems| match v {
        None => Some(SearchScope::Sub),
        Some(v) => SearchScope::parse(v).or_else(|| {
            pr.push(key, format!("unknown scope {v:?} (base, one, sub)"));
            None
        }),
    };
    let user_scope = scope(raw.scope.as_deref(), &at("scope"), pr);
    let check_filter = |f: &str, key: &str, pr: &mut Problems| -> bool {
        if ldap3::parse_filter(f).is_err() {
            pr.push(key, format!("invalid LDAP filter {f:?}"));
            return false;
        }
        true
    };
    let filter = raw
        .filter
        .unwrap_or_else(|| LdapSettings::default_filter(server).to_string());
    ok &= check_filter(&filter, &at("filter"), pr);
    let page_size = match raw.page_size {
        None => 500,
        Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => n as u32,
        Some(n) => {
            pr.push(
                at("page_size"),
                format!("must be 0 (no paging) or more, got {n}"),
            );
            ok = false;
            500
        }
    };
    let key_format = match raw.key_format.as_deref() {
        None => KeyFormat::Auto,
        Some(f) => KeyFormat::parse(f).unwrap_or_else(|| {
            pr.push(
                at("key_format"),
                format!("unknown format {f:?} (auto, text, guid, hex)"),
            );
            ok = false;
            KeyFormat::Auto
        }),
    };
    let mut attributes = LdapAttributes::defaults(server);
    let a = raw.attributes;
    if let Some(k) = a.key {
        if k.trim().is_empty() {
            pr.push(at("attributes.key"), "empty");
            ok = false;
        }
        attributes.key = k.trim().to_string();
    }
    let mut list = |v: Option<super::raw::OneOrMany>, key: &str, target: &mut Vec<String>| {
        if let Some(v) = v {
            let v: Vec<String> = v
                .into_vec()
                .into_iter()
                .map(|s| s.trim().to_string())
                .collect();
            if v.iter().any(String::is_empty) || (key == "email" && v.is_empty()) {
                pr.push(at(&format!("attributes.{key}")), "empty attribute name");
                ok = false;
            }
            *target = v;
        }
    };
    list(a.email, "email", &mut attributes.email);
    list(a.given_name, "given_name", &mut attributes.given_name);
    list(a.family_name, "family_name", &mut attributes.family_name);
    list(a.other_name, "other_name", &mut attributes.other_name);
    list(a.display_name, "display_name", &mut attributes.display_name);
    list(a.mobile, "mobile", &mut attributes.mobile);
    let disabled = match (
        raw.disabled_attribute,
        raw.disabled_values,
        raw.disabled_when_present,
    ) {
        (None, None, None | Some(false)) => None,
        (None, _, _) => {
            pr.push(
                at("disabled_attribute"),
                "missing: disabled_values / disabled_when_present need the attribute they apply to",
            );
            ok = false;
            None
        }
        (Some(attr), Some(values), None | Some(false)) if !values.is_empty() => {
            Some(DisabledRule {
                attribute: attr,
                values,
            })
        }
        (Some(attr), None, Some(true)) => Some(DisabledRule {
            attribute: attr,
            values: Vec::new(),
        }),
        (Some(_), Some(v), Some(true)) if !v.is_empty() => {
            pr.push(
                at("disabled_values"),
                "set either disabled_values or disabled_when_present = true, not both",
            );
            ok = false;
            None
        }
        (Some(_), _, _) => {
            pr.push(
                at("disabled_values"),
                "missing: the values of disabled_attribute that mean disabled \
                 (or disabled_when_present = true)",
            );
            ok = false;
            None
        }
    };
    let groups = match raw.groups.as_deref().map(str::trim) {
        None | Some("memberof" | "memberOf" | "member_of") => {
            if raw.group_search.is_some() {
                pr.push(at("group_search"), "only used with groups = \"search\"");
                ok = false;
            }
            Some(GroupSource::MemberOf {
                attribute: raw
                    .member_of_attribute
                    .unwrap_or_else(|| "memberOf".to_string()),
            })
        }
        Some("none") => Some(GroupSource::None),
        Some("search") => {
            let g = raw.group_search.unwrap_or_default();
            let gbase = match g.base_dn.as_deref().map(str::trim) {
                Some(d) if d.contains('=') => Some(d.to_string()),
                _ => {
                    pr.push(
                        at("group_search.base_dn"),
                        "missing: the DN under which the group entries are (ou=groups,dc=example,dc=com)",
                    );
                    None
                }
            };
            let mut gs = GroupSearch::new(gbase.clone().unwrap_or_default());
            if let Some(s) = scope(g.scope.as_deref(), &at("group_search.scope"), pr) {
                gs.scope = s;
            } else {
                ok = false;
            }
            if let Some(f) = g.filter {
                ok &= check_filter(&f, &at("group_search.filter"), pr);
                gs.filter = f;
            }
            if let Some(m) = g.member_attributes {
                gs.member_attributes = m;
            }
            if let Some(m) = g.member_uid_attribute {
                gs.member_uid_attribute = (!m.trim().is_empty()).then_some(m);
            }
            if let Some(u) = g.user_id_attribute {
                gs.user_id_attribute = u;
            }
            if gs.member_attributes.is_empty() && gs.member_uid_attribute.is_none() {
                pr.push(
                    at("group_search.member_attributes"),
                    "no member attribute left to read",
                );
                ok = false;
            }
            gbase.map(|_| GroupSource::Search(gs))
        }
        Some(o) => {
            pr.push(
                at("groups"),
                format!("unknown value {o:?} (memberof, search, none)"),
            );
            None
        }
    };
    let missing_email = match raw.missing_email.as_deref() {
        None | Some("skip") => MissingEmail::Skip,
        Some("error") => MissingEmail::Error,
        Some(o) => {
            pr.push(
                at("missing_email"),
                format!("unknown value {o:?} (skip, error)"),
            );
            ok = false;
            MissingEmail::Skip
        }
    };
    for name in raw.extra.keys() {
        if crate::model::USER_FIELDS.contains(&name.as_str()) {
            pr.push(
                at(&format!("extra.{name}")),
                "is a built-in field; map it under [source.ldap.attributes]",
            );
            ok = false;
        }
    }
    let settings = LdapSettings {
        url: url.and(raw.url.map(|u| u.trim().to_string()))?,
        starttls,
        ca_file,
        tls_skip_verify,
        bind_dn: if anonymous { None } else { bind_dn },
        bind_password: None,
        bind_password_ref: password,
        connect_timeout: connect_timeout?,
        operation_timeout: operation_timeout?,
        timeout: crate::source::csv::DEFAULT_TIMEOUT,
        base_dn: base_dn?,
        scope: user_scope?,
        filter,
        page_size,
        attributes,
        key_format,
        user_account_control: raw
            .user_account_control
            .unwrap_or(server == ServerType::ActiveDirectory),
        disabled,
        groups: groups?,
        nested_groups: raw.nested_groups.unwrap_or(false),
        missing_email,
        extra: raw.extra,
    };
    ok.then_some(SourceConfig::Ldap(settings))
}

/// `source.timeout`: the longest a whole source read may take (default 10m).
fn source_timeout(v: Option<&str>, pr: &mut Problems) -> Duration {
    let default = crate::source::csv::DEFAULT_TIMEOUT;
    match v {
        None => default,
        Some(v) => match duration(v, "source.timeout", pr) {
            Some(d) if d.is_zero() => {
                pr.push("source.timeout", "must be more than 0s");
                default
            }
            Some(d) => d,
            None => default,
        },
    }
}

fn csv_source(raw: RawCsv, base: &Path, pr: &mut Problems) -> Option<SourceConfig> {
    let path = match raw.path {
        Some(p) => Some(resolve(base, &p)),
        None => {
            pr.push("source.csv.path", "missing: the CSV file to read");
            None
        }
    };
    let delimiter = match raw.delimiter.as_deref() {
        None => Some(b','),
        Some("\\t" | "tab" | "\t") => Some(b'\t'),
        Some(d) if d.len() == 1 && d.is_ascii() => Some(d.as_bytes()[0]),
        Some(d) => {
            pr.push(
                "source.csv.delimiter",
                format!("must be one ASCII character (or \"tab\"), got {d:?}"),
            );
            None
        }
    };
    let c = raw.columns;
    let key = c.key.or_else(|| {
        pr.push(
            "source.csv.columns.key",
            "missing: the column holding each user's stable key (an employee id, not the email)",
        );
        None
    });
    let (def_en, def_dis) = CsvSettings::default_values();
    let enabled_values = raw.enabled_values.unwrap_or(def_en);
    let disabled_values = raw.disabled_values.unwrap_or(def_dis);
    for v in &enabled_values {
        if disabled_values.iter().any(|d| d.eq_ignore_ascii_case(v)) {
            pr.push(
                "source.csv.enabled_values",
                format!("{v:?} is also in disabled_values"),
            );
        }
    }
    let groups_separator = raw.groups_separator.unwrap_or_else(|| ";".into());
    if groups_separator.is_empty() {
        pr.push("source.csv.groups_separator", "must not be empty");
    }
    for name in raw.extra.keys() {
        if crate::model::USER_FIELDS.contains(&name.as_str()) {
            pr.push(
                format!("source.csv.extra.{name}"),
                "is a built-in field; map it under [source.csv.columns]",
            );
        }
    }
    Some(SourceConfig::Csv(CsvSettings {
        path: path?,
        delimiter: delimiter?,
        columns: CsvColumns {
            key: key?,
            email: c.email.unwrap_or_else(|| "email".into()),
            given_name: c.given_name,
            family_name: c.family_name,
            other_name: c.other_name,
            display_name: c.display_name,
            mobile: c.mobile,
            enabled: c.enabled,
            groups: c.groups,
        },
        enabled_values,
        disabled_values,
        groups_separator,
        extra: raw.extra,
        timeout: crate::source::csv::DEFAULT_TIMEOUT,
    }))
}

fn percent(v: Option<f64>, default: f64, key: &str, pr: &mut Problems) -> f64 {
    let v = v.unwrap_or(default);
    if !(0.0..=100.0).contains(&v) {
        pr.push(key, format!("must be between 0 and 100, got {v}"));
        return default;
    }
    v
}

fn safety(raw: RawSafety, pr: &mut Problems) -> SafetySettings {
    let d = SafetySettings::default();
    SafetySettings {
        min_source_users: raw.min_source_users.unwrap_or(d.min_source_users),
        max_source_drop_percent: percent(
            raw.max_source_drop_percent,
            d.max_source_drop_percent,
            "safety.max_source_drop_percent",
            pr,
        ),
        max_disables: raw.max_disables.or(d.max_disables),
        max_disable_percent: percent(
            raw.max_disable_percent,
            d.max_disable_percent,
            "safety.max_disable_percent",
            pr,
        ),
        max_deletes: raw.max_deletes.or(d.max_deletes),
        max_delete_percent: percent(
            raw.max_delete_percent,
            d.max_delete_percent,
            "safety.max_delete_percent",
            pr,
        ),
        percent_floor: raw.percent_floor.unwrap_or(d.percent_floor),
        max_quarantined: raw.max_quarantined.unwrap_or(d.max_quarantined),
        max_quarantined_percent: percent(
            raw.max_quarantined_percent,
            d.max_quarantined_percent,
            "safety.max_quarantined_percent",
            pr,
        ),
        max_plan_age: match &raw.max_plan_age {
            Some(v) => duration(v, "safety.max_plan_age", pr).unwrap_or(d.max_plan_age),
            None => d.max_plan_age,
        },
    }
}

fn schedule(raw: RawSchedule, pr: &mut Problems) -> Option<ScheduleConfig> {
    let cron = match raw.cron.as_deref() {
        None => None,
        Some(c) => match crate::schedule::Cron::parse(c) {
            Ok(c) => Some(c),
            Err(e) => {
                pr.push("schedule.cron", e);
                return None;
            }
        },
    };
    let interval = match raw.interval.as_deref() {
        None => None,
        Some(i) => {
            let d = duration(i, "schedule.interval", pr)?;
            if d < Duration::from_secs(1) {
                pr.push("schedule.interval", "must be at least 1s");
            }
            Some(d)
        }
    };
    if cron.is_some() && interval.is_some() {
        pr.push("schedule", "set either cron or interval, not both");
    }
    let jitter = match raw.jitter.as_deref() {
        None => Duration::ZERO,
        Some(j) => duration(j, "schedule.jitter", pr)?,
    };
    // No timing given: every 15 minutes.
    let interval = if cron.is_none() && interval.is_none() {
        Some(Duration::from_secs(15 * 60))
    } else {
        interval
    };
    Some(ScheduleConfig {
        cron,
        interval,
        jitter,
        run_on_start: raw.run_on_start.unwrap_or(true),
    })
}

fn target(
    raw: RawTarget,
    at: &str,
    base: &Path,
    extra: &[String],
    pr: &mut Problems,
) -> Option<TargetConfig> {
    let http = http_settings(&raw, at, pr);
    let raw_rps = raw.requests_per_second;
    let job_timeout = match raw.job_timeout.as_deref() {
        Some(v) => duration(v, &format!("{at}.job_timeout"), pr),
        None => Some(Duration::from_secs(600)),
    };
    let job_poll_interval = match raw.job_poll_interval.as_deref() {
        Some(v) => duration(v, &format!("{at}.job_poll_interval"), pr),
        None => Some(Duration::from_secs(1)),
    };
    let name = match raw.name {
        Some(n)
            if !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) =>
        {
            Some(n)
        }
        Some(n) => {
            pr.push(
                format!("{at}.name"),
                format!("{n:?}: use letters, digits, '-', '_' and '.' only"),
            );
            None
        }
        None => {
            pr.push(format!("{at}.name"), "missing");
            None
        }
    };
    let kind = match raw.kind.as_deref() {
        Some(k) => TargetKind::parse(k).or_else(|| {
            pr.push(
                format!("{at}.kind"),
                format!("unknown kind {k:?} (known: covata, primavera, valuekeep)"),
            );
            None
        }),
        None => {
            pr.push(
                format!("{at}.kind"),
                "missing (covata, primavera or valuekeep)",
            );
            None
        }
    };
    let allow_insecure_http = raw.allow_insecure_http.unwrap_or(false);
    let base_url = match raw.base_url.as_deref() {
        Some(u) => http_url(u, &format!("{at}.base_url"), pr).filter(|u| {
            !refuse_clear_text(u, &format!("{at}.base_url"), allow_insecure_http, at, pr)
        }),
        None => {
            pr.push(format!("{at}.base_url"), "missing");
            None
        }
    };
    let password = secret_ref(
        raw.password,
        raw.password_file.as_ref(),
        raw.password_credential.as_ref(),
        base,
        &format!("{at}.password"),
        pr,
    );
    let client_secret = secret_ref(
        raw.client_secret,
        raw.client_secret_file.as_ref(),
        raw.client_secret_credential.as_ref(),
        base,
        &format!("{at}.client_secret"),
        pr,
    );
    let on_missing = match raw.on_missing.as_deref() {
        None | Some("disable") => Some(OnMissing::Disable),
        Some("delete") => Some(OnMissing::Delete),
        Some("disable_then_delete") => Some(OnMissing::DisableThenDelete),
        Some(o) => {
            pr.push(
                format!("{at}.on_missing"),
                format!("unknown value {o:?} (disable, disable_then_delete, delete)"),
            );
            None
        }
    };
    let delete_after = match raw.delete_after.as_deref() {
        Some(d) => duration(d, &format!("{at}.delete_after"), pr),
        None => Some(Duration::from_secs(30 * 86400)),
    };
    if raw.delete_after.is_some() && on_missing != Some(OnMissing::DisableThenDelete) {
        pr.push(
            format!("{at}.delete_after"),
            "only used with on_missing = \"disable_then_delete\"",
        );
    }
    let batch_size = raw.batch_size.unwrap_or(500);
    if batch_size == 0 {
        pr.push(format!("{at}.batch_size"), "must be at least 1");
    }
    let kind = kind?;
    let spec = kind.spec();
    // Settings that belong to one vendor only.
    for (set, key, only) in [
        (
            raw.expire_sessions_on_disable.is_some(),
            "expire_sessions_on_disable",
            TargetKind::Covata,
        ),
        (
            raw.bulk_import_min.is_some(),
            "bulk_import_min",
            TargetKind::Covata,
        ),
        (
            raw.import_batch_size.is_some(),
            "import_batch_size",
            TargetKind::Covata,
        ),
        (
            raw.send_invitation.is_some(),
            "send_invitation",
            TargetKind::Valuekeep,
        ),
        (
            raw.set_status.is_some(),
            "set_status",
            TargetKind::Valuekeep,
        ),
        (
            raw.job_timeout.is_some(),
            "job_timeout",
            TargetKind::Primavera,
        ),
        (
            raw.job_poll_interval.is_some(),
            "job_poll_interval",
            TargetKind::Primavera,
        ),
    ] {
        if set && kind != only {
            pr.push(
                format!("{at}.{key}"),
                format!(
                    "not a setting of kind {} (only of {})",
                    kind.as_str(),
                    only.as_str()
                ),
            );
        }
    }
    if raw.bulk_import_min == Some(0) {
        pr.push(
            format!("{at}.bulk_import_min"),
            "must be at least 1 (leave it unset to never import)",
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

    // Credentials: the ones this kind needs must be set; others must not be.
    let mut creds = Credentials {
        username: raw.username,
        password,
        client_id: raw.client_id,
        client_secret,
        token_url: None,
        scope: raw.scope,
        tenant_key: raw.tenant_key,
        org_key: raw.org_key,
    };
    let token_url_raw = raw.token_url;
    let is_set = |c: Credential, creds: &Credentials| match c {
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
        Credential::Password => raw.password_file.is_some() || raw.password_credential.is_some(),
        Credential::ClientSecret => {
            raw.client_secret_file.is_some() || raw.client_secret_credential.is_some()
        }
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
                    .filter(|u| !refuse_clear_text(u, &key, allow_insecure_http, at, pr));
            }
            Credential::Scope => {
                creds.scope.get_or_insert_with(|| (*default).to_string());
            }
            _ => {}
        }
    }
    let mapping = mapping(
        &raw.fields,
        &raw.roles,
        raw.default_roles,
        &raw.groups,
        raw.default_groups,
        raw.include_groups,
        raw.exclude_groups,
        kind,
        at,
        extra,
        pr,
    );
    Some(TargetConfig {
        name: name?,
        kind,
        enabled: raw.enabled.unwrap_or(true),
        base_url: base_url?,
        credentials: creds,
        mapping: mapping?,
        on_missing: on_missing?,
        delete_after: delete_after?,
        batch_size,
        expire_sessions_on_disable: raw.expire_sessions_on_disable.unwrap_or(true),
        bulk_import_min: raw.bulk_import_min,
        import_batch_size: raw.import_batch_size.unwrap_or(DEFAULT_IMPORT_BATCH),
        send_invitation: raw.send_invitation.unwrap_or(false),
        set_status: raw.set_status.unwrap_or(false),
        job_timeout: job_timeout?,
        job_poll_interval: job_poll_interval?,
        recreate_deleted: raw.recreate_deleted.unwrap_or(false),
        http: match (http, kind) {
            // Valuekeep's API allows 60 requests a minute per client: pace at that by default.
            (Some(mut h), TargetKind::Valuekeep) if raw_rps.is_none() => {
                h.requests_per_second = Some(1.0);
                Some(h)
            }
            (h, _) => h,
        }?,
    })
}

fn http_settings(raw: &RawTarget, at: &str, pr: &mut Problems) -> Option<HttpSettings> {
    let d = HttpSettings::default();
    let dur = |v: &Option<String>, key: &str, default: Duration, pr: &mut Problems| match v {
        Some(v) => {
            let got = duration(v, &format!("{at}.{key}"), pr)?;
            if got.is_zero() {
                pr.push(format!("{at}.{key}"), "must be more than 0");
                return None;
            }
            Some(got)
        }
        None => Some(default),
    };
    let connect_timeout = dur(
        &raw.connect_timeout,
        "connect_timeout",
        d.connect_timeout,
        pr,
    );
    let request_timeout = dur(
        &raw.request_timeout,
        "request_timeout",
        d.request_timeout,
        pr,
    );
    let max_backoff = dur(&raw.max_backoff, "max_backoff", d.max_backoff, pr);
    let concurrency = raw.concurrency.unwrap_or(d.concurrency);
    if concurrency == 0 || concurrency > 1024 {
        pr.push(format!("{at}.concurrency"), "must be between 1 and 1024");
    }
    if let Some(rps) = raw.requests_per_second
        && !(rps > 0.0 && rps.is_finite())
    {
        pr.push(format!("{at}.requests_per_second"), "must be more than 0");
    }
    Some(HttpSettings {
        connect_timeout: connect_timeout?,
        request_timeout: request_timeout?,
        concurrency,
        requests_per_second: raw.requests_per_second,
        max_retries: raw.max_retries.unwrap_or(d.max_retries),
        max_backoff: max_backoff?,
    })
}

#[allow(clippy::too_many_arguments)]
fn mapping(
    fields: &BTreeMap<String, String>,
    roles: &[super::raw::RawRoleRule],
    default_roles: Option<Vec<String>>,
    groups: &[super::raw::RawGroupRule],
    default_groups: Option<Vec<String>>,
    include_groups: Vec<String>,
    exclude_groups: Vec<String>,
    kind: TargetKind,
    at: &str,
    extra: &[String],
    pr: &mut Problems,
) -> Option<TargetMapping> {
    let spec = kind.spec();
    let mut ok = true;
    for name in fields.keys() {
        if spec.field(name).is_none() {
            let known: Vec<&str> = spec.fields.iter().map(|f| f.name).collect();
            pr.push(
                format!("{at}.fields.{name}"),
                format!(
                    "{} has no field {name:?}; known: {}",
                    kind.as_str(),
                    known.join(", ")
                ),
            );
            ok = false;
        }
    }
    let mut out = Vec::new();
    for f in spec.fields {
        let src = fields
            .get(f.name)
            .map(String::as_str)
            .or(f.default_template);
        let Some(src) = src else {
            if f.required {
                pr.push(
                    format!("{at}.fields.{}", f.name),
                    format!("required by {} and has no default: map it", kind.as_str()),
                );
                ok = false;
            }
            continue;
        };
        let key = format!("{at}.fields.{}", f.name);
        match Template::parse(src).and_then(|t| t.check_fields(extra).map(|()| t)) {
            Ok(t) => out.push(FieldMapping {
                name: f.name.to_string(),
                kind: f.kind,
                required: f.required,
                template: t,
            }),
            Err(e) => {
                pr.push(key, e);
                ok = false;
            }
        }
    }
    let check_role = |role: &str, key: &str, pr: &mut Problems| -> bool {
        if let Some(known) = spec.known_roles
            && !known.contains(&role)
        {
            pr.push(
                key,
                format!(
                    "unknown {} role {role:?}; known: {}",
                    kind.as_str(),
                    known.join(", ")
                ),
            );
            return false;
        }
        if role.trim().is_empty() {
            pr.push(key, "empty role name");
            return false;
        }
        true
    };
    let mut rules = Vec::new();
    for (i, r) in roles.iter().enumerate() {
        let key = format!("{at}.roles[{i}]");
        let Some(group) = r.group.as_ref().filter(|g| !g.trim().is_empty()) else {
            pr.push(
                format!("{key}.group"),
                "missing: the group (name or DN) this rule matches",
            );
            ok = false;
            continue;
        };
        if r.roles.is_empty() {
            pr.push(
                format!("{key}.roles"),
                "empty: list the roles members of this group get",
            );
            ok = false;
        }
        for role in &r.roles {
            ok &= check_role(role, &format!("{key}.roles"), pr);
        }
        rules.push(RoleRule {
            group: group.trim().to_string(),
            roles: r.roles.clone(),
        });
    }
    let default_roles =
        default_roles.unwrap_or_else(|| spec.default_roles.iter().map(|r| r.to_string()).collect());
    for role in &default_roles {
        ok &= check_role(role, &format!("{at}.default_roles"), pr);
    }
    if spec.roles_required && default_roles.is_empty() {
        pr.push(
            format!("{at}.default_roles"),
            format!(
                "{} requires every user to have a role: default_roles must not be empty",
                kind.as_str()
            ),
        );
        ok = false;
    }
    // Target-side groups: only where the vendor has them.
    let mut group_rules = Vec::new();
    if !spec.supports_groups && (!groups.is_empty() || default_groups.is_some()) {
        pr.push(
            format!("{at}.groups"),
            format!(
                "{} has no user groups (groups and default_groups are not settings of this kind)",
                kind.as_str()
            ),
        );
        ok = false;
    }
    for (i, r) in groups.iter().enumerate() {
        let key = format!("{at}.groups[{i}]");
        let Some(group) = r.group.as_ref().filter(|g| !g.trim().is_empty()) else {
            pr.push(
                format!("{key}.group"),
                "missing: the source group (name or DN) this rule matches",
            );
            ok = false;
            continue;
        };
        if r.groups.is_empty() || r.groups.iter().any(|g| g.trim().is_empty()) {
            pr.push(
                format!("{key}.groups"),
                "list the target groups members of this group join (no empty names)",
            );
            ok = false;
        }
        group_rules.push(RoleRule {
            group: group.trim().to_string(),
            roles: r.groups.clone(),
        });
    }
    let default_groups = default_groups.unwrap_or_default();
    ok.then(|| TargetMapping {
        fields: out,
        role_rules: rules,
        default_roles,
        group_rules,
        default_groups,
        filter: UserFilter {
            include_groups,
            exclude_groups,
        },
        login_field: spec.login_field.to_string(),
    })
}
