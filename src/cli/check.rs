//! `dirsync check`: the configuration, the schedule's next run times and, without
//! `--offline`, the state store, the source and each enabled target.

use crate::config::{self, Config};
use crate::run;
use crate::store;

use super::EXIT_ERROR;
use super::session;

fn describe_location(loc: &store::StoreLocation) -> String {
    loc.describe()
}

pub(super) async fn check(config: &Config, offline: bool) -> u8 {
    outln!("configuration {}: OK", config.path.display());
    outln!("  state:  {}", describe_location(&config.state.location));
    let state_dir_ok = check_state_dir(config);
    match &config.source {
        config::SourceConfig::Csv(c) => outln!("  source: csv {}", c.path.display()),
        config::SourceConfig::Ldap(l) => outln!(
            "  source: ldap {} base {:?} filter {:?}",
            l.url,
            l.base_dn,
            l.filter
        ),
    }
    for t in &config.targets {
        outln!(
            "  target: {} ({}) {}{}",
            t.name,
            t.kind.as_str(),
            t.base_url,
            if t.enabled { "" } else { " [disabled]" }
        );
    }
    print_schedule(&config.schedule, chrono::Utc::now());
    if offline {
        return if state_dir_ok { 0 } else { EXIT_ERROR };
    }
    let mut failed = !state_dir_ok;
    match session::open_store(config, config.state.auto_migrate).await {
        Ok(_) => outln!("state store: OK"),
        Err(e) => {
            outln!("state store: FAILED: {e}");
            failed = true;
        }
    }
    if let config::SourceConfig::Ldap(l) = &config.source {
        failed |= !check_ldap(l).await;
    } else {
        match run::read_source(&config.source).await {
            Ok(s) if s.quarantined().is_empty() => {
                outln!(
                    "source: OK, {}",
                    crate::report::plural(s.len() as u64, "user")
                )
            }
            Ok(s) => {
                outln!(
                    "source: OK, {}, {} quarantined (a sync leaves their accounts as they are):",
                    crate::report::plural(s.users().len() as u64, "user"),
                    crate::report::plural(s.quarantined().len() as u64, "record")
                );
                for q in s.quarantined() {
                    outln!(
                        "  ? quarantined {} {}: {} (value {})",
                        q.location.escape_debug(),
                        q.field.escape_debug(),
                        q.problem.escape_debug(),
                        q.value
                    );
                }
            }
            Err(e) => {
                outln!("source: FAILED: {e}");
                failed = true;
            }
        }
    }
    for t in config.targets.iter().filter(|t| t.enabled) {
        failed |= !check_target(t).await;
    }
    if failed { EXIT_ERROR } else { 0 }
}

/// The `[schedule]` lines of `check`: the schedule in words and the next three run times of
/// `dirsync run` (RFC 3339, UTC), from the same function the daemon uses.
fn print_schedule(schedule: &crate::schedule::ScheduleConfig, now: chrono::DateTime<chrono::Utc>) {
    outln!(
        "  schedule: {}{}",
        crate::schedule::describe(schedule),
        if schedule.run_on_start {
            "; the service also runs once at start (run_on_start)"
        } else {
            ""
        }
    );
    let next = crate::schedule::upcoming(schedule, now, 3);
    let times: Vec<String> = next
        .iter()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .collect();
    let from = if schedule.cron.is_some() {
        ""
    } else {
        " (counted from now)"
    };
    outln!("  next runs{from}: {}", times.join(", "));
}

/// `check`: the SQLite state file's directory must exist (it is never created: a missing
/// directory means the path points somewhere the service does not use). False if missing.
fn check_state_dir(config: &Config) -> bool {
    let store::StoreLocation::Sqlite { path } = &config.state.location else {
        return true;
    };
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => {
            outln!(
                "state: FAILED: state.path {}: directory {} does not exist (create it, or set \
                 [state] path; the service's StateDirectory= creates /var/lib/dirsync)",
                path.display(),
                dir.display()
            );
            false
        }
        _ => true,
    }
}

/// `check` of a target: authenticates and reads once; validates role names where the target
/// lists its roles. False when a sync would fail.
async fn check_target(t: &crate::config::TargetConfig) -> bool {
    let connector = match session::connect(t) {
        Ok(c) => c,
        Err(e) => {
            outln!("target {}: FAILED: {e}", t.name);
            return false;
        }
    };
    if let Err(e) = connector.probe().await {
        outln!("target {}: FAILED: {e}", t.name);
        return false;
    }
    match connector.describe().await {
        Ok(Some(line)) => outln!("target {}: {line}", t.name),
        Ok(None) => {}
        Err(e) => {
            outln!("target {}: FAILED: {e}", t.name);
            return false;
        }
    }
    let mut roles: Vec<String> = t.mapping.default_roles.clone();
    for r in &t.mapping.role_rules {
        roles.extend(r.roles.iter().cloned());
    }
    roles.sort();
    roles.dedup();
    match connector.unknown_roles(&roles).await {
        Ok(Some(unknown)) if !unknown.is_empty() => {
            outln!(
                "target {}: FAILED: roles unknown to the target: {}",
                t.name,
                unknown.join(", ")
            );
            false
        }
        Ok(Some(_)) => {
            outln!(
                "target {}: OK (reachable, credentials accepted, {} role names known)",
                t.name,
                roles.len()
            );
            true
        }
        Ok(None) => {
            outln!("target {}: OK (reachable, credentials accepted)", t.name);
            true
        }
        Err(e) => {
            outln!("target {}: FAILED: listing roles: {e}", t.name);
            false
        }
    }
}

/// `check` of an LDAP source: binds, runs the whole search and reports what it found.
/// False when a sync would fail (the search itself); entries with problems are listed (a sync
/// quarantines them).
async fn check_ldap(l: &crate::source::ldap::LdapSettings) -> bool {
    let c = match crate::source::ldap::check(l).await {
        Ok(c) => c,
        Err(e) => {
            outln!("source: FAILED: {e}");
            return false;
        }
    };
    outln!(
        "source: bind and search OK ({} ms): {} entries found, {} users ({} disabled, {} without groups)",
        c.elapsed.as_millis(),
        c.entries,
        c.users,
        c.disabled,
        c.without_groups
    );
    let list = |what: &str, dns: &[String]| {
        if dns.is_empty() {
            return;
        }
        outln!("  {} entries {what}:", dns.len());
        for dn in dns.iter().take(20) {
            outln!("    {dn:?}");
        }
        if dns.len() > 20 {
            outln!("    ... and {} more", dns.len() - 20);
        }
    };
    list(
        &format!("lacking the key attribute {:?}", l.attributes.key),
        &c.without_key,
    );
    let skip = l.missing_email == crate::source::ldap::MissingEmail::Skip;
    list(
        &format!(
            "lacking an email ({}){}",
            l.attributes.email.join(" / "),
            if skip { ", skipped" } else { "" }
        ),
        &c.without_email,
    );
    let other: Vec<_> = c
        .problems
        .iter()
        .filter(|p| p.dn.as_ref().is_none_or(|dn| !c.without_key.contains(dn)))
        .collect();
    if !other.is_empty() {
        outln!("  {} other problems:", other.len());
        for p in other.iter().take(50) {
            outln!("    {p}");
        }
    }
    if !c.problems.is_empty() || !(skip || c.without_email.is_empty()) {
        // Problems of entries: a sync quarantines those entries (problems of the read as a
        // whole are the error above).
        outln!(
            "source: OK; a sync quarantines the entries above (their accounts are left as they are)"
        );
    }
    true
}
