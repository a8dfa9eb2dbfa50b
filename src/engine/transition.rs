//! The per-operation state transition, pure: an operation and what the target answered → the
//! journal row's new status (with its error or note and remote id) and the account row change
//! recorded with it in the same transaction.

use chrono::{DateTime, Utc};

use super::recover::created_record;
use crate::connector::{OpError, StatusAction};
use crate::mapping::{Account, TargetMapping, content_hash};
use crate::plan::{Op, PlannedOp};
use crate::store::{AccountChange, AccountRecord, OpStatus};

/// What the target answered for one operation (after the look-up of a create whose request
/// failed, if there was one).
#[derive(Debug)]
pub(super) enum Answer<'a> {
    /// It took effect: a create's new remote id, and a remark of the target's.
    Done {
        remote_id: Option<String>,
        note: Option<String>,
    },
    /// It did not take effect.
    Failed(&'a OpError),
    /// A create whose request failed and whose look-up found nothing: the target may still be
    /// finishing it, so its row stays `sent` for the next run to look up again.
    Unknown(&'a OpError),
}

/// What a transition depends on besides the operation: the target's mapping (login field,
/// content hash), the run, and the time (of a disable).
pub(super) struct Rules<'a> {
    pub mapping: &'a TargetMapping,
    pub run_id: i64,
    pub now: DateTime<Utc>,
}

/// The result of one operation, as recorded.
#[derive(Debug)]
pub(super) struct Transition {
    /// The journal row's new status.
    pub status: OpStatus,
    /// Its error (failed, unknown) or the target's note (succeeded).
    pub error: Option<String>,
    /// Its remote id (a create's new account).
    pub remote_id: Option<String>,
    /// The account row change written with it, if any.
    pub change: Option<AccountChange>,
}

/// The transition of `op` given `answer`. `current` is the account's running state in its
/// chain (the recorded row, as changed by the chain's earlier operations): a field, role or
/// group change that took effect is applied to it and it moves into the returned
/// [`AccountChange::Upsert`]; a create replaces it; status changes and failures leave it.
pub(super) fn transition(
    op: &PlannedOp,
    current: &mut Option<AccountRecord>,
    answer: Answer<'_>,
    rules: &Rules<'_>,
) -> Transition {
    match answer {
        Answer::Done { remote_id, note } => Transition {
            status: OpStatus::Succeeded,
            change: applied(op, current, remote_id.as_deref(), rules),
            error: note,
            remote_id,
        },
        Answer::Failed(e) => Transition {
            status: OpStatus::Failed,
            error: Some(e.to_string()),
            remote_id: None,
            change: match (&op.op, e) {
                // A create that hit an existing account: remembered as a not-owned account so
                // that later runs report it (and `dirsync adopt` can take it over) instead of
                // creating again.
                (Op::Create { account }, OpError::Conflict { .. }) => {
                    Some(conflict_record(account, rules))
                }
                _ => None,
            },
        },
        Answer::Unknown(e) => Transition {
            status: OpStatus::Sent,
            error: Some(format!(
                "{e}; outcome unknown: looked up again by the next run"
            )),
            remote_id: None,
            change: None,
        },
    }
}

/// The account change of an operation that took effect.
fn applied(
    op: &PlannedOp,
    current: &mut Option<AccountRecord>,
    remote_id: Option<&str>,
    rules: &Rules<'_>,
) -> Option<AccountChange> {
    let mut rec = match &op.op {
        Op::Create { account } => {
            *current = None;
            return Some(AccountChange::Upsert(created_record(
                account,
                remote_id.unwrap_or_default().to_string(),
                &rules.mapping.login_field,
                rules.run_id,
            )));
        }
        Op::Enable | Op::Disable { .. } | Op::Delete { .. } => {
            return Some(status_change(status_action(&op.op), &op.key, rules.now));
        }
        Op::Update { .. } | Op::SetRoles { .. } | Op::SetGroups { .. } => current.take()?,
    };
    match &op.op {
        Op::Update { changes, .. } => {
            for c in changes {
                match &c.after {
                    Some(v) => rec.state.fields.insert(c.field.clone(), v.clone()),
                    None => rec.state.fields.remove(&c.field),
                };
            }
        }
        Op::SetRoles { roles, .. } => rec.state.roles = roles.iter().cloned().collect(),
        Op::SetGroups { groups, .. } => rec.state.groups = groups.iter().cloned().collect(),
        _ => {}
    }
    rehash(&mut rec, rules);
    Some(AccountChange::Upsert(rec))
}

/// After a field or role change: the record's hash, and its login when the login field
/// changed (a renamed Valuekeep userKey, a new Primavera loginId).
fn rehash(rec: &mut AccountRecord, rules: &Rules<'_>) {
    if let Some(login) = rec.state.fields.get(&rules.mapping.login_field) {
        rec.account.login = Some(login.clone());
    }
    rec.account.hash = content_hash(
        rules.mapping,
        &rec.state.fields,
        &rec.state.roles,
        &rec.state.groups,
    );
    rec.last_seen_run = Some(rules.run_id);
}

/// The not-owned account row of a create refused because the account exists.
fn conflict_record(account: &Account, rules: &Rules<'_>) -> AccountChange {
    let mut rec = created_record(
        account,
        String::new(),
        &rules.mapping.login_field,
        rules.run_id,
    );
    rec.account.remote_id = None;
    rec.account.owned = false;
    AccountChange::Upsert(rec)
}

/// The account change of a status call that took effect.
pub(super) fn status_change(action: StatusAction, key: &str, now: DateTime<Utc>) -> AccountChange {
    match action {
        StatusAction::Enable => AccountChange::SetEnabled {
            key: key.to_string(),
            enabled: true,
            disabled_at: None,
        },
        StatusAction::Disable => AccountChange::SetEnabled {
            key: key.to_string(),
            enabled: false,
            disabled_at: Some(now),
        },
        StatusAction::Delete => AccountChange::Delete {
            key: key.to_string(),
        },
    }
}

/// The status call an enable / disable / delete operation makes.
pub(super) fn status_action(op: &Op) -> StatusAction {
    match op {
        Op::Enable => StatusAction::Enable,
        Op::Delete { .. } => StatusAction::Delete,
        _ => StatusAction::Disable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{ContentHash, UserFilter};
    use crate::plan::{DeleteReason, DisableReason, FieldChange};
    use crate::store::{AccountState, RecordedAccount};

    fn mapping() -> TargetMapping {
        TargetMapping {
            fields: vec![],
            role_rules: vec![],
            default_roles: vec![],
            group_rules: vec![],
            default_groups: vec![],
            filter: UserFilter::default(),
            login_field: "login".into(),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn account() -> Account {
        Account {
            key: "k1".into(),
            fields: [("login".to_string(), "ann".to_string())].into(),
            roles: ["r1".to_string()].into(),
            groups: Default::default(),
            enabled: true,
            hash: ContentHash::default(),
        }
    }

    fn recorded() -> AccountRecord {
        AccountRecord {
            account: RecordedAccount {
                key: "k1".into(),
                remote_id: Some("R1".into()),
                login: Some("ann".into()),
                hash: ContentHash::default(),
                enabled: true,
                owned: true,
                adopted: false,
                disabled_at: None,
            },
            state: AccountState {
                fields: [("login".to_string(), "ann".to_string())].into(),
                roles: ["r1".to_string()].into(),
                groups: Default::default(),
            },
            last_seen_run: Some(1),
        }
    }

    fn planned(op: Op) -> PlannedOp {
        PlannedOp {
            key: "k1".into(),
            label: Some("ann".into()),
            remote_id: Some("R1".into()),
            op,
        }
    }

    fn create() -> Op {
        Op::Create { account: account() }
    }

    fn update(login: &str) -> Op {
        Op::Update {
            changes: vec![FieldChange {
                field: "login".into(),
                before: Some("ann".into()),
                after: Some(login.into()),
            }],
            account: account(),
        }
    }

    fn set_roles() -> Op {
        Op::SetRoles {
            add: vec!["r2".into()],
            remove: vec!["r1".into()],
            roles: vec!["r2".into()],
            account: account(),
        }
    }

    fn set_groups() -> Op {
        Op::SetGroups {
            add: vec!["g1".into()],
            remove: vec![],
            groups: vec!["g1".into()],
            account: account(),
        }
    }

    fn done(remote_id: Option<&str>, note: Option<&str>) -> Answer<'static> {
        Answer::Done {
            remote_id: remote_id.map(str::to_string),
            note: note.map(str::to_string),
        }
    }

    /// What the change of a transition is, in a word, with the row it upserts.
    fn describe(change: &Option<AccountChange>) -> String {
        match change {
            None => "none".into(),
            Some(AccountChange::Upsert(r)) => format!(
                "upsert remote={:?} login={:?} owned={} roles={:?} groups={:?} run={:?}",
                r.account.remote_id,
                r.account.login,
                r.account.owned,
                r.state.roles,
                r.state.groups,
                r.last_seen_run
            ),
            Some(AccountChange::SetEnabled {
                enabled,
                disabled_at,
                ..
            }) => format!("enabled={enabled} disabled_at={}", disabled_at.is_some()),
            Some(AccountChange::Delete { .. }) => "delete".into(),
        }
    }

    #[test]
    fn transitions_table() {
        let conflict = OpError::Conflict {
            message: "exists".into(),
        };
        let unavailable = OpError::Unavailable {
            message: "reset".into(),
        };
        let not_found = OpError::NotFound {
            message: "gone".into(),
        };
        // (operation, running state present, answer, status, error, remote id, change,
        //  running state after)
        type Case = (
            Op,
            bool,
            Answer<'static>,
            &'static str,
            Option<String>,
            Option<&'static str>,
            String,
            bool,
        );
        let conflict: &'static OpError = Box::leak(Box::new(conflict));
        let unavailable: &'static OpError = Box::leak(Box::new(unavailable));
        let not_found: &'static OpError = Box::leak(Box::new(not_found));
        let cases: Vec<Case> = vec![
            (
                create(),
                false,
                done(Some("N1"), Some("created, but")),
                "succeeded",
                Some("created, but".into()),
                Some("N1"),
                "upsert remote=Some(\"N1\") login=Some(\"ann\") owned=true roles={\"r1\"} groups={} run=Some(7)".into(),
                false,
            ),
            (
                create(),
                false,
                Answer::Failed(conflict),
                "failed",
                Some(conflict.to_string()),
                None,
                "upsert remote=None login=Some(\"ann\") owned=false roles={\"r1\"} groups={} run=Some(7)".into(),
                false,
            ),
            (
                create(),
                false,
                Answer::Failed(not_found),
                "failed",
                Some(not_found.to_string()),
                None,
                "none".into(),
                false,
            ),
            (
                create(),
                false,
                Answer::Unknown(unavailable),
                "sent",
                Some(format!(
                    "{unavailable}; outcome unknown: looked up again by the next run"
                )),
                None,
                "none".into(),
                false,
            ),
            (
                update("bob"),
                true,
                done(None, None),
                "succeeded",
                None,
                None,
                "upsert remote=Some(\"R1\") login=Some(\"bob\") owned=true roles={\"r1\"} groups={} run=Some(7)".into(),
                false,
            ),
            // No recorded row to change: nothing recorded.
            (
                update("bob"),
                false,
                done(None, None),
                "succeeded",
                None,
                None,
                "none".into(),
                false,
            ),
            // A failure leaves the running state as it was.
            (
                update("bob"),
                true,
                Answer::Failed(not_found),
                "failed",
                Some(not_found.to_string()),
                None,
                "none".into(),
                true,
            ),
            (
                set_roles(),
                true,
                done(None, None),
                "succeeded",
                None,
                None,
                "upsert remote=Some(\"R1\") login=Some(\"ann\") owned=true roles={\"r2\"} groups={} run=Some(7)".into(),
                false,
            ),
            (
                set_groups(),
                true,
                done(None, None),
                "succeeded",
                None,
                None,
                "upsert remote=Some(\"R1\") login=Some(\"ann\") owned=true roles={\"r1\"} groups={\"g1\"} run=Some(7)".into(),
                false,
            ),
            (
                Op::Enable,
                true,
                done(None, None),
                "succeeded",
                None,
                None,
                "enabled=true disabled_at=false".into(),
                true,
            ),
            (
                Op::Disable {
                    reason: DisableReason::MissingFromSource,
                },
                false,
                done(None, None),
                "succeeded",
                None,
                None,
                "enabled=false disabled_at=true".into(),
                false,
            ),
            (
                Op::Delete {
                    reason: DeleteReason::GracePeriodOver,
                },
                true,
                done(None, None),
                "succeeded",
                None,
                None,
                "delete".into(),
                true,
            ),
            (
                Op::Delete {
                    reason: DeleteReason::MissingFromSource,
                },
                true,
                Answer::Failed(conflict),
                "failed",
                Some(conflict.to_string()),
                None,
                "none".into(),
                true,
            ),
        ];
        let m = mapping();
        let rules = Rules {
            mapping: &m,
            run_id: 7,
            now: now(),
        };
        for (n, (op, has_current, answer, status, error, remote_id, change, current_after)) in
            cases.into_iter().enumerate()
        {
            let op = planned(op);
            let mut current = has_current.then(recorded);
            let t = transition(&op, &mut current, answer, &rules);
            assert_eq!(t.status.as_str(), status, "case {n}");
            assert_eq!(t.error, error, "case {n}");
            assert_eq!(t.remote_id.as_deref(), remote_id, "case {n}");
            assert_eq!(describe(&t.change), change, "case {n}");
            assert_eq!(current.is_some(), current_after, "case {n}");
        }
    }

    #[test]
    fn a_changed_record_is_rehashed() {
        let m = mapping();
        let rules = Rules {
            mapping: &m,
            run_id: 7,
            now: now(),
        };
        let mut current = Some(recorded());
        let t = transition(
            &planned(set_roles()),
            &mut current,
            done(None, None),
            &rules,
        );
        let Some(AccountChange::Upsert(rec)) = t.change else {
            panic!("expected an upsert, got {:?}", t.change);
        };
        assert_eq!(
            rec.account.hash,
            content_hash(&m, &rec.state.fields, &rec.state.roles, &rec.state.groups)
        );
        assert_ne!(rec.account.hash, ContentHash::default());
    }
}
