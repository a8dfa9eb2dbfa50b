//! Report snapshots: a plan made by the real planner (a create with its fields, a user
//! disabled in the source, one out of scope, one quarantined) rendered as text, Markdown and
//! JSON, compared whole.

use std::collections::HashMap;

use chrono::TimeZone;

use super::*;
use crate::connector::TargetKind;
use crate::mapping::{FieldKind, FieldMapping, RoleRule, TargetMapping, Template, UserFilter};
use crate::model::{Quarantined, User};
use crate::outcome::SourceSummary;
use crate::plan::{DiffInput, OnMissing, PlanSettings, diff, triage};
use crate::store::Trigger;

fn mapping() -> TargetMapping {
    let f = |name: &str, kind, tpl: &str| FieldMapping {
        name: name.into(),
        kind,
        required: false,
        template: Template::parse(tpl).unwrap(),
    };
    TargetMapping {
        fields: vec![
            f("email", FieldKind::Email, "{email}"),
            f("firstName", FieldKind::Text, "{given_name}"),
        ],
        role_rules: vec![RoleRule {
            group: "admins".into(),
            roles: vec!["ADMIN".into()],
        }],
        default_roles: vec!["USER".into()],
        group_rules: vec![],
        default_groups: vec![],
        filter: UserFilter {
            include_groups: vec![],
            exclude_groups: vec!["contractors".into()],
        },
        login_field: "email".into(),
    }
}

fn user(key: &str, given: &str, groups: &[&str], enabled: bool) -> User {
    let mut u = User::new(key, format!("{}@example.com", given.to_lowercase()));
    u.given_name = Some(given.into());
    u.groups = groups.iter().map(|g| g.to_string()).collect();
    u.enabled = enabled;
    u.normalized()
}

/// One create (Ada), one disabled in the source (Bob), one out of scope (Cy), one
/// quarantined (E9).
fn plan(dry_run: bool) -> RunPlan {
    let m = mapping();
    let users = vec![
        user("E1", "Ada", &["admins"], true),
        user("E2", "Bob", &["staff"], false),
        user("E3", "Cy", &["staff", "contractors"], true),
        user("E9", "Eve", &["staff"], true),
    ];
    let quarantined = vec!["E9".to_string()];
    let t = triage(&m, &users, &[]);
    let states = HashMap::new();
    let target_plan = diff(
        DiffInput {
            mapping: &m,
            users: &users,
            recorded: &[],
            triage: &t,
            states: &states,
            settled: None,
            quarantined: &quarantined,
        },
        &PlanSettings {
            on_missing: OnMissing::Disable,
            delete_after: std::time::Duration::from_secs(86_400),
            now: chrono::Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap(),
        },
    );
    RunPlan {
        run_id: 7,
        trigger: if dry_run {
            Trigger::DryRun
        } else {
            Trigger::Manual
        },
        dry_run,
        forced: false,
        generated_at: chrono::Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap(),
        store: "sqlite /var/lib/dirsync/dirsync.db".into(),
        source: SourceSummary {
            kind: "csv",
            users: 4,
            last_applied_users: Some(1),
            blocked_by: vec![],
            quarantined: vec![Quarantined::new(
                Some("E9"),
                "users.csv:5",
                "email",
                "not an email address",
                "eve@",
            )],
        },
        targets: vec![TargetOutcome {
            name: "covata-prod".into(),
            kind: TargetKind::Covata,
            verdict: crate::plan::Verdict::Allowed,
            plan: target_plan,
            recovered: None,
            applied: None,
            estimate: None,
            skipped: None,
            refresh: None,
            error: None,
            existing_unchecked: None,
        }],
    }
}

#[test]
fn text_report_lists_skipped_users_with_reasons() {
    let got = render(&plan(true), Format::Text, true);
    let want = "\
dirsync plan (dry run) — run 7, source csv: 4 users (the last run that applied changes read 1)
state store: sqlite /var/lib/dirsync/dirsync.db
1 source record quarantined: their accounts are left as they are on every target until the record is fixed
  ? quarantined users.csv:5 key E9 email: not an email address (value \"eve@\")

target covata-prod (covata): allowed
  1 create, 0 updates, 0 role changes, 0 enables, 0 disables, 0 deletes; 0 unchanged, 0 not owned, 1 skipped, 1 outside the target's scope
  + create   E1 (ada@example.com)  roles [ADMIN]
      email: ada@example.com
      firstName: Ada
  - skipped  E2  (disabled in the source)
  - skipped  E9  (quarantined)
  - skipped  E3  (scope: excluded group contractors)

1 change pending.
";
    assert_eq!(got, want, "got:\n{got}");
}

#[test]
fn markdown_report_carries_create_fields_and_skipped_users() {
    let got = render(&plan(true), Format::Markdown, true);
    let want = "\
# dirsync plan (dry run) — run 7

Source **csv**: 4 users (the last run that applied changes read 1).

State store: `sqlite /var/lib/dirsync/dirsync.db`.

**1 source record quarantined**: their accounts are left as they are on every target until the record is fixed.

- ? quarantined users.csv:5 (key E9), email: not an email address (value \"eve@\")

## covata-prod (covata)

**allowed**

| create | update | roles | groups | enable | disable | delete | unchanged | not owned | skipped | outside scope |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| 1 | 0 | 0 | 0 | 0 | 0 | 0 | 0 | 0 | 1 | 1 |

| op | key | account | details |
|---|---|---|---|
| create | E1 | ada@example.com | roles: ADMIN<br>email: ada@example.com<br>firstName: Ada |

Skipped (3 users):

- disabled in the source: E2
- quarantined: E9
- scope: excluded group contractors: E3

";
    assert_eq!(got, want, "got:\n{got}");
}

#[test]
fn json_report_carries_skipped_users_and_the_scope_count() {
    let got: serde_json::Value =
        serde_json::from_str(&render(&plan(true), Format::Json, true)).unwrap();
    let t = &got["targets"][0];
    assert_eq!(t["summary"]["out_of_scope"], 1);
    assert_eq!(t["summary"]["skipped"], 1);
    assert_eq!(
        t["skipped_users"],
        serde_json::json!([
            { "key": "E2", "reason": "source_disabled" },
            { "key": "E3", "reason": "scope",
              "scope": { "rule": "excluded_group", "group": "contractors" } },
            { "key": "E9", "reason": "quarantined" },
        ])
    );
    assert_eq!(got["source"]["last_applied_users"], 1);
    // Additive: the version stays.
    assert_eq!(got["version"], 1);
}

#[test]
fn plurals_in_the_closing_line() {
    let mut p = plan(true);
    p.targets[0].plan.summary.create = 2;
    let got = render(&p, Format::Text, true);
    assert!(got.ends_with("2 changes pending.\n"), "{got}");
    p.targets[0].plan.summary.create = 0;
    p.targets[0].plan.ops.clear();
    let got = render(&p, Format::Text, true);
    assert!(got.contains("0 creates, 0 updates"), "{got}");
}

#[test]
fn skipped_users_beyond_the_shown_count_are_counted() {
    let mut p = plan(true);
    p.targets[0].plan.skipped_users = (0..skipped::SHOWN + 3)
        .map(|i| {
            crate::plan::SkippedUser::new(
                &format!("K{i:03}"),
                crate::plan::SkipReason::SourceDisabled,
            )
        })
        .collect();
    let got = render(&p, Format::Text, true);
    assert_eq!(
        got.matches("(disabled in the source)").count(),
        skipped::SHOWN,
        "{got}"
    );
    assert!(
        got.contains(
            "  - skipped  and 3 more (disabled in the source; --format json lists them all)"
        ),
        "{got}"
    );
    let json = render(&p, Format::Json, true);
    assert_eq!(
        json.matches("\"source_disabled\"").count(),
        skipped::SHOWN + 3
    );
}

fn run(id: i64, trigger: Trigger, status: crate::store::RunStatus) -> RunRecord {
    let started =
        chrono::Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap() + chrono::Duration::minutes(id);
    RunRecord {
        id,
        trigger,
        status,
        started_at: started,
        finished_at: Some(started + chrono::Duration::milliseconds(1500)),
        targets: vec!["covata-prod".into()],
        forced: false,
        source_count: Some(6),
        planned: 3,
        applied: if trigger == Trigger::DryRun { 0 } else { 3 },
        failed: 0,
        error: None,
        summary: serde_json::json!({}),
    }
}

#[test]
fn runs_list_dry_runs_in_a_section_of_their_own() {
    use crate::store::RunStatus;
    let runs = [
        run(4, Trigger::Schedule, RunStatus::Succeeded),
        run(3, Trigger::DryRun, RunStatus::Succeeded),
        run(2, Trigger::Manual, RunStatus::Failed),
    ];
    let got = render_runs("sqlite /tmp/x.db", &runs, Format::Text);
    let want = "\
store: sqlite /tmp/x.db

Runs (sync, the daemon, apply):
    id  started (UTC)         trigger    status          took     users   planned   applied  failed  targets
     4  2026-12-01 09:04:00   schedule   succeeded       1.5s         6         3         3       0  covata-prod
     2  2026-12-01 09:02:00   manual     failed          1.5s         6         3         3       0  covata-prod

Dry runs (plan: nothing was sent):
    id  started (UTC)         trigger    status          took     users   planned   applied  failed  targets
     3  2026-12-01 09:03:00   dry_run    succeeded       1.5s         6         3         0       0  covata-prod
";
    assert_eq!(got, want, "got:\n{got}");
    // Only dry runs: their section alone.
    let got = render_runs("s", &runs[1..2], Format::Text);
    assert!(got.contains("Dry runs (plan: nothing was sent):"), "{got}");
    assert!(!got.contains("Runs (sync"), "{got}");
    // Markdown: two headed tables; JSON: one list, each run marked.
    let got = render_runs("s", &runs, Format::Markdown);
    assert!(
        got.contains("## Runs (sync, the daemon, apply)\n\n| id |")
            && got.contains("## Dry runs (plan: nothing was sent)\n\n| id |"),
        "{got}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&render_runs("s", &runs, Format::Json)).unwrap();
    let marks: Vec<(i64, bool)> = json["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_i64().unwrap(), r["dry_run"].as_bool().unwrap()))
        .collect();
    assert_eq!(marks, [(4, false), (3, true), (2, false)]);
}
