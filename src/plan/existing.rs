//! First contact with a tenant: a planned create whose login already exists on the target, in an
//! account dirsync does not own, is held back and reported "exists, not owned: adopt first"
//! instead of being sent to collect a conflict. Pure: the caller lists the target.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::mapping::Account;
use crate::mapping::RemoteAccount;
use crate::model::email_fold;
use crate::plan::{Op, PlannedOp, TargetPlan};

/// A source user whose account already exists on the target, not owned by dirsync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExistingAccount {
    /// Source key.
    pub key: String,
    /// The login the create would have used (the mapping's login field).
    pub login: String,
    /// The existing account's id on the target.
    pub remote_id: String,
}

/// Whether a plan should be checked against the target's account list: dirsync owns no account
/// there yet (a first contact) and the plan creates some.
pub fn needs_check(plan: &TargetPlan) -> bool {
    plan.owned == 0 && plan.summary.create > 0
}

/// Moves every create whose login (`login_field` of the desired account, compared
/// case-insensitively) matches a remote account's login or email out of `plan.ops` into
/// `plan.existing`, and counts it in `summary.exists_unowned` instead of `summary.create`.
/// Returns the held accounts (as the creates would have made them).
pub fn hold_existing(
    plan: &mut TargetPlan,
    login_field: &str,
    remote: &[RemoteAccount],
) -> Vec<(Account, String)> {
    if remote.is_empty() {
        return Vec::new();
    }
    // Login first, then email: an account found by its login wins over one whose email matches.
    let mut index: HashMap<String, &str> = HashMap::with_capacity(remote.len() * 2);
    for r in remote {
        if let Some(e) = r.email.as_deref() {
            index.insert(email_fold(e), r.remote_id.as_str());
        }
    }
    for r in remote {
        if let Some(l) = r.login.as_deref() {
            index.insert(email_fold(l), r.remote_id.as_str());
        }
    }
    let mut held = Vec::new();
    let ops = std::mem::take(&mut plan.ops);
    plan.ops.reserve(ops.len());
    for op in ops {
        let found = match &op.op {
            Op::Create { account } => account.fields.get(login_field).and_then(|login| {
                index
                    .get(&email_fold(login))
                    .map(|id| (login.clone(), (*id).to_string()))
            }),
            _ => None,
        };
        match (found, op.op) {
            (Some((login, id)), Op::Create { account }) => {
                plan.existing.push(ExistingAccount {
                    key: op.key,
                    login,
                    remote_id: id.clone(),
                });
                held.push((account, id));
            }
            (_, other) => plan.ops.push(PlannedOp {
                key: op.key,
                label: op.label,
                remote_id: op.remote_id,
                op: other,
            }),
        }
    }
    let n = held.len() as u64;
    plan.summary.create = plan.summary.create.saturating_sub(n);
    plan.summary.exists_unowned += n;
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::{BTreeMap, BTreeSet};

    use crate::plan::Summary;

    fn create(key: &str, login: &str) -> PlannedOp {
        let mut fields = BTreeMap::new();
        fields.insert("email".to_string(), login.to_string());
        PlannedOp {
            key: key.into(),
            label: Some(login.into()),
            remote_id: None,
            op: Op::Create {
                account: Account {
                    key: key.into(),
                    fields,
                    roles: BTreeSet::new(),
                    groups: BTreeSet::new(),
                    enabled: true,
                    hash: Default::default(),
                },
            },
        }
    }

    fn remote(id: &str, login: Option<&str>, email: Option<&str>) -> RemoteAccount {
        RemoteAccount {
            remote_id: id.into(),
            login: login.map(Into::into),
            email: email.map(Into::into),
            fields: BTreeMap::new(),
            roles: BTreeSet::new(),
            enabled: true,
        }
    }

    fn plan(ops: Vec<PlannedOp>, owned: u64) -> TargetPlan {
        TargetPlan {
            summary: Summary {
                create: ops.len() as u64,
                ..Summary::default()
            },
            owned,
            ops,
            problems: Vec::new(),
            existing: Vec::new(),
            skipped_users: Vec::new(),
        }
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            creates: &'static [(&'static str, &'static str)],
            remote: Vec<RemoteAccount>,
            held: &'static [(&'static str, &'static str)],
        }
        let cases = [
            Case {
                name: "empty tenant: nothing held",
                creates: &[("1", "a@x.com"), ("2", "b@x.com")],
                remote: vec![],
                held: &[],
            },
            Case {
                name: "login match, case-insensitive",
                creates: &[("1", "Ann@X.com"), ("2", "b@x.com")],
                remote: vec![remote("r1", Some("ann@x.com"), None)],
                held: &[("1", "r1")],
            },
            Case {
                name: "email match when the target shows no login",
                creates: &[("1", "a@x.com")],
                remote: vec![remote("r9", None, Some(" A@x.com "))],
                held: &[("1", "r9")],
            },
            Case {
                name: "login wins over another account's email",
                creates: &[("1", "a@x.com")],
                remote: vec![
                    remote("by-email", Some("other"), Some("a@x.com")),
                    remote("by-login", Some("a@x.com"), Some("z@x.com")),
                ],
                held: &[("1", "by-login")],
            },
            Case {
                name: "no match: everything stays a create",
                creates: &[("1", "a@x.com"), ("2", "b@x.com")],
                remote: vec![remote("r1", Some("c@x.com"), Some("d@x.com"))],
                held: &[],
            },
            Case {
                name: "all match",
                creates: &[("1", "a@x.com"), ("2", "b@x.com")],
                remote: vec![
                    remote("r2", Some("b@x.com"), None),
                    remote("r1", Some("a@x.com"), None),
                ],
                held: &[("1", "r1"), ("2", "r2")],
            },
        ];
        for c in cases {
            let ops: Vec<PlannedOp> = c.creates.iter().map(|(k, l)| create(k, l)).collect();
            let total = ops.len();
            let mut p = plan(ops, 0);
            assert!(needs_check(&p), "{}", c.name);
            let n = hold_existing(&mut p, "email", &c.remote).len();
            assert_eq!(n, c.held.len(), "{}", c.name);
            let got: Vec<(&str, &str)> = p
                .existing
                .iter()
                .map(|e| (e.key.as_str(), e.remote_id.as_str()))
                .collect();
            assert_eq!(got, c.held.to_vec(), "{}", c.name);
            assert_eq!(p.summary.create as usize, total - n, "{}", c.name);
            assert_eq!(p.summary.exists_unowned as usize, n, "{}", c.name);
            assert_eq!(p.ops.len(), total - n, "{}", c.name);
            for e in &p.existing {
                assert!(!p.ops.iter().any(|o| o.key == e.key), "{}", c.name);
            }
        }
    }

    #[test]
    fn checked_only_on_first_contact_with_creates() {
        assert!(!needs_check(&plan(vec![create("1", "a@x.com")], 3)));
        assert!(!needs_check(&plan(vec![], 0)));
        assert!(needs_check(&plan(vec![create("1", "a@x.com")], 0)));
    }
}
