//! Live sync the Active Directory way (`[source.ldap] live = "usn"`) against a real slapd
//! standing in for a domain controller: the entries carry a `uSNChanged` the test maintains,
//! and the rootDSE's `highestCommittedUSN` / `dnsHostName` / `dsServiceName` come from
//! slapd's `rootDSE <file>`, which the test rewrites (restarting slapd) to commit a USN. The
//! `dsServiceName` entry carries the `invocationId`. A disable with a bumped `uSNChanged`
//! reaches the fake Covata through a live run of that user; a new `invocationId` (a restored
//! DC) makes the next poll read the whole directory.

use dirsync::store::{Store, Trigger};

use crate::live_ldap::{runs, wait_for};
use crate::support::covata::FakeCovata;
use crate::support::daemon::Daemon;
use crate::support::env::{Backend, TestEnv};
use crate::support::ldap_fixture::{PEOPLE, people_source_keys};
use crate::support::slapd::{SUFFIX, Slapd, SlapdOptions};

crate::support::env::suite_env!(Env {
    server: Slapd,
    fake: FakeCovata,
    port: u16,
});

/// Users `a0001` … with `uSNChanged` 1 … n.
const USERS: usize = 10;

/// The entry `dsServiceName` names (an AD DC's NTDS Settings).
fn ntds_dn() -> String {
    format!("cn=ntds settings,{SUFFIX}")
}

fn directory() -> String {
    let mut ldif = format!(
        "dn: {}\nobjectClass: device\nobjectClass: dirsyncTestAccount\ncn: ntds settings\n\
         invocationId: aaaa\n\n",
        ntds_dn()
    );
    for i in 1..=USERS {
        ldif.push_str(&format!(
            "dn: uid=a{i:04},{PEOPLE}\nobjectClass: inetOrgPerson\nobjectClass: dirsyncTestAccount\n\
             cn: User {i}\nsn: User\ngivenName: A{i}\nmail: a{i}@example.com\nuid: a{i:04}\n\
             uSNChanged: {i}\n\n"
        ));
    }
    ldif
}

/// The rootDSE attributes of the stand-in domain controller.
fn root_dse(highest: u64) -> String {
    format!(
        "dn:\nhighestCommittedUSN: {highest}\ndnsHostName: dc1.example.com\ndsServiceName: {}\n",
        ntds_dn()
    )
}

fn email(i: usize) -> String {
    format!("a{i}@example.com")
}

impl Env {
    async fn new() -> Env {
        let server = Slapd::start_with_root_dse(
            SlapdOptions::default(),
            &directory(),
            &root_dse(USERS as u64),
        );
        let env = Env {
            env: TestEnv::new(Backend::Sqlite).await,
            server,
            fake: FakeCovata::start().await,
            port: crate::support::child::free_port().unwrap(),
        };
        env.config()
            .ldap(
                &env.server.url(),
                &people_source_keys("live = \"usn\"\npoll_interval = \"1s\"\n"),
            )
            .raw(&format!(
                "[schedule]\ninterval = \"24h\"\nrun_on_start = false\n\
                 [daemon]\nshutdown_timeout = \"10s\"\n\
                 [http]\nlisten = \"127.0.0.1:{}\"\n",
                env.port
            ))
            .covata_with_admins(&env.fake.base_url(), "max_backoff = \"2s\"")
            .write();
        env
    }

    fn enabled(&self, i: usize) -> Option<bool> {
        self.fake.user_by_email(&email(i)).map(|u| u.enabled)
    }

    fn readyz(&self) -> String {
        TestEnv::readyz(self, self.port)
    }

    /// Disables user `i` in the directory, with `uSNChanged: usn`.
    fn disable(&self, i: usize, usn: u64) {
        self.server.modify(&format!(
            "dn: uid=a{i:04},{PEOPLE}\nchangetype: modify\nreplace: nsAccountLock\n\
             nsAccountLock: TRUE\n-\nreplace: uSNChanged\nuSNChanged: {usn}\n"
        ));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn usn_disable_reaches_the_target_and_a_new_invocation_id_reads_in_full() {
    let mut env = Env::new().await;
    let store: Box<dyn Store> = crate::support::cmd::store(&env.config_path()).await;
    let d: Daemon = env.spawn_daemon_logged("daemon");
    // No stored position: the first poll reads the whole directory.
    wait_for("the first full read", &d, || {
        env.fake.users().len() == USERS
    })
    .await;
    wait_for("the poll", &d, || {
        env.readyz().contains("live usn: polling")
    })
    .await;
    // The live run that read everything (a source count), once its row is written.
    wait_for("the full read's run row", &d, || {
        futures::executor::block_on(runs(store.as_ref()))
            .iter()
            .any(|r| r.trigger == Trigger::Live && r.source_count == Some(USERS as u64))
    })
    .await;
    let first = runs(store.as_ref()).await;

    // A disable with a bumped uSNChanged, committed on the DC (highestCommittedUSN 11): a
    // live run of that one user.
    env.disable(3, 11);
    env.server.set_root_dse(&root_dse(11));
    wait_for("a0003 disabled", &d, || env.enabled(3) == Some(false)).await;
    wait_for("the live run's row", &d, || {
        futures::executor::block_on(runs(store.as_ref())).len() > first.len()
    })
    .await;
    let all = runs(store.as_ref()).await;
    let new: Vec<_> = all.iter().take(all.len() - first.len()).collect();
    assert!(!new.is_empty(), "{all:#?}");
    for r in &new {
        assert_eq!(r.trigger, Trigger::Live, "{r:#?}");
        assert_eq!(r.source_count, None, "a full read for one change: {r:#?}");
    }
    let others: Vec<usize> = (1..=USERS)
        .filter(|&i| env.enabled(i) != Some(true))
        .collect();
    assert_eq!(others, [3]);

    // A disable whose uSNChanged is not above the position (no poll of changes finds it),
    // then the DC's database is restored (a new invocationId): the next poll reads the whole
    // directory, and the full read finds it.
    let before = runs(store.as_ref()).await.len();
    env.disable(5, 5);
    env.server.modify(&format!(
        "dn: {}\nchangetype: modify\nreplace: invocationId\ninvocationId: bbbb\n",
        ntds_dn()
    ));
    wait_for("a0005 disabled by the full read", &d, || {
        env.enabled(5) == Some(false)
    })
    .await;
    wait_for("the second full read's run row", &d, || {
        let all = futures::executor::block_on(runs(store.as_ref()));
        all.iter()
            .take(all.len() - before)
            .any(|r| r.trigger == Trigger::Live && r.source_count == Some(USERS as u64))
    })
    .await;
    let log = d.stop();
    assert!(
        log.contains("invocationId of dc1.example.com changed"),
        "{log}"
    );
    let disabled: Vec<usize> = (1..=USERS)
        .filter(|&i| env.enabled(i) != Some(true))
        .collect();
    assert_eq!(disabled, [3, 5]);
}
