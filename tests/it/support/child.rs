//! What the real child servers of the tests (Postgres in `pg.rs`, slapd in `slapd.rs`) share:
//! a temp dir, running as an unprivileged system user when the tests run as root, a free port,
//! a keeper thread that spawns the server with `PR_SET_PDEATHSIG` (it dies with the test
//! process) and reaps it, waiting until it is ready, stopping it, and log tails for panics.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// A new directory under the system temp dir, kept (the caller removes it); `what` names the
/// server in errors (`test Postgres`).
pub fn temp_root(prefix: &str, what: &str) -> Result<PathBuf, String> {
    Ok(tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(std::env::temp_dir())
        .map_err(|e| format!("{what}: cannot create a temp dir: {e}"))?
        .keep())
}

/// The (uid, gid) to run a server as when we are root: the first of `names` in /etc/passwd;
/// `None` when we are not root (the server runs as ourselves).
pub fn server_user(what: &str, names: &[&str]) -> Result<Option<(u32, u32)>, String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let passwd =
        fs::read_to_string("/etc/passwd").map_err(|e| format!("{what}: read /etc/passwd: {e}"))?;
    let lookup = |name: &str| {
        passwd.lines().find_map(|line| {
            let mut f = line.split(':');
            if f.next()? != name {
                return None;
            }
            let uid = f.nth(1)?.parse().ok()?;
            let gid = f.next()?.parse().ok()?;
            Some((uid, gid))
        })
    };
    names
        .iter()
        .find_map(|n| lookup(n))
        .map(Some)
        .ok_or_else(|| {
            format!(
                "{what}: running as root and none of the users {names:?} exists in /etc/passwd to \
             run the server as"
            )
        })
}

/// Runs `cmd` as `user` (see [`server_user`]).
pub fn run_as(cmd: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
}

/// Sets up `cmd` as a server is run: in `dir`, as `user`, no stdin, stdout and stderr to `log`.
pub fn server_command(
    cmd: &mut Command,
    dir: &Path,
    log: File,
    user: Option<(u32, u32)>,
    what: &str,
) -> Result<(), String> {
    let out = log
        .try_clone()
        .map_err(|e| format!("{what}: dup the log file: {e}"))?;
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(log);
    run_as(cmd, user);
    Ok(())
}

pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn is_exe(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The log file opened for appending, and its length before (where this start's lines begin).
pub fn open_log(log: &Path, what: &str) -> Result<(File, u64), String> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{what}: open {}: {e}", log.display()))?;
    let start = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((file, start))
}

/// The last lines of a log file from byte `from` on, for panic messages.
pub fn tail(path: &Path, from: u64) -> String {
    let mut bytes = Vec::new();
    let read = File::open(path).and_then(|mut f| {
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(from.max(len.saturating_sub(8192))))?;
        f.read_to_end(&mut bytes)
    });
    match read {
        Ok(_) => format!(
            "--- {} (end) ---\n{}",
            path.display(),
            String::from_utf8_lossy(&bytes).trim_end()
        ),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A server process spawned by a keeper thread that lives as long as it and reaps it.
pub struct Kept {
    pub pid: u32,
    /// Set once the keeper has reaped the process (its pid may be someone else's then).
    pub exited: Arc<Mutex<bool>>,
}

impl Kept {
    /// Spawns `cmd` (killed with SIGKILL when the keeper thread, i.e. the test process, dies)
    /// from a thread named `thread`; `what` names the server in errors.
    pub fn spawn(mut cmd: Command, thread: String, what: &str) -> Result<Kept, String> {
        let program = cmd.get_program().to_owned();
        // SAFETY: the closure runs in the child between fork and exec and only makes the
        // async-signal-safe prctl syscall.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // PR_SET_PDEATHSIG fires when the thread that spawned the child exits: spawn it from a
        // thread that lives as long as the child.
        let exited = Arc::new(Mutex::new(false));
        let keeper_exited = Arc::clone(&exited);
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(thread)
            .spawn(move || match cmd.spawn() {
                Ok(mut child) => {
                    let _ = tx.send(Ok(child.id()));
                    let _ = child.wait();
                    if let Ok(mut e) = keeper_exited.lock() {
                        *e = true;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(|e| format!("{what}: spawn the keeper thread: {e}"))?;
        match rx.recv() {
            Ok(Ok(pid)) => Ok(Kept { pid, exited }),
            Ok(Err(e)) => Err(format!("{what}: run {}: {e}", program.display())),
            Err(_) => Err(format!("{what}: the keeper thread died")),
        }
    }

    pub fn is_exited(&self) -> bool {
        self.exited.lock().map(|e| *e).unwrap_or(true)
    }

    /// Polls `ready` until it says yes; an error (with the log's new lines) when the process
    /// exits first or `timeout` passes.
    pub fn wait_ready(
        &self,
        what: &str,
        log: &Path,
        start_of_log: u64,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_exited() {
                return Err(format!(
                    "{what}: the server exited at start-up\n{}",
                    tail(log, start_of_log)
                ));
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{what}: not ready after {} s\n{}",
                    timeout.as_secs(),
                    tail(log, start_of_log)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` unless the process was reaped already; then waits up to `timeout` for it
    /// to exit. True when it has.
    pub fn stop(&self, signal: libc::c_int, timeout: Duration) -> bool {
        if self.is_exited() {
            return true;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.pid) {
            // SAFETY: a plain syscall on a process we spawned and its keeper has not reaped
            // (checked just above).
            unsafe {
                libc::kill(pid, signal);
            }
        }
        let deadline = Instant::now() + timeout;
        while !self.is_exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.is_exited()
    }
}
