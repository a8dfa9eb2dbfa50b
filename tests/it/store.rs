//! State store tests. Every test body is written once and runs against both backends: SQLite
//! (a file in a temp dir) and a real Postgres (a fresh database on the harness' cluster).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, TimeZone, Utc};
use dirsync::secret::Secret;
use dirsync::store::postgres::PgStore;
use dirsync::store::sqlite::SqliteStore;
use dirsync::store::{
    AccountChange, AccountRecord, AccountState, NewOperation, NewRun, OpOutcome, OpStatus,
    PruneSummary, RecordedAccount, RunFilter, RunFinish, RunStatus, Store, StoreError, Trigger,
};

use crate::support::pg::pg_url;

/// One query on the fixture's database: `$sqlite` SQL on SQLite, `$pg` on Postgres (the query
/// types differ, so the body is expanded once per backend).
macro_rules! per_backend {
    ($fx:expr, $ctor:path, $sqlite:expr, $pg:expr, |$q:ident, $pool:ident| $body:expr) => {
        match $fx {
            Fixture::Sqlite { store, .. } => {
                let $q = $ctor($sqlite);
                let $pool = store.pool();
                $body
            }
            Fixture::Postgres { store } => {
                let $q = $ctor($pg);
                let $pool = store.pool();
                $body
            }
        }
    };
}

/// A migrated store of one backend, with raw access for what the trait does not expose.
enum Fixture {
    Sqlite {
        store: SqliteStore,
        _dir: tempfile::TempDir,
    },
    Postgres {
        store: PgStore,
    },
}

impl Fixture {
    async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        // A directory that does not exist yet: open creates it.
        let store = SqliteStore::open(&dir.path().join("state").join("dirsync.db"))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        Fixture::Sqlite { store, _dir: dir }
    }

    async fn postgres() -> Fixture {
        let store = PgStore::connect(&Secret::new(pg_url().await), 4)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        Fixture::Postgres { store }
    }

    fn store(&self) -> &dyn Store {
        match self {
            Fixture::Sqlite { store, .. } => store,
            Fixture::Postgres { store } => store,
        }
    }

    /// `(created_at, updated_at)` of an account row, as the database prints them.
    async fn stamps(&self, target: &str, key: &str) -> (String, String) {
        per_backend!(
            self,
            sqlx::query_as,
            "SELECT created_at, updated_at FROM accounts WHERE target = ?1 AND source_key = ?2",
            "SELECT created_at::text, updated_at::text FROM accounts \
             WHERE target = $1 AND source_key = $2",
            |q, pool| q.bind(target).bind(key).fetch_one(pool).await.unwrap()
        )
    }

    /// Overwrites the attributes column of a row with `json` (valid JSON of the wrong shape on
    /// Postgres, whose JSONB column cannot hold invalid JSON; `raw` text on SQLite).
    async fn corrupt_attributes(&self, target: &str, key: &str) {
        per_backend!(
            self,
            sqlx::query,
            "UPDATE accounts SET attributes = '{\"mail\": \"a' \
             WHERE target = ?1 AND source_key = ?2",
            "UPDATE accounts SET attributes = '[1, 2]'::jsonb \
             WHERE target = $1 AND source_key = $2",
            |q, pool| q
                .bind(target)
                .bind(key)
                .execute(pool)
                .await
                .map(drop)
                .unwrap()
        )
    }

    /// Journals an operation the way the engine will. Returns the database's error, if any.
    async fn insert_operation(
        &self,
        run_id: i64,
        key: &str,
        kind: &str,
        status: &str,
        payload: &str,
    ) -> Result<(), sqlx::Error> {
        per_backend!(
            self,
            sqlx::query,
            "INSERT INTO operations (run_id, target, source_key, kind, payload, status, \
             attempts, last_error, remote_id) VALUES (?1, 'covata', ?2, ?3, ?4, ?5, 2, \
             'HTTP 503', 'r-1')",
            "INSERT INTO operations (run_id, target, source_key, kind, payload, status, \
             attempts, last_error, remote_id) VALUES ($1, 'covata', $2, $3, $4::jsonb, $5, \
             2, 'HTTP 503', 'r-1')",
            |q, pool| q
                .bind(run_id)
                .bind(key)
                .bind(kind)
                .bind(payload)
                .bind(status)
                .execute(pool)
                .await
                .map(drop)
        )
    }
}

/// Runs each listed `async fn NAME(&Fixture)` as `NAME::sqlite` and `NAME::postgres`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name(&super::Fixture::sqlite().await).await;
                }

                #[tokio::test]
                async fn postgres() {
                    super::$name(&super::Fixture::postgres().await).await;
                }
            }
        )*
    };
}

on_both_backends!(
    migrate_twice_is_fine,
    upsert_then_load_round_trips,
    load_accounts_is_in_byte_order,
    upsert_25k_rows_then_update_half,
    load_account_states_of_a_subset,
    delete_accounts_removes_only_those,
    targets_are_isolated,
    duplicate_keys_in_one_upsert_last_wins,
    runs_begin_finish_list_get,
    find_runs_filters_by_trigger_status_and_since,
    last_good_source_count_ignores_dry_blocked_failed_running,
    run_operations_in_journal_order,
    corrupt_json_is_reported_with_its_key,
    load_account_records_returns_full_rows,
    journal_then_mark_sent_then_record_outcomes,
    journal_keeps_input_order_across_batches,
    record_outcomes_folds_changes_per_key,
    record_outcomes_rewrites_existing_rows,
    prune_runs_keeps_what_is_still_needed,
);

fn ts(micros: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 12, 30, 0).unwrap() + Duration::microseconds(micros)
}

fn record(key: &str, hash: &str) -> AccountRecord {
    AccountRecord {
        account: RecordedAccount {
            key: key.to_owned(),
            remote_id: Some(format!("r-{key}")),
            login: Some(format!("{key}@example.com")),
            hash: h(hash),
            enabled: true,
            owned: true,
            adopted: false,
            disabled_at: None,
        },
        state: AccountState {
            groups: Default::default(),
            fields: BTreeMap::from([("email".to_owned(), format!("{key}@example.com"))]),
            roles: BTreeSet::from(["user".to_owned()]),
        },
        last_seen_run: Some(1),
    }
}

fn keys(records: &[AccountRecord]) -> Vec<String> {
    records.iter().map(|r| r.account.key.clone()).collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

async fn migrate_twice_is_fine(fx: &Fixture) {
    let store = fx.store();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert!(matches!(store.backend(), "sqlite" | "postgres"));
    assert!(store.load_accounts("covata").await.unwrap().is_empty());
    assert!(store.list_runs(10).await.unwrap().is_empty());
    assert_eq!(store.last_good_source_count().await.unwrap(), None);
}

async fn upsert_then_load_round_trips(fx: &Fixture) {
    let store = fx.store();
    let tricky = [
        "plain",
        "with/slash",
        "o'neil",
        "with space",
        "tab\there",
        "ünïcödé-ключ",
        "日本語",
        "crab🦀",
        "semi;colon--",
        "quote\"double",
        "back\\slash",
        "percent%_",
        "new\nline",
        "cr\rreturn",
        "bell\u{7}del\u{7f}",
        "\\N",
        "",
    ];
    let mut rows: Vec<AccountRecord> = Vec::new();
    for (i, key) in tricky.iter().enumerate() {
        let mut r = record(key, &format!("h{i}"));
        r.state.fields.insert(
            "display".to_owned(),
            "She said \"hi\"\nand left 'now' \\ {json} \u{1F600}".to_owned(),
        );
        r.state.fields.insert("empty".to_owned(), String::new());
        r.state.roles = BTreeSet::from([
            "admin".to_owned(),
            "read only".to_owned(),
            "rôle\"x".to_owned(),
        ]);
        r.last_seen_run = Some(i64::try_from(i).unwrap() + 7);
        match i % 3 {
            0 => {
                r.account.enabled = false;
                r.account.disabled_at = Some(ts(123_456));
            }
            1 => {
                r.account.remote_id = None;
                r.account.login = None;
                r.account.owned = false;
                r.account.adopted = true;
                r.last_seen_run = None;
            }
            _ => {
                r.state.roles.clear();
                r.state.fields.clear();
            }
        }
        rows.push(r);
    }
    store.upsert_accounts("covata-prod", &rows).await.unwrap();

    let mut expected: Vec<RecordedAccount> = rows.iter().map(|r| r.account.clone()).collect();
    expected.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(store.load_accounts("covata-prod").await.unwrap(), expected);

    let states = store
        .load_account_states("covata-prod", &keys(&rows))
        .await
        .unwrap();
    let want: HashMap<String, AccountState> = rows
        .iter()
        .map(|r| (r.account.key.clone(), r.state.clone()))
        .collect();
    assert_eq!(states, want);

    // Upserting the same rows again changes nothing.
    store.upsert_accounts("covata-prod", &rows).await.unwrap();
    assert_eq!(store.load_accounts("covata-prod").await.unwrap(), expected);
    // An empty upsert is a no-op.
    store.upsert_accounts("covata-prod", &[]).await.unwrap();
    assert_eq!(
        store.load_accounts("covata-prod").await.unwrap().len(),
        rows.len()
    );
}

async fn load_accounts_is_in_byte_order(fx: &Fixture) {
    let store = fx.store();
    let rows: Vec<AccountRecord> = ["B", "a", "Z", "é", "10", "9", "e", "É", "_", "~"]
        .iter()
        .map(|k| record(k, "h"))
        .collect();
    store.upsert_accounts("t", &rows).await.unwrap();
    let got: Vec<String> = store
        .load_accounts("t")
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.key)
        .collect();
    assert_eq!(
        got,
        strings(&["10", "9", "B", "Z", "_", "a", "e", "~", "É", "é"])
    );
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(got, sorted, "byte order is Rust's String order");
}

async fn upsert_25k_rows_then_update_half(fx: &Fixture) {
    let store = fx.store();
    let rows: Vec<AccountRecord> = (0..25_000)
        .map(|i| record(&format!("E{i:08}"), "v1"))
        .collect();
    store.upsert_accounts("big", &rows).await.unwrap();
    let loaded = store.load_accounts("big").await.unwrap();
    assert_eq!(loaded.len(), 25_000);
    assert!(loaded.iter().all(|a| a.hash == h("v1")));
    let (created_before, updated_before) = fx.stamps("big", "E00000000").await;

    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let updated: Vec<AccountRecord> = rows
        .iter()
        .step_by(2)
        .map(|r| {
            let mut r = r.clone();
            r.account.hash = h("v2");
            r.account.enabled = false;
            r.account.disabled_at = Some(ts(1));
            r.state
                .fields
                .insert("department".to_owned(), "R&D".to_owned());
            r.last_seen_run = Some(2);
            r
        })
        .collect();
    assert_eq!(updated.len(), 12_500);
    store.upsert_accounts("big", &updated).await.unwrap();

    let loaded = store.load_accounts("big").await.unwrap();
    assert_eq!(loaded.len(), 25_000);
    assert_eq!(loaded.iter().filter(|a| a.hash == h("v2")).count(), 12_500);
    assert_eq!(loaded.iter().filter(|a| a.hash == h("v1")).count(), 12_500);
    assert_eq!(loaded[0].key, "E00000000");
    assert_eq!(loaded[0].hash, h("v2"));
    assert_eq!(loaded[0].disabled_at, Some(ts(1)));
    assert!(!loaded[0].enabled);
    assert_eq!(loaded[1].hash, h("v1"));
    assert_eq!(loaded[24_999].key, "E00024999");

    let (created_after, updated_after) = fx.stamps("big", "E00000000").await;
    assert_eq!(
        created_after, created_before,
        "created_at is kept on update"
    );
    assert_ne!(updated_after, updated_before, "updated_at moves on update");

    let states = store
        .load_account_states("big", &strings(&["E00000000", "E00000001", "E00024998"]))
        .await
        .unwrap();
    assert_eq!(states.len(), 3);
    assert_eq!(states["E00000000"].fields["department"], "R&D");
    assert!(!states["E00000001"].fields.contains_key("department"));
    assert_eq!(states["E00024998"].fields["department"], "R&D");
}

async fn load_account_states_of_a_subset(fx: &Fixture) {
    let store = fx.store();
    let rows: Vec<AccountRecord> = (0..1_500)
        .map(|i| {
            let mut r = record(&format!("k{i}"), "h");
            r.state.fields.insert("n".to_owned(), i.to_string());
            r
        })
        .collect();
    store.upsert_accounts("t", &rows).await.unwrap();

    let wanted = strings(&["k3", "missing", "k1499", "k0", "also-missing"]);
    let states = store.load_account_states("t", &wanted).await.unwrap();
    let mut got: Vec<&String> = states.keys().collect();
    got.sort();
    assert_eq!(got, ["k0", "k1499", "k3"]);
    assert_eq!(states["k1499"].fields["n"], "1499");
    assert_eq!(states["k3"], rows[3].state);

    // More keys than one chunk of placeholders, half of them missing.
    let many: Vec<String> = (0..2_400).map(|i| format!("k{}", i * 2)).collect();
    let states = store.load_account_states("t", &many).await.unwrap();
    assert_eq!(states.len(), 750);

    assert!(
        store
            .load_account_states("t", &[])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .load_account_states("other", &strings(&["k1"]))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn delete_accounts_removes_only_those(fx: &Fixture) {
    let store = fx.store();
    let rows: Vec<AccountRecord> = (0..1_200)
        .map(|i| record(&format!("d{i:04}"), "h"))
        .collect();
    store.upsert_accounts("t", &rows).await.unwrap();

    store
        .delete_accounts("t", &strings(&["d0000", "d0005", "not-there"]))
        .await
        .unwrap();
    let left = store.load_accounts("t").await.unwrap();
    assert_eq!(left.len(), 1_198);
    assert!(left.iter().all(|a| a.key != "d0000" && a.key != "d0005"));

    // Across several batches: everything but the last ten.
    let batch: Vec<String> = (0..1_190).map(|i| format!("d{i:04}")).collect();
    store.delete_accounts("t", &batch).await.unwrap();
    let left: Vec<String> = store
        .load_accounts("t")
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.key)
        .collect();
    let want: Vec<String> = (1_190..1_200).map(|i| format!("d{i:04}")).collect();
    assert_eq!(left, want);

    store.delete_accounts("t", &[]).await.unwrap();
    assert_eq!(store.load_accounts("t").await.unwrap().len(), 10);
}

async fn targets_are_isolated(fx: &Fixture) {
    let store = fx.store();
    let mut a = record("same-key", "hash-a");
    a.state.fields.insert("who".to_owned(), "a".to_owned());
    let mut b = record("same-key", "hash-b");
    b.state.fields.insert("who".to_owned(), "b".to_owned());
    store.upsert_accounts("covata", &[a.clone()]).await.unwrap();
    store
        .upsert_accounts("primavera", &[b.clone(), record("only-b", "h")])
        .await
        .unwrap();

    assert_eq!(
        store.load_accounts("covata").await.unwrap(),
        vec![a.account.clone()]
    );
    assert_eq!(store.load_accounts("primavera").await.unwrap().len(), 2);
    let keys = strings(&["same-key", "only-b"]);
    let sa = store.load_account_states("covata", &keys).await.unwrap();
    assert_eq!(sa.len(), 1);
    assert_eq!(sa["same-key"].fields["who"], "a");
    let sb = store.load_account_states("primavera", &keys).await.unwrap();
    assert_eq!(sb["same-key"].fields["who"], "b");

    store.delete_accounts("covata", &keys).await.unwrap();
    assert!(store.load_accounts("covata").await.unwrap().is_empty());
    assert_eq!(store.load_accounts("primavera").await.unwrap().len(), 2);
    assert!(store.load_accounts("valuekeep").await.unwrap().is_empty());

    // Target names are data, never SQL.
    let odd = "o'brien\\prod\"; DROP TABLE accounts; --";
    store
        .upsert_accounts(odd, &[record("k", "h")])
        .await
        .unwrap();
    assert_eq!(store.load_accounts(odd).await.unwrap().len(), 1);
    assert_eq!(
        store
            .load_account_states(odd, &strings(&["k"]))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.load_accounts("primavera").await.unwrap().len(), 2);
}

async fn duplicate_keys_in_one_upsert_last_wins(fx: &Fixture) {
    let store = fx.store();
    let rows = vec![
        record("k", "first"),
        record("other", "h"),
        record("k", "last"),
    ];
    store.upsert_accounts("t", &rows).await.unwrap();
    let loaded = store.load_accounts("t").await.unwrap();
    assert_eq!(loaded.len(), 2);
    assert_eq!(loaded[0].key, "k");
    assert_eq!(loaded[0].hash, h("last"));
}

fn new_run(trigger: Trigger, minute: i64) -> NewRun {
    NewRun {
        trigger,
        started_at: ts(minute * 60_000_000),
        targets: strings(&["covata-prod", "primavera"]),
        forced: false,
    }
}

fn finish(status: RunStatus, source_count: Option<u64>) -> RunFinish {
    RunFinish {
        status,
        finished_at: ts(999_999),
        source_count,
        planned: 10,
        applied: 8,
        failed: 2,
        error: None,
        summary: serde_json::json!({}),
    }
}

async fn runs_begin_finish_list_get(fx: &Fixture) {
    let store = fx.store();
    let first = store
        .begin_run(&new_run(Trigger::Schedule, 1))
        .await
        .unwrap();
    let mut forced = new_run(Trigger::Manual, 2);
    forced.forced = true;
    let second = store.begin_run(&forced).await.unwrap();
    let third = store.begin_run(&new_run(Trigger::DryRun, 3)).await.unwrap();
    assert!(first < second && second < third);

    let running = store.get_run(first).await.unwrap().unwrap();
    assert_eq!(running.id, first);
    assert_eq!(running.trigger, Trigger::Schedule);
    assert_eq!(running.status, RunStatus::Running);
    assert_eq!(running.started_at, ts(60_000_000));
    assert_eq!(running.finished_at, None);
    assert_eq!(running.targets, strings(&["covata-prod", "primavera"]));
    assert!(!running.forced);
    assert_eq!(running.source_count, None);
    assert_eq!(
        (running.planned, running.applied, running.failed),
        (0, 0, 0)
    );
    assert_eq!(running.error, None);

    let summary = serde_json::json!({
        "covata-prod": {"create": 3, "note": "quote \" and\nnewline"},
        "primavera": {"disable": 1}
    });
    let done = RunFinish {
        status: RunStatus::Partial,
        finished_at: ts(120_000_001),
        source_count: Some(1_000_000),
        planned: 40,
        applied: 38,
        failed: 2,
        error: Some("target \"primavera\": 2 operations failed".to_owned()),
        summary: summary.clone(),
    };
    store.finish_run(second, &done).await.unwrap();
    let got = store.get_run(second).await.unwrap().unwrap();
    assert_eq!(got.trigger, Trigger::Manual);
    assert_eq!(got.status, RunStatus::Partial);
    assert!(got.forced);
    assert_eq!(got.finished_at, Some(ts(120_000_001)));
    assert_eq!(got.source_count, Some(1_000_000));
    assert_eq!((got.planned, got.applied, got.failed), (40, 38, 2));
    assert_eq!(got.error, done.error);
    assert_eq!(got.summary, summary);

    let listed = store.list_runs(2).await.unwrap();
    assert_eq!(
        listed.iter().map(|r| r.id).collect::<Vec<_>>(),
        [third, second]
    );
    assert_eq!(listed[0].trigger, Trigger::DryRun);
    let all = store.list_runs(100).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.id).collect::<Vec<_>>(),
        [third, second, first]
    );
    assert!(store.list_runs(0).await.unwrap().is_empty());

    assert!(store.get_run(third + 1000).await.unwrap().is_none());
    let missing = store
        .finish_run(third + 1000, &finish(RunStatus::Failed, None))
        .await;
    assert!(
        matches!(missing, Err(StoreError::Query { .. })),
        "{missing:?}"
    );
}

async fn find_runs_filters_by_trigger_status_and_since(fx: &Fixture) {
    let store = fx.store();
    // (trigger, minute started, status; None = still running)
    let runs = [
        (Trigger::Schedule, 1, Some(RunStatus::Succeeded)),
        (Trigger::DryRun, 2, Some(RunStatus::Succeeded)),
        (Trigger::Manual, 3, Some(RunStatus::Failed)),
        (Trigger::Schedule, 4, Some(RunStatus::Blocked)),
        (Trigger::DryRun, 5, Some(RunStatus::Blocked)),
        (Trigger::Apply, 6, None),
    ];
    let mut ids = Vec::new();
    for (trigger, minute, status) in runs {
        let id = store.begin_run(&new_run(trigger, minute)).await.unwrap();
        if let Some(status) = status {
            store
                .finish_run(id, &finish(status, Some(5)))
                .await
                .unwrap();
        }
        ids.push(id);
    }
    let found = |filter: RunFilter| async move {
        store
            .find_runs(&filter)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    let pick = |which: &[usize]| which.iter().rev().map(|&i| ids[i]).collect::<Vec<_>>();
    let all = RunFilter::newest(100);
    assert_eq!(found(all.clone()).await, pick(&[0, 1, 2, 3, 4, 5]));
    assert_eq!(found(RunFilter::newest(2)).await, pick(&[4, 5]));
    let schedule = RunFilter {
        triggers: vec![Trigger::Schedule],
        ..all.clone()
    };
    assert_eq!(found(schedule).await, pick(&[0, 3]));
    let real = RunFilter {
        triggers: vec![Trigger::Schedule, Trigger::Manual, Trigger::Apply],
        ..all.clone()
    };
    assert_eq!(found(real).await, pick(&[0, 2, 3, 5]));
    let blocked = RunFilter {
        statuses: vec![RunStatus::Blocked],
        ..all.clone()
    };
    assert_eq!(found(blocked).await, pick(&[3, 4]));
    let running_or_failed = RunFilter {
        statuses: vec![RunStatus::Running, RunStatus::Failed],
        ..all.clone()
    };
    assert_eq!(found(running_or_failed).await, pick(&[2, 5]));
    // Since: started at or after minute 3 (inclusive, to the microsecond).
    let since = RunFilter {
        since: Some(ts(3 * 60_000_000)),
        ..all.clone()
    };
    assert_eq!(found(since).await, pick(&[2, 3, 4, 5]));
    let since_later = RunFilter {
        since: Some(ts(3 * 60_000_000 + 1)),
        ..all.clone()
    };
    assert_eq!(found(since_later).await, pick(&[3, 4, 5]));
    // All three together, and the limit after them.
    let combined = RunFilter {
        limit: 1,
        triggers: vec![Trigger::Schedule, Trigger::DryRun],
        statuses: vec![RunStatus::Blocked, RunStatus::Succeeded],
        since: Some(ts(2 * 60_000_000)),
    };
    assert_eq!(found(combined).await, pick(&[4]));
    let nothing = RunFilter {
        triggers: vec![Trigger::User],
        ..all
    };
    assert!(found(nothing).await.is_empty());
}

async fn last_good_source_count_ignores_dry_blocked_failed_running(fx: &Fixture) {
    let store = fx.store();
    assert_eq!(store.last_good_source_count().await.unwrap(), None);

    let run = |trigger, status, count| async move {
        let id = store.begin_run(&new_run(trigger, 1)).await.unwrap();
        if let Some(status) = status {
            store.finish_run(id, &finish(status, count)).await.unwrap();
        }
    };
    // Nothing good yet.
    run(Trigger::Schedule, Some(RunStatus::Failed), Some(5)).await;
    run(Trigger::DryRun, Some(RunStatus::Succeeded), Some(6)).await;
    assert_eq!(store.last_good_source_count().await.unwrap(), None);

    run(Trigger::Schedule, Some(RunStatus::Succeeded), Some(100)).await;
    assert_eq!(store.last_good_source_count().await.unwrap(), Some(100));
    run(Trigger::Manual, Some(RunStatus::Partial), Some(90)).await;
    assert_eq!(store.last_good_source_count().await.unwrap(), Some(90));

    // None of these is a baseline.
    run(Trigger::DryRun, Some(RunStatus::Succeeded), Some(1)).await;
    run(Trigger::DryRun, Some(RunStatus::Partial), Some(2)).await;
    run(Trigger::Schedule, Some(RunStatus::Blocked), Some(3)).await;
    run(Trigger::Schedule, Some(RunStatus::Failed), Some(4)).await;
    run(Trigger::Schedule, Some(RunStatus::Succeeded), None).await;
    run(Trigger::Schedule, None, None).await;
    assert_eq!(store.last_good_source_count().await.unwrap(), Some(90));
}

async fn run_operations_in_journal_order(fx: &Fixture) {
    let store = fx.store();
    let run = store
        .begin_run(&new_run(Trigger::Schedule, 1))
        .await
        .unwrap();
    let other = store
        .begin_run(&new_run(Trigger::Schedule, 2))
        .await
        .unwrap();
    assert!(store.run_operations(run).await.unwrap().is_empty());

    fx.insert_operation(run, "b-key", "create", "pending", r#"{"email": "b@x"}"#)
        .await
        .unwrap();
    fx.insert_operation(other, "x", "delete", "succeeded", "{}")
        .await
        .unwrap();
    fx.insert_operation(run, "a-key", "disable", "failed", r#"["n", 1]"#)
        .await
        .unwrap();
    // The journal's status is constrained, and its run must exist.
    assert!(
        fx.insert_operation(run, "c", "create", "bogus", "{}")
            .await
            .is_err()
    );
    assert!(
        fx.insert_operation(other + 1000, "c", "create", "pending", "{}")
            .await
            .is_err()
    );

    let ops = store.run_operations(run).await.unwrap();
    assert_eq!(ops.len(), 2);
    assert!(ops[0].id < ops[1].id);
    assert_eq!(ops[0].run_id, run);
    assert_eq!(ops[0].target, "covata");
    assert_eq!(ops[0].source_key, "b-key");
    assert_eq!(ops[0].kind, "create");
    assert_eq!(ops[0].status, "pending");
    assert_eq!(ops[0].attempts, 2);
    assert_eq!(ops[0].last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(ops[0].remote_id.as_deref(), Some("r-1"));
    assert_eq!(ops[0].payload, serde_json::json!({"email": "b@x"}));
    assert!((Utc::now() - ops[0].updated_at).num_minutes().abs() < 10);
    assert_eq!(ops[1].source_key, "a-key");
    assert_eq!(ops[1].payload, serde_json::json!(["n", 1]));
    assert_eq!(store.run_operations(other).await.unwrap().len(), 1);
}

async fn corrupt_json_is_reported_with_its_key(fx: &Fixture) {
    let store = fx.store();
    let rows = vec![record("fine", "h"), record("broken o'key", "h")];
    store.upsert_accounts("covata-prod", &rows).await.unwrap();
    fx.corrupt_attributes("covata-prod", "broken o'key").await;

    // The light load does not read the JSON.
    assert_eq!(store.load_accounts("covata-prod").await.unwrap().len(), 2);
    // Loading only the sound row works.
    store
        .load_account_states("covata-prod", &strings(&["fine"]))
        .await
        .unwrap();

    let err = store
        .load_account_states("covata-prod", &keys(&rows))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("broken o'key"), "{text}");
    assert!(text.contains("covata-prod"), "{text}");
}

#[tokio::test]
async fn connect_error_does_not_contain_the_password() {
    for url in [
        "postgres://u:s3cretpw@127.0.0.1:1/db",
        "postgres://u:s3cretpw@127.0.0.1:1/db?sslmode=bogus",
        "postgres://u:s3cretpw@[::1:1/db",
    ] {
        let Err(err) = PgStore::connect(&Secret::new(url), 1).await else {
            panic!("connected with {url}");
        };
        assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
        let text = format!("{err} {err:?}");
        assert!(!text.contains("s3cretpw"), "{text}");
    }
}

#[tokio::test]
async fn connect_error_from_the_server_names_no_password() {
    // The harness' server trusts every local connection, so ask for a database that does not
    // exist: the server refuses, and the message must still not echo the URL.
    let url = pg_url().await;
    let mut parsed = url::Url::parse(&url).unwrap();
    parsed.set_password(Some("s3cretpw")).unwrap();
    parsed.set_path("/no_such_database");
    let Err(err) = PgStore::connect(&Secret::new(parsed.to_string()), 1).await else {
        panic!("connected to a database that does not exist");
    };
    let text = format!("{err} {err:?}");
    assert!(!text.contains("s3cretpw"), "{text}");
    assert!(text.contains("no_such_database"), "{text}");
}

#[tokio::test]
async fn sqlite_memory_store_works() {
    let store = SqliteStore::open_memory().await.unwrap();
    store.migrate().await.unwrap();
    store
        .upsert_accounts("t", &[record("a", "h")])
        .await
        .unwrap();
    // The single connection is reused: the data is still there.
    assert_eq!(store.load_accounts("t").await.unwrap().len(), 1);
    assert_eq!(store.backend(), "sqlite");
}

#[tokio::test]
async fn a_connected_store_does_not_debug_print_the_password() {
    // The harness' server trusts local connections, so any password is accepted.
    let mut url = url::Url::parse(&pg_url().await).unwrap();
    url.set_password(Some("s3cretpw")).unwrap();
    let store = PgStore::connect(&Secret::new(url.to_string()), 2)
        .await
        .unwrap();
    let text = format!("{store:?}");
    assert!(!text.contains("s3cretpw"), "{text}");
    assert_eq!(store.backend(), "postgres");
}

fn new_op(key: &str, kind: &str) -> NewOperation {
    NewOperation {
        source_key: key.to_owned(),
        kind: kind.to_owned(),
        payload: serde_json::value::to_raw_value(
            &serde_json::json!({"key": key, "note": "quote \" newline \n"}),
        )
        .unwrap(),
    }
}

fn outcome(id: i64, status: OpStatus, error: Option<&str>, remote_id: Option<&str>) -> OpOutcome {
    OpOutcome {
        id,
        status,
        error: error.map(str::to_owned),
        remote_id: remote_id.map(str::to_owned),
    }
}

async fn load_account_records_returns_full_rows(fx: &Fixture) {
    let store = fx.store();
    let mut rows: Vec<AccountRecord> = (0..1_200)
        .map(|i| record(&format!("r{i:04}"), "h"))
        .collect();
    rows[7].account.disabled_at = Some(ts(42));
    rows[7].account.enabled = false;
    rows[7].last_seen_run = None;
    rows[7].state.roles.insert("admin".to_owned());
    store.upsert_accounts("t", &rows).await.unwrap();

    let wanted = strings(&["r0007", "missing", "r1199", "r0000"]);
    let got = store.load_account_records("t", &wanted).await.unwrap();
    let mut got_keys: Vec<&str> = got.iter().map(|r| r.account.key.as_str()).collect();
    got_keys.sort_unstable();
    assert_eq!(got_keys, ["r0000", "r0007", "r1199"]);
    let r7 = got.iter().find(|r| r.account.key == "r0007").unwrap();
    assert_eq!(r7, &rows[7]);

    // Across batches of keys.
    let all: Vec<String> = keys(&rows);
    let got = store.load_account_records("t", &all).await.unwrap();
    assert_eq!(got.len(), 1_200);
    assert!(
        store
            .load_account_records("t", &[])
            .await
            .unwrap()
            .is_empty()
    );

    fx.corrupt_attributes("t", "r0000").await;
    let err = store.load_account_records("t", &wanted).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("r0000"), "{err}");
}

async fn journal_then_mark_sent_then_record_outcomes(fx: &Fixture) {
    let store = fx.store();
    let run = store
        .begin_run(&new_run(Trigger::Schedule, 1))
        .await
        .unwrap();
    store
        .upsert_accounts("covata", &[record("b", "h"), record("c", "h")])
        .await
        .unwrap();
    let ops = vec![
        new_op("a", "create"),
        new_op("b", "disable"),
        new_op("c", "delete"),
        new_op("d", "update"),
    ];
    let ids = store.journal(run, "covata", &ops).await.unwrap();
    assert_eq!(ids.len(), 4);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let other = store
        .journal(run, "primavera", &[new_op("a", "create")])
        .await
        .unwrap();
    assert!(store.journal(run, "covata", &[]).await.unwrap().is_empty());

    let journaled = store.run_operations(run).await.unwrap();
    assert_eq!(journaled.len(), 5);
    assert_eq!(journaled[0].id, ids[0]);
    assert_eq!(journaled[0].source_key, "a");
    assert_eq!(journaled[0].kind, "create");
    assert_eq!(journaled[0].status, "pending");
    assert_eq!(journaled[0].attempts, 0);
    assert_eq!(
        journaled[0].payload,
        serde_json::from_str::<serde_json::Value>(ops[0].payload.get()).unwrap()
    );
    assert_eq!(journaled[3].source_key, "d");
    assert_eq!(journaled[4].id, other[0]);
    assert_eq!(journaled[4].target, "primavera");

    let unfinished = store.unfinished_operations("covata").await.unwrap();
    assert_eq!(unfinished.iter().map(|o| o.id).collect::<Vec<_>>(), ids);

    store.mark_sent(&ids[..3]).await.unwrap();
    store.mark_sent(&ids[..1]).await.unwrap();
    store.mark_sent(&[]).await.unwrap();
    let journaled = store.run_operations(run).await.unwrap();
    assert_eq!(
        journaled
            .iter()
            .map(|o| (o.status.as_str(), o.attempts))
            .collect::<Vec<_>>(),
        [
            ("sent", 2),
            ("sent", 1),
            ("sent", 1),
            ("pending", 0),
            ("pending", 0)
        ]
    );

    let mut created = record("a", "h-a");
    created.account.remote_id = Some("r-new".to_owned());
    store
        .record_outcomes(
            "covata",
            &[
                outcome(ids[0], OpStatus::Succeeded, None, Some("r-new")),
                outcome(ids[1], OpStatus::Failed, Some("HTTP 500: \"oops\""), None),
                outcome(ids[2], OpStatus::Succeeded, Some("already gone"), None),
            ],
            &[
                AccountChange::Upsert(created.clone()),
                AccountChange::Delete {
                    key: "c".to_owned(),
                },
            ],
        )
        .await
        .unwrap();
    let journaled = store.run_operations(run).await.unwrap();
    assert_eq!(journaled[0].status, "succeeded");
    assert_eq!(journaled[0].remote_id.as_deref(), Some("r-new"));
    assert_eq!(journaled[0].last_error, None);
    assert_eq!(journaled[1].status, "failed");
    assert_eq!(
        journaled[1].last_error.as_deref(),
        Some("HTTP 500: \"oops\"")
    );
    assert_eq!(journaled[2].last_error.as_deref(), Some("already gone"));
    assert_eq!(journaled[3].status, "pending");

    let unfinished = store.unfinished_operations("covata").await.unwrap();
    assert_eq!(
        unfinished.iter().map(|o| o.id).collect::<Vec<_>>(),
        [ids[3]]
    );

    let accounts = store.load_accounts("covata").await.unwrap();
    assert_eq!(
        accounts.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(accounts[0], created.account);

    // A later outcome without a remote id keeps the one learned before.
    store
        .record_outcomes(
            "covata",
            &[outcome(ids[0], OpStatus::Skipped, Some("re-planned"), None)],
            &[],
        )
        .await
        .unwrap();
    let journaled = store.run_operations(run).await.unwrap();
    assert_eq!(journaled[0].status, "skipped");
    assert_eq!(journaled[0].remote_id.as_deref(), Some("r-new"));
    store.record_outcomes("covata", &[], &[]).await.unwrap();
}

async fn journal_keeps_input_order_across_batches(fx: &Fixture) {
    let store = fx.store();
    let run = store
        .begin_run(&new_run(Trigger::Schedule, 1))
        .await
        .unwrap();
    // Keys in an order that is not their sort order, over several statements.
    let ops: Vec<NewOperation> = (0..10_500)
        .map(|i| new_op(&format!("k{}", (i * 7919) % 10_500), "update"))
        .collect();
    let ids = store.journal(run, "t", &ops).await.unwrap();
    assert_eq!(ids.len(), ops.len());
    let journaled = store.run_operations(run).await.unwrap();
    assert_eq!(journaled.len(), ops.len());
    let by_id: HashMap<i64, &str> = journaled
        .iter()
        .map(|o| (o.id, o.source_key.as_str()))
        .collect();
    for (op, id) in ops.iter().zip(&ids) {
        assert_eq!(by_id[id], op.source_key);
    }

    store.mark_sent(&ids).await.unwrap();
    let outcomes: Vec<OpOutcome> = ids
        .iter()
        .map(|&id| outcome(id, OpStatus::Succeeded, None, None))
        .collect();
    store.record_outcomes("t", &outcomes, &[]).await.unwrap();
    assert!(store.unfinished_operations("t").await.unwrap().is_empty());
    let journaled = store.run_operations(run).await.unwrap();
    assert!(
        journaled
            .iter()
            .all(|o| o.status == "succeeded" && o.attempts == 1)
    );
}

async fn record_outcomes_folds_changes_per_key(fx: &Fixture) {
    let store = fx.store();
    let run = store
        .begin_run(&new_run(Trigger::Schedule, 1))
        .await
        .unwrap();
    let ids = store
        .journal(run, "t", &[new_op("x", "create"), new_op("y", "disable")])
        .await
        .unwrap();
    store
        .upsert_accounts("t", &[record("y", "h"), record("z", "h")])
        .await
        .unwrap();
    let (created_y, _) = fx.stamps("t", "y").await;

    let changes = vec![
        AccountChange::Upsert(record("x", "h-x")),
        AccountChange::SetEnabled {
            key: "x".to_owned(),
            enabled: false,
            disabled_at: Some(ts(5)),
        },
        AccountChange::SetEnabled {
            key: "y".to_owned(),
            enabled: false,
            disabled_at: Some(ts(6)),
        },
        AccountChange::SetEnabled {
            key: "not-recorded".to_owned(),
            enabled: false,
            disabled_at: None,
        },
    ];
    let outcomes = vec![
        outcome(ids[0], OpStatus::Succeeded, None, Some("r-x")),
        outcome(ids[1], OpStatus::Succeeded, None, None),
    ];
    store
        .record_outcomes("t", &outcomes, &changes)
        .await
        .unwrap();

    let accounts = store.load_accounts("t").await.unwrap();
    assert_eq!(
        accounts.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(),
        ["x", "y", "z"]
    );
    assert!(!accounts[0].enabled);
    assert_eq!(accounts[0].disabled_at, Some(ts(5)));
    assert_eq!(accounts[0].hash, h("h-x"));
    assert!(!accounts[1].enabled);
    assert_eq!(accounts[1].disabled_at, Some(ts(6)));
    assert_eq!(
        accounts[1].hash,
        h("h"),
        "a status change keeps the rest of the row"
    );
    assert!(accounts[2].enabled);
    let (created_after, _) = fx.stamps("t", "y").await;
    assert_eq!(created_after, created_y);

    // Re-enabling clears disabled_at.
    store
        .record_outcomes(
            "t",
            &[],
            &[AccountChange::SetEnabled {
                key: "y".to_owned(),
                enabled: true,
                disabled_at: None,
            }],
        )
        .await
        .unwrap();
    let accounts = store.load_accounts("t").await.unwrap();
    assert!(accounts[1].enabled);
    assert_eq!(accounts[1].disabled_at, None);
}

/// A distinct content hash per label (tests name hashes by label).
fn h(label: &str) -> dirsync::mapping::ContentHash {
    dirsync::mapping::ContentHash::from_u128(label.bytes().fold(7u128, |a, b| {
        a.wrapping_mul(131).wrapping_add(u128::from(b))
    }))
}

/// Upserts through `record_outcomes` over rows that exist (same login, changed login, no
/// login), rows that do not, and an upsert folded with a later status change; then more rows
/// than one statement takes. Every row reads back whole; created_at stays.
async fn record_outcomes_rewrites_existing_rows(fx: &Fixture) {
    let store = fx.store();
    let run = store
        .begin_run(&new_run(Trigger::Schedule, 1))
        .await
        .unwrap();
    let mut no_login = record("d", "h");
    no_login.account.login = None;
    store
        .upsert_accounts(
            "t",
            &[
                record("a", "h"),
                record("b", "h"),
                record("c", "h"),
                no_login,
            ],
        )
        .await
        .unwrap();
    let (created_a, _) = fx.stamps("t", "a").await;
    let (created_b, _) = fx.stamps("t", "b").await;

    let mut a = record("a", "h-a2");
    a.account.remote_id = Some("r-a2".to_owned());
    a.account.enabled = false;
    a.account.disabled_at = Some(ts(7));
    a.account.adopted = true;
    a.last_seen_run = Some(run);
    a.state
        .fields
        .insert("title".to_owned(), "Chief \"Q\" \u{e9}".to_owned());
    a.state.roles.insert("admin".to_owned());
    let mut b = record("b", "h-b2");
    b.account.login = Some("b-renamed@example.com".to_owned());
    b.state.groups.insert("g1".to_owned());
    let c = record("c", "h-c2");
    let mut d = record("d", "h-d2");
    d.account.login = None;
    let n = record("n", "h-n");
    let ids = store
        .journal(
            run,
            "t",
            &[
                new_op("a", "update"),
                new_op("b", "update"),
                new_op("c", "update"),
                new_op("d", "update"),
                new_op("n", "create"),
            ],
        )
        .await
        .unwrap();
    let outcomes: Vec<OpOutcome> = ids
        .iter()
        .map(|&id| outcome(id, OpStatus::Succeeded, None, None))
        .collect();
    let changes = vec![
        AccountChange::Upsert(a.clone()),
        AccountChange::Upsert(b.clone()),
        AccountChange::Upsert(c.clone()),
        AccountChange::SetEnabled {
            key: "c".to_owned(),
            enabled: false,
            disabled_at: Some(ts(9)),
        },
        AccountChange::Upsert(d.clone()),
        AccountChange::Upsert(n.clone()),
    ];
    store
        .record_outcomes("t", &outcomes, &changes)
        .await
        .unwrap();
    let mut c_disabled = c.clone();
    c_disabled.account.enabled = false;
    c_disabled.account.disabled_at = Some(ts(9));
    let got = store
        .load_account_records("t", &strings(&["a", "b", "c", "d", "n"]))
        .await
        .unwrap();
    let by_key: HashMap<&str, &AccountRecord> =
        got.iter().map(|r| (r.account.key.as_str(), r)).collect();
    assert_eq!(by_key.len(), 5);
    assert_eq!(by_key["a"], &a);
    assert_eq!(by_key["b"], &b);
    assert_eq!(by_key["c"], &c_disabled);
    assert_eq!(by_key["d"], &d);
    assert_eq!(by_key["n"], &n);
    assert_eq!(fx.stamps("t", "a").await.0, created_a);
    assert_eq!(fx.stamps("t", "b").await.0, created_b);
    let journaled = store.run_operations(run).await.unwrap();
    assert!(journaled.iter().all(|o| o.status == "succeeded"));

    // More rows than one statement (or JSON array) takes, half of them with a new login.
    let rows: Vec<AccountRecord> = (0..12_500)
        .map(|i| record(&format!("m{i:05}"), "h"))
        .collect();
    store.upsert_accounts("t", &rows).await.unwrap();
    let ops: Vec<NewOperation> = rows
        .iter()
        .map(|r| new_op(&r.account.key, "update"))
        .collect();
    let ids = store.journal(run, "t", &ops).await.unwrap();
    let updated: Vec<AccountRecord> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut r = r.clone();
            r.account.hash = h(&format!("h{i}"));
            if i % 2 == 0 {
                r.account.login = Some(format!("new-{i}@example.com"));
            }
            r
        })
        .collect();
    let outcomes: Vec<OpOutcome> = ids
        .iter()
        .map(|&id| outcome(id, OpStatus::Succeeded, None, None))
        .collect();
    let changes: Vec<AccountChange> = updated.iter().cloned().map(AccountChange::Upsert).collect();
    store
        .record_outcomes("t", &outcomes, &changes)
        .await
        .unwrap();
    let got = store.load_account_records("t", &keys(&rows)).await.unwrap();
    assert_eq!(got, updated);
    assert!(store.unfinished_operations("t").await.unwrap().is_empty());
    if let Fixture::Sqlite { store, .. } = fx {
        // The login index agrees with the rows after the two-statement upsert.
        let check: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(check, "ok");
    }
}

/// `prune_runs` deletes old finished runs with their journal rows, and keeps a running run, a
/// run with a `pending` or `sent` operation, the last good run (however old), every recent run
/// and every account row.
async fn prune_runs_keeps_what_is_still_needed(fx: &Fixture) {
    let store = fx.store();
    let day = |d: i64| ts(0) + Duration::days(d);
    // A run started a day before `finished` and ended then (`None`: still running).
    let run = |trigger, status: Option<RunStatus>, count, finished: i64| async move {
        let id = store
            .begin_run(&NewRun {
                trigger,
                started_at: day(finished - 1),
                targets: strings(&["covata"]),
                forced: false,
            })
            .await
            .unwrap();
        if let Some(status) = status {
            let mut end = finish(status, count);
            end.finished_at = day(finished);
            store.finish_run(id, &end).await.unwrap();
        }
        id
    };
    let old_good = run(
        Trigger::Schedule,
        Some(RunStatus::Succeeded),
        Some(100),
        -40,
    )
    .await;
    let old_dry = run(Trigger::DryRun, Some(RunStatus::Succeeded), Some(7), -35).await;
    let last_good = run(Trigger::Manual, Some(RunStatus::Partial), Some(90), -30).await;
    let old_sent = run(Trigger::Schedule, Some(RunStatus::Failed), None, -25).await;
    let old_pending = run(Trigger::Schedule, Some(RunStatus::Blocked), Some(5), -24).await;
    let running = run(Trigger::Schedule, None, None, -20).await;
    let recent = run(Trigger::Schedule, Some(RunStatus::Failed), Some(3), -1).await;
    for (run_id, key, status) in [
        (old_good, "a", "succeeded"),
        (old_good, "b", "failed"),
        (old_dry, "c", "skipped"),
        (last_good, "d", "succeeded"),
        (old_sent, "e", "sent"),
        (old_sent, "f", "succeeded"),
        (old_pending, "g", "pending"),
        (recent, "h", "succeeded"),
    ] {
        fx.insert_operation(run_id, key, "create", status, "{}")
            .await
            .unwrap();
    }
    store
        .upsert_accounts("covata", &[record("a", "1"), record("b", "2")])
        .await
        .unwrap();
    let accounts = store.load_accounts("covata").await.unwrap();
    assert_eq!(store.last_good_source_count().await.unwrap(), Some(90));

    let pruned = store.prune_runs(day(-10)).await.unwrap();
    assert_eq!(
        pruned,
        PruneSummary {
            runs: 2,
            operations: 3
        }
    );
    let left: Vec<i64> = store
        .list_runs(100)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, [recent, running, old_pending, old_sent, last_good]);
    assert!(store.run_operations(old_good).await.unwrap().is_empty());
    assert_eq!(store.run_operations(old_sent).await.unwrap().len(), 2);
    assert_eq!(store.run_operations(old_pending).await.unwrap().len(), 1);
    assert_eq!(store.run_operations(last_good).await.unwrap().len(), 1);
    assert_eq!(store.run_operations(recent).await.unwrap().len(), 1);
    assert_eq!(store.last_good_source_count().await.unwrap(), Some(90));
    assert_eq!(store.load_accounts("covata").await.unwrap(), accounts);
    assert_eq!(
        store.unfinished_operations("covata").await.unwrap().len(),
        2
    );

    // Nothing more to prune at the same cut-off.
    assert_eq!(
        store.prune_runs(day(-10)).await.unwrap(),
        PruneSummary::default()
    );
    // A newer good run: the old one is no longer the baseline and goes.
    let newer_good = run(Trigger::Schedule, Some(RunStatus::Succeeded), Some(95), -15).await;
    assert_eq!(store.last_good_source_count().await.unwrap(), Some(95));
    let pruned = store.prune_runs(day(-10)).await.unwrap();
    assert_eq!(
        pruned,
        PruneSummary {
            runs: 1,
            operations: 1
        }
    );
    assert!(store.get_run(last_good).await.unwrap().is_none());
    assert!(store.get_run(newer_good).await.unwrap().is_some());
    assert_eq!(store.last_good_source_count().await.unwrap(), Some(95));
    assert_eq!(store.load_accounts("covata").await.unwrap(), accounts);
}

/// On a SQLite database with incremental auto-vacuum, pruning gives the freed pages back.
#[tokio::test]
async fn sqlite_prune_vacuums_when_auto_vacuum_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("dirsync.db"))
        .await
        .unwrap();
    // The file exists already (WAL mode is set at open): the change takes a VACUUM.
    // Both on one connection: the pragma waits there for the VACUUM.
    let mut conn = store.pool().acquire().await.unwrap();
    for pragma in ["PRAGMA auto_vacuum = INCREMENTAL", "VACUUM"] {
        sqlx::query(pragma).execute(&mut *conn).await.unwrap();
    }
    drop(conn);
    store.migrate().await.unwrap();
    let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(mode, 2);
    let id = store
        .begin_run(&new_run(Trigger::Schedule, 1))
        .await
        .unwrap();
    store
        .finish_run(id, &finish(RunStatus::Failed, None))
        .await
        .unwrap();
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(4000));
    for i in 0..200 {
        sqlx::query(
            "INSERT INTO operations (run_id, target, source_key, kind, payload, status) \
             VALUES (?1, 'covata', ?2, 'create', ?3, 'succeeded')",
        )
        .bind(id)
        .bind(format!("k{i}"))
        .bind(&big)
        .execute(store.pool())
        .await
        .unwrap();
    }
    let pages = |store: &SqliteStore| {
        let pool = store.pool().clone();
        async move {
            let n: i64 = sqlx::query_scalar("PRAGMA page_count")
                .fetch_one(&pool)
                .await
                .unwrap();
            n
        }
    };
    let before = pages(&store).await;
    let pruned = store.prune_runs(ts(0) + Duration::days(1)).await.unwrap();
    assert_eq!(
        pruned,
        PruneSummary {
            runs: 1,
            operations: 200
        }
    );
    let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(free, 0);
    assert!(pages(&store).await < before / 2);
}
