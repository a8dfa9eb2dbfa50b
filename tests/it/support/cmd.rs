//! Running the real `dirsync` binary from tests, and reading what it did.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dirsync::store::{RecordedAccount, Store};

/// `dirsync <args> --config <config>`, with the test process's own `DIRSYNC_*` and systemd
/// variables removed (a test's environment must not leak into the binary's configuration),
/// colours off, and no standard input (run from a terminal, `sync` would otherwise ask before
/// applying).
pub fn dirsync(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dirsync"));
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("DIRSYNC_") || k == "NOTIFY_SOCKET" || k == "WATCHDOG_USEC" {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// The store the configuration at `config` names, migrated.
pub async fn store(config: &Path) -> Box<dyn Store> {
    let config = dirsync::config::load_with_env(config, &[]).unwrap();
    dirsync::store::open(&config.state.location, true)
        .await
        .unwrap()
}

/// The account row of `key` on `target` (panics when there is none).
pub async fn recorded(store: &dyn Store, target: &str, key: &str) -> RecordedAccount {
    store
        .load_accounts(target)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.key == key)
        .unwrap_or_else(|| panic!("no account row of {key} on {target}"))
}

/// Whether `store` holds no unfinished (pending or sent) operation of `target`.
pub async fn nothing_unfinished(store: &dyn Store, target: &str) -> bool {
    store
        .unfinished_operations(target)
        .await
        .unwrap()
        .is_empty()
}

/// Each object of the JSON array `v` as the string values of `fields` ("" where a field is
/// missing or not a string).
pub fn str_fields<const N: usize>(v: &serde_json::Value, fields: [&str; N]) -> Vec<[String; N]> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a JSON array: {v}"))
        .iter()
        .map(|o| fields.map(|f| o[f].as_str().unwrap_or_default().to_string()))
        .collect()
}

/// Asserts that `text` (a command's stdout, stderr or `out`) contains `needle`, printing the
/// text when it does not.
#[track_caller]
pub fn assert_has(text: &str, needle: &str) {
    assert!(text.contains(needle), "expected {needle:?} in:\n{text}");
}

/// Exit code, stdout and stderr, for assertion messages.
pub fn out(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Waits for `child` to exit and returns its exit code (-1 when killed by a signal); after
/// `limit`, kills it and fails the test saying `what` did not exit.
pub fn wait_exit(child: &mut std::process::Child, limit: Duration, what: &str) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The lines of `text` that contain `needle`.
pub fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

/// The exit code (-1 when killed by a signal).
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `cmd` to its end (stdin empty, stdout and stderr collected) but kills it after `limit`:
/// `Err` holds what it wrote until then, so that a hang fails its test instead of the suite.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Result<Output, Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let mut killed = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            killed = true;
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let output = Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    if killed { Err(output) } else { Ok(output) }
}

/// `GET path` on `127.0.0.1:port` (HTTP/1.1, connection closed): the status and the body, or
/// `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}
