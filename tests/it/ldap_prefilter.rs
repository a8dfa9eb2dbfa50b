//! The prefiltered LDAP read against a real slapd: users exactly as recorded on every target
//! are dropped while the entries arrive, and the plan is the same as with the whole read.
//!
//! - the library: `ldap::load_filtered` offers every user exactly as `ldap::read` builds it
//!   (groups from `memberOf`, from a group search, nested), keeps what it is told, counts all;
//!   every entry problem (duplicate emails and keys, bad entries, missing emails when they are
//!   errors) quarantines exactly what the whole read quarantines; a search cut short fails it
//!   with the very error of the whole read;
//! - the binary: a second `sync` sends nothing and plans nothing; a renamed, regrouped, disabled
//!   and deleted entry give exactly their operations; a duplicate email among unchanged entries
//!   quarantines both (exit 7, their accounts untouched); the report counts every source user.

use std::collections::BTreeMap;
use std::process::Output;

use serde_json::Value;

use dirsync::model::User;
use dirsync::source::ldap::{
    self, DisabledRule, GroupSearch, GroupSource, LdapSettings, MissingEmail,
};

use crate::support::cmd::{out, str_fields};
use crate::support::covata::{FakeCovata, FakeUser};
use crate::support::env::{Backend, TestEnv};
use crate::support::ldap_fixture::{
    GROUPS, PEOPLE, data, people_source_keys, planet_express, settings,
};
use crate::support::slapd::{Slapd, SlapdOptions};

/// A filtered read: every user offered (in the order offered), and the snapshot.
async fn filtered(
    s: &LdapSettings,
    keep: impl Fn(&User) -> bool + Send + Sync,
) -> Result<(Vec<User>, dirsync::model::Snapshot), ldap::LdapSourceError> {
    let mut offered = Vec::new();
    let snapshot = ldap::load_filtered(s, &mut |u: &User| {
        offered.push(u.clone());
        keep(u)
    })
    .await?;
    Ok((offered, snapshot))
}

fn sorted(mut users: Vec<User>) -> Vec<User> {
    users.sort_by(|a, b| a.key.cmp(&b.key));
    users
}

/// The filtered read offers exactly the users of the whole read, keeps those it is told to,
/// and counts them all.
async fn assert_same_users(s: &LdapSettings) {
    let whole = ldap::read(s).await.unwrap();
    let (offered, snapshot) = filtered(s, |u| u.email.starts_with('l') || !u.enabled)
        .await
        .unwrap();
    assert_eq!(sorted(offered), whole.snapshot.users());
    assert!(snapshot.is_partial());
    assert_eq!(snapshot.len(), whole.snapshot.len());
    let want: Vec<&User> = whole
        .snapshot
        .users()
        .iter()
        .filter(|u| u.email.starts_with('l') || !u.enabled)
        .collect();
    assert!(want.len() >= 2, "{want:?}");
    assert_eq!(snapshot.users().iter().collect::<Vec<_>>(), want);
    // Nothing kept: no user in memory, every user counted.
    let (_, none) = filtered(s, |_| false).await.unwrap();
    assert!(none.is_partial() && none.users().is_empty());
    assert_eq!(none.len(), whole.snapshot.len());
}

#[tokio::test]
async fn ldap_prefilter_offers_every_user_as_the_whole_read_builds_it() {
    let server = planet_express();
    // memberOf, direct and nested (the nested parents are looked up after the search).
    let mut s = settings(&server);
    assert_same_users(&s).await;
    s.nested_groups = true;
    assert_same_users(&s).await;
    let whole = ldap::read(&s).await.unwrap();
    let leela = whole
        .snapshot
        .users()
        .iter()
        .find(|u| u.email == "leela@planetexpress.com")
        .unwrap();
    assert_eq!(leela.groups.len(), 3, "{leela:?}"); // admins, crew, managers
    // Group search: member, uniqueMember, memberUid; direct and nested.
    let mut s = settings(&server);
    s.groups = GroupSource::Search(GroupSearch::new(GROUPS));
    assert_same_users(&s).await;
    s.nested_groups = true;
    assert_same_users(&s).await;
    // Without groups.
    let mut s = settings(&server);
    s.groups = GroupSource::None;
    assert_same_users(&s).await;
}

/// The filtered read fails with exactly the error of the whole read.
async fn assert_same_error(s: &LdapSettings) -> String {
    let whole = ldap::read(s).await.unwrap_err().to_string();
    for keep_all in [false, true] {
        let e = filtered(s, move |_| keep_all)
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(e, whole);
    }
    whole
}

/// The filtered read quarantines exactly what the whole read quarantines (it reads again
/// whole) and has the same users; the quarantined records, one `location field: problem` a
/// line.
async fn assert_same_quarantine(s: &LdapSettings) -> String {
    let whole = ldap::read(s).await.unwrap().snapshot;
    assert!(!whole.quarantined().is_empty());
    for keep_all in [false, true] {
        let (_, snapshot) = filtered(s, move |_| keep_all).await.unwrap();
        assert_eq!(snapshot.quarantined(), whole.quarantined());
        assert_eq!(snapshot.users(), whole.users());
        assert_eq!(snapshot.len(), whole.len());
    }
    whole
        .quarantined()
        .iter()
        .map(|q| format!("{} {}: {}", q.location, q.field, q.problem))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn ldap_prefilter_problems_are_reported_exactly_as_the_whole_read_reports_them() {
    let server = planet_express();
    // An email written differently on another entry (compared case-insensitively).
    server.modify(&format!(
        "dn: uid=bender,ou=crew,{PEOPLE}\nchangetype: modify\nreplace: mail\n\
         mail: FRY@PlanetExpress.com\n-\n"
    ));
    let e = assert_same_quarantine(&settings(&server)).await;
    assert!(
        e.contains("duplicate email") && e.contains("uid=bender") && e.contains("uid=fry"),
        "{e}"
    );
    // A duplicate key, and the same with nested memberOf groups (users offered at the end).
    let mut s = settings(&server);
    s.attributes.key = "sn".into();
    server.modify(&format!(
        "dn: uid=bender,ou=crew,{PEOPLE}\nchangetype: modify\nreplace: mail\n\
         mail: bender@planetexpress.com\n-\nreplace: sn\nsn: Fry\n-\n"
    ));
    let e = assert_same_quarantine(&s).await;
    assert!(e.contains("duplicate key \"Fry\""), "{e}");
    s.nested_groups = true;
    assert_same_quarantine(&s).await;
    // Entry problems: a control character in a name, an invalid email; all of them listed.
    server.modify(&format!(
        "dn: uid=bender,ou=crew,{PEOPLE}\nchangetype: modify\nreplace: sn\n\
         sn: Rodriguez\n-\nreplace: givenName\ngivenName:: QmVuAGRlcg==\n-\n\n\
         dn: uid=fry,ou=crew,{PEOPLE}\nchangetype: modify\nreplace: mail\nmail: fry at planetexpress\n-\n"
    ));
    let e = assert_same_quarantine(&settings(&server)).await;
    assert!(
        e.contains("control character in attribute \"givenName\"") && e.contains("invalid email"),
        "{e}"
    );
    // Entries without an email, when that is an error.
    server.modify(&format!(
        "dn: uid=bender,ou=crew,{PEOPLE}\nchangetype: modify\nreplace: givenName\n\
         givenName: Bender\n-\n\n\
         dn: uid=fry,ou=crew,{PEOPLE}\nchangetype: modify\nreplace: mail\nmail: fry@planetexpress.com\n-\n"
    ));
    assert_same_users(&settings(&server)).await;
    let mut s = settings(&server);
    s.missing_email = MissingEmail::Error;
    let e = assert_same_quarantine(&s).await;
    assert!(e.contains("uid=zoidberg") && e.contains("no email"), "{e}");
    // A key attribute some entries lack.
    let mut s = settings(&server);
    s.attributes.key = "employeeNumber".into();
    let e = assert_same_quarantine(&s).await;
    assert!(e.contains("no key attribute"), "{e}");
    // A search cut short: the server's size limit without paging.
    let mut s = settings(&server);
    s.page_size = 0;
    s.bind_dn = None;
    s.bind_password = None;
    let limited = Slapd::start(
        SlapdOptions {
            size_limit: Some(10),
            paged_total_unlimited: false,
            tls: false,
        },
        &data("planet-express.ldif"),
    );
    s.url = limited.url();
    let e = assert_same_error(&s).await;
    assert!(e.contains("sizeLimitExceeded"), "{e}");
}

// ---- the real binary -------------------------------------------------------------------

crate::support::env::suite_env!(Env {
    server: Slapd,
    fake: FakeCovata,
});

impl Env {
    async fn new() -> Env {
        let env = Env {
            env: TestEnv::new(Backend::Sqlite).await,
            server: planet_express(),
            fake: FakeCovata::start().await,
        };
        env.config()
            .ldap(&env.server.url(), &people_source_keys(""))
            .covata_with_admins(&env.fake.base_url(), "max_backoff = \"2s\"")
            .write();
        env
    }

    /// `args` with `--format json`: the exit code and the report.
    fn json(&self, args: &[&str]) -> (Option<i32>, Value, Output) {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        let o = self.run(&a);
        let report = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("not a JSON report ({e}): {}", out(&o)));
        (o.status.code(), report, o)
    }

    /// The fake's users by email.
    fn users(&self) -> BTreeMap<String, FakeUser> {
        self.fake
            .users()
            .into_iter()
            .map(|u| (u.email.clone(), u))
            .collect()
    }
}

/// The target's summary in a report.
fn summary(report: &Value) -> &Value {
    &report["targets"][0]["summary"]
}

/// `(op, email-or-key label)` of every planned operation, sorted.
fn ops(report: &Value) -> Vec<(String, String)> {
    let mut ops: Vec<(String, String)> = str_fields(&report["targets"][0]["ops"], ["op", "label"])
        .into_iter()
        .map(|[op, label]| (op, label))
        .collect();
    ops.sort();
    ops
}

#[tokio::test]
async fn ldap_prefilter_second_sync_sends_nothing_and_changes_give_exactly_their_ops() {
    let env = Env::new().await;
    let (code, first, o) = env.json(&["sync"]);
    assert_eq!(code, Some(0), "{}", out(&o));
    assert_eq!(first["source"]["users"], 49, "{first}");
    // 48 enabled users created; Hermes is disabled in the directory and never created.
    assert_eq!(summary(&first)["create"], 48, "{first}");
    let before = env.users();
    assert_eq!(before.len(), 48);

    // Nothing changed: nothing planned, nothing sent, and no user kept in memory.
    env.fake.clear_requests();
    let (code, second, o) = env.json(&["sync"]);
    assert_eq!(code, Some(0), "{}", out(&o));
    assert_eq!(second["status"], "no_changes", "{second}");
    assert_eq!(second["source"]["users"], 49, "the full count: {second}");
    let s = summary(&second);
    assert_eq!(s["unchanged"], 48, "{second}");
    assert_eq!(s["skipped"], 1, "{second}");
    for op in [
        "create",
        "update",
        "set_roles",
        "enable",
        "disable",
        "delete",
    ] {
        assert_eq!(s[op], 0, "{op}: {second}");
    }
    assert!(env.fake.requests().is_empty(), "{:?}", env.fake.requests());
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(
        log.contains("LDAP source read (prefiltered)") && log.contains("kept=0"),
        "{log}"
    );
    assert_eq!(env.users(), before);

    // A new name, a group change (Leela leaves admins), a disabled and a deleted entry.
    env.server.modify(&format!(
        "dn: uid=fry,ou=crew,{PEOPLE}\nchangetype: modify\nreplace: givenName\n\
         givenName: Philip J.\n-\n\n\
         dn: cn=admins,{GROUPS}\nchangetype: modify\ndelete: member\n\
         member: uid=leela,ou=crew,{PEOPLE}\n-\n\n\
         dn: uid=bender,ou=crew,{PEOPLE}\nchangetype: modify\nadd: nsAccountLock\n\
         nsAccountLock: TRUE\n-\n\n\
         dn: uid=worker01,ou=office,{PEOPLE}\nchangetype: delete\n"
    ));
    let (code, plan, o) = env.json(&["plan"]);
    assert_eq!(code, Some(2), "{}", out(&o));
    assert_eq!(plan["source"]["users"], 48, "the full count: {plan}");
    let s = summary(&plan);
    assert_eq!(s["unchanged"], 44, "{plan}");
    assert_eq!(
        ops(&plan),
        vec![
            (
                "disable".to_string(),
                "bender@planetexpress.com".to_string()
            ),
            (
                "disable".to_string(),
                "worker01@planetexpress.com".to_string()
            ),
            (
                "set_roles".to_string(),
                "leela@planetexpress.com".to_string()
            ),
            ("update".to_string(), "fry@planetexpress.com".to_string()),
        ],
        "{plan}"
    );
    assert!(env.fake.requests().is_empty(), "plan sends nothing");

    let (code, applied, o) = env.json(&["sync"]);
    assert_eq!(code, Some(0), "{}", out(&o));
    assert_eq!(applied["source"]["users"], 48, "{applied}");
    assert_eq!(ops(&applied), ops(&plan));
    let after = env.users();
    assert_eq!(after.len(), 48);
    let mut changed: Vec<&str> = Vec::new();
    for (email, u) in &after {
        if before[email] != *u {
            changed.push(email);
        }
    }
    assert_eq!(
        changed,
        vec![
            "bender@planetexpress.com",
            "fry@planetexpress.com",
            "leela@planetexpress.com",
            "worker01@planetexpress.com"
        ]
    );
    assert_eq!(
        after["fry@planetexpress.com"].first_name.as_deref(),
        Some("Philip J.")
    );
    assert!(
        !after["leela@planetexpress.com"]
            .roles
            .contains(&"ROLE_SYSTEM_ADMIN".to_string())
    );
    assert!(!after["bender@planetexpress.com"].enabled);
    assert!(!after["worker01@planetexpress.com"].enabled);

    // And in line again.
    env.fake.clear_requests();
    let (code, again, o) = env.json(&["sync"]);
    assert_eq!(code, Some(0), "{}", out(&o));
    assert_eq!(again["status"], "no_changes", "{again}");
    assert_eq!(again["source"]["users"], 48, "{again}");
    assert!(env.fake.requests().is_empty(), "{:?}", env.fake.requests());
}

#[tokio::test]
async fn ldap_prefilter_duplicate_email_among_unchanged_entries_quarantines_both() {
    let env = Env::new().await;
    let (code, _, o) = env.json(&["sync"]);
    assert_eq!(code, Some(0), "{}", out(&o));
    let before = env.users();

    // Amy takes Fry's address (another case); everything else is as recorded.
    env.server.modify(&format!(
        "dn: cn=Amy Wong+sn=Kroker,{PEOPLE}\nchangetype: modify\nreplace: mail\n\
         mail: Fry@PlanetExpress.COM\n-\n"
    ));
    let mut s = settings(&env.server);
    s.disabled = Some(DisabledRule {
        attribute: "nsAccountLock".into(),
        values: vec!["TRUE".into()],
    });
    s.extra.clear();
    let whole = ldap::read(&s).await.unwrap().snapshot;
    let dns: Vec<&str> = whole
        .quarantined()
        .iter()
        .map(|q| q.location.as_str())
        .collect();
    assert_eq!(dns.len(), 2, "{:?}", whole.quarantined());
    env.fake.clear_requests();
    for (cmd, want) in [("plan", 0), ("sync", 7)] {
        let o = env.run(&[cmd]);
        assert_eq!(o.status.code(), Some(want), "{}", out(&o));
        let stdout = String::from_utf8_lossy(&o.stdout);
        for dn in &dns {
            assert!(
                stdout.lines().any(|l| l.contains("? quarantined")
                    && l.contains(dn)
                    && l.contains("duplicate email")),
                "{cmd}: want {dn}\n{}",
                out(&o)
            );
        }
    }
    // Nothing else changed, and both accounts are left as they are (not disabled).
    assert!(env.fake.requests().is_empty(), "{:?}", env.fake.requests());
    assert_eq!(env.users(), before);
}
