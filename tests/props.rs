//! Property tests (proptest, bounded case counts so the file runs in seconds): the CSV parser,
//! the configuration loader and the planner never panic, never return partial results, and the
//! planner is safe (no op on unowned accounts, no delete under `on_missing = disable`) and
//! idempotent (its plan, applied to a simple model of the recorded state, re-plans to nothing).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;

use dirsync::mapping::{
    Account, FieldKind, FieldMapping, Mapped, RoleRule, TargetMapping, Template, UserFilter,
};
use dirsync::model::{Quarantined, Snapshot, User};
use dirsync::plan::Op;
use dirsync::plan::diff::{DiffInput, OnMissing, PlanSettings, diff, triage};
use dirsync::source::csv::{CsvColumns, CsvSettings, load_from_reader};
use dirsync::store::{AccountState, RecordedAccount};

// ---------------------------------------------------------------------------------------------
// (a) CSV

fn csv_settings() -> CsvSettings {
    let mut c = CsvColumns::new("id", "email");
    c.given_name = Some("first".into());
    c.enabled = Some("status".into());
    c.groups = Some("groups".into());
    CsvSettings::new("users.csv", c)
}

/// Non-blank records after the header, counted the way the parser splits records (LF
/// terminator, BOM skipped, a final LF appended, blank = one field of spaces).
fn data_records(bytes: &[u8]) -> usize {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut input = bytes.to_vec();
    input.push(b'\n');
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(&input[..]);
    let mut n = 0usize;
    let mut rec = csv::ByteRecord::new();
    while rdr.read_byte_record(&mut rec).unwrap_or(false) {
        let f = rec.get(0).unwrap_or_default();
        let f = f.strip_suffix(b"\r").unwrap_or(f);
        if rec.len() == 1 && f.trim_ascii().is_empty() {
            continue;
        }
        n += 1;
    }
    n.saturating_sub(1)
}

fn check_csv(bytes: &[u8]) -> Result<(), TestCaseError> {
    let s = csv_settings();
    match load_from_reader(&s, Path::new("users.csv"), bytes) {
        Ok(snap) => {
            prop_assert_eq!(snap.len(), data_records(bytes), "{:?}", bytes);
            for u in snap.users() {
                prop_assert!(!u.key.is_empty() && !u.email.is_empty());
                prop_assert!(!snap.is_quarantined(&u.key), "{:?}", u.key);
            }
            // Every record is a user or quarantined, named by its line, its value escaped.
            for q in snap.quarantined() {
                prop_assert!(q.location.starts_with("users.csv:"), "{:?}", q);
                prop_assert!(!q.problem.is_empty());
                prop_assert!(!q.value.chars().any(char::is_control), "{:?}", q);
            }
        }
        Err(e) => {
            prop_assert!(!e.problems.is_empty());
            prop_assert!(!e.to_string().is_empty());
        }
    }
    Ok(())
}

/// A cell from a hostile alphabet: quotes, delimiters, CR/LF, control and non-ASCII bytes.
fn cell() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            8 => prop::sample::select(b"abcxyz@._-=+ ".to_vec()),
            1 => prop::sample::select(b",\"\r\n;\t|\x00\x1b\xff\xe9\xc3\xa9".to_vec()),
        ],
        0..8,
    )
}

/// CSV-shaped input: a valid header (sometimes) and rows of hostile cells, quoted or not.
fn csv_like() -> impl Strategy<Value = Vec<u8>> {
    let row = prop::collection::vec((cell(), any::<bool>()), 0..6);
    (
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(row, 0..6),
    )
        .prop_map(|(bom, crlf, rows)| {
            let mut out = Vec::new();
            if bom {
                out.extend_from_slice(b"\xEF\xBB\xBF");
            }
            let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
            out.extend_from_slice(b"id,email,first,status,groups");
            out.extend_from_slice(eol);
            for row in rows {
                for (i, (c, quoted)) in row.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    if *quoted {
                        out.push(b'"');
                        for &b in c {
                            if b == b'"' {
                                out.push(b'"');
                            }
                            out.push(b);
                        }
                        out.push(b'"');
                    } else {
                        out.extend_from_slice(c);
                    }
                }
                out.extend_from_slice(eol);
            }
            out
        })
}

/// Well-formed rows: unique keys and emails, plain values. Always a full snapshot.
fn csv_valid() -> impl Strategy<Value = (Vec<u8>, usize)> {
    prop::collection::btree_set("[a-z0-9]{1,6}", 0..12).prop_flat_map(|keys| {
        let n = keys.len();
        (
            Just(keys.into_iter().collect::<Vec<_>>()),
            prop::collection::vec(("[A-Za-z =+@-]{0,6}", any::<bool>()), n),
        )
            .prop_map(|(keys, rest)| {
                let mut out = b"id,email,first,status,groups\n".to_vec();
                for (i, (k, (first, enabled))) in keys.iter().zip(rest).enumerate() {
                    let status = if enabled { "active" } else { "disabled" };
                    out.extend_from_slice(
                        format!("{k},u{i}@x.com,\"{first}\",{status},staff;admins\n").as_bytes(),
                    );
                }
                let n = keys.len();
                (out, n)
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn csv_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_csv(&bytes)?;
    }

    #[test]
    fn csv_arbitrary_after_a_header(tail in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut bytes = b"id,email,first,status,groups\n".to_vec();
        bytes.extend_from_slice(&tail);
        check_csv(&bytes)?;
    }

    #[test]
    fn csv_hostile_cells(bytes in csv_like()) {
        check_csv(&bytes)?;
    }

    #[test]
    fn csv_valid_rows_all_become_users((bytes, n) in csv_valid()) {
        let snap = load_from_reader(&csv_settings(), Path::new("users.csv"), &bytes[..]);
        let snap = snap.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(snap.len(), n);
        check_csv(&bytes)?;
    }
}

// ---------------------------------------------------------------------------------------------
// (b) configuration

/// TOML-ish text: lines from plausible sections, keys and values, and some garbage.
fn toml_like() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        prop::sample::select(vec![
            "[state]",
            "[source]",
            "[source.csv]",
            "[source.csv.columns]",
            "[source.ldap]",
            "[safety]",
            "[schedule]",
            "[daemon]",
            "[http]",
            "[[target]]",
            "[[target.roles]]",
            "[[notify]]",
            "[target]",
            "[[source]]",
        ])
        .prop_map(str::to_string),
        (
            prop::sample::select(vec![
                "path",
                "database_url",
                "kind",
                "key",
                "email",
                "name",
                "base_url",
                "username",
                "password",
                "password_file",
                "client_id",
                "client_secret",
                "client_secret_file",
                "interval",
                "cron",
                "jitter",
                "on_missing",
                "delete_after",
                "max_disable_percent",
                "concurrency",
                "group",
                "roles",
                "delimiter",
                "enabled",
                "url",
                "timeout",
                "listen",
                "bulk_import_min",
            ]),
            prop::sample::select(vec![
                "\"csv\"",
                "\"ldap\"",
                "\"covata\"",
                "\"valuekeep\"",
                "\"primavera\"",
                "\"users.csv\"",
                "\"state.db\"",
                "\"http://127.0.0.1:1/\"",
                "\"not a url\"",
                "\"1h\"",
                "\"-5s\"",
                "\"0 */5 * * * *\"",
                "\"disable\"",
                "\"delete\"",
                "\";\"",
                "\"\"",
                "\"${DIRSYNC_X}\"",
                "0",
                "-1",
                "101",
                "1e400",
                "18446744073709551616",
                "true",
                "[]",
                "[\"a\", 1]",
                "{}",
                "{ a = 1 }",
                "1979-05-27T07:32:00Z",
                "\"\\u0000\"",
                "\"\u{1f600}\"",
            ]),
        )
            .prop_map(|(k, v)| format!("{k} = {v}")),
        "[ -~]{0,20}",
        "\\PC{0,10}",
    ];
    prop::collection::vec(line, 0..30).prop_map(|lines| lines.join("\n"))
}

fn env_like() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(
        (
            prop::sample::select(vec![
                "DIRSYNC_X",
                "DIRSYNC_STATE__PATH",
                "DIRSYNC_TARGET__0__PASSWORD",
                "DIRSYNC_SOURCE__KIND",
                "DIRSYNC_",
                "DIRSYNC___",
                "HOME",
            ]),
            "[ -~]{0,8}",
        )
            .prop_map(|(k, v)| (k.to_string(), v)),
        0..3,
    )
}

/// A valid configuration, one setting a line.
const BASE_CONFIG: &str = r#"[state]
path = "state.db"
[source]
kind = "csv"
[source.csv]
path = "users.csv"
[source.csv.columns]
key = "id"
email = "email"
[safety]
max_disable_percent = 10
[[target]]
name = "covata"
kind = "covata"
base_url = "http://127.0.0.1:9/"
username = "svc"
password = "pw"
client_id = "client"
client_secret = "secret"
on_missing = "disable"
[[target.roles]]
group = "admins"
roles = ["ROLE_SYSTEM_ADMIN"]"#;

/// The valid configuration with some lines replaced by TOML-ish lines, or dropped.
fn mutated_config() -> impl Strategy<Value = String> {
    let n = BASE_CONFIG.lines().count();
    prop::collection::vec((0..n, prop::option::of(toml_like())), 0..4).prop_map(|edits| {
        let mut lines: Vec<String> = BASE_CONFIG.lines().map(str::to_string).collect();
        for (i, with) in edits {
            let i = i.min(lines.len().saturating_sub(1));
            match with {
                Some(text) if !lines.is_empty() => lines[i] = text,
                _ if !lines.is_empty() => {
                    lines.remove(i);
                }
                _ => {}
            }
        }
        lines.join("\n")
    })
}

fn check_config(bytes: &[u8], env: &[(String, String)]) -> Result<bool, TestCaseError> {
    let text = String::from_utf8_lossy(bytes);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dirsync.toml");
    std::fs::write(&path, bytes).unwrap();
    std::fs::write(dir.path().join("users.csv"), "id,email\n").unwrap();
    match dirsync::config::load_with_env(&path, env) {
        Ok(_) => Ok(true),
        Err(e) => {
            prop_assert!(!e.problems.is_empty(), "{}", text);
            for p in &e.problems {
                prop_assert!(!p.key.is_empty(), "{:?} for\n{}", p, text);
                prop_assert!(!p.message.is_empty(), "{:?} for\n{}", p, text);
            }
            Ok(false)
        }
    }
}

#[test]
fn base_config_is_valid() {
    assert!(check_config(BASE_CONFIG.as_bytes(), &[]).unwrap());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn config_mutations(text in mutated_config(), env in env_like()) {
        check_config(text.as_bytes(), &env)?;
    }

    #[test]
    fn config_never_panics(text in toml_like(), env in env_like()) {
        check_config(text.as_bytes(), &env)?;
    }

    #[test]
    fn config_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        check_config(&bytes, &[])?;
    }
}

// ---------------------------------------------------------------------------------------------
// (c) planner

fn mapping() -> TargetMapping {
    let f = |name: &str, kind, required, tpl: &str| FieldMapping {
        name: name.into(),
        kind,
        required,
        template: Template::parse(tpl).unwrap(),
    };
    TargetMapping {
        fields: vec![
            f("email", FieldKind::Email, true, "{email}"),
            f("firstName", FieldKind::Text, true, "{given_name}"),
            f("lastName", FieldKind::Text, false, "{family_name}"),
        ],
        role_rules: vec![RoleRule {
            group: "admins".into(),
            roles: vec!["ADMIN".into()],
        }],
        default_roles: vec!["USER".into()],
        group_rules: vec![],
        default_groups: vec![],
        filter: UserFilter::default(),
        login_field: "email".into(),
    }
}

const KEYS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

/// A source user for `key`: the variant picks email case, names and groups.
fn user(key: &str, v: (u8, u8, u8, bool)) -> User {
    let (email, given, groups, enabled) = v;
    let mut u = User::new(
        key,
        if email % 2 == 0 {
            format!("{key}@x.com")
        } else {
            format!("{}@X.com", key.to_uppercase())
        },
    );
    u.given_name = match given % 3 {
        0 => None, // required: the user cannot be mapped
        1 => Some("Ann".into()),
        _ => Some("Bob".into()),
    };
    u.family_name = (given % 2 == 0).then(|| "Z".into());
    u.groups = match groups % 3 {
        0 => vec![],
        1 => vec!["admins".into()],
        _ => vec!["staff".into(), "admins".into()],
    };
    u.enabled = enabled;
    u.normalized()
}

fn variant() -> impl Strategy<Value = (u8, u8, u8, bool)> {
    (0u8..4, 0u8..6, 0u8..3, any::<bool>())
}

/// A recorded account, with the state of some earlier variant of the user.
#[derive(Debug, Clone)]
struct Rec {
    account: RecordedAccount,
    state: AccountState,
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
}

fn recorded(key: &str, v: (u8, u8, u8, bool), owned: bool, enabled: bool, old: bool) -> Rec {
    let m = mapping();
    let mut u = user(key, v);
    u.given_name.get_or_insert_with(|| "Old".into());
    let a = match m.map(&u) {
        Mapped::Account(a) => a,
        other => panic!("{other:?}"),
    };
    Rec {
        account: RecordedAccount {
            key: key.into(),
            remote_id: Some(format!("id-{key}")),
            login: Some(u.email.clone()),
            hash: a.hash,
            enabled,
            owned,
            adopted: false,
            disabled_at: (!enabled).then(|| {
                if old {
                    now() - chrono::Duration::days(90)
                } else {
                    now() - chrono::Duration::days(1)
                }
            }),
        },
        state: AccountState {
            fields: a.fields,
            roles: a.roles,
            groups: a.groups,
        },
    }
}

fn plan(
    m: &TargetMapping,
    users: &[User],
    recs: &BTreeMap<String, Rec>,
    settings: &PlanSettings,
) -> dirsync::plan::TargetPlan {
    plan_q(m, users, recs, settings, &[])
}

/// [`plan`] with quarantined keys (sorted).
fn plan_q(
    m: &TargetMapping,
    users: &[User],
    recs: &BTreeMap<String, Rec>,
    settings: &PlanSettings,
    quarantined: &[String],
) -> dirsync::plan::TargetPlan {
    let recorded: Vec<RecordedAccount> = recs.values().map(|r| r.account.clone()).collect();
    let t = triage(m, users, &recorded);
    let states: HashMap<String, AccountState> = t
        .need_state
        .iter()
        .filter_map(|k| recs.get(k).map(|r| (k.clone(), r.state.clone())))
        .collect();
    diff(
        DiffInput {
            mapping: m,
            users,
            recorded: &recorded,
            triage: &t,
            states: &states,
            settled: None,
            quarantined,
        },
        settings,
    )
}

/// The plan as a prefiltered run makes it: the users the prefilter kept, planned with its marks.
fn plan_prefiltered(
    m: &TargetMapping,
    kept: &[User],
    recorded: &[RecordedAccount],
    settled: &dirsync::plan::Settled,
    recs: &BTreeMap<String, Rec>,
    settings: &PlanSettings,
    quarantined: &[String],
) -> dirsync::plan::TargetPlan {
    let t = triage(m, kept, recorded);
    let states: HashMap<String, AccountState> = t
        .need_state
        .iter()
        .filter_map(|k| recs.get(k).map(|r| (k.clone(), r.state.clone())))
        .collect();
    diff(
        DiffInput {
            mapping: m,
            users: kept,
            recorded,
            triage: &t,
            states: &states,
            settled: Some(settled),
            quarantined,
        },
        settings,
    )
}

fn set_state(rec: &mut Rec, a: &Account) {
    rec.account.hash = a.hash;
}

/// The effects of the plan on the recorded state, modelled simply.
fn apply(plan: &dirsync::plan::TargetPlan, recs: &mut BTreeMap<String, Rec>, m: &TargetMapping) {
    for op in &plan.ops {
        match &op.op {
            Op::Create { account } => {
                recs.insert(
                    op.key.clone(),
                    Rec {
                        account: RecordedAccount {
                            key: op.key.clone(),
                            remote_id: Some(format!("new-{}", op.key)),
                            login: account.login(m).map(str::to_string),
                            hash: account.hash,
                            enabled: account.enabled,
                            owned: true,
                            adopted: false,
                            disabled_at: None,
                        },
                        state: AccountState {
                            fields: account.fields.clone(),
                            roles: account.roles.clone(),
                            groups: account.groups.clone(),
                        },
                    },
                );
            }
            Op::Update { account, .. } => {
                let r = recs.get_mut(&op.key).unwrap();
                r.state.fields = account.fields.clone();
                set_state(r, account);
            }
            Op::SetRoles { account, .. } => {
                let r = recs.get_mut(&op.key).unwrap();
                r.state.roles = account.roles.clone();
                set_state(r, account);
            }
            Op::SetGroups { account, .. } => {
                let r = recs.get_mut(&op.key).unwrap();
                r.state.groups = account.groups.clone();
                set_state(r, account);
            }
            Op::Enable => {
                let r = recs.get_mut(&op.key).unwrap();
                r.account.enabled = true;
                r.account.disabled_at = None;
            }
            Op::Disable { .. } => {
                let r = recs.get_mut(&op.key).unwrap();
                r.account.enabled = false;
                r.account.disabled_at = Some(now());
            }
            Op::Delete { .. } => {
                recs.remove(&op.key);
            }
        }
    }
}

/// Email case, names, groups, enabled: see [`user`].
type Variant = (u8, u8, u8, bool);
/// A recorded account: its earlier variant, owned, enabled, disabled long ago.
type RecSpec = (Variant, bool, bool, bool);
/// Per key: the source user, the recorded account; and the `on_missing` index.
type PlannerInput = (Vec<Option<Variant>>, Vec<Option<RecSpec>>, u8);

fn planner_input() -> impl Strategy<Value = PlannerInput> {
    (
        prop::collection::vec(prop::option::of(variant()), KEYS.len()),
        prop::collection::vec(
            prop::option::of((variant(), any::<bool>(), any::<bool>(), any::<bool>())),
            KEYS.len(),
        ),
        0u8..3,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Dropping the users the prefilter settles changes nothing in any target's plan (two
    /// targets: one takes everybody, one leaves `staff` out of scope).
    #[test]
    fn prefiltered_plan_equals_whole_plan((us, rs, missing) in planner_input()) {
        let m = mapping();
        let mut scoped = mapping();
        scoped.filter = UserFilter { include_groups: vec![], exclude_groups: vec!["staff".into()] };
        let users: Vec<User> = KEYS
            .iter()
            .zip(&us)
            .filter_map(|(k, v)| v.map(|v| user(k, v)))
            .collect();
        let recs: BTreeMap<String, Rec> = KEYS
            .iter()
            .zip(&rs)
            .filter_map(|(k, r)| {
                r.map(|(v, owned, enabled, old)| (k.to_string(), recorded(k, v, owned, enabled, old)))
            })
            .collect();
        let settings = PlanSettings {
            on_missing: [OnMissing::Disable, OnMissing::DisableThenDelete, OnMissing::Delete]
                [missing as usize],
            delete_after: Duration::from_secs(30 * 86400),
            now: now(),
        };
        let recorded: Vec<RecordedAccount> = recs.values().map(|r| r.account.clone()).collect();
        let mut pf = dirsync::plan::Prefilter::new(vec![
            (m.clone(), recorded.clone()),
            (scoped.clone(), recorded.clone()),
        ]);
        let kept: Vec<User> = users.iter().filter(|u| pf.keep(u)).cloned().collect();
        for (mapping, side) in [&m, &scoped].into_iter().zip(&pf.targets) {
            let whole = plan(mapping, &users, &recs, &settings);
            let pre = plan_prefiltered(mapping, &kept, &recorded, &side.settled, &recs, &settings, &[]);
            prop_assert_eq!(whole, pre);
        }
    }

    #[test]
    fn planner_is_safe_and_idempotent((us, rs, missing) in planner_input()) {
        let m = mapping();
        let users: Vec<User> = KEYS
            .iter()
            .zip(&us)
            .filter_map(|(k, v)| v.map(|v| user(k, v)))
            .collect();
        let mut recs: BTreeMap<String, Rec> = KEYS
            .iter()
            .zip(&rs)
            .filter_map(|(k, r)| {
                r.map(|(v, owned, enabled, old)| (k.to_string(), recorded(k, v, owned, enabled, old)))
            })
            .collect();
        let on_missing = [OnMissing::Disable, OnMissing::DisableThenDelete, OnMissing::Delete]
            [missing as usize];
        let settings = PlanSettings {
            on_missing,
            delete_after: Duration::from_secs(30 * 86400),
            now: now(),
        };

        let p = plan(&m, &users, &recs, &settings);
        for op in &p.ops {
            if let Some(r) = recs.get(&op.key) {
                prop_assert!(r.account.owned, "op on an unowned account: {:?}", op);
            }
            if on_missing == OnMissing::Disable {
                prop_assert!(!matches!(op.op, Op::Delete { .. }), "{:?}", op);
            }
            if let Op::Create { account } = &op.op {
                prop_assert!(!recs.contains_key(&op.key), "{:?}", op);
                prop_assert!(account.enabled);
            }
        }
        let unowned_before: Vec<RecordedAccount> = recs
            .values()
            .filter(|r| !r.account.owned)
            .map(|r| r.account.clone())
            .collect();

        apply(&p, &mut recs, &m);
        let again = plan(&m, &users, &recs, &settings);
        prop_assert!(again.ops.is_empty(), "not idempotent: first {:?}\nthen {:?}", p.ops, again.ops);

        let unowned_after: Vec<RecordedAccount> = recs
            .values()
            .filter(|r| !r.account.owned)
            .map(|r| r.account.clone())
            .collect();
        prop_assert_eq!(unowned_before, unowned_after);
    }

    /// Random bad rows: a quarantined key's account never changes (no operation, whatever the
    /// user under it or `on_missing`), and every other key is planned exactly as if the bad
    /// rows and their accounts were not there. The prefiltered read (bad rows never offered to
    /// the prefilter) plans the same.
    #[test]
    fn quarantined_accounts_never_change(
        (us, rs, missing) in planner_input(),
        bad in prop::collection::vec(any::<bool>(), KEYS.len()),
    ) {
        let m = mapping();
        let all: Vec<User> = KEYS
            .iter()
            .zip(&us)
            .filter_map(|(k, v)| v.map(|v| user(k, v)))
            .collect();
        let recs: BTreeMap<String, Rec> = KEYS
            .iter()
            .zip(&rs)
            .filter_map(|(k, r)| {
                r.map(|(v, owned, enabled, old)| (k.to_string(), recorded(k, v, owned, enabled, old)))
            })
            .collect();
        let settings = PlanSettings {
            on_missing: [OnMissing::Disable, OnMissing::DisableThenDelete, OnMissing::Delete]
                [missing as usize],
            delete_after: Duration::from_secs(30 * 86400),
            now: now(),
        };
        let is_bad = |k: &str| KEYS.iter().position(|x| *x == k).is_some_and(|i| bad[i]);
        // The source as the reader hands it over: the bad rows quarantined (a bad row's key may
        // or may not also be a user of the source).
        let quarantine: Vec<Quarantined> = KEYS
            .iter()
            .filter(|k| is_bad(k))
            .map(|k| Quarantined::new(Some(k), format!("hr.csv:{k}"), "email", "invalid email", "x"))
            .collect();
        let snap = Snapshot::new(all.clone()).unwrap().with_quarantined(quarantine);
        prop_assert!(snap.users().iter().all(|u| !is_bad(&u.key)));
        let q = snap.quarantined_keys().to_vec();
        let p = plan_q(&m, snap.users(), &recs, &settings, &q);
        for op in &p.ops {
            prop_assert!(!is_bad(&op.key), "operation on a quarantined key: {:?}", op);
        }
        prop_assert!(p.problems.iter().all(|pr| !is_bad(&pr.key)));
        let owned_bad = recs.values().filter(|r| r.account.owned && is_bad(&r.account.key)).count();
        prop_assert_eq!(p.summary.quarantined, owned_bad as u64);

        // The rest: the plan of the source without the bad rows and their accounts.
        let clean_users: Vec<User> = all.iter().filter(|u| !is_bad(&u.key)).cloned().collect();
        let clean_recs: BTreeMap<String, Rec> =
            recs.iter().filter(|(k, _)| !is_bad(k)).map(|(k, r)| (k.clone(), r.clone())).collect();
        let clean = plan(&m, &clean_users, &clean_recs, &settings);
        prop_assert_eq!(&p.ops, &clean.ops);
        prop_assert_eq!(&p.problems, &clean.problems);
        let mut s = p.summary.clone();
        s.quarantined = 0;
        let unowned_bad = recs.values().filter(|r| !r.account.owned && is_bad(&r.account.key)).count();
        s.not_owned -= unowned_bad as u64;
        prop_assert_eq!(s, clean.summary);

        // Prefiltered: the reader offers only the good rows to the prefilter.
        let recorded: Vec<RecordedAccount> = recs.values().map(|r| r.account.clone()).collect();
        let mut pf = dirsync::plan::Prefilter::new(vec![(m.clone(), recorded.clone())]);
        let kept: Vec<User> = snap.users().iter().filter(|u| pf.keep(u)).cloned().collect();
        let pre = plan_prefiltered(&m, &kept, &recorded, &pf.targets[0].settled, &recs, &settings, &q);
        prop_assert_eq!(pre, p);
    }
}
