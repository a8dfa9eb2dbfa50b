//! Groups: the group search (`member` / `uniqueMember` DNs, `memberUid` user ids) into an
//! index, `memberOf` nesting looked up after the user search, and group DNs checked.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ldap3::{Ldap, Scope};
use tracing::warn;

use super::conn::{describe, paged_search, rc_name, search_entry, text};
use super::decode::{dn_key, shown, shown_bytes, values};
use super::{GroupSearch, GroupSource, LdapProblem, LdapSettings};
use crate::model::User;
use crate::source::rules::has_control;

/// A `uniqueMember` value (Name and Optional UID, RFC 4517) without its optional
/// `#'0101'B` UID suffix. A `#` elsewhere is part of the DN (`cn=Room #5,...`: RFC 4514 only
/// escapes a leading `#`).
pub(super) fn without_uid_suffix(member: &str) -> &str {
    if let Some((dn, bits)) = member.rsplit_once("#'")
        && let Some(bits) = bits.strip_suffix("'B")
        && bits.bytes().all(|b| b == b'0' || b == b'1')
    {
        return dn;
    }
    member
}

/// Memberships read from group entries.
pub(super) struct GroupIndex {
    /// Member DN key -> DNs of the groups listing it.
    by_member_dn: HashMap<String, Vec<Arc<str>>>,
    /// Member user id -> DNs of the groups listing it.
    by_uid: HashMap<String, Vec<Arc<str>>>,
}

impl GroupIndex {
    pub(super) fn groups_of(&self, dn: &str, uid: Option<&str>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if let Some(gs) = self.by_member_dn.get(&dn_key(dn)) {
            out.extend(gs.iter().map(|g| g.to_string()));
        }
        if let Some(uid) = uid
            && let Some(gs) = self.by_uid.get(uid)
        {
            out.extend(gs.iter().map(|g| g.to_string()));
        }
        out
    }

    /// `groups` and every group that contains one of them, transitively (cycles are fine).
    pub(super) fn closure(&self, groups: &[String]) -> Vec<String> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        let mut todo: Vec<String> = groups.to_vec();
        while let Some(g) = todo.pop() {
            if !seen.insert(dn_key(&g)) {
                continue;
            }
            if let Some(parents) = self.by_member_dn.get(&dn_key(&g)) {
                todo.extend(parents.iter().map(|p| p.to_string()));
            }
            out.push(g);
        }
        out
    }
}

pub(super) async fn group_index(
    s: &LdapSettings,
    g: &GroupSearch,
    ldap: &mut Ldap,
) -> Result<GroupIndex, String> {
    let mut attrs = g.member_attributes.clone();
    attrs.extend(g.member_uid_attribute.iter().cloned());
    let mut index = GroupIndex {
        by_member_dn: HashMap::new(),
        by_uid: HashMap::new(),
    };
    paged_search(
        s,
        ldap,
        &g.base_dn,
        g.scope,
        &g.filter,
        &attrs,
        "groups",
        |e| {
            let dn: Arc<str> = Arc::from(e.dn.as_str());
            // A value that is not UTF-8 can name no user: user DNs are UTF-8, and so must be
            // the user ids matched against memberUid (else the user's entry is a problem).
            let text = |attr: &str, v: &[u8]| match std::str::from_utf8(v) {
                Ok(t) => Some(t.to_string()),
                Err(_) => {
                    warn!(
                        group = ?e.dn,
                        "LDAP group: a value of attribute {attr:?} is not UTF-8 and matches no user: {}",
                        shown_bytes(v)
                    );
                    None
                }
            };
            for m in &g.member_attributes {
                for v in values(&e, m) {
                    let Some(member) = text(m, v) else { continue };
                    index
                        .by_member_dn
                        .entry(dn_key(without_uid_suffix(&member)))
                        .or_default()
                        .push(Arc::clone(&dn));
                }
            }
            if let Some(mu) = &g.member_uid_attribute {
                for v in values(&e, mu) {
                    let Some(uid) = text(mu, v) else { continue };
                    index
                        .by_uid
                        .entry(uid.trim().to_string())
                        .or_default()
                        .push(Arc::clone(&dn));
                }
            }
        },
    )
    .await?;
    Ok(index)
}

/// Adds, to each user's groups, the groups containing them (read from each group's
/// `memberOf`, one base search per group).
pub(super) async fn nest_member_of(
    s: &LdapSettings,
    ldap: &mut Ldap,
    attribute: &str,
    users: &mut [User],
) -> Result<(), String> {
    let mut parents: HashMap<String, Vec<String>> = HashMap::new();
    let mut todo: Vec<String> = users.iter().flat_map(|u| u.groups.clone()).collect();
    while let Some(g) = todo.pop() {
        let k = dn_key(&g);
        if parents.contains_key(&k) {
            continue;
        }
        let mut found = Vec::new();
        let mut res = ldap
            .with_timeout(s.operation_timeout)
            .search(&g, Scope::Base, "(objectClass=*)", vec![attribute])
            .await
            .map_err(|e| format!("reading the groups of group {g:?}: {}", describe(&e)))?;
        match res.1.rc {
            0 => {
                for re in std::mem::take(&mut res.0) {
                    let e = search_entry(re.0)
                        .map_err(|m| format!("reading the groups of group {g:?}: {m}"))?;
                    for v in values(&e, attribute) {
                        let parent = std::str::from_utf8(v).map_err(|err| {
                            format!(
                                "reading the groups of group {g:?}: invalid UTF-8 in attribute \
                                 {attribute:?} (after byte {} of the value): {}",
                                err.valid_up_to(),
                                shown_bytes(v)
                            )
                        })?;
                        found.push(parent.to_string());
                    }
                }
            }
            // A memberOf value pointing at an entry we cannot see: no parents.
            32 => {}
            rc => {
                return Err(format!(
                    "reading the groups of group {g:?}: {} ({rc}){}",
                    rc_name(rc),
                    text(&res.1.text)
                ));
            }
        }
        todo.extend(found.iter().cloned());
        parents.insert(k, found);
    }
    for u in users {
        let mut seen: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        let mut todo = u.groups.clone();
        while let Some(g) = todo.pop() {
            let k = dn_key(&g);
            if !seen.insert(k.clone()) {
                continue;
            }
            if let Some(p) = parents.get(&k) {
                todo.extend(p.iter().cloned());
            }
            out.push(g);
        }
        u.groups = out;
    }
    Ok(())
}

/// Groups (nested ones included) whose DN holds a control character, each naming the user's
/// DN and where its groups come from.
pub(super) fn group_problems(s: &LdapSettings, users: &[User], dns: &[String]) -> Vec<LdapProblem> {
    let mut problems = Vec::new();
    for (u, dn) in users.iter().zip(dns) {
        for g in u.groups.iter().filter(|g| has_control(g)) {
            problems.push(match &s.groups {
                GroupSource::MemberOf { attribute } => LdapProblem::value(
                    dn,
                    attribute,
                    format!(
                        "control character in a group of attribute {attribute:?}: {}",
                        shown(g)
                    ),
                )
                .with_value(g),
                _ => LdapProblem::entry(
                    dn,
                    format!(
                        "control character in the DN of a group found by the group search: {}",
                        shown(g)
                    ),
                )
                .with_value(g),
            });
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_closure_handles_cycles() {
        let g = |s: &str| -> Arc<str> { Arc::from(s) };
        let mut by_member_dn = HashMap::new();
        by_member_dn.insert("cn=a".to_string(), vec![g("cn=B")]);
        by_member_dn.insert("cn=b".to_string(), vec![g("cn=C")]);
        by_member_dn.insert("cn=c".to_string(), vec![g("cn=A")]);
        let idx = GroupIndex {
            by_member_dn,
            by_uid: HashMap::new(),
        };
        let mut all = idx.closure(&["cn=A".to_string()]);
        all.sort();
        assert_eq!(all, vec!["cn=A", "cn=B", "cn=C"]);
    }

    #[test]
    fn unique_member_uid_suffix() {
        assert_eq!(without_uid_suffix("cn=a,dc=x#'0101'B"), "cn=a,dc=x");
        assert_eq!(without_uid_suffix("cn=a,dc=x#''B"), "cn=a,dc=x");
        assert_eq!(without_uid_suffix("cn=Room #5,dc=x"), "cn=Room #5,dc=x");
        assert_eq!(without_uid_suffix("cn=a #'x'B,dc=x"), "cn=a #'x'B,dc=x");
    }
}
