//! Sources of truth: [`load`] reads the configured source (a CSV file, an LDAP directory) into a
//! complete [`Snapshot`] (or a prefiltered one), or fails with one [`SourceError`]; never a
//! partial one.

pub mod csv;
pub mod ldap;
pub mod live;
mod rules;

use crate::model::Snapshot;
use crate::plan::Prefilter;

/// `[source]`: which source of truth, with its settings.
#[derive(Debug, Clone)]
// Built once per process: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum SourceConfig {
    Csv(csv::CsvSettings),
    Ldap(ldap::LdapSettings),
}

impl SourceConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Csv(_) => "csv",
            SourceConfig::Ldap(_) => "ldap",
        }
    }

    /// Where the records come from, for reports: the CSV file or the LDAP server.
    pub fn origin(&self) -> String {
        match self {
            SourceConfig::Csv(c) => c.path.display().to_string(),
            SourceConfig::Ldap(l) => l.url.clone(),
        }
    }

    /// Names of the extra attributes the source reads (usable in templates).
    pub fn extra_attributes(&self) -> Vec<String> {
        match self {
            SourceConfig::Csv(c) => c.extra.keys().cloned().collect(),
            SourceConfig::Ldap(l) => l.extra.keys().cloned().collect(),
        }
    }
}

/// Why a source could not be read. Each kind names where it read (the CSV file's path, the
/// LDAP server's URL) and lists every problem, one a line, at most 50 of them.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The CSV file: its path and its problems.
    #[error(transparent)]
    Csv(#[from] csv::CsvError),
    /// The LDAP directory: the server URL and the problems of the read.
    #[error(transparent)]
    Ldap(#[from] ldap::LdapSourceError),
    /// The thread reading the file failed (nothing was read).
    #[error("the reader task failed: {0}")]
    Task(String),
}

impl SourceError {
    /// Where the source was read: the CSV file's path or the LDAP server's URL (`None` when the
    /// reader itself failed).
    pub fn origin(&self) -> Option<String> {
        match self {
            SourceError::Csv(e) => Some(e.path.display().to_string()),
            SourceError::Ldap(e) => Some(e.server.clone()),
            SourceError::Task(_) => None,
        }
    }

    /// Every problem, each as its line of the error shows it (without the origin).
    pub fn problems(&self) -> Vec<String> {
        match self {
            SourceError::Csv(e) => e.problems.iter().map(ToString::to_string).collect(),
            SourceError::Ldap(e) => e.problems.iter().map(ToString::to_string).collect(),
            SourceError::Task(message) => vec![message.clone()],
        }
    }
}

/// Reads the source. With a `prefilter` (a whole-source run), each user is offered to it as it
/// is read and only the users it keeps stay in memory (a [partial](Snapshot::is_partial)
/// snapshot, unless the read had to start again whole: see [`csv::load_filtered`] and
/// [`ldap::load_filtered`]); the prefilter comes back with its counts and marks. The CSV file
/// is read on a blocking thread.
pub async fn load(
    source: &SourceConfig,
    prefilter: Option<&mut Prefilter>,
) -> Result<Snapshot, SourceError> {
    match (source, prefilter) {
        (SourceConfig::Csv(settings), None) => {
            let settings = settings.clone();
            Ok(tokio::task::spawn_blocking(move || csv::load(&settings))
                .await
                .map_err(|e| SourceError::Task(e.to_string()))??)
        }
        (SourceConfig::Csv(settings), Some(prefilter)) => {
            let settings = settings.clone();
            let mut pf = std::mem::take(prefilter);
            let (read, pf) = tokio::task::spawn_blocking(move || {
                let read = csv::load_filtered(&settings, &mut |u| pf.keep(u));
                (read, pf)
            })
            .await
            .map_err(|e| SourceError::Task(e.to_string()))?;
            *prefilter = pf;
            Ok(read?)
        }
        (SourceConfig::Ldap(settings), None) => Ok(ldap::load(settings).await?),
        (SourceConfig::Ldap(settings), Some(prefilter)) => {
            Ok(ldap::load_filtered(settings, &mut |u| prefilter.keep(u)).await?)
        }
    }
}

/// Reads only the users of `keys` (sorted, unique) for a live run: the LDAP search narrowed to
/// them, or the whole CSV file kept to them. A key the source does not return is gone; a read
/// that fails is an error, never an empty answer.
pub async fn load_keys(source: &SourceConfig, keys: &[String]) -> Result<Snapshot, SourceError> {
    match source {
        SourceConfig::Csv(_) => Ok(ldap::only_keys(load(source, None).await?, keys)),
        SourceConfig::Ldap(settings) => Ok(ldap::load_keys(settings, keys).await?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_show_what_each_source_shows() {
        let e = SourceError::from(csv::CsvError {
            path: "users.csv".into(),
            problems: vec![
                csv::CsvProblem {
                    line: None,
                    column: None,
                    message: "missing column \"id\"".into(),
                },
                csv::CsvProblem {
                    line: Some(3),
                    column: Some("email".into()),
                    message: "empty email".into(),
                },
            ],
        });
        assert_eq!(
            e.to_string(),
            "users.csv: missing column \"id\"\nusers.csv:3: empty email"
        );
        assert_eq!(e.origin().as_deref(), Some("users.csv"));
        assert_eq!(
            e.problems(),
            ["missing column \"id\"", "line 3: empty email"]
        );
        let e = SourceError::from(ldap::LdapSourceError {
            server: "ldap://h".into(),
            problems: vec![ldap::LdapProblem {
                dn: Some("uid=a,dc=x".into()),
                attribute: None,
                message: "no key".into(),
                value: None,
            }],
        });
        assert_eq!(e.to_string(), "ldap://h: entry \"uid=a,dc=x\": no key");
        assert_eq!(e.origin().as_deref(), Some("ldap://h"));
        assert_eq!(e.problems(), ["entry \"uid=a,dc=x\": no key"]);
        let e = SourceError::Task("panicked".into());
        assert_eq!(e.to_string(), "the reader task failed: panicked");
        assert_eq!(e.origin(), None);
    }
}
