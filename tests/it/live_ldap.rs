//! Live sync from a real slapd with the syncprov overlay (`[source.ldap] live = "syncrepl"`):
//! disables and deletions reach the fake Covata in the run after the event, group changes
//! become role changes, a restart resumes from the stored cookie, a mass deletion streamed
//! entry by entry is stopped by the rolling window, and a directory that goes away changes
//! nothing.

use std::time::{Duration, Instant};

use dirsync::store::{RunRecord, Store, Trigger};

use crate::support::covata::FakeCovata;
use crate::support::daemon::Daemon;
use crate::support::env::{Backend, TestEnv};
use crate::support::ldap_fixture::{PEOPLE, people_source_keys};
use crate::support::slapd::{Slapd, SlapdOptions};

crate::support::env::suite_env!(Env {
    server: Slapd,
    fake: FakeCovata,
    port: u16,
});

impl Env {
    /// Waits for the first full run (all 48 people on the target) and the live stream.
    async fn wait_streaming(&self, d: &Daemon) {
        wait_for("the first full run", d, || self.fake.users().len() == 48).await;
        wait_for("the stream", d, || {
            self.readyz().contains("live syncrepl: streaming")
        })
        .await;
    }

    /// The Planet Express directory (48 users a sync creates), or `ldif` instead.
    async fn new(ldif: Option<&str>, schedule: &str, safety: &str) -> Env {
        let server = match ldif {
            None => crate::support::ldap_fixture::planet_express(),
            Some(l) => Slapd::start(SlapdOptions::default(), l),
        };
        let env = Env {
            env: TestEnv::new(Backend::Sqlite).await,
            server,
            fake: FakeCovata::start().await,
            port: crate::support::child::free_port().unwrap(),
        };
        env.config()
            .ldap(
                &env.server.url(),
                &people_source_keys("live = \"syncrepl\"\n"),
            )
            .raw(&format!(
                "[schedule]\ninterval = \"24h\"\n{schedule}\n[daemon]\nshutdown_timeout = \"10s\"\n\
                 [http]\nlisten = \"127.0.0.1:{}\"\n[safety]\n{safety}",
                env.port
            ))
            .covata_with_admins(&env.fake.base_url(), "max_backoff = \"2s\"")
            .write();
        env
    }

    fn spawn_daemon(&self, name: &str) -> Daemon {
        self.spawn_daemon_logged(name)
    }

    async fn store(&self) -> Box<dyn Store> {
        crate::support::cmd::store(&self.config_path()).await
    }

    fn readyz(&self) -> String {
        TestEnv::readyz(self, self.port)
    }

    fn metric(&self, name: &str) -> f64 {
        let (_, body) = crate::support::cmd::http_get(self.port, "/metrics").unwrap_or_default();
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    fn enabled(&self, email: &str) -> Option<bool> {
        self.fake.user_by_email(email).map(|u| u.enabled)
    }

    fn roles(&self, email: &str) -> Vec<String> {
        self.fake
            .user_by_email(email)
            .map(|u| u.roles)
            .unwrap_or_default()
    }

    fn disabled_count(&self) -> usize {
        self.fake.users().iter().filter(|u| !u.enabled).count()
    }
}

/// Waits (polling, generous deadline) until `f` holds; the log helps when it never does.
pub(crate) async fn wait_for(what: &str, d: &Daemon, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !f() {
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}; daemon log:\n{}", d.log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn runs(store: &dyn Store) -> Vec<RunRecord> {
    store.list_runs(1000).await.unwrap()
}

const FRY: &str = "fry@planetexpress.com";
const LEELA: &str = "leela@planetexpress.com";
const BENDER: &str = "bender@planetexpress.com";

fn lock(dn: &str) -> String {
    format!("dn: {dn}\nchangetype: modify\nreplace: nsAccountLock\nnsAccountLock: TRUE\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn syncrepl_disable_delete_and_group_changes_reach_the_target_and_a_restart_resumes() {
    let env = Env::new(None, "run_on_start = true", "").await;
    let d = env.spawn_daemon("first");
    env.wait_streaming(&d).await;
    // A disable in the directory: the next (live) run disables the account.
    let t = Instant::now();
    env.server
        .modify(&lock(&format!("uid=fry,ou=crew,{PEOPLE}")));
    wait_for("fry disabled", &d, || env.enabled(FRY) == Some(false)).await;
    // Measured, not asserted: from ldapmodify to the fake's answer.
    eprintln!("time to revoke (disable): {:?}", t.elapsed());
    let t = Instant::now();
    // A deleted entry: its account is disabled (on_missing = disable).
    env.server.modify(&format!(
        "dn: uid=leela,ou=crew,{PEOPLE}\nchangetype: delete\n"
    ));
    wait_for("leela disabled", &d, || env.enabled(LEELA) == Some(false)).await;
    eprintln!("time to revoke (delete): {:?}", t.elapsed());
    // A group change becomes a role change (memberOf on the member's entry).
    assert!(!env.roles(BENDER).contains(&"ROLE_SYSTEM_ADMIN".to_string()));
    env.server.modify(&format!(
        "dn: cn=admins,ou=groups,dc=example,dc=com\nchangetype: modify\nadd: member\n\
         member: uid=bender,ou=crew,{PEOPLE}\n"
    ));
    wait_for("bender an admin", &d, || {
        env.roles(BENDER).contains(&"ROLE_SYSTEM_ADMIN".to_string())
    })
    .await;
    let store = env.store().await;
    let all = runs(store.as_ref()).await;
    let live: Vec<_> = all.iter().filter(|r| r.trigger == Trigger::Live).collect();
    assert!(!live.is_empty(), "{all:#?}");
    // Live runs of changed users read only those: no source count (never a baseline).
    assert!(live.iter().any(|r| r.source_count.is_none()), "{live:#?}");
    // Everyone else is untouched.
    assert_eq!(env.disabled_count(), 2);
    assert!(env.metric("dirsync_live_events_applied_total") >= 3.0);
    assert!(env.metric("dirsync_live_lag_seconds") >= 0.0);
    d.stop();

    // While the daemon is down: a disable. The restart resumes from the stored cookie (no
    // run at start, no full read) and applies it.
    let before = runs(store.as_ref()).await.len();
    env.server
        .modify(&lock(&format!("uid=bender,ou=crew,{PEOPLE}")));
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(
        env.config_path(),
        text.replace("run_on_start = true", "run_on_start = false"),
    )
    .unwrap();
    let d = env.spawn_daemon("second");
    wait_for("bender disabled after the restart", &d, || {
        env.enabled(BENDER) == Some(false)
    })
    .await;
    let after = runs(store.as_ref()).await;
    let new: Vec<_> = after.iter().take(after.len() - before).collect();
    assert!(!new.is_empty());
    for r in &new {
        assert_eq!(r.trigger, Trigger::Live, "{r:#?}");
        assert_eq!(
            r.source_count, None,
            "a full read after the restart: {r:#?}"
        );
    }
    let log = d.stop();
    assert!(log.contains("resume=true"), "{log}");
    assert_eq!(env.disabled_count(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn syncrepl_refused_cookie_falls_back_to_a_full_read() {
    let env = Env::new(None, "run_on_start = false", "").await;
    // A stored cookie the server cannot resume from (older than anything it has).
    let store = env.store().await;
    let id = format!(
        "syncrepl {} {PEOPLE} (objectClass=inetOrgPerson)",
        env.server.url()
    );
    store
        .save_live_cookie(
            &id,
            Some(b"rid=000,csn=19700101000000.000000Z#000000#000#000000"),
        )
        .await
        .unwrap();
    let d = env.spawn_daemon("daemon");
    wait_for("the full read", &d, || env.fake.users().len() == 48).await;
    // The live run that read everything (a source count), not a run of changed keys.
    wait_for("the live run's row", &d, || {
        futures::executor::block_on(runs(store.as_ref()))
            .iter()
            .any(|r| r.trigger == Trigger::Live && r.source_count == Some(49))
    })
    .await;
    d.stop();
}

/// `n` users under ou=people (`u0001` …), for the window test.
fn many_users(n: usize) -> String {
    (1..=n)
        .map(|i| {
            format!(
                "dn: uid=u{i:04},{PEOPLE}\nobjectClass: inetOrgPerson\nobjectClass: dirsyncTestAccount\n\
                 cn: User {i}\nsn: User\ngivenName: U{i}\nmail: u{i}@example.com\nuid: u{i:04}\n\n"
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn syncrepl_mass_deletion_streamed_one_by_one_is_stopped_by_the_window() {
    let env = Env::new(
        Some(&many_users(250)),
        "run_on_start = true",
        "max_disables = 20\nmax_disable_percent = 100\nwindow = \"1h\"",
    )
    .await;
    let d = env.spawn_daemon("daemon");
    wait_for("the first full run", &d, || env.fake.users().len() == 250).await;
    wait_for("the stream", &d, || {
        env.readyz().contains("live syncrepl: streaming")
    })
    .await;
    // 200 deletions, one ldapmodify record each: 200 separate events.
    let deletes: String = (1..=200)
        .map(|i| format!("dn: uid=u{i:04},{PEOPLE}\nchangetype: delete\n\n"))
        .collect();
    env.server.modify(&deletes);
    wait_for("every event applied", &d, || {
        env.metric("dirsync_live_events_applied_total") >= 200.0
    })
    .await;
    wait_for("the hold", &d, || {
        env.readyz().contains("holding disables and deletes")
    })
    .await;
    // Nothing beyond the window's limit was disabled.
    let disabled = env.disabled_count();
    assert!(disabled <= 20, "{disabled} disabled");
    d.stop();
    assert_eq!(env.disabled_count(), disabled);
}

#[tokio::test(flavor = "multi_thread")]
async fn syncrepl_directory_going_away_changes_nothing() {
    let env = Env::new(None, "run_on_start = true", "").await;
    let d = env.spawn_daemon("daemon");
    env.wait_streaming(&d).await;
    env.server.stop();
    wait_for("the stream to notice", &d, || {
        env.readyz().contains("reconnecting")
    })
    .await;
    assert_eq!(env.disabled_count(), 0);
    let log = d.stop();
    assert!(log.contains("nothing is disabled for it"), "{log}");
    assert_eq!(env.disabled_count(), 0);
}
