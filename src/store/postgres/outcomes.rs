//! `record_outcomes` in chunks: one statement (data-modifying CTEs over `UNNEST`) per chunk.

use chrono::{DateTime, Utc};

use super::{CHUNK, RECORD_OUTCOMES};
use crate::store::OpOutcome;

/// The `i`-th [`CHUNK`] of `items` (empty past the end).
pub(super) fn chunk_of<T>(items: &[T], i: usize) -> &[T] {
    let start = (i * CHUNK).min(items.len());
    &items[start..(start + CHUNK).min(items.len())]
}

/// One statement's share of a `record_outcomes` batch.
pub(super) struct OutcomeChunk<'a, 'c> {
    pub(super) outcomes: &'a [&'a OpOutcome],
    pub(super) upserts: &'a [crate::store::CoalescedUpsert<'c>],
    pub(super) set_enabled: &'a [(&'c str, bool, Option<DateTime<Utc>>)],
    pub(super) deletes: &'a [&'c str],
}

impl OutcomeChunk<'_, '_> {
    pub(super) async fn execute<'e>(
        &self,
        executor: impl sqlx::PgExecutor<'e>,
        target: &str,
    ) -> Result<(), sqlx::Error> {
        let o = self.outcomes;
        let ids: Vec<i64> = o.iter().map(|o| o.id).collect();
        let statuses: Vec<&str> = o.iter().map(|o| o.status.as_str()).collect();
        let errors: Vec<Option<&str>> = o.iter().map(|o| o.error.as_deref()).collect();
        let remote_ids: Vec<Option<&str>> = o.iter().map(|o| o.remote_id.as_deref()).collect();
        let n = self.upserts.len();
        let mut keys = Vec::with_capacity(n);
        let mut u_remote_ids = Vec::with_capacity(n);
        let mut logins = Vec::with_capacity(n);
        let mut attributes = Vec::with_capacity(n);
        let mut roles = Vec::with_capacity(n);
        let mut hashes = Vec::with_capacity(n);
        let mut enabled = Vec::with_capacity(n);
        let mut owned = Vec::with_capacity(n);
        let mut adopted = Vec::with_capacity(n);
        let mut disabled_at: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
        let mut last_seen_run = Vec::with_capacity(n);
        for u in self.upserts {
            let row = u.record;
            let a = &row.account;
            keys.push(a.key.as_str());
            u_remote_ids.push(a.remote_id.as_deref());
            logins.push(a.login.as_deref());
            // Serialising string maps and sets cannot fail.
            attributes.push(serde_json::to_string(&row.state.fields).unwrap_or_default());
            roles.push(crate::store::memberships_json(&row.state));
            hashes.push(a.hash.to_string());
            enabled.push(u.enabled());
            owned.push(a.owned);
            adopted.push(a.adopted);
            disabled_at.push(u.disabled_at());
            last_seen_run.push(row.last_seen_run);
        }
        let s = self.set_enabled;
        let s_keys: Vec<&str> = s.iter().map(|(k, _, _)| *k).collect();
        let s_enabled: Vec<bool> = s.iter().map(|(_, e, _)| *e).collect();
        let s_disabled_at: Vec<Option<DateTime<Utc>>> = s.iter().map(|(_, _, d)| *d).collect();
        sqlx::query(RECORD_OUTCOMES)
            .bind(target)
            .bind(ids)
            .bind(statuses)
            .bind(errors)
            .bind(remote_ids)
            .bind(keys)
            .bind(u_remote_ids)
            .bind(logins)
            .bind(attributes)
            .bind(roles)
            .bind(hashes)
            .bind(enabled)
            .bind(owned)
            .bind(adopted)
            .bind(disabled_at)
            .bind(last_seen_run)
            .bind(s_keys)
            .bind(s_enabled)
            .bind(s_disabled_at)
            .bind(self.deletes)
            .execute(executor)
            .await?;
        Ok(())
    }
}
