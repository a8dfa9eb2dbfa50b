//! The header: configured columns resolved to indexes once (trimmed, case-insensitive), with
//! the problems of missing or ambiguous columns, and field access on a record.

use csv::ByteRecord;

use super::{CsvProblem, CsvSettings};

/// Column indexes, resolved once from the header.
pub(super) struct Layout {
    /// Header names as written (trimmed, lossily decoded), for messages.
    pub(super) names: Vec<String>,
    pub(super) key: usize,
    pub(super) email: usize,
    pub(super) given_name: Option<usize>,
    pub(super) family_name: Option<usize>,
    pub(super) other_name: Option<usize>,
    pub(super) display_name: Option<usize>,
    pub(super) mobile: Option<usize>,
    pub(super) enabled: Option<usize>,
    pub(super) groups: Option<usize>,
    pub(super) extra: Vec<(String, usize)>,
}

/// Resolves the configured columns against the header; all missing and duplicate columns
/// are reported.
pub(super) fn resolve(
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
pub(super) fn delimiter_hint(delimiter: u8, names: &[String]) -> Option<String> {
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
pub(super) fn field(rec: &ByteRecord, i: usize) -> &[u8] {
    let f = rec.get(i).unwrap_or_default();
    if i + 1 == rec.len() {
        f.strip_suffix(b"\r").unwrap_or(f)
    } else {
        f
    }
}

/// A record that is only a blank line.
pub(super) fn is_blank(rec: &ByteRecord) -> bool {
    rec.len() == 1 && field(rec, 0).trim_ascii().is_empty()
}
