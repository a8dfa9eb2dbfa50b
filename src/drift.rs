//! Drift: what changed on a target behind dirsync's back. `dirsync drift` lists each target's
//! accounts and compares them with what dirsync recorded (owned accounts changed by hand,
//! owned accounts deleted remotely, accounts dirsync does not own); it changes nothing.
//! `dirsync sync --refresh` plans against the target's actual state instead of the recorded
//! one ([`plan_refreshed`]), so hand changes to owned accounts are corrected back to the
//! source of truth.
//!
//! Only what the listing shows is compared: the mapping's fields the target reports (a field
//! the listing does not report is not compared), the roles, and the enabled flag. Emails
//! compare case-insensitively ([`TargetMapping::same_value`]). Target-side groups are not
//! listed by any connector and are not compared.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::info;

use crate::config::TargetConfig;
use crate::connector::{Connector, OpError, RemoteAccount, TargetKind};
use crate::mapping::{TargetMapping, content_hash};
use crate::model::Snapshot;
pub use crate::outcome::RefreshSummary;
use crate::plan::{DiffInput, Op, PlanSettings, TargetPlan, diff, triage};
use crate::report::Format;
use crate::store::{AccountRecord, AccountState, RecordedAccount, Store, StoreError};

/// The `schema` of the JSON form.
pub const SCHEMA: &str = "dirsync.drift";

#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error("target {target:?}: listing accounts failed: {source}")]
    List {
        target: String,
        #[source]
        source: OpError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A field whose value on the target differs from the recorded one (`None`: absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldDrift {
    pub field: String,
    pub recorded: Option<String>,
    pub remote: Option<String>,
}

/// The enabled flag, recorded and on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EnabledDrift {
    pub recorded: bool,
    pub remote: bool,
}

/// An owned account changed on the target by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangedAccount {
    pub key: String,
    pub remote_id: String,
    pub login: Option<String>,
    pub fields: Vec<FieldDrift>,
    /// Roles the account has on the target that dirsync did not record (added by hand).
    pub roles_added: Vec<String>,
    /// Roles dirsync recorded that the account no longer has (removed by hand).
    pub roles_removed: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<EnabledDrift>,
}

/// An owned account whose recorded remote id the target no longer lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeletedAccount {
    pub key: String,
    pub remote_id: String,
    pub login: Option<String>,
}

/// A remote account no owned row matches by remote id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnownedAccount {
    pub remote_id: String,
    pub login: Option<String>,
    pub enabled: bool,
    /// The key of a recorded but not owned row with this remote id (e.g. a create conflict).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded_key: Option<String>,
}

/// The drift of one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetDrift {
    pub name: String,
    pub kind: TargetKind,
    /// Accounts the target listed.
    pub remote_accounts: u64,
    /// Accounts dirsync owns on the target (recorded).
    pub owned: u64,
    pub changed: Vec<ChangedAccount>,
    pub deleted: Vec<DeletedAccount>,
    pub unowned: Vec<UnownedAccount>,
}

impl TargetDrift {
    pub fn has_drift(&self) -> bool {
        !(self.changed.is_empty() && self.deleted.is_empty() && self.unowned.is_empty())
    }
}

/// What `dirsync drift` reports.
#[derive(Debug, Clone, Serialize)]
pub struct DriftReport {
    pub generated_at: DateTime<Utc>,
    pub targets: Vec<TargetDrift>,
}

impl DriftReport {
    pub fn has_drift(&self) -> bool {
        self.targets.iter().any(TargetDrift::has_drift)
    }
}

fn login_of(remote: &RemoteAccount) -> Option<String> {
    remote.login.clone().or_else(|| remote.email.clone())
}

/// Compares one owned account's recorded state with what the target lists. `None`: no drift.
pub fn account_drift(
    mapping: &TargetMapping,
    recorded: &RecordedAccount,
    state: &AccountState,
    remote: &RemoteAccount,
) -> Option<ChangedAccount> {
    let mut fields = Vec::new();
    for f in &mapping.fields {
        // A field the listing does not report cannot be compared.
        let Some(r) = remote.fields.get(&f.name).filter(|v| !v.is_empty()) else {
            continue;
        };
        let rec = state.fields.get(&f.name);
        if !rec.is_some_and(|v| mapping.same_value(&f.name, v, r)) {
            fields.push(FieldDrift {
                field: f.name.clone(),
                recorded: rec.cloned(),
                remote: Some(r.clone()),
            });
        }
    }
    let roles_added: Vec<String> = remote.roles.difference(&state.roles).cloned().collect();
    let roles_removed: Vec<String> = state.roles.difference(&remote.roles).cloned().collect();
    let enabled = (recorded.enabled != remote.enabled).then_some(EnabledDrift {
        recorded: recorded.enabled,
        remote: remote.enabled,
    });
    if fields.is_empty() && roles_added.is_empty() && roles_removed.is_empty() && enabled.is_none()
    {
        return None;
    }
    Some(ChangedAccount {
        key: recorded.key.clone(),
        remote_id: remote.remote_id.clone(),
        login: login_of(remote).or_else(|| recorded.login.clone()),
        fields,
        roles_added,
        roles_removed,
        enabled,
    })
}

/// The recorded state with what the target has: the mapping's fields it reports, its roles;
/// groups as recorded.
pub fn remote_state(
    mapping: &TargetMapping,
    state: &AccountState,
    remote: &RemoteAccount,
) -> AccountState {
    let mut fields = state.fields.clone();
    for f in &mapping.fields {
        if let Some(v) = remote.fields.get(&f.name).filter(|v| !v.is_empty()) {
            fields.insert(f.name.clone(), v.clone());
        }
    }
    AccountState {
        fields,
        roles: remote.roles.clone(),
        groups: state.groups.clone(),
    }
}

/// Compares a target's listing with its recorded accounts (`states`: the applied attributes of
/// the owned ones). Pure.
pub fn compare(
    target: &TargetConfig,
    recorded: &[RecordedAccount],
    states: &HashMap<String, AccountState>,
    remote: &[RemoteAccount],
) -> TargetDrift {
    let by_remote: HashMap<&str, &RemoteAccount> =
        remote.iter().map(|r| (r.remote_id.as_str(), r)).collect();
    let empty = AccountState::default();
    let mut out = TargetDrift {
        name: target.name.clone(),
        kind: target.kind,
        remote_accounts: remote.len() as u64,
        owned: recorded.iter().filter(|r| r.owned).count() as u64,
        changed: Vec::new(),
        deleted: Vec::new(),
        unowned: Vec::new(),
    };
    let mut owned_ids = HashSet::new();
    let mut other_ids: HashMap<&str, &str> = HashMap::new();
    for r in recorded {
        let Some(rid) = r.remote_id.as_deref() else {
            continue;
        };
        if !r.owned {
            other_ids.insert(rid, r.key.as_str());
            continue;
        }
        owned_ids.insert(rid);
        match by_remote.get(rid) {
            Some(ra) => {
                let st = states.get(&r.key).unwrap_or(&empty);
                if let Some(c) = account_drift(&target.mapping, r, st, ra) {
                    out.changed.push(c);
                }
            }
            None => out.deleted.push(DeletedAccount {
                key: r.key.clone(),
                remote_id: rid.to_string(),
                login: r.login.clone(),
            }),
        }
    }
    for ra in remote {
        if !owned_ids.contains(ra.remote_id.as_str()) {
            out.unowned.push(UnownedAccount {
                remote_id: ra.remote_id.clone(),
                login: login_of(ra),
                enabled: ra.enabled,
                recorded_key: other_ids.get(ra.remote_id.as_str()).map(|k| k.to_string()),
            });
        }
    }
    out.unowned
        .sort_by(|a, b| (&a.login, &a.remote_id).cmp(&(&b.login, &b.remote_id)));
    out
}

async fn list(
    connector: &dyn Connector,
    target: &TargetConfig,
) -> Result<Vec<RemoteAccount>, DriftError> {
    connector
        .list_accounts()
        .await
        .map_err(|source| DriftError::List {
            target: target.name.clone(),
            source,
        })
}

/// Recorded accounts of a target and the applied attributes of the owned ones.
async fn load(
    store: &dyn Store,
    target: &TargetConfig,
) -> Result<(Vec<RecordedAccount>, HashMap<String, AccountState>), DriftError> {
    let recorded = store.load_accounts(&target.name).await?;
    let owned: Vec<String> = recorded
        .iter()
        .filter(|r| r.owned)
        .map(|r| r.key.clone())
        .collect();
    let states = if owned.is_empty() {
        HashMap::new()
    } else {
        store
            .load_account_records(&target.name, &owned)
            .await?
            .into_iter()
            .map(|r: AccountRecord| (r.account.key, r.state))
            .collect()
    };
    Ok((recorded, states))
}

/// `dirsync drift` for one target: lists its accounts and compares them with the store.
/// Reads only (GET requests, store reads).
pub async fn detect(
    store: &dyn Store,
    connector: &dyn Connector,
    target: &TargetConfig,
) -> Result<TargetDrift, DriftError> {
    let remote = list(connector, target).await?;
    let (recorded, states) = load(store, target).await?;
    let d = compare(target, &recorded, &states, &remote);
    info!(target = %target.name, remote = d.remote_accounts, changed = d.changed.len(),
          deleted = d.deleted.len(), unowned = d.unowned.len(), "drift checked");
    Ok(d)
}

/// Removes the operations of these keys from a plan (and from its counts).
fn drop_ops(plan: &mut TargetPlan, keys: &BTreeSet<String>) {
    if keys.is_empty() {
        return;
    }
    let s = &mut plan.summary;
    plan.ops.retain(|o| {
        if !keys.contains(&o.key) {
            return true;
        }
        let n = match o.op {
            Op::Create { .. } => &mut s.create,
            Op::Update { .. } => &mut s.update,
            Op::SetRoles { .. } => &mut s.set_roles,
            Op::SetGroups { .. } => &mut s.set_groups,
            Op::Enable => &mut s.enable,
            Op::Disable { .. } => &mut s.disable,
            Op::Delete { .. } => &mut s.delete,
        };
        *n = n.saturating_sub(1);
        false
    });
}

/// The recorded accounts as the target has them: every owned account that drifted gets the
/// target's fields, roles and enabled flag (and a recomputed hash). Returns the refreshed
/// rows, the refreshed states, and the summary (without `corrected_drift` and `recreated`).
pub fn refresh(
    target: &TargetConfig,
    mut recorded: Vec<RecordedAccount>,
    states: &HashMap<String, AccountState>,
    remote: &[RemoteAccount],
) -> (
    Vec<RecordedAccount>,
    HashMap<String, AccountState>,
    RefreshSummary,
) {
    let drift = compare(target, &recorded, states, remote);
    let by_remote: HashMap<&str, &RemoteAccount> =
        remote.iter().map(|r| (r.remote_id.as_str(), r)).collect();
    let drifted: HashSet<&str> = drift.changed.iter().map(|c| c.key.as_str()).collect();
    let empty = AccountState::default();
    let mut refreshed = HashMap::new();
    for r in recorded.iter_mut() {
        if !r.owned || !drifted.contains(r.key.as_str()) {
            continue;
        }
        let Some(ra) = r.remote_id.as_deref().and_then(|id| by_remote.get(id)) else {
            continue;
        };
        let st = remote_state(&target.mapping, states.get(&r.key).unwrap_or(&empty), ra);
        r.hash = content_hash(&target.mapping, &st.fields, &st.roles, &st.groups);
        r.enabled = ra.enabled;
        refreshed.insert(r.key.clone(), st);
    }
    let summary = RefreshSummary {
        remote_accounts: drift.remote_accounts,
        drifted: drift.changed.iter().map(|c| c.key.clone()).collect(),
        corrected_drift: 0,
        deleted_remotely: drift.deleted.iter().map(|d| d.key.clone()).collect(),
        recreated: Vec::new(),
        unowned: drift.unowned.len() as u64,
    };
    (recorded, refreshed, summary)
}

/// `sync --refresh`: plans one target against what the target has instead of what was
/// recorded (in memory only; the store is not written here). Owned accounts deleted remotely
/// are planned for re-creation when the target has `recreate_deleted = true`, else left out of
/// the plan (reported in the summary).
pub async fn plan_refreshed(
    store: &dyn Store,
    connector: &dyn Connector,
    target: &TargetConfig,
    snapshot: &Snapshot,
    now: DateTime<Utc>,
) -> Result<(TargetPlan, RefreshSummary), DriftError> {
    let remote = list(connector, target).await?;
    let (recorded, states) = load(store, target).await?;
    let (mut recorded, refreshed, mut summary) = refresh(target, recorded, &states, &remote);
    let deleted: BTreeSet<String> = summary.deleted_remotely.iter().cloned().collect();
    if target.recreate_deleted {
        // Without its row, the user is planned like a new one (created if enabled).
        recorded.retain(|r| !deleted.contains(&r.key));
    }
    let users = snapshot.users();
    let tri = triage(&target.mapping, users, &recorded);
    let mut plan_states: HashMap<String, AccountState> = HashMap::new();
    for k in &tri.need_state {
        if let Some(st) = refreshed.get(k).or_else(|| states.get(k)) {
            plan_states.insert(k.clone(), st.clone());
        }
    }
    let settings = PlanSettings {
        on_missing: target.on_missing,
        delete_after: target.delete_after,
        now,
    };
    let mut plan = diff(
        DiffInput {
            mapping: &target.mapping,
            users,
            recorded: &recorded,
            triage: &tri,
            states: &plan_states,
            settled: None,
            quarantined: snapshot.quarantined_keys(),
        },
        &settings,
    );
    if target.recreate_deleted {
        summary.recreated = plan
            .ops
            .iter()
            .filter(|o| matches!(o.op, Op::Create { .. }) && deleted.contains(&o.key))
            .map(|o| o.key.clone())
            .collect();
        // The base of the safety percentages stays the accounts owned before the run.
        plan.owned += deleted.len() as u64;
    } else {
        drop_ops(&mut plan, &deleted);
    }
    let drifted: HashSet<&str> = summary.drifted.iter().map(String::as_str).collect();
    summary.corrected_drift = plan
        .ops
        .iter()
        .filter(|o| drifted.contains(o.key.as_str()))
        .count() as u64;
    info!(target = %target.name, drifted = summary.drifted.len(), corrections = summary.corrected_drift,
          deleted_remotely = summary.deleted_remotely.len(), recreated = summary.recreated.len(),
          unowned = summary.unowned, "refreshed from the target");
    Ok((plan, summary))
}

fn opt(v: &Option<String>) -> String {
    match v {
        Some(v) => format!("{v:?}"),
        None => "(none)".into(),
    }
}

fn changed_lines(c: &ChangedAccount) -> Vec<String> {
    let mut v = Vec::new();
    for f in &c.fields {
        v.push(format!(
            "{}: {} -> {}",
            f.field,
            opt(&f.recorded),
            opt(&f.remote)
        ));
    }
    if !c.roles_added.is_empty() {
        v.push(format!("roles added: {}", c.roles_added.join(", ")));
    }
    if !c.roles_removed.is_empty() {
        v.push(format!("roles removed: {}", c.roles_removed.join(", ")));
    }
    if let Some(e) = c.enabled {
        let word = |b: bool| if b { "enabled" } else { "disabled" };
        v.push(format!("{} -> {}", word(e.recorded), word(e.remote)));
    }
    v
}

fn headline(t: &TargetDrift) -> String {
    format!(
        "target {} ({}): {}, {} owned; {} changed by hand, {} deleted remotely, {} not owned by dirsync",
        t.name,
        t.kind.as_str(),
        crate::report::plural(t.remote_accounts, "remote account"),
        t.owned,
        t.changed.len(),
        t.deleted.len(),
        t.unowned.len()
    )
}

/// Renders a drift report.
pub fn render(r: &DriftReport, format: Format) -> String {
    match format {
        Format::Json => {
            let v = serde_json::json!({
                "schema": SCHEMA,
                "version": crate::report::SCHEMA_VERSION,
                "generated_at": r.generated_at,
                "drift": r.has_drift(),
                "targets": r.targets,
            });
            serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
        }
        Format::Text => render_text(r),
        Format::Markdown => render_markdown(r),
    }
}

fn render_text(r: &DriftReport) -> String {
    let mut o = String::new();
    for t in &r.targets {
        let _ = writeln!(o, "{}", headline(t));
        for c in &t.changed {
            let _ = writeln!(
                o,
                "  ~ {}  {}  {}  (changed by hand)",
                c.key,
                c.login.as_deref().unwrap_or("-"),
                c.remote_id
            );
            for l in changed_lines(c) {
                let _ = writeln!(o, "      {l}");
            }
        }
        for d in &t.deleted {
            let _ = writeln!(
                o,
                "  - {}  {}  {}  (deleted on the target)",
                d.key,
                d.login.as_deref().unwrap_or("-"),
                d.remote_id
            );
        }
        for u in &t.unowned {
            let _ = writeln!(
                o,
                "  ? {}  {}  {}  (not managed by dirsync{})",
                u.recorded_key.as_deref().unwrap_or("-"),
                u.login.as_deref().unwrap_or("-"),
                u.remote_id,
                if u.enabled { "" } else { ", disabled" }
            );
        }
    }
    o.push_str(if r.has_drift() {
        "Drift found. `dirsync sync --refresh` corrects owned accounts changed by hand; `dirsync adopt` takes over accounts dirsync does not own.\n"
    } else {
        "No drift.\n"
    });
    o
}

fn md(s: &str) -> String {
    s.replace('|', "\\|")
}

fn render_markdown(r: &DriftReport) -> String {
    let mut o = String::from("# dirsync drift\n\n");
    for t in &r.targets {
        let _ = writeln!(o, "## Target `{}` ({})\n", t.name, t.kind.as_str());
        let _ = writeln!(
            o,
            "{}, {} owned: **{}** changed by hand, **{}** deleted remotely, **{}** not owned by dirsync.\n",
            crate::report::plural(t.remote_accounts, "remote account"),
            t.owned,
            t.changed.len(),
            t.deleted.len(),
            t.unowned.len()
        );
        if !t.has_drift() {
            continue;
        }
        o.push_str("| | Key | Login | Remote id | Details |\n|---|---|---|---|---|\n");
        for c in &t.changed {
            let _ = writeln!(
                o,
                "| changed | {} | {} | {} | {} |",
                md(&c.key),
                md(c.login.as_deref().unwrap_or("")),
                md(&c.remote_id),
                md(&changed_lines(c).join("; "))
            );
        }
        for d in &t.deleted {
            let _ = writeln!(
                o,
                "| deleted | {} | {} | {} | deleted on the target |",
                md(&d.key),
                md(d.login.as_deref().unwrap_or("")),
                md(&d.remote_id)
            );
        }
        for u in &t.unowned {
            let _ = writeln!(
                o,
                "| not owned | {} | {} | {} | {} |",
                md(u.recorded_key.as_deref().unwrap_or("")),
                md(u.login.as_deref().unwrap_or("")),
                md(&u.remote_id),
                if u.enabled { "enabled" } else { "disabled" }
            );
        }
        o.push('\n');
    }
    o.push_str(if r.has_drift() {
        "Drift found.\n"
    } else {
        "No drift.\n"
    });
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{FieldKind, FieldMapping, Template, UserFilter};
    use std::collections::BTreeMap;

    fn target() -> TargetConfig {
        let f = |name: &str, kind, tpl: &str| FieldMapping {
            name: name.into(),
            kind,
            required: false,
            template: Template::parse(tpl).unwrap(),
        };
        let mapping = TargetMapping {
            group_rules: vec![],
            default_groups: vec![],
            fields: vec![
                f("email", FieldKind::Email, "{email}"),
                f("lastName", FieldKind::Text, "{family_name}"),
            ],
            role_rules: vec![],
            default_roles: vec!["USER".into()],
            filter: UserFilter::default(),
            login_field: "email".into(),
        };
        TargetConfig {
            name: "cov".into(),
            kind: TargetKind::Covata,
            enabled: true,
            base_url: url::Url::parse("https://covata.example/").unwrap(),
            mapping,
            on_missing: Default::default(),
            delete_after: std::time::Duration::ZERO,
            http: Default::default(),
            batch_size: 250,
            recreate_deleted: false,
            vendor: crate::connector::VendorSettings::Covata(
                crate::connector::covata::settings::CovataSettings {
                    username: "svc".into(),
                    password: crate::secret::SecretRef::inline("target[0].password", "pw"),
                    client_id: "cid".into(),
                    client_secret: crate::secret::SecretRef::inline(
                        "target[0].client_secret",
                        "cs",
                    ),
                    expire_sessions_on_disable: true,
                    bulk_import_min: None,
                    import_batch_size: 1000,
                },
            ),
        }
    }

    fn rec(key: &str, rid: &str, owned: bool) -> RecordedAccount {
        RecordedAccount {
            key: key.into(),
            remote_id: Some(rid.into()),
            login: Some(format!("{key}@x.com")),
            hash: Default::default(),
            enabled: true,
            owned,
            adopted: false,
            disabled_at: None,
        }
    }

    fn state(email: &str, last: &str, roles: &[&str]) -> AccountState {
        AccountState {
            fields: [
                ("email".to_string(), email.to_string()),
                ("lastName".to_string(), last.to_string()),
            ]
            .into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            groups: BTreeSet::new(),
        }
    }

    fn remote(rid: &str, st: &AccountState, enabled: bool) -> RemoteAccount {
        let mut fields: BTreeMap<String, String> = st.fields.clone();
        fields.insert("notMapped".into(), "x".into());
        RemoteAccount {
            remote_id: rid.into(),
            login: st.fields.get("email").cloned(),
            email: st.fields.get("email").cloned(),
            fields,
            roles: st.roles.clone(),
            enabled,
        }
    }

    #[test]
    fn compare_finds_the_three_kinds_and_ignores_email_case() {
        let t = target();
        let recorded = vec![
            rec("a", "1", true),
            rec("b", "2", true),
            rec("c", "3", true),
            rec("d", "4", false),
        ];
        let states: HashMap<String, AccountState> = [
            ("a".to_string(), state("a@x.com", "A", &["USER"])),
            ("b".to_string(), state("b@x.com", "B", &["USER", "ADMIN"])),
            ("c".to_string(), state("c@x.com", "C", &["USER"])),
        ]
        .into();
        let remote = vec![
            // Same, but the email in another case: no drift.
            remote("1", &state("A@X.COM", "A", &["USER"]), true),
            // Hand edits: last name, a role removed, disabled.
            remote("2", &state("b@x.com", "Edited", &["USER"]), false),
            // "3" is gone; "4" is recorded but not owned; "5" is unknown.
            remote("4", &state("d@x.com", "D", &[]), true),
            remote("5", &state("e@x.com", "E", &[]), true),
        ];
        let d = compare(&t, &recorded, &states, &remote);
        assert_eq!(d.changed.len(), 1, "{d:?}");
        let c = &d.changed[0];
        assert_eq!(c.key, "b");
        assert_eq!(
            c.fields,
            vec![FieldDrift {
                field: "lastName".into(),
                recorded: Some("B".into()),
                remote: Some("Edited".into())
            }]
        );
        assert_eq!(c.roles_removed, vec!["ADMIN".to_string()]);
        assert!(c.roles_added.is_empty());
        assert_eq!(
            c.enabled,
            Some(EnabledDrift {
                recorded: true,
                remote: false
            })
        );
        assert_eq!(d.deleted.len(), 1);
        assert_eq!(d.deleted[0].key, "c");
        let unowned: Vec<_> = d
            .unowned
            .iter()
            .map(|u| (u.remote_id.as_str(), u.recorded_key.as_deref()))
            .collect();
        assert_eq!(unowned, vec![("4", Some("d")), ("5", None)]);
        assert!(d.has_drift());
        let text = render(
            &DriftReport {
                generated_at: Utc::now(),
                targets: vec![d.clone()],
            },
            Format::Text,
        );
        assert!(text.contains("lastName: \"B\" -> \"Edited\""), "{text}");
        assert!(text.contains("roles removed: ADMIN"), "{text}");
    }

    #[test]
    fn refresh_replaces_drifted_state_and_rehashes() {
        let t = target();
        let st = state("b@x.com", "B", &["USER", "ADMIN"]);
        let mut r = rec("b", "2", true);
        r.hash = content_hash(&t.mapping, &st.fields, &st.roles, &st.groups);
        let states: HashMap<String, AccountState> = [("b".to_string(), st.clone())].into();
        let hand = state("b@x.com", "Edited", &["USER"]);
        let (rows, refreshed, summary) =
            refresh(&t, vec![r.clone()], &states, &[remote("2", &hand, true)]);
        assert_eq!(summary.drifted, vec!["b".to_string()]);
        assert_eq!(refreshed["b"].fields, hand.fields);
        assert_eq!(refreshed["b"].roles, hand.roles);
        assert_eq!(
            rows[0].hash,
            content_hash(&t.mapping, &hand.fields, &hand.roles, &hand.groups)
        );
        // Nothing changed by hand: the rows stay as recorded.
        let (rows, refreshed, summary) =
            refresh(&t, vec![r.clone()], &states, &[remote("2", &st, true)]);
        assert_eq!(rows, vec![r]);
        assert!(refreshed.is_empty() && summary.drifted.is_empty());
    }
}
