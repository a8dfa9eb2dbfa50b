//! A target's validated settings: the part every vendor shares ([`TargetConfig`],
//! [`HttpSettings`]) and the typed vendor part ([`VendorSettings`]).
//!
//! The TOML of a target is flat: `config` validates the common keys and hands the rest over
//! as [`VendorKeys`]; each vendor folder's `settings.rs` declares its own keys (a `Deserialize`
//! struct), checks them with the helpers of [`VendorContext`] and builds its own type. A key
//! no vendor declares is unknown; a key of another vendor is "not a setting of kind ...".

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::covata::settings::CovataSettings;
use super::primavera::settings::PrimaveraSettings;
use super::scim::settings::ScimSettings;
use super::valuekeep::settings::ValuekeepSettings;
use super::{TargetKind, covata, primavera, scim, valuekeep};
use crate::mapping::TargetMapping;
use crate::plan::OnMissing;
pub use crate::problems::{
    ProblemSink, duration, http_url, is_loopback_host, refuse_clear_text, secret_ref,
};
use crate::secret::{Secret, SecretRef};

/// HTTP behaviour of a target's client.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// TCP + TLS connect timeout (default 10s).
    pub connect_timeout: Duration,
    /// Whole-request timeout (default 30s).
    pub request_timeout: Duration,
    /// Requests in flight at once (default 8).
    pub concurrency: usize,
    /// Requests per second, all of this target's calls together (default: no limit).
    pub requests_per_second: Option<f64>,
    /// Retries of one request after 429 / 503 / a connection error (default 5).
    pub max_retries: u32,
    /// Cap of the exponential backoff between retries, and of an honoured `Retry-After`
    /// (default 60s).
    pub max_backoff: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            concurrency: 8,
            requests_per_second: None,
            max_retries: 5,
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// One `[[target]]`.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub name: String,
    /// Always `vendor.kind()`.
    pub kind: TargetKind,
    /// False: skipped by every command (kept in the file).
    pub enabled: bool,
    pub base_url: url::Url,
    pub mapping: TargetMapping,
    pub on_missing: OnMissing,
    pub delete_after: Duration,
    pub http: HttpSettings,
    /// Accounts per bulk call (enable / disable / delete, batch jobs; default 500).
    pub batch_size: usize,
    /// `sync --refresh`: re-create owned accounts deleted on the target by hand (default
    /// false: they are reported and left alone).
    pub recreate_deleted: bool,
    /// The settings only this target's vendor has (credentials included).
    pub vendor: VendorSettings,
}

/// The settings of one vendor, typed: required credentials are set. Secrets are references
/// (inline value, `_file` path or `_credential` name), read only when a connector is built
/// ([`crate::connector::connect`]): commands that contact no target read none.
#[derive(Debug, Clone)]
pub enum VendorSettings {
    Covata(CovataSettings),
    Primavera(PrimaveraSettings),
    Valuekeep(ValuekeepSettings),
    Scim(ScimSettings),
}

impl VendorSettings {
    pub fn kind(&self) -> TargetKind {
        match self {
            VendorSettings::Covata(_) => TargetKind::Covata,
            VendorSettings::Primavera(_) => TargetKind::Primavera,
            VendorSettings::Valuekeep(_) => TargetKind::Valuekeep,
            VendorSettings::Scim(_) => TargetKind::Scim,
        }
    }

    /// Validates the vendor keys of a target of `cx.kind`: each key must be one of the
    /// vendor's own (a key of another vendor, or of none, is reported), then the vendor's
    /// validation runs. `None` when a problem was pushed.
    pub fn validate(
        keys: VendorKeys,
        cx: &VendorContext<'_>,
        pr: &mut dyn ProblemSink,
    ) -> Option<VendorSettings> {
        Some(match cx.kind {
            TargetKind::Covata => {
                VendorSettings::Covata(covata::settings::validate(cx.keys(keys, pr)?, cx, pr)?)
            }
            TargetKind::Primavera => VendorSettings::Primavera(primavera::settings::validate(
                cx.keys(keys, pr)?,
                cx,
                pr,
            )?),
            TargetKind::Valuekeep => VendorSettings::Valuekeep(valuekeep::settings::validate(
                cx.keys(keys, pr)?,
                cx,
                pr,
            )?),
            TargetKind::Scim => {
                VendorSettings::Scim(scim::settings::validate(cx.keys(keys, pr)?, cx, pr)?)
            }
        })
    }
}

/// The keys each vendor declares (its settings struct's fields), for reporting a key set on
/// a target of another kind.
fn declared_keys(kind: TargetKind) -> &'static [&'static str] {
    match kind {
        TargetKind::Covata => field_names::<covata::settings::CovataKeys>(),
        TargetKind::Primavera => field_names::<primavera::settings::PrimaveraKeys>(),
        TargetKind::Valuekeep => field_names::<valuekeep::settings::ValuekeepKeys>(),
        TargetKind::Scim => field_names::<scim::settings::ScimKeys>(),
    }
}

/// A target's keys that are not common to every target, as written (after the environment
/// overrides), for its vendor to take.
pub type VendorKeys = serde_json::Map<String, serde_json::Value>;

/// What a vendor's validation knows besides its keys: where the target is in the file, its
/// kind, the config file's directory and whether clear-text HTTP was allowed for it.
#[derive(Debug, Clone, Copy)]
pub struct VendorContext<'a> {
    /// The target's key path, e.g. `target[0]`.
    pub at: &'a str,
    pub kind: TargetKind,
    /// The config file's directory (relative secret files).
    pub base: &'a Path,
    /// `allow_insecure_http` of the target.
    pub allow_insecure_http: bool,
}

impl VendorContext<'_> {
    /// The key path of one of the target's keys: `target[0].username`.
    pub fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.at)
    }

    /// Deserialises the vendor's keys into its settings struct `T`: a key `T` does not have
    /// is reported (naming the vendor that has it, if any), and so is a value of the wrong
    /// type. `None` when the keys could not be read at all.
    pub fn keys<T: DeserializeOwned>(
        &self,
        keys: VendorKeys,
        pr: &mut dyn ProblemSink,
    ) -> Option<T> {
        let mut unknown = Vec::new();
        let mut on_unknown = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
        let de = serde_ignored::Deserializer::new(serde_json::Value::Object(keys), &mut on_unknown);
        let result: Result<T, _> = serde_path_to_error::deserialize(de);
        for key in unknown {
            let top = key.split('.').next().unwrap_or(&key);
            let owners: Vec<TargetKind> = TargetKind::ALL
                .into_iter()
                .filter(|k| *k != self.kind && declared_keys(*k).contains(&top))
                .collect();
            let message = match owners.as_slice() {
                [] => "unknown key (check the spelling; see config/example.toml)".to_string(),
                [owner] => format!(
                    "not a setting of kind {} (only of {})",
                    self.kind.as_str(),
                    owner.as_str()
                ),
                _ => format!("not a setting of kind {}", self.kind.as_str()),
            };
            pr.push(self.key(&key), message);
        }
        match result {
            Ok(t) => Some(t),
            Err(e) => {
                let path = e.path().to_string();
                pr.push(self.key(&path), e.into_inner().to_string());
                None
            }
        }
    }

    /// A setting the vendor needs: reported as missing when `None`.
    pub fn required<T>(&self, key: &str, v: Option<T>, pr: &mut dyn ProblemSink) -> Option<T> {
        if v.is_none() {
            pr.push(
                self.key(key),
                format!("required for kind {}", self.kind.as_str()),
            );
        }
        v
    }

    /// A secret given inline, as `<key>_file` or as `<key>_credential` (at most one), left
    /// unread; `None` (and reported) when none is given or given wrongly.
    pub fn required_secret(
        &self,
        key: &str,
        inline: Option<Secret>,
        file: Option<PathBuf>,
        credential: Option<String>,
        pr: &mut dyn ProblemSink,
    ) -> Option<SecretRef> {
        let given = inline.is_some() || file.is_some() || credential.is_some();
        let r = secret_ref(
            inline,
            file.as_ref(),
            credential.as_ref(),
            self.base,
            &self.key(key),
            pr,
        );
        if !given {
            pr.push(
                self.key(key),
                format!(
                    "required for kind {} (set {key}, {key}_file or {key}_credential)",
                    self.kind.as_str()
                ),
            );
        }
        r
    }

    /// A duration setting with its default.
    pub fn duration(
        &self,
        key: &str,
        v: Option<&str>,
        default: Duration,
        pr: &mut dyn ProblemSink,
    ) -> Option<Duration> {
        match v {
            Some(v) => duration(v, &self.key(key), pr),
            None => Some(default),
        }
    }

    /// A URL every request to which carries credentials (a token endpoint), with its default:
    /// an absolute `http(s)://` URL, clear text only to loopback or when allowed.
    pub fn credential_url(
        &self,
        key: &str,
        v: Option<&str>,
        default: &str,
        pr: &mut dyn ProblemSink,
    ) -> Option<url::Url> {
        let k = self.key(key);
        http_url(v.unwrap_or(default), &k, pr)
            .filter(|u| !refuse_clear_text(u, &k, self.allow_insecure_http, self.at, pr))
    }
}

/// The field names of a `Deserialize` struct (serde's `deserialize_struct` hands them to the
/// deserializer: this one records them and stops).
pub fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Names(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field names recorded")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> serde::Deserializer<'de> for &mut Names {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut names = Names(None);
    // The error is the expected way out: the names were recorded before it.
    let _ = T::deserialize(&mut names);
    names.0.unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_lists_a_structs_keys() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct K {
            username: Option<String>,
            job_timeout: Option<String>,
        }
        assert_eq!(field_names::<K>(), &["username", "job_timeout"]);
        assert_eq!(
            declared_keys(TargetKind::Primavera),
            &[
                "username",
                "password",
                "password_file",
                "password_credential",
                "job_timeout",
                "job_poll_interval"
            ]
        );
    }
}
