//! The engine's parts (marker, workers, outcome writer, recover) against an in-memory connector
//! and the in-memory SQLite store: asserted on the store's rows and the connector's accounts.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use super::writer::{Done, gather};
use super::*;
use crate::connector::{
    Capabilities, Created, OpError, RemoteAccount, RoleSemantics, StatusAction, StatusItem,
};
use crate::mapping::Account;
use crate::plan::{DisableReason, FieldChange, Op, PlannedOp};
use crate::store::sqlite::SqliteStore;
use crate::store::{NewRun, OpStatus, Trigger};

/// A target held in memory: accounts by remote id; creates of the listed logins are refused as
/// conflicts; once `fatal` is set every call fails with a refused credential.
#[derive(Default)]
struct MemConnector {
    accounts: Mutex<BTreeMap<String, RemoteAccount>>,
    conflicts: HashSet<String>,
    fatal: AtomicBool,
    bulk_status: Option<usize>,
    calls: Mutex<Vec<String>>,
}

impl MemConnector {
    fn check(&self, call: String) -> Result<(), OpError> {
        self.calls.lock().unwrap().push(call);
        if self.fatal.load(Ordering::SeqCst) {
            return Err(OpError::Auth {
                message: "credentials refused".into(),
            });
        }
        Ok(())
    }

    fn logins(&self) -> Vec<(String, bool)> {
        self.accounts
            .lock()
            .unwrap()
            .values()
            .map(|a| {
                (
                    a.fields.get("login").cloned().unwrap_or_default(),
                    a.enabled,
                )
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl Connector for MemConnector {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            bulk_status_batch: self.bulk_status,
            bulk_create_batch: None,
            can_list: true,
            roles: RoleSemantics::Replace,
            settle_time: None,
        }
    }

    async fn create(&self, account: &Account) -> Result<Created, OpError> {
        self.check(format!("create {}", account.key))?;
        let login = account.fields.get("login").cloned().unwrap_or_default();
        if self.conflicts.contains(&login) {
            return Err(OpError::Conflict {
                message: format!("{login} exists"),
            });
        }
        let mut accounts = self.accounts.lock().unwrap();
        let remote_id = format!("R-{}", account.key);
        accounts.insert(
            remote_id.clone(),
            RemoteAccount {
                remote_id: remote_id.clone(),
                login: Some(login),
                email: None,
                fields: account.fields.clone(),
                roles: account.roles.clone(),
                enabled: true,
            },
        );
        Ok(Created {
            remote_id,
            note: None,
        })
    }

    async fn update(
        &self,
        remote_id: &str,
        changes: &[FieldChange],
        _desired: &Account,
    ) -> Result<(), OpError> {
        self.check(format!("update {remote_id}"))?;
        let mut accounts = self.accounts.lock().unwrap();
        let Some(a) = accounts.get_mut(remote_id) else {
            return Err(OpError::NotFound {
                message: remote_id.into(),
            });
        };
        for c in changes {
            match &c.after {
                Some(v) => a.fields.insert(c.field.clone(), v.clone()),
                None => a.fields.remove(&c.field),
            };
        }
        Ok(())
    }

    async fn set_roles(
        &self,
        remote_id: &str,
        _add: &[String],
        _remove: &[String],
        roles: &[String],
    ) -> Result<(), OpError> {
        self.check(format!("set_roles {remote_id}"))?;
        let mut accounts = self.accounts.lock().unwrap();
        match accounts.get_mut(remote_id) {
            Some(a) => {
                a.roles = roles.iter().cloned().collect();
                Ok(())
            }
            None => Err(OpError::NotFound {
                message: remote_id.into(),
            }),
        }
    }

    async fn set_status(
        &self,
        action: StatusAction,
        items: &[StatusItem],
    ) -> Vec<Result<(), OpError>> {
        if let Err(e) = self.check(format!("set_status {action:?} x{}", items.len())) {
            return items.iter().map(|_| Err(e.clone())).collect();
        }
        let mut accounts = self.accounts.lock().unwrap();
        items
            .iter()
            .map(|item| {
                match action {
                    StatusAction::Delete => {
                        accounts.remove(&item.remote_id);
                    }
                    StatusAction::Enable | StatusAction::Disable => {
                        if let Some(a) = accounts.get_mut(&item.remote_id) {
                            a.enabled = matches!(action, StatusAction::Enable);
                        }
                    }
                }
                Ok(())
            })
            .collect()
    }

    async fn list_accounts(&self) -> Result<Vec<RemoteAccount>, OpError> {
        self.check("list".into())?;
        Ok(self.accounts.lock().unwrap().values().cloned().collect())
    }
}

/// The one target of a minimal configuration (loaded as a user writes it).
fn target(dir: &std::path::Path) -> TargetConfig {
    let config = dir.join("dirsync.toml");
    std::fs::write(dir.join("users.csv"), "id,email\n").unwrap();
    std::fs::write(
        &config,
        r#"
[state]
path = "state.db"

[source]
kind = "csv"
[source.csv]
path = "users.csv"
[source.csv.columns]
key = "id"
email = "email"

[[target]]
name = "mem"
kind = "covata"
base_url = "https://covata.example.com"
username = "svc"
password = "pw"
client_id = "dirsync"
client_secret = "secret"
"#,
    )
    .unwrap();
    let mut config = crate::config::load_with_env(&config, &[]).unwrap();
    let mut target = config.targets.remove(0);
    target.mapping.login_field = "login".into();
    target
}

fn account(key: &str) -> Account {
    Account {
        key: key.into(),
        fields: [("login".to_string(), format!("{key}@x.com"))].into(),
        roles: ["USER".to_string()].into(),
        enabled: true,
        ..Default::default()
    }
}

fn op(key: &str, remote_id: Option<&str>, op: Op) -> PlannedOp {
    PlannedOp {
        key: key.into(),
        label: Some(format!("{key}@x.com")),
        remote_id: remote_id.map(str::to_string),
        op,
    }
}

struct Env {
    _dir: tempfile::TempDir,
    target: TargetConfig,
    store: SqliteStore,
    run_id: i64,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let target = target(dir.path());
    let store = SqliteStore::open_memory().await.unwrap();
    store.migrate().await.unwrap();
    let run_id = store
        .begin_run(&NewRun {
            trigger: Trigger::Manual,
            started_at: Utc::now(),
            targets: vec![target.name.clone()],
            forced: false,
        })
        .await
        .unwrap();
    Env {
        _dir: dir,
        target,
        store,
        run_id,
    }
}

impl Env {
    async fn apply(&self, connector: &MemConnector, ops: Vec<PlannedOp>) -> ApplySummary {
        let plan = TargetPlan {
            ops,
            ..Default::default()
        };
        let stop = AtomicBool::new(false);
        apply(
            &self.store,
            connector,
            &self.target,
            self.run_id,
            &plan,
            Utc::now(),
            &stop,
        )
        .await
        .unwrap()
    }

    /// `(key, kind, status)` of every journaled operation, in journal order.
    async fn journal(&self) -> Vec<(String, String, String)> {
        self.store
            .run_operations(self.run_id)
            .await
            .unwrap()
            .into_iter()
            .map(|o| (o.source_key, o.kind, o.status))
            .collect()
    }

    /// `(key, remote id, owned, enabled)` of every recorded account.
    async fn accounts(&self) -> Vec<(String, Option<String>, bool, bool)> {
        self.store
            .load_accounts(&self.target.name)
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.key, a.remote_id, a.owned, a.enabled))
            .collect()
    }
}

fn row(key: &str, kind: &str, status: &str) -> (String, String, String) {
    (key.into(), kind.into(), status.into())
}

#[tokio::test]
async fn creates_then_changes_are_sent_and_recorded() {
    let env = env().await;
    let connector = MemConnector::default();
    let summary = env
        .apply(
            &connector,
            vec![
                op(
                    "a",
                    None,
                    Op::Create {
                        account: account("a"),
                    },
                ),
                op(
                    "b",
                    None,
                    Op::Create {
                        account: account("b"),
                    },
                ),
            ],
        )
        .await;
    assert_eq!(
        (summary.applied, summary.failed, summary.interrupted),
        (2, 0, 0)
    );
    assert_eq!(summary.by_kind["create"].succeeded, 2);
    assert_eq!(
        env.accounts().await,
        vec![
            ("a".into(), Some("R-a".into()), true, true),
            ("b".into(), Some("R-b".into()), true, true),
        ]
    );

    // An update and a role change of `a` in one chain (the second sees the first's row), a
    // disable of `b`.
    let mut renamed = account("a");
    renamed.fields.insert("login".into(), "a2@x.com".into());
    let summary = env
        .apply(
            &connector,
            vec![
                op(
                    "a",
                    Some("R-a"),
                    Op::Update {
                        changes: vec![FieldChange {
                            field: "login".into(),
                            before: Some("a@x.com".into()),
                            after: Some("a2@x.com".into()),
                        }],
                        account: renamed.clone(),
                    },
                ),
                op(
                    "a",
                    Some("R-a"),
                    Op::SetRoles {
                        add: vec!["ADMIN".into()],
                        remove: vec![],
                        roles: vec!["ADMIN".into(), "USER".into()],
                        account: renamed,
                    },
                ),
                op(
                    "b",
                    Some("R-b"),
                    Op::Disable {
                        reason: DisableReason::SourceDisabled,
                    },
                ),
            ],
        )
        .await;
    assert_eq!((summary.applied, summary.failed), (3, 0));
    assert_eq!(
        connector.logins(),
        vec![("a2@x.com".into(), true), ("b@x.com".into(), false)]
    );
    let records = env
        .store
        .load_account_records(&env.target.name, &["a".to_string(), "b".to_string()])
        .await
        .unwrap();
    let a = records.iter().find(|r| r.account.key == "a").unwrap();
    assert_eq!(a.account.login.as_deref(), Some("a2@x.com"));
    assert_eq!(
        a.state.roles.iter().cloned().collect::<Vec<_>>(),
        vec!["ADMIN".to_string(), "USER".to_string()]
    );
    let b = records.iter().find(|r| r.account.key == "b").unwrap();
    assert!(!b.account.enabled);
    assert!(b.account.disabled_at.is_some());
    assert!(
        env.journal()
            .await
            .iter()
            .all(|(_, _, status)| status == "succeeded")
    );
}

#[tokio::test]
async fn a_conflicting_create_is_recorded_not_owned_and_its_chain_skipped() {
    let env = env().await;
    let connector = MemConnector {
        conflicts: ["c@x.com".to_string()].into(),
        ..Default::default()
    };
    let summary = env
        .apply(
            &connector,
            vec![
                op(
                    "c",
                    None,
                    Op::Create {
                        account: account("c"),
                    },
                ),
                op(
                    "c",
                    None,
                    Op::SetRoles {
                        add: vec!["ADMIN".into()],
                        remove: vec![],
                        roles: vec!["ADMIN".into()],
                        account: account("c"),
                    },
                ),
                op(
                    "d",
                    None,
                    Op::Create {
                        account: account("d"),
                    },
                ),
            ],
        )
        .await;
    assert_eq!(
        (summary.applied, summary.failed, summary.skipped),
        (1, 1, 1)
    );
    assert_eq!(summary.failures[0].key, "c");
    assert_eq!(
        env.accounts().await,
        vec![
            ("c".into(), None, false, true),
            ("d".into(), Some("R-d".into()), true, true),
        ]
    );
    assert_eq!(
        env.journal().await,
        vec![
            row("c", "create", "failed"),
            row("c", "set_roles", "skipped"),
            row("d", "create", "succeeded"),
        ]
    );
    assert_eq!(connector.logins(), vec![("d@x.com".into(), true)]);
}

#[tokio::test]
async fn a_target_fatal_error_puts_everything_back_unsent() {
    let env = env().await;
    let connector = MemConnector {
        bulk_status: Some(10),
        ..Default::default()
    };
    connector.fatal.store(true, Ordering::SeqCst);
    let ops: Vec<PlannedOp> = (0..5)
        .map(|n| {
            let key = format!("k{n}");
            op(
                &key,
                None,
                Op::Create {
                    account: account(&key),
                },
            )
        })
        .collect();
    let summary = env.apply(&connector, ops).await;
    assert_eq!((summary.applied, summary.failed), (0, 0));
    assert_eq!(summary.interrupted, 5);
    assert!(summary.fatal.is_some());
    assert!(!summary.stopped);
    assert!(env.accounts().await.is_empty());
    // Nothing stays `sent`: what was not sent is skipped (or still pending).
    assert!(
        env.journal()
            .await
            .iter()
            .all(|(_, _, status)| status == "skipped" || status == "pending")
    );
    assert!(
        env.store
            .unfinished_operations(&env.target.name)
            .await
            .unwrap()
            .iter()
            .all(|o| o.status == "pending")
    );
    // Dispatch stopped at the first error: one request, not one per operation.
    assert_eq!(connector.calls.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_stop_before_the_apply_journals_nothing() {
    let env = env().await;
    let connector = MemConnector::default();
    let plan = TargetPlan {
        ops: vec![op(
            "a",
            None,
            Op::Create {
                account: account("a"),
            },
        )],
        ..Default::default()
    };
    let stop = AtomicBool::new(true);
    let summary = apply(
        &env.store,
        &connector,
        &env.target,
        env.run_id,
        &plan,
        Utc::now(),
        &stop,
    )
    .await
    .unwrap();
    assert!(summary.stopped);
    assert_eq!(summary.interrupted, 1);
    assert!(env.journal().await.is_empty());
    assert!(connector.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn bulk_status_units_record_every_item() {
    let env = env().await;
    let connector = MemConnector {
        bulk_status: Some(2),
        ..Default::default()
    };
    let creates = (0..3)
        .map(|n| {
            let key = format!("k{n}");
            op(
                &key,
                None,
                Op::Create {
                    account: account(&key),
                },
            )
        })
        .collect();
    env.apply(&connector, creates).await;
    let disables = (0..3)
        .map(|n| {
            let key = format!("k{n}");
            op(
                &key,
                Some(&format!("R-{key}")),
                Op::Disable {
                    reason: DisableReason::MissingFromSource,
                },
            )
        })
        .collect();
    let summary = env.apply(&connector, disables).await;
    assert_eq!(summary.by_kind["disable"].succeeded, 3);
    // Two calls: batches of two and one.
    let calls = connector.calls.lock().unwrap().clone();
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("set_status")).count(),
        2
    );
    assert!(
        env.accounts()
            .await
            .iter()
            .all(|(_, _, _, enabled)| !enabled)
    );
    assert!(connector.logins().iter().all(|(_, enabled)| !enabled));
}

#[tokio::test]
async fn recover_confirms_sent_creates_and_supersedes_pending_ones() {
    let env = env().await;
    let connector = MemConnector::default();
    // A run that journaled three creates, marked two `sent`, of which the target has one.
    let new_ops: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|k| crate::store::NewOperation {
            source_key: k.to_string(),
            kind: "create".into(),
            payload: marker::payload(&op(
                k,
                None,
                Op::Create {
                    account: account(k),
                },
            )),
        })
        .collect();
    let ids = env
        .store
        .journal(env.run_id, &env.target.name, &new_ops)
        .await
        .unwrap();
    env.store.mark_sent(&ids[..2]).await.unwrap();
    connector.create(&account("a")).await.unwrap();
    let summary = recover(&env.store, &connector, &env.target, env.run_id)
        .await
        .unwrap();
    assert_eq!(
        (summary.confirmed, summary.replanned, summary.superseded),
        (1, 1, 1)
    );
    assert_eq!(
        env.accounts().await,
        vec![("a".into(), Some("R-a".into()), true, true)]
    );
    assert_eq!(
        env.journal().await,
        vec![
            row("a", "create", "succeeded"),
            row("b", "create", "failed"),
            row("c", "create", "skipped"),
        ]
    );
    assert!(
        env.store
            .unfinished_operations(&env.target.name)
            .await
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_writer_gathers_counts_per_kind() {
    let mut summary = ApplySummary::default();
    let mut batch = Done::default();
    let unit = |applied, kinds: Vec<(&'static str, OpStatus)>| Done {
        applied,
        kinds,
        outcomes: vec![crate::store::OpOutcome {
            id: 1,
            status: OpStatus::Succeeded,
            error: None,
            remote_id: None,
        }],
        left: 1,
        ..Default::default()
    };
    gather(
        &mut summary,
        &mut batch,
        unit(
            1,
            vec![
                ("create", OpStatus::Succeeded),
                ("update", OpStatus::Failed),
            ],
        ),
    );
    gather(
        &mut summary,
        &mut batch,
        unit(
            2,
            vec![
                ("create", OpStatus::Skipped),
                ("create", OpStatus::Succeeded),
            ],
        ),
    );
    assert_eq!(batch.outcomes.len(), 2);
    assert_eq!((summary.applied, summary.interrupted), (3, 2));
    let create = summary.by_kind["create"];
    assert_eq!((create.succeeded, create.failed, create.skipped), (2, 0, 1));
    assert_eq!(summary.by_kind["update"].failed, 1);
}

/// The last figures of every finished progress task of this process (the observer a test
/// installs; the front installs its renderer the same way).
static FINISHED: Mutex<Vec<crate::progress::Figures>> = Mutex::new(Vec::new());

struct Recorder;

impl crate::progress::Observer for Recorder {
    fn started(&self, _task: std::sync::Arc<crate::progress::TaskState>) {}
    fn finished(&self, task: &std::sync::Arc<crate::progress::TaskState>) {
        FINISHED.lock().unwrap().push(task.figures());
    }
}

fn finished(name: &str) -> Vec<(crate::progress::Phase, u64, Option<u64>, u64)> {
    FINISHED
        .lock()
        .unwrap()
        .iter()
        .filter(|f| f.name == name)
        .map(|f| (f.phase, f.done, f.total, f.failed))
        .collect()
}

/// Applying and reconciling report their progress: one task each, ending with every operation
/// (or sent create) counted, failures apart.
#[tokio::test]
async fn apply_and_recover_report_progress() {
    use crate::progress::Phase;
    crate::progress::install(Box::new(Recorder));
    let mut env = env().await;
    // A name of its own: the other tests of this process apply to "mem".
    env.target.name = "progress-apply".into();
    let connector = MemConnector {
        conflicts: ["c@x.com".to_string()].into(),
        ..Default::default()
    };
    let create = |k: &str| {
        op(
            k,
            None,
            Op::Create {
                account: account(k),
            },
        )
    };
    let summary = env
        .apply(&connector, vec![create("c"), create("d"), create("e")])
        .await;
    assert_eq!((summary.applied, summary.failed), (2, 1));
    assert_eq!(
        finished("progress-apply"),
        vec![(Phase::Apply, 3, Some(3), 1)]
    );

    env.target.name = "progress-recover".into();
    let new_ops: Vec<_> = ["a", "b"]
        .iter()
        .map(|k| crate::store::NewOperation {
            source_key: k.to_string(),
            kind: "create".into(),
            payload: marker::payload(&create(k)),
        })
        .collect();
    let ids = env
        .store
        .journal(env.run_id, &env.target.name, &new_ops)
        .await
        .unwrap();
    env.store.mark_sent(&ids).await.unwrap();
    connector.create(&account("a")).await.unwrap();
    let summary = recover(&env.store, &connector, &env.target, env.run_id)
        .await
        .unwrap();
    assert_eq!((summary.confirmed, summary.replanned), (1, 1));
    assert_eq!(
        finished("progress-recover"),
        vec![(Phase::Recover, 2, Some(2), 0)]
    );
}
