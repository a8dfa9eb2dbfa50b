//! Warnings about configuration and secret files that other users can read.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Keys whose value is a secret when given inline.
const SECRET_KEYS: &[&str] = &[
    "password",
    "client_secret",
    "bind_password",
    "hmac_secret",
    "database_url",
];

fn readable_by_others(path: &Path) -> Option<u32> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then_some(mode & 0o777)
}

fn walk(v: &toml::Value, base: &Path, inline: &mut bool, files: &mut Vec<std::path::PathBuf>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                if let toml::Value::String(s) = v {
                    if SECRET_KEYS.contains(&k.as_str()) {
                        *inline = true;
                    }
                    if let Some(stem) = k.strip_suffix("_file")
                        && SECRET_KEYS.contains(&stem)
                    {
                        let p = Path::new(s);
                        files.push(if p.is_absolute() {
                            p.to_path_buf()
                        } else {
                            base.join(p)
                        });
                    }
                }
                walk(v, base, inline, files);
            }
        }
        toml::Value::Array(a) => {
            for v in a {
                walk(v, base, inline, files);
            }
        }
        _ => {}
    }
}

/// Warnings for a configuration at `path`: the file holds secrets inline and is readable by
/// group or others, or a secret file it names is. Never an error: dirsync still runs.
pub fn warnings(path: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let Ok(table) = toml::from_str::<toml::Table>(&text) else {
        return Vec::new();
    };
    let value = toml::Value::Table(table);
    let base = path.parent().unwrap_or(Path::new("."));
    let mut inline = false;
    let mut files = Vec::new();
    walk(&value, base, &mut inline, &mut files);
    let mut out = Vec::new();
    if inline && let Some(mode) = readable_by_others(path) {
        out.push(format!(
            "{} holds secrets and is readable by group or others (mode {mode:o}): chmod 600 it, or move the secrets to *_file or *_credential settings",
            path.display()
        ));
    }
    for f in files {
        if let Some(mode) = readable_by_others(&f) {
            out.push(format!(
                "secret file {} is readable by group or others (mode {mode:o}): chmod 600 it",
                f.display()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn warns_about_readable_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("dirsync.toml");
        std::fs::write(
            &cfg,
            "[[target]]\nname = \"t\"\npassword = \"pw\"\nclient_secret_file = \"cs\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("cs"), "x").unwrap();
        chmod(&cfg, 0o644);
        chmod(&dir.path().join("cs"), 0o640);
        let w = warnings(&cfg);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("holds secrets") && w[0].contains("644"),
            "{w:?}"
        );
        assert!(
            w[1].contains("secret file") && w[1].contains("640"),
            "{w:?}"
        );
        assert!(
            !w.iter().any(|m| m.contains("pw")),
            "a warning printed the secret"
        );
        chmod(&cfg, 0o600);
        chmod(&dir.path().join("cs"), 0o600);
        assert!(warnings(&cfg).is_empty());
        // No inline secret: a readable config is fine.
        std::fs::write(
            &cfg,
            "[[target]]\nname = \"t\"\nclient_secret_file = \"cs\"\n",
        )
        .unwrap();
        chmod(&cfg, 0o644);
        assert!(warnings(&cfg).is_empty());
    }
}
