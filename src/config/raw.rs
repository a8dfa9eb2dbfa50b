//! The configuration as written: every key optional, so that validation can report all
//! missing or wrong values at once. Unknown keys are collected (not silently ignored).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigProblem;
use crate::secret::Secret;

#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    #[serde(default)]
    pub state: RawState,
    pub source: Option<RawSource>,
    #[serde(default)]
    pub safety: RawSafety,
    #[serde(default)]
    pub schedule: RawSchedule,
    #[serde(default)]
    pub daemon: RawDaemon,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub target: Vec<RawTarget>,
    #[serde(default)]
    pub notify: Vec<RawNotify>,
}

/// `[[notify]]`: a webhook or an e-mail about finished runs.
#[derive(Debug, Default, Deserialize)]
pub struct RawNotify {
    pub kind: Option<String>,
    pub on: Option<Vec<String>>,
    pub timeout: Option<String>,
    // webhook
    pub url: Option<String>,
    pub hmac_secret: Option<Secret>,
    pub hmac_secret_file: Option<PathBuf>,
    pub hmac_secret_credential: Option<String>,
    // email
    pub host: Option<String>,
    pub port: Option<u16>,
    pub starttls: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    pub password_credential: Option<String>,
    pub from: Option<String>,
    pub to: Option<OneOrMany>,
    pub subject_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawDaemon {
    pub shutdown_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawHttp {
    pub listen: Option<String>,
    pub unready_after_failures: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawState {
    pub database_url: Option<Secret>,
    pub database_url_file: Option<PathBuf>,
    pub database_url_credential: Option<String>,
    pub path: Option<PathBuf>,
    pub auto_migrate: Option<bool>,
    pub max_connections: Option<u32>,
    pub timeout: Option<String>,
    pub keep_runs: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawSource {
    pub kind: Option<String>,
    pub timeout: Option<String>,
    pub csv: Option<RawCsv>,
    pub ldap: Option<RawLdap>,
}

/// `[source.ldap]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawLdap {
    pub server_type: Option<String>,
    pub url: Option<String>,
    pub starttls: Option<bool>,
    pub ca_file: Option<PathBuf>,
    pub tls_skip_verify: Option<bool>,
    pub anonymous: Option<bool>,
    pub bind_dn: Option<String>,
    pub bind_password: Option<Secret>,
    pub bind_password_file: Option<PathBuf>,
    pub bind_password_credential: Option<String>,
    pub connect_timeout: Option<String>,
    pub operation_timeout: Option<String>,
    pub base_dn: Option<String>,
    pub scope: Option<String>,
    pub filter: Option<String>,
    pub page_size: Option<i64>,
    pub key_format: Option<String>,
    #[serde(default)]
    pub attributes: RawLdapAttributes,
    pub user_account_control: Option<bool>,
    pub disabled_attribute: Option<String>,
    pub disabled_values: Option<Vec<String>>,
    pub disabled_when_present: Option<bool>,
    pub groups: Option<String>,
    pub member_of_attribute: Option<String>,
    pub nested_groups: Option<bool>,
    pub group_search: Option<RawLdapGroupSearch>,
    pub missing_email: Option<String>,
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

/// One attribute name, or a list tried in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `[source.ldap.attributes]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawLdapAttributes {
    pub key: Option<String>,
    pub email: Option<OneOrMany>,
    pub given_name: Option<OneOrMany>,
    pub family_name: Option<OneOrMany>,
    pub other_name: Option<OneOrMany>,
    pub display_name: Option<OneOrMany>,
    pub mobile: Option<OneOrMany>,
}

/// `[source.ldap.group_search]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawLdapGroupSearch {
    pub base_dn: Option<String>,
    pub scope: Option<String>,
    pub filter: Option<String>,
    pub member_attributes: Option<Vec<String>>,
    pub member_uid_attribute: Option<String>,
    pub user_id_attribute: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCsv {
    pub path: Option<PathBuf>,
    pub delimiter: Option<String>,
    #[serde(default)]
    pub columns: RawCsvColumns,
    pub enabled_values: Option<Vec<String>>,
    pub disabled_values: Option<Vec<String>>,
    pub groups_separator: Option<String>,
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCsvColumns {
    pub key: Option<String>,
    pub email: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub other_name: Option<String>,
    pub display_name: Option<String>,
    pub mobile: Option<String>,
    pub enabled: Option<String>,
    pub groups: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawSafety {
    pub min_source_users: Option<u64>,
    pub max_source_drop_percent: Option<f64>,
    pub max_disables: Option<u64>,
    pub max_disable_percent: Option<f64>,
    pub max_deletes: Option<u64>,
    pub max_delete_percent: Option<f64>,
    pub percent_floor: Option<u64>,
    pub max_quarantined: Option<u64>,
    pub max_quarantined_percent: Option<f64>,
    pub max_plan_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawSchedule {
    pub cron: Option<String>,
    pub interval: Option<String>,
    pub jitter: Option<String>,
    pub run_on_start: Option<bool>,
}

/// `[[target]]`: the keys every target has; the rest are the vendor's, handed to its
/// settings (`connector::settings::VendorSettings::validate`), which reports unknown ones.
#[derive(Debug, Default, Deserialize)]
pub struct RawTarget {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub enabled: Option<bool>,
    pub base_url: Option<String>,
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    #[serde(default)]
    pub roles: Vec<RawRoleRule>,
    pub default_roles: Option<Vec<String>>,
    #[serde(default)]
    pub groups: Vec<RawGroupRule>,
    pub default_groups: Option<Vec<String>>,
    #[serde(default)]
    pub include_groups: Vec<String>,
    #[serde(default)]
    pub exclude_groups: Vec<String>,
    pub on_missing: Option<String>,
    pub delete_after: Option<String>,
    pub connect_timeout: Option<String>,
    pub request_timeout: Option<String>,
    pub concurrency: Option<usize>,
    pub requests_per_second: Option<f64>,
    pub max_retries: Option<u32>,
    pub max_backoff: Option<String>,
    pub batch_size: Option<usize>,
    pub allow_insecure_http: Option<bool>,
    pub recreate_deleted: Option<bool>,
    /// Every other key: the vendor's.
    #[serde(flatten)]
    pub vendor: serde_json::Map<String, serde_json::Value>,
}

/// `[[target.groups]]`: a source group → target-side groups.
#[derive(Debug, Default, Deserialize)]
pub struct RawGroupRule {
    pub group: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRoleRule {
    pub group: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Turns a serde path (`target.0.base_url`) into the form the docs use (`target[0].base_url`).
fn display_path(path: &str) -> String {
    let mut out = String::new();
    for seg in path.split('.').filter(|s| *s != "?") {
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(seg);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// Deserialises the merged value. Unknown keys become problems; a wrong type is a problem
/// naming its key (and, as serde stops there, the last problem of this stage).
pub fn parse(value: serde_json::Value, problems: &mut Vec<ConfigProblem>) -> Option<RawConfig> {
    let mut unknown = Vec::new();
    let mut on_unknown = |path: serde_ignored::Path<'_>| {
        unknown.push(path.to_string());
    };
    let de = serde_ignored::Deserializer::new(value, &mut on_unknown);
    let result: Result<RawConfig, _> = serde_path_to_error::deserialize(de);
    for key in unknown {
        problems.push(ConfigProblem {
            key: display_path(&key),
            message: "unknown key (check the spelling; see config/example.toml)".into(),
        });
    }
    match result {
        Ok(raw) => Some(raw),
        Err(e) => {
            let key = display_path(&e.path().to_string());
            problems.push(ConfigProblem {
                key: if key.is_empty() || key == "?" {
                    "config".into()
                } else {
                    key
                },
                message: e.into_inner().to_string(),
            });
            None
        }
    }
}

/// The environment spelling of a target name: upper case, `-` and `.` as `_`.
pub fn env_name(target: &str) -> String {
    target
        .chars()
        .map(|c| match c {
            '-' | '.' | ' ' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// Parses an environment value the way figment does for the other sections: booleans and
/// numbers typed, everything else a string.
fn env_value(v: &str) -> serde_json::Value {
    let t = v.trim();
    if t == "true" || t == "false" {
        return serde_json::Value::Bool(t == "true");
    }
    if let Ok(i) = t.parse::<i64>() {
        return i.into();
    }
    if t.contains('.')
        && let Ok(f) = t.parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return serde_json::Value::Number(n);
    }
    serde_json::Value::String(v.to_string())
}

/// The section overrides from the environment, as a nested object:
/// `DIRSYNC_SAFETY__MAX_DELETES=10` → `{"safety": {"max_deletes": 10}}`. Only variables whose
/// first part names a section are configuration (`DIRSYNC_CONFIG` and friends are not).
pub fn env_overlay(env: &[(String, String)], origins: &mut EnvOrigins) -> serde_json::Value {
    let mut root = serde_json::Map::new();
    for (k, v) in env {
        let Some(rest) = k
            .get(..super::ENV_PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(super::ENV_PREFIX))
            .map(|_| k[super::ENV_PREFIX.len()..].to_ascii_lowercase())
        else {
            continue;
        };
        let parts: Vec<&str> = rest.split("__").collect();
        if parts.len() < 2
            || parts.iter().any(|p| p.is_empty())
            || !super::ENV_SECTIONS.contains(&parts[0])
        {
            continue;
        }
        origins.insert(parts.join("."), k.clone());
        let mut value = env_value(v);
        for p in parts[1..].iter().rev() {
            let mut m = serde_json::Map::new();
            m.insert((*p).to_string(), value);
            value = serde_json::Value::Object(m);
        }
        merge_into(&mut root, parts[0], value);
    }
    serde_json::Value::Object(root)
}

fn merge_into(
    map: &mut serde_json::Map<String, serde_json::Value>,
    key: &str,
    value: serde_json::Value,
) {
    match (map.get_mut(key), value) {
        (Some(serde_json::Value::Object(existing)), serde_json::Value::Object(new)) => {
            for (k, v) in new {
                merge_into(existing, &k, v);
            }
        }
        (_, value) => {
            map.insert(key.to_string(), value);
        }
    }
}

/// Which environment variable set which key: the key path as problems name it
/// (`safety.max_deletes`, `target[0].password`) → the variable (`DIRSYNC_SAFETY__MAX_DELETES`).
pub type EnvOrigins = std::collections::BTreeMap<String, String>;

/// Names the environment variable in every problem about a key it set (or about a part of
/// the value it set: `DIRSYNC_SAFETY__A__B` sets `safety.a`, which serde reports): the problem
/// becomes `DIRSYNC_SAFETY__MAX_DELETEZ: unknown key safety.max_deletez (...)`, since the
/// operator looking for `safety.max_deletez` in the file would not find it there.
pub fn name_env_vars(problems: &mut [ConfigProblem], origins: &EnvOrigins) {
    for p in problems {
        let var = origins.get(&p.key).or_else(|| {
            origins
                .range(p.key.clone()..)
                .take_while(|(path, _)| path.starts_with(&p.key))
                .find(|(path, _)| path.as_bytes().get(p.key.len()) == Some(&b'.'))
                .map(|(_, var)| var)
        });
        let Some(var) = var else { continue };
        let path = std::mem::replace(&mut p.key, var.clone());
        p.message = match p.message.strip_prefix("unknown key") {
            Some(rest) => format!("unknown key {path}{rest}"),
            None => format!("{path}: {}", p.message),
        };
    }
}

/// Applies `DIRSYNC_TARGET__<NAME>__<KEY>=value` to the target whose name matches `<NAME>`
/// (see [`env_name`]). Keys are the target's top-level keys (`PASSWORD`, `BASE_URL`, ...).
pub fn apply_target_env(
    value: &mut serde_json::Value,
    env: &[(String, String)],
    problems: &mut Vec<ConfigProblem>,
    origins: &mut EnvOrigins,
) {
    let prefix = format!("{}TARGET__", super::ENV_PREFIX);
    for (k, v) in env {
        let Some(rest) = k
            .get(..prefix.len())
            .filter(|p| p.eq_ignore_ascii_case(&prefix))
            .map(|_| &k[prefix.len()..])
        else {
            continue;
        };
        let Some((name, key)) = rest.split_once("__") else {
            problems.push(ConfigProblem {
                key: k.clone(),
                message: "expected DIRSYNC_TARGET__<NAME>__<KEY>".into(),
            });
            continue;
        };
        let targets = value
            .get_mut("target")
            .and_then(serde_json::Value::as_array_mut);
        let found = targets.and_then(|ts| {
            ts.iter_mut().enumerate().find(|(_, t)| {
                t.get("name")
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(|n| env_name(n) == name.to_ascii_uppercase())
            })
        });
        match found.and_then(|(i, t)| Some((i, t.as_object_mut()?))) {
            Some((i, obj)) => {
                let key = key.to_ascii_lowercase();
                origins.insert(format!("target[{i}].{key}"), k.clone());
                obj.insert(key, env_value(v));
            }
            None => problems.push(ConfigProblem {
                key: k.clone(),
                message: format!(
                    "no [[target]] whose name matches {name:?} (names are matched upper-cased, \
                     with '-' and '.' as '_')"
                ),
            }),
        }
    }
}
