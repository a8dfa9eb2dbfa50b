//! A `dirsync run` child of a test: started with its log in a file (a pipe nobody reads could
//! fill up), signalled, stopped, its log read.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use super::env::TestEnv;

pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `sig` to the daemon.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid with a valid signal number.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits up to `timeout` for the daemon to exit: its exit code and its log.
    pub fn finish(self, timeout: Duration) -> (i32, String) {
        let Daemon { mut child, log } = self;
        let code = super::cmd::wait_exit(&mut child, timeout, "the daemon");
        (code, std::fs::read_to_string(&log).unwrap_or_default())
    }

    /// SIGTERM, then the daemon must exit 0 within a minute: its log.
    pub fn stop(self) -> String {
        self.signal(libc::SIGTERM);
        let (code, text) = self.finish(Duration::from_secs(60));
        assert_eq!(code, 0, "daemon exit code; log:\n{text}");
        text
    }
}

impl TestEnv {
    /// Starts `dirsync run` on this environment's config; its log goes to `<name>.log`.
    pub fn spawn_daemon_logged(&self, name: &str) -> Daemon {
        let log = self.path(&format!("{name}.log"));
        let child = self
            .command(&["run", "--allow-root"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    /// The body of `GET /readyz` on `port` ("" when it does not answer).
    pub fn readyz(&self, port: u16) -> String {
        super::cmd::http_get(port, "/readyz")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }
}
