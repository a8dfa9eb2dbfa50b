//! Crash reconciliation: operations an earlier run left `pending` or `sent` are settled before
//! the target is planned again (sent creates looked up on the target, in rounds).

use std::time::{Duration, Instant};

use tracing::{debug, info};

use super::marker::Payload;
use super::{EngineError, RecoverySummary};
use crate::config::TargetConfig;
use crate::connector::{Connector, RemoteAccount};
use crate::mapping::Account;
use crate::store::{
    AccountChange, AccountRecord, AccountState, OpOutcome, OpStatus, RecordedAccount, Store,
    StoreError,
};

/// Sent creates looked up per round when the target cannot list (each round is recorded
/// before the next starts, so an interrupted reconciliation keeps what it confirmed).
const LOOKUP_CHUNK: usize = 64;
/// Confirmed creates recorded per store write during reconciliation.
const RECOVER_RECORD_CHUNK: usize = 2048;

/// A `sent` create of an earlier run, to look up on the target.
struct SentCreate {
    id: i64,
    key: String,
    account: Account,
    login: String,
}

/// Reconciles operations that an earlier run of this target left `pending` or `sent`.
/// Must run before the target is planned, so that a create that took effect is recorded and
/// not sent twice. If the target cannot be asked, nothing is sent and the run must stop.
///
/// `sent` creates are looked up together ([`Connector::find_accounts`]: one listing of the
/// target when it can list, else concurrent look-ups in rounds of [`LOOKUP_CHUNK`]); on
/// targets whose changes settle later (`settle_time`), those not found are looked for again,
/// all together, until the settle time has passed. Each confirmed create is recorded as soon
/// as its round is known, so a reconciliation that is itself interrupted keeps its progress.
pub async fn recover(
    store: &dyn Store,
    connector: &dyn Connector,
    target: &TargetConfig,
    run_id: i64,
) -> Result<RecoverySummary, EngineError> {
    let unfinished = store.unfinished_operations(&target.name).await?;
    let mut summary = RecoverySummary::default();
    if unfinished.is_empty() {
        return Ok(summary);
    }
    let started = Instant::now();
    let total = unfinished.len();
    info!(run_id, target = %target.name, count = total, "reconciling unfinished operations");
    let mut outcomes = Vec::new();
    let mut creates: Vec<SentCreate> = Vec::new();
    for op in unfinished {
        if op.status == "pending" {
            summary.superseded += 1;
            outcomes.push(OpOutcome {
                id: op.id,
                status: OpStatus::Skipped,
                error: Some("not sent before the run stopped; re-planned".into()),
                remote_id: None,
            });
            continue;
        }
        let account = serde_json::from_value::<Payload>(op.payload)
            .ok()
            .and_then(|p| p.account);
        match (op.kind.as_str(), account) {
            ("create", Some(account)) => {
                let login = account
                    .fields
                    .get(&target.mapping.login_field)
                    .cloned()
                    .unwrap_or_default();
                creates.push(SentCreate {
                    id: op.id,
                    key: op.source_key,
                    account,
                    login,
                });
            }
            _ => {
                // Updates, role changes, enable/disable/delete are idempotent: the account row
                // was not changed, so the next plan sends them again if still needed.
                summary.replanned += 1;
                outcomes.push(OpOutcome {
                    id: op.id,
                    status: OpStatus::Failed,
                    error: Some("interrupted with an unknown outcome; re-planned".into()),
                    remote_id: None,
                });
            }
        }
    }
    if !outcomes.is_empty() {
        store.record_outcomes(&target.name, &outcomes, &[]).await?;
    }
    let caps = connector.capabilities();
    let deadline = caps.settle_time.map(|t| started + t);
    // A target that lists is asked once per round for all of them; else in chunks, each
    // recorded before the next is asked.
    let chunk = if caps.can_list {
        creates.len().max(1)
    } else {
        LOOKUP_CHUNK
    };
    let mut delay = Duration::from_millis(250);
    let mut rounds = 0u32;
    // Progress: sent creates looked up (in this round) of those left unfinished.
    let task = crate::progress::start(
        &target.name,
        crate::progress::Phase::Recover,
        Some(creates.len() as u64),
        None,
    );
    while !creates.is_empty() {
        rounds += 1;
        let mut missing: Vec<SentCreate> = Vec::new();
        let mut rest = creates.into_iter().peekable();
        while rest.peek().is_some() {
            let part: Vec<SentCreate> = rest.by_ref().take(chunk).collect();
            let logins: Vec<String> = part.iter().map(|c| c.login.clone()).collect();
            let found = connector.find_accounts(&logins).await.map_err(|e| {
                let count = total - summary.confirmed as usize;
                if e.is_target_fatal() {
                    EngineError::TargetFatal {
                        target: target.name.clone(),
                        message: format!(
                            "{e} (while reconciling {count} operation(s) left unfinished by an earlier run)"
                        ),
                    }
                } else {
                    EngineError::Reconcile {
                        target: target.name.clone(),
                        count,
                        message: format!("looking up {} sent create(s): {e}", logins.len()),
                    }
                }
            })?;
            let mut confirmed = Vec::new();
            for (c, f) in part
                .into_iter()
                .zip(found.into_iter().chain(std::iter::repeat(None)))
            {
                match f {
                    Some(remote) => confirmed.push((c, remote)),
                    None => missing.push(c),
                }
            }
            record_confirmed(store, target, run_id, &confirmed).await?;
            summary.confirmed += confirmed.len() as u64;
            task.set(summary.confirmed + missing.len() as u64, 0);
            if !confirmed.is_empty() {
                debug!(run_id, target = %target.name, confirmed = summary.confirmed, "sent creates confirmed on the target");
            }
        }
        creates = missing;
        match deadline {
            Some(d) if !creates.is_empty() && Instant::now() < d => {
                let left = d.saturating_duration_since(Instant::now());
                tokio::time::sleep(delay.min(left)).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            _ => break,
        }
    }
    // Not on the target (after the settle time): the create never took effect.
    let not_applied: Vec<OpOutcome> = creates
        .iter()
        .map(|c| OpOutcome {
            id: c.id,
            status: OpStatus::Failed,
            error: Some("interrupted before the target created the account; re-planned".into()),
            remote_id: None,
        })
        .collect();
    summary.replanned += not_applied.len() as u64;
    drop(task);
    if !not_applied.is_empty() {
        store
            .record_outcomes(&target.name, &not_applied, &[])
            .await?;
    }
    info!(run_id, target = %target.name, confirmed = summary.confirmed, replanned = summary.replanned,
          superseded = summary.superseded, rounds, ms = started.elapsed().as_millis() as u64, "reconciled");
    Ok(summary)
}

/// Records sent creates found on the target as succeeded, with their account rows, in
/// batches of [`RECOVER_RECORD_CHUNK`].
async fn record_confirmed(
    store: &dyn Store,
    target: &TargetConfig,
    run_id: i64,
    confirmed: &[(SentCreate, RemoteAccount)],
) -> Result<(), StoreError> {
    for part in confirmed.chunks(RECOVER_RECORD_CHUNK) {
        let mut outcomes = Vec::with_capacity(part.len());
        let mut changes = Vec::with_capacity(part.len());
        for (c, remote) in part {
            debug!(run_id, target = %target.name, key = %c.key, "create took effect before the interruption");
            changes.push(AccountChange::Upsert(created_record(
                &c.account,
                remote.remote_id.clone(),
                &target.mapping.login_field,
                run_id,
            )));
            outcomes.push(OpOutcome {
                id: c.id,
                status: OpStatus::Succeeded,
                error: Some("reconciled after an interruption: the target has the account".into()),
                remote_id: Some(remote.remote_id.clone()),
            });
        }
        store
            .record_outcomes(&target.name, &outcomes, &changes)
            .await?;
    }
    Ok(())
}

/// The account row a create makes (owned, enabled); first contact reuses it for an existing
/// account it records as not owned.
pub(crate) fn created_record(
    account: &Account,
    remote_id: String,
    login_field: &str,
    run_id: i64,
) -> AccountRecord {
    AccountRecord {
        account: RecordedAccount {
            key: account.key.clone(),
            remote_id: Some(remote_id),
            login: account.fields.get(login_field).cloned(),
            hash: account.hash,
            enabled: true,
            owned: true,
            adopted: false,
            disabled_at: None,
        },
        state: AccountState {
            fields: account.fields.clone(),
            roles: account.roles.clone(),
            groups: account.groups.clone(),
        },
        last_seen_run: Some(run_id),
    }
}
