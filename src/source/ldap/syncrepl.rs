//! Live sync from OpenLDAP (syncprov), 389-DS and FreeIPA (content sync plugin): an RFC 4533
//! Content Synchronization search in refreshAndPersist mode over the configured base and
//! filter. Each change becomes a [`LiveEvent`] naming the changed keys; the stream's cookie is
//! sent after the events it covers (the daemon stores it once they are applied), so a restart
//! resumes where the last applied change left off.
//!
//! What cannot be tied to keys becomes a full read: the first start (no cookie), a refresh the
//! server asks for (`e-syncRefreshRequired`, a cookie it no longer knows), a present phase
//! (entries not named are gone), a deletion under a key that is not `entryUUID` and was not
//! seen by this process, and any change to the groups of a group search. A connection that
//! fails is retried with backoff; it never produces an event, so an unreachable directory
//! never becomes disables.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use ldap3::controls::{
    Control, ControlType, EntryState, RefreshMode, SyncDone, SyncInfo, SyncRequest, SyncState,
};
use ldap3::{DerefAliases, SearchEntry};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::conn::{connect, describe, rc_name, search_entry, text};
use super::{GroupSource, LdapSettings, format_key};
use crate::source::live::{LiveEvent, LiveStatus};

/// `e-syncRefreshRequired`: the server cannot resume from the cookie.
const SYNC_REFRESH_REQUIRED: u32 = 4096;

/// Starts the stream(s): the users' search, and with `groups = "search"` the groups' search.
/// `cookie`: where the last applied change left off (`None`: start with a full read).
pub fn spawn(
    settings: LdapSettings,
    cookie: Option<Vec<u8>>,
    status: LiveStatus,
    tx: mpsc::Sender<LiveEvent>,
) {
    // Group changes: a second stream over the groups. With memberOf, OpenLDAP's memberof
    // overlay keeps `memberOf` locally on every replica and does not replicate it, so the
    // user entries do not change when a group does: the groups of the directory's suffix
    // are followed instead.
    let groups = match &settings.groups {
        GroupSource::Search(g) => Some((g.base_dn.clone(), g.filter.clone(), g.scope)),
        GroupSource::MemberOf { .. } => Some((
            suffix(&settings.base_dn),
            "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=group))"
                .to_string(),
            super::SearchScope::Sub,
        )),
        GroupSource::None => None,
    };
    if let Some((base, filter, scope)) = groups {
        let groups = Stream {
            settings: settings.clone(),
            base,
            filter,
            scope,
            groups: true,
            status: status.clone(),
            tx: tx.clone(),
            cookie: std::sync::Mutex::new(None),
        };
        tokio::spawn(groups.run());
    }
    let users = Stream {
        base: settings.base_dn.clone(),
        filter: settings.filter.clone(),
        scope: settings.scope,
        settings,
        groups: false,
        status,
        tx,
        cookie: std::sync::Mutex::new(cookie),
    };
    tokio::spawn(users.run());
}

struct Stream {
    settings: LdapSettings,
    base: String,
    filter: String,
    scope: super::SearchScope,
    /// The groups' stream: every change is a full read, and it keeps no cookie.
    groups: bool,
    status: LiveStatus,
    tx: mpsc::Sender<LiveEvent>,
    /// The last cookie the server sent (a reconnect resumes from it).
    cookie: std::sync::Mutex<Option<Vec<u8>>>,
}

/// Why one search of the stream ended.
enum End {
    /// The daemon is gone.
    Closed,
    /// Start again without a cookie (after a full read was asked for).
    Refresh,
    /// A failure: reconnect after a pause.
    Failed(String),
}

impl Stream {
    async fn run(self) {
        let mut backoff = Duration::from_secs(1);
        let mut first = true;
        loop {
            let started = Instant::now();
            match self.search(self.cookie(), first).await {
                End::Closed => return,
                End::Refresh => {
                    self.set_cookie(None);
                    backoff = Duration::from_secs(1);
                }
                End::Failed(why) => {
                    let which = if self.groups { "groups" } else { "users" };
                    warn!(server = %self.settings.url, stream = which, error = %why, retry_in_s = backoff.as_secs(), "live sync: the syncrepl stream failed; nothing is disabled for it, retrying");
                    self.status.set(format!("reconnecting: {why}"));
                    if started.elapsed() > Duration::from_secs(60) {
                        backoff = Duration::from_secs(1);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
            if self.tx.is_closed() {
                return;
            }
            // A reconnect resumes from the last cookie the server sent.
            first = false;
        }
    }

    fn cookie(&self) -> Option<Vec<u8>> {
        self.cookie
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_cookie(&self, c: Option<Vec<u8>>) {
        *self.cookie.lock().unwrap_or_else(|p| p.into_inner()) = c;
    }

    /// One refreshAndPersist search, until it ends.
    async fn search(&self, cookie: Option<Vec<u8>>, first: bool) -> End {
        let resuming = cookie.is_some();
        let mut ldap = match connect(&self.settings).await {
            Ok(l) => l,
            Err(e) => return End::Failed(e),
        };
        self.status
            .set(if resuming { "resuming" } else { "refreshing" });
        let key_attr = self.settings.attributes.key.clone();
        let mut attrs = vec![key_attr.clone(), "modifyTimestamp".to_string()];
        if self.groups {
            attrs = vec!["1.1".to_string()];
        }
        let control = SyncRequest {
            mode: RefreshMode::RefreshAndPersist,
            cookie: cookie.clone(),
            reload_hint: false,
        };
        ldap.with_controls(control)
            .with_search_options(ldap3::SearchOptions::new().deref(DerefAliases::Never));
        let mut stream = match ldap
            .streaming_search(&self.base, self.scope.ldap(), &self.filter, attrs)
            .await
        {
            Ok(s) => s,
            Err(e) => return End::Failed(format!("sync search: {}", describe(&e))),
        };
        // Keys of entries seen (entryUUID → key), for deletions under another key attribute.
        let mut keys: HashMap<Vec<u8>, String> = HashMap::new();
        let mut refreshing = true;
        // The refresh must end in a full read: no cookie (everything is "present"), or a
        // present phase (what is not named is gone).
        let mut full_after_refresh = !resuming;
        let mut pending_keys: Vec<String> = Vec::new();
        let mut changed_at: Option<DateTime<Utc>> = None;
        loop {
            let next = match stream.next().await {
                Ok(Some(re)) => re,
                Ok(None) => break,
                Err(e) => {
                    let _ = stream.finish().await;
                    return End::Failed(format!("sync search: {}", describe(&e)));
                }
            };
            if next.is_ref() {
                continue;
            }
            if next.is_intermediate() {
                let info = match std::panic::catch_unwind(AssertUnwindSafe(|| {
                    ldap3::controls::parse_syncinfo(next)
                })) {
                    Ok(i) => i,
                    Err(_) => {
                        let _ = stream.finish().await;
                        return End::Failed("the server sent a malformed sync info message".into());
                    }
                };
                let (new_cookie, done) = match info {
                    SyncInfo::NewCookie(c) => (Some(c), false),
                    SyncInfo::RefreshDelete {
                        cookie,
                        refresh_done,
                    } => (cookie, refresh_done),
                    SyncInfo::RefreshPresent {
                        cookie,
                        refresh_done,
                    } => {
                        full_after_refresh = true;
                        (cookie, refresh_done)
                    }
                    SyncInfo::SyncIdSet {
                        cookie,
                        refresh_deletes,
                        sync_uuids,
                    } => {
                        if refresh_deletes && !self.groups {
                            for u in sync_uuids {
                                match self.deleted_key(&u, &keys) {
                                    Some(k) => pending_keys.push(k),
                                    None => full_after_refresh = true,
                                }
                            }
                        } else {
                            full_after_refresh = true;
                        }
                        (cookie, false)
                    }
                };
                if done && refreshing {
                    refreshing = false;
                    if !self
                        .refresh_done(
                            full_after_refresh,
                            first,
                            &mut pending_keys,
                            changed_at.take(),
                        )
                        .await
                    {
                        return End::Closed;
                    }
                }
                if let Some(c) = new_cookie
                    && !self.send_cookie(c).await
                {
                    return End::Closed;
                }
                continue;
            }
            let controls = next.1.clone();
            let entry = match search_entry(next.0) {
                Ok(e) => e,
                Err(m) => {
                    let _ = stream.finish().await;
                    return End::Failed(m);
                }
            };
            let Some(state) = sync_state(&controls) else {
                continue;
            };
            let state = match state {
                Ok(s) => s,
                Err(m) => {
                    let _ = stream.finish().await;
                    return End::Failed(m);
                }
            };
            if self.groups {
                if (!refreshing || resuming)
                    && !self
                        .send(LiveEvent::Full {
                            why: format!("group {} changed", entry.dn),
                            received: Instant::now(),
                        })
                        .await
                {
                    return End::Closed;
                }
                continue;
            }
            let key = match state.state {
                EntryState::Delete => self.deleted_key(&state.entry_uuid, &keys),
                _ => {
                    let k = self.entry_key(&entry);
                    if let Some(k) = &k {
                        keys.insert(state.entry_uuid.clone(), k.clone());
                    }
                    k
                }
            };
            let at = modify_timestamp(&entry);
            let Some(key) = key else {
                // A change that cannot be tied to a key: read everything.
                if refreshing {
                    full_after_refresh = true;
                } else if !self
                    .send(LiveEvent::Full {
                        why: format!("entry {} changed and its key is unknown", entry.dn),
                        received: Instant::now(),
                    })
                    .await
                {
                    return End::Closed;
                }
                continue;
            };
            if refreshing {
                if resuming && !matches!(state.state, EntryState::Present) {
                    pending_keys.push(key);
                    changed_at = min_time(changed_at, at);
                }
            } else {
                self.status.event(1);
                if !self
                    .send(LiveEvent::Changed {
                        keys: vec![key],
                        changed_at: at,
                        received: Instant::now(),
                    })
                    .await
                {
                    return End::Closed;
                }
            }
            if let Some(c) = state.cookie
                && !self.send_cookie(c).await
            {
                return End::Closed;
            }
        }
        let res = stream.finish().await;
        let done = res.ctrls.iter().find_map(|c| match c {
            Control(Some(ControlType::SyncDone), raw) => {
                std::panic::catch_unwind(AssertUnwindSafe(|| raw.parse::<SyncDone>())).ok()
            }
            _ => None,
        });
        if res.rc == SYNC_REFRESH_REQUIRED {
            info!(server = %self.settings.url, "live sync: the server asks for a full refresh (e-syncRefreshRequired); reading everything");
            if !self.groups && !self.forget_cookie().await {
                return End::Closed;
            }
            if !self
                .send(LiveEvent::Full {
                    why: "the directory asked for a full refresh".into(),
                    received: Instant::now(),
                })
                .await
            {
                return End::Closed;
            }
            return End::Refresh;
        }
        if res.rc != 0 {
            return End::Failed(format!(
                "sync search ended: {} ({}){}",
                rc_name(res.rc),
                res.rc,
                text(&res.text)
            ));
        }
        if let Some(c) = done.and_then(|d| d.cookie)
            && !self.send_cookie(c).await
        {
            return End::Closed;
        }
        End::Failed("the server ended the persistent search".into())
    }

    /// The refresh phase is over: send what it found (a full read, or the changed keys).
    async fn refresh_done(
        &self,
        full: bool,
        first: bool,
        pending: &mut Vec<String>,
        changed_at: Option<DateTime<Utc>>,
    ) -> bool {
        self.status.set("streaming");
        info!(server = %self.settings.url, groups = self.groups, full, "live sync: syncrepl refresh done, streaming changes");
        if self.groups {
            // The groups' stream keeps no cookie: after a reconnect, re-read everything.
            return first
                || self
                    .send(LiveEvent::Full {
                        why: "the groups' stream reconnected".into(),
                        received: Instant::now(),
                    })
                    .await;
        }
        if full {
            self.status.event(1);
            pending.clear();
            return self
                .send(LiveEvent::Full {
                    why: "syncrepl refresh without a usable cookie".into(),
                    received: Instant::now(),
                })
                .await;
        }
        if pending.is_empty() {
            return true;
        }
        self.status.event(pending.len() as u64);
        self.send(LiveEvent::Changed {
            keys: std::mem::take(pending),
            changed_at,
            received: Instant::now(),
        })
        .await
    }

    async fn send(&self, e: LiveEvent) -> bool {
        self.tx.send(e).await.is_ok()
    }

    async fn send_cookie(&self, c: Vec<u8>) -> bool {
        if self.groups {
            return true;
        }
        self.set_cookie(Some(c.clone()));
        self.send(LiveEvent::Cookie(c)).await
    }

    /// A refresh the server asked for: the stored cookie is useless.
    async fn forget_cookie(&self) -> bool {
        self.send(LiveEvent::Cookie(Vec::new())).await
    }

    /// The key of an entry from its key attribute (as a full read formats it).
    fn entry_key(&self, e: &SearchEntry) -> Option<String> {
        let a = &self.settings.attributes.key;
        if let Some((_, v)) = e.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(a)) {
            let first = v.first()?;
            return format_key(first.as_bytes(), a, self.settings.key_format).ok();
        }
        let (_, v) = e
            .bin_attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(a))?;
        format_key(v.first()?, a, self.settings.key_format).ok()
    }

    /// The key of a deleted entry: its entryUUID when that is the key, else as seen before.
    fn deleted_key(&self, uuid: &[u8], seen: &HashMap<Vec<u8>, String>) -> Option<String> {
        if self
            .settings
            .attributes
            .key
            .eq_ignore_ascii_case("entryUUID")
        {
            let b: [u8; 16] = uuid.try_into().ok()?;
            return Some(uuid::Uuid::from_bytes(b).hyphenated().to_string());
        }
        seen.get(uuid).cloned()
    }
}

/// The `dc=` components that end a DN (the directory's naming context for most layouts), or
/// the DN itself when it has none.
fn suffix(dn: &str) -> String {
    let parts: Vec<&str> = dn.split(',').map(str::trim).collect();
    let start = parts
        .iter()
        .rposition(|p| !p.to_ascii_lowercase().starts_with("dc="))
        .map_or(0, |i| i + 1);
    if start >= parts.len() {
        dn.to_string()
    } else {
        parts[start..].join(",")
    }
}

fn sync_state(controls: &[Control]) -> Option<Result<SyncState, String>> {
    controls.iter().find_map(|c| match c {
        Control(Some(ControlType::SyncState), raw) => Some(
            std::panic::catch_unwind(AssertUnwindSafe(|| raw.parse::<SyncState>()))
                .map_err(|_| "the server sent a malformed sync state control".to_string()),
        ),
        _ => None,
    })
}

/// `modifyTimestamp` (generalized time, `YYYYmmddHHMMSSZ`), when the entry has it.
fn modify_timestamp(e: &SearchEntry) -> Option<DateTime<Utc>> {
    let (_, v) = e
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("modifyTimestamp"))?;
    parse_generalized_time(v.first()?)
}

pub(super) fn parse_generalized_time(v: &str) -> Option<DateTime<Utc>> {
    let v = v.trim().trim_end_matches('Z');
    let (main, _) = v.split_once('.').unwrap_or((v, ""));
    NaiveDateTime::parse_from_str(main, "%Y%m%d%H%M%S")
        .ok()
        .map(|n| n.and_utc())
}

fn min_time(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_the_trailing_dc_components() {
        assert_eq!(suffix("ou=people,dc=example,dc=com"), "dc=example,dc=com");
        assert_eq!(suffix("dc=example,dc=com"), "dc=example,dc=com");
        assert_eq!(suffix("o=corp"), "o=corp");
    }

    #[test]
    fn generalized_times_parse() {
        let t = parse_generalized_time("20261203184100Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-03T18:41:00+00:00");
        assert!(parse_generalized_time("20261203184100.0Z").is_some());
        assert!(parse_generalized_time("soon").is_none());
    }
}
