//! The LDAP source against a real slapd: the fixture of ~50 users, paging past the size limit,
//! failures mid-search, Active Directory attributes, `dirsync check`, and `plan` / `sync`
//! against the fake Covata.
//!
//! The 100k-entry benchmark is ignored by default:
//! `cargo test --release --test it ldap_bench -- --ignored --nocapture`.

use crate::support::cmd::{assert_has, out, stderr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dirsync::mapping::RoleRule;
use dirsync::model::User;
use dirsync::secret::Secret;
use dirsync::source::ldap::{
    self, GroupSearch, GroupSource, LdapSettings, MissingEmail, ServerType,
};

use crate::support::covata::FakeCovata;
use crate::support::env::{Backend, ConfigText, SecretStyle, TestEnv};
use crate::support::ldap_fixture::{
    GROUPS, PEOPLE, base64, people_source_keys, planet_express, settings,
};
use crate::support::slapd::{READER_DN, READER_PASSWORD, SUFFIX, Slapd, SlapdOptions};

/// `n` plain users `uid=user<i>` under ou=people, numbered from `from`.
fn people(from: usize, n: usize) -> String {
    let mut out = String::with_capacity(n * 220);
    for i in from..from + n {
        out.push_str(&format!(
            "dn: uid=user{i:06},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: user{i:06}\n\
             cn: User {i}\nsn: Last{i}\ngivenName: First{i}\nmail: user{i:06}@example.com\n\
             displayName: User Number {i}\n\n"
        ));
    }
    out
}

fn by_email<'a>(users: &'a [User], email: &str) -> &'a User {
    users
        .iter()
        .find(|u| u.email.eq_ignore_ascii_case(email))
        .unwrap_or_else(|| panic!("no user {email}"))
}

fn group_names(u: &User) -> Vec<String> {
    let mut g: Vec<String> = u
        .groups
        .iter()
        .map(|g| {
            let first = g.split(',').next().unwrap_or_default();
            first.trim_start_matches("cn=").to_string()
        })
        .collect();
    g.sort();
    g
}

#[tokio::test]
async fn ldap_fixture_users_groups_disabled_and_names() {
    let server = planet_express();
    let read = ldap::read(&settings(&server)).await.unwrap();
    let users = read.snapshot.users();
    // 50 people, Zoidberg has no mail.
    assert_eq!(read.entries, 50, "{:?}", read.skipped);
    assert_eq!(users.len(), 49);
    assert_eq!(read.skipped.len(), 1);
    assert_eq!(
        read.skipped[0].dn.as_deref(),
        Some("uid=zoidberg,ou=office,ou=people,dc=example,dc=com")
    );
    assert!(read.skipped[0].to_string().contains("no email"));

    // Keys are entryUUIDs, never DNs.
    for u in users {
        assert_eq!(u.key.len(), 36, "{u:?}");
        assert_eq!(u.key.matches('-').count(), 4, "{u:?}");
    }

    let bender = by_email(users, "bender@planetexpress.com");
    assert_eq!(bender.given_name.as_deref(), Some("Bender"));
    assert_eq!(bender.family_name.as_deref(), Some("Rodr\u{ed}guez"));
    assert_eq!(
        bender.display_name.as_deref(),
        Some("Bender Bending Rodr\u{ed}guez")
    );
    assert!(bender.enabled);
    assert_eq!(group_names(bender), vec!["crew"]);

    // Multi-valued RDN.
    let amy = by_email(users, "amy@planetexpress.com");
    assert_eq!(amy.family_name.as_deref(), Some("Kroker"));
    assert_eq!(group_names(amy), vec!["crew"]);

    // Escaped comma in the RDN; nsAccountLock: false is not a disabled value.
    let kif = by_email(users, "kif@doop.example");
    assert!(kif.enabled);
    assert_eq!(kif.display_name, None);

    // Disabled with nsAccountLock: TRUE.
    let hermes = by_email(users, "hermes@planetexpress.com");
    assert!(!hermes.enabled);
    assert_eq!(users.iter().filter(|u| !u.enabled).count(), 1);

    // Two mail values: the first; no mobile: telephoneNumber.
    let leela = by_email(users, "leela@planetexpress.com");
    assert_eq!(leela.mobile.as_deref(), Some("+1 555 0101"));
    assert_eq!(group_names(leela), vec!["admins", "crew"]);
    let fry = by_email(users, "fry@planetexpress.com");
    assert_eq!(fry.mobile.as_deref(), Some("+1 555 0100"));
    assert_eq!(
        fry.extra.get("employee_number").map(String::as_str),
        Some("1001")
    );

    // Group -> role rules match the group DNs by cn or by DN.
    let admins = RoleRule {
        group: "admins".into(),
        roles: vec!["ROLE_SYSTEM_ADMIN".into()],
    };
    let by_dn = RoleRule {
        group: format!("cn=admins,{GROUPS}"),
        roles: vec!["ROLE_SYSTEM_ADMIN".into()],
    };
    assert!(leela.groups.iter().any(|g| admins.matches(g)));
    assert!(leela.groups.iter().any(|g| by_dn.matches(g)));
    assert!(!fry.groups.iter().any(|g| admins.matches(g)));

    // Nested: admins is a member of managers.
    let mut nested = settings(&server);
    nested.nested_groups = true;
    let read = ldap::read(&nested).await.unwrap();
    let leela = by_email(read.snapshot.users(), "leela@planetexpress.com");
    assert_eq!(group_names(leela), vec!["admins", "crew", "managers"]);
    let fry = by_email(read.snapshot.users(), "fry@planetexpress.com");
    assert_eq!(group_names(fry), vec!["crew"]);
}

#[tokio::test]
async fn ldap_missing_email_as_error_quarantines_the_entry_naming_the_dn() {
    let server = planet_express();
    let mut s = settings(&server);
    s.missing_email = MissingEmail::Error;
    let read = ldap::read(&s).await.unwrap();
    let q = read.snapshot.quarantined();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(
        q[0].location,
        "uid=zoidberg,ou=office,ou=people,dc=example,dc=com"
    );
    assert_eq!(q[0].field, "mail");
    assert!(q[0].problem.contains("no email"), "{q:?}");
    // Its key is known: its accounts are left as they are.
    assert!(q[0].key.is_some(), "{q:?}");
    assert!(read.snapshot.is_quarantined(q[0].key.as_deref().unwrap()));
}

#[tokio::test]
async fn ldap_group_search_member_unique_member_member_uid_nested() {
    let server = planet_express();
    let mut s = settings(&server);
    s.groups = GroupSource::Search(GroupSearch::new(GROUPS));
    let read = ldap::read(&s).await.unwrap();
    let users = read.snapshot.users();
    assert_eq!(
        group_names(by_email(users, "fry@planetexpress.com")),
        vec!["crew", "shipping"]
    );
    assert_eq!(
        group_names(by_email(users, "bender@planetexpress.com")),
        vec!["crew", "shipping"]
    );
    assert_eq!(
        group_names(by_email(users, "amy@planetexpress.com")),
        vec!["crew", "interns"]
    );
    assert_eq!(
        group_names(by_email(users, "leela@planetexpress.com")),
        vec!["admins", "crew"]
    );
    s.nested_groups = true;
    let read = ldap::read(&s).await.unwrap();
    assert_eq!(
        group_names(by_email(
            read.snapshot.users(),
            "professor@planetexpress.com"
        )),
        vec!["admins", "managers"]
    );
}

#[tokio::test]
async fn ldap_entry_problems_are_all_reported() {
    // Same email twice, and a key attribute one entry lacks.
    let ldif = format!(
        "{}dn: uid=dup,{PEOPLE}\nobjectClass: inetOrgPerson\nuid: dup\ncn: Dup\nsn: Dup\n\
         mail: USER000001@example.com\nemployeeNumber: 9\n\n",
        people(1, 3)
    );
    let server = Slapd::start(SlapdOptions::default(), &ldif);
    let s = settings(&server);
    // Every entry sharing the email is quarantined, each naming the other.
    let read = ldap::read(&s).await.unwrap();
    let q = read.snapshot.quarantined();
    let mut got: Vec<(&str, &str)> = q
        .iter()
        .map(|q| (q.location.as_str(), q.field.as_str()))
        .collect();
    got.sort();
    let (dup, one) = (
        format!("uid=dup,{PEOPLE}"),
        format!("uid=user000001,{PEOPLE}"),
    );
    assert_eq!(got, vec![(dup.as_str(), "mail"), (one.as_str(), "mail")]);
    assert!(
        q.iter().all(|q| q.problem.contains("duplicate email")
            && q.problem.contains("also on")
            && q.key.is_some()),
        "{q:?}"
    );
    assert_eq!(read.snapshot.users().len(), 2, "user2 and user3");
    assert_eq!(read.snapshot.len(), 4);
    let mut s = settings(&server);
    s.attributes.key = "employeeNumber".into();
    let read = ldap::read(&s).await.unwrap();
    // user1..3 lack employeeNumber: quarantined without a key.
    let q = read.snapshot.quarantined();
    assert_eq!(
        q.iter()
            .filter(|q| q.problem.contains("no key attribute")
                && q.field == "employeeNumber"
                && q.key.is_none())
            .count(),
        3,
        "{q:?}"
    );
    // Each carries the email it was read with, so that its account can be found and left alone.
    let mut emails: Vec<&str> = q.iter().filter_map(|q| q.email.as_deref()).collect();
    emails.sort_unstable();
    assert_eq!(
        emails,
        vec![
            "user000001@example.com",
            "user000002@example.com",
            "user000003@example.com"
        ],
        "{q:?}"
    );
    // check reports rather than fails.
    let c = ldap::check(&s).await.unwrap();
    assert_eq!(c.entries, 4);
    assert_eq!(c.without_key.len(), 3);
}

#[tokio::test]
async fn ldap_paging_reads_past_the_size_limit() {
    let server = Slapd::start(
        SlapdOptions {
            size_limit: Some(500),
            paged_total_unlimited: true,
            tls: false,
        },
        &people(1, 2500),
    );
    let mut s = settings(&server);
    s.disabled = None;
    let read = ldap::read(&s)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log_tail()));
    assert_eq!(read.entries, 2500);
    assert_eq!(read.snapshot.len(), 2500);
    assert!(read.skipped.is_empty());
    assert_eq!(
        by_email(read.snapshot.users(), "user002500@example.com")
            .given_name
            .as_deref(),
        Some("First2500")
    );
    // Smaller pages work as well.
    s.page_size = 128;
    assert_eq!(ldap::read(&s).await.unwrap().snapshot.len(), 2500);
    // Without paging the server stops at its limit: an error, never 500 users.
    let unpaged = ldap::read(&LdapSettings {
        page_size: 0,
        ..s.clone()
    })
    .await;
    match unpaged {
        Ok(r) => panic!("read {} users without paging", r.snapshot.len()),
        Err(e) => assert!(e.to_string().contains("sizeLimitExceeded"), "{e}"),
    }
}

#[tokio::test]
async fn ldap_size_limit_capping_paged_results_is_an_error() {
    // OpenLDAP's default: paged results capped at the hard limit in total.
    let server = Slapd::start(
        SlapdOptions {
            size_limit: Some(500),
            paged_total_unlimited: false,
            tls: false,
        },
        &people(1, 1200),
    );
    let mut s = settings(&server);
    s.page_size = 200;
    let e = ldap::read(&s).await.unwrap_err();
    let text = e.to_string();
    assert!(text.contains("sizeLimitExceeded (4)"), "{text}");
    assert!(text.contains("size.prtotal"), "{text}");
}

#[tokio::test]
async fn ldap_unreachable_bad_password_bad_base_fail() {
    let server = planet_express();
    let mut s = settings(&server);
    s.bind_password = Some(Secret::new("wrong"));
    let e = ldap::read(&s).await.unwrap_err().to_string();
    assert!(e.contains("invalidCredentials (49)"), "{e}");

    let mut s = settings(&server);
    s.base_dn = format!("ou=nobody,{SUFFIX}");
    let e = ldap::read(&s).await.unwrap_err().to_string();
    assert!(e.contains("noSuchObject (32)"), "{e}");

    // Anonymous read works on this server (default ACL: read for all).
    let mut s = settings(&server);
    s.bind_dn = None;
    s.bind_password = None;
    assert_eq!(ldap::read(&s).await.unwrap().snapshot.len(), 49);

    let s = settings(&server);
    server.stop();
    let e = ldap::read(&s).await.unwrap_err().to_string();
    assert!(e.contains("cannot connect"), "{e}");
}

/// A TCP proxy in front of slapd that kills the server once `after` bytes of responses went
/// through: the server goes away in the middle of the search.
async fn killing_proxy(server: Arc<Slapd>, after: usize) -> String {
    proxy(server, after, true).await
}

/// A TCP proxy in front of slapd that, once `after` bytes of responses went through, kills the
/// server (`kill`) or stops forwarding while keeping the connection open (a hung server).
async fn proxy(server: Arc<Slapd>, after: usize, kill: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ldap://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = Arc::clone(&server);
            tokio::spawn(async move {
                let Ok(upstream) = tokio::net::TcpStream::connect(server.addr()).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut ur, mut uw) = upstream.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut uw).await;
                });
                let mut seen = 0usize;
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match ur.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    seen += n;
                    if seen >= after && !kill {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    if seen >= after {
                        let s = Arc::clone(&server);
                        tokio::task::spawn_blocking(move || s.stop()).await.unwrap();
                    }
                }
                let _ = cw.shutdown().await;
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_server_stopped_mid_search_fails() {
    let server = Arc::new(Slapd::start(
        SlapdOptions {
            size_limit: Some(500),
            paged_total_unlimited: true,
            tls: false,
        },
        &people(1, 3000),
    ));
    let url = killing_proxy(Arc::clone(&server), 200_000).await;
    let mut s = settings(&server);
    s.url = url;
    s.disabled = None;
    let started = Instant::now();
    let e = ldap::read(&s).await.unwrap_err().to_string();
    assert!(e.contains("incomplete"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(15), "{e}");
}

#[tokio::test]
async fn ldap_tls_starttls_ldaps_ca_file_and_skip_verify() {
    let server = Slapd::start(
        SlapdOptions {
            tls: true,
            ..SlapdOptions::default()
        },
        &people(1, 20),
    );
    let base = {
        let mut s = settings(&server);
        s.disabled = None;
        s.extra.clear();
        s
    };
    // StartTLS on ldap://, verified against the CA file.
    let s = LdapSettings {
        starttls: true,
        ca_file: Some(server.ca_file()),
        ..base.clone()
    };
    let read = ldap::read(&s)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log_tail()));
    assert_eq!(read.snapshot.len(), 20);
    // ldaps://, verified against the CA file.
    let s = LdapSettings {
        url: server.ldaps_url(),
        ca_file: Some(server.ca_file()),
        ..base.clone()
    };
    assert_eq!(ldap::read(&s).await.unwrap().snapshot.len(), 20);
    // The system roots do not know the test CA.
    let s = LdapSettings {
        url: server.ldaps_url(),
        ..base.clone()
    };
    let e = ldap::read(&s).await.unwrap_err().to_string();
    assert!(
        e.contains("cannot connect") && e.contains("certificate"),
        "{e}"
    );
    let s = LdapSettings {
        starttls: true,
        ..base.clone()
    };
    let e = ldap::read(&s).await.unwrap_err().to_string();
    assert!(e.contains("certificate"), "{e}");
    // Skipping verification works (and warns).
    let s = LdapSettings {
        url: server.ldaps_url(),
        tls_skip_verify: true,
        ..base.clone()
    };
    assert_eq!(ldap::read(&s).await.unwrap().snapshot.len(), 20);
    // A CA file that is not PEM.
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate\n").unwrap();
    let s = LdapSettings {
        url: server.ldaps_url(),
        ca_file: Some(bogus),
        ..base.clone()
    };
    let e = ldap::read(&s).await.unwrap_err().to_string();
    assert!(e.contains("no PEM certificate"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_hung_server_times_out() {
    let server = Arc::new(Slapd::start(SlapdOptions::default(), &people(1, 3000)));
    let url = proxy(Arc::clone(&server), 100_000, false).await;
    let mut s = settings(&server);
    s.url = url;
    s.disabled = None;
    s.operation_timeout = Duration::from_secs(1);
    let started = Instant::now();
    let e = ldap::read(&s).await.unwrap_err().to_string();
    assert!(e.contains("timed out") && e.contains("incomplete"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10), "{e}");
}

/// Active Directory attributes on slapd: binary objectGUID keys, userAccountControl.
#[tokio::test]
async fn ldap_active_directory_guid_and_user_account_control() {
    let guid = |i: u8| -> Vec<u8> { (0..16).map(|b| b * 16 + i).collect() };
    let mut ldif = String::new();
    for (i, uac) in [(1u8, 512), (2, 514), (3, 66048)] {
        ldif.push_str(&format!(
            "dn: cn=ad{i},{PEOPLE}\nobjectClass: inetOrgPerson\nobjectClass: dirsyncTestAccount\n\
             cn: ad{i}\nsn: AD{i}\nmail: ad{i}@corp.example\nobjectGUID:: {}\nuserAccountControl: {uac}\n\n",
            base64(&guid(i))
        ));
    }
    let server = Slapd::start(SlapdOptions::default(), &ldif);
    let mut s = LdapSettings::new(server.url(), PEOPLE, ServerType::ActiveDirectory);
    s.bind_dn = Some(READER_DN.into());
    s.bind_password = Some(Secret::new(READER_PASSWORD));
    s.filter = "(objectClass=inetOrgPerson)".into();
    let read = ldap::read(&s).await.unwrap();
    let users = read.snapshot.users();
    assert_eq!(users.len(), 3);
    let ad1 = by_email(users, "ad1@corp.example");
    assert_eq!(ad1.key, ldap::guid_string(&guid(1)).unwrap());
    assert_eq!(ad1.key, "31211101-5141-7161-8191-a1b1c1d1e1f1");
    assert!(ad1.enabled);
    assert!(!by_email(users, "ad2@corp.example").enabled);
    assert!(by_email(users, "ad3@corp.example").enabled);
}

// ---- the real binary -------------------------------------------------------------------

crate::support::env::suite_env!(Env {
    server: Slapd,
    fake: Option<FakeCovata>,
});

impl Env {
    fn write_config(&self, source_extra: &str) {
        let base = self
            .fake
            .as_ref()
            .map_or("https://covata.invalid/".to_string(), FakeCovata::base_url);
        self.config()
            .ldap(&self.server.url(), &people_source_keys(source_extra))
            .covata_with_admins(&base, "max_backoff = \"2s\"")
            .write();
    }
}

async fn env(with_fake: bool) -> Env {
    let fake = if with_fake {
        Some(FakeCovata::start().await)
    } else {
        None
    };
    let env = Env {
        env: TestEnv::new(Backend::Sqlite).await,
        server: planet_express(),
        fake,
    };
    env.write_config("");
    env
}

#[tokio::test]
async fn ldap_cli_check_reports_entries_and_missing_email() {
    let env = env(true).await;
    let o = env.run(&["check"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(stdout.contains("source: ldap"), "{}", out(&o));
    assert!(
        stdout.contains("50 entries found, 49 users (1 disabled"),
        "{}",
        out(&o)
    );
    assert!(
        stdout.contains("1 entries lacking an email (mail), skipped")
            && stdout.contains("uid=zoidberg,ou=office,ou=people,dc=example,dc=com"),
        "{}",
        out(&o)
    );
    // Email required: check lists the entry a sync quarantines, and passes.
    env.write_config("missing_email = \"error\"");
    let o = env.run(&["check"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("a sync quarantines the entries above") && stdout.contains("uid=zoidberg"),
        "{}",
        out(&o)
    );
    // Offline check validates the config only.
    env.server.stop();
    let o = env.run(&["check", "--offline"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
}

#[tokio::test]
async fn ldap_cli_config_problems_are_listed() {
    let env = env(false).await;
    std::fs::write(
        env.config_path(),
        r#"
[source]
kind = "ldap"
[source.ldap]
url = "http://x"
bind_dn = "cn=x"
page_size = -5
scope = "deep"
filter = "(broken"

[[target]]
name = "covata"
kind = "covata"
base_url = "https://covata.invalid/"
username = "u"
password = "p"
client_id = "c"
client_secret = "s"
"#,
    )
    .unwrap();
    let o = env.run(&["check", "--offline"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    for key in [
        "source.ldap.url",
        "source.ldap.bind_password",
        "source.ldap.base_dn",
        "source.ldap.page_size",
        "source.ldap.scope",
        "source.ldap.filter",
    ] {
        assert!(text.contains(key), "{key}: {text}");
    }
}

#[tokio::test]
async fn ldap_cli_plan_and_sync_follow_the_directory() {
    let env = env(true).await;
    let fake = env.fake.as_ref().unwrap();

    let o = env.run(&["plan"]);
    assert!(matches!(o.status.code(), Some(0 | 2)), "{}", out(&o));
    let plan = String::from_utf8_lossy(&o.stdout);
    assert!(plan.contains("leela@planetexpress.com"), "{}", out(&o));
    assert!(fake.users().is_empty(), "plan sends nothing");

    let o = env.run(&["sync"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let leela = fake.user_by_email("leela@planetexpress.com").unwrap();
    assert!(
        leela.roles.contains(&"ROLE_SYSTEM_ADMIN".to_string()),
        "{leela:?}"
    );
    let fry = fake.user_by_email("fry@planetexpress.com").unwrap();
    assert!(
        !fry.roles.contains(&"ROLE_SYSTEM_ADMIN".to_string()),
        "{fry:?}"
    );
    assert_eq!(
        fake.user_by_email("bender@planetexpress.com")
            .unwrap()
            .first_name
            .as_deref(),
        Some("Bender")
    );
    assert!(fake.user_by_email("zoidberg@planetexpress.com").is_none());
    let worker = fake.user_by_email("worker01@planetexpress.com").unwrap();
    assert!(worker.enabled);

    // Move Fry into admins and Leela out of it; delete worker01's entry.
    env.server.modify(&format!(
        "dn: cn=admins,{GROUPS}\nchangetype: modify\nadd: member\n\
         member: uid=fry,ou=crew,{PEOPLE}\n-\ndelete: member\nmember: uid=leela,ou=crew,{PEOPLE}\n-\n\n\
         dn: uid=worker01,ou=office,{PEOPLE}\nchangetype: delete\n"
    ));
    let o = env.run(&["sync"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let fry = fake.user_by_email("fry@planetexpress.com").unwrap();
    assert!(
        fry.roles.contains(&"ROLE_SYSTEM_ADMIN".to_string()),
        "{fry:?}"
    );
    let leela = fake.user_by_email("leela@planetexpress.com").unwrap();
    assert!(
        !leela.roles.contains(&"ROLE_SYSTEM_ADMIN".to_string()),
        "{leela:?}"
    );
    let worker = fake.user_by_email("worker01@planetexpress.com").unwrap();
    assert!(
        !worker.enabled,
        "deleted entry disables the account: {worker:?}"
    );

    // The server goes away: the run fails and nothing is disabled.
    let enabled_before = fake.users().iter().filter(|u| u.enabled).count();
    fake.clear_requests();
    env.server.stop();
    let o = env.run(&["sync"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert_has(&stderr(&o), "source");
    assert_eq!(
        fake.users().iter().filter(|u| u.enabled).count(),
        enabled_before
    );
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.method == "GET" || r.path.starts_with("/api/oauth")),
        "nothing changed on the target"
    );
}

/// After a first sync, one entry turns bad (a NUL in its given name) and a joiner is added:
/// the joiner is created, the bad entry's account is left exactly as it was (not disabled),
/// the report names the DN, exit 7. Fixed, the entry is planned normally again.
#[tokio::test]
async fn ldap_cli_bad_entry_is_quarantined_and_a_joiner_still_created() {
    bad_entry_is_quarantined(false).await;
}

/// The same on the Postgres store.
#[tokio::test(flavor = "multi_thread")]
async fn ldap_cli_bad_entry_is_quarantined_and_a_joiner_still_created_postgres() {
    bad_entry_is_quarantined(true).await;
}

async fn bad_entry_is_quarantined(postgres: bool) {
    let env = env(true).await;
    if postgres {
        let url = crate::support::pg::pg_url().await;
        let text = std::fs::read_to_string(env.config_path())
            .unwrap()
            .replace("path = \"state.db\"", &format!("database_url = \"{url}\""));
        std::fs::write(env.config_path(), text).unwrap();
    }
    let fake = env.fake.as_ref().unwrap();
    let o = env.run(&["sync"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let bender = fake.user_by_email("bender@planetexpress.com").unwrap();
    assert!(bender.enabled);
    assert!(fake.user_by_email("joiner@planetexpress.com").is_none());
    let users_before = fake.users().len();

    let bender_dn = format!("uid=bender,ou=crew,{PEOPLE}");
    env.server.modify(&format!(
        "dn: {bender_dn}\nchangetype: modify\nreplace: givenName\ngivenName:: QmVuAGRlcg==\n-\n\n\
         dn: uid=joiner,ou=crew,{PEOPLE}\nchangetype: add\nobjectClass: inetOrgPerson\n\
         uid: joiner\ncn: Jo Iner\nsn: Iner\ngivenName: Jo\n\
         mail: joiner@planetexpress.com\n"
    ));
    fake.clear_requests();
    let o = env.run(&["sync"]);
    assert_eq!(o.status.code(), Some(7), "{}", out(&o));
    let report = String::from_utf8_lossy(&o.stdout);
    let line = report
        .lines()
        .find(|l| l.contains("? quarantined") && l.contains(&bender_dn))
        .unwrap_or_else(|| panic!("no quarantined line naming {bender_dn}\n{}", out(&o)));
    assert!(
        line.contains(r#"givenName: control character in attribute "givenName": "Ben\0der""#),
        "{line}"
    );
    assert_eq!(
        report
            .lines()
            .filter(|l| l.contains("? quarantined"))
            .count(),
        1,
        "{}",
        out(&o)
    );
    // The joiner is created; Bender's account is exactly as it was; nothing else changed.
    let joiner = fake.user_by_email("joiner@planetexpress.com").unwrap();
    assert!(joiner.enabled);
    assert_eq!(
        fake.user_by_email("bender@planetexpress.com").unwrap(),
        bender
    );
    assert_eq!(fake.users().len(), users_before + 1);
    let changes: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.method != "GET" && !r.path.starts_with("/api/oauth"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(changes.len(), 1, "only the joiner's create: {changes:?}");

    // Fixed: planned normally again, nothing quarantined, nothing to change.
    env.server.modify(&format!(
        "dn: {bender_dn}\nchangetype: modify\nreplace: givenName\ngivenName: Bender\n-\n"
    ));
    let o = env.run(&["sync"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("quarantined"),
        "{}",
        out(&o)
    );
    assert_eq!(
        fake.user_by_email("bender@planetexpress.com").unwrap(),
        bender
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_cli_sync_fails_when_slapd_dies_mid_search() {
    let fake = FakeCovata::start().await;
    let server = Arc::new(Slapd::start(SlapdOptions::default(), &people(1, 3000)));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dirsync.toml");
    let write = |url: &str| {
        ConfigText::new(dir.path(), "path = \"state.db\"")
            .ldap_anonymous(url, "", &format!("base_dn = \"{PEOPLE}\"\npage_size = 100"))
            .covata(
                &fake.base_url(),
                SecretStyle::Inline,
                "bulk_import_min = 100",
            )
            .write();
    };
    let run = {
        let config = config.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_dirsync"))
                .args(["sync", "--config"])
                .arg(&config)
                .env("NO_COLOR", "1")
                .output()
                .unwrap()
        }
    };
    write(&server.url());
    let o = tokio::task::spawn_blocking(run.clone()).await.unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(fake.users().len(), 3000);
    let url = killing_proxy(Arc::clone(&server), 150_000).await;
    write(&url);
    let o = tokio::task::spawn_blocking(run).await.unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert_has(&stderr(&o), "incomplete");
    assert_eq!(fake.users().iter().filter(|u| u.enabled).count(), 3000);
}

/// Full read of 100k entries: prints entries/s and peak RSS; asserts only correctness.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: cargo test --release --test it ldap_bench -- --ignored --nocapture"]
async fn ldap_bench_100k() {
    const N: usize = 100_000;
    let t = Instant::now();
    let server = Slapd::start(
        SlapdOptions {
            size_limit: Some(500),
            paged_total_unlimited: true,
            tls: false,
        },
        &people(1, N),
    );
    println!(
        "slapadd + start of {N} entries: {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let mut s = settings(&server);
    s.disabled = None;
    s.extra.clear();
    let rss_before = vm_kib("VmRSS");
    let t = Instant::now();
    let read = ldap::read(&s).await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(read.entries, N as u64);
    assert_eq!(read.snapshot.len(), N);
    assert!(read.skipped.is_empty());
    assert_eq!(
        by_email(read.snapshot.users(), "user100000@example.com")
            .display_name
            .as_deref(),
        Some("User Number 100000")
    );
    println!(
        "ldap read of {N} entries (page size {}): {secs:.2}s, {:.0} entries/s; \
         RSS before the read {} KiB, peak RSS (VmHWM) {} KiB",
        s.page_size,
        N as f64 / secs,
        rss_before,
        vm_kib("VmHWM")
    );
}

fn vm_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
