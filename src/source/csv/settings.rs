//! What `[source.csv]` configures: the file, the delimiter, the columns to read and the
//! enabled-column vocabulary, with their defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

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
