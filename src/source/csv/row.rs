//! One data record checked: its fields as text (UTF-8 or a problem), name-like values
//! (control characters), the enabled-column vocabulary; each problem with its line, column
//! and the value cut for the quarantine report.

use csv::ByteRecord;

use super::layout::{Layout, field};
use super::{CsvProblem, CsvSettings};
use crate::source::rules::has_control;

/// One data record being checked: `'r` borrows the record, `'p` the problem list.
pub(super) struct Row<'r, 'p> {
    pub(super) rec: &'r ByteRecord,
    pub(super) layout: &'r Layout,
    pub(super) line: u64,
    pub(super) problems: &'p mut Vec<RowProblem>,
}

/// A record-level problem and the value it is about (as read, lossily decoded, cut).
#[derive(Debug, Clone)]
pub(super) struct RowProblem {
    pub(super) problem: CsvProblem,
    pub(super) value: String,
}

/// How many bytes of a value a row problem keeps for the quarantine report.
pub(super) const KEPT_VALUE: usize = 256;

impl RowProblem {
    pub(super) fn new(problem: CsvProblem, value: &[u8]) -> Self {
        let cut = &value[..value.len().min(KEPT_VALUE)];
        RowProblem {
            problem,
            value: String::from_utf8_lossy(cut).into_owned(),
        }
    }
}

impl<'r> Row<'r, '_> {
    pub(super) fn problem(&mut self, column: usize, message: String) {
        self.problems.push(RowProblem::new(
            CsvProblem::at(self.line, Some(&self.layout.names[column]), message),
            field(self.rec, column),
        ));
    }

    /// Field `i` as text; `None` (and a problem) when it is not UTF-8.
    pub(super) fn text(&mut self, i: usize) -> Option<&'r str> {
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
    pub(super) fn name(&mut self, i: Option<usize>) -> Option<String> {
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

/// The enabled-column vocabulary, lower-cased once.
pub(super) struct Rules {
    pub(super) enabled: Vec<String>,
    pub(super) disabled: Vec<String>,
}

impl Rules {
    pub(super) fn new(settings: &CsvSettings) -> Self {
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
    pub(super) fn enabled(&self, value: &str) -> Option<bool> {
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

    pub(super) fn enabled_message(&self, value: &str, column: &str) -> String {
        format!(
            "unknown value {:?} in enabled column {column:?}: accepted are {} (enabled), {} (disabled), or empty (enabled)",
            value.trim(),
            self.enabled.join(", "),
            self.disabled.join(", ")
        )
    }
}
