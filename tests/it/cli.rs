//! The `dirsync` binary end to end: plan on a fresh store, a simulated apply, CSV edits and
//! the exact plan lines they give, the safety policy, bad input, run history. Store-touching
//! scenarios run against both SQLite and a real Postgres.

use crate::support::cmd::{assert_has, code, stderr, stdout};
use std::path::Path;
use std::process::Command;

use dirsync::store::{
    AccountRecord, AccountState, NewRun, RecordedAccount, RunFinish, RunStatus, Trigger,
};

use crate::support::env::{Backend, TestEnv};

const HEADER: &str = "id,email,first,last,status,groups\n";
const USERS: &str = "\
E1,alice@example.com,Alice,Smith,active,staff;admins
E2,bob@example.com,Bob,Jones,active,staff
E3,carol@example.com,Carol,Wu,active,staff
E4,dave@example.com,Dave,Brown,active,staff
E5,erin@example.com,Erin,Stone,disabled,staff
";

crate::support::env::suite_env!(Env {});

impl Env {
    async fn new(backend: Backend, csv: &str) -> Env {
        let env = Env {
            env: TestEnv::new(backend).await,
        };
        env.write_csv(csv);
        env.write_config("");
        env
    }

    fn write_csv(&self, body: &str) {
        self.write_users_csv(HEADER, body);
    }

    fn write_config(&self, extra_target_settings: &str) {
        self.config()
            .csv("email = \"email\"")
            .raw(&format!(
                r#"
[[target]]
name = "covata-test"
kind = "covata"
base_url = "https://covata.example.com"
username = "svc"
password_file = "pw.txt"
client_id = "dirsync"
client_secret = "client-secret-value"
{extra_target_settings}"#
            ))
            .role("admins", &["ROLE_SYSTEM_ADMIN"])
            .write();
        std::fs::write(self.path("pw.txt"), "password-value\n").unwrap();
    }

    /// Records every enabled, mapped source user as created on every target, and a successful
    /// applied run — what the apply engine will do after a successful first sync.
    async fn simulate_apply(&self) {
        let config = dirsync::config::load_with_env(&self.config_path(), &[]).unwrap();
        let snapshot = dirsync::run::read_source(&config.source).await.unwrap();
        let store = self.store().await;
        let run = store
            .begin_run(&NewRun {
                trigger: Trigger::Manual,
                started_at: chrono::Utc::now(),
                targets: config.targets.iter().map(|t| t.name.clone()).collect(),
                forced: false,
            })
            .await
            .unwrap();
        for t in &config.targets {
            let (desired, _) = dirsync::run::map_users(t, &snapshot);
            let rows: Vec<AccountRecord> = desired
                .into_iter()
                .filter(|a| a.enabled)
                .map(|a| AccountRecord {
                    account: RecordedAccount {
                        key: a.key.clone(),
                        remote_id: Some(format!("remote-{}", a.key)),
                        login: a.fields.get(&t.mapping.login_field).cloned(),
                        hash: a.hash,
                        enabled: true,
                        owned: true,
                        adopted: false,
                        disabled_at: None,
                    },
                    state: AccountState {
                        groups: a.groups,
                        fields: a.fields,
                        roles: a.roles,
                    },
                    last_seen_run: Some(run),
                })
                .collect();
            store.upsert_accounts(&t.name, &rows).await.unwrap();
        }
        store
            .finish_run(
                run,
                &RunFinish {
                    status: RunStatus::Succeeded,
                    finished_at: chrono::Utc::now(),
                    source_count: Some(snapshot.len() as u64),
                    planned: 0,
                    applied: 0,
                    failed: 0,
                    error: None,
                    summary: serde_json::Value::Null,
                },
            )
            .await
            .unwrap();
    }
}

/// The operation lines of a text report (those starting with an op marker).
fn op_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            let t = l.trim_start();
            ["+ ", "~ ", "> ", "< ", "x "]
                .iter()
                .any(|m| t.starts_with(m))
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

async fn lifecycle(backend: Backend) {
    let env = Env::new(backend, USERS).await;

    // First run: every enabled user is a create; the disabled one is skipped.
    let out = env.run(&["plan"]);
    assert_eq!(code(&out), 2, "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert_eq!(
        op_lines(&text),
        vec![
            "+ create E1 (alice@example.com) roles [ROLE_SYSTEM_ADMIN]",
            "+ create E2 (bob@example.com) roles [ROLE_COLLABORATOR]",
            "+ create E3 (carol@example.com) roles [ROLE_COLLABORATOR]",
            "+ create E4 (dave@example.com) roles [ROLE_COLLABORATOR]",
        ],
        "{text}"
    );
    assert!(text.contains("4 creates, 0 updates"), "{text}");
    assert!(text.contains("1 skipped"), "{text}");

    // The dry run recorded a run row and no account.
    let store = env.store().await;
    assert!(store.load_accounts("covata-test").await.unwrap().is_empty());
    let runs = store.list_runs(10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].trigger, Trigger::DryRun);
    assert_eq!(runs[0].planned, 4);

    // After an apply, nothing to do.
    env.simulate_apply().await;
    let out = env.run(&["plan"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("Nothing to do."));

    // Rename, role change, removal, disable: exactly these lines.
    env.write_csv(
        "\
E1,alice@example.com,Alice,Smith-Jones,active,staff;admins
E2,bob@example.com,Bob,Jones,active,staff;admins
E3,carol@example.com,Carol,Wu,false,staff
E5,erin@example.com,Erin,Stone,disabled,staff
",
    );
    let out = env.run(&["sync", "--dry-run"]);
    let text = stdout(&out);
    // 2 disables of 4 owned accounts: within the small-installation floor (percent_floor = 2).
    assert_eq!(code(&out), 2, "{text}{}", stderr(&out));
    assert_eq!(
        op_lines(&text),
        vec![
            "~ update E1 (alice@example.com)",
            "~ roles E2 (bob@example.com) +ROLE_SYSTEM_ADMIN -ROLE_COLLABORATOR",
            "< disable E3 (carol@example.com) (disabled in the source)",
            "< disable E4 (dave@example.com) (no longer in the source)",
        ],
        "{text}"
    );
    assert!(text.contains("lastName: Smith -> Smith-Jones"), "{text}");

    // JSON: versioned, parseable, the same plan.
    let out = env.run(&["plan", "--format", "json"]);
    assert_eq!(code(&out), 2);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "dirsync.report");
    assert_eq!(v["version"], 1);
    assert_eq!(v["status"], "changes_pending");
    assert_eq!(v["exit_code"], 2);
    let t = &v["targets"][0];
    assert_eq!(t["name"], "covata-test");
    assert_eq!(t["verdict"]["status"], "allowed");
    assert_eq!(t["summary"]["update"], 1);
    assert_eq!(t["summary"]["set_roles"], 1);
    assert_eq!(t["summary"]["disable"], 2);
    assert_eq!(t["owned"], 4);
    assert_eq!(t["ops"][0]["op"], "update");
    assert_eq!(t["ops"][0]["changes"][0]["field"], "lastName");
    assert_eq!(t["ops"][0]["changes"][0]["after"], "Smith-Jones");
    assert_eq!(t["ops"][2]["reason"], "source_disabled");

    // Markdown renders a table per target.
    let out = env.run(&["plan", "--format", "markdown"]);
    let md = stdout(&out);
    assert!(md.contains("## covata-test (covata)"), "{md}");
    assert!(
        md.contains("| disable | E4 | dave@example.com | no longer in the source |"),
        "{md}"
    );

    // Dry runs never touched the accounts.
    let store = env.store().await;
    let accounts = store.load_accounts("covata-test").await.unwrap();
    assert_eq!(accounts.len(), 4);
    assert!(accounts.iter().all(|a| a.enabled));

    // History lists the runs, newest first, and shows one.
    let out = env.run(&["runs"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("dry_run"), "{text}");
    assert!(text.contains("manual"), "{text}");
    let newest_id = store.list_runs(1).await.unwrap()[0].id.to_string();
    let out = env.run(&["runs", "show", &newest_id]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_has(&stdout(&out), "target covata-test (covata): allowed");
    let out = env.run(&["runs", "show", "999999"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("no run with id 999999"));
}

crate::support::env::on_both_backends!(lifecycle_sqlite, lifecycle_postgres, lifecycle);

async fn safety(backend: Backend) {
    let many: String = (1..=30)
        .map(|i| format!("K{i:03},u{i}@example.com,U{i},L{i},active,staff\n"))
        .collect();
    let env = Env::new(backend, &many).await;
    env.simulate_apply().await;

    // 40 % fewer users than the last applied run: blocked, exit 3, says why, disables nobody.
    let fewer: String = many.lines().take(18).map(|l| format!("{l}\n")).collect();
    env.write_csv(&fewer);
    let out = env.run(&["plan"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 3, "{text}{}", stderr(&out));
    assert!(text.contains("BLOCKED"), "{text}");
    assert!(text.contains("max_source_drop_percent"), "{text}");
    assert!(text.contains("max_disable_percent"), "{text}");
    assert_has(&stderr(&out), "blocked by safety policy");
    let out = env.run(&["plan", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "blocked");
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["targets"][0]["verdict"]["status"], "blocked");
    assert_eq!(
        v["source"]["blocked_by"][0]["rule"],
        "max_source_drop_percent"
    );

    // --force shows the plan as forced (still a dry run: exit 2).
    let out = env.run(&["sync", "--dry-run", "--force"]);
    assert_eq!(code(&out), 2, "{}", stdout(&out));
    assert_has(&stdout(&out), "FORCED");

    // A header-only file is a snapshot of 0 users: blocked, not "disable everyone".
    env.write_csv("");
    let out = env.run(&["plan"]);
    assert_eq!(code(&out), 3, "{}", stdout(&out));
    assert_has(&stdout(&out), "min_source_users");

    // A run that stays under the limits is allowed: 3 gone of 30 = 10 %.
    let fine: String = many.lines().take(27).map(|l| format!("{l}\n")).collect();
    env.write_csv(&fine);
    let out = env.run(&["plan"]);
    assert_eq!(code(&out), 2, "{}", stdout(&out));

    // Blocked dry runs are recorded as blocked.
    let store = env.store().await;
    let runs = store.list_runs(10).await.unwrap();
    assert!(runs.iter().any(|r| r.status == RunStatus::Blocked));
    // And the baseline is still the applied run, not a dry run.
    assert_eq!(store.last_good_source_count().await.unwrap(), Some(30));
}

crate::support::env::on_both_backends!(safety_sqlite, safety_postgres, safety);

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_settings_delete_and_grace() {
    let env = Env::new(Backend::Sqlite, USERS).await;
    env.write_config("on_missing = \"delete\"");
    env.simulate_apply().await;
    env.write_csv(&USERS.replace("E4,dave@example.com,Dave,Brown,active,staff\n", ""));
    let out = env.run(&["plan"]);
    assert_eq!(code(&out), 2, "{}", stdout(&out));
    assert_eq!(
        op_lines(&stdout(&out)),
        vec!["x delete E4 (dave@example.com) (no longer in the source (on_missing = delete))"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_an_error_and_writes_nothing() {
    let env = Env::new(Backend::Sqlite, USERS).await;
    let db = env.dir.path().join("state.db");

    // Config problems: exit 1 before the store is opened (no database file appears).
    let cases: &[(&str, &str)] = &[
        ("base_url = \"https://covata.example.com\"", "[source\n"),
        ("client_id = \"dirsync\"", "client_idd = \"dirsync\""),
        (
            "base_url = \"https://covata.example.com\"",
            "base_url = \"http://covata.example.com\"",
        ),
        (
            "base_url = \"https://covata.example.com\"",
            "base_url = \"covata.example.com/api\"",
        ),
    ];
    let expected = [
        "TOML parse error",
        "target[0].client_idd: unknown key",
        "target[0].base_url: http:// sends the credentials",
        "target[0].base_url: relative URL not allowed",
    ];
    let good = std::fs::read_to_string(env.config_path()).unwrap();
    for ((from, to), want) in cases.iter().zip(expected) {
        std::fs::write(env.config_path(), good.replace(from, to)).unwrap();
        let out = env.run(&["plan"]);
        assert_eq!(code(&out), 1, "{from} -> {to}");
        assert!(
            stderr(&out).contains(want),
            "{want:?} not in {}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains("password-value"));
        assert!(!stderr(&out).contains("client-secret-value"));
        let out = env.run(&["check", "--offline"]);
        assert_eq!(code(&out), 1);
        assert_has(&stderr(&out), want);
        assert!(!db.exists(), "config error must not create the store");
    }
    std::fs::write(env.config_path(), &good).unwrap();
    let out = env.run(&["check", "--offline"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // Config path that does not exist, or is a directory.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dirsync"));
    let out = cmd
        .args(["plan", "--config", "/nonexistent/dirsync.toml"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    assert_has(&stderr(&out), "/nonexistent/dirsync.toml: cannot read");
    let out = Command::new(env!("CARGO_BIN_EXE_dirsync"))
        .args(["plan", "--config"])
        .arg(env.dir.path())
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    assert_has(&stderr(&out), "not a regular file");

    // Malformed CSV with a file-level problem (a row with too few fields): every problem
    // named with file and line; exit 1; no run, no account.
    let rows = "\
E1,alice@example.com,Alice,Smith,active,staff
,nokey@example.com,No,Key,active,staff
E3,not-an-email,Carol,Wu,active,staff
E1,dup@example.com,Dup,Key,active,staff
E5,ALICE@example.com,Dup,Mail,active,staff
E6,f@example.com,F,G,maybe,staff
";
    env.write_csv(&format!("{rows}E8,short@example.com\n"));
    let out = env.run(&["plan"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    for line in [":3:", ":4:", ":5:", ":6:", ":7:", ":8:"] {
        assert!(err.contains(line), "{line} missing in {err}");
    }
    assert!(err.contains("users.csv"), "{err}");
    let store = env.store().await;
    assert!(store.list_runs(10).await.unwrap().is_empty());
    assert!(store.load_accounts("covata-test").await.unwrap().is_empty());

    // Missing column.
    std::fs::write(
        env.dir.path().join("users.csv"),
        "id,mail\nE1,a@example.com\n",
    )
    .unwrap();
    let out = env.run(&["plan"]);
    assert_eq!(code(&out), 1);
    assert_has(&stderr(&out), "email");

    // The source file missing, or a directory.
    std::fs::remove_file(env.dir.path().join("users.csv")).unwrap();
    let out = env.run(&["plan"]);
    assert_eq!(code(&out), 1);
    assert_has(&stderr(&out), "users.csv");
    std::fs::create_dir(env.dir.path().join("users.csv")).unwrap();
    let out = env.run(&["plan"]);
    assert_eq!(code(&out), 1);
    assert!(store.list_runs(10).await.unwrap().is_empty());
    let out = env.run(&["check"]);
    assert_eq!(code(&out), 1);
    assert_has(&stdout(&out), "source: FAILED");

    std::fs::remove_dir(env.dir.path().join("users.csv")).unwrap();
    // The same record-level problems alone quarantine their records: every one named with
    // file and line in the report; all 6 of 6 records bad is over max_quarantined_percent:
    // blocked (exit 3), no account.
    env.write_csv(rows);
    let out = env.run(&["plan"]);
    let report = stdout(&out);
    assert_eq!(code(&out), 3, "{report}{}", stderr(&out));
    for line in [":2 ", ":3 ", ":4 ", ":5 ", ":6 ", ":7 "] {
        assert!(
            report
                .lines()
                .any(|l| l.contains("? quarantined") && l.contains(line)),
            "{line} missing in {report}"
        );
    }
    assert!(report.contains("max_quarantined_percent"), "{report}");
    assert!(store.load_accounts("covata-test").await.unwrap().is_empty());
}

/// `dirsync prune --keep 1d` deletes a run that finished 30 days ago (and keeps the last good
/// run, recent here); a bad `--keep` is an error naming it.
async fn prune(backend: Backend) {
    let env = Env::new(backend, USERS).await;
    env.simulate_apply().await;
    let store = env.store().await;
    let now = chrono::Utc::now();
    let old = store
        .begin_run(&NewRun {
            trigger: Trigger::Schedule,
            started_at: now - chrono::Duration::days(31),
            targets: vec!["covata-test".into()],
            forced: false,
        })
        .await
        .unwrap();
    store
        .finish_run(
            old,
            &RunFinish {
                status: RunStatus::Failed,
                finished_at: now - chrono::Duration::days(30),
                source_count: None,
                planned: 0,
                applied: 0,
                failed: 0,
                error: Some("source unreadable".into()),
                summary: serde_json::Value::Null,
            },
        )
        .await
        .unwrap();
    drop(store);

    let out = env.run_code(&["prune", "--keep", "1d"], 0);
    assert_has(
        &stdout(&out),
        "pruned 1 run and 0 journal rows finished before ",
    );
    let store = env.store().await;
    assert!(store.get_run(old).await.unwrap().is_none());
    assert_eq!(store.list_runs(10).await.unwrap().len(), 1);
    assert_eq!(store.load_accounts("covata-test").await.unwrap().len(), 4);
    drop(store);
    // The configured retention (default 90d): nothing more to prune.
    let out = env.run_code(&["prune"], 0);
    assert_has(&stdout(&out), "pruned 0 runs and 0 journal rows");

    for bad in ["1h", "soon"] {
        let out = env.run_code(&["prune", "--keep", bad], 1);
        assert_has(&stderr(&out), "--keep");
        assert_has(&stderr(&out), bad);
    }
}

crate::support::env::on_both_backends!(prune_sqlite, prune_postgres, prune);

#[tokio::test(flavor = "multi_thread")]
async fn target_selection_and_migrate_and_check() {
    let env = Env::new(Backend::Sqlite, USERS).await;
    let out = env.run(&["plan", "--target", "nope"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("no target named \"nope\"; configured: covata-test"));
    let out = env.run(&["plan", "--target", "covata-test"]);
    assert_eq!(code(&out), 2);
    let out = env.run(&["migrate"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("migrations applied"));
    // The target's host does not exist here: check reaches the store and the source, then
    // says the target cannot be reached (exit 1).
    let out = env.run(&["check"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    assert_has(&stdout(&out), "state store: OK");
    assert_has(&stdout(&out), "source: OK, 5 users");
    assert_has(&stdout(&out), "target covata-test: FAILED");
    assert!(!stdout(&out).contains("password-value"));
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_appear_in_output() {
    let env = Env::new(Backend::Sqlite, USERS).await;
    for args in [
        &["plan", "-vv"][..],
        &["plan", "--format", "json", "-vv", "--log-format", "json"],
        &["check", "-vv"],
        &["runs", "-vv"],
    ] {
        let out = env.run(args);
        let all = format!("{}{}", stdout(&out), stderr(&out));
        for secret in ["password-value", "client-secret-value"] {
            assert!(!all.contains(secret), "{args:?} printed {secret}");
        }
    }
}

/// The bundled example must keep working: this is the README's first command.
#[tokio::test(flavor = "multi_thread")]
async fn bundled_example_plans() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("config/example.toml"))
        .unwrap()
        .replace(
            "path = \"example-users.csv\"",
            &format!("path = {:?}", root.join("config/example-users.csv")),
        )
        .replace("path = \"../dirsync-example.db\"", "path = \"example.db\"");
    let cfg = dir.path().join("example.toml");
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dirsync"))
        .args(["plan", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("target covata-prod (covata): allowed"),
        "{text}"
    );
    assert!(text.contains("Bending Rodríguez"), "{text}");
}
