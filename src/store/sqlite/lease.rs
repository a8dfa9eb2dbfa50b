//! Leases and locks of the SQLite store: a run's lease (a lock on its byte of
//! `<database>-runs.lock`) and a target's lock row.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::Utc;
use sqlx::sqlite::SqlitePool;

use super::BACKEND;
use super::decode::format_ts;
use super::location::Location;
use crate::store::{LOCK_LEASE, StoreError, TargetLock};

/// Leases of running runs (see [`Store::begin_run`]): a write lock on byte `id` of
/// `<database>-runs.lock`, taken through a file opened for the run alone and dropped at its end.
/// The lock belongs to that open file description (Linux `F_OFD_SETLK`), not to the process, so
/// it conflicts with any other opening of the file, in this process or another, and the kernel
/// releases it when the process dies, however it dies. An in-memory database (one process by
/// definition) keeps only the set of held run ids.
#[derive(Debug, Default)]
pub(super) struct RunLeases {
    /// `None`: an in-memory database.
    file: Option<PathBuf>,
    held: std::sync::Mutex<HashMap<i64, Option<std::fs::File>>>,
}

impl RunLeases {
    pub(super) fn for_database(db: Option<&Path>) -> RunLeases {
        RunLeases {
            file: db.map(|db| {
                let mut name = db.as_os_str().to_os_string();
                name.push("-runs.lock");
                PathBuf::from(name)
            }),
            held: Default::default(),
        }
    }

    pub(super) fn held(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Option<std::fs::File>>> {
        // One insert or remove at a time: a panic cannot leave the map inconsistent.
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn error(&self, message: String) -> StoreError {
        StoreError::Lease {
            backend: BACKEND,
            path: self
                .file
                .as_deref()
                .map_or_else(|| "(memory)".into(), |p| p.display().to_string()),
            message,
        }
    }

    /// Opens (creating it like SQLite creates the database: 0644 less the umask) the lease file.
    pub(super) fn open(&self) -> Result<Option<std::fs::File>, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let Some(path) = &self.file else {
            return Ok(None);
        };
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map(Some)
            .map_err(|e| self.error(format!("cannot open: {e}")))
    }

    /// Takes the lease of run `id` (not yet visible to others): a file of its own, locked.
    pub(super) fn take(&self, id: i64) -> Result<Option<std::fs::File>, StoreError> {
        let file = self.open()?;
        if let Some(f) = &file
            && !lock_byte(f, id).map_err(|e| self.error(format!("cannot lock run {id}: {e}")))?
        {
            return Err(self.error(format!("the lease of new run {id} is held")));
        }
        Ok(file)
    }

    /// Whether run `id`'s lease is held by a live run: this store's, or another opening's.
    /// `probe` is a file opened for the check: a free lease is locked through it, so the caller
    /// holds it until it drops `probe`.
    pub(super) fn is_held(
        &self,
        probe: Option<&std::fs::File>,
        id: i64,
    ) -> Result<bool, StoreError> {
        if self.held().contains_key(&id) {
            return Ok(true);
        }
        match probe {
            None => Ok(false),
            Some(f) => lock_byte(f, id)
                .map(|got| !got)
                .map_err(|e| self.error(format!("cannot test the lease of run {id}: {e}"))),
        }
    }
}

/// Write-locks byte `at` of `file` through its open file description, without waiting: `false`
/// when another opening of the file holds it.
pub(super) fn lock_byte(file: &std::fs::File, at: i64) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: `flock` is plain old data; all-zero is a valid value, the fields that matter are
    // set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = at as libc::off_t;
    fl.l_len = 1;
    // Open file description locks need l_pid = 0.
    fl.l_pid = 0;
    // SAFETY: a valid open descriptor and a pointer to an initialised `flock` that lives for
    // the call.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

/// Takes or renews the lease on a target's lock row: succeeds when the row is free, expired, or
/// already ours.
pub(super) async fn take_lease(
    pool: &SqlitePool,
    loc: &Location,
    target: &str,
    holder: &str,
    context: &str,
) -> Result<bool, StoreError> {
    let now = Utc::now();
    let expires = now + chrono::Duration::from_std(LOCK_LEASE).unwrap_or(chrono::Duration::MAX);
    let done = sqlx::query(
        "INSERT INTO target_locks (target, holder, expires_at) VALUES (?, ?, ?) \
         ON CONFLICT (target) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
         WHERE target_locks.holder = excluded.holder OR target_locks.expires_at < ?",
    )
    .bind(target)
    .bind(holder)
    .bind(format_ts(&expires))
    .bind(format_ts(&now))
    .execute(pool)
    .await
    .map_err(loc.err(context))?;
    Ok(done.rows_affected() == 1)
}

pub(super) struct SqliteLock {
    pub(super) pool: SqlitePool,
    pub(super) loc: Location,
    pub(super) target: String,
    pub(super) holder: String,
    pub(super) context: String,
    pub(super) renew: tokio::task::JoinHandle<()>,
}

impl Drop for SqliteLock {
    fn drop(&mut self) {
        self.renew.abort();
    }
}

#[async_trait::async_trait]
impl TargetLock for SqliteLock {
    async fn release(self: Box<Self>) -> Result<(), StoreError> {
        self.renew.abort();
        sqlx::query("DELETE FROM target_locks WHERE target = ? AND holder = ?")
            .bind(&self.target)
            .bind(&self.holder)
            .execute(&self.pool)
            .await
            .map_err(self.loc.err(self.context.clone()))?;
        Ok(())
    }
}

/// Whether a lock holder (`host:pid#uuid`, see `run::instance_name`) is a process of this host
/// that no longer exists.
pub(super) fn holder_is_dead(holder: &str) -> bool {
    let Some((host, rest)) = holder
        .rsplit_once('#')
        .map(|(h, _)| h)
        .and_then(|h| h.rsplit_once(':'))
    else {
        return false;
    };
    let Ok(pid) = rest.parse::<i32>() else {
        return false;
    };
    let this_host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    if host != this_host || pid <= 0 || pid == std::process::id() as i32 {
        return false;
    }
    // SAFETY: kill(pid, 0) sends no signal; it only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    !alive
}
