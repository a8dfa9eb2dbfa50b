//! Configuration: built-in defaults → TOML file → `DIRSYNC_` environment, then validation that
//! collects every problem (with its key path) before reporting.
//!
//! The raw layer ([`raw`]) mirrors the TOML; [`load`] turns it into a validated [`Config`] whose
//! types the rest of dirsync uses (templates parsed, paths resolved against the config file's
//! directory). Target settings are the connector's types ([`TargetConfig`]); each vendor's
//! keys are checked by its folder under `crate::connector`.

pub mod notify;
pub mod perms;
mod raw;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};

pub use crate::connector::{HttpSettings, TargetConfig};
use crate::plan::SafetySettings;
use crate::store::StoreLocation;

pub use crate::schedule::ScheduleConfig;
pub use crate::source::SourceConfig;
pub use raw::RawConfig;
pub use validate::{DEFAULT_KEEP_RUNS, parse_keep_runs};

/// The default config path.
pub const DEFAULT_PATH: &str = "/etc/dirsync/dirsync.toml";
/// The SQLite state file when `[state]` sets neither `path` nor `database_url` and systemd
/// passes no `$STATE_DIRECTORY` (the directory `StateDirectory=dirsync` creates).
pub const DEFAULT_STATE_PATH: &str = "/var/lib/dirsync/dirsync.db";
/// The prefix of environment overrides.
pub const ENV_PREFIX: &str = "DIRSYNC_";
/// Top-level sections that environment variables may set (`DIRSYNC_SAFETY__MAX_DELETES=10`).
/// Targets are set by name: `DIRSYNC_TARGET__<NAME>__<KEY>`.
pub(crate) const ENV_SECTIONS: &[&str] =
    &["state", "source", "safety", "schedule", "daemon", "http"];

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    pub state: StateConfig,
    pub source: SourceConfig,
    pub safety: SafetySettings,
    pub schedule: ScheduleConfig,
    pub daemon: DaemonConfig,
    pub http: HttpListenConfig,
    pub targets: Vec<TargetConfig>,
    /// `[[notify]]`: run notifications.
    pub notify: Vec<notify::NotifyConfig>,
}

/// `[daemon]`: how `dirsync run` behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// After SIGTERM, how long in-flight requests may finish before the process exits
    /// (default 30s). Operations not sent by then stay journaled for the next start.
    pub shutdown_timeout: Duration,
}

/// `[http]`: the daemon's health and metrics listener (off unless `listen` is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpListenConfig {
    pub listen: Option<std::net::SocketAddr>,
    /// `/readyz` fails after this many failed runs in a row (default 3).
    pub unready_after_failures: u32,
}

#[derive(Debug, Clone)]
pub struct StateConfig {
    pub location: StoreLocation,
    /// Apply pending migrations when dirsync starts (default true).
    pub auto_migrate: bool,
    /// `keep_runs`: runs (and their journal rows) that finished longer ago than this are pruned
    /// (default 90 days, at least 1 day).
    pub keep_runs: Duration,
}

/// One configuration problem: where (a key path such as `target[1].base_url`, or an
/// environment variable) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a configuration could not be loaded: every problem found.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        if let [only] = self.problems.as_slice()
            && only.key == "config"
        {
            return write!(f, "configuration {}: {}", self.path.display(), only.message);
        }
        write!(
            f,
            "configuration {} has {n} problem{}:",
            self.path.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn one(path: &Path, key: &str, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.to_path_buf(),
            problems: vec![ConfigProblem {
                key: key.to_string(),
                message: message.into(),
            }],
        }
    }
}

/// Loads and validates the configuration at `path`, with the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    load_with_env(path, &env)
}

/// Like [`load`], with an explicit environment (for tests). Only variables starting with
/// `DIRSYNC_` whose next part names a section are read; others (`DIRSYNC_CONFIG`, ...) are not
/// configuration.
pub fn load_with_env(path: &Path, env: &[(String, String)]) -> Result<Config, ConfigError> {
    // figment's TOML provider treats a missing file as empty: check first, so that a wrong
    // --config path is an error and not a silent default.
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(ConfigError::one(path, "config", "not a regular file")),
        Err(e) => {
            return Err(ConfigError::one(
                path,
                "config",
                format!("cannot read: {e}"),
            ));
        }
    }
    if let Err(e) = std::fs::File::open(path) {
        return Err(ConfigError::one(
            path,
            "config",
            format!("cannot read: {e}"),
        ));
    }
    let mut origins = raw::EnvOrigins::new();
    let overlay = raw::env_overlay(env, &mut origins);
    let figment = Figment::new()
        .merge(Toml::file(path))
        .merge(Serialized::defaults(overlay));
    let mut value: serde_json::Value = figment.extract().map_err(|e| {
        let mut problems = Vec::new();
        for err in e {
            let key = if err.path.is_empty() {
                "config".to_string()
            } else {
                err.path.join(".")
            };
            problems.push(ConfigProblem {
                key,
                message: err.kind.to_string(),
            });
        }
        raw::name_env_vars(&mut problems, &origins);
        ConfigError {
            path: path.to_path_buf(),
            problems,
        }
    })?;
    let mut problems = Vec::new();
    raw::apply_target_env(&mut value, env, &mut problems, &mut origins);
    let raw = raw::parse(value, &mut problems);
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let credentials_dir = env
        .iter()
        .find(|(k, _)| k == crate::secret::CREDENTIALS_DIRECTORY)
        .map(|(_, v)| std::ffi::OsString::from(v));
    let config = raw
        .and_then(|raw| validate::validate(raw, path, &base_dir, credentials_dir, &mut problems));
    raw::name_env_vars(&mut problems, &origins);
    match config {
        Some(c) if problems.is_empty() => Ok(c),
        _ => Err(ConfigError {
            path: path.to_path_buf(),
            problems,
        }),
    }
}

#[cfg(test)]
mod tests;
