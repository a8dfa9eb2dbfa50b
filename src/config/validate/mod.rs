//! Raw → validated configuration. Every check pushes a problem with its key path and goes on,
//! so one `dirsync check` shows everything that is wrong. This file: the whole config, `[state]`,
//! `[safety]`, `[schedule]` and the shared helpers; one file per larger section.

mod notify;
mod source;
mod target;

use notify::notify_entry;
use source::{csv_source, ldap_source, source_timeout};
use target::target;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{RawConfig, RawCsv, RawLdap, RawSafety, RawSchedule, RawState, RawTarget};
use super::{
    Config, ConfigProblem, DaemonConfig, HttpListenConfig, HttpSettings, ScheduleConfig,
    SourceConfig, StateConfig, TargetConfig,
};
use crate::connector::TargetKind;
use crate::connector::settings::{
    self, ProblemSink, VendorContext, VendorSettings, http_url, refuse_clear_text,
};
use crate::mapping::{FieldMapping, RoleRule, TargetMapping, Template, UserFilter};
use crate::plan::{OnMissing, SafetySettings};
use crate::problems::{resolve, secret_ref};
use crate::secret::Secret;
use crate::source::csv::{CsvColumns, CsvSettings};
use crate::store::StoreLocation;

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

impl ProblemSink for Problems<'_> {
    fn push(&mut self, key: String, message: String) {
        Problems::push(self, key, message);
    }
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
    settings::duration(v, key, pr)
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
    let keep_runs = match raw.keep_runs.as_deref() {
        None => DEFAULT_KEEP_RUNS,
        Some(v) => parse_keep_runs(v).unwrap_or_else(|message| {
            pr.push("state.keep_runs", message);
            DEFAULT_KEEP_RUNS
        }),
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
        keep_runs,
    })
}

/// `[state] keep_runs` when unset: 90 days.
pub const DEFAULT_KEEP_RUNS: Duration = Duration::from_secs(90 * 24 * 3600);

/// A run retention (`state.keep_runs`, `dirsync prune --keep`): a duration of at least one
/// day. The error names neither key (the caller does).
pub fn parse_keep_runs(v: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(v.trim())
        .map_err(|e| format!("invalid duration {v:?}: {e} (examples: 90d, 30d, 1d)"))?;
    if d < Duration::from_secs(24 * 3600) {
        return Err(format!(
            "{v:?} is less than 1 day (runs are kept at least a day; e.g. 90d)"
        ));
    }
    Ok(d)
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
