//! Live sync settings: how the daemon learns of source changes between scheduled runs
//! (`[source.ldap] live`, `poll_interval`; `[source.csv] watch`, `settle`; `[schedule]
//! full_every`). `[safety] window` is with the other safety settings.

use std::time::Duration;

/// How changes reach the daemon between full runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LiveMode {
    /// Scheduled runs only (the default).
    #[default]
    Off,
    /// `[source.ldap] live = "syncrepl"`: an RFC 4533 refreshAndPersist search.
    Syncrepl,
    /// `[source.ldap] live = "usn"`: Active Directory, `(uSNChanged>=N)` polled on one DC.
    Usn { poll_interval: Duration },
    /// `[source.csv] watch = true`: a new export triggers a run once stable for `settle`.
    CsvWatch { settle: Duration },
}

impl LiveMode {
    pub fn is_on(self) -> bool {
        self != LiveMode::Off
    }

    /// The name `/readyz`, logs and the docs use.
    pub fn as_str(self) -> &'static str {
        match self {
            LiveMode::Off => "off",
            LiveMode::Syncrepl => "syncrepl",
            LiveMode::Usn { .. } => "usn",
            LiveMode::CsvWatch { .. } => "watch",
        }
    }
}

/// The validated live settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LiveConfig {
    pub mode: LiveMode,
    /// `[schedule] full_every`: while live, a full reconciliation this often (`None`: the
    /// schedule's own timing).
    pub full_every: Option<Duration>,
}

/// `poll_interval` when not set.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(15);
/// `settle` when not set.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(5);
