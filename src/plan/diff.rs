//! `diff(users, recorded) -> TargetPlan`: a merge join of two key-sorted lists, O(n).
//!
//! Two passes keep a no-change run cheap: [`triage`] maps each user that has an owned account
//! and compares content hashes, naming the accounts whose stored attributes must be loaded;
//! [`diff`] then maps again only the users that need an operation, and compares fields and
//! roles only for hash misses. Mapped accounts exist in memory only for planned operations.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    DeleteReason, DisableReason, FieldChange, Op, PlannedOp, SkipReason, SkippedUser, Summary,
    TargetPlan, UserProblem,
};
use crate::mapping::{Account, AccountState, Mapped, RecordedAccount, TargetMapping};
use crate::model::User;

/// What happens to an owned account whose user left the source (or this target's scope).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMissing {
    /// Disable it (the default). It is never deleted.
    #[default]
    Disable,
    /// Disable it, then delete it once `delete_after` has passed since it was disabled.
    DisableThenDelete,
    /// Delete it at once.
    Delete,
}

/// Lifecycle settings of one target, plus the clock.
#[derive(Debug, Clone)]
pub struct PlanSettings {
    pub on_missing: OnMissing,
    pub delete_after: Duration,
    pub now: DateTime<Utc>,
}

/// The first pass: which users are already as recorded, and which accounts need their stored
/// attributes to be compared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Triage {
    /// Per user (snapshot order): mapped, owned, and the hash equals the recorded one.
    pub same: Vec<bool>,
    /// Keys of owned accounts whose hash differs: load their [`AccountState`].
    pub need_state: Vec<String>,
}

/// Everything the planner reads for one target.
#[derive(Debug, Clone, Copy)]
pub struct DiffInput<'a> {
    pub mapping: &'a TargetMapping,
    /// Source users, sorted by key (byte order), as in a [`crate::model::Snapshot`].
    pub users: &'a [User],
    /// Recorded accounts of the target, sorted by key (byte order).
    pub recorded: &'a [RecordedAccount],
    /// The result of [`triage`] on the same users and accounts.
    pub triage: &'a Triage,
    /// Applied attributes of the accounts named by `triage.need_state`.
    pub states: &'a HashMap<String, AccountState>,
    /// With a prefiltered snapshot: the accounts whose users were dropped as settled (see
    /// [`super::prefilter`]); they are unchanged, not missing.
    pub settled: Option<&'a super::prefilter::Settled>,
    /// Keys whose source record is quarantined, sorted ([`crate::model::Snapshot::quarantined_keys`]):
    /// their accounts are left exactly as they are.
    pub quarantined: &'a [String],
}

/// One key of the merge: the user (with its index) and/or the recorded account.
enum Side<'a> {
    User(&'a User),
    Recorded(usize, &'a RecordedAccount),
    Both(usize, &'a User, &'a RecordedAccount),
}

/// Walks both sorted lists once, calling `f` for each key.
fn merge<'a>(users: &'a [User], recorded: &'a [RecordedAccount], mut f: impl FnMut(Side<'a>)) {
    let (mut i, mut j) = (0, 0);
    loop {
        match (users.get(i), recorded.get(j)) {
            (Some(u), Some(r)) => match u.key.as_str().cmp(r.key.as_str()) {
                std::cmp::Ordering::Less => {
                    f(Side::User(u));
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    f(Side::Recorded(j, r));
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    f(Side::Both(i, u, r));
                    i += 1;
                    j += 1;
                }
            },
            (Some(u), None) => {
                f(Side::User(u));
                i += 1;
            }
            (None, Some(r)) => {
                f(Side::Recorded(j, r));
                j += 1;
            }
            (None, None) => break,
        }
    }
}

/// The first pass (see the module docs). Pure.
pub fn triage(mapping: &TargetMapping, users: &[User], recorded: &[RecordedAccount]) -> Triage {
    let mut t = Triage {
        same: vec![false; users.len()],
        need_state: Vec::new(),
    };
    merge(users, recorded, |side| {
        if let Side::Both(i, u, r) = side
            && r.owned
            && let Mapped::Account(a) = mapping.map(u)
        {
            if a.hash == r.hash {
                t.same[i] = true;
            } else {
                t.need_state.push(a.key);
            }
        }
    });
    t
}

/// Computes the plan for one target. Pure.
///
/// Per key:
/// - source only: enabled → `Create`; disabled in the source → skipped (never created).
/// - recorded only (or filtered out of scope): not owned → left alone; owned → per
///   `on_missing` (`Disable`; `Delete`; or `Disable` then, once `delete_after` has passed since
///   `disabled_at`, `Delete`).
/// - both, not owned → left alone and reported (adopt it first).
/// - both, owned → `Enable` / `Disable(SourceDisabled)` when the flag differs; when the hash
///   differs, `Update` (changed fields only) and `SetRoles` (the delta).
/// - a user that cannot be mapped (a required field empty) → its account is untouched and the
///   problem reported: an unmappable user is not a missing user.
/// - a quarantined key (`input.quarantined`) → nothing: its account is counted `quarantined`
///   (owned) or `not_owned`, never created, updated, enabled, disabled or deleted.
pub fn diff(input: DiffInput<'_>, settings: &PlanSettings) -> TargetPlan {
    let mut plan = TargetPlan {
        summary: Summary::default(),
        owned: input.recorded.iter().filter(|r| r.owned).count() as u64,
        ops: Vec::new(),
        problems: Vec::new(),
        existing: Vec::new(),
        skipped_users: Vec::new(),
    };
    let mapping = input.mapping;
    let s = &mut plan.summary;
    let ops = &mut plan.ops;
    let problems = &mut plan.problems;
    let skipped = &mut plan.skipped_users;
    let mut invalid = |key: &str, why: String, s: &mut Summary| {
        s.skipped += 1;
        problems.push(UserProblem {
            key: key.to_string(),
            message: why,
        });
    };

    let quarantined = |key: &str| {
        input
            .quarantined
            .binary_search_by(|k| k.as_str().cmp(key))
            .is_ok()
    };

    merge(input.users, input.recorded, |side| match side {
        // A quarantined key is never planned: not created, changed or missing.
        Side::User(u) if quarantined(&u.key) => {
            skipped.push(SkippedUser::new(&u.key, SkipReason::Quarantined));
        }
        Side::Recorded(_, r) | Side::Both(_, _, r) if quarantined(&r.key) => {
            skipped.push(SkippedUser::new(&r.key, SkipReason::Quarantined));
            if r.owned {
                s.quarantined += 1;
            } else {
                s.not_owned += 1;
            }
        }
        Side::User(u) => match mapping.map(u) {
            Mapped::Account(d) if d.enabled => {
                s.create += 1;
                ops.push(PlannedOp {
                    key: d.key.clone(),
                    label: d.login(mapping).map(str::to_string),
                    remote_id: None,
                    op: Op::Create { account: d },
                });
            }
            Mapped::Account(_) => {
                s.skipped += 1;
                skipped.push(SkippedUser::new(&u.key, SkipReason::SourceDisabled));
            }
            Mapped::Filtered => {
                s.out_of_scope += 1;
                if let Some(scope) = mapping.filter.out_of_scope(u) {
                    skipped.push(SkippedUser::new(&u.key, SkipReason::Scope { scope }));
                }
            }
            Mapped::Invalid(why) => invalid(&u.key, why, s),
        },
        Side::Recorded(j, r) => {
            if input
                .settled
                .is_some_and(|st| st.seen.get(j).copied().unwrap_or(false))
            {
                s.unchanged += 1;
            } else if r.owned {
                missing(r, DisableReason::MissingFromSource, settings, s, ops);
            } else {
                s.not_owned += 1;
            }
        }
        Side::Both(i, u, r) => {
            if !r.owned {
                s.not_owned += 1;
                if matches!(mapping.map(u), Mapped::Account(_)) {
                    invalid(
                        &u.key,
                        format!(
                            "an account {} exists on the target but dirsync does not own it; \
                             run `dirsync adopt` to manage it",
                            r.login
                                .as_deref()
                                .or(r.remote_id.as_deref())
                                .unwrap_or("(unknown)")
                        ),
                        &mut Summary::default(),
                    );
                }
                return;
            }
            if input.triage.same.get(i).copied().unwrap_or(false) && u.enabled == r.enabled {
                s.unchanged += 1;
                return;
            }
            let d = match mapping.map(u) {
                Mapped::Account(d) => d,
                Mapped::Filtered => {
                    missing(r, DisableReason::OutOfScope, settings, s, ops);
                    return;
                }
                Mapped::Invalid(why) => {
                    invalid(&u.key, why, s);
                    return;
                }
            };
            existing(mapping, d, r, input.states, s, ops);
        }
    });
    if let Some(st) = input.settled {
        plan.summary.skipped += st.skipped;
        plan.summary.out_of_scope += st.out_of_scope;
        if !st.users.is_empty() {
            plan.skipped_users.extend(st.users.iter().cloned());
            // The prefilter saw its users in source order; the rest came in key order.
            plan.skipped_users.sort_unstable();
        }
    }
    plan
}

/// Operations for a user with an owned account.
fn existing(
    mapping: &TargetMapping,
    d: Account,
    r: &RecordedAccount,
    states: &HashMap<String, AccountState>,
    s: &mut Summary,
    ops: &mut Vec<PlannedOp>,
) {
    let before = ops.len();
    let label = d
        .login(mapping)
        .map(str::to_string)
        .or_else(|| r.login.clone());
    let op = |op| PlannedOp {
        key: d.key.clone(),
        label: label.clone(),
        remote_id: r.remote_id.clone(),
        op,
    };
    if d.enabled && !r.enabled {
        s.enable += 1;
        ops.push(op(Op::Enable));
    }
    if d.hash != r.hash {
        let empty = AccountState::default();
        let st = states.get(&d.key).unwrap_or(&empty);
        let changes = field_changes(mapping, &st.fields, &d);
        let add: Vec<String> = d.roles.difference(&st.roles).cloned().collect();
        let remove: Vec<String> = st.roles.difference(&d.roles).cloned().collect();
        let roles_change = !add.is_empty() || !remove.is_empty();
        if !changes.is_empty() {
            s.update += 1;
            ops.push(op(Op::Update {
                changes,
                account: d.clone(),
            }));
        }
        if roles_change {
            s.set_roles += 1;
            ops.push(op(Op::SetRoles {
                add,
                remove,
                roles: d.roles.iter().cloned().collect(),
                account: d.clone(),
            }));
        }
        let add: Vec<String> = d.groups.difference(&st.groups).cloned().collect();
        let remove: Vec<String> = st.groups.difference(&d.groups).cloned().collect();
        if !add.is_empty() || !remove.is_empty() {
            s.set_groups += 1;
            ops.push(op(Op::SetGroups {
                add,
                remove,
                groups: d.groups.iter().cloned().collect(),
                account: d.clone(),
            }));
        }
    }
    if !d.enabled && r.enabled {
        s.disable += 1;
        ops.push(op(Op::Disable {
            reason: DisableReason::SourceDisabled,
        }));
    }
    if ops.len() == before {
        s.unchanged += 1;
    }
}

fn missing(
    r: &RecordedAccount,
    why: DisableReason,
    settings: &PlanSettings,
    s: &mut Summary,
    ops: &mut Vec<PlannedOp>,
) {
    let op = |op| PlannedOp {
        key: r.key.clone(),
        label: r.login.clone(),
        remote_id: r.remote_id.clone(),
        op,
    };
    match settings.on_missing {
        OnMissing::Delete => {
            s.delete += 1;
            ops.push(op(Op::Delete {
                reason: DeleteReason::MissingFromSource,
            }));
        }
        OnMissing::Disable | OnMissing::DisableThenDelete if r.enabled => {
            s.disable += 1;
            ops.push(op(Op::Disable { reason: why }));
        }
        OnMissing::Disable => s.unchanged += 1,
        OnMissing::DisableThenDelete => {
            let due = r.disabled_at.is_some_and(|at| {
                chrono::Duration::from_std(settings.delete_after)
                    .ok()
                    .and_then(|grace| at.checked_add_signed(grace))
                    .is_some_and(|deadline| deadline <= settings.now)
            });
            if due {
                s.delete += 1;
                ops.push(op(Op::Delete {
                    reason: DeleteReason::GracePeriodOver,
                }));
            } else {
                s.unchanged += 1;
            }
        }
    }
}

/// Changed fields, in field order: a field set in one and absent in the other, or different
/// values (emails compare case-insensitively).
fn field_changes(
    mapping: &TargetMapping,
    before: &std::collections::BTreeMap<String, String>,
    after: &Account,
) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    let names: std::collections::BTreeSet<&String> =
        before.keys().chain(after.fields.keys()).collect();
    for name in names {
        let (b, a) = (before.get(name), after.fields.get(name));
        let same = match (b, a) {
            (Some(b), Some(a)) => mapping.same_value(name, b, a),
            (None, None) => true,
            _ => false,
        };
        if !same {
            changes.push(FieldChange {
                field: name.clone(),
                before: b.cloned(),
                after: a.cloned(),
            });
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{FieldKind, FieldMapping, RoleRule, Template, UserFilter};
    use crate::model::User;
    use chrono::TimeZone;
    use std::collections::HashSet;

    fn mapping() -> TargetMapping {
        let f = |name: &str, kind, tpl: &str| FieldMapping {
            name: name.into(),
            kind,
            required: false,
            template: Template::parse(tpl).unwrap(),
        };
        TargetMapping {
            group_rules: vec![],
            default_groups: vec![],
            fields: vec![
                f("email", FieldKind::Email, "{email}"),
                f("firstName", FieldKind::Text, "{given_name}"),
                f("lastName", FieldKind::Text, "{family_name}"),
            ],
            role_rules: vec![RoleRule {
                group: "admins".into(),
                roles: vec!["ADMIN".into()],
            }],
            default_roles: vec!["USER".into()],
            filter: UserFilter::default(),
            login_field: "email".into(),
        }
    }

    fn user(key: &str, email: &str, given: &str, groups: &[&str], enabled: bool) -> User {
        let mut u = User::new(key, email);
        u.given_name = Some(given.into());
        u.family_name = Some("X".into());
        u.groups = groups.iter().map(|g| g.to_string()).collect();
        u.enabled = enabled;
        u.normalized()
    }

    fn map(m: &TargetMapping, u: &User) -> Account {
        match m.map(u) {
            Mapped::Account(a) => a,
            other => panic!("{other:?}"),
        }
    }

    /// A recorded account as if `u` had been applied, with the given flags.
    fn rec(
        m: &TargetMapping,
        u: &User,
        enabled: bool,
        owned: bool,
    ) -> (RecordedAccount, AccountState) {
        let a = map(m, u);
        (
            RecordedAccount {
                key: a.key.clone(),
                remote_id: Some(format!("id-{}", a.key)),
                login: Some(u.email.clone()),
                hash: a.hash,
                enabled,
                owned,
                adopted: false,
                disabled_at: None,
            },
            AccountState {
                groups: a.groups.clone(),
                fields: a.fields.clone(),
                roles: a.roles.clone(),
            },
        )
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    fn settings(on_missing: OnMissing) -> PlanSettings {
        PlanSettings {
            on_missing,
            delete_after: Duration::from_secs(30 * 86400),
            now: now(),
        }
    }

    /// Runs the two-phase planning as the CLI does.
    fn run(
        m: &TargetMapping,
        users: &[User],
        recorded: &[(RecordedAccount, AccountState)],
        settings: &PlanSettings,
    ) -> TargetPlan {
        run_q(m, users, recorded, settings, &[])
    }

    /// [`run`] with quarantined keys (sorted).
    fn run_q(
        m: &TargetMapping,
        users: &[User],
        recorded: &[(RecordedAccount, AccountState)],
        settings: &PlanSettings,
        quarantined: &[String],
    ) -> TargetPlan {
        let mut users = users.to_vec();
        users.sort_by(|a, b| a.key.cmp(&b.key));
        let mut recs: Vec<RecordedAccount> = recorded.iter().map(|r| r.0.clone()).collect();
        recs.sort_by(|a, b| a.key.cmp(&b.key));
        let t = triage(m, &users, &recs);
        let need: HashSet<String> = t.need_state.iter().cloned().collect();
        let states: HashMap<String, AccountState> = recorded
            .iter()
            .filter(|r| need.contains(&r.0.key))
            .map(|r| (r.0.key.clone(), r.1.clone()))
            .collect();
        diff(
            DiffInput {
                mapping: m,
                users: &users,
                recorded: &recs,
                triage: &t,
                states: &states,
                settled: None,
                quarantined,
            },
            settings,
        )
    }

    fn kinds(p: &TargetPlan) -> Vec<(String, &'static str)> {
        p.ops.iter().map(|o| (o.key.clone(), o.op.kind())).collect()
    }

    /// Every source user that gets no operation is listed with why; out-of-scope users are
    /// counted apart from `skipped`.
    #[test]
    fn skipped_users_carry_their_reason() {
        use crate::mapping::OutOfScope;
        use crate::plan::SkipReason;
        let scope = |rule: Option<&str>| SkipReason::Scope {
            scope: match rule {
                Some(g) => OutOfScope::ExcludedGroup { group: g.into() },
                None => OutOfScope::NotIncluded,
            },
        };
        // (case, include, exclude, user groups, enabled, recorded, quarantined, want skip
        //  reason, want out_of_scope, want skipped count)
        type Case<'a> = (
            &'a str,
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            bool,
            bool,
            bool,
            Option<SkipReason>,
            u64,
            u64,
        );
        #[rustfmt::skip]
        let cases: &[Case<'_>] = &[
            ("in scope, enabled: created", &[], &["contractors"], &["staff"], true, false, false, None, 0, 0),
            ("excluded group", &[], &["contractors"], &["staff", "contractors"], true, false, false, Some(scope(Some("contractors"))), 1, 0),
            ("first excluded group named", &[], &["temps", "contractors"], &["contractors", "temps"], true, false, false, Some(scope(Some("temps"))), 1, 0),
            ("not in an included group", &["staff"], &[], &["sales"], true, false, false, Some(scope(None)), 1, 0),
            ("out of scope and disabled: scope wins", &["staff"], &[], &[], false, false, false, Some(scope(None)), 1, 0),
            ("disabled in the source, never created", &[], &[], &["staff"], false, false, false, Some(SkipReason::SourceDisabled), 0, 1),
            ("disabled with an owned account: a disable, not a skip", &[], &[], &["staff"], false, true, false, None, 0, 0),
            ("out of scope with an owned account: a disable, not a skip", &[], &["contractors"], &["contractors"], true, true, false, None, 0, 0),
            ("quarantined, no account", &[], &[], &["staff"], true, false, true, Some(SkipReason::Quarantined), 0, 0),
            ("quarantined, owned account", &[], &[], &["staff"], true, true, true, Some(SkipReason::Quarantined), 0, 0),
        ];
        for (case, include, exclude, groups, enabled, recorded, quarantined, want, out, skipped) in
            cases
        {
            let mut m = mapping();
            m.filter.include_groups = include.iter().map(|g| g.to_string()).collect();
            m.filter.exclude_groups = exclude.iter().map(|g| g.to_string()).collect();
            let u = user("k1", "k1@x.com", "K", groups, *enabled);
            let recs = if *recorded {
                let mut plain = mapping();
                plain.filter = Default::default();
                let mut on = u.clone();
                on.enabled = true;
                vec![rec(&plain, &on, true, true)]
            } else {
                vec![]
            };
            let q = if *quarantined {
                vec!["k1".to_string()]
            } else {
                vec![]
            };
            let p = run_q(&m, &[u], &recs, &settings(OnMissing::Disable), &q);
            let got: Vec<SkipReason> = p.skipped_users.iter().map(|s| s.reason.clone()).collect();
            assert_eq!(got, want.iter().cloned().collect::<Vec<_>>(), "{case}");
            assert!(p.skipped_users.iter().all(|s| s.key == "k1"), "{case}");
            assert_eq!(p.summary.out_of_scope, *out, "{case}: out_of_scope");
            assert_eq!(p.summary.skipped, *skipped, "{case}: skipped");
        }
        // An owned account whose user left the scope is disabled as out of scope.
        let mut m = mapping();
        m.filter.exclude_groups = vec!["contractors".into()];
        let u = user("k1", "k1@x.com", "K", &["contractors"], true);
        let recs = vec![rec(
            &mapping(),
            &user("k1", "k1@x.com", "K", &[], true),
            true,
            true,
        )];
        let p = run(&m, &[u], &recs, &settings(OnMissing::Disable));
        assert_eq!(
            p.ops.iter().map(|o| o.op.clone()).collect::<Vec<_>>(),
            [Op::Disable {
                reason: DisableReason::OutOfScope
            }]
        );
        assert_eq!(
            scope(Some("contractors")).to_string(),
            "scope: excluded group contractors"
        );
        assert_eq!(
            SkipReason::SourceDisabled.to_string(),
            "disabled in the source"
        );
        assert_eq!(SkipReason::Quarantined.to_string(), "quarantined");
    }

    #[test]
    fn first_run_creates_enabled_users_only() {
        let m = mapping();
        let users = [
            user("b", "b@x.com", "B", &[], true),
            user("a", "a@x.com", "A", &["admins"], true),
            user("c", "c@x.com", "C", &[], false),
        ];
        let p = run(&m, &users, &[], &settings(OnMissing::Disable));
        assert_eq!(
            kinds(&p),
            vec![("a".into(), "create"), ("b".into(), "create")]
        );
        assert_eq!(p.summary.create, 2);
        assert_eq!(p.summary.skipped, 1);
        let Op::Create { account } = &p.ops[0].op else {
            panic!()
        };
        assert!(account.roles.contains("ADMIN"));
    }

    #[test]
    fn quarantined_keys_are_left_exactly_as_they_are() {
        let m = mapping();
        let a = user("a", "a@x.com", "Alice", &[], true);
        let b = user("b", "b@x.com", "Bob", &[], true);
        let b_changed = user("b", "b@x.com", "Robert", &["admins"], false);
        let c = user("c", "c@x.com", "Carol", &[], true);
        let all = [
            OnMissing::Disable,
            OnMissing::DisableThenDelete,
            OnMissing::Delete,
        ];
        // (description, source users, recorded (user, enabled, owned), expected ops, summary.quarantined)
        type Case<'a> = (
            &'a str,
            Vec<User>,
            Vec<(&'a User, bool, bool)>,
            Vec<(String, &'static str)>,
            u64,
        );
        let cases: Vec<Case> = vec![
            (
                "missing from the users: not disabled or deleted",
                vec![a.clone()],
                vec![(&a, true, true), (&b, true, true)],
                vec![],
                1,
            ),
            (
                "disabled account stays disabled (never enabled)",
                vec![a.clone()],
                vec![(&a, true, true), (&b, false, true)],
                vec![],
                1,
            ),
            (
                "a user under the key (changed, disabled) is not planned",
                vec![a.clone(), b_changed.clone()],
                vec![(&a, true, true), (&b, true, true)],
                vec![],
                1,
            ),
            (
                "never created",
                vec![a.clone(), b.clone()],
                vec![(&a, true, true)],
                vec![],
                0,
            ),
            (
                "not owned: left alone, counted not owned",
                vec![a.clone()],
                vec![(&a, true, true), (&b, true, false)],
                vec![],
                0,
            ),
            (
                "everyone else planned as usual",
                vec![c.clone()],
                vec![(&a, true, true), (&b, true, true)],
                vec![("a".into(), "disable"), ("c".into(), "create")],
                1,
            ),
        ];
        let q = vec!["b".to_string()];
        for (what, users, recorded, expected, nq) in cases {
            for on_missing in all {
                let recorded: Vec<_> = recorded
                    .iter()
                    .map(|(u, en, owned)| rec(&m, u, *en, *owned))
                    .collect();
                let p = run_q(&m, &users, &recorded, &settings(on_missing), &q);
                let mut got = kinds(&p);
                if on_missing == OnMissing::Delete {
                    for g in &mut got {
                        if g.1 == "delete" {
                            g.1 = "disable";
                        }
                    }
                }
                assert_eq!(got, expected, "{what} ({on_missing:?})");
                assert!(p.ops.iter().all(|o| o.key != "b"), "{what}");
                assert_eq!(p.summary.quarantined, nq, "{what}");
                assert!(p.problems.iter().all(|pr| pr.key != "b"), "{what}");
            }
        }
    }

    #[test]
    fn no_change_is_unchanged_and_loads_no_state() {
        let m = mapping();
        let users = [user("a", "a@x.com", "A", &[], true)];
        let recorded = [rec(&m, &users[0], true, true)];
        let t = triage(&m, &users, &[recorded[0].0.clone()]);
        assert!(t.need_state.is_empty());
        assert_eq!(t.same, vec![true]);
        let p = run(&m, &users, &recorded, &settings(OnMissing::Disable));
        assert!(p.ops.is_empty());
        assert_eq!(p.summary.unchanged, 1);
        assert_eq!(p.owned, 1);
    }

    #[test]
    fn lifecycle_table() {
        let m = mapping();
        let old = user("a", "a@x.com", "Alice", &[], true);
        let day = chrono::Duration::days(1);
        // (description, source users, recorded enabled, disabled_at, on_missing, expected ops)
        type Case<'a> = (
            &'a str,
            Vec<User>,
            bool,
            Option<DateTime<Utc>>,
            OnMissing,
            Vec<&'a str>,
        );
        let cases: Vec<Case> = vec![
            (
                "rename",
                vec![user("a", "a@x.com", "Alicia", &[], true)],
                true,
                None,
                OnMissing::Disable,
                vec!["update"],
            ),
            (
                "email case only",
                vec![user("a", "A@X.com", "Alice", &[], true)],
                true,
                None,
                OnMissing::Disable,
                vec![],
            ),
            (
                "role change",
                vec![user("a", "a@x.com", "Alice", &["admins"], true)],
                true,
                None,
                OnMissing::Disable,
                vec!["set_roles"],
            ),
            (
                "source disabled",
                vec![user("a", "a@x.com", "Alice", &[], false)],
                true,
                None,
                OnMissing::Disable,
                vec!["disable"],
            ),
            (
                "re-enabled with rename",
                vec![user("a", "a@x.com", "Al", &[], true)],
                false,
                Some(now()),
                OnMissing::Disable,
                vec!["enable", "update"],
            ),
            (
                "missing -> disable",
                vec![],
                true,
                None,
                OnMissing::Disable,
                vec!["disable"],
            ),
            (
                "missing, already disabled",
                vec![],
                false,
                Some(now() - day * 90),
                OnMissing::Disable,
                vec![],
            ),
            (
                "missing -> delete",
                vec![],
                true,
                None,
                OnMissing::Delete,
                vec!["delete"],
            ),
            (
                "missing disabled -> delete",
                vec![],
                false,
                None,
                OnMissing::Delete,
                vec!["delete"],
            ),
            (
                "then-delete: first disable",
                vec![],
                true,
                None,
                OnMissing::DisableThenDelete,
                vec!["disable"],
            ),
            (
                "then-delete: in grace",
                vec![],
                false,
                Some(now() - day * 29),
                OnMissing::DisableThenDelete,
                vec![],
            ),
            (
                "then-delete: exactly due",
                vec![],
                false,
                Some(now() - day * 30),
                OnMissing::DisableThenDelete,
                vec!["delete"],
            ),
            (
                "then-delete: overdue",
                vec![],
                false,
                Some(now() - day * 31),
                OnMissing::DisableThenDelete,
                vec!["delete"],
            ),
            (
                "then-delete: no disabled_at",
                vec![],
                false,
                None,
                OnMissing::DisableThenDelete,
                vec![],
            ),
            (
                "came back in grace",
                vec![old.clone()],
                false,
                Some(now() - day * 10),
                OnMissing::DisableThenDelete,
                vec!["enable"],
            ),
        ];
        for (name, users, enabled, disabled_at, on_missing, want) in cases {
            let (mut r, st) = rec(&m, &old, enabled, true);
            r.disabled_at = disabled_at;
            let p = run(&m, &users, &[(r, st)], &settings(on_missing));
            let got: Vec<&str> = p.ops.iter().map(|o| o.op.kind()).collect();
            assert_eq!(got, want, "case {name}");
            assert_eq!(p.summary.changes() as usize, want.len(), "case {name}");
        }
    }

    #[test]
    fn update_lists_only_changed_fields() {
        let m = mapping();
        let old = user("a", "a@x.com", "Alice", &[], true);
        let mut new = user("a", "alice@x.com", "Alice", &["admins"], true);
        new.family_name = None;
        let p = run(
            &m,
            &[new],
            &[rec(&m, &old, true, true)],
            &settings(OnMissing::Disable),
        );
        let Op::Update { changes, .. } = &p.ops[0].op else {
            panic!("{:?}", p.ops)
        };
        assert_eq!(
            changes,
            &vec![
                FieldChange {
                    field: "email".into(),
                    before: Some("a@x.com".into()),
                    after: Some("alice@x.com".into())
                },
                FieldChange {
                    field: "lastName".into(),
                    before: Some("X".into()),
                    after: None
                },
            ]
        );
        let Op::SetRoles {
            add, remove, roles, ..
        } = &p.ops[1].op
        else {
            panic!()
        };
        assert_eq!(add, &vec!["ADMIN".to_string()]);
        assert_eq!(remove, &vec!["USER".to_string()]);
        assert_eq!(roles, &vec!["ADMIN".to_string()]);
        assert_eq!(p.ops[0].remote_id.as_deref(), Some("id-a"));
    }

    #[test]
    fn group_delta() {
        let mut m = mapping();
        m.group_rules = vec![RoleRule {
            group: "admins".into(),
            roles: vec!["OPS".into()],
        }];
        m.default_groups = vec!["ALL".into()];
        let old = user("a", "a@x.com", "Alice", &[], true);
        let new = user("a", "a@x.com", "Alice", &["admins"], true);
        let p = run(
            &m,
            &[new],
            &[rec(&m, &old, true, true)],
            &settings(OnMissing::Disable),
        );
        let kinds: Vec<&str> = p.ops.iter().map(|o| o.op.kind()).collect();
        assert_eq!(kinds, vec!["set_roles", "set_groups"]);
        let Op::SetGroups {
            add,
            remove,
            groups,
            ..
        } = &p.ops[1].op
        else {
            panic!()
        };
        assert_eq!(add, &vec!["OPS".to_string()]);
        assert_eq!(remove, &vec!["ALL".to_string()]);
        assert_eq!(groups, &vec!["OPS".to_string()]);
        assert_eq!(p.summary.set_groups, 1);
    }

    #[test]
    fn never_touches_accounts_it_does_not_own() {
        let m = mapping();
        let u = user("a", "a@x.com", "Alice", &[], true);
        let changed = user("a", "a@x.com", "Other", &["admins"], false);
        for on_missing in [
            OnMissing::Disable,
            OnMissing::Delete,
            OnMissing::DisableThenDelete,
        ] {
            // Missing from the source.
            let p = run(&m, &[], &[rec(&m, &u, true, false)], &settings(on_missing));
            assert!(p.ops.is_empty());
            assert_eq!(p.summary.not_owned, 1);
            // Present and different.
            let p = run(
                &m,
                std::slice::from_ref(&changed),
                &[rec(&m, &u, true, false)],
                &settings(on_missing),
            );
            assert!(p.ops.is_empty());
            assert_eq!(p.problems.len(), 1);
            assert!(p.problems[0].message.contains("adopt"));
        }
    }

    #[test]
    fn unmappable_user_is_not_missing() {
        let mut m = mapping();
        m.fields[1].required = true;
        let u = user("a", "a@x.com", "Alice", &[], true);
        let recorded = [rec(&m, &u, true, true)];
        let mut nameless = u.clone();
        nameless.given_name = None;
        let p = run(&m, &[nameless], &recorded, &settings(OnMissing::Delete));
        assert!(p.ops.is_empty(), "{:?}", p.ops);
        assert_eq!(p.problems.len(), 1);
        assert!(
            p.problems[0].message.contains("firstName"),
            "{:?}",
            p.problems
        );
        assert_eq!(p.summary.skipped, 1);
    }

    #[test]
    fn filtered_out_user_is_missing() {
        let mut m = mapping();
        let u = user("a", "a@x.com", "Alice", &["staff"], true);
        let recorded = [rec(&m, &u, true, true)];
        m.filter.exclude_groups = vec!["staff".into()];
        let p = run(
            &m,
            std::slice::from_ref(&u),
            &recorded,
            &settings(OnMissing::Disable),
        );
        assert_eq!(kinds(&p), vec![("a".into(), "disable")]);
        // And a filtered user with no account is simply not created.
        let p = run(&m, &[u], &[], &settings(OnMissing::Disable));
        assert!(p.ops.is_empty());
    }

    #[test]
    fn merge_join_handles_interleaved_keys() {
        let m = mapping();
        let users: Vec<User> = ["a", "c", "e"]
            .iter()
            .map(|k| user(k, &format!("{k}@x.com"), "N", &[], true))
            .collect();
        let gone: Vec<User> = ["b", "d", "f"]
            .iter()
            .map(|k| user(k, &format!("{k}@x.com"), "N", &[], true))
            .collect();
        let mut recorded: Vec<_> = gone.iter().map(|u| rec(&m, u, true, true)).collect();
        recorded.push(rec(&m, &users[1], true, true));
        let p = run(&m, &users, &recorded, &settings(OnMissing::Disable));
        assert_eq!(
            kinds(&p),
            vec![
                ("a".into(), "create"),
                ("b".into(), "disable"),
                ("d".into(), "disable"),
                ("e".into(), "create"),
                ("f".into(), "disable"),
            ]
        );
        assert_eq!(p.summary.unchanged, 1);
    }
}
