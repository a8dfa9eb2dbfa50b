//! Live sync (`live = "syncrepl"`): time to revoke and the CPU cost of one change.
//!
//! ```sh
//! cargo build --release --bin dirsync && cargo bench --bench live                # 100k entries
//! cargo bench --bench live -- users=1000000                                     # 1M state
//! ```
//!
//! Arguments (`key=value` after `--`): `users` (100,000), `changes` (20), `bin` (default
//! `target/release/dirsync`). A real slapd (syncprov) is loaded with `users` entries by
//! slapadd; the release daemon runs with `live = "syncrepl"`, SQLite state and the fake Covata
//! (no latency); its first full run creates every user. Then `changes` entries are disabled
//! one at a time with `ldapmodify`; for each, the time from starting `ldapmodify` to the fake
//! holding the account disabled (time to revoke), and the daemon's CPU time (user + system,
//! `/proc/<pid>/stat`) from just before the change until its live run is over (the daemon idle
//! again). Nothing here is asserted; the figures go to BENCHMARKS.md.

#[allow(dead_code)]
#[path = "../tests/it/support/child.rs"]
mod child;
#[allow(dead_code)]
#[path = "../tests/it/support/covata.rs"]
mod covata;
#[allow(dead_code)]
#[path = "../tests/it/support/fake/mod.rs"]
mod fake;
#[allow(dead_code)]
#[path = "../tests/it/support/killable.rs"]
mod killable;
#[allow(dead_code)]
#[path = "../tests/it/support/slapd.rs"]
mod slapd;

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PEOPLE: &str = "ou=people,dc=example,dc=com";

struct Args {
    users: usize,
    changes: usize,
    bin: PathBuf,
}

impl Args {
    fn parse() -> Args {
        let mut a = Args {
            users: 100_000,
            changes: 20,
            bin: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/dirsync"),
        };
        for arg in std::env::args().skip(1) {
            match arg.split_once('=') {
                Some(("users", v)) => a.users = v.parse().expect("users=N"),
                Some(("changes", v)) => a.changes = v.parse().expect("changes=N"),
                Some(("bin", v)) => a.bin = v.into(),
                // cargo bench passes --bench.
                _ => {}
            }
        }
        a
    }
}

fn ldif(users: usize) -> String {
    let mut out = String::with_capacity(users * 220);
    for i in 1..=users {
        let _ = write!(
            out,
            "dn: uid=u{i:07},{PEOPLE}\nobjectClass: inetOrgPerson\nobjectClass: dirsyncTestAccount\n\
             cn: User {i}\nsn: User\ngivenName: U{i}\nmail: u{i}@example.com\nuid: u{i:07}\n\n"
        );
    }
    out
}

/// CPU seconds (user + system) of process `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // Fields after the command (which ends with the last ')'): state is field 3, utime 14,
    // stime 15.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    ticks / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a constant of the system.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

fn http_get(port: u16, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

fn wait(what: &str, timeout: Duration, every: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(every);
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(bench());
}

async fn bench() {
    let args = Args::parse();
    assert!(
        args.bin.exists(),
        "{} not found: cargo build --release --bin dirsync",
        args.bin.display()
    );
    let t = Instant::now();
    let server = slapd::Slapd::start(slapd::SlapdOptions::default(), &ldif(args.users));
    eprintln!(
        "slapadd of {} entries: {:.1} s",
        args.users,
        t.elapsed().as_secs_f64()
    );
    let fake = covata::FakeCovata::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = child::free_port().expect("free port");
    let config = dir.path().join("dirsync.toml");
    let text = format!(
        r#"[state]
path = "{state}"

[source]
kind = "ldap"

[source.ldap]
url = "{url}"
bind_dn = "{bind_dn}"
bind_password = "{bind_pw}"
base_dn = "{PEOPLE}"
page_size = 500
operation_timeout = "300s"
disabled_attribute = "nsAccountLock"
disabled_values = ["TRUE"]
live = "syncrepl"

[schedule]
interval = "24h"
run_on_start = true

[http]
listen = "127.0.0.1:{port}"

[safety]
min_source_users = 1
max_disables = 1000
max_disable_percent = 100
percent_floor = 2

[[target]]
name = "covata-prod"
kind = "covata"
base_url = "{base}"
username = "{user}"
password = "{pass}"
client_id = "{cid}"
client_secret = "{csecret}"
on_missing = "disable"
default_roles = ["ROLE_COLLABORATOR"]

[target.fields]
email = "{{email}}"
firstName = "{{given_name}}"
lastName = "{{family_name}}"
"#,
        state = dir.path().join("state.db").display(),
        url = server.url(),
        bind_dn = slapd::READER_DN,
        bind_pw = slapd::READER_PASSWORD,
        base = fake.base_url(),
        user = covata::USERNAME,
        pass = covata::PASSWORD,
        cid = covata::CLIENT_ID,
        csecret = covata::CLIENT_SECRET,
    );
    fs::write(&config, text).expect("write config");
    fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod config");
    let log_path = dir.path().join("daemon.log");
    let log = File::create(&log_path).expect("daemon log");
    let mut daemon = Command::new(&args.bin)
        .args(["run", "--allow-root", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log)
        .spawn()
        .expect("spawn the daemon");
    let pid = daemon.id();
    let t = Instant::now();
    wait(
        "the first full run",
        Duration::from_secs(3600),
        Duration::from_secs(1),
        || fake.users().len() == args.users,
    );
    wait(
        "the stream",
        Duration::from_secs(600),
        Duration::from_millis(200),
        || http_get(port, "/readyz").contains("live syncrepl: streaming"),
    );
    eprintln!(
        "first full run (creates) and stream: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // Let the first run's bookkeeping end: the daemon idle (no CPU over half a second).
    let idle = || {
        let mut last = cpu_seconds(pid);
        wait(
            "the daemon idle",
            Duration::from_secs(600),
            Duration::from_millis(500),
            || {
                let now = cpu_seconds(pid);
                let same = now == last;
                last = now;
                same
            },
        );
    };
    idle();
    let mut revoke = Vec::new();
    let mut cpu = Vec::new();
    for k in 0..args.changes {
        let i = 1 + k * (args.users / args.changes.max(1));
        let email = format!("u{i}@example.com");
        let before = cpu_seconds(pid);
        let t = Instant::now();
        server.modify(&format!(
            "dn: uid=u{i:07},{PEOPLE}\nchangetype: modify\nreplace: nsAccountLock\nnsAccountLock: TRUE\n"
        ));
        wait(
            "the disable on the target",
            Duration::from_secs(120),
            Duration::from_millis(5),
            || fake.user_by_email(&email).is_some_and(|u| !u.enabled),
        );
        revoke.push(t.elapsed().as_secs_f64());
        idle();
        cpu.push(cpu_seconds(pid) - before);
    }
    // SAFETY: a signal to the child spawned above, not reaped yet.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    let _ = daemon.wait();
    let disabled = fake.users().iter().filter(|u| !u.enabled).count();
    revoke.sort_by(f64::total_cmp);
    let mut cpu_sorted = cpu.clone();
    cpu_sorted.sort_by(f64::total_cmp);
    println!(
        "live syncrepl, {} entries, {} disables one at a time ({} disabled on the target):",
        args.users, args.changes, disabled
    );
    println!(
        "  time to revoke: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        pct(&revoke, 0.5) * 1000.0,
        pct(&revoke, 0.95) * 1000.0,
        revoke.last().copied().unwrap_or(0.0) * 1000.0
    );
    println!(
        "  daemon CPU per change: p50 {:.0} ms, p95 {:.0} ms, mean {:.0} ms (clock tick {:.0} ms)",
        pct(&cpu_sorted, 0.5) * 1000.0,
        pct(&cpu_sorted, 0.95) * 1000.0,
        cpu.iter().sum::<f64>() / cpu.len().max(1) as f64 * 1000.0,
        1000.0 / clock_ticks_per_second()
    );
}
