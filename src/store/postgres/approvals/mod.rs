//! The approvals port ([`ApprovalStore`]) on PostgreSQL, with the SQLite
//! backend's semantics (`src/store/approvals/`): same guards, same decoding,
//! same order of lists. Every call takes a pooled connection; a change list is
//! one transaction whose guards the database makes atomic against other
//! replicas (see `write.rs`).
//!
//! One deliberate difference, for many replicas: [`ApprovalStore::due_deliveries`]
//! claims the entries it returns (`FOR UPDATE SKIP LOCKED`, next attempt moved
//! ahead by `read::CLAIM_MS`), so two replicas' outbox loops do not send the same
//! entry; the attempt's `Change::Attempted` then sets the real next attempt.
//!
//! Another, because several processes share the database: an execution in
//! flight is held with a session advisory lock (`execution.rs`), so a replica's
//! start-up recovery fails only executions whose process is gone.

mod execution;
mod read;
mod write;

use async_trait::async_trait;
use deadpool_postgres::Object;

use super::{Database, error_text};
use crate::approvals::model::{
    Allowance, ApiKey, ApprovalRequest, ControlOverride, Delivery, EventRecord, HistoryEntry,
    HistoryFilter, RequestFilter, Status,
};
use crate::approvals::{
    ActionKind, ApprovalRule, ApprovalStore, ApprovalStoreError, Change, ExecutionHold,
};

/// Approvals' tables in one PostgreSQL database.
#[derive(Clone, Debug)]
pub struct PgApprovalStore {
    db: Database,
}

impl PgApprovalStore {
    /// The store on an opened (migrated) database.
    pub fn new(db: Database) -> Self {
        PgApprovalStore { db }
    }

    /// Connects to `url` and migrates it: [`Database::connect`] then [`Self::new`].
    pub async fn connect(url: &str) -> Result<Self, super::PostgresError> {
        Ok(Self::new(Database::connect(url).await?))
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    async fn client(&self) -> Result<Object, ApprovalStoreError> {
        self.db.client().await.map_err(ApprovalStoreError::Backend)
    }
}

/// A driver error as the port's backend failure.
#[allow(
    clippy::needless_pass_by_value,
    reason = "an adapter for `map_err`, which hands the error over by value"
)]
fn pg(e: tokio_postgres::Error) -> ApprovalStoreError {
    ApprovalStoreError::Backend(error_text(&e))
}

#[async_trait]
impl ApprovalStore for PgApprovalStore {
    async fn apply(&self, changes: Vec<Change>) -> Result<(), ApprovalStoreError> {
        let mut c = self.client().await?;
        write::apply(&mut c, &changes, self.db.commits_async()).await
    }

    async fn hold_execution(&self, id: &str) -> Result<ExecutionHold, ApprovalStoreError> {
        execution::hold(&self.db, id).await
    }

    async fn execution_held(&self, id: &str) -> Result<bool, ApprovalStoreError> {
        execution::held(&self.db, id).await
    }

    async fn key_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<(ApiKey, String)>, ApprovalStoreError> {
        read::key_by_hash(&**self.client().await?, hash).await
    }

    async fn key(&self, id: &str) -> Result<Option<ApiKey>, ApprovalStoreError> {
        read::key(&**self.client().await?, id).await
    }

    async fn keys(&self) -> Result<Vec<ApiKey>, ApprovalStoreError> {
        read::keys(&**self.client().await?).await
    }

    async fn rule(&self, id: &str) -> Result<Option<ApprovalRule>, ApprovalStoreError> {
        read::rule(&**self.client().await?, id, false).await
    }

    async fn active_rule(
        &self,
        action: ActionKind,
    ) -> Result<Option<ApprovalRule>, ApprovalStoreError> {
        read::active_rule(&**self.client().await?, action, None).await
    }

    async fn rules(
        &self,
        action: Option<ActionKind>,
        active: Option<bool>,
    ) -> Result<Vec<ApprovalRule>, ApprovalStoreError> {
        read::rules(&**self.client().await?, action, active).await
    }

    async fn request(&self, id: &str) -> Result<Option<ApprovalRequest>, ApprovalStoreError> {
        read::request(&**self.client().await?, id).await
    }

    async fn open_request(
        &self,
        dedupe: &str,
    ) -> Result<Option<ApprovalRequest>, ApprovalStoreError> {
        read::open_request(&**self.client().await?, dedupe).await
    }

    async fn requests(
        &self,
        filter: RequestFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ApprovalRequest>, bool), ApprovalStoreError> {
        read::requests(&**self.client().await?, filter, after, limit).await
    }

    async fn lapsed_requests(
        &self,
        statuses: &[Status],
        now: i64,
    ) -> Result<Vec<ApprovalRequest>, ApprovalStoreError> {
        read::lapsed_requests(&**self.client().await?, statuses, now).await
    }

    async fn requests_in(
        &self,
        status: Status,
    ) -> Result<Vec<ApprovalRequest>, ApprovalStoreError> {
        read::requests_in(&**self.client().await?, status).await
    }

    async fn history(
        &self,
        filter: &HistoryFilter,
        before: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<HistoryEntry>, bool), ApprovalStoreError> {
        read::history(&**self.client().await?, filter, before, limit).await
    }

    async fn events(
        &self,
        kind: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<EventRecord>, bool), ApprovalStoreError> {
        read::events(&**self.client().await?, kind, after, limit).await
    }

    async fn due_deliveries(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>, ApprovalStoreError> {
        read::claim_due_deliveries(&**self.client().await?, now_ms, limit).await
    }

    async fn next_delivery_ms(&self) -> Result<Option<i64>, ApprovalStoreError> {
        read::next_delivery_ms(&**self.client().await?).await
    }

    async fn overrides(&self) -> Result<Vec<ControlOverride>, ApprovalStoreError> {
        read::overrides(&**self.client().await?).await
    }

    async fn live_allowances(&self, now: i64) -> Result<Vec<Allowance>, ApprovalStoreError> {
        read::allowances(&**self.client().await?, Some(now), None).await
    }

    async fn allowances(&self, limit: usize) -> Result<Vec<Allowance>, ApprovalStoreError> {
        read::allowances(&**self.client().await?, None, Some(limit)).await
    }
}
