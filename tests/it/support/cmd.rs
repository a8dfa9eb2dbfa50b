//! Running the real `dirsync` binary from tests, and reading what it did.

use std::path::Path;
use std::process::{Command, Output};

use dirsync::store::Store;

/// `dirsync <args> --config <config>`, with the test process's own `DIRSYNC_*` and systemd
/// variables removed (a test's environment must not leak into the binary's configuration) and
/// colours off.
pub fn dirsync(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dirsync"));
    cmd.args(args).arg("--config").arg(config);
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

/// Exit code, stdout and stderr, for assertion messages.
pub fn out(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
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
