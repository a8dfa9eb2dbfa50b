//! `dirsync adopt`: correlates a target's existing accounts with source users and records the
//! matches as owned, so dirsync manages them from then on. Changes nothing on the target.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;
use tracing::info;

use crate::config::TargetConfig;
use crate::connector::{Connector, OpError, RemoteAccount};
use crate::mapping::content_hash;
use crate::model::{Snapshot, email_fold};
use crate::report::{Format, plural};
use crate::store::{AccountRecord, AccountState, RecordedAccount, Store, StoreError};

/// What remote accounts are matched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum MatchOn {
    /// The source user's email and the account's email (case-insensitive).
    Email,
    /// The target's login field as mapped (Covata email, Primavera loginId, Valuekeep userKey).
    Login,
}

#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("target {target:?}: listing accounts failed: {source}")]
    List {
        target: String,
        #[source]
        source: OpError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One account, as the report lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub key: Option<String>,
    pub remote_id: Option<String>,
    pub login: Option<String>,
    pub note: Option<String>,
}

/// The outcome of an adoption.
#[derive(Debug, Clone, Serialize)]
pub struct AdoptResult {
    pub target: String,
    pub dry_run: bool,
    pub matched_on: MatchOn,
    /// Newly recorded as owned (or, in a dry run, that would be).
    pub adopted: Vec<Entry>,
    /// Remote accounts dirsync already manages.
    pub already_owned: u64,
    /// Remote accounts no source user matches: left alone, not owned.
    pub unmatched_remote: Vec<Entry>,
    /// Source users in scope without an account: the next sync creates them.
    pub unmatched_source: Vec<Entry>,
    /// Matches that cannot be taken: several accounts for one user, or the user already has a
    /// managed account.
    pub conflicts: Vec<Entry>,
}

fn entry(remote: &RemoteAccount, key: Option<&str>, note: Option<String>) -> Entry {
    Entry {
        key: key.map(str::to_string),
        remote_id: Some(remote.remote_id.clone()),
        login: remote.login.clone().or_else(|| remote.email.clone()),
        note,
    }
}

/// Lists the target's accounts, matches them to the source users in the target's scope and, unless
/// `dry_run`, records the matches as owned (adopted) with the attributes the target has now, so
/// the next plan shows exactly the changes needed to bring them in line.
pub async fn adopt(
    store: &dyn Store,
    connector: &dyn Connector,
    target: &TargetConfig,
    snapshot: &Snapshot,
    match_on: MatchOn,
    dry_run: bool,
) -> Result<AdoptResult, AdoptError> {
    // Progress: the listing (its length is known once it is in), then the matching.
    let task = crate::progress::start(&target.name, crate::progress::Phase::Adopt, None, None);
    let remote = connector
        .list_accounts()
        .await
        .map_err(|source| AdoptError::List {
            target: target.name.clone(),
            source,
        })?;
    task.set_total(remote.len() as u64);
    let recorded = store.load_accounts(&target.name).await?;
    let by_key: HashMap<&str, &RecordedAccount> =
        recorded.iter().map(|r| (r.key.as_str(), r)).collect();
    let owned_remote: std::collections::HashSet<&str> = recorded
        .iter()
        .filter(|r| r.owned)
        .filter_map(|r| r.remote_id.as_deref())
        .collect();
    let (desired, _) = crate::mapping::map_all(&target.mapping, snapshot);
    let value_of = |key: &str| -> Option<String> {
        match match_on {
            MatchOn::Email => snapshot.get(key).map(|u| email_fold(&u.email)),
            MatchOn::Login => desired
                .binary_search_by(|a| a.key.as_str().cmp(key))
                .ok()
                .and_then(|i| desired[i].fields.get(&target.mapping.login_field))
                .map(|v| email_fold(v)),
        }
    };
    let mut index: HashMap<String, &str> = HashMap::new();
    for a in &desired {
        if let Some(v) = value_of(&a.key) {
            index.insert(v, a.key.as_str());
        }
    }
    // How many remote accounts carry each match value (two accounts for one user: ambiguous).
    let remote_value = |r: &RemoteAccount| -> Option<String> {
        match match_on {
            MatchOn::Email => r.email.as_deref().or(r.login.as_deref()).map(email_fold),
            MatchOn::Login => r.login.as_deref().map(email_fold),
        }
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in &remote {
        if let Some(v) = remote_value(r) {
            *seen.entry(v).or_default() += 1;
        }
    }
    let mut result = AdoptResult {
        target: target.name.clone(),
        dry_run,
        matched_on: match_on,
        adopted: Vec::new(),
        already_owned: 0,
        unmatched_remote: Vec::new(),
        unmatched_source: Vec::new(),
        conflicts: Vec::new(),
    };
    let mut records = Vec::new();
    let mut matched_keys = std::collections::HashSet::new();
    let field_names: Vec<&str> = target
        .mapping
        .fields
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    for r in &remote {
        task.advance(1);
        if owned_remote.contains(r.remote_id.as_str()) {
            result.already_owned += 1;
            continue;
        }
        let value = remote_value(r);
        let Some(key) = value.as_ref().and_then(|v| index.get(v)).copied() else {
            result.unmatched_remote.push(entry(r, None, None));
            continue;
        };
        if value
            .as_ref()
            .and_then(|v| seen.get(v))
            .copied()
            .unwrap_or(0)
            > 1
        {
            result.conflicts.push(entry(
                r,
                Some(key),
                Some("several accounts match this user; none adopted".into()),
            ));
            continue;
        }
        if let Some(rec) = by_key.get(key)
            && rec.owned
        {
            result.conflicts.push(entry(
                r,
                Some(key),
                Some(format!(
                    "the user already has a managed account ({})",
                    rec.remote_id.as_deref().unwrap_or("no remote id")
                )),
            ));
            continue;
        }
        matched_keys.insert(key);
        let fields = r
            .fields
            .iter()
            .filter(|(k, _)| field_names.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let state = AccountState {
            fields,
            roles: r.roles.clone(),
            groups: Default::default(),
        };
        records.push(AccountRecord {
            account: RecordedAccount {
                key: key.to_string(),
                remote_id: Some(r.remote_id.clone()),
                login: r.login.clone().or_else(|| r.email.clone()),
                hash: content_hash(&target.mapping, &state.fields, &state.roles, &state.groups),
                enabled: r.enabled,
                owned: true,
                adopted: true,
                disabled_at: None,
            },
            state,
            last_seen_run: None,
        });
        result.adopted.push(entry(r, Some(key), None));
    }
    for a in &desired {
        let managed = by_key.get(a.key.as_str()).is_some_and(|r| r.owned);
        if !managed && !matched_keys.contains(a.key.as_str()) && a.enabled {
            result.unmatched_source.push(Entry {
                key: Some(a.key.clone()),
                remote_id: None,
                login: a.login(&target.mapping).map(str::to_string),
                note: None,
            });
        }
    }
    if !dry_run && !records.is_empty() {
        store.upsert_accounts(&target.name, &records).await?;
    }
    info!(target = %target.name, adopted = result.adopted.len(), unmatched_remote = result.unmatched_remote.len(),
          unmatched_source = result.unmatched_source.len(), conflicts = result.conflicts.len(), dry_run, "adoption");
    Ok(result)
}

/// Renders an adoption report.
pub fn render(r: &AdoptResult, format: Format) -> String {
    if format == Format::Json {
        let v = serde_json::json!({
            "schema": "dirsync.adopt",
            "version": crate::report::SCHEMA_VERSION,
            "result": r,
        });
        return serde_json::to_string_pretty(&v).unwrap_or_default() + "\n";
    }
    let mut o = String::new();
    let verb = if r.dry_run { "would adopt" } else { "adopted" };
    let _ = writeln!(
        o,
        "target {}: {verb} {} (matched on {}); {} already managed; {} not matched (left alone, not owned); {} without an account; {}",
        r.target,
        plural(r.adopted.len() as u64, "account"),
        match r.matched_on {
            MatchOn::Email => "email",
            MatchOn::Login => "login",
        },
        r.already_owned,
        plural(r.unmatched_remote.len() as u64, "remote account"),
        plural(r.unmatched_source.len() as u64, "source user"),
        plural(r.conflicts.len() as u64, "conflict")
    );
    let line = |o: &mut String, mark: &str, e: &Entry| {
        let _ = writeln!(
            o,
            "  {mark} {}  {}  {}{}",
            e.key.as_deref().unwrap_or("-"),
            e.login.as_deref().unwrap_or("-"),
            e.remote_id.as_deref().unwrap_or("-"),
            e.note
                .as_deref()
                .map(|n| format!("  ({n})"))
                .unwrap_or_default()
        );
    };
    for e in &r.adopted {
        line(&mut o, "+", e);
    }
    for e in &r.conflicts {
        line(&mut o, "!", e);
    }
    for e in &r.unmatched_remote {
        line(&mut o, "?", e);
    }
    for e in &r.unmatched_source {
        line(&mut o, ">", e);
    }
    if r.dry_run {
        o.push_str("Dry run: nothing recorded.\n");
    }
    o
}
