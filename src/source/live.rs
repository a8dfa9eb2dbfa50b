//! Live sync's side of the sources: the change events a watched source sends the daemon, the
//! stream's state (for `/readyz`), and the CSV watch (inotify on the file's directory).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// What a watched source tells the daemon.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// These users changed (added, modified, moved out of the filter, deleted), by source key.
    Changed {
        keys: Vec<String>,
        /// When the directory changed them (modifyTimestamp / whenChanged), when it says.
        changed_at: Option<DateTime<Utc>>,
        received: Instant,
    },
    /// Read and plan the whole source (a new CSV export, a refresh the directory asked for, a
    /// change that cannot be tied to keys).
    Full { why: String, received: Instant },
    /// The stream's position after the events sent before it (a syncrepl cookie): stored once
    /// the runs covering those events are recorded, so a restart resumes from there.
    Cookie(Vec<u8>),
}

/// The stream's state as `/readyz` and the logs show it.
#[derive(Debug, Clone, Default)]
pub struct StreamState {
    /// `starting`, `refreshing`, `streaming`, `reconnecting: <why>`, `watching`.
    pub state: String,
    pub events: u64,
    pub last_event: Option<DateTime<Utc>>,
}

/// Shared between the stream task and the daemon.
#[derive(Debug, Clone, Default)]
pub struct LiveStatus(Arc<Mutex<StreamState>>);

impl LiveStatus {
    pub fn set(&self, state: impl Into<String>) {
        self.lock().state = state.into();
    }

    pub fn event(&self, n: u64) {
        let mut s = self.lock();
        s.events += n;
        s.last_event = Some(Utc::now());
        crate::metrics::record_live_received(n);
    }

    pub fn get(&self) -> StreamState {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StreamState> {
        // A poisoned lock only means a panic elsewhere while setting a string.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What identifies one version of a file: a rename into place changes the inode, a rewrite
/// the size or the modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    inode: u64,
    size: u64,
    modified: Option<std::time::SystemTime>,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        inode: m.ino(),
        size: m.len(),
        modified: m.modified().ok(),
    })
}

/// Why the CSV watch could not start.
#[derive(Debug, thiserror::Error)]
#[error("source.csv.watch: cannot watch {dir}: {message}")]
pub struct WatchError {
    pub dir: PathBuf,
    pub message: String,
}

/// Watches the CSV file's directory (inotify): when the file is replaced (renamed into place)
/// or rewritten, and then stays unchanged for `settle`, sends one [`LiveEvent::Full`]. The
/// version of the file present when the watch starts is the one the first run reads; only a
/// version different from the last one announced triggers a run.
pub fn watch_csv(
    path: &Path,
    settle: Duration,
    status: LiveStatus,
    tx: mpsc::Sender<LiveEvent>,
) -> Result<(), WatchError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (touched_tx, mut touched) = mpsc::channel::<()>(1);
    let fd = inotify_watch(&dir).map_err(|e| WatchError {
        dir: dir.clone(),
        message: e.to_string(),
    })?;
    std::thread::Builder::new()
        .name("dirsync-csv-watch".into())
        .spawn(move || read_events(fd, touched_tx))
        .map_err(|e| WatchError {
            dir: dir.clone(),
            message: e.to_string(),
        })?;
    let path = path.to_path_buf();
    status.set("watching");
    info!(path = %path.display(), settle = %humantime::format_duration(settle), "live sync: watching the CSV export");
    tokio::spawn(async move {
        let mut announced = fingerprint(&path);
        while touched.recv().await.is_some() {
            // Wait until the file stays the same for `settle` (every change starts over).
            let mut seen = fingerprint(&path);
            loop {
                tokio::select! {
                    more = touched.recv() => {
                        if more.is_none() {
                            return;
                        }
                    }
                    _ = tokio::time::sleep(settle) => {
                        let now = fingerprint(&path);
                        if now == seen {
                            break;
                        }
                        seen = now;
                        continue;
                    }
                }
                seen = fingerprint(&path);
            }
            if seen.is_none() || seen == announced {
                debug!(path = %path.display(), "directory changed, the export did not");
                continue;
            }
            announced = seen;
            status.event(1);
            info!(path = %path.display(), "live sync: a new export landed");
            let event = LiveEvent::Full {
                why: format!("new export {}", path.display()),
                received: Instant::now(),
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// An inotify descriptor watching `dir` for files created, written, moved or deleted.
fn inotify_watch(dir: &Path) -> std::io::Result<i32> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: inotify_init1 takes flags only and returns a descriptor or -1.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mask = libc::IN_CLOSE_WRITE
        | libc::IN_MOVED_TO
        | libc::IN_CREATE
        | libc::IN_MODIFY
        | libc::IN_DELETE
        | libc::IN_MOVED_FROM
        | libc::IN_ATTRIB;
    // SAFETY: `fd` is the descriptor just created and `c` a NUL-terminated path that outlives
    // the call.
    let wd = unsafe { libc::inotify_add_watch(fd, c.as_ptr(), mask) };
    if wd < 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: `fd` is ours and not used after this.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    Ok(fd)
}

/// Blocks on the inotify descriptor; each batch of events is one "touched". Ends when the
/// receiver is gone or the descriptor fails.
fn read_events(fd: i32, touched: mpsc::Sender<()>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            warn!(error = %e, "live sync: the CSV watch stopped");
            break;
        }
        match touched.try_send(()) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(())) => {}
            Err(mpsc::error::TrySendError::Closed(())) => break,
        }
    }
    // SAFETY: `fd` is ours and not used after this.
    unsafe { libc::close(fd) };
}
