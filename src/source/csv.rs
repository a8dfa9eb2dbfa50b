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
//!   de-duplicated). Emails keep their case; duplicates are found with [`email_fold`].
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
//! - **Record-level problems quarantine the record** ([`Quarantined`], carried by the
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

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use csv::ByteRecord;

use xxhash_rust::xxh3::xxh3_64;

use crate::model::{Quarantined, Snapshot, User, email_fold};

/// How to read the CSV source (`[source.csv]` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvSettings {
    pub path: PathBuf,
    /// Field delimiter, one byte. Default `b','`.
    pub delimiter: u8,
    pub columns: CsvColumns,
    /// Values (compared trimmed, case-insensitively) that mean enabled in the enabled column.
    pub enabled_values: Vec<String>,
    /// Values (compared trimmed, case-insensitively) that mean disabled in the enabled column.
    pub disabled_values: Vec<String>,
    /// Separator of the groups column. Default `";"`.
    pub groups_separator: String,
    /// Extra attributes: attribute name -> column header.
    pub extra: BTreeMap<String, String>,
    /// `source.timeout`: the whole read must finish within this (default 10m).
    pub timeout: Duration,
}

/// The default `source.timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Header names, in the file, of the columns to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvColumns {
    pub key: String,
    pub email: String,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub other_name: Option<String>,
    pub display_name: Option<String>,
    pub mobile: Option<String>,
    pub enabled: Option<String>,
    pub groups: Option<String>,
}

impl CsvColumns {
    /// Only the two required columns; the optional ones unset.
    pub fn new(key: impl Into<String>, email: impl Into<String>) -> Self {
        CsvColumns {
            key: key.into(),
            email: email.into(),
            given_name: None,
            family_name: None,
            other_name: None,
            display_name: None,
            mobile: None,
            enabled: None,
            groups: None,
        }
    }
}

impl CsvSettings {
    /// The default `(enabled_values, disabled_values)`.
    pub fn default_values() -> (Vec<String>, Vec<String>) {
        let enabled = ["true", "1", "yes", "y", "active", "enabled"];
        let disabled = ["false", "0", "no", "n", "inactive", "disabled", "suspended"];
        (
            enabled.iter().map(|s| (*s).to_string()).collect(),
            disabled.iter().map(|s| (*s).to_string()).collect(),
        )
    }

    /// Settings with every default (comma, default enabled/disabled values, `;` between
    /// groups, no extra attributes).
    pub fn new(path: impl Into<PathBuf>, columns: CsvColumns) -> Self {
        let (enabled_values, disabled_values) = Self::default_values();
        CsvSettings {
            path: path.into(),
            delimiter: b',',
            columns,
            enabled_values,
            disabled_values,
            groups_separator: ";".to_string(),
            extra: BTreeMap::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

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

/// How many problems [`CsvError`]'s `Display` lists before summarising the rest.
const SHOWN_PROBLEMS: usize = 50;

impl fmt::Display for CsvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        for (i, p) in self.problems.iter().take(SHOWN_PROBLEMS).enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            match p.line {
                Some(line) => write!(f, "{path}:{line}: {}", p.message)?,
                None => write!(f, "{path}: {}", p.message)?,
            }
        }
        if self.problems.len() > SHOWN_PROBLEMS {
            write!(
                f,
                "\n... and {} more problems",
                self.problems.len() - SHOWN_PROBLEMS
            )?;
        }
        Ok(())
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

/// Column indexes, resolved once from the header.
struct Layout {
    /// Header names as written (trimmed, lossily decoded), for messages.
    names: Vec<String>,
    key: usize,
    email: usize,
    given_name: Option<usize>,
    family_name: Option<usize>,
    other_name: Option<usize>,
    display_name: Option<usize>,
    mobile: Option<usize>,
    enabled: Option<usize>,
    groups: Option<usize>,
    extra: Vec<(String, usize)>,
}

/// Resolves the configured columns against the header; all missing and duplicate columns
/// are reported.
fn resolve(
    settings: &CsvSettings,
    header: &ByteRecord,
    line: u64,
) -> Result<Layout, Vec<CsvProblem>> {
    let names: Vec<String> = (0..header.len())
        .map(|i| String::from_utf8_lossy(field(header, i)).trim().to_string())
        .collect();
    let folded: Vec<String> = names.iter().map(|n| n.to_lowercase()).collect();
    let mut problems = Vec::new();
    let mut find = |wanted: &str, setting: &str| -> Option<usize> {
        let w = wanted.trim().to_lowercase();
        let hits: Vec<usize> = (0..folded.len()).filter(|&i| folded[i] == w).collect();
        match hits.as_slice() {
            [] => {
                let mut message = format!(
                    "missing column {wanted:?} ({setting}); header has: {}",
                    names.join(", ")
                );
                if let Some(hint) = delimiter_hint(settings.delimiter, &names) {
                    message.push_str(&hint);
                }
                problems.push(CsvProblem::at(line, Some(wanted), message));
                None
            }
            [one] => Some(*one),
            many => {
                let at: Vec<String> = many.iter().map(|i| (i + 1).to_string()).collect();
                problems.push(CsvProblem::at(
                    line,
                    Some(wanted),
                    format!(
                        "duplicate header {wanted:?} ({setting}): it is fields {} of the header",
                        at.join(", ")
                    ),
                ));
                None
            }
        }
    };
    let c = &settings.columns;
    let key = find(&c.key, "source.csv.columns.key");
    let email = find(&c.email, "source.csv.columns.email");
    let mut opt = |name: &Option<String>, setting: &str| name.as_deref().map(|n| find(n, setting));
    let given_name = opt(&c.given_name, "source.csv.columns.given_name");
    let family_name = opt(&c.family_name, "source.csv.columns.family_name");
    let other_name = opt(&c.other_name, "source.csv.columns.other_name");
    let display_name = opt(&c.display_name, "source.csv.columns.display_name");
    let mobile = opt(&c.mobile, "source.csv.columns.mobile");
    let enabled = opt(&c.enabled, "source.csv.columns.enabled");
    let groups = opt(&c.groups, "source.csv.columns.groups");
    let extra: Vec<(String, Option<usize>)> = settings
        .extra
        .iter()
        .map(|(attr, col)| (attr.clone(), find(col, &format!("source.csv.extra.{attr}"))))
        .collect();
    // `find` reported every column it could not resolve.
    if !problems.is_empty() {
        return Err(problems);
    }
    let (Some(key), Some(email)) = (key, email) else {
        return Err(problems);
    };
    // An `Option<Option<usize>>`: outer = configured, inner = found (always, by now).
    let flat = |o: Option<Option<usize>>| o.flatten();
    Ok(Layout {
        names,
        key,
        email,
        given_name: flat(given_name),
        family_name: flat(family_name),
        other_name: flat(other_name),
        display_name: flat(display_name),
        mobile: flat(mobile),
        enabled: flat(enabled),
        groups: flat(groups),
        extra: extra
            .into_iter()
            .filter_map(|(attr, i)| i.map(|i| (attr, i)))
            .collect(),
    })
}

/// When the header is a single field that contains another usual delimiter, says so.
fn delimiter_hint(delimiter: u8, names: &[String]) -> Option<String> {
    let [only] = names else { return None };
    [b',', b';', b'\t', b'|']
        .into_iter()
        .find(|&d| d != delimiter && only.as_bytes().contains(&d))
        .map(|d| {
            format!(
                " (the header is one field containing {:?}: is source.csv.delimiter {:?} right?)",
                char::from(d),
                char::from(delimiter)
            )
        })
}

/// Field `i` of a record. Records are split on LF only (see [`read`]), so the last field of
/// a CRLF line ends with the CR: it is dropped here.
#[inline]
fn field(rec: &ByteRecord, i: usize) -> &[u8] {
    let f = rec.get(i).unwrap_or_default();
    if i + 1 == rec.len() {
        f.strip_suffix(b"\r").unwrap_or(f)
    } else {
        f
    }
}

/// A record that is only a blank line.
fn is_blank(rec: &ByteRecord) -> bool {
    rec.len() == 1 && field(rec, 0).trim_ascii().is_empty()
}

/// Reads the first up to 3 bytes and gives back a reader of the whole input without the
/// UTF-8 byte-order mark.
fn skip_bom<R: Read>(mut r: R) -> io::Result<io::Chain<io::Cursor<Vec<u8>>, R>> {
    let mut head = [0u8; 3];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let prefix = if head[..n] == *b"\xEF\xBB\xBF" {
        Vec::new()
    } else {
        head[..n].to_vec()
    };
    Ok(io::Cursor::new(prefix).chain(r))
}

fn io_problem(e: &io::Error) -> CsvProblem {
    CsvProblem::file(format!("cannot read file: {e}"))
}

fn csv_problem(e: &csv::Error) -> CsvProblem {
    match e.kind() {
        csv::ErrorKind::Io(io) => io_problem(io),
        _ => CsvProblem::file(format!("cannot read file: {e}")),
    }
}

/// The whole read: header, rows, duplicates, snapshot.
///
/// Line numbers: csv's `Position::line()` of a record is where the reader stood after the
/// previous record, which is off when blank lines were skipped in between, and, with the
/// default CRLF terminator, off by one on CRLF files (the LF of a CRLF is consumed with the
/// *next* record). So records are split on LF only (the CR is dropped by [`field`]), a final
/// LF is appended to the input so that every record ends with one, and a record starts
/// `1 + (LFs inside its fields)` lines before where the reader stands after it.
///
/// With `keep` (see [`load_filtered`]): users it refuses are checked and counted but not kept;
/// `Ok(None)` asks for a whole read (a row problem, or two equal key or email hashes).
fn read<R: Read>(
    settings: &CsvSettings,
    path: &Path,
    r: R,
    mut keep: Option<&mut dyn FnMut(&User) -> bool>,
) -> Result<Option<Snapshot>, CsvError> {
    let fail = |problems: Vec<CsvProblem>| CsvError {
        path: path.to_path_buf(),
        problems,
    };
    let input = skip_bom(r)
        .map_err(|e| fail(vec![io_problem(&e)]))?
        .chain(&b"\n"[..]);
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(settings.delimiter)
        .terminator(csv::Terminator::Any(b'\n'))
        .buffer_capacity(1 << 16)
        .from_reader(input);
    let mut rec = ByteRecord::new();

    let next = |rdr: &mut csv::Reader<_>, rec: &mut ByteRecord| {
        next_record(rdr, rec).map_err(|e| fail(vec![csv_problem(&e)]))
    };

    let Some(header_line) = next(&mut rdr, &mut rec)? else {
        return Ok(Some(Snapshot::default()));
    };
    let layout = resolve(settings, &rec, header_line).map_err(fail)?;
    let width = rec.len();
    let rules = Rules::new(settings);

    // File-level problems (a field count off): the read fails.
    let mut problems: Vec<CsvProblem> = Vec::new();
    // Record-level problems, in line order: their records are quarantined (or, when the read
    // fails, listed with the file-level ones).
    let mut row_problems: Vec<RowProblem> = Vec::new();
    // Per user below: where its row's problems start in `row_problems`, if it has any.
    let mut bad: Vec<Option<usize>> = Vec::new();
    // Records with neither a usable key nor a usable email: (line, first problem index).
    let mut keyless: Vec<(u64, usize, Option<String>)> = Vec::new();
    let mut users: Vec<User> = Vec::new();
    // The line of each user, for the duplicate report.
    let mut lines: Vec<u64> = Vec::new();
    // Filtered: (key hash, folded email hash) of every row, and how many rows had a user.
    let mut hashes: Vec<(u64, u64)> = Vec::new();
    let mut total = 0usize;
    let mut fold_buf: Vec<u8> = Vec::new();

    while let Some(line) = next(&mut rdr, &mut rec)? {
        if rec.len() != width {
            problems.push(CsvProblem::at(
                line,
                None,
                format!(
                    "expected {width} fields as in the header, found {} (an unquoted {:?} in a value?)",
                    rec.len(),
                    char::from(settings.delimiter)
                ),
            ));
            continue;
        }
        let first_problem = row_problems.len();
        let mut row = Row {
            rec: &rec,
            layout: &layout,
            line,
            problems: &mut row_problems,
        };

        let key = row.text(layout.key).map(str::trim);
        let key = match key {
            Some("") => {
                row.problem(layout.key, "empty key".to_string());
                None
            }
            Some(k) if has_control(k) => {
                row.problem(layout.key, format!("control character in key {k:?}"));
                None
            }
            k => k,
        };
        let email = match row.text(layout.email).map(str::trim) {
            Some("") => {
                row.problem(layout.email, "empty email".to_string());
                None
            }
            Some(e) => match email_error(e) {
                Some(why) => {
                    row.problem(layout.email, format!("invalid email {e:?}: {why}"));
                    None
                }
                None => Some(e),
            },
            None => None,
        };
        let given_name = row.name(layout.given_name);
        let family_name = row.name(layout.family_name);
        let other_name = row.name(layout.other_name);
        let display_name = row.name(layout.display_name);
        let mobile = row.name(layout.mobile);
        let enabled = match layout.enabled {
            None => true,
            Some(i) => match row.text(i) {
                None => true,
                Some(v) => match rules.enabled(v) {
                    Some(b) => b,
                    None => {
                        let message = rules.enabled_message(v, &layout.names[i]);
                        row.problem(i, message);
                        true
                    }
                },
            },
        };
        let mut groups = Vec::new();
        if let Some(i) = layout.groups
            && let Some(cell) = row.text(i)
        {
            let mut add = |g: &str| {
                let g = g.trim();
                if g.is_empty() {
                    // `a;;b`, a trailing separator: nothing
                } else if has_control(g) {
                    row.problem(i, format!("control character in group {g:?}"));
                } else {
                    groups.push(g.to_string());
                }
            };
            let sep = settings.groups_separator.as_str();
            if sep.is_empty() {
                add(cell);
            } else {
                cell.split(sep).for_each(add);
            }
        }
        let mut extra = BTreeMap::new();
        for (attr, i) in &layout.extra {
            if let Some(v) = row.text(*i) {
                extra.insert(attr.clone(), v.to_string());
            }
        }

        // Every row with a usable key or email is kept, with its line, for the duplicate
        // check at the end. A row with a problem is quarantined: the rest of it is not built.
        let full = row_problems.len() == first_problem;
        let user = match (key, email) {
            (Some(k), Some(e)) if full => User {
                key: k.to_string(),
                email: e.to_string(),
                given_name,
                family_name,
                other_name,
                display_name,
                mobile,
                enabled,
                groups,
                extra,
            }
            .normalized(),
            (None, None) => {
                let email = std::str::from_utf8(field(&rec, layout.email))
                    .ok()
                    .map(str::to_string);
                keyless.push((line, first_problem, email));
                continue;
            }
            // An unusable key or email is left empty: the duplicate check skips empty ones.
            (k, e) => User::new(k.unwrap_or_default(), e.unwrap_or_default()),
        };
        if let Some(keep) = keep.as_mut() {
            if !problems.is_empty() || !row_problems.is_empty() {
                return Ok(None); // the whole read reports and quarantines as usual
            }
            total += 1;
            hashes.push((
                xxh3_64(user.key.as_bytes()),
                xxh3_64(fold_into(&user.email, &mut fold_buf)),
            ));
            if !keep(&user) {
                continue;
            }
        }
        users.push(user);
        lines.push(line);
        bad.push((!full).then_some(first_problem));
    }

    if keep.is_some() {
        if !problems.is_empty() || !row_problems.is_empty() {
            return Ok(None);
        }
        let mut by_key: Vec<u64> = hashes.iter().map(|h| h.0).collect();
        by_key.sort_unstable();
        let mut by_email: Vec<u64> = hashes.iter().map(|h| h.1).collect();
        by_email.sort_unstable();
        if by_key.windows(2).any(|w| w[0] == w[1]) || by_email.windows(2).any(|w| w[0] == w[1]) {
            return Ok(None);
        }
        return Snapshot::partial(users, total)
            .map(Some)
            .map_err(|d| fail(vec![CsvProblem::file(d.to_string())]));
    }
    let names = &layout.names;
    let (order, key_dups) = duplicate_keys(&users, &lines, &names[layout.key]);
    let email_dups = duplicate_emails(&users, &lines, &names[layout.email]);
    if !problems.is_empty() {
        // A file-level problem: no snapshot; every problem listed. Row problems were pushed in
        // line order, the duplicates after them: a stable sort puts each duplicate after the
        // other problems of its line.
        problems.extend(row_problems.into_iter().map(|p| p.problem));
        problems.extend(
            key_dups
                .into_iter()
                .chain(email_dups)
                .filter(|(_, also)| !also)
                .map(|(d, _)| d.1.problem),
        );
        problems.sort_by_key(|p| p.line);
        return Err(fail(problems));
    }

    // Record-level problems: each record concerned is quarantined once, its problems joined.
    // (index into `users` or `None` for a keyless record, line, problems in order)
    let mut records: BTreeMap<(u64, usize), (Option<usize>, Vec<RowProblem>)> = BTreeMap::new();
    let row_problems_of = |first: usize, line: u64| -> Vec<RowProblem> {
        row_problems[first..]
            .iter()
            .take_while(|p| p.problem.line == Some(line))
            .cloned()
            .collect()
    };
    for (i, first) in bad.iter().enumerate() {
        if let Some(first) = *first {
            records.insert((lines[i], i), (Some(i), row_problems_of(first, lines[i])));
        }
    }
    let mut keyless_email: BTreeMap<u64, Option<String>> = BTreeMap::new();
    for (line, first, email) in keyless {
        records.insert((line, usize::MAX), (None, row_problems_of(first, line)));
        keyless_email.insert(line, email);
    }
    for ((i, p), _) in key_dups.into_iter().chain(email_dups) {
        records
            .entry((lines[i], i))
            .or_insert_with(|| (Some(i), Vec::new()))
            .1
            .push(p);
    }
    let mut quarantined = Vec::with_capacity(records.len());
    let mut taken = vec![false; users.len()];
    for ((line, _), (i, ps)) in records {
        let Some(first) = ps.first() else { continue };
        let key = i.map(|i| users[i].key.as_str()).filter(|k| !k.is_empty());
        let problem = ps
            .iter()
            .map(|p| p.problem.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        // A keyless record carries its email, so that its recorded account can be found.
        let email = match i {
            Some(i) => Some(users[i].email.as_str()),
            None => keyless_email.get(&line).and_then(|e| e.as_deref()),
        };
        quarantined.push(
            Quarantined::new(
                key,
                format!("{}:{line}", path.display()),
                first.problem.column.clone().unwrap_or_default(),
                problem,
                &first.value,
            )
            .with_email(email),
        );
        if let Some(i) = i {
            taken[i] = true;
        }
    }
    if quarantined.is_empty() {
        // Hand the users over in key order, so that `Snapshot::new`'s sort only has to check
        // it.
        permute(&mut users, order);
        return Snapshot::new(users)
            .map(Some)
            .map_err(|d| fail(vec![CsvProblem::file(d.to_string())]));
    }
    let users: Vec<User> = users
        .into_iter()
        .zip(taken)
        .filter_map(|(u, t)| (!t).then_some(u))
        .collect();
    Snapshot::new(users)
        .map(|s| Some(s.with_quarantined(quarantined)))
        .map_err(|d| fail(vec![CsvProblem::file(d.to_string())]))
}

/// The first 8 bytes of `bytes`, zero-padded, big-endian: ordering by it then by the whole
/// value is ordering by the whole value, and most comparisons stop at it (the rest are a
/// `memcmp`).
#[inline]
fn prefix(bytes: &[u8]) -> u64 {
    let mut p = [0u8; 8];
    let n = bytes.len().min(8);
    p[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(p)
}

/// A duplicate found: ((index into the users, problem), whether it is the first occurrence,
/// which a failing read does not list).
type Duplicate = ((usize, RowProblem), bool);

/// Sorts the users with a key by key (then by line) and reports each repeated key, naming
/// the line of its first occurrence (and the first occurrence, naming the second line).
/// Returns the order (indexes into `users`).
fn duplicate_keys(users: &[User], lines: &[u64], column: &str) -> (Vec<usize>, Vec<Duplicate>) {
    let mut order: Vec<(u64, usize)> = users
        .iter()
        .enumerate()
        .filter(|(_, u)| !u.key.is_empty())
        .map(|(i, u)| (prefix(u.key.as_bytes()), i))
        .collect();
    let key = |e: &(u64, usize)| users[e.1].key.as_str();
    order.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| key(a).cmp(key(b)))
            .then(a.1.cmp(&b.1))
    });
    let mut problems: Vec<Duplicate> = Vec::new();
    let mut first = 0;
    for j in 1..order.len() {
        if order[j].0 == order[first].0 && key(&order[j]) == key(&order[first]) {
            let k = key(&order[j]);
            if j == first + 1 {
                let (a, b) = (order[first].1, order[j].1);
                let p = CsvProblem::at(
                    lines[a],
                    Some(column),
                    format!("duplicate key {k:?} (again on line {})", lines[b]),
                );
                problems.push(((a, RowProblem::new(p, k.as_bytes())), true));
            }
            let p = CsvProblem::at(
                lines[order[j].1],
                Some(column),
                format!(
                    "duplicate key {k:?} (first on line {})",
                    lines[order[first].1]
                ),
            );
            problems.push(((order[j].1, RowProblem::new(p, k.as_bytes())), false));
        } else {
            first = j;
        }
    }
    (order.into_iter().map(|e| e.1).collect(), problems)
}

/// Reports each email that an earlier row already has, compared as [`email_fold`] does.
///
/// Sorts `(hash of the folded email, index)` pairs: equal emails end up next to each other,
/// earliest row first; within a run of equal hashes the emails themselves are compared, so a
/// hash collision is never taken for a duplicate. ASCII emails are folded into a reused
/// buffer, without allocating.
fn duplicate_emails(users: &[User], lines: &[u64], column: &str) -> Vec<Duplicate> {
    let mut buf: Vec<u8> = Vec::new();
    let mut order: Vec<(u64, usize)> = Vec::with_capacity(users.len());
    for (i, u) in users.iter().enumerate() {
        if !u.email.is_empty() {
            order.push((xxh3_64(fold_into(&u.email, &mut buf)), i));
        }
    }
    order.sort_unstable();
    let mut problems: Vec<Duplicate> = Vec::new();
    // The distinct folded emails of the current run of equal hashes, with their first user:
    // one entry unless the hash collides, however often an email repeats.
    let mut distinct: Vec<(Vec<u8>, usize, bool)> = Vec::new();
    let mut run = 0;
    while run < order.len() {
        let mut end = run + 1;
        while end < order.len() && order[end].0 == order[run].0 {
            end += 1;
        }
        if end - run > 1 {
            distinct.clear();
            for &(_, b) in &order[run..end] {
                let folded = fold_into(&users[b].email, &mut buf);
                match distinct.iter_mut().find(|(f, _, _)| f.as_slice() == folded) {
                    Some((_, a, repeated)) => {
                        let a = *a;
                        if !*repeated {
                            *repeated = true;
                            let e = &users[a].email;
                            let p = CsvProblem::at(
                                lines[a],
                                Some(column),
                                format!("duplicate email {e:?} (again on line {})", lines[b]),
                            );
                            problems.push(((a, RowProblem::new(p, e.as_bytes())), true));
                        }
                        let e = &users[b].email;
                        let p = CsvProblem::at(
                            lines[b],
                            Some(column),
                            format!("duplicate email {e:?} (first on line {})", lines[a]),
                        );
                        problems.push(((b, RowProblem::new(p, e.as_bytes())), false));
                    }
                    None => distinct.push((folded.to_vec(), b, false)),
                }
            }
        }
        run = end;
    }
    problems
}

/// [`email_fold`] into `buf`, without allocating for ASCII emails.
fn fold_into<'b>(email: &str, buf: &'b mut Vec<u8>) -> &'b [u8] {
    buf.clear();
    if email.is_ascii() {
        buf.extend(email.trim().bytes().map(|b| b.to_ascii_lowercase()));
    } else {
        buf.extend_from_slice(email_fold(email).as_bytes());
    }
    buf
}

/// Reorders `items` so that `items[i]` becomes the old `items[order[i]]`; `order` must be a
/// permutation of `0..items.len()` (anything else leaves `items` in some order, never
/// loses an item). Linear, in place.
fn permute<T>(items: &mut [T], mut order: Vec<usize>) {
    if order.len() != items.len() {
        return;
    }
    for start in 0..order.len() {
        let mut cur = start;
        // Follow the cycle through `start`, marking each visited slot with its own index.
        loop {
            let next = order[cur];
            order[cur] = cur;
            if next == start || next == cur || next >= items.len() {
                break;
            }
            items.swap(cur, next);
            cur = next;
        }
    }
}

/// Reads the next non-blank record into `rec`; `None` at the end, else the line where the
/// record starts (see [`read`]).
fn next_record<R: Read>(
    rdr: &mut csv::Reader<R>,
    rec: &mut ByteRecord,
) -> Result<Option<u64>, csv::Error> {
    loop {
        if !rdr.read_byte_record(rec)? {
            return Ok(None);
        }
        if is_blank(rec) {
            continue;
        }
        let before = rec.position().map_or(1, csv::Position::line);
        let after = rdr.position().line();
        let newlines = rec.as_slice().iter().filter(|&&b| b == b'\n').count() as u64;
        // Never before where the reader stood: guards an unterminated quote at the very end
        // (the appended LF then sits inside the field).
        return Ok(Some(after.saturating_sub(1 + newlines).max(before)));
    }
}

/// One data record being checked: `'r` borrows the record, `'p` the problem list.
struct Row<'r, 'p> {
    rec: &'r ByteRecord,
    layout: &'r Layout,
    line: u64,
    problems: &'p mut Vec<RowProblem>,
}

/// A record-level problem and the value it is about (as read, lossily decoded, cut).
#[derive(Debug, Clone)]
struct RowProblem {
    problem: CsvProblem,
    value: String,
}

/// How many bytes of a value a row problem keeps for the quarantine report.
const KEPT_VALUE: usize = 256;

impl RowProblem {
    fn new(problem: CsvProblem, value: &[u8]) -> Self {
        let cut = &value[..value.len().min(KEPT_VALUE)];
        RowProblem {
            problem,
            value: String::from_utf8_lossy(cut).into_owned(),
        }
    }
}

impl<'r> Row<'r, '_> {
    fn problem(&mut self, column: usize, message: String) {
        self.problems.push(RowProblem::new(
            CsvProblem::at(self.line, Some(&self.layout.names[column]), message),
            field(self.rec, column),
        ));
    }

    /// Field `i` as text; `None` (and a problem) when it is not UTF-8.
    fn text(&mut self, i: usize) -> Option<&'r str> {
        let rec: &'r ByteRecord = self.rec;
        match std::str::from_utf8(field(rec, i)) {
            Ok(s) => Some(s),
            Err(e) => {
                let name = &self.layout.names[i];
                let message = format!(
                    "invalid UTF-8 in column {name:?} (after byte {} of the value)",
                    e.valid_up_to()
                );
                self.problem(i, message);
                None
            }
        }
    }

    /// An optional name-like column: trimmed, `None` when empty, a problem on control
    /// characters.
    fn name(&mut self, i: Option<usize>) -> Option<String> {
        let i = i?;
        let v = self.text(i)?.trim();
        if v.is_empty() {
            return None;
        }
        if has_control(v) {
            let name = &self.layout.names[i];
            self.problem(i, format!("control character in column {name:?}: {v:?}"));
            return None;
        }
        Some(v.to_string())
    }
}

/// Control characters other than tab (C0, DEL, C1).
fn has_control(s: &str) -> bool {
    // A branch-free pass over the bytes (vectorised) for C0 and DEL; C1 controls are
    // U+0080..=U+009F, encoded 0xC2 0x80..=0x9F, so only look for them when 0xC2 occurs.
    let (c0, c2) = s.bytes().fold((false, false), |(c0, c2), b| {
        (
            c0 | ((b < 0x20) & (b != b'\t')) | (b == 0x7f),
            c2 | (b == 0xc2),
        )
    });
    c0 || (c2 && s.chars().any(|c| c.is_control()))
}

/// Why `email` (trimmed, non-empty) is not an address, if it is not. Deliberately simple:
/// one `@`, something on both sides, no whitespace or control characters.
fn email_error(email: &str) -> Option<&'static str> {
    let Some((local, domain)) = email.split_once('@') else {
        return Some("no \"@\"");
    };
    if domain.contains('@') {
        return Some("more than one \"@\"");
    }
    if local.is_empty() {
        return Some("nothing before \"@\"");
    }
    if domain.is_empty() {
        return Some("nothing after \"@\"");
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("contains whitespace or control characters");
    }
    None
}

/// The enabled-column vocabulary, lower-cased once.
struct Rules {
    enabled: Vec<String>,
    disabled: Vec<String>,
}

impl Rules {
    fn new(settings: &CsvSettings) -> Self {
        let fold = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|s| s.trim().to_lowercase())
                .filter(|s| !s.is_empty())
                .collect()
        };
        Rules {
            enabled: fold(&settings.enabled_values),
            disabled: fold(&settings.disabled_values),
        }
    }

    /// `Some(enabled?)` for a known value (empty = enabled), `None` otherwise. The enabled
    /// list wins if a value is in both.
    fn enabled(&self, value: &str) -> Option<bool> {
        let v = value.trim();
        if v.is_empty() {
            return Some(true);
        }
        let is_in = |list: &[String]| {
            if v.is_ascii() {
                list.iter().any(|a| a.eq_ignore_ascii_case(v))
            } else {
                let low = v.to_lowercase();
                list.contains(&low)
            }
        };
        if is_in(&self.enabled) {
            Some(true)
        } else if is_in(&self.disabled) {
            Some(false)
        } else {
            None
        }
    }

    fn enabled_message(&self, value: &str, column: &str) -> String {
        format!(
            "unknown value {:?} in enabled column {column:?}: accepted are {} (enabled), {} (disabled), or empty (enabled)",
            value.trim(),
            self.enabled.join(", "),
            self.disabled.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CsvSettings {
        let mut columns = CsvColumns::new("id", "email");
        columns.given_name = Some("given".into());
        columns.family_name = Some("family".into());
        columns.display_name = Some("display".into());
        columns.mobile = Some("mobile".into());
        columns.enabled = Some("active".into());
        columns.groups = Some("groups".into());
        CsvSettings::new("users.csv", columns)
    }

    fn minimal() -> CsvSettings {
        CsvSettings::new("users.csv", CsvColumns::new("id", "email"))
    }

    #[test]
    fn reads_past_source_timeout_fail_naming_it() {
        let mut r = DeadlineReader::new(&b"id,email\n"[..], Duration::ZERO);
        let e = r.read(&mut [0; 8]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("source.timeout (0s)"), "{e}");
        let mut r = DeadlineReader::new(&b"id"[..], DEFAULT_TIMEOUT);
        let mut buf = [0; 8];
        assert_eq!(r.read(&mut buf).unwrap(), 2);
        // Through the whole load: a file read with no time left fails, naming the setting.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.csv");
        std::fs::write(&path, "id,email\nE1,a@example.com\n").unwrap();
        let mut s = CsvSettings::new(&path, CsvColumns::new("id", "email"));
        s.timeout = Duration::ZERO;
        let e = load(&s).unwrap_err().to_string();
        assert!(e.contains("source.timeout"), "{e}");
        s.timeout = DEFAULT_TIMEOUT;
        assert_eq!(load(&s).unwrap().len(), 1);
    }

    fn load_str(s: &CsvSettings, data: &str) -> Result<Snapshot, CsvError> {
        load_from_reader(s, Path::new("users.csv"), data.as_bytes())
    }

    fn load_bytes(s: &CsvSettings, data: &[u8]) -> Result<Snapshot, CsvError> {
        load_from_reader(s, Path::new("users.csv"), data)
    }

    /// A filtered read of `data` from a temp file, keeping keys for which `keep` says so.
    fn filtered(data: &str, keep: impl Fn(&str) -> bool) -> Result<Snapshot, CsvError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.csv");
        std::fs::write(&path, data).unwrap();
        let s = CsvSettings::new(&path, CsvColumns::new("id", "email"));
        load_filtered(&s, &mut |u: &User| keep(&u.key))
    }

    #[test]
    fn filtered_read_keeps_what_it_is_told_and_counts_everything() {
        let data = "id,email\nb,b@x.org\na,a@x.org\nc,c@x.org\nd,d@x.org\n";
        let snap = filtered(data, |k| k == "c" || k == "a").unwrap();
        assert!(snap.is_partial());
        assert_eq!(snap.len(), 4);
        let keys: Vec<&str> = snap.users().iter().map(|u| u.key.as_str()).collect();
        assert_eq!(keys, ["a", "c"]);
        // Nothing kept: still the count (no-change runs), and an empty file stays empty.
        let none = filtered(data, |_| false).unwrap();
        assert_eq!((none.len(), none.users().len()), (4, 0));
        assert_eq!(filtered("id,email\n", |_| false).unwrap().len(), 0);
    }

    #[test]
    fn filtered_read_reports_problems_and_duplicates_as_a_whole_read_does() {
        // A duplicate key and a duplicate email among dropped rows, and a bad row: the
        // quarantine is exactly that of the unfiltered read (which it is: a whole read), with
        // its lines; a file-level problem fails both alike.
        for data in [
            "id,email\na,a@x.org\nb,b@x.org\na,c@x.org\n",
            "id,email\na,a@x.org\nb,A@X.org\n",
            "id,email\na,a@x.org\nb,not-an-email\n",
        ] {
            let whole = load_str(&minimal(), data).unwrap();
            let f = filtered(data, |_| false).unwrap();
            assert!(!f.is_partial(), "{data:?}");
            assert!(!whole.quarantined().is_empty(), "{data:?}");
            // (the filtered read is of a file elsewhere: compare past the path)
            let strip = |s: &Snapshot| {
                s.quarantined()
                    .iter()
                    .map(|q| {
                        let mut q = q.clone();
                        q.location = q.location.rsplit('/').next().unwrap_or("").to_string();
                        q
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(strip(&f), strip(&whole), "{data:?}");
            assert_eq!(f.users(), whole.users(), "{data:?}");
            assert_eq!(f.len(), whole.len(), "{data:?}");
        }
        let data = "id,email\na,a@x.org\nb,not-an-email\nc\n";
        let whole = load_str(&minimal(), data).unwrap_err().problems;
        let e = filtered(data, |_| false).unwrap_err();
        assert_eq!(e.problems.len(), whole.len(), "{e}");
        for (a, b) in e.problems.iter().zip(&whole) {
            assert_eq!((a.line, &a.message), (b.line, &b.message));
        }
    }

    fn ok(s: &CsvSettings, data: &str) -> Snapshot {
        match load_str(s, data) {
            Ok(snap) => snap,
            Err(e) => panic!("unexpected error for {data:?}:\n{e}"),
        }
    }

    /// `(line, message)` of each problem: of the error (file-level problems fail the read), or
    /// of the quarantined records (a record's problems are joined with "; ").
    fn problems(s: &CsvSettings, data: &[u8]) -> Vec<(Option<u64>, String)> {
        match load_bytes(s, data) {
            Ok(snap) if snap.quarantined().is_empty() => {
                panic!("expected problems for {data:?}, got {} users", snap.len())
            }
            Ok(snap) => quarantine_problems(&snap),
            Err(e) => e
                .problems
                .into_iter()
                .map(|p| (p.line, p.message))
                .collect(),
        }
    }

    /// `(line, message)` of each problem of the quarantined records.
    fn quarantine_problems(snap: &Snapshot) -> Vec<(Option<u64>, String)> {
        snap.quarantined()
            .iter()
            .flat_map(|q| {
                let line = q.location.rsplit(':').next().and_then(|l| l.parse().ok());
                q.problem
                    .split("; ")
                    .map(move |m| (line, m.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Asserts exactly one problem, at `line`, whose message contains every fragment.
    fn one_problem(s: &CsvSettings, data: &str, line: u64, fragments: &[&str]) {
        let ps = problems(s, data.as_bytes());
        assert_eq!(ps.len(), 1, "{data:?}: {ps:#?}");
        assert_eq!(ps[0].0, Some(line), "{data:?}: {ps:#?}");
        for f in fragments {
            assert!(ps[0].1.contains(f), "{data:?}: {:?} lacks {f:?}", ps[0].1);
        }
    }

    fn keys(s: &Snapshot) -> Vec<&str> {
        s.users().iter().map(|u| u.key.as_str()).collect()
    }

    #[test]
    fn formats_that_parse() {
        // (description, settings delimiter, data, expected keys, expected emails by key order)
        type Case<'a> = (&'a str, u8, &'a str, &'a [&'a str], &'a [&'a str]);
        let cases: &[Case] = &[
            (
                "lf",
                b',',
                "id,email\nE1,a@x.com\nE2,b@x.com\n",
                &["E1", "E2"],
                &["a@x.com", "b@x.com"],
            ),
            (
                "crlf",
                b',',
                "id,email\r\nE1,a@x.com\r\nE2,b@x.com\r\n",
                &["E1", "E2"],
                &["a@x.com", "b@x.com"],
            ),
            (
                "no final newline",
                b',',
                "id,email\nE1,a@x.com",
                &["E1"],
                &["a@x.com"],
            ),
            (
                "bom",
                b',',
                "\u{feff}id,email\nE1,a@x.com\n",
                &["E1"],
                &["a@x.com"],
            ),
            (
                "bom crlf quoted header",
                b',',
                "\u{feff}\"id\",\"email\"\r\nE1,a@x.com\r\n",
                &["E1"],
                &["a@x.com"],
            ),
            (
                "semicolon",
                b';',
                "id;email\nE1;a@x.com\n",
                &["E1"],
                &["a@x.com"],
            ),
            (
                "tab",
                b'\t',
                "id\temail\nE1\ta@x.com\n",
                &["E1"],
                &["a@x.com"],
            ),
            (
                "pipe",
                b'|',
                "id|email\nE1|a@x.com\n",
                &["E1"],
                &["a@x.com"],
            ),
            (
                "header case and spaces",
                b',',
                " ID , Email \nE1,a@x.com\n",
                &["E1"],
                &["a@x.com"],
            ),
            (
                "columns in any order, unused duplicates",
                b',',
                "x,email,x,id\n1,a@x.com,2,E1\n",
                &["E1"],
                &["a@x.com"],
            ),
            (
                "values trimmed, email case kept",
                b',',
                "id,email\n  E1 ,  Alice@Example.COM \n",
                &["E1"],
                &["Alice@Example.COM"],
            ),
            (
                "blank lines skipped",
                b',',
                "\n\nid,email\n\nE1,a@x.com\r\n\r\n   \nE2,b@x.com\n\n",
                &["E1", "E2"],
                &["a@x.com", "b@x.com"],
            ),
            (
                "sorted by key",
                b',',
                "id,email\nE2,b@x.com\nE1,a@x.com\n",
                &["E1", "E2"],
                &["a@x.com", "b@x.com"],
            ),
            (
                "formula prefixes are data",
                b',',
                "id,email\n=1+1,=cmd@x.com\n-2,+a@x.com\n@3,b@x.com\n",
                &["-2", "=1+1", "@3"],
                &["+a@x.com", "=cmd@x.com", "b@x.com"],
            ),
        ];
        for (what, delim, data, want_keys, want_emails) in cases {
            let mut s = minimal();
            s.delimiter = *delim;
            let snap = ok(&s, data);
            assert_eq!(keys(&snap), *want_keys, "{what}");
            let emails: Vec<&str> = snap.users().iter().map(|u| u.email.as_str()).collect();
            assert_eq!(emails, *want_emails, "{what}");
        }
    }

    #[test]
    fn quoted_fields_and_line_numbers() {
        // A quoted comma, an escaped quote and a quoted newline (LF and CRLF) on line 2-3 and
        // 4-6: the later records' lines must count the physical lines.
        for nl in ["\n", "\r\n"] {
            let data = [
                "id,email,display,note",
                "E1,a@x.com,\"Doe, Jane\",\"multi",
                "line\"",
                "E2,b@x.com,\"say \"\"hi\"\"\",\"three",
                "",
                "lines\"",
                "E3,,x,y",
                "",
                "E4,,x,y",
            ]
            .join(nl);
            let mut s = minimal();
            s.columns.display_name = Some("display".into());
            s.extra.insert("note".into(), "note".into());
            let ps = problems(&s, data.as_bytes());
            assert_eq!(
                ps,
                vec![
                    (Some(7), "empty email".to_string()),
                    (Some(9), "empty email".to_string())
                ],
                "newline {nl:?}"
            );
            let fixed = data
                .replace("E3,,", "E3,c@x.com,")
                .replace("E4,,", "E4,d@x.com,");
            let snap = ok(&s, &fixed);
            let e1 = snap.get("E1").unwrap();
            assert_eq!(e1.display_name.as_deref(), Some("Doe, Jane"));
            assert_eq!(e1.field("note"), Some(format!("multi{nl}line").as_str()));
            let e2 = snap.get("E2").unwrap();
            assert_eq!(e2.display_name.as_deref(), Some("say \"hi\""));
            assert_eq!(
                e2.field("note"),
                Some(format!("three{nl}{nl}lines").as_str())
            );
            assert_eq!(snap.len(), 4);
        }
    }

    #[test]
    fn quoted_newline_in_extra_is_data() {
        let mut s = minimal();
        s.extra.insert("address".into(), "addr".into());
        let snap = ok(
            &s,
            "id,email,addr\nE1,a@x.com,\"1 Main St\nSpringfield\"\nE2,b@x.com,\n",
        );
        let e1 = snap.get("E1").unwrap();
        assert_eq!(
            e1.extra.get("address").map(String::as_str),
            Some("1 Main St\nSpringfield")
        );
        assert!(snap.get("E2").unwrap().extra.is_empty());
        // and the line after it is still numbered right
        let ps = problems(
            &s,
            b"id,email,addr\nE1,a@x.com,\"1 Main St\nSpringfield\"\n,b@x.com,\n",
        );
        assert_eq!(ps, vec![(Some(4), "empty key".to_string())]);
    }

    #[test]
    fn names_with_newline_are_rejected() {
        let mut s = minimal();
        s.columns.given_name = Some("given".into());
        one_problem(
            &s,
            "id,email,given\nE1,a@x.com,\"Ja\nne\"\nE2,b@x.com,Bob\n",
            2,
            &["control character", "\"given\""],
        );
    }

    #[test]
    fn each_row_problem_with_its_line() {
        let s = settings();
        let h = "id,email,given,family,display,mobile,active,groups\n";
        // (description, rows after the header, line, message fragments)
        let cases: &[(&str, &str, u64, &[&str])] = &[
            (
                "empty key",
                "E1,a@x.com,,,,,,\n  ,b@x.com,,,,,,\n",
                3,
                &["empty key"],
            ),
            ("empty email", "E1,,,,,,,\n", 2, &["empty email"]),
            ("blank email", "E1, ,,,,,,\n", 2, &["empty email"]),
            (
                "email without @",
                "E1,alice.x.com,,,,,,\n",
                2,
                &["invalid email \"alice.x.com\"", "no \"@\""],
            ),
            (
                "email with two @",
                "E1,a@b@x.com,,,,,,\n",
                2,
                &["invalid email", "more than one"],
            ),
            (
                "email without local part",
                "E1,@x.com,,,,,,\n",
                2,
                &["invalid email", "nothing before"],
            ),
            (
                "email without domain",
                "E1,alice@,,,,,,\n",
                2,
                &["invalid email", "nothing after"],
            ),
            (
                "email with space",
                "E1,al ice@x.com,,,,,,\n",
                2,
                &["invalid email", "whitespace"],
            ),
            (
                "unknown enabled",
                "E1,a@x.com,,,,,maybe,\n",
                2,
                &[
                    "unknown value \"maybe\"",
                    "\"active\"",
                    "true, 1, yes",
                    "false, 0, no",
                ],
            ),
            (
                "duplicate key",
                "E1,a@x.com,,,,,,\nE2,b@x.com,,,,,,\nE1,c@x.com,,,,,,\n",
                4,
                &["duplicate key \"E1\" (first on line 2)"],
            ),
            (
                "duplicate email, other case",
                "E1,a@x.com,,,,,,\nE2,b@x.com,,,,,,\nE3,A@X.Com,,,,,,\n",
                4,
                &["duplicate email \"A@X.Com\" (first on line 2)"],
            ),
            (
                "too few fields",
                "E1,a@x.com,,,,,\n",
                2,
                &["expected 8 fields", "found 7"],
            ),
            (
                "too many fields",
                "E1,a@x.com,,,,,,,\n",
                2,
                &["expected 8 fields", "found 9"],
            ),
            (
                "control char in given",
                "E1,a@x.com,Al\u{7}ice,,,,,\n",
                2,
                &["control character", "\"given\""],
            ),
            (
                "C1 control in family",
                "E1,a@x.com,,Sm\u{85}ith,,,,\n",
                2,
                &["control character", "\"family\""],
            ),
            (
                "control char in display",
                "E1,a@x.com,,,\"a\u{1b}b\",,,\n",
                2,
                &["control character", "\"display\""],
            ),
            (
                "control char in key",
                "E\u{0}1,a@x.com,,,,,,\n",
                2,
                &["control character in key"],
            ),
            (
                "control char in group",
                "E1,a@x.com,,,,,,a;b\u{7f}\n",
                2,
                &["control character in group"],
            ),
        ];
        for (what, rows, line, fragments) in cases {
            let data = format!("{h}{rows}");
            let mut ps = problems(&s, data.as_bytes());
            // A duplicate quarantines every record sharing it: the first names the repeat.
            if what.starts_with("duplicate") {
                assert_eq!(ps.len(), 2, "{what}: {ps:#?}");
                assert_eq!(ps[0].0, Some(2), "{what}: {ps:#?}");
                assert!(ps[0].1.contains("(again on line 4)"), "{what}: {ps:#?}");
                ps.remove(0);
            }
            assert_eq!(ps.len(), 1, "{what}: {ps:#?}");
            assert_eq!(ps[0].0, Some(*line), "{what}: {ps:#?}");
            for f in *fragments {
                assert!(ps[0].1.contains(f), "{what}: {:?} lacks {f:?}", ps[0].1);
            }
        }
    }

    #[test]
    fn tab_in_a_name_is_allowed() {
        let mut s = minimal();
        s.columns.given_name = Some("given".into());
        let snap = ok(&s, "id,email,given\nE1,a@x.com,\"Mary\tAnn\"\n");
        assert_eq!(snap.users()[0].given_name.as_deref(), Some("Mary\tAnn"));
    }

    #[test]
    fn problem_columns() {
        let s = settings();
        let data = "ID,Mail,given,family,display,mobile,active,groups\n,,,,,,nope,\n";
        let mut s2 = s.clone();
        s2.columns.email = "mail".into();
        // Record-level: quarantined, under the first column with a problem, every problem named.
        let snap = ok(&s2, data);
        let q = &snap.quarantined()[0];
        assert_eq!(q.field, "ID");
        assert!(q.problem.contains("empty email") && q.problem.contains("\"active\""));
        // Failing for a file-level problem, each problem names its column as written.
        let e = load_str(&s2, &format!("{data}E1,a@x.com\n")).unwrap_err();
        let cols: Vec<Option<&str>> = e.problems.iter().map(|p| p.column.as_deref()).collect();
        assert_eq!(cols, vec![Some("ID"), Some("Mail"), Some("active"), None]);
    }

    #[test]
    fn all_problems_reported_at_once() {
        let s = settings();
        let data = "\
id,email,given,family,display,mobile,active,groups
E1,a@x.com,Ann,,,,yes,
,b@x.com,,,,,,
E3,not-an-email,,,,,,
E4,d@x.com,,,,,perhaps,
E1,e@x.com,,,,,,
E6,A@x.com,,,,,,
E7,g@x.com,,,
E8,,,,,,nah,
";
        let ps = problems(&s, data.as_bytes());
        let want: Vec<(Option<u64>, &str)> = vec![
            (Some(3), "empty key"),
            (Some(4), "invalid email \"not-an-email\""),
            (Some(5), "unknown value \"perhaps\""),
            (Some(6), "duplicate key \"E1\" (first on line 2)"),
            (Some(7), "duplicate email \"A@x.com\" (first on line 2)"),
            (Some(8), "expected 8 fields as in the header, found 5"),
            (Some(9), "empty email"),
            (Some(9), "unknown value \"nah\""),
        ];
        assert_eq!(ps.len(), want.len(), "{ps:#?}");
        for ((line, msg), (wline, wfrag)) in ps.iter().zip(&want) {
            assert_eq!(line, wline, "{msg}");
            assert!(msg.contains(wfrag), "{msg:?} lacks {wfrag:?}");
        }
    }

    #[test]
    fn invalid_utf8_names_the_column() {
        let mut s = minimal();
        s.columns.given_name = Some("given".into());
        s.columns.family_name = Some("family".into());
        let data =
            b"id,email,given,family,unused\nE1,a@x.com,Ren\xe9,Doe,\xff\nE2,b@x.com,Bob,D\xc3,x\n";
        let ps = problems(&s, data);
        assert_eq!(
            ps,
            vec![
                (
                    Some(2),
                    "invalid UTF-8 in column \"given\" (after byte 3 of the value)".to_string()
                ),
                (
                    Some(3),
                    "invalid UTF-8 in column \"family\" (after byte 1 of the value)".to_string()
                ),
            ]
        );
        // invalid UTF-8 in a column nobody reads is fine
        let snap = ok(&s, "id,email,given,family,unused\nE1,a@x.com,A,B,ok\n");
        assert_eq!(snap.len(), 1);
        let good = b"id,email,given,family,unused\nE1,a@x.com,A,B,\xff\n";
        assert_eq!(load_bytes(&s, good).unwrap().len(), 1);
    }

    #[test]
    fn header_problems() {
        let mut s = settings();
        s.extra.insert("cost_centre".into(), "CostCentre".into());
        // (header, expected (line, message) list)
        let cases: &[(&str, &[&str])] = &[
            (
                "id,given,family,display,mobile,active,groups,costcentre\n",
                &[
                    "missing column \"email\" (source.csv.columns.email); header has: id, given, family, display, mobile, active, groups, costcentre",
                ],
            ),
            (
                "id,email,given,family,display,mobile,active,groups\n",
                &["missing column \"CostCentre\" (source.csv.extra.cost_centre)"],
            ),
            (
                "id,email,given,family,display,mobile,active,groups,costcentre,EMAIL\n",
                &[
                    "duplicate header \"email\" (source.csv.columns.email): it is fields 2, 10 of the header",
                ],
            ),
            (
                "email,mobile,active,groups,costcentre\n",
                &[
                    "missing column \"id\" (source.csv.columns.key)",
                    "missing column \"given\" (source.csv.columns.given_name)",
                    "missing column \"family\" (source.csv.columns.family_name)",
                    "missing column \"display\" (source.csv.columns.display_name)",
                ],
            ),
        ];
        for (header, want) in cases {
            // rows with problems are not checked once the header is wrong
            let data = format!("{header}E1,,,\n");
            let ps = problems(&s, data.as_bytes());
            assert_eq!(ps.len(), want.len(), "{header}: {ps:#?}");
            for ((line, msg), w) in ps.iter().zip(*want) {
                assert_eq!(*line, Some(1), "{msg}");
                assert!(msg.starts_with(w), "{msg:?} does not start with {w:?}");
            }
        }
    }

    #[test]
    fn wrong_delimiter_hint() {
        let ps = problems(&minimal(), b"id;email\nE1;a@x.com\n");
        let hint = "header has: id;email (the header is one field containing ';': is source.csv.delimiter ',' right?)";
        assert_eq!(
            ps,
            vec![
                (
                    Some(1),
                    format!("missing column \"id\" (source.csv.columns.key); {hint}")
                ),
                (
                    Some(1),
                    format!("missing column \"email\" (source.csv.columns.email); {hint}")
                ),
            ]
        );
        // the right delimiter reads it
        let mut s = minimal();
        s.delimiter = b';';
        assert_eq!(ok(&s, "id;email\nE1;a@x.com\n").len(), 1);
    }

    #[test]
    fn empty_and_header_only() {
        let s = settings();
        for data in [
            "",
            "\u{feff}",
            "\n\n",
            "\r\n",
            "id,email,given,family,display,mobile,active,groups\n",
            "\u{feff}id,email,given,family,display,mobile,active,groups",
        ] {
            let snap = ok(&s, data);
            assert!(snap.is_empty(), "{data:?}");
        }
        // A header-only file is still checked.
        one_problem(&minimal(), "id,given\n", 1, &["missing column \"email\""]);
    }

    #[test]
    fn enabled_values() {
        let s = settings();
        let h = "id,email,given,family,display,mobile,active,groups\n";
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("  ", true),
            ("true", true),
            ("TRUE", true),
            (" Yes ", true),
            ("y", true),
            ("1", true),
            ("Active", true),
            ("enabled", true),
            ("false", false),
            ("0", false),
            ("No", false),
            ("n", false),
            ("INACTIVE", false),
            ("disabled", false),
            ("Suspended", false),
        ];
        for (value, want) in cases {
            let snap = ok(&s, &format!("{h}E1,a@x.com,,,,,\"{value}\",\n"));
            assert_eq!(snap.users()[0].enabled, *want, "{value:?}");
        }
        // no enabled column: everyone enabled
        assert!(ok(&minimal(), "id,email\nE1,a@x.com\n").users()[0].enabled);
        // custom, non-ASCII vocabulary
        let mut c = s.clone();
        c.enabled_values = vec!["Ativo".into()];
        c.disabled_values = vec!["DESLIGADO".into(), "Ä".into()];
        let snap = ok(
            &c,
            &format!("{h}E1,a@x.com,,,,,ativo,\nE2,b@x.com,,,,,desligado,\nE3,c@x.com,,,,,ä,\n"),
        );
        let en: Vec<bool> = snap.users().iter().map(|u| u.enabled).collect();
        assert_eq!(en, vec![true, false, false]);
        one_problem(
            &c,
            &format!("{h}E1,a@x.com,,,,,true,\n"),
            2,
            &[
                "unknown value \"true\"",
                "ativo (enabled), desligado, ä (disabled)",
            ],
        );
    }

    #[test]
    fn groups_split() {
        let s = settings();
        let h = "id,email,given,family,display,mobile,active,groups\n";
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("staff", &["staff"]),
            ("staff; admins ;;", &["admins", "staff"]),
            (" Admins;admins;Staff", &["Admins", "Staff"]),
            ("a,b", &["a,b"]),
        ];
        for (cell, want) in cases {
            let snap = ok(&s, &format!("{h}E1,a@x.com,,,,,,\"{cell}\"\n"));
            assert_eq!(snap.users()[0].groups, *want, "{cell:?}");
        }
        let mut pipe = s.clone();
        pipe.groups_separator = "|".into();
        let snap = ok(&pipe, &format!("{h}E1,a@x.com,,,,,,b | a\n"));
        assert_eq!(snap.users()[0].groups, vec!["a", "b"]);
        let mut none = s.clone();
        none.groups_separator = String::new();
        let snap = ok(&none, &format!("{h}E1,a@x.com,,,,,,a;b\n"));
        assert_eq!(snap.users()[0].groups, vec!["a;b"]);
    }

    #[test]
    fn names_normalised() {
        let s = settings();
        let data = "id,email,given,family,display,mobile,active,groups\n\
            E1,bender@planetexpress.com,  Bender Bending ,Rodri\u{301}guez,Bender Bending Rodr\u{ed}guez, +1 555 0100 ,,Caf\u{e9}\n\
            E2,rene@x.com,Rene\u{301},,,,,Cafe\u{301}\n";
        let snap = ok(&s, data);
        let b = snap.get("E1").unwrap();
        assert_eq!(b.given_name.as_deref(), Some("Bender Bending"));
        assert_eq!(b.family_name.as_deref(), Some("Rodr\u{ed}guez"));
        assert_eq!(
            b.display_name.as_deref(),
            Some("Bender Bending Rodr\u{ed}guez")
        );
        assert_eq!(b.mobile.as_deref(), Some("+1 555 0100"));
        assert_eq!(b.other_name, None);
        assert_eq!(b.groups, vec!["Caf\u{e9}"]);
        let r = snap.get("E2").unwrap();
        assert_eq!(r.given_name.as_deref(), Some("Ren\u{e9}"));
        assert_eq!(r.groups, vec!["Caf\u{e9}"]);
        assert_eq!(r.family_name, None);
    }

    #[test]
    fn extra_columns() {
        let mut s = minimal();
        s.extra.insert("department".into(), "Dept".into());
        s.extra.insert("employee_no".into(), "EmpNo".into());
        s.columns.other_name = Some("nick".into());
        let snap = ok(
            &s,
            "id,email,dept,empno,nick\nE1,a@x.com, Sales ,=007,Al\nE2,b@x.com,,42,\n",
        );
        let a = snap.get("E1").unwrap();
        assert_eq!(a.extra.get("department").map(String::as_str), Some("Sales"));
        assert_eq!(a.extra.get("employee_no").map(String::as_str), Some("=007"));
        assert_eq!(a.other_name.as_deref(), Some("Al"));
        let b = snap.get("E2").unwrap();
        assert_eq!(b.extra.get("department"), None);
        assert_eq!(b.field("employee_no"), Some("42"));
    }

    #[test]
    fn same_column_for_key_and_email() {
        let s = CsvSettings::new("u.csv", CsvColumns::new("email", "email"));
        let snap = ok(&s, "email\na@x.com\nb@x.com\n");
        assert_eq!(keys(&snap), vec!["a@x.com", "b@x.com"]);
    }

    #[test]
    fn io_errors() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let e = load_from_reader(&minimal(), Path::new("x.csv"), Failing).unwrap_err();
        assert_eq!(
            e.problems,
            vec![CsvProblem::file("cannot read file: disk on fire".into())]
        );
        assert_eq!(e.to_string(), "x.csv: cannot read file: disk on fire");

        // fails after the first bytes: still one problem, no partial result
        let e = load_from_reader(
            &minimal(),
            Path::new("x.csv"),
            (&b"id,email\nE1,a@x.com\n"[..]).chain(Failing),
        )
        .unwrap_err();
        assert_eq!(e.problems.len(), 1);
        assert_eq!(e.problems[0].line, None);

        // a reader that hands out one byte at a time still finds the BOM
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let Some((first, rest)) = self.0.split_first() else {
                    return Ok(0);
                };
                if buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = *first;
                self.0 = rest;
                Ok(1)
            }
        }
        let snap = load_from_reader(
            &minimal(),
            Path::new("x.csv"),
            Trickle("\u{feff}id,email\r\nE1,a@x.com\r\n".as_bytes()),
        )
        .unwrap();
        assert_eq!(keys(&snap), vec!["E1"]);
        let e = load_from_reader(&minimal(), Path::new("x.csv"), Trickle(b"id")).unwrap_err();
        assert_eq!(e.problems.len(), 1);
    }

    #[test]
    fn display_caps_at_fifty() {
        let mut data = String::from("id,email\n");
        for _ in 0..60 {
            data.push_str(",a@x.com\n");
        }
        // A row with too few fields makes it a failing read, which lists every problem.
        data.push_str("E1\n");
        let e = load_str(&minimal(), &data).unwrap_err();
        // 60 empty keys, 59 duplicate emails, 1 field count
        assert_eq!(e.problems.len(), 120);
        let text = e.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 51);
        assert_eq!(lines[0], "users.csv:2: empty key");
        assert_eq!(lines[1], "users.csv:3: empty key");
        assert_eq!(
            lines[2],
            "users.csv:3: duplicate email \"a@x.com\" (first on line 2)"
        );
        assert_eq!(lines[50], "... and 70 more problems");

        let small = CsvError {
            path: "f.csv".into(),
            problems: vec![
                CsvProblem::file("x".into()),
                CsvProblem::at(3, None, "y".into()),
            ],
        };
        assert_eq!(small.to_string(), "f.csv: x\nf.csv:3: y");
    }

    #[test]
    fn duplicates_in_depth() {
        let s = minimal();
        // (rows after the header, expected (line, message) list)
        let cases: &[(&str, &[(u64, &str)])] = &[
            (
                "E1,a@x.com\nE1,b@x.com\nE1,c@x.com\n",
                &[
                    (2, "duplicate key \"E1\" (again on line 3)"),
                    (3, "duplicate key \"E1\" (first on line 2)"),
                    (4, "duplicate key \"E1\" (first on line 2)"),
                ],
            ),
            // keys are compared exactly (case and all), after trimming
            ("e1,a@x.com\nE1,b@x.com\n", &[]),
            (
                " E1 ,a@x.com\nE1,b@x.com\n",
                &[
                    (2, "duplicate key \"E1\" (again on line 3)"),
                    (3, "duplicate key \"E1\" (first on line 2)"),
                ],
            ),
            // long keys sharing the 8-byte sort prefix
            (
                "user-000001,a@x.com\nuser-000002,b@x.com\nuser-000001,c@x.com\n",
                &[
                    (2, "duplicate key \"user-000001\" (again on line 4)"),
                    (4, "duplicate key \"user-000001\" (first on line 2)"),
                ],
            ),
            // emails: case-insensitively, non-ASCII too, and across ASCII/non-ASCII
            (
                "E1,\u{c9}mile@x.com\nE2,\u{e9}MILE@X.com\nE3,emile@x.com\n",
                &[
                    (2, "duplicate email \"\u{c9}mile@x.com\" (again on line 3)"),
                    (3, "duplicate email \"\u{e9}MILE@X.com\" (first on line 2)"),
                ],
            ),
            (
                "E1,Kelvin@x.com\nE2,\u{212a}elvin@x.com\n",
                &[
                    (2, "duplicate email \"Kelvin@x.com\" (again on line 3)"),
                    (
                        3,
                        "duplicate email \"\u{212a}elvin@x.com\" (first on line 2)",
                    ),
                ],
            ),
            (
                "E1,a@x.com\nE2,b@x.com\nE3,A@X.COM\nE4,B@x.com\nE5,a@x.com\n",
                &[
                    (2, "duplicate email \"a@x.com\" (again on line 4)"),
                    (3, "duplicate email \"b@x.com\" (again on line 5)"),
                    (4, "duplicate email \"A@X.COM\" (first on line 2)"),
                    (5, "duplicate email \"B@x.com\" (first on line 3)"),
                    (6, "duplicate email \"a@x.com\" (first on line 2)"),
                ],
            ),
            // a row with an unusable email still takes part with its key, and vice versa
            (
                "E1,bad\nE1,a@x.com\n,a@x.com\n",
                &[
                    (2, "invalid email \"bad\": no \"@\""),
                    (2, "duplicate key \"E1\" (again on line 3)"),
                    (3, "duplicate key \"E1\" (first on line 2)"),
                    (3, "duplicate email \"a@x.com\" (again on line 4)"),
                    (4, "empty key"),
                    (4, "duplicate email \"a@x.com\" (first on line 3)"),
                ],
            ),
        ];
        for (rows, want) in cases {
            let data = format!("id,email\n{rows}");
            // Every record sharing a key or email is quarantined; the rest are users.
            let snap = ok(&s, &data);
            assert_eq!(snap.len(), rows.lines().count(), "{rows:?}");
            let got = quarantine_problems(&snap);
            let want: Vec<(Option<u64>, String)> = want
                .iter()
                .map(|(l, m)| (Some(*l), (*m).to_string()))
                .collect();
            assert_eq!(got, want, "{rows:?}");
        }
    }

    #[test]
    fn mass_repeats_stay_linear() {
        // 20 000 rows with one key and one email: every repeat named, quickly.
        let mut data = String::from("id,email\n");
        for _ in 0..20_000 {
            data.push_str("E1,Same@x.com\n");
        }
        let started = std::time::Instant::now();
        let snap = ok(&minimal(), &data);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(snap.users().is_empty());
        assert_eq!(snap.quarantined().len(), 20_000);
        let last = &snap.quarantined()[19_999];
        assert_eq!(last.location, "users.csv:20001");
        assert_eq!(
            last.problem,
            "duplicate key \"E1\" (first on line 2); duplicate email \"Same@x.com\" (first on line 2)"
        );
    }

    #[test]
    fn permute_reorders_in_place() {
        let cases: &[(&[usize], &str)] = &[
            (&[], ""),
            (&[0], "a"),
            (&[2, 0, 1], "cab"),
            (&[1, 0, 3, 2], "badc"),
            (&[4, 3, 2, 1, 0], "edcba"),
            (&[0, 1, 2, 3, 4], "abcde"),
        ];
        for (order, want) in cases {
            let mut items: Vec<char> = "abcde".chars().take(order.len()).collect();
            permute(&mut items, order.to_vec());
            assert_eq!(items.iter().collect::<String>(), *want, "{order:?}");
        }
        // a wrong order never loses items
        let mut items = vec!['a', 'b', 'c'];
        permute(&mut items, vec![0, 0, 7]);
        items.sort_unstable();
        assert_eq!(items, ['a', 'b', 'c']);
        permute(&mut items, vec![1]);
        assert_eq!(items, ['a', 'b', 'c']);
    }

    #[test]
    fn sort_prefix_orders_like_the_bytes() {
        let words = [
            "abcdefgh",
            "abcdefgh1",
            "abcdefgi",
            "",
            "a",
            "a\0",
            "a\0b",
            "ab",
            "abcdefgh",
            "abcdefghi",
            "abcdefgh\0",
            "b",
            "\u{e9}",
        ];
        for x in words {
            for y in words {
                let (px, py) = (prefix(x.as_bytes()), prefix(y.as_bytes()));
                if px != py {
                    assert_eq!(px.cmp(&py), x.cmp(y), "{x:?} {y:?}");
                }
            }
        }
    }

    #[test]
    fn control_characters() {
        let cases: &[(&str, bool)] = &[
            ("Alice", false),
            ("Mary\tAnn", false),
            ("Ren\u{e9} \u{c2}ngstr\u{f6}m", false),
            ("non\u{a0}breaking", false), // 0xC2 0xA0: not C1
            ("\u{1f600}", false),
            ("a\nb", true),
            ("a\rb", true),
            ("\u{0}", true),
            ("a\u{1b}[31m", true),
            ("del\u{7f}", true),
            ("nel\u{85}", true),
            ("c1\u{9f}", true),
            ("Ren\u{e9}\u{7}", true),
        ];
        for (s, want) in cases {
            assert_eq!(has_control(s), *want, "{s:?}");
        }
    }

    #[test]
    fn email_folding_matches_the_model() {
        let mut buf = Vec::new();
        for e in [
            "a@x.com",
            "Alice@Example.COM",
            "\u{c9}mile@X.com",
            "\u{212a}@x",
            "\u{130}@x",
            "\u{3a3}\u{3a3}@x",
        ] {
            assert_eq!(fold_into(e, &mut buf), email_fold(e).as_bytes(), "{e:?}");
        }
    }

    #[test]
    fn unterminated_quote_at_the_end() {
        // The quote swallows the rest of the file: one field, reported where it starts.
        for tail in ["", "\n", "\r\n"] {
            let data = format!("id,email\nE1,a@x.com\n\"E2,b@x.com{tail}");
            let ps = problems(&minimal(), data.as_bytes());
            assert_eq!(ps.len(), 1, "{tail:?}: {ps:?}");
            assert_eq!(ps[0].0, Some(3), "{tail:?}: {ps:?}");
            assert!(
                ps[0]
                    .1
                    .starts_with("expected 2 fields as in the header, found 1")
            );
        }
    }

    #[test]
    fn display_of_exactly_fifty() {
        let problems: Vec<CsvProblem> = (1..=50)
            .map(|l| CsvProblem::at(l, None, format!("p{l}")))
            .collect();
        let e = CsvError {
            path: "f.csv".into(),
            problems,
        };
        let text = e.to_string();
        assert_eq!(text.lines().count(), 50);
        assert!(text.ends_with("f.csv:50: p50"));
    }

    #[test]
    fn defaults() {
        let (en, dis) = CsvSettings::default_values();
        assert_eq!(en, ["true", "1", "yes", "y", "active", "enabled"]);
        assert_eq!(
            dis,
            ["false", "0", "no", "n", "inactive", "disabled", "suspended"]
        );
        let s = minimal();
        assert_eq!(s.delimiter, b',');
        assert_eq!(s.groups_separator, ";");
    }
}
