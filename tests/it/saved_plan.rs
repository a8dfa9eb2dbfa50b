//! Saved plans (`dirsync plan --out FILE`, `dirsync apply FILE`) and one-user syncs
//! (`dirsync sync --user KEY`) against the fake Covata, with the real binary and real stores.

use crate::support::cmd::{code, out, stderr};
use std::process::Output;

use crate::support::covata::FakeCovata;
use crate::support::env::Backend;

use crate::support::env::{USERS_HEADER as HEADER, user_rows};

crate::support::env::env_with_fake!(Env, FakeCovata, HEADER);

fn users(n: usize) -> String {
    user_rows(1..=n, |_| false)
}

impl Env {
    async fn new(postgres: bool, n: usize) -> Env {
        let env = Env::with_csv(Backend::of(postgres), &users(n)).await;
        env.write_config("");
        env
    }

    fn write_config(&self, safety: &str) {
        self.config()
            .csv("")
            .raw(&format!("[safety]\n{safety}"))
            .covata_with_admins(&self.fake.base_url(), "max_backoff = \"2s\"")
            .write();
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    /// Syncs, changes the CSV ([`changed_csv`]) and saves the plan (exit 2).
    fn sync_then_save_a_plan(&self) {
        let o = self.run(&["sync"]);
        assert_eq!(code(&o), 0, "{}", out(&o));
        self.write_csv(&changed_csv());
        let o = self.run(&["plan", "--out", &self.plan_file()]);
        assert_eq!(code(&o), 2, "{}", out(&o));
    }

    fn plan_file(&self) -> String {
        self.path("plan.json").display().to_string()
    }

    fn read_plan(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.path("plan.json")).unwrap()).unwrap()
    }

    /// Non-token requests: (method, path, query).
    fn api_requests(&self) -> Vec<(String, String, String)> {
        let mut v: Vec<_> = self
            .fake
            .requests()
            .into_iter()
            .filter(|r| !r.path.starts_with("/api/oauth"))
            .map(|r| (r.method, r.path, r.query.unwrap_or_default()))
            .collect();
        v.sort();
        v
    }
}

/// The operations of a plan file or JSON report: (target, key, op, remote_id), sorted.
fn plan_ops(report: &serde_json::Value) -> Vec<(String, String, String, Option<String>)> {
    let mut v = Vec::new();
    for t in report["targets"].as_array().unwrap() {
        for op in t["ops"].as_array().unwrap() {
            v.push((
                t["name"].as_str().unwrap().to_string(),
                op["key"].as_str().unwrap().to_string(),
                op["op"].as_str().unwrap().to_string(),
                op["remote_id"].as_str().map(str::to_string),
            ));
        }
    }
    v.sort();
    v
}

/// The Covata requests each planned operation makes (creates one by one, updates and role
/// changes as one PUT, status changes through the bulk endpoint).
fn expected_requests(
    ops: &[(String, String, String, Option<String>)],
) -> Vec<(String, String, String)> {
    let mut v = Vec::new();
    let (mut enables, mut disables) = (false, false);
    for (_, _, op, remote) in ops {
        match op.as_str() {
            "create" => v.push(("POST".into(), "/api/v1/users".into(), String::new())),
            "update" | "set_roles" => v.push((
                "PUT".into(),
                format!("/api/v1/users/{}", remote.as_deref().unwrap()),
                String::new(),
            )),
            "enable" => enables = true,
            "disable" => disables = true,
            other => panic!("unexpected op {other}"),
        }
    }
    if enables {
        v.push((
            "POST".into(),
            "/api/v1/users/bulk".into(),
            "action=enable".into(),
        ));
    }
    if disables {
        for a in ["expire", "disable"] {
            v.push((
                "POST".into(),
                "/api/v1/users/bulk".into(),
                format!("action={a}"),
            ));
        }
    }
    v.sort();
    v
}

/// The plan's changes: E00001 renamed, E00003 disabled in the source, E00006 new.
fn changed_csv() -> String {
    let mut csv = users(5)
        .replace("First1,Last1", "First1,Renamed")
        .replace("Last3,active", "Last3,disabled");
    csv.push_str("E00006,user6@example.com,First6,Last6,active,staff\n");
    csv
}

#[tokio::test(flavor = "multi_thread")]
async fn saved_plan_applies_exactly_its_operations_postgres() {
    let env = Env::new(true, 5).await;
    env.sync_then_save_a_plan();
    let file = env.read_plan();
    assert_eq!(file["schema"], "dirsync.report");
    assert_eq!(file["version"], 1);
    assert_eq!(file["kind"], "plan");
    assert!(file["saved"]["fingerprints"]["covata"]["state_version"].is_i64());
    assert!(file["saved"]["accounts"]["covata"]["E00001"].is_object());
    let ops = plan_ops(&file);
    let kinds: Vec<(&str, &str)> = ops
        .iter()
        .map(|(_, k, op, _)| (k.as_str(), op.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("E00001", "update"),
            ("E00003", "disable"),
            ("E00006", "create")
        ]
    );

    env.fake.clear_requests();
    let o = env.run(&["apply", &env.plan_file(), "--format", "json"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert_eq!(env.api_requests(), expected_requests(&ops), "{}", out(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["trigger"], "apply");
    assert_eq!(plan_ops(&report), ops);
    assert_eq!(
        last_name(&env, "user1@example.com").as_deref(),
        Some("Renamed")
    );
    assert!(!env.fake.user_by_email("user3@example.com").unwrap().enabled);
    assert!(env.fake.user_by_email("user6@example.com").is_some());

    // Recorded as a run with its journal; nothing is left to do.
    let store = env.store().await;
    let run = &store.list_runs(1).await.unwrap()[0];
    assert_eq!(run.trigger, dirsync::store::Trigger::Apply);
    assert_eq!(run.status, dirsync::store::RunStatus::Succeeded);
    let mut journaled: Vec<(String, String)> = store
        .run_operations(run.id)
        .await
        .unwrap()
        .into_iter()
        .map(|o| {
            assert_eq!(o.status, "succeeded");
            (o.source_key, o.kind)
        })
        .collect();
    journaled.sort();
    assert_eq!(
        journaled,
        ops.iter()
            .map(|(_, k, op, _)| (k.clone(), op.clone()))
            .collect::<Vec<_>>()
    );
    let o = env.run(&["plan"]);
    assert_eq!(code(&o), 0, "{}", out(&o));

    // The same plan again: the state moved on, so it is refused without a request.
    env.fake.clear_requests();
    let o = env.run(&["apply", &env.plan_file()]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(env.fake.requests().is_empty(), "{:?}", env.fake.requests());
}

#[tokio::test(flavor = "multi_thread")]
async fn store_change_between_plan_and_apply_refuses_and_user_sync_touches_one_user_postgres() {
    let env = Env::new(true, 5).await;
    let o = env.run(&["sync"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    let bob = env.fake.user_by_email("user2@example.com").unwrap();
    let csv = users(5)
        .replace("First1,Last1", "First1,Renamed")
        .replace("First2,Last2", "First2,Renamed");
    env.write_csv(&csv);
    let o = env.run(&["plan", "--out", &env.plan_file()]);
    assert_eq!(code(&o), 2, "{}", out(&o));

    // One user now: only E00002's update is sent.
    env.fake.clear_requests();
    let o = env.run(&["sync", "--user", "E00002", "--target", "covata"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert_eq!(
        env.api_requests(),
        vec![(
            "PUT".to_string(),
            format!("/api/v1/users/{}", bob.id),
            String::new()
        )],
        "{}",
        out(&o)
    );
    assert_eq!(
        env.fake.user(&bob.id).unwrap().last_name.as_deref(),
        Some("Renamed")
    );
    assert_eq!(
        last_name(&env, "user1@example.com").as_deref(),
        Some("Last1")
    );
    let store = env.store().await;
    let run = &store.list_runs(1).await.unwrap()[0];
    assert_eq!(run.trigger, dirsync::store::Trigger::User);
    assert_eq!(run.applied, 1);

    // E00001's change is still pending.
    let o = env.run(&["plan", "--format", "json"]);
    assert_eq!(code(&o), 2, "{}", out(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let pending: Vec<(String, String)> = plan_ops(&report)
        .into_iter()
        .map(|(_, k, op, _)| (k, op))
        .collect();
    assert_eq!(pending, vec![("E00001".to_string(), "update".to_string())]);

    // The saved plan predates that run: refused, not a single request (not even a token).
    env.fake.clear_requests();
    let o = env.run(&["apply", &env.plan_file()]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(
        stderr(&o).contains("operations were applied since the plan was made"),
        "{}",
        out(&o)
    );
    assert!(env.fake.requests().is_empty(), "{:?}", env.fake.requests());
    assert_eq!(store.list_runs(1).await.unwrap()[0].id, run.id + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn source_change_and_old_plans_are_refused() {
    let env = Env::new(false, 5).await;
    env.sync_then_save_a_plan();

    // The source changes after the plan: refused.
    env.write_csv(&changed_csv().replace("First6,Last6", "First6,Other"));
    env.fake.clear_requests();
    let o = env.run(&["apply", &env.plan_file()]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(stderr(&o).contains("the source changed"), "{}", out(&o));
    assert!(env.fake.requests().is_empty());

    // Back as planned, but the plan is two days old: refused.
    env.write_csv(&changed_csv());
    let mut file = env.read_plan();
    let old = chrono::Utc::now() - chrono::Duration::days(2);
    file["saved"]["created_at"] = serde_json::Value::String(old.to_rfc3339());
    std::fs::write(env.path("plan.json"), file.to_string()).unwrap();
    let o = env.run(&["apply", &env.plan_file()]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(stderr(&o).contains("max_plan_age"), "{}", out(&o));
    assert!(env.fake.requests().is_empty());

    // With a longer max_plan_age it applies.
    env.write_config("max_plan_age = \"3d\"");
    let o = env.run(&["apply", &env.plan_file()]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(env.fake.user_by_email("user6@example.com").is_some());

    // A file that is not a plan (a plain JSON report) is refused.
    let o = env.run(&["plan", "--format", "json"]);
    std::fs::write(env.path("report.json"), &o.stdout).unwrap();
    let o = env.run(&["apply", &env.path("report.json").display().to_string()]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(
        stderr(&o).contains("not a dirsync plan file"),
        "{}",
        out(&o)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn blocked_plan_needs_force() {
    let env = Env::new(false, 10).await;
    let o = env.run(&["sync"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    // Six of ten leave: over max_disable_percent.
    env.write_csv(&users(4));
    let o = env.run(&["plan", "--out", &env.plan_file()]);
    assert_eq!(code(&o), 3, "{}", out(&o));
    assert_eq!(
        env.read_plan()["targets"][0]["verdict"]["status"],
        "blocked"
    );

    env.fake.clear_requests();
    let o = env.run(&["apply", &env.plan_file()]);
    assert_eq!(code(&o), 3, "{}", out(&o));
    assert!(stderr(&o).contains("--force"), "{}", out(&o));
    assert!(env.fake.requests().is_empty());
    assert!(env.fake.users().iter().all(|u| u.enabled));

    let o = env.run(&["apply", &env.plan_file(), "--force"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert_eq!(env.fake.users().iter().filter(|u| !u.enabled).count(), 6);
    let store = env.store().await;
    let run = &store.list_runs(1).await.unwrap()[0];
    assert!(run.forced);
    assert_eq!(run.trigger, dirsync::store::Trigger::Apply);
}

#[tokio::test(flavor = "multi_thread")]
async fn user_sync_disables_a_leaver_and_rejects_unknown_keys() {
    let env = Env::new(false, 5).await;
    let o = env.run(&["sync"]);
    assert_eq!(code(&o), 0, "{}", out(&o));

    env.fake.clear_requests();
    let o = env.run(&["sync", "--user", "E09999"]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(stderr(&o).contains("E09999"), "{}", out(&o));
    assert!(env.fake.requests().is_empty());

    // E00005 and E00004 leave; only E00005 is deprovisioned now: disabled, not deleted.
    env.write_csv(&users(3));
    let o = env.run(&["sync", "--user", "E00005"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    let leaver = env.fake.user_by_email("user5@example.com").unwrap();
    assert!(!leaver.enabled);
    assert!(env.fake.user_by_email("user4@example.com").unwrap().enabled);
    assert_eq!(env.fake.users().len(), 5);
    assert!(
        env.api_requests()
            .iter()
            .all(|(m, p, _)| m == "POST" && p == "/api/v1/users/bulk"),
        "{:?}",
        env.api_requests()
    );
    let o = env.run(&["plan", "--format", "json"]);
    assert_eq!(code(&o), 2, "{}", out(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let pending: Vec<String> = plan_ops(&report)
        .into_iter()
        .map(|(_, k, _, _)| k)
        .collect();
    assert_eq!(pending, vec!["E00004".to_string()]);
}

/// The last name the fake holds for the account with `email`.
fn last_name(env: &Env, email: &str) -> Option<String> {
    env.fake.user_by_email(email).unwrap().last_name
}
