//! Where the SQLite database lives, and what the file system shows when SQLite fails on it
//! (full, read-only, cannot open), for every error message.

use std::path::Path;
use std::sync::Arc;

use super::BACKEND;
use crate::store::StoreError;

/// Where the database lives. Every query error names the file, and when SQLite reports a failure
/// the file system causes (full, read-only, cannot open, I/O), says what the file system shows
/// (see [`diagnose`]): "database or disk is full" alone does not say which disk.
#[derive(Debug, Clone)]
pub(super) struct Location {
    /// `None`: an in-memory database.
    pub(super) file: Option<Arc<Path>>,
}

impl Location {
    /// The error of a query on this database, for `context` (what was being done).
    pub(super) fn err(&self, context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StoreError {
        let context = context.into();
        let loc = self.clone();
        move |source| StoreError::Query {
            backend: BACKEND,
            context: loc.describe(&context, &source),
            source,
        }
    }

    /// `<file>[: <what the file system shows>][: <context>]`.
    pub(super) fn describe(&self, context: &str, e: &sqlx::Error) -> String {
        let mut text = match &self.file {
            None => "in-memory database".to_string(),
            Some(file) => match diagnose(file, e) {
                Some(why) => format!("{}: {why}", file.display()),
                None => file.display().to_string(),
            },
        };
        if !context.is_empty() {
            text.push_str(": ");
            text.push_str(context);
        }
        text
    }
}

/// SQLite's primary result codes that the environment causes.
pub(super) const SQLITE_READONLY: i32 = 8;
pub(super) const SQLITE_IOERR: i32 = 10;
pub(super) const SQLITE_FULL: i32 = 13;
pub(super) const SQLITE_CANTOPEN: i32 = 14;

/// Below this much free space a file system that made SQLite fail counts as full: SQLite needs
/// room for its WAL, its shared-memory index and new pages, not one byte.
pub(super) const NEARLY_FULL: u64 = 1 << 20;

/// Why the file system holding `file` refuses writes, when `e` is a failure it can cause and the
/// file system shows a reason: read-only, (nearly) no space left, a directory dirsync may not
/// write to. `None` otherwise (the error then speaks for itself).
pub(super) fn diagnose(file: &Path, e: &sqlx::Error) -> Option<String> {
    let code: i32 = e.as_database_error()?.code()?.parse().ok()?;
    let primary = code & 0xff;
    if !matches!(
        primary,
        SQLITE_READONLY | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN
    ) {
        return None;
    }
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let c_dir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: `c_dir` is a valid NUL-terminated path and `vfs` a writable statvfs.
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    let stat_ok = unsafe { libc::statvfs(c_dir.as_ptr(), &mut vfs) } == 0;
    if stat_ok && vfs.f_flag & libc::ST_RDONLY != 0 {
        return Some(format!(
            "the file system holding {} is read-only (dirsync must write its journal there)",
            dir.display()
        ));
    }
    if stat_ok {
        // `fsblkcnt_t` and `c_ulong` are u64 on 64-bit Linux, narrower elsewhere.
        #[allow(clippy::useless_conversion)]
        let free = u64::from(vfs.f_bavail).saturating_mul(u64::from(vfs.f_frsize));
        if primary == SQLITE_FULL || free < NEARLY_FULL {
            return Some(format!(
                "no space left on the file system holding {} ({free} bytes free): free some \
                 space, then run again",
                dir.display()
            ));
        }
    }
    // SAFETY: as above; access() only reads the path.
    if unsafe { libc::access(c_dir.as_ptr(), libc::W_OK) } != 0 {
        return Some(format!(
            "the directory {} is not writable for this user ({})",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    if primary == SQLITE_READONLY {
        return Some("the database file is read-only".to_string());
    }
    None
}
