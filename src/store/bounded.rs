//! A deadline on every call to a networked store: a call that gets no answer within
//! `state.timeout` fails with [`StoreError::Timeout`] instead of waiting forever.
//!
//! Why: when Postgres terminates dirsync's sessions (a server restart, `pg_terminate_backend`,
//! a failover), a statement already in flight on a killed session can be left waiting for an
//! answer that never comes. Bounded, such a call fails, the run fails with "state store did not
//! answer", and everything it journaled is reconciled by the next run.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use super::{
    AccountRecord, AccountState, NewOperation, NewRun, OpOutcome, OperationRecord, RecordedAccount,
    RunFinish, RunRecord, Store, StoreError, TargetLock,
};
use crate::store::{AccountChange, PruneSummary};

/// A store whose every call is bounded by `limit`.
pub struct Bounded<S> {
    inner: S,
    limit: Duration,
}

impl<S: Store> Bounded<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        Bounded { inner, limit }
    }

    async fn call<T>(
        &self,
        what: &'static str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        bounded(self.inner.backend(), what, self.limit, fut).await
    }
}

async fn bounded<T>(
    backend: &'static str,
    what: &'static str,
    limit: Duration,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(
                backend,
                call = what,
                limit_s = limit.as_secs_f64(),
                "state store did not answer"
            );
            Err(StoreError::Timeout {
                backend,
                context: what.to_string(),
                after: limit,
            })
        }
    }
}

/// A lock whose release is bounded too.
struct BoundedLock {
    inner: Box<dyn TargetLock>,
    backend: &'static str,
    limit: Duration,
}

#[async_trait::async_trait]
impl TargetLock for BoundedLock {
    async fn release(self: Box<Self>) -> Result<(), StoreError> {
        let BoundedLock {
            inner,
            backend,
            limit,
        } = *self;
        bounded(backend, "release target lock", limit, inner.release()).await
    }
}

#[async_trait::async_trait]
impl<S: Store> Store for Bounded<S> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.call("migrate", self.inner.migrate()).await
    }

    async fn load_accounts(&self, target: &str) -> Result<Vec<RecordedAccount>, StoreError> {
        self.call("load accounts", self.inner.load_accounts(target))
            .await
    }

    async fn load_account_states(
        &self,
        target: &str,
        keys: &[String],
    ) -> Result<HashMap<String, AccountState>, StoreError> {
        self.call(
            "load account states",
            self.inner.load_account_states(target, keys),
        )
        .await
    }

    async fn upsert_accounts(
        &self,
        target: &str,
        rows: &[AccountRecord],
    ) -> Result<(), StoreError> {
        self.call("upsert accounts", self.inner.upsert_accounts(target, rows))
            .await
    }

    async fn delete_accounts(&self, target: &str, keys: &[String]) -> Result<(), StoreError> {
        self.call("delete accounts", self.inner.delete_accounts(target, keys))
            .await
    }

    async fn last_good_source_count(&self) -> Result<Option<u64>, StoreError> {
        self.call(
            "last good source count",
            self.inner.last_good_source_count(),
        )
        .await
    }

    async fn prune_runs(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<PruneSummary, StoreError> {
        self.call("prune runs", self.inner.prune_runs(before)).await
    }

    async fn begin_run(&self, run: &NewRun) -> Result<i64, StoreError> {
        self.call("begin run", self.inner.begin_run(run)).await
    }

    async fn finish_run(&self, id: i64, finish: &RunFinish) -> Result<(), StoreError> {
        self.call("finish run", self.inner.finish_run(id, finish))
            .await
    }

    async fn list_runs(&self, limit: u32) -> Result<Vec<RunRecord>, StoreError> {
        self.call("list runs", self.inner.list_runs(limit)).await
    }

    async fn find_runs(&self, filter: &super::RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        self.call("list runs", self.inner.find_runs(filter)).await
    }

    async fn interrupt_abandoned_runs(&self) -> Result<Vec<i64>, StoreError> {
        self.call(
            "mark abandoned runs interrupted",
            self.inner.interrupt_abandoned_runs(),
        )
        .await
    }

    async fn get_run(&self, id: i64) -> Result<Option<RunRecord>, StoreError> {
        self.call("get run", self.inner.get_run(id)).await
    }

    async fn run_operations(&self, run_id: i64) -> Result<Vec<OperationRecord>, StoreError> {
        self.call("run operations", self.inner.run_operations(run_id))
            .await
    }

    async fn load_account_records(
        &self,
        target: &str,
        keys: &[String],
    ) -> Result<Vec<AccountRecord>, StoreError> {
        self.call(
            "load account records",
            self.inner.load_account_records(target, keys),
        )
        .await
    }

    async fn journal(
        &self,
        run_id: i64,
        target: &str,
        ops: &[NewOperation],
    ) -> Result<Vec<i64>, StoreError> {
        self.call(
            "journal operations",
            self.inner.journal(run_id, target, ops),
        )
        .await
    }

    async fn mark_sent(&self, ids: &[i64]) -> Result<(), StoreError> {
        self.call("mark operations sent", self.inner.mark_sent(ids))
            .await
    }

    async fn record_outcomes(
        &self,
        target: &str,
        outcomes: &[OpOutcome],
        changes: &[AccountChange],
    ) -> Result<(), StoreError> {
        self.call(
            "record outcomes",
            self.inner.record_outcomes(target, outcomes, changes),
        )
        .await
    }

    async fn try_lock_target(
        &self,
        target: &str,
        holder: &str,
    ) -> Result<Option<Box<dyn TargetLock>>, StoreError> {
        let lock = self
            .call(
                "take target lock",
                self.inner.try_lock_target(target, holder),
            )
            .await?;
        Ok(lock.map(|inner| {
            Box::new(BoundedLock {
                inner,
                backend: self.inner.backend(),
                limit: self.limit,
            }) as Box<dyn TargetLock>
        }))
    }

    async fn unfinished_operations(
        &self,
        target: &str,
    ) -> Result<Vec<OperationRecord>, StoreError> {
        self.call(
            "unfinished operations",
            self.inner.unfinished_operations(target),
        )
        .await
    }

    async fn state_version(&self, target: &str) -> Result<i64, StoreError> {
        self.call("state version", self.inner.state_version(target))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_without_answer_fails_after_the_limit() {
        let hung = std::future::pending::<Result<(), StoreError>>();
        let e = bounded(
            "postgres",
            "record outcomes",
            Duration::from_millis(20),
            hung,
        )
        .await
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("record outcomes"), "{text}");
        assert!(text.contains("did not answer within"), "{text}");
        let ok = bounded("postgres", "x", Duration::from_secs(1), async { Ok(7) }).await;
        assert_eq!(ok.unwrap(), 7);
    }
}
