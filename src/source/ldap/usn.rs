//! Live sync from Active Directory (`live = "usn"`): every `poll_interval`, ask one pinned
//! domain controller for the entries whose `uSNChanged` is above the last position, with
//! `highestCommittedUSN` from its rootDSE. USNs are per domain controller: when the server
//! answering is another one, or its `invocationId` changed (a restore), the position means
//! nothing there and the whole directory is read instead. Deletions come from the Deleted
//! Objects container (Show Deleted control) when the account may read it; otherwise the next
//! full run finds them.
//!
//! The polling logic ([`UsnPoller`]) is written against [`UsnDirectory`], so it is tested
//! without a domain controller; [`AdDirectory`] is the real one.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ldap3::{Ldap, Scope, SearchEntry};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::conn::{connect, describe, rc_name, text};
use super::{LdapSettings, format_key};
use crate::source::live::{LiveEvent, LiveStatus};

/// What the domain controller's rootDSE says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsnRoot {
    /// The server answering (`dnsHostName`).
    pub server: String,
    /// Its database's identity (`invocationId` of its NTDS Settings), changed by a restore.
    pub invocation_id: String,
    pub highest_committed_usn: u64,
}

/// A changed entry: its key and when it changed (`whenChanged`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsnChange {
    pub key: String,
    pub changed_at: Option<DateTime<Utc>>,
}

/// The questions the poller asks.
#[async_trait::async_trait]
pub trait UsnDirectory: Send {
    async fn root(&mut self) -> Result<UsnRoot, String>;
    /// Entries of the configured search with `uSNChanged >= from`.
    async fn changed_since(&mut self, from: u64) -> Result<Vec<UsnChange>, String>;
    /// Keys of entries deleted with `uSNChanged >= from`; `None` when the Deleted Objects
    /// container cannot be read (the next full run finds the deletions).
    async fn deleted_since(&mut self, from: u64) -> Result<Option<Vec<UsnChange>>, String>;
}

/// Where the poll stands: on which server, which database, up to which USN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsnPosition {
    pub server: String,
    pub invocation_id: String,
    pub usn: u64,
}

impl UsnPosition {
    /// As stored (the state store's live cookie).
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "usn1\n{}\n{}\n{}",
            self.server, self.invocation_id, self.usn
        )
        .into_bytes()
    }

    pub fn decode(b: &[u8]) -> Option<UsnPosition> {
        let s = std::str::from_utf8(b).ok()?;
        let mut parts = s.split('\n');
        if parts.next()? != "usn1" {
            return None;
        }
        Some(UsnPosition {
            server: parts.next()?.to_string(),
            invocation_id: parts.next()?.to_string(),
            usn: parts.next()?.parse().ok()?,
        })
    }
}

/// The polling logic.
#[derive(Debug, Default)]
pub struct UsnPoller {
    pub position: Option<UsnPosition>,
}

impl UsnPoller {
    /// One poll: the events to send (changed keys, or a full read), ending with the new
    /// position. A failure sends nothing (an unreachable directory never becomes events).
    pub async fn poll(&mut self, dir: &mut dyn UsnDirectory) -> Result<Vec<LiveEvent>, String> {
        let root = dir.root().await?;
        let received = Instant::now();
        let next = UsnPosition {
            server: root.server.clone(),
            invocation_id: root.invocation_id.clone(),
            usn: root.highest_committed_usn,
        };
        let Some(pos) = &self.position else {
            self.position = Some(next.clone());
            return Ok(vec![
                LiveEvent::Full {
                    why: format!("no stored USN position for {}", root.server),
                    received,
                },
                LiveEvent::Cookie(next.encode()),
            ]);
        };
        if pos.server != root.server || pos.invocation_id != root.invocation_id {
            let why = if pos.server != root.server {
                format!(
                    "the domain controller changed ({} → {}): USNs are per server",
                    pos.server, root.server
                )
            } else {
                format!(
                    "the invocationId of {} changed (a restore?): its USNs started over",
                    root.server
                )
            };
            self.position = Some(next.clone());
            return Ok(vec![
                LiveEvent::Full { why, received },
                LiveEvent::Cookie(next.encode()),
            ]);
        }
        if root.highest_committed_usn <= pos.usn {
            return Ok(Vec::new());
        }
        let from = pos.usn + 1;
        let mut changes = dir.changed_since(from).await?;
        if let Some(deleted) = dir.deleted_since(from).await? {
            changes.extend(deleted);
        }
        self.position = Some(next.clone());
        let mut events = Vec::new();
        if !changes.is_empty() {
            let changed_at = changes.iter().filter_map(|c| c.changed_at).min();
            let mut keys: Vec<String> = changes.into_iter().map(|c| c.key).collect();
            keys.sort_unstable();
            keys.dedup();
            events.push(LiveEvent::Changed {
                keys,
                changed_at,
                received,
            });
        }
        events.push(LiveEvent::Cookie(next.encode()));
        Ok(events)
    }
}

/// Polls the domain controller of `settings` every `every` until the daemon is gone.
pub fn spawn(
    settings: LdapSettings,
    cookie: Option<Vec<u8>>,
    every: Duration,
    status: LiveStatus,
    tx: mpsc::Sender<LiveEvent>,
) {
    tokio::spawn(async move {
        let mut poller = UsnPoller {
            position: cookie.as_deref().and_then(UsnPosition::decode),
        };
        let mut warned_deleted = false;
        loop {
            let result = match connect(&settings).await {
                Ok(ldap) => {
                    let mut dir = AdDirectory {
                        settings: &settings,
                        ldap,
                        deleted_unreadable: false,
                    };
                    let r = poller.poll(&mut dir).await;
                    if dir.deleted_unreadable && !warned_deleted {
                        warned_deleted = true;
                        warn!(server = %settings.url, "live sync: the Deleted Objects container cannot be read; deletions reach the targets at the next full run");
                    }
                    let _ = dir.ldap.unbind().await;
                    r
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(events) => {
                    status.set("polling");
                    let n: u64 = events
                        .iter()
                        .map(|e| match e {
                            LiveEvent::Changed { keys, .. } => keys.len() as u64,
                            LiveEvent::Full { .. } => 1,
                            LiveEvent::Cookie(_) => 0,
                        })
                        .sum();
                    if n > 0 {
                        status.event(n);
                    }
                    for e in events {
                        if tx.send(e).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    warn!(server = %settings.url, error = %e, "live sync: the USN poll failed; nothing is disabled for it, polling again");
                    status.set(format!("reconnecting: {e}"));
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
    info!("live sync: polling uSNChanged");
}

/// Active Directory over LDAP.
struct AdDirectory<'a> {
    settings: &'a LdapSettings,
    ldap: Ldap,
    deleted_unreadable: bool,
}

/// The Show Deleted control (LDAP_SERVER_SHOW_DELETED_OID).
const SHOW_DELETED_OID: &str = "1.2.840.113556.1.4.417";

impl AdDirectory<'_> {
    async fn search(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: Vec<String>,
    ) -> Result<Vec<SearchEntry>, (u32, String)> {
        let res = self
            .ldap
            .with_timeout(self.settings.operation_timeout)
            .search(base, scope, filter, attrs)
            .await
            .map_err(|e| (0, describe(&e)))?;
        let (entries, r) = res.success().map_err(|e| match e {
            ldap3::LdapError::LdapResult { result } => (
                result.rc,
                format!(
                    "{} ({}){}",
                    rc_name(result.rc),
                    result.rc,
                    text(&result.text)
                ),
            ),
            e => (0, describe(&e)),
        })?;
        let _ = r;
        Ok(entries.into_iter().map(SearchEntry::construct).collect())
    }

    fn key_of(&self, e: &SearchEntry) -> Option<String> {
        let a = &self.settings.attributes.key;
        if let Some((_, v)) = e.bin_attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(a)) {
            return format_key(v.first()?, a, self.settings.key_format).ok();
        }
        let (_, v) = e.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(a))?;
        format_key(v.first()?.as_bytes(), a, self.settings.key_format).ok()
    }
}

fn first<'a>(e: &'a SearchEntry, name: &str) -> Option<&'a str> {
    e.attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.first())
        .map(String::as_str)
}

fn first_bin<'a>(e: &'a SearchEntry, name: &str) -> Option<&'a [u8]> {
    e.bin_attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.first())
        .map(Vec::as_slice)
        .or_else(|| first(e, name).map(str::as_bytes))
}

#[async_trait::async_trait]
impl UsnDirectory for AdDirectory<'_> {
    async fn root(&mut self) -> Result<UsnRoot, String> {
        let attrs = ["highestCommittedUSN", "dnsHostName", "dsServiceName"]
            .map(String::from)
            .to_vec();
        let root = self
            .search("", Scope::Base, "(objectClass=*)", attrs)
            .await
            .map_err(|(_, m)| format!("rootDSE: {m}"))?;
        let root = root.first().ok_or("rootDSE: no entry")?;
        let usn = first(root, "highestCommittedUSN")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or(
                "rootDSE: no highestCommittedUSN (is this an Active Directory domain controller?)",
            )?;
        let server = first(root, "dnsHostName")
            .unwrap_or(&self.settings.url)
            .to_string();
        let service = first(root, "dsServiceName").map(str::to_string);
        let invocation_id = match service {
            Some(dn) => {
                let e = self
                    .search(
                        &dn,
                        Scope::Base,
                        "(objectClass=*)",
                        vec!["invocationId".into()],
                    )
                    .await
                    .map_err(|(_, m)| format!("{dn}: invocationId: {m}"))?;
                e.first()
                    .and_then(|e| first_bin(e, "invocationId"))
                    .map(|b| b.iter().map(|x| format!("{x:02x}")).collect())
                    .unwrap_or_default()
            }
            None => String::new(),
        };
        Ok(UsnRoot {
            server,
            invocation_id,
            highest_committed_usn: usn,
        })
    }

    async fn changed_since(&mut self, from: u64) -> Result<Vec<UsnChange>, String> {
        let filter = format!("(&{}(uSNChanged>={from}))", wrap(&self.settings.filter));
        let attrs = vec![self.settings.attributes.key.clone(), "whenChanged".into()];
        let base = self.settings.base_dn.clone();
        let entries = self
            .search(&base, self.settings.scope.ldap(), &filter, attrs)
            .await
            .map_err(|(_, m)| format!("search of changes (uSNChanged>={from}): {m}"))?;
        Ok(entries
            .iter()
            .filter_map(|e| {
                Some(UsnChange {
                    key: self.key_of(e)?,
                    changed_at: first(e, "whenChanged")
                        .and_then(super::syncrepl::parse_generalized_time),
                })
            })
            .collect())
    }

    async fn deleted_since(&mut self, from: u64) -> Result<Option<Vec<UsnChange>>, String> {
        let base = format!("CN=Deleted Objects,{}", self.settings.base_dn);
        let filter = format!("(&(isDeleted=TRUE)(uSNChanged>={from}))");
        let attrs = vec![self.settings.attributes.key.clone(), "whenChanged".into()];
        self.ldap.with_controls(ldap3::controls::RawControl {
            ctype: SHOW_DELETED_OID.into(),
            crit: true,
            val: None,
        });
        match self.search(&base, Scope::OneLevel, &filter, attrs).await {
            Ok(entries) => Ok(Some(
                entries
                    .iter()
                    .filter_map(|e| {
                        Some(UsnChange {
                            key: self.key_of(e)?,
                            changed_at: first(e, "whenChanged")
                                .and_then(super::syncrepl::parse_generalized_time),
                        })
                    })
                    .collect(),
            )),
            // insufficientAccessRights, noSuchObject, unavailableCriticalExtension: not
            // readable with this account or server.
            Err((50 | 32 | 12, _)) => {
                self.deleted_unreadable = true;
                Ok(None)
            }
            Err((_, m)) => Err(format!("search of deleted objects: {m}")),
        }
    }
}

fn wrap(filter: &str) -> String {
    let f = filter.trim();
    if f.starts_with('(') {
        f.to_string()
    } else {
        format!("({f})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of answers, with what was asked.
    #[derive(Default)]
    struct Fake {
        root: Vec<Result<UsnRoot, String>>,
        changed: Vec<UsnChange>,
        deleted: Option<Vec<UsnChange>>,
        asked_from: Vec<u64>,
    }

    #[async_trait::async_trait]
    impl UsnDirectory for Fake {
        async fn root(&mut self) -> Result<UsnRoot, String> {
            self.root.remove(0)
        }
        async fn changed_since(&mut self, from: u64) -> Result<Vec<UsnChange>, String> {
            self.asked_from.push(from);
            Ok(std::mem::take(&mut self.changed))
        }
        async fn deleted_since(&mut self, _from: u64) -> Result<Option<Vec<UsnChange>>, String> {
            Ok(self.deleted.take())
        }
    }

    fn root(server: &str, inv: &str, usn: u64) -> Result<UsnRoot, String> {
        Ok(UsnRoot {
            server: server.into(),
            invocation_id: inv.into(),
            highest_committed_usn: usn,
        })
    }

    fn change(key: &str) -> UsnChange {
        UsnChange {
            key: key.into(),
            changed_at: None,
        }
    }

    fn kinds(events: &[LiveEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                LiveEvent::Changed { keys, .. } => format!("changed {}", keys.join(",")),
                LiveEvent::Full { why, .. } => format!("full: {why}"),
                LiveEvent::Cookie(c) => {
                    let p = UsnPosition::decode(c).unwrap();
                    format!("at {} {} {}", p.server, p.invocation_id, p.usn)
                }
            })
            .collect()
    }

    #[tokio::test]
    async fn polls_from_the_position_and_reads_whole_when_the_dc_or_its_database_changes() {
        let mut dir = Fake {
            root: vec![
                root("dc1", "aa", 100),
                root("dc1", "aa", 100),
                root("dc1", "aa", 120),
                root("dc2", "bb", 5000),
                root("dc2", "cc", 10),
            ],
            ..Fake::default()
        };
        let mut p = UsnPoller::default();
        // No position: a full read, then the position.
        let e = p.poll(&mut dir).await.unwrap();
        assert_eq!(
            kinds(&e),
            ["full: no stored USN position for dc1", "at dc1 aa 100"]
        );
        // Nothing committed since: nothing asked, nothing sent.
        assert!(p.poll(&mut dir).await.unwrap().is_empty());
        assert!(dir.asked_from.is_empty());
        // Changes and deletions since 101.
        dir.changed = vec![change("b"), change("a")];
        dir.deleted = Some(vec![change("c"), change("a")]);
        let e = p.poll(&mut dir).await.unwrap();
        assert_eq!(kinds(&e), ["changed a,b,c", "at dc1 aa 120"]);
        assert_eq!(dir.asked_from, [101]);
        // Another DC: its USNs mean nothing here.
        let e = p.poll(&mut dir).await.unwrap();
        assert!(
            kinds(&e)[0].starts_with("full: the domain controller changed (dc1 → dc2)"),
            "{:?}",
            kinds(&e)
        );
        // The same DC restored (new invocationId): a full read too.
        let e = p.poll(&mut dir).await.unwrap();
        assert!(
            kinds(&e)[0].contains("invocationId of dc2 changed"),
            "{:?}",
            kinds(&e)
        );
        assert_eq!(p.position.as_ref().unwrap().usn, 10);
    }

    #[tokio::test]
    async fn a_failing_directory_sends_nothing_and_keeps_the_position() {
        let start = UsnPosition {
            server: "dc1".into(),
            invocation_id: "aa".into(),
            usn: 7,
        };
        let mut p = UsnPoller {
            position: Some(start.clone()),
        };
        let mut dir = Fake {
            root: vec![Err("connection refused".into())],
            ..Fake::default()
        };
        assert!(p.poll(&mut dir).await.is_err());
        assert_eq!(p.position, Some(start.clone()));
        // Unreadable deleted objects: the changes still come.
        let mut dir = Fake {
            root: vec![root("dc1", "aa", 9)],
            changed: vec![change("x")],
            deleted: None,
            ..Fake::default()
        };
        let e = p.poll(&mut dir).await.unwrap();
        assert_eq!(kinds(&e), ["changed x", "at dc1 aa 9"]);
        assert_eq!(UsnPosition::decode(&start.encode()), Some(start));
        assert_eq!(UsnPosition::decode(b"garbage"), None);
    }
}
