//! The live sync keys, taken out of `[source.ldap]`, `[source.csv]` and `[schedule]` before
//! those sections are validated.

use super::*;
use crate::config::live::{DEFAULT_POLL_INTERVAL, DEFAULT_SETTLE, LiveConfig, LiveMode};

/// Takes the live keys out of the raw source and schedule sections and validates them.
pub(super) fn live(
    source: Option<&mut super::super::raw::RawSource>,
    schedule: &mut RawSchedule,
    pr: &mut Problems,
) -> LiveConfig {
    let kind = source.as_ref().and_then(|s| s.kind.clone());
    let (ldap, csv) = match source {
        Some(s) => (s.ldap.as_mut(), s.csv.as_mut()),
        None => (None, None),
    };
    let mut mode = LiveMode::Off;
    if let Some(l) = ldap {
        let live = l.live.take();
        let poll = l.poll_interval.take();
        let poll = poll.and_then(|p| {
            let d = duration(&p, "source.ldap.poll_interval", pr)?;
            if d < Duration::from_secs(1) {
                pr.push("source.ldap.poll_interval", "must be at least 1s");
            }
            Some(d)
        });
        match live.as_deref().map(str::trim) {
            None | Some("off") => {
                if poll.is_some() {
                    pr.push("source.ldap.poll_interval", "only used with live = \"usn\"");
                }
            }
            Some("syncrepl") => {
                if poll.is_some() {
                    pr.push(
                        "source.ldap.poll_interval",
                        "only used with live = \"usn\" (syncrepl is pushed by the server)",
                    );
                }
                mode = LiveMode::Syncrepl;
            }
            Some("usn") => {
                mode = LiveMode::Usn {
                    poll_interval: poll.unwrap_or(DEFAULT_POLL_INTERVAL),
                }
            }
            Some(other) => pr.push(
                "source.ldap.live",
                format!("unknown live mode {other:?} (off, syncrepl, usn)"),
            ),
        }
        if mode.is_on() && kind.as_deref() != Some("ldap") {
            pr.push(
                "source.ldap.live",
                "only used with [source] kind = \"ldap\"",
            );
        }
    }
    if let Some(c) = csv {
        let watch = c.watch.take().unwrap_or(false);
        let settle = c
            .settle
            .take()
            .and_then(|s| duration(&s, "source.csv.settle", pr));
        if settle.is_some() && !watch {
            pr.push("source.csv.settle", "only used with watch = true");
        }
        if watch {
            if kind.as_deref() != Some("csv") {
                pr.push("source.csv.watch", "only used with [source] kind = \"csv\"");
            } else {
                mode = LiveMode::CsvWatch {
                    settle: settle.unwrap_or(DEFAULT_SETTLE),
                };
            }
        }
    }
    let full_every = schedule.full_every.take().and_then(|f| {
        let d = duration(&f, "schedule.full_every", pr)?;
        if d < Duration::from_secs(60) {
            pr.push("schedule.full_every", "must be at least 1m");
        }
        Some(d)
    });
    if full_every.is_some() && !mode.is_on() {
        pr.push(
            "schedule.full_every",
            "only used with live sync ([source.ldap] live or [source.csv] watch = true); \
             set the schedule with interval or cron",
        );
    }
    LiveConfig { mode, full_every }
}
