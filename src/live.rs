//! Live sync in the daemon: starts the source's change stream ([`crate::source::live`]),
//! gathers its events (about a second's worth) into one live run, keeps the rolling window of
//! what live runs disabled and deleted (`safety.window`), and holds the stream's destructive
//! operations once it went over, until the next full run.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::Config;
use crate::config::live::LiveMode;
use crate::plan::WindowCounts;
use crate::run::{LiveScope, RunPlan, Scope};
use crate::source::SourceConfig;
use crate::source::live::{LiveEvent, LiveStatus};
use crate::store::{Store, Trigger};

/// How long the events after the first are gathered into the same run.
pub const GATHER: Duration = Duration::from_secs(1);

/// Events gathered into one live run.
#[derive(Debug, Default)]
pub struct Batch {
    /// The changed keys, sorted and unique (`None` with `full`).
    keys: Vec<String>,
    /// Why the whole source is read (a new export, a refresh), if it is.
    pub full: Option<String>,
    pub events: u64,
    /// The oldest change among them: (its directory time, else its receipt).
    oldest: Option<(Option<DateTime<Utc>>, Instant)>,
    /// The stream's position after these events (stored once they are applied).
    pub cookie: Option<Vec<u8>>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.events == 0 && self.full.is_none() && self.cookie.is_none()
    }

    fn add(&mut self, e: LiveEvent) {
        match e {
            LiveEvent::Changed {
                keys,
                changed_at,
                received,
            } => {
                self.events += keys.len() as u64;
                self.keys.extend(keys);
                self.note(changed_at, received);
            }
            LiveEvent::Full { why, received } => {
                self.events += 1;
                self.full = Some(why);
                self.note(None, received);
            }
            LiveEvent::Cookie(c) => self.cookie = Some(c),
        }
    }

    fn note(&mut self, at: Option<DateTime<Utc>>, received: Instant) {
        if self.oldest.is_none_or(|(_, r)| received < r) {
            self.oldest = Some((at, received));
        }
    }

    /// Seconds from the oldest change to now (the targets' answer).
    fn lag(&self) -> f64 {
        match self.oldest {
            Some((Some(at), _)) => (Utc::now() - at).num_milliseconds() as f64 / 1000.0,
            Some((None, received)) => received.elapsed().as_secs_f64(),
            None => 0.0,
        }
    }
}

/// The live side of the daemon.
pub struct Live {
    pub mode: LiveMode,
    pub status: LiveStatus,
    rx: mpsc::Receiver<LiveEvent>,
    /// (when, target, what a live run applied) within `safety.window`.
    window: VecDeque<(DateTime<Utc>, String, WindowCounts)>,
    /// Why the stream holds its disables and deletes (until the next full run).
    holding: Holding,
    /// Where the stream's position is stored (syncrepl: the search it belongs to).
    source_id: Option<String>,
    /// The newest position received and not stored yet.
    latest: Option<Vec<u8>>,
    /// A live run failed: positions are stored again only after a full run covered it.
    behind: bool,
    /// Per target: the accounts dirsync owns after the last run (the percentages' base).
    owned: HashMap<String, u64>,
}

type Holding = Arc<std::sync::Mutex<Option<String>>>;

/// What `/readyz` shows of the live side, shared with the listener.
#[derive(Debug, Clone)]
pub struct LiveView {
    pub mode: LiveMode,
    pub status: LiveStatus,
    holding: Holding,
}

fn held(h: &Holding) -> std::sync::MutexGuard<'_, Option<String>> {
    // A poisoned lock only means a panic elsewhere while setting a string.
    h.lock().unwrap_or_else(|p| p.into_inner())
}

impl LiveView {
    /// The line `/readyz` adds: the stream's state, its events, and a hold.
    pub fn describe(&self) -> String {
        let s = self.status.get();
        let mut line = format!(
            "live {}: {} ({} events received)",
            self.mode.as_str(),
            s.state,
            s.events
        );
        if let Some(h) = held(&self.holding).as_ref() {
            line.push_str(&format!(
                "; holding disables and deletes until the next full run: {h}"
            ));
        }
        line
    }
}

/// Why live sync could not start.
#[derive(Debug, thiserror::Error)]
#[error("live sync ({mode}): {message}")]
pub struct LiveError {
    pub mode: &'static str,
    pub message: String,
}

impl Live {
    /// Starts the configured stream (`None` when live sync is off), with the window seeded
    /// from the live runs the store recorded within `safety.window`.
    pub async fn start(config: &Config, store: &dyn Store) -> Result<Option<Live>, LiveError> {
        let mode = config.live.mode;
        let fail = |message: String| LiveError {
            mode: mode.as_str(),
            message,
        };
        let (tx, rx) = mpsc::channel(1024);
        let status = LiveStatus::default();
        let mut source_id = None;
        match (mode, &config.source) {
            (LiveMode::Off, _) => return Ok(None),
            (LiveMode::CsvWatch { settle }, SourceConfig::Csv(csv)) => {
                crate::source::live::watch_csv(&csv.path, settle, status.clone(), tx)
                    .map_err(|e| fail(e.to_string()))?;
            }
            (LiveMode::Syncrepl, SourceConfig::Ldap(l)) => {
                let id = stream_id(l);
                let cookie = store
                    .live_cookie(&id)
                    .await
                    .map_err(|e| fail(format!("cannot read the stored position: {e}")))?;
                info!(
                    resume = cookie.is_some(),
                    "live sync: starting the syncrepl stream"
                );
                crate::source::ldap::syncrepl::spawn(l.clone(), cookie, status.clone(), tx);
                source_id = Some(id);
            }
            (LiveMode::Usn { poll_interval }, SourceConfig::Ldap(l)) => {
                let id = format!("usn {} {} {}", l.url, l.base_dn, l.filter);
                let cookie = store
                    .live_cookie(&id)
                    .await
                    .map_err(|e| fail(format!("cannot read the stored position: {e}")))?;
                crate::source::ldap::usn::spawn(
                    l.clone(),
                    cookie,
                    poll_interval,
                    status.clone(),
                    tx,
                );
                source_id = Some(id);
            }
            _ => return Err(fail("does not match the source kind".into())),
        }
        let mut live = Live {
            mode,
            status,
            rx,
            window: VecDeque::new(),
            holding: Holding::default(),
            source_id,
            latest: None,
            behind: false,
            owned: HashMap::new(),
        };
        live.seed(config, store).await;
        Ok(Some(live))
    }

    /// The live runs of the last `safety.window` (a restart does not reset the window).
    async fn seed(&mut self, config: &Config, store: &dyn Store) {
        let since =
            Utc::now() - chrono::Duration::from_std(config.safety.window).unwrap_or_default();
        match store.list_runs(SEED_RUNS).await {
            Ok(runs) => {
                for r in runs.iter().rev() {
                    if r.trigger != Trigger::Live || r.started_at < since {
                        continue;
                    }
                    for (target, counts) in applied_of_summary(&r.summary) {
                        self.window.push_back((r.started_at, target, counts));
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "live sync: cannot read the recent live runs; the window starts empty")
            }
        }
    }

    /// Waits for the first event, then gathers those arriving within [`GATHER`]. `None` when the
    /// stream ended.
    pub async fn next(&mut self) -> Option<LiveEvent> {
        self.rx.recv().await
    }

    /// Gathers the events following `first` for about a second.
    pub async fn gather(&mut self, first: LiveEvent) -> Batch {
        let mut batch = Batch::default();
        batch.add(first);
        let until = tokio::time::Instant::now() + GATHER;
        while let Ok(Some(e)) = tokio::time::timeout_at(until, self.rx.recv()).await {
            batch.add(e);
        }
        batch.keys.sort_unstable();
        batch.keys.dedup();
        batch
    }

    /// The scope of the live run of `batch`.
    pub fn scope(&mut self, batch: &Batch, config: &Config) -> Scope {
        let since =
            Utc::now() - chrono::Duration::from_std(config.safety.window).unwrap_or_default();
        while self.window.front().is_some_and(|(at, _, _)| *at < since) {
            self.window.pop_front();
        }
        let mut window: HashMap<String, WindowCounts> = HashMap::new();
        for (_, target, c) in &self.window {
            let w = window.entry(target.clone()).or_default();
            w.disables += c.disables;
            w.deletes += c.deletes;
        }
        Scope::Live(Arc::new(LiveScope {
            keys: batch.full.is_none().then(|| batch.keys.clone()),
            window,
            holding: held(&self.holding).is_some(),
            owned: self.owned.clone(),
        }))
    }

    /// After any run that was recorded: the accounts owned per target.
    pub fn note_owned(&mut self, plan: &RunPlan) {
        for (target, n) in plan.counts().owned {
            self.owned.insert(target, n);
        }
    }

    /// After a live run: what it disabled and deleted joins the window, a hold starts when it
    /// went over, and the lag and applied events are counted.
    pub fn after_live_run(&mut self, batch: &Batch, plan: &RunPlan) {
        self.note_owned(plan);
        let now = Utc::now();
        for t in &plan.targets {
            let done = |kind: &str| {
                t.applied
                    .as_ref()
                    .and_then(|a| a.by_kind.get(kind))
                    .map_or(0, |c| c.succeeded)
            };
            let counts = WindowCounts {
                disables: done("disable"),
                deletes: done("delete"),
            };
            if counts != WindowCounts::default() {
                self.window.push_back((now, t.name.clone(), counts));
            }
            let mut holding = held(&self.holding);
            if let Some(r) = t.held.first()
                && holding.is_none()
            {
                warn!(run_id = plan.run_id, target = %t.name, rule = r.rule, "live sync: the stream holds its disables and deletes until the next full run");
                *holding = Some(format!("target {:?}: {}", t.name, r.message));
            }
        }
        crate::metrics::record_live_applied(batch.events, batch.lag());
    }

    /// After a scheduled (full) run that was not blocked nor failed: it decided, the hold ends.
    pub fn after_full_run(&mut self, decided: bool) {
        if decided && held(&self.holding).take().is_some() {
            info!(
                "live sync: the full run decided; the stream no longer holds disables and deletes"
            );
        }
    }

    /// Notes the stream position a batch ends at.
    pub fn note_position(&mut self, batch: &Batch) {
        if let Some(c) = &batch.cookie {
            self.latest = Some(c.clone());
        }
    }

    /// The position to store after a live run (`ok`: it was recorded and did not fail), if
    /// any: `Some(None)` forgets the stored one (the server asked for a refresh).
    pub fn position_after_live_run(&mut self, ok: bool) -> Option<Option<Vec<u8>>> {
        if !ok {
            if !self.behind {
                warn!(
                    "live sync: a live run failed; the stream position is kept where it was until the next full run"
                );
            }
            self.behind = true;
        }
        if self.behind || self.source_id.is_none() {
            return None;
        }
        self.latest.take().map(|c| (!c.is_empty()).then_some(c))
    }

    /// The position a full run starting now covers (stored when it succeeds).
    pub fn position_before_full_run(&self) -> Option<Vec<u8>> {
        self.latest.clone()
    }

    /// After a full run that succeeded: `covered` (from [`Self::position_before_full_run`]) is
    /// where the stream may resume.
    pub fn position_after_full_run(
        &mut self,
        ok: bool,
        covered: Option<Vec<u8>>,
    ) -> Option<Option<Vec<u8>>> {
        if !ok || self.source_id.is_none() {
            return None;
        }
        self.behind = false;
        if self.latest == covered {
            self.latest = None;
        }
        covered.map(|c| (!c.is_empty()).then_some(c))
    }

    /// Stores the stream position (a failure is a warning: the stream then resumes from an
    /// older position, and replays changes already applied).
    pub async fn store_position(&self, store: &dyn Store, position: Option<Vec<u8>>) {
        let Some(id) = &self.source_id else { return };
        if let Err(e) = store.save_live_cookie(id, position.as_deref()).await {
            warn!(error = %e, "live sync: cannot store the stream position; a restart replays changes already applied");
        }
    }

    /// What the listener shows of the live side.
    pub fn view(&self) -> LiveView {
        LiveView {
            mode: self.mode,
            status: self.status.clone(),
            holding: Arc::clone(&self.holding),
        }
    }
}

/// The store's name for a syncrepl stream: the search it follows (another base or filter
/// starts over).
fn stream_id(l: &crate::source::ldap::LdapSettings) -> String {
    format!("syncrepl {} {} {}", l.url, l.base_dn, l.filter)
}

/// How many recent runs are looked at to seed the window at start.
const SEED_RUNS: u32 = 2_000;

/// (target, disables and deletes applied) from a stored run summary.
fn applied_of_summary(summary: &serde_json::Value) -> Vec<(String, WindowCounts)> {
    let Some(targets) = summary.get("targets").and_then(|t| t.as_array()) else {
        return Vec::new();
    };
    targets
        .iter()
        .filter_map(|t| {
            let name = t.get("name")?.as_str()?.to_string();
            let by_kind = t.get("applied")?.get("by_kind")?;
            let n = |k: &str| {
                by_kind
                    .get(k)
                    .and_then(|c| c.get("succeeded"))
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0)
            };
            let c = WindowCounts {
                disables: n("disable"),
                deletes: n("delete"),
            };
            (c != WindowCounts::default()).then_some((name, c))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_give_the_window_counts() {
        let v = serde_json::json!({"targets": [
            {"name": "a", "applied": {"by_kind": {"disable": {"succeeded": 3, "failed": 1, "skipped": 0}}}},
            {"name": "b", "applied": null},
            {"name": "c", "applied": {"by_kind": {"update": {"succeeded": 3, "failed": 0, "skipped": 0}}}},
        ]});
        assert_eq!(
            applied_of_summary(&v),
            [(
                "a".to_string(),
                WindowCounts {
                    disables: 3,
                    deletes: 0
                }
            )]
        );
    }

    #[test]
    fn batches_gather_keys_and_a_full_read_wins() {
        let mut b = Batch::default();
        let now = Instant::now();
        b.add(LiveEvent::Changed {
            keys: vec!["b".into(), "a".into()],
            changed_at: None,
            received: now,
        });
        b.add(LiveEvent::Cookie(vec![1]));
        assert_eq!(b.events, 2);
        assert!(b.full.is_none());
        b.add(LiveEvent::Full {
            why: "x".into(),
            received: now,
        });
        assert_eq!(b.full.as_deref(), Some("x"));
        assert_eq!(b.cookie.as_deref(), Some(&[1u8][..]));
    }
}
