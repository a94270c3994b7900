//! Executions in flight, marked with PostgreSQL session advisory locks: the
//! approving replica locks the request's key on a pooled connection it keeps out
//! of the pool until the result is committed; recovery on another replica probes
//! the key with `pg_try_advisory_lock`.
//!
//! *Why a session lock rather than a lease column:* the server frees it the
//! moment the holder's connection ends — a replica killed mid-execution leaves
//! nothing to expire, and a live one needs no renewal task or clock agreement
//! between replicas. The connection is the lease. Its one weakness is the
//! reverse case: a live replica whose connection drops (the server restarts) has
//! lost its mark, and a replica starting right then fails the request while the
//! action may still finish; its result then finds the request already failed
//! and is refused by the status guard (reported to the approver as a conflict).

use async_trait::async_trait;
use deadpool_postgres::Object;

use super::pg;
use crate::approvals::{ApprovalStoreError, ExecutionHold, HeldExecution};
use crate::store::postgres::Database;

/// The first key of every execution lock (two-key form), so they share no key
/// space with the one-key migration lock or any other advisory lock: "exec".
const NAMESPACE: i32 = 0x6578_6563;

/// How long an approval waits for another process's execution of the same
/// request (a concurrent approval) before answering a conflict. The pool's own
/// `statement_timeout` is the decision path's, far shorter than an action.
const WAIT_MS: u32 = 30_000;

/// The request's lock key: 32-bit FNV-1a of its id, the same in every build and
/// process (std's hasher is seeded per process). A collision only makes two
/// requests wait for each other or keeps recovery off a request a little longer.
pub(super) fn key(id: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    i32::from_ne_bytes(h.to_ne_bytes())
}

/// Locks `id`'s key on a connection taken out of the pool for the execution.
pub(super) async fn hold(db: &Database, id: &str) -> Result<ExecutionHold, ApprovalStoreError> {
    let client = db.client().await.map_err(ApprovalStoreError::Backend)?;
    let key = key(id);
    // A session lock outlives the transaction; the transaction only scopes the
    // longer timeout to this wait.
    let sql = format!(
        "BEGIN; SET LOCAL statement_timeout = {WAIT_MS}; \
         SELECT pg_advisory_lock({NAMESPACE}, {key}); COMMIT"
    );
    if let Err(e) = client.batch_execute(&sql).await {
        // The connection is in an unknown state (a failed transaction, maybe the
        // lock after all): closing it frees whatever it holds.
        drop(Object::take(client));
        return Err(pg(e));
    }
    Ok(ExecutionHold::held(Box::new(Held {
        client: Some(client),
        key,
    })))
}

/// Whether some session holds `id`'s key. Taking and at once releasing it in one
/// statement: `CASE` evaluates the release only when the lock was taken.
pub(super) async fn held(db: &Database, id: &str) -> Result<bool, ApprovalStoreError> {
    let client = db.client().await.map_err(ApprovalStoreError::Backend)?;
    let row = client
        .query_one(
            "SELECT CASE WHEN pg_try_advisory_lock($1, $2)
                         THEN NOT pg_advisory_unlock($1, $2)
                         ELSE TRUE END",
            &[&NAMESPACE, &key(id)],
        )
        .await
        .map_err(pg)?;
    row.try_get(0).map_err(pg)
}

/// One held execution lock and the connection that holds it.
struct Held {
    client: Option<Object>,
    key: i32,
}

#[async_trait]
impl HeldExecution for Held {
    async fn release(mut self: Box<Self>) {
        let Some(client) = self.client.take() else {
            return;
        };
        let unlocked = client
            .query_one(
                "SELECT pg_advisory_unlock($1, $2)",
                &[&NAMESPACE, &self.key],
            )
            .await;
        match unlocked {
            // Back to the pool, holding nothing.
            Ok(row) if row.try_get::<_, bool>(0).unwrap_or(false) => drop(client),
            other => {
                tracing::warn!(result = ?other.map(|r| r.try_get::<_, bool>(0)), "execution lock not released cleanly; closing its connection");
                drop(Object::take(client));
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Not released (the approving task was aborted or panicked): the lock
        // must not go back to the pool with the connection, so the connection
        // is closed, which makes the server free the lock.
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::key;

    #[test]
    fn execution_lock_keys_are_stable_across_processes() {
        // FNV-1a 32 of "a" is 0xe40c292c; a per-process seeded hash would differ
        // between replicas and make the lock useless.
        assert_eq!(key("a"), i32::from_ne_bytes(0xe40c_292c_u32.to_ne_bytes()));
        assert_ne!(key("apreq_1"), key("apreq_2"));
    }
}
