//! The read loop: records one by one (byte-order mark, blank lines, line numbers), each row
//! decoded into a user or its problems, the filtered read's hashes, then duplicates and the
//! quarantined records assembled into the snapshot.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;

use csv::ByteRecord;
use xxhash_rust::xxh3::xxh3_64;

use super::duplicates::{duplicate_emails, duplicate_keys, permute};
use super::layout::{field, is_blank, resolve};
use super::row::{Row, RowProblem, Rules};
use super::{CsvError, CsvProblem, CsvSettings};
use crate::model::{Quarantined, Snapshot, User};
use crate::source::rules::{email_error, fold_into, has_control};

/// Reads the first up to 3 bytes and gives back a reader of the whole input without the
/// UTF-8 byte-order mark.
pub(super) fn skip_bom<R: Read>(mut r: R) -> io::Result<io::Chain<io::Cursor<Vec<u8>>, R>> {
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

pub(super) fn io_problem(e: &io::Error) -> CsvProblem {
    CsvProblem::file(format!("cannot read file: {e}"))
}

pub(super) fn csv_problem(e: &csv::Error) -> CsvProblem {
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
pub(super) fn read<R: Read>(
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

    // Progress: records read (the total is not known before the end).
    let task = crate::progress::start("source", crate::progress::Phase::Read, None, None);
    while let Some(line) = next(&mut rdr, &mut rec)? {
        task.advance(1);
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

/// Reads the next non-blank record into `rec`; `None` at the end, else the line where the
/// record starts (see [`read`]).
pub(super) fn next_record<R: Read>(
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
