//! Advisory locks: the keys of run leases and target locks, and a held target lock.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use super::query_error;
use crate::store::{StoreError, TargetLock};

/// The advisory lock key of a run's lease: a stable 64-bit hash of its id, in dirsync's own
/// space (apart from the target locks' keys).
pub(super) fn run_lease_key(id: i64) -> i64 {
    xxhash_rust::xxh3::xxh3_64(format!("dirsync.run-lease.v1:{id}").as_bytes()) as i64
}

/// The advisory lock key of a target: a stable 64-bit hash of its name, in dirsync's own space.
pub(super) fn lock_key(target: &str) -> i64 {
    xxhash_rust::xxh3::xxh3_64(format!("dirsync.target-lock.v1:{target}").as_bytes()) as i64
}

pub(super) struct PgLock {
    pub(super) conn: PgConnection,
    pub(super) key: i64,
    pub(super) context: String,
}

#[async_trait::async_trait]
impl TargetLock for PgLock {
    async fn release(self: Box<Self>) -> Result<(), StoreError> {
        let PgLock {
            mut conn,
            key,
            context,
        } = *self;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(key)
            .execute(&mut conn)
            .await
            .map_err(query_error(context.clone()))?;
        conn.close().await.map_err(query_error(context))
    }
}
