//! Million-user scenarios: the release binary against a real Postgres, SQLite and OpenLDAP with
//! generated data, each figure next to a bound measured at the same moment on the same data.
//!
//! ```sh
//! cargo build --release && cargo bench --bench scale                 # everything, 1M users
//! cargo bench --bench scale -- users=100000 reps=1                   # a quick smoke run
//! cargo bench --bench scale -- scenarios=nochange-csv,first-run      # some scenarios only
//! ```
//!
//! Arguments (`key=value` after `--`): `users` (1,000,000), `reps` (3), `scenarios` (a comma
//! list; a scenario runs when its name contains one of the items; default all), `creates`,
//! `disables` and `writeback` (users / 10 each), `concurrency` (64), `latency_ms` (20), `bin`
//! (the dirsync binary, default `target/release/dirsync`: build it first, as
//! `scripts/bench.sh` does), `keep=1` (keep the temp dir with the configs and SQLite state; with
//! `DIRSYNC_TEST_DATABASE_URL` set, the harness uses that Postgres server and the seeded
//! databases outlive the run, e.g. to profile `dirsync plan` on them).
//!
//! Profiling: `DIRSYNC_BENCH_MARKS=1` prints CLOCK_MONOTONIC at the start and end of the timed
//! write-back (to cut a `perf record -k CLOCK_MONOTONIC` profile to it); `DIRSYNC_LOG=dirsync=debug`
//! makes the apply child log the engine's phases with their times.
//!
//! Scenarios, in the order they run:
//!
//! | name | what is timed | bound |
//! | --- | --- | --- |
//! | `nochange-csv-pg-plan`, `-sync` | `dirsync plan` / `sync` (child process), CSV source, Postgres state already in line | csv `ByteRecord` parse + binary `COPY` of `(source_key, hash)` |
//! | `nochange-csv-sqlite-plan`, `-sync` | the same with SQLite state | csv parse + a plain `SELECT source_key, hash` scan (SQLite C API) |
//! | `nochange-ldap-pg-plan`, `-sync` | the same with the LDAP source (slapd, paged, page 500) | `ldapsearch -E pr=500/noprompt` of the same entries + binary `COPY` |
//! | `first-run-plan` | `dirsync plan`, CSV, empty Postgres state (every user a create) | csv parse |
//! | `creates`, `disables` | `benches/common/apply_run.rs` in a child process (fake Covata, 20 ms latency) | concurrency / latency; for disables concurrency × batch / (2 calls × latency). The creates note also gives the same number of creates through the connector alone (no engine, no store) against the same fake: what the fake and the HTTP client allow |
//! | `writeback-pg`, `writeback-sqlite` | `Store::record_outcomes` of N applied updates in batches of `engine::FLUSH_MAX` (the engine writer's largest batch) | one `UPDATE ... FROM` a temp table of the same N account rows; the note adds the outcome rows through a second temp table (the same two writes) |
//!
//! Before a no-change scenario, the state is seeded through the library: the source is read
//! with `run::read_source`, mapped with `run::map_users`, and recorded with
//! `Store::upsert_accounts` as the engine records an applied create (plus a succeeded run row).
//! The first `plan` must then report 0 changes, or the bench stops. A no-change `sync` runs
//! against the fake Covata server, which must receive no request at all.
//!
//! Wall time and peak RSS of a child come from `wait4` (its own `ru_maxrss`). Every rep
//! measures the bound right before the scenario. Ratio = bound time / wall time (= measured
//! throughput / bound throughput): 1.0 is as fast as the bound. Time targets are for 1M users
//! and are scaled linearly for other sizes; MET / MISSED is judged on the median.

#[allow(dead_code)]
#[path = "../tests/it/support/child.rs"]
mod child;
#[allow(dead_code)]
#[path = "../tests/it/support/covata.rs"]
mod covata;
#[allow(dead_code)]
#[path = "../tests/it/support/fake/mod.rs"]
mod fake;
#[path = "../tests/it/support/killable.rs"]
mod killable;
#[allow(dead_code)]
#[path = "../tests/it/support/pg.rs"]
mod pg;
#[allow(dead_code)]
#[path = "../tests/it/support/slapd.rs"]
mod slapd;

#[path = "common/apply_run.rs"]
mod apply_run;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use dirsync::store::{
    AccountChange, AccountRecord, NewOperation, NewRun, OpOutcome, OpStatus, RecordedAccount,
    RunFinish, RunStatus, Trigger,
};
use sqlx::{Connection, PgConnection};

const TARGET: &str = "covata-prod";
const PEOPLE: &str = "ou=people,dc=example,dc=com";
/// What the LDAP source asks for (the source's attribute list for the config below).
const LDAP_ATTRS: [&str; 10] = [
    "entryUUID",
    "mail",
    "givenName",
    "sn",
    "displayName",
    "mobile",
    "telephoneNumber",
    "nsAccountLock",
    "memberOf",
    "departmentNumber",
];
/// The engine's largest outcome batch (`engine::FLUSH_MAX`): what its writer writes at once
/// when the store is the slower side, as in a write-back of many applied operations.
const OUTCOME_BATCH: usize = dirsync::engine::FLUSH_MAX;

// ------------------------------------------------------------------------------------ args

struct Args {
    users: u64,
    reps: usize,
    scenarios: Vec<String>,
    creates: u64,
    disables: u64,
    writeback: u64,
    concurrency: u64,
    latency_ms: u64,
    bin: PathBuf,
    child: Option<String>,
    /// Keep the temp dir (configs, SQLite state, reports) for a look or a profile.
    keep: bool,
}

impl Args {
    fn parse() -> Args {
        let mut kv: HashMap<String, String> = HashMap::new();
        for a in std::env::args().skip(1) {
            // cargo bench passes `--bench`; libtest-style flags are not ours.
            if a.starts_with('-') {
                continue;
            }
            match a.split_once('=') {
                Some((k, v)) => {
                    kv.insert(k.to_string(), v.to_string());
                }
                None => panic!("argument {a:?}: expected key=value"),
            }
        }
        const KNOWN: [&str; 11] = [
            "users",
            "reps",
            "scenarios",
            "creates",
            "disables",
            "writeback",
            "concurrency",
            "latency_ms",
            "bin",
            "child",
            "keep",
        ];
        for k in kv.keys() {
            assert!(
                KNOWN.contains(&k.as_str()),
                "unknown argument {k:?}; known: {}",
                KNOWN.join(", ")
            );
        }
        let num = |k: &str, d: u64| -> u64 {
            kv.get(k).map_or(d, |v| {
                v.replace('_', "")
                    .parse()
                    .unwrap_or_else(|_| panic!("{k}={v}: not a number"))
            })
        };
        let users = num("users", 1_000_000).max(10);
        let tenth = (users / 10).max(1);
        Args {
            users,
            reps: num("reps", 3).max(1) as usize,
            scenarios: kv
                .get("scenarios")
                .map(|s| {
                    s.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            creates: num("creates", tenth),
            disables: num("disables", tenth),
            writeback: num("writeback", tenth).min(users),
            concurrency: num("concurrency", 64),
            latency_ms: num("latency_ms", 20),
            bin: kv.get("bin").map(PathBuf::from).unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/dirsync")
            }),
            child: kv.get("child").cloned(),
            keep: num("keep", 0) != 0,
        }
    }

    fn wants(&self, name: &str) -> bool {
        self.scenarios.is_empty() || self.scenarios.iter().any(|s| name.contains(s.as_str()))
    }

    /// A 1M-user time target scaled to this run's size.
    fn scaled(&self, secs_at_1m: f64) -> f64 {
        secs_at_1m * self.users as f64 / 1_000_000.0
    }
}

// ------------------------------------------------------------------------------------ data

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data")
}

const GIVEN: [(&str, &str); 32] = [
    ("Alice", "alice"),
    ("Bob", "bob"),
    ("Carol", "carol"),
    ("Dave", "dave"),
    ("José", "jose"),
    ("Zoë", "zoe"),
    ("Björn", "bjorn"),
    ("Chloé", "chloe"),
    ("Øyvind", "oyvind"),
    ("Siân", "sian"),
    ("François", "francois"),
    ("Mei", "mei"),
    ("Arjun", "arjun"),
    ("Fatima", "fatima"),
    ("Olga", "olga"),
    ("Liam", "liam"),
    ("Noah", "noah"),
    ("Emma", "emma"),
    ("Sofia", "sofia"),
    ("Mateo", "mateo"),
    ("Hannah", "hannah"),
    ("Yusuf", "yusuf"),
    ("Aiko", "aiko"),
    ("Kwame", "kwame"),
    ("Ingrid", "ingrid"),
    ("Pedro", "pedro"),
    ("Lucía", "lucia"),
    ("Tomasz", "tomasz"),
    ("Nadia", "nadia"),
    ("Oscar", "oscar"),
    ("Priya", "priya"),
    ("Grace", "grace"),
];
const FAMILY: [(&str, &str); 32] = [
    ("Smith", "smith"),
    ("Jones", "jones"),
    ("Wu", "wu"),
    ("Brown", "brown"),
    ("Müller", "muller"),
    ("Núñez", "nunez"),
    ("O'Brien", "obrien"),
    ("García", "garcia"),
    ("Kowalski", "kowalski"),
    ("Nguyen", "nguyen"),
    ("Ivanova", "ivanova"),
    ("Rossi", "rossi"),
    ("Dubois", "dubois"),
    ("Patel", "patel"),
    ("Kim", "kim"),
    ("Andersson", "andersson"),
    ("Van der Berg", "vanderberg"),
    ("Sato", "sato"),
    ("Okafor", "okafor"),
    ("Silva", "silva"),
    ("Jensen", "jensen"),
    ("Hernández", "hernandez"),
    ("Cohen", "cohen"),
    ("Murphy", "murphy"),
    ("Novák", "novak"),
    ("Yilmaz", "yilmaz"),
    ("Schäfer", "schafer"),
    ("Larsen", "larsen"),
    ("Costa", "costa"),
    ("Mensah", "mensah"),
    ("Tanaka", "tanaka"),
    ("Walker", "walker"),
];
const DEPARTMENTS: [&str; 8] = [
    "Engineering",
    "Finance",
    "Sales",
    "Marketing",
    "Research, Development",
    "Operations",
    "Legal",
    "Support",
];

fn mix(mut x: u64) -> u64 {
    // splitmix64
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// One generated person (i from 1), the same in the CSV and the LDIF.
struct Person {
    key: String,
    uid: String,
    given: &'static str,
    family: &'static str,
    middle: Option<&'static str>,
    email: String,
    mobile: Option<String>,
    /// "active", "disabled" or "" (enabled)
    status: &'static str,
    groups: Vec<&'static str>,
    department: &'static str,
}

fn person(i: u64) -> Person {
    let h = mix(i);
    let (given, given_ascii) = GIVEN[(h % 32) as usize];
    let (family, family_ascii) = FAMILY[((h >> 8) % 32) as usize];
    let middle = match (h >> 16) % 10 {
        0 => Some("Marie"),
        1 => Some("J."),
        _ => None,
    };
    let mobile = ((h >> 20) % 10 < 6).then(|| format!("+44 7700 {:06}", i % 1_000_000));
    let status = match (h >> 24) % 100 {
        0 | 1 => "disabled",
        2..=9 => "",
        _ => "active",
    };
    let mut groups = vec!["staff"];
    if (h >> 32).is_multiple_of(1000) {
        groups.push("admins");
    }
    if (h >> 40).is_multiple_of(20) {
        groups.push("project-leads");
    }
    if (h >> 48).is_multiple_of(33) {
        groups.push("contractors");
    }
    Person {
        key: format!("E{i:07}"),
        uid: format!("u{i:07}"),
        given,
        family,
        middle,
        email: format!("{given_ascii}.{family_ascii}.{i}@example.com"),
        mobile,
        status,
        groups,
        department: DEPARTMENTS[((h >> 56) % 8) as usize],
    }
}

/// Writes `path` with `write` unless it exists (through a temp file, so a cut-short run never
/// leaves a half file behind).
fn cached(path: &Path, what: &str, write: impl FnOnce(&mut BufWriter<File>)) {
    if path.exists() {
        return;
    }
    let t = Instant::now();
    fs::create_dir_all(path.parent().expect("parent")).expect("create target/bench-data");
    let tmp = path.with_extension("tmp");
    {
        let mut f = BufWriter::with_capacity(1 << 20, File::create(&tmp).expect("create data"));
        write(&mut f);
        f.flush().expect("write data");
    }
    fs::rename(&tmp, path).expect("rename data");
    println!(
        "generated {what} {} ({:.0} MB) in {:.1} s",
        path.display(),
        fs::metadata(path).map(|m| m.len()).unwrap_or(0) as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
}

fn csv_file(users: u64) -> PathBuf {
    let path = data_dir().join(format!("users-{users}-v1.csv"));
    cached(&path, "CSV", |f| {
        let mut w = csv::Writer::from_writer(f);
        w.write_record([
            "employee_id",
            "email",
            "first_name",
            "last_name",
            "middle_name",
            "mobile",
            "status",
            "groups",
            "department",
        ])
        .expect("csv");
        for i in 1..=users {
            let p = person(i);
            w.write_record([
                p.key.as_str(),
                &p.email,
                p.given,
                p.family,
                p.middle.unwrap_or(""),
                p.mobile.as_deref().unwrap_or(""),
                p.status,
                &p.groups.join(";"),
                p.department,
            ])
            .expect("csv");
        }
        w.flush().expect("csv");
    });
    path
}

fn base64(v: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(v.len().div_ceil(3) * 4);
    for c in v.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(char::from(T[((n >> (18 - 6 * k)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `attr: value`, or `attr:: base64` for values LDIF cannot hold as they are.
fn ldif_line(out: &mut String, attr: &str, value: &str) {
    if value.is_ascii() && !value.starts_with([' ', ':', '<']) {
        let _ = writeln!(out, "{attr}: {value}");
    } else {
        let _ = writeln!(out, "{attr}:: {}", base64(value.as_bytes()));
    }
}

/// The same people as the CSV, as inetOrgPerson entries under ou=people (without the base
/// entries, which the harness adds). Disabled people carry 389-DS's `nsAccountLock: TRUE`;
/// groups are `memberOf` values (slapadd stores them as given).
fn ldif_file(users: u64) -> PathBuf {
    let path = data_dir().join(format!("people-{users}-v1.ldif"));
    cached(&path, "LDIF", |f| {
        let mut e = String::with_capacity(1024);
        for i in 1..=users {
            let p = person(i);
            e.clear();
            let _ = writeln!(e, "dn: uid={},{PEOPLE}", p.uid);
            e.push_str("objectClass: inetOrgPerson\n");
            if p.status == "disabled" {
                e.push_str("objectClass: dirsyncTestAccount\nnsAccountLock: TRUE\n");
            }
            ldif_line(&mut e, "uid", &p.uid);
            ldif_line(&mut e, "cn", &format!("{} {}", p.given, p.family));
            ldif_line(&mut e, "sn", p.family);
            ldif_line(&mut e, "givenName", p.given);
            ldif_line(&mut e, "displayName", &format!("{} {}", p.given, p.family));
            ldif_line(&mut e, "mail", &p.email);
            if let Some(m) = &p.mobile {
                ldif_line(&mut e, "mobile", m);
            }
            ldif_line(&mut e, "employeeNumber", &p.key);
            ldif_line(&mut e, "departmentNumber", p.department);
            for g in &p.groups {
                let _ = writeln!(e, "memberOf: cn={g},ou=groups,dc=example,dc=com");
            }
            e.push('\n');
            f.write_all(e.as_bytes()).expect("write ldif");
        }
    });
    path
}

// ------------------------------------------------------------------------------------ configs

const CSV_SOURCE: &str = r#"
[source]
kind = "csv"

[source.csv]
path = "@CSV@"
delimiter = ","
groups_separator = ";"

[source.csv.columns]
key = "employee_id"
email = "email"
given_name = "first_name"
family_name = "last_name"
other_name = "middle_name"
mobile = "mobile"
enabled = "status"
groups = "groups"

[source.csv.extra]
department = "department"
"#;

const LDAP_SOURCE: &str = r#"
[source]
kind = "ldap"

[source.ldap]
url = "@URL@"
bind_dn = "@BIND_DN@"
bind_password = "@BIND_PW@"
base_dn = "@BASE@"
page_size = 500
operation_timeout = "300s"
disabled_attribute = "nsAccountLock"
disabled_values = ["TRUE"]
groups = "memberof"

[source.ldap.extra]
department = "departmentNumber"
"#;

/// config/example.toml's safety settings and Covata target, pointed at the fake server.
const REST: &str = r#"
[safety]
min_source_users = 1
max_source_drop_percent = 20
max_disable_percent = 10
max_deletes = 50
max_delete_percent = 5
percent_floor = 2

[[target]]
name = "covata-prod"
kind = "covata"
base_url = "@BASE_URL@"
username = "@USERNAME@"
password = "@PASSWORD@"
client_id = "@CLIENT_ID@"
client_secret = "@CLIENT_SECRET@"
on_missing = "disable"
exclude_groups = ["contractors"]
default_roles = ["ROLE_COLLABORATOR"]

[target.fields]
email = "{email}"
firstName = "{given_name}"
lastName = "{family_name}"
otherName = "{other_name}"
mobileNumber = "{mobile}"

[[target.roles]]
group = "admins"
roles = ["ROLE_SYSTEM_ADMIN", "ROLE_USER_ADMIN"]

[[target.roles]]
group = "project-leads"
roles = ["ROLE_ORIGINATOR"]
"#;

enum State<'a> {
    Postgres(&'a str),
    Sqlite(&'a Path),
}

enum Source<'a> {
    Csv(&'a Path),
    Ldap(&'a slapd::Slapd),
}

fn write_config(
    dir: &Path,
    name: &str,
    state: State<'_>,
    source: Source<'_>,
    fake: &covata::FakeCovata,
) -> PathBuf {
    let mut text = String::from("[state]\n");
    match state {
        State::Postgres(url) => {
            let _ = writeln!(text, "database_url = \"{url}\"");
        }
        State::Sqlite(path) => {
            let _ = writeln!(text, "path = \"{}\"", path.display());
        }
    }
    text.push_str(&match source {
        Source::Csv(path) => CSV_SOURCE.replace("@CSV@", &path.display().to_string()),
        Source::Ldap(server) => LDAP_SOURCE
            .replace("@URL@", &server.url())
            .replace("@BIND_DN@", slapd::READER_DN)
            .replace("@BIND_PW@", slapd::READER_PASSWORD)
            .replace("@BASE@", PEOPLE),
    });
    text.push_str(
        &REST
            .replace("@BASE_URL@", &fake.base_url())
            .replace("@USERNAME@", covata::USERNAME)
            .replace("@PASSWORD@", covata::PASSWORD)
            .replace("@CLIENT_ID@", covata::CLIENT_ID)
            .replace("@CLIENT_SECRET@", covata::CLIENT_SECRET),
    );
    let path = dir.join(format!("{name}.toml"));
    fs::write(&path, text).expect("write config");
    // Inline secrets: keep the file private, as dirsync asks.
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod config");
    path
}

// ------------------------------------------------------------------------------------ children

struct Measured {
    wall: f64,
    rss_mb: f64,
    code: i32,
}

/// Waits for `child`: (wall seconds since `started`, its own peak RSS in KB, exit code).
fn reap(child: std::process::Child, started: Instant) -> (f64, i64, i32) {
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; zeroed is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits for our own child, writing into the two locals above.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::Interrupted,
            "wait4 {pid}: {e}"
        );
    }
    let wall = started.elapsed().as_secs_f64();
    // Reaped above: dropping the handle does not wait again.
    drop(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    (wall, usage.ru_maxrss, code)
}

/// `child=spawn RESULT PROGRAM ARGS...`: runs PROGRAM with this process's stdio and writes
/// `wall_seconds max_rss_kb exit_code` to RESULT.
///
/// Why a helper: on exec, Linux folds the high-water RSS of the memory image being replaced
/// into the new program's `ru_maxrss`. A child spawned straight from this bench (vfork or
/// fork) would be charged the bench's own peak (the seeded snapshots); spawned from this small
/// fresh process it is charged a few MB at most, below any dirsync run's own peak.
fn spawn_helper(argv: &[std::ffi::OsString]) {
    let [result, program, args @ ..] = argv else {
        panic!("child=spawn RESULT PROGRAM ARGS...");
    };
    let started = Instant::now();
    let child = Command::new(program)
        .args(args)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program:?}: {e}"));
    let (wall, rss_kb, code) = reap(child, started);
    fs::write(result, format!("{wall} {rss_kb} {code}\n")).expect("write result");
}

/// Runs `cmd` (program, arguments, environment changes) to its end through [`spawn_helper`],
/// with the given stdout and stderr: wall time from spawn to reaping, peak RSS of that child.
fn measure(cmd: &Command, stdout: Stdio, stderr: Stdio) -> Measured {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let result = std::env::temp_dir().join(format!(
        "dirsync-scale-{}-{}.rusage",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut helper = Command::new(std::env::current_exe().expect("current exe"));
    helper
        .arg("child=spawn")
        .arg(&result)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => helper.env(k, v),
            None => helper.env_remove(k),
        };
    }
    let status = helper
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .status()
        .expect("run the spawn helper");
    let text = fs::read_to_string(&result)
        .unwrap_or_else(|e| panic!("spawn helper ({status}) left no result for {cmd:?}: {e}"));
    let _ = fs::remove_file(&result);
    let f: Vec<&str> = text.split_whitespace().collect();
    Measured {
        wall: f[0].parse().expect("wall"),
        rss_mb: f[1].parse::<f64>().expect("rss") / 1024.0,
        code: f[2].parse().expect("code"),
    }
}

/// The counts of the report's summary line (`N create, N update, ...; N unchanged, ...`).
fn summary_counts(report: &Path) -> HashMap<String, u64> {
    let mut head = vec![0u8; 64 * 1024];
    let n = File::open(report)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let head = String::from_utf8_lossy(&head[..n]);
    let line = head
        .lines()
        .find(|l| {
            l.starts_with("  ")
                && (l.contains(" create, ") || l.contains(" creates, "))
                && l.contains(" unchanged")
        })
        .unwrap_or_else(|| panic!("no summary line in the report:\n{head}"));
    // The report says "1 create" but "0 creates": keys are the singular words.
    line.split([',', ';'])
        .filter_map(|part| {
            let (n, what) = part.trim().split_once(' ')?;
            let what = match what {
                "creates" | "updates" | "role changes" | "group changes" | "enables"
                | "disables" | "deletes" => &what[..what.len() - 1],
                w => w,
            };
            Some((what.to_string(), n.parse().ok()?))
        })
        .collect()
}

fn changes(c: &HashMap<String, u64>) -> u64 {
    [
        "create",
        "update",
        "role change",
        "group change",
        "enable",
        "disable",
        "delete",
    ]
    .iter()
    .map(|k| c.get(*k).copied().unwrap_or(0))
    .sum()
}

fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(4000);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    text[start..].to_string()
}

// ------------------------------------------------------------------------------------ bounds

/// Parses the CSV with the csv crate's `ByteRecord` (no UTF-8 check, no users built).
fn csv_bound(path: &Path, users: u64) -> f64 {
    let t = Instant::now();
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .expect("open csv");
    let mut rec = csv::ByteRecord::new();
    let mut n = 0u64;
    while r.read_byte_record(&mut rec).expect("csv record") {
        n += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(n, users, "csv rows");
    secs
}

/// Connects and reads every `(source_key, hash)` of the target with binary `COPY`, in key
/// order, into owned strings.
async fn pg_copy_bound(url: &str, expected: usize) -> f64 {
    use futures::TryStreamExt;
    let t = Instant::now();
    let mut conn = PgConnection::connect(url).await.expect("connect");
    let mut bytes: Vec<u8> = Vec::new();
    {
        let mut stream = conn
            .copy_out_raw(&format!(
                "COPY (SELECT source_key, hash FROM accounts WHERE target = '{TARGET}' \
                 ORDER BY source_key COLLATE \"C\") TO STDOUT (FORMAT binary)"
            ))
            .await
            .expect("copy out");
        while let Some(chunk) = stream.try_next().await.expect("copy chunk") {
            bytes.extend_from_slice(&chunk);
        }
    }
    let rows = parse_binary_copy(&bytes);
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(rows.len(), expected, "rows read by COPY");
    let _ = conn.close().await;
    secs
}

fn parse_binary_copy(b: &[u8]) -> Vec<(String, String)> {
    assert!(b.starts_with(b"PGCOPY\n\xff\r\n\0"), "binary COPY header");
    let be32 = |p: usize| i32::from_be_bytes([b[p], b[p + 1], b[p + 2], b[p + 3]]);
    let ext = be32(15) as usize;
    let mut p = 19 + ext;
    let mut out = Vec::new();
    loop {
        let fields = i16::from_be_bytes([b[p], b[p + 1]]);
        p += 2;
        if fields == -1 {
            break;
        }
        let mut next = || {
            let len = be32(p) as usize;
            p += 4;
            let s = std::str::from_utf8(&b[p..p + len])
                .expect("utf-8")
                .to_string();
            p += len;
            s
        };
        let key = next();
        let hash = next();
        out.push((key, hash));
    }
    out
}

/// SQLite through its C API (the library sqlx links), for bounds without a driver's overhead.
mod sqlite_c {
    use libsqlite3_sys as ffi;
    use std::ffi::{CStr, CString, c_int};
    use std::path::Path;

    pub struct Db(*mut ffi::sqlite3);
    pub struct Stmt<'a>(*mut ffi::sqlite3_stmt, &'a Db);

    impl Db {
        pub fn open(path: &Path) -> Db {
            let name = CString::new(path.to_str().expect("utf-8 path")).expect("path");
            let mut db = std::ptr::null_mut();
            // SAFETY: valid C string and out-pointer; the handle is closed in Drop.
            let rc = unsafe {
                ffi::sqlite3_open_v2(
                    name.as_ptr(),
                    &mut db,
                    ffi::SQLITE_OPEN_READWRITE,
                    std::ptr::null(),
                )
            };
            let db = Db(db);
            db.check(rc, "open");
            // SAFETY: a valid handle.
            unsafe { ffi::sqlite3_busy_timeout(db.0, 5000) };
            db
        }

        fn check(&self, rc: c_int, what: &str) {
            if rc != ffi::SQLITE_OK && rc != ffi::SQLITE_ROW && rc != ffi::SQLITE_DONE {
                // SAFETY: errmsg returns a C string owned by the handle.
                let msg = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(self.0)) };
                panic!("sqlite {what}: {rc}: {}", msg.to_string_lossy());
            }
        }

        pub fn exec(&self, sql: &str) {
            let sql = CString::new(sql).expect("sql");
            // SAFETY: valid handle and C string; no callback.
            let rc = unsafe {
                ffi::sqlite3_exec(
                    self.0,
                    sql.as_ptr(),
                    None,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
            self.check(rc, "exec");
        }

        pub fn prepare(&self, sql: &str) -> Stmt<'_> {
            let sql = CString::new(sql).expect("sql");
            let mut stmt = std::ptr::null_mut();
            // SAFETY: valid handle, C string and out-pointer; finalized in Drop.
            let rc = unsafe {
                ffi::sqlite3_prepare_v2(self.0, sql.as_ptr(), -1, &mut stmt, std::ptr::null_mut())
            };
            self.check(rc, "prepare");
            Stmt(stmt, self)
        }
    }

    impl Drop for Db {
        fn drop(&mut self) {
            // SAFETY: every statement borrows the Db, so all are finalized by now.
            unsafe { ffi::sqlite3_close(self.0) };
        }
    }

    impl Stmt<'_> {
        pub fn bind_text(&mut self, i: c_int, v: Option<&str>) {
            // SAFETY: valid statement; SQLITE_TRANSIENT makes SQLite copy the bytes.
            let rc = unsafe {
                match v {
                    Some(v) => ffi::sqlite3_bind_text(
                        self.0,
                        i,
                        v.as_ptr().cast(),
                        v.len() as c_int,
                        ffi::SQLITE_TRANSIENT(),
                    ),
                    None => ffi::sqlite3_bind_null(self.0, i),
                }
            };
            self.1.check(rc, "bind");
        }

        pub fn bind_int(&mut self, i: c_int, v: i64) {
            // SAFETY: valid statement.
            let rc = unsafe { ffi::sqlite3_bind_int64(self.0, i, v) };
            self.1.check(rc, "bind");
        }

        /// Steps; true while there is a row.
        pub fn step(&mut self) -> bool {
            // SAFETY: valid statement.
            let rc = unsafe { ffi::sqlite3_step(self.0) };
            self.1.check(rc, "step");
            rc == ffi::SQLITE_ROW
        }

        pub fn reset(&mut self) {
            // SAFETY: valid statement.
            unsafe { ffi::sqlite3_reset(self.0) };
        }

        pub fn text(&self, col: c_int) -> String {
            // SAFETY: valid statement positioned on a row; the pointer is valid for `len`
            // bytes until the next step.
            unsafe {
                let p = ffi::sqlite3_column_text(self.0, col);
                let len = ffi::sqlite3_column_bytes(self.0, col) as usize;
                if p.is_null() {
                    return String::new();
                }
                let bytes = std::slice::from_raw_parts(p, len);
                std::str::from_utf8(bytes).expect("utf-8").to_string()
            }
        }
    }

    impl Drop for Stmt<'_> {
        fn drop(&mut self) {
            // SAFETY: valid statement, finalized once.
            unsafe { ffi::sqlite3_finalize(self.0) };
        }
    }
}

/// Opens the file and reads every `(source_key, hash)` of the target in key order.
fn sqlite_scan_bound(path: &Path, expected: usize) -> f64 {
    let t = Instant::now();
    let db = sqlite_c::Db::open(path);
    let mut st =
        db.prepare("SELECT source_key, hash FROM accounts WHERE target = ?1 ORDER BY source_key");
    st.bind_text(1, Some(TARGET));
    let mut rows: Vec<(String, String)> = Vec::new();
    while st.step() {
        rows.push((st.text(0), st.text(1)));
    }
    drop(st);
    drop(db);
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(rows.len(), expected, "rows scanned");
    secs
}

/// `ldapsearch` of the same entries and attributes, paged like dirsync, to /dev/null.
fn ldapsearch_bound(server: &slapd::Slapd) -> f64 {
    let mut cmd = Command::new("ldapsearch");
    cmd.args(["-x", "-LLL", "-H", &server.url()])
        .args(["-D", slapd::READER_DN, "-w", slapd::READER_PASSWORD])
        .args(["-b", PEOPLE, "-s", "sub", "-E", "pr=500/noprompt"])
        .arg("(objectClass=inetOrgPerson)")
        .args(LDAP_ATTRS);
    let m = measure(&cmd, Stdio::null(), Stdio::null());
    assert_eq!(m.code, 0, "ldapsearch failed");
    m.wall
}

fn copy_text(out: &mut String, v: Option<&str>) {
    match v {
        None => out.push_str("\\N"),
        Some(v) => {
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
        }
    }
}

/// The columns dirsync's upsert writes, as text.
fn row_columns(r: &AccountRecord) -> [Option<String>; 7] {
    [
        Some(r.account.key.clone()),
        r.account.remote_id.clone(),
        r.account.login.clone(),
        Some(serde_json::to_string(&r.state.fields).expect("json")),
        Some(dirsync::store::memberships_json(&r.state)),
        Some(r.account.hash.to_string()),
        Some(if r.account.enabled { "t" } else { "f" }.to_string()),
    ]
}

/// Updates the given rows through a temp table: `COPY` in, one `UPDATE ... FROM`, one
/// transaction (connection opened outside the timing, as dirsync's pool is).
async fn pg_writeback_bound(url: &str, rows: &[AccountRecord], run_id: i64) -> f64 {
    let mut conn = PgConnection::connect(url).await.expect("connect");
    let t = Instant::now();
    let mut tx = conn.begin().await.expect("begin");
    sqlx::raw_sql(
        "CREATE TEMP TABLE wb (source_key text COLLATE \"C\", remote_id text, login text, \
         attributes jsonb, roles jsonb, hash text, enabled bool) ON COMMIT DROP",
    )
    .execute(&mut *tx)
    .await
    .expect("temp table");
    let mut text = String::with_capacity(rows.len() * 256);
    for r in rows {
        for (i, c) in row_columns(r).iter().enumerate() {
            if i > 0 {
                text.push('\t');
            }
            copy_text(&mut text, c.as_deref());
        }
        text.push('\n');
    }
    let mut copy = tx.copy_in_raw("COPY wb FROM STDIN").await.expect("copy in");
    copy.send(text.into_bytes()).await.expect("copy send");
    let n = copy.finish().await.expect("copy finish");
    assert_eq!(n as usize, rows.len());
    sqlx::raw_sql("ANALYZE wb")
        .execute(&mut *tx)
        .await
        .expect("analyze");
    let done = sqlx::query(
        "UPDATE accounts AS a SET remote_id = wb.remote_id, login = wb.login, \
         attributes = wb.attributes, roles = wb.roles, hash = wb.hash, enabled = wb.enabled, \
         last_seen_run = $2, updated_at = now() \
         FROM wb WHERE a.target = $1 AND a.source_key = wb.source_key",
    )
    .bind(TARGET)
    .bind(run_id)
    .execute(&mut *tx)
    .await
    .expect("update from");
    assert_eq!(done.rows_affected() as usize, rows.len());
    tx.commit().await.expect("commit");
    let secs = t.elapsed().as_secs_f64();
    let _ = conn.close().await;
    secs
}

/// The outcome half of the same write-back through a temp table (`COPY` in, one `UPDATE ...
/// FROM`, one transaction): the operations rows `record_outcomes` updates along with the
/// accounts. The status goes from `succeeded` to `failed`, so that the `(target, status)` index
/// changes as it does for the engine (an unchanged status could make the update HOT).
async fn pg_outcomes_bound(url: &str, ids: &[i64], remote_ids: &[Option<String>]) -> f64 {
    let mut conn = PgConnection::connect(url).await.expect("connect");
    let t = Instant::now();
    let mut tx = conn.begin().await.expect("begin");
    sqlx::raw_sql(
        "CREATE TEMP TABLE wo (id int8, status text, error text, remote_id text) ON COMMIT DROP",
    )
    .execute(&mut *tx)
    .await
    .expect("temp table");
    let mut text = String::with_capacity(ids.len() * 48);
    for (id, rid) in ids.iter().zip(remote_ids) {
        let _ = write!(text, "{id}\tfailed\tbound\t");
        copy_text(&mut text, rid.as_deref());
        text.push('\n');
    }
    let mut copy = tx.copy_in_raw("COPY wo FROM STDIN").await.expect("copy in");
    copy.send(text.into_bytes()).await.expect("copy send");
    let n = copy.finish().await.expect("copy finish");
    assert_eq!(n as usize, ids.len());
    sqlx::raw_sql("ANALYZE wo")
        .execute(&mut *tx)
        .await
        .expect("analyze");
    let done = sqlx::query(
        "UPDATE operations AS o SET status = wo.status, last_error = wo.error, \
         remote_id = COALESCE(wo.remote_id, o.remote_id), updated_at = now() \
         FROM wo WHERE o.id = wo.id",
    )
    .execute(&mut *tx)
    .await
    .expect("update from");
    assert_eq!(done.rows_affected() as usize, ids.len());
    tx.commit().await.expect("commit");
    let secs = t.elapsed().as_secs_f64();
    let _ = conn.close().await;
    secs
}

/// The outcome half on SQLite through the C API (see [`pg_outcomes_bound`]).
fn sqlite_outcomes_bound(path: &Path, ids: &[i64], remote_ids: &[Option<String>]) -> f64 {
    let db = sqlite_c::Db::open(path);
    let t = Instant::now();
    db.exec("BEGIN IMMEDIATE");
    db.exec(
        "CREATE TEMP TABLE wo (id INTEGER PRIMARY KEY, status TEXT, error TEXT, remote_id TEXT)",
    );
    {
        let mut ins = db.prepare("INSERT INTO wo VALUES (?1, ?2, ?3, ?4)");
        for (id, rid) in ids.iter().zip(remote_ids) {
            ins.bind_int(1, *id);
            ins.bind_text(2, Some("failed"));
            ins.bind_text(3, Some("bound"));
            ins.bind_text(4, rid.as_deref());
            ins.step();
            ins.reset();
        }
    }
    {
        let mut up = db.prepare(
            "UPDATE operations SET status = wo.status, last_error = wo.error, \
             remote_id = COALESCE(wo.remote_id, operations.remote_id), \
             updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
             FROM wo WHERE operations.id = wo.id",
        );
        up.step();
    }
    db.exec("COMMIT");
    let secs = t.elapsed().as_secs_f64();
    db.exec("DROP TABLE wo");
    secs
}

/// The same on SQLite through the C API: prepared inserts into a temp table, one
/// `UPDATE ... FROM`, one transaction.
fn sqlite_writeback_bound(path: &Path, rows: &[AccountRecord], run_id: i64) -> f64 {
    let db = sqlite_c::Db::open(path);
    let t = Instant::now();
    db.exec("BEGIN IMMEDIATE");
    db.exec(
        "CREATE TEMP TABLE wb (source_key TEXT PRIMARY KEY, remote_id TEXT, login TEXT, \
         attributes TEXT, roles TEXT, hash TEXT, enabled INTEGER) WITHOUT ROWID",
    );
    {
        let mut ins = db.prepare("INSERT INTO wb VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
        for r in rows {
            let cols = row_columns(r);
            for (i, c) in cols.iter().enumerate().take(6) {
                ins.bind_text(i as i32 + 1, c.as_deref());
            }
            ins.bind_int(7, i64::from(r.account.enabled));
            ins.step();
            ins.reset();
        }
    }
    {
        let mut up = db.prepare(
            "UPDATE accounts SET remote_id = wb.remote_id, login = wb.login, \
             attributes = wb.attributes, roles = wb.roles, hash = wb.hash, \
             enabled = wb.enabled, last_seen_run = ?2, \
             updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
             FROM wb WHERE accounts.target = ?1 AND accounts.source_key = wb.source_key",
        );
        up.bind_text(1, Some(TARGET));
        up.bind_int(2, run_id);
        up.step();
    }
    db.exec("COMMIT");
    let secs = t.elapsed().as_secs_f64();
    db.exec("DROP TABLE wb");
    secs
}

// ------------------------------------------------------------------------------------ seeding

/// Records the state a completed first sync would leave: every mapped account of the source,
/// as the engine records an applied create, and a succeeded run with the source's size.
/// Returns the number of account rows.
async fn seed(config_path: &Path) -> usize {
    let t = Instant::now();
    let config = dirsync::config::load_with_env(config_path, &[]).expect("config");
    let store = dirsync::store::open(&config.state.location, true)
        .await
        .expect("store");
    let target = &config.targets[0];
    let snapshot = dirsync::run::read_source(&config.source)
        .await
        .expect("read source");
    let (accounts, invalid) = dirsync::run::map_users(target, &snapshot);
    assert!(invalid.is_empty(), "unmappable users: {:?}", &invalid[..1]);
    let now = chrono::Utc::now();
    let run_id = store
        .begin_run(&NewRun {
            trigger: Trigger::Manual,
            started_at: now,
            targets: vec![target.name.clone()],
            forced: false,
        })
        .await
        .expect("begin run");
    let login_field = &target.mapping.login_field;
    for chunk in accounts.chunks(50_000) {
        let rows: Vec<AccountRecord> = chunk
            .iter()
            .map(|a| AccountRecord {
                account: RecordedAccount {
                    key: a.key.clone(),
                    remote_id: Some(format!("{:016x}", mix(fxhash(&a.key)))),
                    login: a.fields.get(login_field).cloned(),
                    hash: a.hash,
                    enabled: a.enabled,
                    owned: true,
                    adopted: false,
                    disabled_at: (!a.enabled).then_some(now),
                },
                state: dirsync::store::AccountState {
                    fields: a.fields.clone(),
                    roles: a.roles.clone(),
                    groups: a.groups.clone(),
                },
                last_seen_run: Some(run_id),
            })
            .collect();
        store
            .upsert_accounts(&target.name, &rows)
            .await
            .expect("upsert accounts");
    }
    store
        .finish_run(
            run_id,
            &RunFinish {
                status: RunStatus::Succeeded,
                finished_at: chrono::Utc::now(),
                source_count: Some(snapshot.len() as u64),
                planned: accounts.len() as u64,
                applied: accounts.len() as u64,
                failed: 0,
                error: None,
                summary: serde_json::json!({"targets": []}),
            },
        )
        .await
        .expect("finish run");
    println!(
        "seeded {} accounts ({} source users) through the Store trait in {:.1} s",
        accounts.len(),
        snapshot.len(),
        t.elapsed().as_secs_f64()
    );
    accounts.len()
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

// ------------------------------------------------------------------------------------ results

struct Row {
    name: String,
    /// Median and best wall time (s), or throughput scenarios' own time.
    wall: (f64, f64),
    throughput: String,
    rss_mb: Option<f64>,
    bound: String,
    ratio: f64,
    target: String,
    met: bool,
    note: String,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The median of each part over the reps.
fn median_parts<'a>(reps: &[Vec<(&'a str, f64)>]) -> Vec<(&'a str, f64)> {
    (0..reps[0].len())
        .map(|i| {
            let v: Vec<f64> = reps.iter().map(|r| r[i].1).collect();
            (reps[0][i].0, median(&v))
        })
        .collect()
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn rate(n: f64, secs: f64) -> String {
    let r = n / secs;
    if r >= 10_000.0 {
        format!("{:.0}k", r / 1000.0)
    } else {
        format!("{r:.0}")
    }
}

impl Row {
    fn print(&self) {
        println!(
            "RESULT {:<26} wall {:>6.2} s (best {:.2}) | {:>14} | RSS {:>8} | bound {:<38} | ratio {:>5.2} | target {:<24} | {}{}",
            self.name,
            self.wall.0,
            self.wall.1,
            self.throughput,
            self.rss_mb.map_or("—".into(), |r| format!("{r:.0} MB")),
            self.bound,
            self.ratio,
            self.target,
            if self.met { "MET" } else { "MISSED" },
            if self.note.is_empty() {
                String::new()
            } else {
                format!("  ({})", self.note)
            }
        );
    }
}

// ------------------------------------------------------------------------------------ scenarios

struct Ctx {
    args: Args,
    dir: tempfile::TempDir,
    fake: covata::FakeCovata,
    csv: PathBuf,
    rows: Vec<Row>,
}

/// Which store a CLI scenario uses, and how to measure its state-read bound.
enum Bound<'a> {
    CsvPg {
        url: &'a str,
        accounts: usize,
    },
    CsvSqlite {
        path: &'a Path,
        accounts: usize,
    },
    LdapPg {
        server: &'a slapd::Slapd,
        url: &'a str,
        accounts: usize,
    },
    CsvOnly,
}

impl Bound<'_> {
    /// The seconds of each part of the bound.
    async fn measure(&self, csv: &Path, users: u64) -> Vec<(&'static str, f64)> {
        match self {
            Bound::CsvPg { url, accounts } => vec![
                ("csv", csv_bound(csv, users)),
                ("pg COPY", pg_copy_bound(url, *accounts).await),
            ],
            Bound::CsvSqlite { path, accounts } => vec![
                ("csv", csv_bound(csv, users)),
                ("sqlite scan", sqlite_scan_bound(path, *accounts)),
            ],
            Bound::LdapPg {
                server,
                url,
                accounts,
            } => vec![
                ("ldapsearch", ldapsearch_bound(server)),
                ("pg COPY", pg_copy_bound(url, *accounts).await),
            ],
            Bound::CsvOnly => vec![("csv", csv_bound(csv, users))],
        }
    }
}

/// `a 0.12 + b 0.45`
fn show_parts(parts: &[(&str, f64)]) -> String {
    parts
        .iter()
        .map(|(n, s)| format!("{n} {s:.2}"))
        .collect::<Vec<_>>()
        .join(" + ")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// 0 changes, exit 0.
    NoChange,
    /// Only creates, exit 2.
    Creates,
}

impl Ctx {
    /// Runs `dirsync <command> --config <config>` `reps` times (each after measuring the
    /// bound), checks each report, and records the row.
    #[allow(clippy::too_many_arguments)]
    async fn cli(
        &mut self,
        name: &str,
        command: &str,
        config: &Path,
        bound: Bound<'_>,
        expect: Expect,
        target_secs: f64,
        rss_target_mb: Option<f64>,
    ) {
        let target_secs = self.args.scaled(target_secs);
        let mut walls = Vec::new();
        let mut rss = Vec::new();
        let mut bounds = Vec::new();
        let mut parts: Vec<Vec<(&str, f64)>> = Vec::new();
        let mut note = String::new();
        for rep in 0..self.args.reps {
            let p = bound.measure(&self.csv, self.args.users).await;
            let b: f64 = p.iter().map(|(_, s)| s).sum();
            bounds.push(b);
            let out = self.dir.path().join(format!("{name}-{rep}.out"));
            let err = self.dir.path().join(format!("{name}-{rep}.err"));
            let mut cmd = Command::new(&self.args.bin);
            cmd.arg("--config")
                .arg(config)
                .arg(command)
                .env_remove("DIRSYNC_LOG");
            let m = measure(
                &cmd,
                File::create(&out).expect("stdout file").into(),
                File::create(&err).expect("stderr file").into(),
            );
            let counts = summary_counts(&out);
            let ok = match expect {
                Expect::NoChange => m.code == 0 && changes(&counts) == 0,
                Expect::Creates => {
                    m.code == 2
                        && counts.get("create").copied().unwrap_or(0) > 0
                        && changes(&counts) == counts["create"]
                }
            };
            if !ok {
                let head: String = fs::read_to_string(&out)
                    .unwrap_or_default()
                    .lines()
                    .take(20)
                    .collect::<Vec<_>>()
                    .join("\n");
                panic!(
                    "{name}: unexpected result (exit {}), summary {counts:?}\n--- stdout (head)\n{head}\n--- stderr (tail)\n{}",
                    m.code,
                    tail(&err)
                );
            }
            println!(
                "  {name} rep {}: {:.2} s, {:.0} MB, exit {}; bound {b:.2} s ({}); {} create, {} unchanged, {} skipped",
                rep + 1,
                m.wall,
                m.rss_mb,
                m.code,
                show_parts(&p),
                counts.get("create").copied().unwrap_or(0),
                counts.get("unchanged").copied().unwrap_or(0),
                counts.get("skipped").copied().unwrap_or(0),
            );
            if expect == Expect::Creates {
                note = format!("{} creates", counts["create"]);
            }
            walls.push(m.wall);
            rss.push(m.rss_mb);
            parts.push(p);
            let _ = fs::remove_file(&out);
        }
        if command == "sync" {
            let requests = self.fake.requests();
            assert!(
                requests.is_empty() && self.fake.token_grants() == (0, 0),
                "{name}: a no-change sync sent {} request(s) to the target: {:?}",
                requests.len(),
                requests.first()
            );
            note = "0 requests to the target".into();
        }
        let wall = median(&walls);
        let peak = rss.iter().copied().fold(0.0, f64::max);
        let bound_med = median(&bounds);
        let met = wall <= target_secs && rss_target_mb.is_none_or(|t| peak <= t);
        let target = match rss_target_mb {
            Some(r) => format!("≤ {target_secs:.2} s, ≤ {r:.0} MB"),
            None => format!("≤ {target_secs:.2} s"),
        };
        let row = Row {
            name: name.into(),
            wall: (wall, best(&walls)),
            throughput: format!("{} users/s", rate(self.args.users as f64, wall)),
            rss_mb: Some(peak),
            bound: format!("{bound_med:.2} s ({})", show_parts(&median_parts(&parts))),
            ratio: bound_med / wall,
            target,
            met,
            note,
        };
        row.print();
        self.rows.push(row);
    }
}

async fn apply_scenarios(ctx: &mut Ctx) {
    let a = &ctx.args;
    let p = apply_run::ApplyParams {
        creates: a.creates,
        concurrency: a.concurrency,
        latency_ms: a.latency_ms,
        disables: a.disables.min(a.creates),
        connector_creates: a.creates,
    };
    let mut results = Vec::new();
    for rep in 0..a.reps {
        let out = ctx.dir.path().join(format!("apply-{rep}.out"));
        let err = ctx.dir.path().join(format!("apply-{rep}.err"));
        let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
        cmd.arg("child=apply")
            .arg(format!("creates={}", p.creates))
            .arg(format!("concurrency={}", p.concurrency))
            .arg(format!("latency_ms={}", p.latency_ms))
            .arg(format!("disables={}", p.disables));
        let m = measure(
            &cmd,
            File::create(&out).expect("stdout").into(),
            File::create(&err).expect("stderr").into(),
        );
        let text = fs::read_to_string(&out).unwrap_or_default();
        let r: apply_run::ApplyResult = text
            .lines()
            .find_map(|l| l.strip_prefix("APPLY_RESULT "))
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_else(|| {
                panic!(
                    "apply child failed (exit {}):\n{text}\n{}",
                    m.code,
                    tail(&err)
                )
            });
        assert!(
            r.creates_applied == p.creates
                && r.disables_applied == p.disables
                && r.connector_created == p.creates,
            "apply: {r:?}"
        );
        println!(
            "  apply rep {}: creates {:.2} s ({:.0} ops/s), disables {:.3} s ({:.0} ids/s, {} expire + {} disable calls); connector alone {:.2} s ({:.0} ops/s); child peak RSS {:.0} MB",
            rep + 1,
            r.creates_secs,
            r.creates_applied as f64 / r.creates_secs,
            r.disables_secs,
            r.disables_applied as f64 / r.disables_secs,
            r.expire_calls,
            r.disable_calls,
            r.connector_secs,
            r.connector_created as f64 / r.connector_secs,
            m.rss_mb
        );
        results.push((r, m.rss_mb));
    }
    let cs: Vec<f64> = results.iter().map(|(r, _)| r.creates_secs).collect();
    let ds: Vec<f64> = results.iter().map(|(r, _)| r.disables_secs).collect();
    let rss = results.iter().map(|(_, m)| *m).fold(0.0, f64::max);
    let alone: Vec<f64> = results.iter().map(|(r, _)| r.connector_secs).collect();
    let creates_bound = p.concurrency as f64 / (p.latency_ms as f64 / 1000.0);
    let creates_rate = p.creates as f64 / median(&cs);
    let alone_rate = p.creates as f64 / median(&alone);
    let row = Row {
        name: "creates".into(),
        wall: (median(&cs), best(&cs)),
        throughput: format!("{creates_rate:.0} ops/s"),
        rss_mb: Some(rss),
        bound: format!(
            "{creates_bound:.0} ops/s ({} / {} ms)",
            p.concurrency, p.latency_ms
        ),
        ratio: creates_rate / creates_bound,
        target: "≥ 0.90 of the bound".into(),
        met: creates_rate / creates_bound >= 0.90,
        note: format!(
            "{} creates, 0 failed; the connector alone against the same fake: {alone_rate:.0} \
             ops/s = {:.2} of the bound; the engine makes {:.2} of that",
            p.creates,
            alone_rate / creates_bound,
            creates_rate / alone_rate
        ),
    };
    row.print();
    ctx.rows.push(row);
    // Each batch of 500 is an `expire` call and a `disable` call (expire_sessions_on_disable).
    let disables_bound = p.concurrency as f64 * 500.0 / (2.0 * p.latency_ms as f64 / 1000.0);
    let disables_rate = p.disables as f64 / median(&ds);
    let row = Row {
        name: "disables".into(),
        wall: (median(&ds), best(&ds)),
        throughput: format!("{} ids/s", rate(p.disables as f64, median(&ds))),
        rss_mb: Some(rss),
        bound: format!(
            "{}k ids/s ({} × 500 / 2 × {} ms)",
            disables_bound / 1000.0,
            p.concurrency,
            p.latency_ms
        ),
        ratio: disables_rate / disables_bound,
        target: "≥ 50k ids/s".into(),
        met: disables_rate >= 50_000.0,
        note: format!("{} disables in batches of 500, 0 failed", p.disables),
    };
    row.print();
    ctx.rows.push(row);
}

/// Where write-back goes: the store and its bound.
enum WbStore<'a> {
    Pg(&'a str),
    Sqlite(&'a Path),
}

/// Records `n` applied updates through `Store::record_outcomes` in the engine's batches, then
/// updates the same rows through a temp table (the bound); `reps` times.
async fn writeback(ctx: &mut Ctx, name: &str, config: &Path, wb: WbStore<'_>) {
    let n = ctx.args.writeback as usize;
    let config = dirsync::config::load_with_env(config, &[]).expect("config");
    let target = config.targets[0].clone();
    let store = dirsync::store::open(&config.state.location, true)
        .await
        .expect("store");
    let keys: Vec<String> = store
        .load_accounts(TARGET)
        .await
        .expect("load accounts")
        .into_iter()
        .filter(|a| a.enabled)
        .take(n)
        .map(|a| a.key)
        .collect();
    assert_eq!(keys.len(), n, "enough enabled accounts for write-back");
    let base = store
        .load_account_records(TARGET, &keys)
        .await
        .expect("load records");
    let mut times = Vec::new();
    let mut bounds = Vec::new();
    let mut outcome_bounds = Vec::new();
    let mut note = String::new();
    for rep in 0..ctx.args.reps {
        let now = chrono::Utc::now();
        let run_id = store
            .begin_run(&NewRun {
                trigger: Trigger::Manual,
                started_at: now,
                targets: vec![target.name.clone()],
                forced: false,
            })
            .await
            .expect("run");
        // An update per account: otherName changes (and so does the hash).
        let updated: Vec<AccountRecord> = base
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.state
                    .fields
                    .insert("otherName".into(), format!("wb{rep}"));
                r.account.hash = dirsync::mapping::content_hash(
                    &target.mapping,
                    &r.state.fields,
                    &r.state.roles,
                    &r.state.groups,
                );
                r.last_seen_run = Some(run_id);
                r
            })
            .collect();
        let ops: Vec<NewOperation> = updated
            .iter()
            .map(|r| NewOperation {
                source_key: r.account.key.clone(),
                kind: "update".into(),
                payload: serde_json::value::to_raw_value(
                    &serde_json::json!({"changes": [{"field": "otherName", "after": format!("wb{rep}")}]}),
                )
                .expect("json"),
            })
            .collect();
        let t = Instant::now();
        let ids = store
            .journal(run_id, &target.name, &ops)
            .await
            .expect("journal");
        let journal_secs = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for c in ids.chunks(ctx.args.concurrency.max(16) as usize * 4) {
            store.mark_sent(c).await.expect("mark sent");
        }
        let mark_secs = t.elapsed().as_secs_f64();
        // The engine's batches, built before the clock starts (the engine's workers hand them
        // to the writer ready-made).
        let batches: Vec<(Vec<OpOutcome>, Vec<AccountChange>)> = updated
            .chunks(OUTCOME_BATCH)
            .zip(ids.chunks(OUTCOME_BATCH))
            .map(|(rows, ids)| {
                let outcomes = rows
                    .iter()
                    .zip(ids)
                    .map(|(r, &id)| OpOutcome {
                        id,
                        status: OpStatus::Succeeded,
                        error: None,
                        remote_id: r.account.remote_id.clone(),
                    })
                    .collect();
                let changes = rows.iter().cloned().map(AccountChange::Upsert).collect();
                (outcomes, changes)
            })
            .collect();
        // Timed: the outcomes and account rows, in the engine's batches.
        if std::env::var_os("DIRSYNC_BENCH_MARKS").is_some() {
            println!("  mark: write-back starts at {:.3}", monotonic());
        }
        let t = Instant::now();
        for (outcomes, changes) in &batches {
            store
                .record_outcomes(&target.name, outcomes, changes)
                .await
                .expect("record outcomes");
        }
        let secs = t.elapsed().as_secs_f64();
        if std::env::var_os("DIRSYNC_BENCH_MARKS").is_some() {
            println!("  mark: write-back ends at {:.3}", monotonic());
        }
        drop(batches);
        times.push(secs);
        // The bound: the same rows, other values (so every row really changes).
        let bound_rows: Vec<AccountRecord> = base
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.state
                    .fields
                    .insert("otherName".into(), format!("bd{rep}"));
                r
            })
            .collect();
        let b = match &wb {
            WbStore::Pg(url) => pg_writeback_bound(url, &bound_rows, run_id).await,
            WbStore::Sqlite(path) => sqlite_writeback_bound(path, &bound_rows, run_id),
        };
        bounds.push(b);
        let remote_ids: Vec<Option<String>> = updated
            .iter()
            .map(|r| r.account.remote_id.clone())
            .collect();
        let ob = match &wb {
            WbStore::Pg(url) => pg_outcomes_bound(url, &ids, &remote_ids).await,
            WbStore::Sqlite(path) => sqlite_outcomes_bound(path, &ids, &remote_ids),
        };
        outcome_bounds.push(ob);
        store
            .finish_run(
                run_id,
                &RunFinish {
                    status: RunStatus::Succeeded,
                    finished_at: chrono::Utc::now(),
                    source_count: Some(ctx.args.users),
                    planned: n as u64,
                    applied: n as u64,
                    failed: 0,
                    error: None,
                    summary: serde_json::json!({"targets": []}),
                },
            )
            .await
            .expect("finish run");
        println!(
            "  {name} rep {}: record_outcomes {secs:.2} s ({:.0} rows/s); bound {b:.2} s, with the outcome rows {:.2} s; (untimed: journal {journal_secs:.2} s, mark_sent {mark_secs:.2} s)",
            rep + 1,
            n as f64 / secs,
            b + ob
        );
        note = format!(
            "{n} rows in {} batches; journal {journal_secs:.2} s + mark_sent {mark_secs:.2} s not timed",
            n.div_ceil(OUTCOME_BATCH)
        );
    }
    let med = median(&times);
    let r = n as f64 / med;
    let row = Row {
        name: name.into(),
        wall: (med, best(&times)),
        throughput: format!("{} rows/s", rate(n as f64, med)),
        rss_mb: None,
        bound: format!(
            "{:.2} s ({} rows/s, temp table)",
            median(&bounds),
            rate(n as f64, median(&bounds))
        ),
        ratio: median(&bounds) / med,
        target: "≥ 50k rows/s".into(),
        met: r >= 50_000.0,
        note: {
            // The bound above updates the account rows only; record_outcomes also updates the
            // operations rows: the same two writes through temp tables, for comparison.
            let both = median(&bounds) + median(&outcome_bounds);
            format!(
                "{note}; the bound with the outcome rows too: {both:.2} s ({} rows/s, ratio {:.2})",
                rate(n as f64, both),
                both / med
            )
        },
    };
    row.print();
    ctx.rows.push(row);
}

/// CLOCK_MONOTONIC in seconds (what `perf record -k CLOCK_MONOTONIC` stamps samples with), to
/// find a timed region in a profile (`DIRSYNC_BENCH_MARKS=1`).
fn monotonic() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn check_binary(bin: &Path) {
    let Ok(meta) = fs::metadata(bin) else {
        panic!(
            "{} not found: build it first (cargo build --release, or scripts/bench.sh)",
            bin.display()
        );
    };
    let built = meta.modified().expect("mtime");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stack = vec![root.join("src"), root.join("migrations")];
    let mut newest = fs::metadata(root.join("Cargo.lock"))
        .and_then(|m| m.modified())
        .expect("Cargo.lock");
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                newest = newest.max(m);
            }
        }
    }
    if newest > built {
        println!(
            "WARNING: {} is older than the sources: run cargo build --release first",
            bin.display()
        );
    }
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{cores} cores ({cpu}), {mem:.0} GB RAM")
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| scenario | wall, median (best) | throughput | peak RSS | bound, median | ratio | target | result |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in rows {
        println!(
            "| {} | {:.2} s ({:.2}) | {} | {} | {} | {:.2} | {} | {} |",
            r.name,
            r.wall.0,
            r.wall.1,
            r.throughput,
            r.rss_mb.map_or("—".into(), |m| format!("{m:.0} MB")),
            r.bound,
            r.ratio,
            r.target,
            if r.met { "MET" } else { "**MISSED**" }
        );
    }
}

fn main() {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "child=spawn") {
        spawn_helper(&argv[2..]);
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(bench());
}

async fn bench() {
    let args = Args::parse();
    if args.child.as_deref() == Some("apply") {
        let r = apply_run::run(apply_run::ApplyParams {
            creates: args.creates,
            concurrency: args.concurrency,
            latency_ms: args.latency_ms,
            disables: args.disables.min(args.creates),
            connector_creates: args.creates,
        })
        .await;
        println!("APPLY_RESULT {}", serde_json::to_string(&r).expect("json"));
        return;
    }
    check_binary(&args.bin);
    println!(
        "dirsync scale bench: {} users, {} reps, {}; binary {}",
        args.users,
        args.reps,
        machine(),
        args.bin.display()
    );
    if args.users != 1_000_000 {
        println!(
            "(time targets scaled to {} users; RSS targets are not scaled)",
            args.users
        );
    }
    let t0 = Instant::now();
    let csv = csv_file(args.users);
    let fake = covata::FakeCovata::start().await;
    let dir = tempfile::Builder::new()
        .prefix("dirsync-scale-")
        .tempdir()
        .expect("temp dir");
    let mut ctx = Ctx {
        args,
        dir,
        fake,
        csv,
        rows: Vec::new(),
    };
    let wants = |n: &str| ctx.args.wants(n);

    // CSV source, Postgres state.
    let pg_csv = if [
        "nochange-csv-pg-plan",
        "nochange-csv-pg-sync",
        "writeback-pg",
    ]
    .iter()
    .any(|n| wants(n))
    {
        let url = pg::pg_url().await;
        let config = write_config(
            ctx.dir.path(),
            "csv-pg",
            State::Postgres(&url),
            Source::Csv(&ctx.csv),
            &ctx.fake,
        );
        let accounts = seed(&config).await;
        Some((url, config, accounts))
    } else {
        None
    };
    if let Some((url, config, accounts)) = &pg_csv {
        for (name, cmd) in [
            ("nochange-csv-pg-plan", "plan"),
            ("nochange-csv-pg-sync", "sync"),
        ] {
            if ctx.args.wants(name) {
                let bound = Bound::CsvPg {
                    url,
                    accounts: *accounts,
                };
                ctx.cli(name, cmd, config, bound, Expect::NoChange, 2.0, Some(256.0))
                    .await;
            }
        }
    }

    // CSV source, SQLite state.
    let sqlite_csv = if [
        "nochange-csv-sqlite-plan",
        "nochange-csv-sqlite-sync",
        "writeback-sqlite",
    ]
    .iter()
    .any(|n| ctx.args.wants(n))
    {
        let path = ctx.dir.path().join("state.db");
        let config = write_config(
            ctx.dir.path(),
            "csv-sqlite",
            State::Sqlite(&path),
            Source::Csv(&ctx.csv),
            &ctx.fake,
        );
        let accounts = seed(&config).await;
        Some((path, config, accounts))
    } else {
        None
    };
    if let Some((path, config, accounts)) = &sqlite_csv {
        for (name, cmd) in [
            ("nochange-csv-sqlite-plan", "plan"),
            ("nochange-csv-sqlite-sync", "sync"),
        ] {
            if ctx.args.wants(name) {
                let bound = Bound::CsvSqlite {
                    path,
                    accounts: *accounts,
                };
                ctx.cli(name, cmd, config, bound, Expect::NoChange, 3.0, None)
                    .await;
            }
        }
    }

    // LDAP source (slapd), Postgres state.
    if ["nochange-ldap-pg-plan", "nochange-ldap-pg-sync"]
        .iter()
        .any(|n| ctx.args.wants(n))
    {
        let ldif_path = ldif_file(ctx.args.users);
        let t = Instant::now();
        let ldif = fs::read_to_string(&ldif_path).expect("read ldif");
        let server = slapd::Slapd::start(
            slapd::SlapdOptions {
                size_limit: Some(500),
                paged_total_unlimited: true,
                tls: false,
            },
            &ldif,
        );
        drop(ldif);
        println!(
            "slapadd + start of {} entries: {:.1} s",
            ctx.args.users,
            t.elapsed().as_secs_f64()
        );
        let url = pg::pg_url().await;
        let config = write_config(
            ctx.dir.path(),
            "ldap-pg",
            State::Postgres(&url),
            Source::Ldap(&server),
            &ctx.fake,
        );
        let accounts = seed(&config).await;
        for (name, cmd) in [
            ("nochange-ldap-pg-plan", "plan"),
            ("nochange-ldap-pg-sync", "sync"),
        ] {
            if ctx.args.wants(name) {
                let bound = Bound::LdapPg {
                    server: &server,
                    url: &url,
                    accounts,
                };
                ctx.cli(name, cmd, &config, bound, Expect::NoChange, 12.0, None)
                    .await;
            }
        }
    }

    // First run: every user a create, dry run, empty Postgres state.
    if ctx.args.wants("first-run-plan") {
        let url = pg::pg_url().await;
        let config = write_config(
            ctx.dir.path(),
            "first-run",
            State::Postgres(&url),
            Source::Csv(&ctx.csv),
            &ctx.fake,
        );
        ctx.cli(
            "first-run-plan",
            "plan",
            &config,
            Bound::CsvOnly,
            Expect::Creates,
            4.0,
            None,
        )
        .await;
    }

    if ctx.args.wants("creates") || ctx.args.wants("disables") {
        apply_scenarios(&mut ctx).await;
    }

    // Write-back last: it changes the seeded state.
    if let Some((url, config, _)) = &pg_csv
        && ctx.args.wants("writeback-pg")
    {
        writeback(&mut ctx, "writeback-pg", config, WbStore::Pg(url)).await;
    }
    if let Some((path, config, _)) = &sqlite_csv
        && ctx.args.wants("writeback-sqlite")
    {
        writeback(&mut ctx, "writeback-sqlite", config, WbStore::Sqlite(path)).await;
    }

    print_table(&ctx.rows);
    if ctx.args.keep {
        let kept = ctx.dir.keep();
        println!(
            "\nkept {} (configs, SQLite state); with DIRSYNC_TEST_DATABASE_URL the Postgres \
             databases stay too",
            kept.display()
        );
    }
    println!(
        "\n{} scenarios, {} met, {} missed; total bench time {:.0} s",
        ctx.rows.len(),
        ctx.rows.iter().filter(|r| r.met).count(),
        ctx.rows.iter().filter(|r| !r.met).count(),
        t0.elapsed().as_secs_f64()
    );
}
