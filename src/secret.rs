//! A string that never prints itself: passwords, client secrets, tokens, URLs with passwords.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

/// A secret value. `Debug` and `Display` print `***`; the value is reachable only through
/// [`Secret::expose`], which call sites use at the moment they hand it to a client.
#[derive(Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value. Never log or format the result.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Serialises as `***` so that a config dump or a report can never carry the value.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// Where a configured secret comes from, kept unread in the validated configuration so that a
/// command reads only the secrets it uses (`plan` reads no target secret).
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Written in the config (or the environment).
    Inline(Secret),
    /// `<key>_file`: a file whose contents (trailing newlines trimmed) are the secret.
    File(PathBuf),
    /// `<key>_credential`: a systemd credential, the file `$CREDENTIALS_DIRECTORY/<name>`.
    Credential(String),
}

/// A secret setting and the config key it was given under (`target[0].password`), resolved
/// with [`SecretRef::resolve`] by the code that hands it to a client.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// The key the error names: `target[0].password_file`, `state.database_url_credential`.
    pub key: String,
    pub source: SecretSource,
}

/// Why a secret could not be read: names the config key, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SecretError {
    pub key: String,
    pub message: String,
}

/// The environment variable systemd sets to the directory of a unit's credentials
/// (`LoadCredential=`, `SetCredential=`, `systemd-run -p LoadCredential=...`).
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

impl SecretRef {
    /// A secret given inline (tests, programmatic configs).
    pub fn inline(key: impl Into<String>, value: impl Into<String>) -> Self {
        SecretRef {
            key: key.into(),
            source: SecretSource::Inline(Secret::new(value)),
        }
    }

    /// Reads the secret now, with the process's `$CREDENTIALS_DIRECTORY`.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        self.resolve_with(std::env::var_os(CREDENTIALS_DIRECTORY).as_deref())
    }

    /// Like [`SecretRef::resolve`], with an explicit credentials directory (for tests).
    pub fn resolve_with(&self, credentials_dir: Option<&OsStr>) -> Result<Secret, SecretError> {
        let fail = |message: String| SecretError {
            key: self.key.clone(),
            message,
        };
        let value = match &self.source {
            SecretSource::Inline(s) => {
                if s.is_empty() {
                    return Err(fail("empty".into()));
                }
                return Ok(s.clone());
            }
            SecretSource::File(path) => read_secret_file(path).map_err(fail)?,
            SecretSource::Credential(name) => {
                let dir = credentials_dir.filter(|d| !d.is_empty()).ok_or_else(|| {
                    fail(format!(
                        "credential {name:?}: ${CREDENTIALS_DIRECTORY} is not set (run under \
                         systemd with LoadCredential={name}:<file>, or use the _file form)"
                    ))
                })?;
                let path = Path::new(dir).join(name);
                read_secret_file(&path).map_err(|m| fail(format!("credential {name:?}: {m}")))?
            }
        };
        Ok(value)
    }
}

/// Reads a secret file: its contents with trailing newlines trimmed; empty is an error.
fn read_secret_file(path: &Path) -> Result<Secret, String> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let v = s.trim_end_matches(['\n', '\r']);
            if v.is_empty() {
                Err(format!("secret file {} is empty", path.display()))
            } else {
                Ok(Secret::new(v))
            }
        }
        Err(e) => Err(format!("cannot read secret file {}: {e}", path.display())),
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            SecretSource::Inline(_) => write!(f, "{}=***", self.key),
            SecretSource::File(p) => write!(f, "{} (file {})", self.key, p.display()),
            SecretSource::Credential(n) => write!(f, "{} (credential {n:?})", self.key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{:?}", Some(&s)), "Some(***)");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn secret_refs_resolve_and_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("covata-password"), "s3cret\n").unwrap();
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let cred = |name: &str| SecretRef {
            key: "target[0].password_credential".into(),
            source: SecretSource::Credential(name.into()),
        };
        let d = Some(dir.path().as_os_str());
        assert_eq!(
            cred("covata-password").resolve_with(d).unwrap().expose(),
            "s3cret"
        );
        let unset = cred("covata-password").resolve_with(None).unwrap_err();
        assert_eq!(unset.key, "target[0].password_credential");
        assert!(unset.message.contains("CREDENTIALS_DIRECTORY"), "{unset}");
        let missing = cred("nope").resolve_with(d).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("target[0].password_credential: "),
            "{missing}"
        );
        assert!(missing.message.contains("nope"), "{missing}");
        assert!(
            cred("empty")
                .resolve_with(d)
                .unwrap_err()
                .message
                .contains("empty")
        );
        let file = SecretRef {
            key: "state.database_url_file".into(),
            source: SecretSource::File(dir.path().join("absent")),
        };
        let e = file.resolve_with(d).unwrap_err();
        assert_eq!(e.key, "state.database_url_file");
        let inline = SecretRef::inline("target[0].password", "hunter2");
        assert_eq!(format!("{inline:?}"), "target[0].password=***");
        assert_eq!(inline.resolve_with(None).unwrap().expose(), "hunter2");
    }
}
