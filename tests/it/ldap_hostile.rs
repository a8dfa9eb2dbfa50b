//! Hostile LDAP input: the corpus `tests/data/ldap/hostile.ldif` (groups in
//! `hostile-groups.ldif`) in a real slapd, read by the real binary and synced to the fake
//! Covata. Each input is either quarantined (exit 7, a `? quarantined` line naming the entry's
//! DN and the attribute, the value escaped; the entry never sent) or sent exactly
//! (asserted on what the fake received: its users, the request bodies, the ids in paths and
//! the emails in queries). A DN of about 8 KB and 100 KB values are generated here.
//!
//! The policy, as in the CSV source: a bad entry is quarantined and the good entry next to the
//! bad ones (every rejected OU has one) is created.

use std::collections::BTreeMap;
use std::process::Output;

use serde_json::Value;

use dirsync::secret::Secret;
use dirsync::source::ldap::{self, GroupSearch, GroupSource, LdapSettings, ServerType};

use crate::support::cmd::{out, stderr, stdout};
use crate::support::covata::{self, FakeCovata, FakeUser, Fault, PathMatch};
use crate::support::env::{Backend, SecretStyle, TestEnv};
use crate::support::ldap_fixture::{base64, data};
use crate::support::slapd::{READER_DN, READER_PASSWORD, Slapd, SlapdOptions};

const HOSTILE: &str = "ou=hostile,dc=example,dc=com";
const ACCEPTED: &str = "ou=accepted,ou=hostile,dc=example,dc=com";
const GROUPS: &str = "ou=groups,dc=example,dc=com";

/// The groups as slapd spells them in memberOf and in search results: special characters as
/// hex escapes.
const RND: &str =
    r"cn=R&D\2C Europe \22EU\22 \3Ccore\3E\3B a\2Bb \5C c,ou=groups,dc=example,dc=com";
const ADMINS: &str = r"cn=\23admins,ou=groups,dc=example,dc=com";
const SPACED: &str = r"cn=\20spaced\20,ou=groups,dc=example,dc=com";
const UNIQUE: &str = "cn=unique #1,ou=groups,dc=example,dc=com";
const POSIX: &str = "cn=posix hostile,ou=groups,dc=example,dc=com";
const ALL: &str = "cn=all hostile,ou=groups,dc=example,dc=com";

const SYSTEM_ADMIN: &str = "ROLE_SYSTEM_ADMIN";
const USER_ADMIN: &str = "ROLE_USER_ADMIN";
const COLLABORATOR: &str = "ROLE_COLLABORATOR";

/// The corpus, plus `more` (LDIF content records), with its groups added through the server.
fn corpus(more: &str) -> Slapd {
    let server = Slapd::start(
        SlapdOptions::default(),
        &format!("{}\n{more}", data("hostile.ldif")),
    );
    server.modify(&data("hostile-groups.ldif"));
    server
}

/// One user of `ou=accepted` as the target must hold it.
struct Want {
    key: &'static str,
    email: &'static str,
    first: &'static str,
    last: &'static str,
    other: Option<&'static str>,
    mobile: Option<&'static str>,
    roles: &'static [&'static str],
    /// The groups (memberOf), as slapd spells their DNs.
    groups: &'static [&'static str],
}

const fn want(
    key: &'static str,
    email: &'static str,
    first: &'static str,
    last: &'static str,
    roles: &'static [&'static str],
    groups: &'static [&'static str],
) -> Want {
    Want {
        key,
        email,
        first,
        last,
        other: None,
        mobile: None,
        roles,
        groups,
    }
}

/// Every entry of `ou=accepted`, as sent (trimmed, NFC, the first of several values).
fn accepted() -> Vec<Want> {
    vec![
        want(
            "a/b",
            "a/b@example.org",
            "Slash",
            "Path/To",
            &[SYSTEM_ADMIN],
            &[RND],
        ),
        want(
            "x?y#z",
            "x?y#z@example.org",
            "Query?",
            "Hash#Tag",
            &[COLLABORATOR],
            &[],
        ),
        want(
            "100%",
            "100%@example.org",
            "Percent",
            "%41%2F%00",
            &[COLLABORATOR],
            &[],
        ),
        want(
            "../etc",
            "../etc@example.org",
            "Dots",
            "..",
            &[COLLABORATOR],
            &[],
        ),
        want(
            "with space",
            "with.space@example.org",
            "Anne Marie",
            "van der Berg",
            &[COLLABORATOR],
            &[],
        ),
        Want {
            mobile: Some("+1 555 0100 #5"),
            ..want(
                "plus+tag",
                "plus+tag@example.org",
                "Plus",
                "Tag",
                &[COLLABORATOR],
                &[],
            )
        },
        Want {
            // Given as "Jose" + U+0301: sent in NFC.
            other: Some("\u{dc}n\u{ef}c\u{f8}d\u{e9} \u{2713} \u{65e5}\u{672c}\u{8a9e}"),
            ..want(
                "jos\u{e9}",
                "jos\u{e9}@ex\u{e4}mple.org",
                "Jos\u{e9}",
                "M\u{fc}ller-L\u{fc}denscheidt",
                &[USER_ADMIN],
                &[ADMINS],
            )
        },
        want(
            "obrien",
            "obrien@example.org",
            "Dan",
            r#"O'Brien, "D" <dan>; x+y \ z"#,
            &[SYSTEM_ADMIN],
            &[RND],
        ),
        want(
            "hash",
            "hash@example.org",
            "#Hash",
            "Lead",
            &[USER_ADMIN],
            &[ADMINS, SPACED],
        ),
        want(
            "room5",
            "room5@example.org",
            "Room",
            "Five",
            &[USER_ADMIN],
            &[ADMINS],
        ),
        want(
            "two-values",
            "first@example.org",
            "First",
            "Values",
            &[COLLABORATOR],
            &[],
        ),
        want(
            "mixed",
            "mixed@example.org",
            "Mixed",
            "Mail",
            &[COLLABORATOR],
            &[],
        ),
        want(
            "tab",
            "tab@example.org",
            "Tab\tbed",
            "Padded",
            &[COLLABORATOR],
            &[],
        ),
        want(
            "=1+1",
            "formula@example.org",
            "=cmd|' /C calc'!A0",
            "@SUM(A1)",
            &[COLLABORATOR],
            &[],
        ),
        want(
            "long-rdn",
            "long-rdn@example.org",
            "Long",
            "RDN",
            &[COLLABORATOR],
            &[],
        ),
    ]
}

crate::support::env::suite_env!(Env {
    server: Slapd,
    fake: FakeCovata,
});

impl Env {
    async fn new(more: &str) -> Env {
        let env = Env {
            env: TestEnv::new(Backend::Sqlite).await,
            server: corpus(more),
            fake: FakeCovata::start().await,
        };
        env.config(ACCEPTED, "", "");
        env
    }

    /// Reads `base` with key = uid and other_name = audio (see hostile.ldif); `ldap` is added
    /// to `[source.ldap]` (settings, then possibly subtables), `target` to the `[[target]]`.
    /// The role rules name their groups by DN as slapd spells it (hex escapes): a rule by the
    /// first RDN's value (`group = "#admins"`) does not match `cn=\23admins,...`, as the
    /// mapping does not undo hex escapes.
    fn config(&self, base: &str, ldap: &str, target: &str) {
        self.env
            .config()
            .ldap(
                &self.server.url(),
                &format!(
                    "base_dn = '{base}'\noperation_timeout = \"20s\"\n{ldap}\n\
                     [source.ldap.attributes]\nkey = \"uid\"\nother_name = \"audio\""
                ),
            )
            .covata(
                &self.fake.base_url(),
                SecretStyle::File,
                &format!("max_backoff = \"1s\"\n{target}"),
            )
            .role(RND, &[SYSTEM_ADMIN])
            .role(ADMINS, &[USER_ADMIN])
            .write();
    }

    /// Requests that change something on the target (not GETs, not token grants).
    fn changes(&self) -> Vec<covata::RecordedRequest> {
        self.fake
            .requests()
            .into_iter()
            .filter(|r| r.method != "GET" && !r.path.starts_with("/api/oauth"))
            .collect()
    }

    /// The fake's users, sorted by id.
    fn users(&self) -> Vec<FakeUser> {
        let mut users = self.fake.users();
        users.sort_by(|a, b| a.id.cmp(&b.id));
        users
    }

    /// Keys of the accounts the store records for the target, sorted.
    async fn stored_keys(&self) -> Vec<String> {
        let store = crate::support::cmd::store(&self.config_path()).await;
        let mut keys: Vec<String> = store
            .load_accounts("covata")
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.key)
            .collect();
        keys.sort();
        keys
    }
}

/// The library's settings for the same reads as the binary's config.
fn settings(server: &Slapd, base: &str) -> LdapSettings {
    let mut s = LdapSettings::new(server.url(), base, ServerType::Generic);
    s.bind_dn = Some(READER_DN.into());
    s.bind_password = Some(Secret::new(READER_PASSWORD));
    s.attributes.key = "uid".into();
    s.attributes.other_name = vec!["audio".into()];
    s
}

/// No secret of the test setup in the output.
fn assert_no_secrets(o: &Output) {
    let all = format!("{}\n{}", stdout(o), stderr(o));
    for secret in [READER_PASSWORD, covata::PASSWORD, covata::CLIENT_SECRET] {
        assert!(!all.contains(secret), "{secret:?} leaked\n{}", out(o));
    }
}

/// The fake holds exactly the users of `want` (with `disabled` disabled), field by field.
fn assert_fake_holds(fake: &FakeCovata, want: &[Want], disabled: &[&str]) {
    let users = fake.users();
    let mut emails: Vec<&str> = users.iter().map(|u| u.email.as_str()).collect();
    emails.sort_unstable();
    let mut want_emails: Vec<&str> = want.iter().map(|w| w.email).collect();
    want_emails.sort_unstable();
    assert_eq!(emails, want_emails);
    for w in want {
        let u = fake.user_by_email(w.email).unwrap();
        assert_eq!(u.email, w.email);
        assert_eq!(u.first_name.as_deref(), Some(w.first), "{}", w.email);
        assert_eq!(u.last_name.as_deref(), Some(w.last), "{}", w.email);
        assert_eq!(u.other_name.as_deref(), w.other, "{}", w.email);
        assert_eq!(u.mobile_number.as_deref(), w.mobile, "{}", w.email);
        assert_eq!(u.roles, w.roles, "{}", w.email);
        assert_eq!(u.enabled, !disabled.contains(&w.email), "{}", w.email);
    }
}

#[tokio::test]
async fn ldap_hostile_slashes_queries_percents_dots_spaces_and_non_ascii_are_sent_exactly() {
    let env = Env::new("").await;
    let want = accepted();
    let o = env.run_code(&["sync"], 0);
    assert_no_secrets(&o);
    // 127.0.0.1 is loopback: no warning about the bind password crossing the network.
    assert!(!stderr(&o).contains("unencrypted"), "{}", out(&o));
    assert_fake_holds(&env.fake, &want, &[]);

    // The create bodies carried the values exactly (JSON-escaped quotes, backslashes, tabs).
    let bodies: Vec<Value> = env
        .changes()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/api/v1/users")
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    assert_eq!(bodies.len(), want.len(), "{bodies:?}");
    for w in &want {
        let b = bodies
            .iter()
            .find(|b| b["email"] == w.email)
            .unwrap_or_else(|| panic!("{}: {bodies:?}", w.email));
        assert_eq!(b["firstName"], w.first, "{b}");
        assert_eq!(b["lastName"], w.last, "{b}");
        if let Some(other) = w.other {
            assert_eq!(b["otherName"], other, "{b}");
        }
        if let Some(mobile) = w.mobile {
            assert_eq!(b["mobileNumber"], mobile, "{b}");
        }
    }
    // The hostile uids are the keys, stored as they are.
    let mut keys: Vec<&str> = want.iter().map(|w| w.key).collect();
    keys.sort_unstable();
    assert_eq!(env.stored_keys().await, keys);

    // One user by such a key; then nothing left to do (the values round-trip).
    env.run_code(&["sync", "--dry-run", "--user", "x?y#z"], 0);
    env.run_code(&["plan"], 0);
}

#[tokio::test]
async fn ldap_hostile_remote_ids_with_slash_query_percent_dots_space_plus_and_non_ascii_are_one_path_segment()
 {
    // Accounts that exist before dirsync, with hostile ids, adopted by email.
    let env = Env::new("").await;
    let ids = [
        ("a/b@example.org", "a/b", "a%2Fb"),
        ("x?y#z@example.org", "x?y#z", "x%3Fy%23z"),
        ("100%@example.org", "100%", "100%25"),
        ("../etc@example.org", "../etc", "..%2Fetc"),
        ("with.space@example.org", "with space", "with%20space"),
        ("plus+tag@example.org", "plus+tag", "plus%2Btag"),
        ("jos\u{e9}@ex\u{e4}mple.org", "jos\u{e9}", "jos%C3%A9"),
    ];
    for (email, id, _) in ids {
        let mut u = FakeUser::new(email, &[COLLABORATOR]);
        u.id = id.to_string();
        u.first_name = Some("Old".into());
        u.last_name = Some("Name".into());
        env.fake.insert_user(u);
    }
    env.run_code(&["adopt", "--target", "covata"], 0);
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    let want = accepted();
    assert_fake_holds(&env.fake, &want, &[]);
    // Each adopted account was updated (fields, and roles where they differ) by PUTs to its
    // id, encoded as ONE path segment, and by no other path.
    let puts: Vec<_> = env
        .changes()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    let mut paths: Vec<&str> = puts.iter().map(|r| r.path.as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    let mut want_paths: Vec<String> = ids
        .iter()
        .map(|(_, _, seg)| format!("/api/v1/users/{seg}"))
        .collect();
    want_paths.sort();
    assert_eq!(paths, want_paths, "{puts:?}");
    for (email, id, seg) in ids {
        let w = want.iter().find(|w| w.email == email).unwrap();
        let bodies: Vec<Value> = puts
            .iter()
            .filter(|r| r.path == format!("/api/v1/users/{seg}"))
            .inspect(|r| assert!(r.query.is_none(), "{r:?}"))
            .map(|r| serde_json::from_str(&r.body).unwrap())
            .collect();
        let fields = bodies
            .iter()
            .find(|b| b.get("firstName").is_some())
            .unwrap_or_else(|| panic!("{email}: {bodies:?}"));
        assert_eq!(fields["firstName"], w.first, "{fields}");
        assert_eq!(fields["lastName"], w.last, "{fields}");
        assert_eq!(env.fake.user(id).unwrap().email, email);
    }

    // Two leave the directory: the bulk calls carry their ids exactly, in JSON.
    env.server.modify(&format!(
        "dn: cn=Slash,{ACCEPTED}\nchangetype: delete\n\n\
         dn: cn=Percent,{ACCEPTED}\nchangetype: delete\n"
    ));
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    let bulk: Vec<_> = env
        .changes()
        .into_iter()
        .filter(|r| r.path == "/api/v1/users/bulk")
        .collect();
    for action in ["expire", "disable"] {
        let call = bulk
            .iter()
            .find(|r| r.query.as_deref() == Some(&format!("action={action}")))
            .unwrap_or_else(|| panic!("no {action}: {bulk:?}"));
        let body: Value = serde_json::from_str(&call.body).unwrap();
        let mut got: Vec<&str> = body["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(got, vec!["100%", "a/b"], "{call:?}");
    }
    assert_fake_holds(&env.fake, &want, &["a/b@example.org", "100%@example.org"]);
}

#[tokio::test]
async fn ldap_hostile_emails_looked_up_after_lost_creates_are_one_query_value_each() {
    // Every create's answer is lost: dirsync looks each account up by its email.
    let env = Env::new("").await;
    let want = accepted();
    env.fake.inject(
        "POST",
        PathMatch::exact("/api/v1/users"),
        Fault::DropAfterApply,
        want.len(),
    );
    let o = env.run(&["sync"]);
    let mut looked_up: Vec<String> = Vec::new();
    for r in env.fake.requests() {
        let Some(q) = r
            .query
            .filter(|_| r.method == "GET" && r.path == "/api/v1/users")
        else {
            continue;
        };
        if !q.contains("email=") {
            continue;
        }
        assert!(
            !q.contains('#') && !q.contains('?') && !q.contains(' '),
            "{q}"
        );
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect();
        let emails: Vec<&String> = pairs
            .iter()
            .filter(|(k, _)| k == "email")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(emails.len(), 1, "{q}");
        looked_up.push(emails[0].clone());
    }
    looked_up.sort();
    looked_up.dedup();
    let mut want_emails: Vec<String> = want.iter().map(|w| w.email.to_string()).collect();
    want_emails.sort();
    assert_eq!(looked_up, want_emails, "{}", out(&o));
    // No duplicate create; the next sync finds everything recorded.
    assert_fake_holds(&env.fake, &want, &[]);
    env.run_code(&["sync"], 0);
    assert_fake_holds(&env.fake, &want, &[]);
    env.run_code(&["plan"], 0);
}

#[tokio::test]
async fn ldap_hostile_csv_import_carries_commas_quotes_tabs_and_non_ascii_exactly() {
    // The same users through Covata's CSV import (then otherName by PUT).
    let env = Env::new("").await;
    env.config(ACCEPTED, "", "bulk_import_min = 1");
    env.run_code(&["sync"], 0);
    assert!(
        env.changes().iter().any(|r| r.path.contains("import")),
        "{:?}",
        env.changes()
    );
    assert_fake_holds(&env.fake, &accepted(), &[]);
    env.run_code(&["plan"], 0);
}

/// `(user, groups)` of a read, groups sorted.
fn groups_by_key(read: &ldap::LdapRead) -> BTreeMap<String, Vec<String>> {
    read.snapshot
        .users()
        .iter()
        .map(|u| {
            let mut g = u.groups.clone();
            g.sort();
            (u.key.clone(), g)
        })
        .collect()
}

fn sorted(groups: &[&str]) -> Vec<String> {
    let mut g: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    g.sort();
    g
}

#[tokio::test]
async fn ldap_hostile_group_dns_with_escaped_specials_resolve_by_member_of_and_by_group_search() {
    let server = corpus("");
    let want = accepted();

    // memberOf (the overlay's values), plain and nested.
    let read = ldap::read(&settings(&server, ACCEPTED)).await.unwrap();
    let got = groups_by_key(&read);
    assert_eq!(got.len(), want.len());
    for w in &want {
        assert_eq!(got[w.key], sorted(w.groups), "{}", w.key);
    }
    let mut nested = settings(&server, ACCEPTED);
    nested.nested_groups = true;
    let got = groups_by_key(&ldap::read(&nested).await.unwrap());
    for w in &want {
        let mut groups = w.groups.to_vec();
        if groups.iter().any(|g| *g == RND || *g == ADMINS) {
            groups.push(ALL);
        }
        assert_eq!(got[w.key], sorted(&groups), "{}", w.key);
    }

    // A group search: member, uniqueMember (with and without its #'...'B suffix, a # inside
    // the DN), memberUid holding hostile user ids.
    let mut search = settings(&server, ACCEPTED);
    search.groups = GroupSource::Search(GroupSearch::new(GROUPS));
    let got = groups_by_key(&ldap::read(&search).await.unwrap());
    let expected: &[(&str, &[&str])] = &[
        ("a/b", &[RND, POSIX]),
        ("x?y#z", &[POSIX]),
        ("100%", &[POSIX]),
        ("with space", &[POSIX]),
        ("obrien", &[RND, UNIQUE]),
        ("room5", &[ADMINS, UNIQUE]),
        ("hash", &[ADMINS, SPACED]),
        ("jos\u{e9}", &[ADMINS]),
    ];
    for w in &want {
        let groups = expected
            .iter()
            .find(|(k, _)| *k == w.key)
            .map_or(&[][..], |(_, g)| g);
        assert_eq!(got[w.key], sorted(groups), "{}", w.key);
    }
    search.nested_groups = true;
    let got = groups_by_key(&ldap::read(&search).await.unwrap());
    assert_eq!(got["a/b"], sorted(&[RND, POSIX, ALL]));
    assert_eq!(got["room5"], sorted(&[ADMINS, UNIQUE, ALL]));

    // The roles follow (rules given as the DNs slapd hands out).
    let env = Env {
        env: TestEnv::new(Backend::Sqlite).await,
        server,
        fake: FakeCovata::start().await,
    };
    env.config(
        ACCEPTED,
        &format!("groups = \"search\"\n[source.ldap.group_search]\nbase_dn = \"{GROUPS}\""),
        "",
    );
    env.run_code(&["sync"], 0);
    assert_fake_holds(&env.fake, &want, &[]);
}

/// One rejected input: the DN of the entry, the attribute, and the message's text.
type Rejected<'a> = (&'a str, &'a str, &'a str);

/// Points the source at `ou` (its bad entries and one good one): the run exits 7, the report
/// has one `? quarantined` line per bad entry naming its DN (escaped) and the attribute, with
/// the message's text; only the good entry is created (the bad ones are never sent), no secret
/// is printed, and `dirsync check` lists the same problems and passes (a sync would apply).
async fn assert_ou_rejected(ou: &str, want: &[Rejected<'_>]) -> Output {
    let env = Env::new("").await;
    env.config(&format!("ou={ou},{HOSTILE}"), "", "");
    // Most entries of an OU are bad: the quarantine threshold is lifted (it is tested in the
    // quarantine suite).
    let mut config = std::fs::read_to_string(env.config_path()).unwrap();
    config.push_str("\n[safety]\nmax_quarantined_percent = 100\n");
    std::fs::write(env.config_path(), config).unwrap();
    let o = env.run_code(&["sync", "-vv"], 7);
    let report = stdout(&o);
    let problem_lines = crate::support::cmd::lines_with(&report, "? quarantined");
    for (dn, attribute, text) in want {
        let entry = shown_dn(dn);
        let field = format!(" {attribute}: ");
        let attribute = format!("attribute {attribute:?}");
        assert!(
            problem_lines.iter().any(|l| l.contains(&entry)
                && l.contains(&field)
                && l.contains(&attribute)
                && l.contains(text)),
            "want {entry} ... {field} ... {attribute} ... {text}\n{}",
            out(&o)
        );
    }
    let mut dns: Vec<&str> = want.iter().map(|w| w.0).collect();
    dns.sort();
    dns.dedup();
    assert_eq!(problem_lines.len(), dns.len(), "{}", out(&o));
    assert_no_secrets(&o);
    let users = env.users();
    assert_eq!(users.len(), 1, "only the good entry: {users:?}");

    // check names the same problems and passes.
    let o = env.run_code(&["check"], 0);
    let report = stdout(&o);
    for (dn, attribute, text) in want {
        let entry = format!("entry {dn:?}");
        let attribute = format!("attribute {attribute:?}");
        assert!(
            report
                .lines()
                .any(|l| l.contains(&entry) && l.contains(&attribute) && l.contains(text)),
            "check: want {entry} ... {attribute} ... {text}\n{}",
            out(&o)
        );
    }
    assert_no_secrets(&o);
    o
}

/// A DN as the text report shows it: quoted and escaped when it holds a control character.
fn shown_dn(dn: &str) -> String {
    if dn.chars().any(|c| c.is_control() || c == '"') {
        format!("\"{}\"", dn.escape_debug())
    } else {
        dn.to_string()
    }
}

fn dn(rdn: &str, ou: &str) -> String {
    format!("{rdn},ou={ou},{HOSTILE}")
}

#[tokio::test]
async fn ldap_hostile_nul_bytes_in_given_name_mail_and_uid_are_rejected() {
    let (given, mail, uid) = (
        dn("cn=NUL in givenName", "nul"),
        dn("cn=NUL in mail", "nul"),
        dn("cn=NUL in uid", "nul"),
    );
    assert_ou_rejected(
        "nul",
        &[
            (
                &given,
                "givenName",
                r#"control character in attribute "givenName": "Ab\0c""#,
            ),
            (
                &mail,
                "mail",
                r#"control character in attribute "mail": "nul\0@example.org""#,
            ),
            (
                &uid,
                "uid",
                r#"control character in key attribute "uid": "nul\0uid""#,
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn ldap_hostile_line_breaks_in_names_and_dns_are_rejected_and_forge_no_log_line() {
    let forged_dn = dn("cn=Forged\nerror: forged DN line", "newline");
    let (given, sn, display) = (
        dn("cn=LF in givenName", "newline"),
        dn("cn=CRLF in sn", "newline"),
        dn("cn=LF in displayName", "newline"),
    );
    let o = assert_ou_rejected(
        "newline",
        &[
            (&given, "givenName", r#""Line\nBreak""#),
            (&sn, "sn", r#""Last\r\nerror: source: forged line""#),
            (&display, "displayName", r#""Display\nName""#),
            (&forged_dn, "givenName", r#""Bad\rName""#),
        ],
    )
    .await;
    let all = format!("{}\n{}", stdout(&o), stderr(&o));
    for line in all.lines() {
        assert!(
            !line.starts_with("error: source: forged") && !line.starts_with("error: forged"),
            "forged line {line:?}\n{all}"
        );
    }
    assert!(!all.contains('\r'), "{all:?}");
}

#[tokio::test]
async fn ldap_hostile_del_c1_escape_and_bell_in_mobile_and_names_are_rejected() {
    let (del, nel, esc, bel) = (
        dn("cn=DEL in mobile", "control"),
        dn("cn=NEL in sn", "control"),
        dn("cn=ESC in audio", "control"),
        dn("cn=BEL in givenName", "control"),
    );
    let o = assert_ou_rejected(
        "control",
        &[
            (&del, "mobile", r#""+1 555 0100\u{7f}""#),
            (&nel, "sn", r#""Next\u{85}Line""#),
            (&esc, "audio", r#""\u{1b}[31mRed\u{1b}[0m""#),
            (&bel, "givenName", r#""Bell\u{7}""#),
        ],
    )
    .await;
    let all = format!("{}\n{}", stdout(&o), stderr(&o));
    for c in ['\u{1b}', '\u{7}', '\u{7f}', '\u{85}'] {
        assert!(!all.contains(c), "{c:?} in the output\n{all:?}");
    }
}

#[tokio::test]
async fn ldap_hostile_group_dn_with_a_line_break_is_rejected_naming_the_member() {
    let member = dn("cn=Newline Member", "group-control");
    assert_ou_rejected(
        "group-control",
        &[(
            &member,
            "memberOf",
            r#"control character in a group of attribute "memberOf": "cn=line\nbreak,ou=groups,dc=example,dc=com""#,
        )],
    )
    .await;
}

#[tokio::test]
async fn ldap_hostile_latin1_and_overlong_bytes_in_mail_mobile_and_name_are_rejected() {
    let (mail, mobile, name, overlong) = (
        dn("cn=Latin-1 mail", "non-utf8"),
        dn("cn=Latin-1 mobile", "non-utf8"),
        dn("cn=Latin-1 name", "non-utf8"),
        dn("cn=Overlong mail", "non-utf8"),
    );
    assert_ou_rejected(
        "non-utf8",
        &[
            (
                &mail,
                "mail",
                r#"invalid UTF-8 in attribute "mail" (after byte 1 of the value): "J\xfcrgen@example.org""#,
            ),
            (
                &mobile,
                "mobile",
                r#"invalid UTF-8 in attribute "mobile" (after byte 4 of the value): "+49 \xb11""#,
            ),
            (
                &name,
                "audio",
                r#"invalid UTF-8 in attribute "audio" (after byte 1 of the value): "J\xfcrgen""#,
            ),
            (
                &overlong,
                "mail",
                r#"invalid UTF-8 in attribute "mail" (after byte 1 of the value): "x\xc0\xafy@example.org""#,
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn ldap_hostile_emails_with_space_two_at_signs_or_no_local_part_are_rejected() {
    let e = |rdn: &str| dn(rdn, "bad-email");
    let (space, two, none, empty) = (
        e("cn=Space in mail"),
        e("cn=Two at signs"),
        e("cn=No at sign"),
        e("cn=Nothing before at"),
    );
    assert_ou_rejected(
        "bad-email",
        &[
            (
                &space,
                "mail",
                r#"invalid email in attribute "mail": "with space@example.org" (contains whitespace or control characters)"#,
            ),
            (
                &two,
                "mail",
                r#"invalid email in attribute "mail": "a@b@example.org" (more than one "@")"#,
            ),
            (
                &none,
                "mail",
                r#"invalid email in attribute "mail": "no-at.example.org" (no "@")"#,
            ),
            (
                &empty,
                "mail",
                r#"invalid email in attribute "mail": "@example.org" (nothing before "@")"#,
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn ldap_hostile_two_values_of_the_key_attribute_are_rejected() {
    let two = dn("cn=Two uids", "multi-key");
    assert_ou_rejected(
        "multi-key",
        &[(&two, "uid", r#"key attribute "uid" has 2 values"#)],
    )
    .await;
}

#[tokio::test]
async fn ldap_hostile_whole_corpus_quarantines_every_bad_entry_and_nothing_else() {
    let server = corpus("");
    let read = ldap::read(&settings(&server, HOSTILE)).await.unwrap();
    let q = read.snapshot.quarantined();
    let mut got: Vec<(String, Option<String>)> = q
        .iter()
        .map(|q| (q.location.clone(), Some(q.field.clone())))
        .collect();
    got.sort();
    let mut want: Vec<(String, Option<String>)> = [
        ("cn=NUL in givenName", "nul", "givenName"),
        ("cn=NUL in mail", "nul", "mail"),
        ("cn=NUL in uid", "nul", "uid"),
        ("cn=LF in givenName", "newline", "givenName"),
        ("cn=CRLF in sn", "newline", "sn"),
        ("cn=LF in displayName", "newline", "displayName"),
        ("cn=Forged\nerror: forged DN line", "newline", "givenName"),
        ("cn=DEL in mobile", "control", "mobile"),
        ("cn=NEL in sn", "control", "sn"),
        ("cn=ESC in audio", "control", "audio"),
        ("cn=BEL in givenName", "control", "givenName"),
        ("cn=Newline Member", "group-control", "memberOf"),
        ("cn=Latin-1 mail", "non-utf8", "mail"),
        ("cn=Latin-1 mobile", "non-utf8", "mobile"),
        ("cn=Latin-1 name", "non-utf8", "audio"),
        ("cn=Overlong mail", "non-utf8", "mail"),
        ("cn=Space in mail", "bad-email", "mail"),
        ("cn=Two at signs", "bad-email", "mail"),
        ("cn=No at sign", "bad-email", "mail"),
        ("cn=Nothing before at", "bad-email", "mail"),
        ("cn=Two uids", "multi-key", "uid"),
    ]
    .iter()
    .map(|(rdn, ou, attr)| (dn(rdn, ou), Some(attr.to_string())))
    .collect();
    want.sort();
    assert_eq!(got, want, "{q:?}");
    // Every good entry is a user; no value shown holds a control character.
    assert_eq!(
        read.snapshot.len(),
        read.snapshot.users().len() + want.len()
    );
    assert!(
        q.iter()
            .all(|q| !q.value.chars().any(char::is_control)
                && !q.problem.chars().any(char::is_control)),
        "{q:?}"
    );

    // The group DN with a line break, found by a group search instead of memberOf.
    let mut search = settings(&server, &format!("ou=group-control,{HOSTILE}"));
    search.groups = GroupSource::Search(GroupSearch::new(GROUPS));
    let read = ldap::read(&search).await.unwrap();
    let q = read.snapshot.quarantined();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0].location, dn("cn=Newline Member", "group-control"));
    assert_eq!(
        q[0].problem,
        r#"control character in the DN of a group found by the group search: "cn=line\nbreak,ou=groups,dc=example,dc=com""#
    );
}

/// Organisational units nested until a DN under them is about `len` bytes long (each RDN at
/// most 200 bytes: back-mdb refuses RDNs over about 245).
fn deep_ous(base: &str, len: usize) -> (String, String) {
    let mut ldif = String::new();
    let mut dn = base.to_string();
    let mut level = 0;
    while dn.len() + 210 < len {
        let ou = format!("level {level:02} {}", "d".repeat(186));
        dn = format!("ou={ou},{dn}");
        ldif.push_str(&format!(
            "dn: {dn}\nobjectClass: organizationalUnit\nou: {ou}\n\n"
        ));
        level += 1;
    }
    (ldif, dn)
}

#[tokio::test]
async fn ldap_hostile_8kb_dns_and_100kb_values_are_sent_whole_or_rejected_with_a_short_message() {
    let deep_base = format!("ou=deep,{HOSTILE}");
    let (ous, deepest) = deep_ous(&deep_base, 8000);
    let user_dn = format!("uid=deep-dn,{deepest}");
    assert!((7800..8100).contains(&user_dn.len()), "{}", user_dn.len());
    let first = "\u{e9}".repeat(50_000); // 100 KB of two-byte characters
    let last = "x".repeat(100_000);
    let ldif = format!(
        "dn: {deep_base}\nobjectClass: organizationalUnit\nou: deep\n\n{ous}\
         dn: {user_dn}\nobjectClass: inetOrgPerson\nuid: deep-dn\ncn: Deep\nsn: {last}\n\
         givenName:: {first_b64}\nmail: deep@example.org\n\n",
        first_b64 = base64(first.as_bytes()),
    );
    let env = Env::new(&ldif).await;
    // A group under the same 8 KB DN: its memberOf value is as long.
    let group_dn = format!("cn=deep group,{deepest}");
    env.server.modify(&format!(
        "dn: {group_dn}\nchangetype: add\nobjectClass: groupOfNames\ncn: deep group\n\
         member: {user_dn}\n"
    ));
    let read = ldap::read(&settings(&env.server, &deep_base))
        .await
        .unwrap();
    assert_eq!(read.snapshot.len(), 1);
    let u = &read.snapshot.users()[0];
    assert_eq!(u.groups, vec![group_dn.clone()]);
    assert_eq!(u.given_name.as_deref(), Some(first.as_str()));
    assert_eq!(u.family_name.as_deref(), Some(last.as_str()));

    env.config(&deep_base, "", "");
    env.run_code(&["sync"], 0);
    let got = env.fake.user_by_email("deep@example.org").unwrap();
    assert_eq!(got.first_name.as_deref(), Some(first.as_str()), "not cut");
    assert_eq!(got.last_name.as_deref(), Some(last.as_str()), "not cut");
    assert_eq!(env.stored_keys().await, vec!["deep-dn".to_string()]);
    env.run_code(&["plan"], 0);

    // A 100 KB name ending in a NUL, under the 8 KB DN: quarantined, the report names the whole
    // DN and shows the start of the value only.
    let bad_dn = format!("uid=deep-bad,{deepest}");
    let mut bad = "y".repeat(100_000);
    bad.push('\0');
    env.server.modify(&format!(
        "dn: {bad_dn}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: deep-bad\ncn: Bad\n\
         sn: Bad\nmail: deep-bad@example.org\ngivenName:: {}\n",
        base64(bad.as_bytes())
    ));
    env.fake.clear_requests();
    let before = env.users();
    let o = env.run_code(&["sync"], 7);
    let report = stdout(&o);
    let line = report
        .lines()
        .find(|l| l.contains("? quarantined") && l.contains(&bad_dn))
        .unwrap_or_else(|| panic!("{}", out(&o)));
    assert!(
        line.contains(r#"control character in attribute "givenName": "yyyy"#)
            && line.contains("... (100001 bytes in all)"),
        "{line}"
    );
    assert!(line.len() < 9_000, "{} bytes in the line", line.len());
    assert!(
        stderr(&o).len() < 20_000,
        "{} bytes of stderr",
        stderr(&o).len()
    );
    assert!(env.changes().is_empty(), "{:?}", env.changes());
    assert_eq!(env.users(), before);
}
