//! Quarantined records the planner must still recognise: a record without a key is matched to
//! the account recorded for it by its email (else every account missing from the source is
//! held), and a user some target cannot map is quarantined for every target. Pure.

use std::collections::HashMap;

use crate::mapping::TargetMapping;
use crate::mapping::{AccountState, RecordedAccount};
use crate::model::{Quarantined, User, email_fold};

use super::prefilter::Settled;

/// The quarantined records without a usable key, as the planner looks for their accounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keyless {
    /// Folded email → location of the record read with it.
    emails: Vec<(String, String)>,
    /// Locations of records with neither a key nor an email: nothing tells whose they are.
    anonymous: Vec<String>,
}

/// An account left alone this run because a quarantined record without a key may be its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub key: String,
    /// Why, for the report.
    pub reason: String,
}

impl Keyless {
    /// The keyless records among `quarantined`.
    pub fn new(quarantined: &[Quarantined]) -> Keyless {
        let mut k = Keyless::default();
        for q in quarantined.iter().filter(|q| q.key.is_none()) {
            match &q.email {
                Some(e) => k.emails.push((email_fold(e), q.location.clone())),
                None => k.anonymous.push(q.location.clone()),
            }
        }
        k.emails.sort();
        k
    }

    pub fn is_empty(&self) -> bool {
        self.emails.is_empty() && self.anonymous.is_empty()
    }

    /// The owned accounts that would be missing from the source: recorded, owned, not among
    /// `users` (sorted by key), not quarantined (sorted) and not settled by a prefilter.
    /// Nothing when there are no keyless records.
    pub fn candidates<'a>(
        &self,
        users: &[User],
        recorded: &'a [RecordedAccount],
        quarantined: &[String],
        settled: Option<&Settled>,
    ) -> Vec<&'a RecordedAccount> {
        if self.is_empty() {
            return Vec::new();
        }
        recorded
            .iter()
            .enumerate()
            .filter(|(j, r)| {
                r.owned
                    && !settled.is_some_and(|st| st.seen.get(*j).copied().unwrap_or(false))
                    && users
                        .binary_search_by(|u| u.key.as_str().cmp(&r.key))
                        .is_err()
                    && quarantined
                        .binary_search_by(|k| k.as_str().cmp(&r.key))
                        .is_err()
            })
            .map(|(_, r)| r)
            .collect()
    }

    /// Which `candidates` to leave alone: those whose login or any last applied field value
    /// (`states`, by key) is the email of a keyless record; every one of them when a record has
    /// neither key nor email. Sorted by key.
    pub fn held(
        &self,
        candidates: &[&RecordedAccount],
        states: &HashMap<String, AccountState>,
    ) -> Vec<Held> {
        let mut out = Vec::new();
        for r in candidates {
            if let Some(loc) = self.anonymous.first() {
                out.push(Held {
                    key: r.key.clone(),
                    reason: format!(
                        "left alone: the quarantined record at {loc} has neither key nor email \
                         and may be this user; no account is disabled or deleted as missing \
                         until it is fixed"
                    ),
                });
                continue;
            }
            let values = r.login.iter().chain(
                states
                    .get(&r.key)
                    .into_iter()
                    .flat_map(|s| s.fields.values()),
            );
            let found = values.filter(|v| v.contains('@')).find_map(|v| {
                let v = email_fold(v);
                let i = self
                    .emails
                    .partition_point(|(e, _)| e.as_str() < v.as_str());
                self.emails
                    .get(i)
                    .filter(|(e, _)| *e == v)
                    .map(|(e, loc)| (e.clone(), loc.clone()))
            });
            if let Some((email, loc)) = found {
                out.push(Held {
                    key: r.key.clone(),
                    reason: format!(
                        "left alone: the quarantined record at {loc} has no key, and its email \
                         {email:?} is this account's"
                    ),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

/// A user some target cannot map (a required field renders empty, a bool field is not a
/// bool): quarantined for every target. `mappings` are (target name, mapping); `origin` names
/// the source (a file or a server) for the report, since the user's line is not kept.
pub fn unmappable(
    mappings: &[(&str, &TargetMapping)],
    user: &User,
    origin: &str,
) -> Option<Quarantined> {
    for (target, m) in mappings {
        if let Some((field, why)) = m.unmappable(user) {
            return Some(Quarantined::new(
                Some(&user.key),
                origin,
                field,
                format!("target {target}: {why}"),
                "",
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{ContentHash, FieldKind, FieldMapping, Mapped, Template, UserFilter};

    fn rec(key: &str, login: &str, owned: bool) -> RecordedAccount {
        RecordedAccount {
            key: key.into(),
            remote_id: None,
            login: Some(login.into()),
            hash: ContentHash::from_u128(0),
            enabled: true,
            owned,
            adopted: false,
            disabled_at: None,
        }
    }

    fn keyless(email: Option<&str>, line: u32) -> Quarantined {
        Quarantined::new(None, format!("hr.csv:{line}"), "id", "empty key", "").with_email(email)
    }

    #[test]
    fn keyless_records_hold_the_accounts_they_may_be() {
        // Recorded: a (in the source), b (missing; login is its email), c (missing; login is
        // a user name, the email only in its applied fields), d (missing, not owned), q
        // (quarantined by key).
        let recorded = vec![
            rec("a", "a@x", true),
            rec("b", "B@X", true),
            rec("c", "cuser", true),
            rec("d", "d@x", false),
            rec("q", "q@x", true),
        ];
        let users = vec![User::new("a", "a@x")];
        let quarantined_keys = vec!["q".to_string()];
        let mut states = HashMap::new();
        let mut st = AccountState::default();
        st.fields.insert("emailAddress".into(), "c@x".into());
        states.insert("c".to_string(), st);
        // (case, keyless records, expected held keys)
        let cases: Vec<(&str, Vec<Quarantined>, Vec<&str>)> = vec![
            ("none", vec![], vec![]),
            (
                "email is a login, any case",
                vec![keyless(Some(" b@x "), 3)],
                vec!["b"],
            ),
            (
                "email in the applied fields",
                vec![keyless(Some("c@x"), 3)],
                vec!["c"],
            ),
            (
                "email of nobody missing",
                vec![keyless(Some("new@x"), 3)],
                vec![],
            ),
            (
                "email of a present user",
                vec![keyless(Some("a@x"), 3)],
                vec![],
            ),
            (
                "not owned is never a candidate",
                vec![keyless(Some("d@x"), 3)],
                vec![],
            ),
            (
                "no email: every missing owned account",
                vec![keyless(None, 3)],
                vec!["b", "c"],
            ),
            (
                "blank email counts as none",
                vec![keyless(Some("  "), 3)],
                vec!["b", "c"],
            ),
            (
                "a keyed record is not keyless",
                vec![
                    Quarantined::new(Some("z"), "hr.csv:4", "email", "bad", "")
                        .with_email(Some("b@x")),
                ],
                vec![],
            ),
        ];
        for (case, q, want) in cases {
            let k = Keyless::new(&q);
            let cands = k.candidates(&users, &recorded, &quarantined_keys, None);
            let held = k.held(&cands, &states);
            let got: Vec<&str> = held.iter().map(|h| h.key.as_str()).collect();
            assert_eq!(got, want, "{case}");
            assert!(
                held.iter().all(|h| h.reason.contains("hr.csv:3")),
                "{case}: {held:?}"
            );
        }
        // Settled accounts (prefiltered reads) are never candidates.
        let k = Keyless::new(&[keyless(None, 3)]);
        let settled = Settled {
            seen: vec![false, true, false, false, false],
            ..Settled::default()
        };
        let cands = k.candidates(&users, &recorded, &quarantined_keys, Some(&settled));
        let keys: Vec<&str> = cands.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, vec!["c"]);
    }

    fn mapping(required_tpl: &str, bool_tpl: &str, include: &[&str]) -> TargetMapping {
        let f = |name: &str, kind, required, tpl: &str| FieldMapping {
            name: name.into(),
            kind,
            required,
            template: Template::parse(tpl).unwrap(),
        };
        TargetMapping {
            fields: vec![
                f("email", FieldKind::Email, true, "{email}"),
                f("firstName", FieldKind::Text, true, required_tpl),
                f("nick", FieldKind::Text, false, "{other_name}"),
                f("tech", FieldKind::Bool, false, bool_tpl),
            ],
            role_rules: vec![],
            default_roles: vec![],
            group_rules: vec![],
            default_groups: vec![],
            filter: UserFilter {
                include_groups: include.iter().map(|g| g.to_string()).collect(),
                exclude_groups: vec![],
            },
            login_field: "email".into(),
        }
    }

    #[test]
    fn unmappable_agrees_with_the_mapping() {
        let user = |given: Option<&str>, extra: &str| {
            let mut u = User::new("k1", "k1@x");
            u.given_name = given.map(str::to_string);
            u.groups = vec!["staff".into()];
            u.extra.insert("flag".into(), extra.into());
            u.normalized()
        };
        // (case, mapping, user, unmappable field)
        let cases: Vec<(&str, TargetMapping, User, Option<&str>)> = vec![
            (
                "all there",
                mapping("{given_name}", "false", &[]),
                user(Some("Amy"), "true"),
                None,
            ),
            (
                "required empty",
                mapping("{given_name}", "false", &[]),
                user(None, "x"),
                Some("firstName"),
            ),
            (
                "blank is empty",
                mapping("{given_name}", "false", &[]),
                user(Some("   "), "x"),
                Some("firstName"),
            ),
            (
                "literal around it",
                mapping("Dr. {given_name}", "false", &[]),
                user(None, "x"),
                None,
            ),
            (
                "spaces only around it",
                mapping("  {given_name} ", "false", &[]),
                user(None, "x"),
                Some("firstName"),
            ),
            (
                "bool from a field",
                mapping("{given_name}", "{flag}", &[]),
                user(Some("A"), "maybe"),
                Some("tech"),
            ),
            (
                "bool from a field, ok",
                mapping("{given_name}", "{flag}", &[]),
                user(Some("A"), "yes"),
                None,
            ),
            (
                "bool empty is left out",
                mapping("{given_name}", "{flag}", &[]),
                user(Some("A"), ""),
                None,
            ),
            (
                "out of scope",
                mapping("{given_name}", "false", &["admins"]),
                user(None, "x"),
                None,
            ),
        ];
        for (case, m, u, want) in cases {
            let got = m.unmappable(&u);
            assert_eq!(got.as_ref().map(|g| g.0.as_str()), want, "{case}");
            // The cheap check agrees with the full mapping, message included.
            match (m.map(&u), got) {
                (Mapped::Invalid(why), Some((_, msg))) => assert_eq!(why, msg, "{case}"),
                (Mapped::Account(_) | Mapped::Filtered, None) => {}
                (mapped, got) => panic!("{case}: map gave {mapped:?}, unmappable {got:?}"),
            }
        }
        // Quarantined for every target, naming the target.
        let ok = mapping("{given_name}", "false", &[]);
        let strict = mapping("{given_name}", "false", &[]);
        let q = unmappable(
            &[("covata", &ok), ("p6", &strict)],
            &user(None, "x"),
            "hr.csv",
        )
        .unwrap();
        assert_eq!(q.key.as_deref(), Some("k1"));
        assert_eq!(
            (q.location.as_str(), q.field.as_str()),
            ("hr.csv", "firstName")
        );
        assert!(
            q.problem
                .starts_with("target covata: field firstName is empty"),
            "{q:?}"
        );
        assert!(unmappable(&[("covata", &ok)], &user(Some("A"), "x"), "hr.csv").is_none());
    }
}
