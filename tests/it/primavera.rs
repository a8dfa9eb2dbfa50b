//! `dirsync sync` against the fake Primavera server and a real store: jobs for creates,
//! modifications and deletions, batched change-status, per-user job failures, one job at a
//! time, and a kill during a running job.

use crate::support::cmd::{assert_has, stdout};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::support::env::Backend;
use crate::support::primavera::{self, FailOp, FakePrimavera, Fault};

const HEADER: &str = "id,email,first,last,status,groups,dept\n";

crate::support::env::env_with_fake!(Env, FakePrimavera, HEADER, new);

fn users(n: usize) -> String {
    (1..=n)
        .map(|i| {
            let groups = if i % 10 == 1 { "staff;admins" } else { "staff" };
            user_line(i, &format!("Last{i}"), "active", groups, "sfo")
        })
        .collect()
}

fn user_line(i: usize, last: &str, status: &str, groups: &str, dept: &str) -> String {
    format!("E{i:05},user{i}@example.com,First{i},{last},{status},{groups},{dept}\n")
}

impl Env {
    /// `extra`: more `[[target]]` keys.
    fn write_config(&self, extra: &str) {
        std::fs::write(
            self.path("p6-password"),
            format!("{}\n", primavera::PASSWORD),
        )
        .unwrap();
        let target = format!(
            r#"
[safety]
max_source_drop_percent = 100
max_disable_percent = 100
max_deletes = 1000
max_delete_percent = 100

[[target]]
name = "p6"
kind = "primavera"
base_url = "{base}"
username = "{user}"
password_file = "p6-password"
max_backoff = "1s"
job_poll_interval = "50ms"
{timeout}
default_roles = ["PrimaveraViewer"]
{extra}
[target.fields]
loginId = "{{email | lower}}"
emailAddress = "{{email}}"
firstName = "{{given_name}}"
lastName = "{{family_name}}"
employeeNumber = "{{key}}"
organization = "{{department}}"
userType = "EMP"
"#,
            base = self.fake.base_url(),
            user = primavera::USERNAME,
            timeout = if extra.contains("job_timeout") {
                ""
            } else {
                "job_timeout = \"60s\""
            },
        );
        self.config()
            .csv("[source.csv.extra]\ndepartment = \"dept\"")
            .raw(&target)
            .role("admins", &["PrimaveraAdmin"])
            .write();
    }

    fn api_requests(&self) -> Vec<(String, String)> {
        self.fake
            .requests()
            .into_iter()
            .map(|r| (r.method, r.path))
            .collect()
    }

    /// The job submissions (`POST /user` bodies) received since the last clear.
    fn jobs(&self) -> Vec<Value> {
        self.fake
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path == "/user")
            .map(|r| r.json())
            .collect()
    }
}

/// The loginIds in a job body's list.
fn logins(job: &Value, list: &str) -> Vec<String> {
    job[list]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u["loginId"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn count(jobs: &[Value], list: &str) -> usize {
    jobs.iter()
        .map(|j| j[list].as_array().map_or(0, Vec::len))
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_against_fake_primavera_postgres() {
    let env = Env::new(Backend::Postgres, &users(5)).await;
    env.write_config("on_missing = \"delete\"");

    // First sync: one `added` job with everyone; server ids recorded.
    env.run_code(&["sync"], 0);
    let all = env.fake.users();
    assert_eq!(all.len(), 5);
    let jobs = env.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(logins(&jobs[0], "added").len(), 5);
    assert!(
        env.fake.requests().iter().all(|r| r.authorized),
        "every request carries HTTP Basic"
    );
    let u1 = env.fake.user("user1@example.com").unwrap();
    assert_eq!(u1.roles, vec!["PrimaveraAdmin".to_string()]);
    assert_eq!(u1.organization, "sfo");
    assert_eq!(u1.user_type.as_deref(), Some("EMP"));
    assert_eq!(u1.employee_number.as_deref(), Some("E00001"));
    assert_eq!(u1.email, "user1@example.com");
    assert!(!u1.disabled);
    let u2 = env.fake.user("user2@example.com").unwrap();
    assert_eq!(u2.roles, vec!["PrimaveraViewer".to_string()]);
    let store = env.store().await;
    let accounts = store.load_accounts("p6").await.unwrap();
    assert_eq!(accounts.len(), 5);
    for a in &accounts {
        let login = a.login.clone().unwrap();
        let remote = env.fake.user(&login).unwrap();
        assert_eq!(a.remote_id.as_deref(), Some(remote.id.as_str()), "{login}");
        assert!(a.owned && a.enabled);
    }

    // Second sync, nothing changed: not a single request.
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    assert!(env.fake.requests().is_empty(), "{:?}", env.api_requests());

    // Rename, role change, org move, source disable, removal (on_missing = delete).
    let csv = [
        user_line(1, "Renamed", "active", "staff;admins", "sfo"),
        user_line(2, "Last2", "active", "staff;admins", "sfo"),
        user_line(3, "Last3", "disabled", "staff", "sfo"),
        user_line(5, "Last5", "active", "staff", "nyc"),
    ]
    .concat();
    env.write_csv(&csv);
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    let u1 = env.fake.user("user1@example.com").unwrap();
    assert_eq!(u1.last_name, "Renamed");
    assert_eq!(u1.roles, vec!["PrimaveraAdmin".to_string()]);
    let u2 = env.fake.user("user2@example.com").unwrap();
    assert_eq!(u2.roles, vec!["PrimaveraAdmin".to_string()]);
    assert_eq!(u2.last_name, "Last2");
    assert!(env.fake.user("user3@example.com").unwrap().disabled);
    assert!(env.fake.user("user4@example.com").is_none());
    let u5 = env.fake.user("user5@example.com").unwrap();
    assert_eq!(u5.organization, "nyc");
    assert_eq!(env.fake.users().len(), 4);
    let jobs = env.jobs();
    assert_eq!(count(&jobs, "added"), 0, "{jobs:?}");
    assert_eq!(count(&jobs, "modified"), 3, "{jobs:?}");
    assert_eq!(count(&jobs, "deleted"), 1, "{jobs:?}");
    let deleted: Vec<String> = jobs.iter().flat_map(|j| logins(j, "deleted")).collect();
    assert_eq!(deleted, vec!["user4@example.com".to_string()]);
    for j in &jobs {
        for u in j["deleted"].as_array().unwrap() {
            assert!(u["id"].is_string(), "{u}");
        }
    }
    assert_eq!(env.fake.status_batches(), vec![1]);
    // No per-user endpoints: only jobs, their status, change-status (and listing).
    for (m, p) in env.api_requests() {
        assert!(
            (m == "POST" && p == "/user")
                || (m == "GET" && (p.starts_with("/user/status/") || p == "/user"))
                || (m == "PUT" && p == "/user/change-status"),
            "{m} {p}"
        );
    }
    assert_eq!(env.fake.busy_refusals(), 0);
    let accounts = store.load_accounts("p6").await.unwrap();
    assert_eq!(accounts.len(), 4);
    assert!(!accounts.iter().find(|a| a.key == "E00003").unwrap().enabled);

    // User 3 active again: one change-status call, nothing else.
    env.write_csv(&csv.replace("Last3,disabled", "Last3,active"));
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    assert_eq!(
        env.api_requests(),
        vec![("PUT".to_string(), "/user/change-status".to_string())]
    );
    assert!(!env.fake.user("user3@example.com").unwrap().disabled);

    // And then nothing again.
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    assert!(env.fake.requests().is_empty(), "{:?}", env.api_requests());
}

#[tokio::test(flavor = "multi_thread")]
async fn per_user_job_failure_fails_only_that_user_and_is_retried() {
    let env = Env::new(Backend::Sqlite, &users(4)).await;
    env.fake.fail_next(
        FailOp::Add,
        "user3@example.com",
        "identity store refused the user",
    );
    env.fake.partial_next(
        "user2@example.com",
        "User created, but Application Access failed",
    );
    let o = env.run_code(&["sync"], 4);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(text.contains("identity store refused the user"), "{text}");
    assert!(text.contains("Application Access failed"), "{text}");
    assert_eq!(env.fake.users().len(), 3);
    let store = env.store().await;
    let run = &store.list_runs(1).await.unwrap()[0];
    assert_eq!((run.applied, run.failed), (3, 1));
    let ops = store.run_operations(run.id).await.unwrap();
    let failed: Vec<_> = ops.iter().filter(|o| o.status == "failed").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].source_key, "E00003");
    // The partial success is kept on the operation.
    let partial = ops.iter().find(|o| o.source_key == "E00002").unwrap();
    assert_eq!(partial.status, "succeeded");
    assert!(
        partial
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("Application Access failed"),
        "{partial:?}"
    );

    // Next run: only user 3 is sent again, and created.
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    let jobs = env.jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        logins(&jobs[0], "added"),
        vec!["user3@example.com".to_string()]
    );
    assert_eq!(env.fake.users().len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_during_a_running_job_then_restarted_does_not_resubmit() {
    let env = Env::new(Backend::Postgres, &users(6)).await;
    env.fake.set_job_delay(Duration::from_secs(4));
    let mut child = env
        .command(&["sync"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the job to be submitted and polled, then kill -9.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let polled = env
            .fake
            .requests()
            .iter()
            .any(|r| r.path.starts_with("/user/status/"));
        if polled || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(env.fake.job_running(), "the job must still be running");
    assert!(env.fake.users().is_empty());
    let submitted = env.fake.submitted_jobs();
    assert_eq!(submitted.len(), 1);

    // Restart: reconciliation waits for the job instead of submitting the users again.
    env.run_code(&["sync"], 0);
    let submitted = env.fake.submitted_jobs();
    assert_eq!(
        submitted.len(),
        1,
        "the additions were submitted again: {submitted:?}"
    );
    assert_eq!(env.fake.busy_refusals(), 0);
    let all = env.fake.users();
    assert_eq!(all.len(), 6);
    let mut logins: Vec<String> = all.iter().map(|u| u.login_id.clone()).collect();
    logins.sort();
    logins.dedup();
    assert_eq!(logins.len(), 6);
    let store = env.store().await;
    let accounts = store.load_accounts("p6").await.unwrap();
    assert_eq!(accounts.len(), 6);
    for a in &accounts {
        let remote = env.fake.user(a.login.as_deref().unwrap()).unwrap();
        assert!(a.owned);
        assert_eq!(a.remote_id.as_deref(), Some(remote.id.as_str()));
    }
    assert!(store.unfinished_operations("p6").await.unwrap().is_empty());
    env.assert_nothing_to_do(&["sync"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_updates_share_jobs_one_job_at_a_time() {
    let env = Env::new(Backend::Sqlite, &users(40)).await;
    env.write_config("concurrency = 8\nbatch_size = 16");
    env.run_code(&["sync"], 0);
    assert_eq!(env.fake.users().len(), 40);
    // batch_size 16: three `added` jobs.
    let sizes: Vec<usize> = env
        .jobs()
        .iter()
        .map(|j| logins(j, "added").len())
        .collect();
    assert_eq!(sizes, vec![16, 16, 8]);
    // Everyone renamed: updates arrive concurrently and are gathered into few jobs.
    let csv: String = (1..=40)
        .map(|i| {
            user_line(
                i,
                &format!("New{i}"),
                "active",
                if i % 10 == 1 { "staff;admins" } else { "staff" },
                "sfo",
            )
        })
        .collect();
    env.write_csv(&csv);
    env.fake.clear_requests();
    env.run_code(&["sync"], 0);
    let jobs = env.jobs();
    assert_eq!(count(&jobs, "modified"), 40);
    assert!(jobs.len() <= 10, "{} jobs for 40 updates", jobs.len());
    assert!(jobs.iter().all(|j| logins(j, "modified").len() <= 16));
    assert_eq!(
        env.fake.busy_refusals(),
        0,
        "the connector ran two jobs at once"
    );
    assert!(
        env.fake
            .users()
            .iter()
            .all(|u| u.last_name.starts_with("New"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn change_status_errors_fail_the_batch_and_the_next_run_retries() {
    let env = Env::new(Backend::Sqlite, &users(3)).await;
    env.run_code(&["sync"], 0);
    env.write_csv(&users(3).replace(",active,", ",disabled,"));
    env.fake
        .inject("PUT", "/user/change-status", Fault::Status(400), 1);
    let o = env.run_code(&["sync"], 4);
    assert_has(&stdout(&o), "injected fault");
    assert!(env.fake.users().iter().all(|u| !u.disabled));
    // A job refused with 500: the creates of a new user fail with the body kept.
    env.write_csv(&format!(
        "{}{}",
        users(3).replace(",active,", ",disabled,"),
        user_line(9, "Last9", "active", "staff", "sfo")
    ));
    env.fake.inject("POST", "/user", Fault::Status(500), 1);
    env.run_code(&["sync"], 4);
    assert!(env.fake.users().iter().all(|u| u.disabled));
    assert!(env.fake.user("user9@example.com").is_none());
    env.run_code(&["sync"], 0);
    assert!(env.fake.user("user9@example.com").is_some());
    assert_eq!(env.fake.status_batches(), vec![3]);
}

#[tokio::test(flavor = "multi_thread")]
async fn location_header_dropped_polls_and_duplicate_logins() {
    // A first sync without user2 (first contact with an empty tenant); then user2 is made by
    // hand and added to the source, so its create meets the hand-made account in the job.
    let all = users(3);
    let without2 = all.replace(&all[users(1).len()..users(2).len()], "");
    let env = Env::new(Backend::Sqlite, &without2).await;
    env.fake.set_location_header(true);
    env.fake.set_latency(Duration::from_millis(5));
    env.run_code(&["sync"], 0);
    env.write_csv(&all);
    // Someone created user2 by hand: the job reports it as a per-user failure.
    let hand = env.fake.insert_user(primavera::FakeUser::new(
        "user2@example.com",
        "user2@example.com",
        &["PrimaveraP6Production"],
    ));
    // A dropped status poll and a slow one are absorbed (GET is retried).
    env.fake.inject("GET", "/user/status/", Fault::Drop, 1);
    env.fake.inject(
        "GET",
        "/user/status/",
        Fault::Latency(Duration::from_millis(100)),
        1,
    );
    let o = env.run_code(&["sync"], 4);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        text.contains("conflict") && text.contains("already exists"),
        "{text}"
    );
    assert_eq!(env.fake.pending_faults(), 0);
    assert_eq!(env.fake.users().len(), 3);
    let u2 = env.fake.user("user2@example.com").unwrap();
    assert_eq!(u2.id, hand);
    assert_eq!(u2.roles, vec!["PrimaveraP6Production".to_string()]);
    let store = env.store().await;
    let row = crate::support::cmd::recorded(&*store, "p6", "E00002").await;
    assert!(!row.owned);
    // Adoption takes the hand-made account over (listing only), then sync fixes its roles.
    env.fake.clear_requests();
    env.run_code(&["adopt", "--target", "p6"], 0);
    assert!(env.api_requests().iter().all(|(m, _)| m == "GET"));
    env.run_code(&["sync"], 0);
    let u2 = env.fake.user("user2@example.com").unwrap();
    assert_eq!(u2.id, hand);
    assert_eq!(u2.roles, vec!["PrimaveraViewer".to_string()]);
    assert_eq!(u2.first_name, "First2");
    assert_eq!(env.fake.users().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn job_timeout_fails_clearly_and_the_next_run_waits_for_the_running_job() {
    let env = Env::new(Backend::Sqlite, &users(2)).await;
    env.write_config("job_timeout = \"2s\"");
    env.fake.set_job_delay(Duration::from_millis(2500));
    let o = env.run_code(&["sync"], 4);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(text.contains("did not finish within"), "{text}");
    assert!(text.contains("job_timeout"), "{text}");
    // The job is still running: its creates' outcome is unknown, so their journal rows stay
    // `sent`; the next run's reconciliation waits for the job to settle and finds both
    // accounts created: recorded as owned, never submitted again, nothing to adopt.
    assert!(env.fake.job_running());
    env.fake.set_job_delay(Duration::from_millis(50));
    let o = env.run_code(&["sync"], 0);
    assert_has(&stdout(&o), "2 creates confirmed on the target");
    assert_eq!(env.fake.users().len(), 2);
    let store = env.store().await;
    let rows = store.load_accounts("p6").await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.owned), "{rows:?}");
    let o = env.run_code(&["sync"], 0);
    assert_has(&stdout(&o), "Nothing to do");
    assert_eq!(env.fake.users().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_are_validated_against_get_roles() {
    let env = Env::new(Backend::Sqlite, &users(1)).await;
    let config = dirsync::config::load_with_env(&env.config_path(), &[]).unwrap();
    let target = &config.targets[0];
    let dirsync::connector::VendorSettings::Primavera(settings) = &target.vendor else {
        panic!("not a Primavera target");
    };
    let c = dirsync::connector::primavera::PrimaveraConnector::new(target, settings).unwrap();
    let unknown = c
        .validate_roles(&["PrimaveraAdmin".to_string(), "NoSuchRole".to_string()])
        .await
        .unwrap();
    assert_eq!(unknown, vec!["NoSuchRole".to_string()]);
    assert_eq!(
        env.api_requests(),
        vec![("GET".to_string(), "/roles".to_string())]
    );
}
