//! CSV source of truth: reads one file into a complete [`Snapshot`], or reports every problem
//! of the file at once.
//!
//! # Format
//!
//! - UTF-8, with or without a byte-order mark; LF or CRLF line ends (a lone CR is not a line
//!   end); RFC 4180 quoting (`"a, b"`, `"say ""hi"""`, quoted newlines). One-byte delimiter
//!   ([`CsvSettings::delimiter`]: `,` `;` tab `|` ...).
//! - The first non-blank record is the header. Header names are matched to the configured
//!   columns trimmed and case-insensitively. Columns nobody configured are ignored, even when
//!   their header appears twice.
//! - Blank lines (nothing, or only spaces, or one empty quoted field) are skipped anywhere.
//! - Every value is trimmed and goes through [`User::normalized`] (names NFC, groups
//!   de-duplicated). Emails keep their case; duplicates are found with [`email_fold`](crate::model::email_fold).
//! - Enabled column: a value from [`CsvSettings::enabled_values`] or
//!   [`CsvSettings::disabled_values`], compared trimmed and case-insensitively. **An empty cell
//!   means enabled** (as does having no enabled column at all).
//! - Groups column: split on [`CsvSettings::groups_separator`], each part trimmed, empty parts
//!   dropped. An empty separator keeps the whole cell as one group.
//! - Values starting with `=`, `+`, `-` or `@` are data like any other; they are kept as they
//!   are (whoever writes them into a spreadsheet-bound report escapes them).
//!
//! # Problems
//!
//! Reading never stops at the first problem: every row is checked, with the line where the
//! offending record *starts* (1-based, counting physical lines, so a quoted field spanning
//! lines moves the following records down).
//!
//! - **File-level problems fail the read** (no snapshot, every problem returned in one
//!   [`CsvError`]): missing or ambiguous columns, a row whose field count differs from the
//!   header (a broken quote shifts everything after it), an unreadable or non-regular file, a
//!   file changed while read. The record-level problems of such a file are listed with them.
//! - **Record-level problems quarantine the record** ([`Quarantined`](crate::model::Quarantined), carried by the
//!   snapshot; nothing is planned under its key): invalid UTF-8 in a column the mapping uses;
//!   empty key; empty or invalid email; unknown enabled value; control characters (other
//!   than tab) in the key, names, mobile or groups; duplicate key; duplicate email
//!   (case-insensitive) — every record sharing the key or email, each naming the other line.
//!
//! Extra attributes may contain anything (including newlines); they are only trimmed and put
//! in NFC.
//!
//! An empty file, or one with only a header, is a valid snapshot of zero users: the safety
//! policy, not the parser, decides whether an empty source may be acted upon.

mod duplicates;
mod layout;
mod read;
mod row;
mod settings;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::rules::write_problems;
use crate::model::{Snapshot, User};
use read::read;
pub use settings::{CsvColumns, CsvSettings, DEFAULT_TIMEOUT};

/// Everything wrong with a CSV file. Displayed one problem a line, `path:line: message`
/// (`path: message` for problems of the whole file), at most 50 of them.
#[derive(Debug, thiserror::Error)]
pub struct CsvError {
    pub path: PathBuf,
    pub problems: Vec<CsvProblem>,
}

/// One problem, at a line (where its record starts) when it concerns one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvProblem {
    pub line: Option<u64>,
    /// The column concerned: its header as written in the file, or the configured name when
    /// the column is missing.
    pub column: Option<String>,
    pub message: String,
}

impl fmt::Display for CsvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        write_problems(f, &self.problems, |f, p| match p.line {
            Some(line) => write!(f, "{path}:{line}: {}", p.message),
            None => write!(f, "{path}: {}", p.message),
        })
    }
}

impl fmt::Display for CsvProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl CsvProblem {
    fn at(line: u64, column: Option<&str>, message: String) -> Self {
        CsvProblem {
            line: Some(line),
            column: column.map(str::to_string),
            message,
        }
    }

    fn file(message: String) -> Self {
        CsvProblem {
            line: None,
            column: None,
            message,
        }
    }
}

/// Reads `settings.path`. Synchronous: call it from `spawn_blocking`.
pub fn load(settings: &CsvSettings) -> Result<Snapshot, CsvError> {
    // Unfiltered, `read` always gives a snapshot.
    load_with(settings, None)?.ok_or_else(|| CsvError {
        path: settings.path.clone(),
        problems: vec![CsvProblem::file(
            "internal: unfiltered read gave no snapshot".into(),
        )],
    })
}

/// Reads `settings.path`, keeping only the users `keep` accepts (see
/// [`crate::plan::Prefilter`]): a [partial](Snapshot::is_partial) snapshot, whose memory grows
/// with the users kept, not with the file. Every row is checked as in [`load`], and duplicate
/// keys and emails across all rows are found from 64-bit hashes; when any two hashes are
/// equal (a duplicate, or a collision) or any row has a problem, the file is read again whole,
/// so that errors are reported exactly as [`load`] reports them (and a mere collision gives a
/// whole snapshot).
pub fn load_filtered(
    settings: &CsvSettings,
    keep: &mut dyn FnMut(&User) -> bool,
) -> Result<Snapshot, CsvError> {
    match load_with(settings, Some(keep))? {
        Some(snapshot) => Ok(snapshot),
        None => load(settings),
    }
}

/// `Ok(None)`: filtered, and the file must be read again whole (see [`load_filtered`]).
fn load_with(
    settings: &CsvSettings,
    keep: Option<&mut dyn FnMut(&User) -> bool>,
) -> Result<Option<Snapshot>, CsvError> {
    let path = &settings.path;
    let file = open_regular(path)?;
    let file = DeadlineReader::new(file, settings.timeout);
    // An export rewritten in place while it is read would give a mix of two files: compare the
    // open file's size and modification time before and after reading, and refuse a changed
    // one. (A file replaced by rename keeps the old content for this read: that is consistent.)
    let stamp = |f: &File| f.metadata().ok().map(|m| (m.len(), m.modified().ok()));
    let before = stamp(&file.inner);
    let check = file.inner.try_clone().ok();
    let snapshot = read(settings, path, file, keep)?;
    let after = check.as_ref().and_then(stamp);
    if before.is_none() || before != after {
        return Err(CsvError {
            path: path.clone(),
            problems: vec![CsvProblem::file(
                "the file changed while it was being read (rewritten in place?); nothing was \
                 loaded: write exports to a temporary file and rename it into place"
                    .to_string(),
            )],
        });
    }
    Ok(snapshot)
}

/// Opens the source file, refusing anything but a regular file (after following symlinks):
/// a FIFO would block the read until some writer appears, a directory or a device (such as
/// `/dev/zero`) is no export. The file is opened without blocking and checked on the open
/// descriptor, so a path swapped for a FIFO between a check and the open cannot hang the read.
fn open_regular(path: &Path) -> Result<File, CsvError> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let fail = |message: String| CsvError {
        path: path.to_path_buf(),
        problems: vec![CsvProblem::file(message)],
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| fail(format!("cannot open file: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| fail(format!("cannot read file: {e}")))?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let what = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO (named pipe)"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(fail(format!(
            "cannot read source.csv.path: it is {what}, not a regular file (point it at the \
             exported CSV file)"
        )));
    }
    // A regular file: clear O_NONBLOCK (no effect on regular files, but reads should not
    // depend on that).
    // SAFETY: fcntl on a descriptor this function owns, with integer arguments only.
    unsafe {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok(file)
}

/// A reader that fails with `TimedOut` once its deadline has passed: `source.timeout` bounds
/// the whole read, however slowly the data trickles in.
struct DeadlineReader<R> {
    inner: R,
    timeout: Duration,
    deadline: Option<std::time::Instant>,
}

impl<R> DeadlineReader<R> {
    fn new(inner: R, timeout: Duration) -> Self {
        DeadlineReader {
            inner,
            timeout,
            deadline: std::time::Instant::now().checked_add(timeout),
        }
    }
}

impl<R: Read> Read for DeadlineReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self
            .deadline
            .is_some_and(|d| std::time::Instant::now() >= d)
        {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the read took longer than source.timeout ({})",
                    humantime::format_duration(self.timeout)
                ),
            ));
        }
        self.inner.read(buf)
    }
}

/// Reads CSV data from `r`; `display_path` is only used in the error.
pub fn load_from_reader<R: Read>(
    settings: &CsvSettings,
    display_path: &Path,
    r: R,
) -> Result<Snapshot, CsvError> {
    read(settings, display_path, r, None)?.ok_or_else(|| CsvError {
        path: display_path.to_path_buf(),
        problems: vec![CsvProblem::file(
            "internal: unfiltered read gave no snapshot".into(),
        )],
    })
}
