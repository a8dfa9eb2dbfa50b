//! Where configuration checks report ([`ProblemSink`]) and the value checks every section
//! shares: durations, target URLs, secret references and paths relative to the config file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::secret::{Secret, SecretRef, SecretSource};

/// Where validation reports a problem: the key path (`target[1].base_url`) and what is wrong.
pub trait ProblemSink {
    fn push(&mut self, key: String, message: String);
}

/// Resolves a path from the config against the config file's directory.
pub fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// A secret given inline, as `<key>_file` or as `<key>_credential` (at most one), left unread:
/// the command that needs it resolves it ([`SecretRef::resolve`]), so `plan` never reads a
/// target's password file. `None` when none of the three is set.
pub fn secret_ref(
    inline: Option<Secret>,
    file: Option<&PathBuf>,
    credential: Option<&String>,
    base: &Path,
    key: &str,
    pr: &mut dyn ProblemSink,
) -> Option<SecretRef> {
    let given = [inline.is_some(), file.is_some(), credential.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if given > 1 {
        pr.push(
            key.to_string(),
            format!("set only one of {key}, {key}_file and {key}_credential"),
        );
        return None;
    }
    if let Some(s) = inline {
        if s.is_empty() {
            pr.push(key.to_string(), "empty: remove it or set a secret".into());
            return None;
        }
        return Some(SecretRef {
            key: key.to_string(),
            source: SecretSource::Inline(s),
        });
    }
    if let Some(f) = file {
        if f.as_os_str().is_empty() {
            pr.push(format!("{key}_file"), "empty path".into());
            return None;
        }
        return Some(SecretRef {
            key: format!("{key}_file"),
            source: SecretSource::File(resolve(base, f)),
        });
    }
    let name = credential?;
    let k = format!("{key}_credential");
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        pr.push(
            k,
            format!(
                "{name:?} is not a credential name (the name given to LoadCredential=, \
                 without '/')"
            ),
        );
        return None;
    }
    Some(SecretRef {
        key: k,
        source: SecretSource::Credential(name.clone()),
    })
}

/// A duration setting (`15m`, `1h 30m`); the problem names the key.
pub fn duration(v: &str, key: &str, pr: &mut dyn ProblemSink) -> Option<Duration> {
    match humantime::parse_duration(v.trim()) {
        Ok(d) => Some(d),
        Err(e) => {
            pr.push(
                key.to_string(),
                format!("invalid duration {v:?}: {e} (examples: 15m, 1h 30m, 30d)"),
            );
            None
        }
    }
}

/// An absolute `http(s)://` URL with a host, no query, fragment or credentials.
pub fn http_url(v: &str, key: &str, pr: &mut dyn ProblemSink) -> Option<url::Url> {
    let mut push = |m: String| pr.push(key.to_string(), m);
    match url::Url::parse(v.trim()) {
        Ok(u) if u.scheme() != "http" && u.scheme() != "https" => {
            push(format!(
                "scheme {:?} not allowed (use https://)",
                u.scheme()
            ));
            None
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => {
            push("URL has no host".into());
            None
        }
        Ok(u) if u.query().is_some() || u.fragment().is_some() => {
            push("URL must not have a query or fragment".into());
            None
        }
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            push("URL must not carry credentials; use the username/password settings".into());
            None
        }
        Ok(u) => Some(u),
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            push(format!(
                "relative URL not allowed: {v:?} (write https://host/...)"
            ));
            None
        }
        Err(e) => {
            push(format!("invalid URL {v:?}: {e}"));
            None
        }
    }
}

/// True for `localhost`, 127.0.0.0/8 and `::1`: clear-text HTTP there never leaves the host.
pub fn is_loopback_host(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A target URL every request to which carries credentials: `http://` only to a loopback host
/// or with `allow_insecure_http = true`. True when refused (and reported).
pub fn refuse_clear_text(
    u: &url::Url,
    key: &str,
    allow: bool,
    at: &str,
    pr: &mut dyn ProblemSink,
) -> bool {
    if u.scheme() == "http" && !allow && !is_loopback_host(u) {
        pr.push(
            key.to_string(),
            format!(
                "http:// sends the credentials and every account in clear text: use https:// \
                 (or set {at}.allow_insecure_http = true on a network you trust)"
            ),
        );
        return true;
    }
    false
}
