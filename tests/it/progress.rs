//! What an operator sees around a sync: progress (log events without a terminal, systemd's
//! `STATUS=` through a fake `NOTIFY_SOCKET`, `--quiet`), the confirmation question of `sync` on
//! a pseudo-terminal (`script(1)` gives the binary one), the exit codes in every command's
//! help, and environment variables named in configuration errors.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::cmd::{assert_has, code, out, stderr, stdout};
use crate::support::covata::FakeCovata;
use crate::support::env::{Backend, TestEnv, USERS_HEADER as HEADER, user_rows};

crate::support::env::env_with_fake!(Env, FakeCovata, HEADER, new);

impl Env {
    /// One request at a time, each answered after `latency` by the fake: a sync of `n` users
    /// lasts about `n × latency`.
    fn write_config(&self, _extra: &str) {
        self.write_covata_config(&self.fake.base_url(), "concurrency = 1\n");
    }

    fn emails(&self) -> Vec<String> {
        let mut v: Vec<String> = self.fake.users().into_iter().map(|u| u.email).collect();
        v.sort();
        v
    }
}

/// The `progress` log events of `text` (stderr), each as its `key=value` fields.
fn progress_events(text: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    text.lines()
        .filter(|l| l.contains(" progress "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                .collect()
        })
        .collect()
}

/// Without a terminal, a sync writes `progress` events with the documented fields on stderr
/// (never on stdout), the last one with everything done; under systemd `STATUS=` names the
/// target and its counts. `--quiet` turns the events off (not the systemd status).
#[tokio::test(flavor = "multi_thread")]
async fn progress_events_and_systemd_status_without_a_terminal() {
    let env = Env::new(Backend::Sqlite, &user_rows(1..=20, |_| false)).await;
    env.fake.set_latency(Duration::from_millis(20));
    let socket_path = env.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_nonblocking(true).unwrap();

    let o = notified(&env, &["sync"], &socket_path, "50");
    assert_eq!(env.emails().len(), 20, "{}", out(&o));
    assert!(!stdout(&o).contains("progress"), "{}", out(&o));
    let events = progress_events(&stderr(&o));
    let applying: Vec<_> = events
        .iter()
        .filter(|e| e.get("target").map(String::as_str) == Some("covata"))
        .collect();
    assert!(applying.len() >= 2, "{}", out(&o));
    for e in &applying {
        for field in ["phase", "done", "total", "failed", "rate"] {
            assert!(
                e.contains_key(field),
                "{field} missing in {e:?}\n{}",
                out(&o)
            );
        }
        assert_eq!(e["phase"], "apply");
        assert_eq!(e["total"], "20");
        assert_eq!(e["failed"], "0");
    }
    // The counts only grow, and the last event has everything done.
    let done: Vec<u64> = applying
        .iter()
        .map(|e| e["done"].parse().unwrap())
        .collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    assert_eq!(done.last(), Some(&20), "{}", out(&o));
    assert!(
        applying.iter().any(|e| e.contains_key("eta_secs")),
        "{}",
        out(&o)
    );

    let mut statuses = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf) {
        statuses.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        statuses
            .iter()
            .any(|s| s.lines().any(|l| l == "STATUS=covata: 20/20 applied")),
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .any(|s| s.lines().any(|l| l == "STATUS=source: 20 read")),
        "{statuses:?}"
    );

    // --quiet: no progress events; the run and its report are unchanged.
    env.write_csv(&user_rows(1..=30, |_| false));
    let o = notified(&env, &["sync", "--quiet"], &socket_path, "1");
    assert_eq!(env.emails().len(), 30);
    assert!(progress_events(&stderr(&o)).is_empty(), "{}", out(&o));
    assert!(stdout(&o).contains("Applied 10 changes."), "{}", out(&o));
    let mut statuses = Vec::new();
    while let Ok(n) = socket.recv(&mut buf) {
        statuses.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        statuses.iter().any(|s| s.contains("covata: 10/10 applied")),
        "{statuses:?}"
    );

    // The service (`run --once` here) reports through the same observer: its status shows
    // the run's progress, then the run's result.
    env.write_csv(&user_rows(1..=35, |_| false));
    let o = notified(&env, &["run", "--once", "--allow-root"], &socket_path, "50");
    assert_eq!(env.emails().len(), 35);
    assert!(!progress_events(&stderr(&o)).is_empty(), "{}", out(&o));
    let mut statuses = Vec::new();
    while let Ok(n) = socket.recv(&mut buf) {
        statuses.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let progress_at = statuses
        .iter()
        .position(|s| s.contains("STATUS=covata: 5/5 applied"));
    assert!(progress_at.is_some(), "{statuses:?}");
}

/// `dirsync <args>` on a pseudo-terminal (standard input, output and error), with `input`
/// typed: `script(1)` (util-linux) runs it and passes the input on.
fn on_terminal(env: &Env, args: &[&str], input: &str) -> Output {
    let inner = env.command(args);
    let line: Vec<String> = std::iter::once(inner.get_program())
        .chain(inner.get_args())
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect();
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &line.join(" "), "/dev/null"]);
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    // The binary sees a terminal; the log events are plain text on it.
    cmd.env("TERM", "dumb")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot run script(1): {e}; install util-linux's bsdutils (apt-get install bsdutils)"
        )
    });
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

const QUESTION: &str = "Apply these changes? (yes/no)";

/// On a terminal `sync` shows the plan and asks: anything but `yes` sends nothing and exits 2;
/// `yes` applies; `--yes` applies without asking; without a terminal it never asks.
#[tokio::test(flavor = "multi_thread")]
async fn sync_asks_on_a_terminal_only() {
    let env = Env::new(Backend::Sqlite, &user_rows(1..=3, |_| false)).await;

    // "no": the plan was shown, nothing was sent (the plan only read: the first contact's
    // listing), exit 2.
    let o = on_terminal(&env, &["sync"], "no\n");
    let text = stdout(&o);
    assert_eq!(code(&o), 2, "{}", out(&o));
    assert!(text.contains(QUESTION), "{}", out(&o));
    assert!(
        text.contains("+ create"),
        "the plan is shown first: {}",
        out(&o)
    );
    assert!(text.contains("nothing was sent"), "{}", out(&o));
    assert!(env.fake.users().is_empty());
    assert_only_reads(&env);
    // An empty answer (or the end of input) is a no too.
    let o = on_terminal(&env, &["sync"], "\n");
    assert_eq!(code(&o), 2, "{}", out(&o));
    assert_only_reads(&env);

    // "yes": applied.
    let o = on_terminal(&env, &["sync"], "yes\n");
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(stdout(&o).contains("Applied 3 changes."), "{}", out(&o));
    assert_eq!(env.emails().len(), 3);

    // --yes: no question, applied.
    env.write_csv(&user_rows(1..=5, |_| false));
    let o = on_terminal(&env, &["sync", "--yes"], "");
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(!stdout(&o).contains(QUESTION), "{}", out(&o));
    assert_eq!(env.emails().len(), 5);

    // Nothing to change: no question either.
    let o = on_terminal(&env, &["sync"], "");
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(!stdout(&o).contains(QUESTION), "{}", out(&o));

    // Without a terminal: never asked, applied (scripts and timers behave as before).
    env.write_csv(&user_rows(1..=6, |_| false));
    let o = env.run_code(&["sync"], 0);
    assert!(!out(&o).contains(QUESTION), "{}", out(&o));
    assert_eq!(env.emails().len(), 6);

    // `sync --user KEY` asks about that user's operations only.
    env.write_csv(&user_rows(1..=8, |_| false));
    env.fake.clear_requests();
    let o = on_terminal(&env, &["sync", "--user", "E00007"], "no\n");
    assert_eq!(code(&o), 2, "{}", out(&o));
    assert!(stdout(&o).contains("E00007"), "{}", out(&o));
    assert!(!stdout(&o).contains("E00008"), "{}", out(&o));
    assert_only_reads(&env);
    let o = on_terminal(&env, &["sync", "--user", "E00007"], "yes\n");
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(env.fake.user_by_email("user7@example.com").is_some());
    assert!(env.fake.user_by_email("user8@example.com").is_none());
}

/// A blocked plan is shown on a terminal and not applied, without a question: it still needs
/// --force (and then the question is asked).
#[tokio::test(flavor = "multi_thread")]
async fn a_blocked_plan_is_not_asked_about() {
    let env = Env::new(Backend::Sqlite, &user_rows(1..=10, |_| false)).await;
    env.run_code(&["sync"], 0);
    // Every user gone: the deletes exceed the safety limits.
    env.write_csv(&user_rows(1..=1, |_| false));
    let o = on_terminal(&env, &["sync"], "yes\n");
    assert_eq!(code(&o), 3, "{}", out(&o));
    assert!(!stdout(&o).contains(QUESTION), "{}", out(&o));
    assert!(stdout(&o).contains("--force"), "{}", out(&o));
    assert_eq!(env.emails().len(), 10);
    // With --force the question comes; "no" still sends nothing.
    env.fake.clear_requests();
    let o = on_terminal(&env, &["sync", "--force"], "no\n");
    assert_eq!(code(&o), 2, "{}", out(&o));
    assert!(stdout(&o).contains(QUESTION), "{}", out(&o));
    assert_only_reads(&env);
    assert_eq!(env.emails().len(), 10);
}

/// The fake got no write: only reads (and token grants).
#[track_caller]
fn assert_only_reads(env: &Env) {
    let writes: Vec<_> = env
        .fake
        .api_requests()
        .into_iter()
        .filter(|(method, _)| method != "GET")
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
}

/// Every command's --help ends with its exit codes and an example.
#[test]
fn every_help_lists_exit_codes_and_an_example() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("none.toml");
    for cmd in [
        vec![],
        vec!["run"],
        vec!["plan"],
        vec!["sync"],
        vec!["check"],
        vec!["adopt"],
        vec!["drift"],
        vec!["apply"],
        vec!["migrate"],
        vec!["runs"],
        vec!["runs", "show"],
        vec!["prune"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let o = crate::support::cmd::dirsync(&config, &args)
            .output()
            .unwrap();
        assert_eq!(code(&o), 0, "{cmd:?}: {}", out(&o));
        let help = stdout(&o);
        assert!(help.contains("Exit codes:"), "{cmd:?}: {help}");
        assert!(help.contains("  0  "), "{cmd:?}: {help}");
        assert!(help.contains("  1  "), "{cmd:?}: {help}");
        assert!(help.contains("Example:\n  dirsync "), "{cmd:?}: {help}");
    }
}

/// An environment variable that sets an unknown key is named as the variable, the key with it.
#[tokio::test(flavor = "multi_thread")]
async fn env_var_errors_name_the_variable() {
    let env = Env::new(Backend::Sqlite, &user_rows(1..=1, |_| false)).await;
    let o = env
        .command(&["check", "--offline"])
        .env("DIRSYNC_SAFETY__MAX_DELETEZ", "10")
        .env("DIRSYNC_TARGET__COVATA__PASWORD", "x")
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "{}", out(&o));
    let err = stderr(&o);
    assert_has(
        &err,
        "DIRSYNC_SAFETY__MAX_DELETEZ: unknown key safety.max_deletez",
    );
    assert_has(
        &err,
        "DIRSYNC_TARGET__COVATA__PASWORD: unknown key target[0].pasword",
    );
}

/// Runs `args` with `NOTIFY_SOCKET` at `socket` and progress events every `interval_ms`; the
/// command must succeed.
fn notified(env: &TestEnv, args: &[&str], socket: &std::path::Path, interval_ms: &str) -> Output {
    let o = env
        .command(args)
        .env("NOTIFY_SOCKET", socket)
        .env("DIRSYNC_PROGRESS_INTERVAL_MS", interval_ms)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", out(&o));
    o
}
