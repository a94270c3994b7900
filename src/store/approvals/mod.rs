//! The approvals port ([`ApprovalStore`]) on SQLite: the tables of migration 3 in
//! `cardgate.db`, through their own connection (approvals are low-volume and must
//! not queue behind the ledger's group-commit writer).
//!
//! One connection behind a mutex, used only on tokio's blocking threads: every
//! call runs in `spawn_blocking`, so a commit's fsync never stalls a runtime
//! worker. A change list is one `BEGIN IMMEDIATE` transaction, so its guards are
//! checked with the database's write lock held and nothing can slip in between a
//! guard and its write.

pub(in crate::store) mod codec;
mod read;
mod write;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use rusqlite::Connection;

use super::StoreError;
use super::gate::SideWrites;
use crate::approvals::model::{
    Allowance, ApiKey, ApprovalRequest, ControlOverride, Delivery, EventRecord, HistoryEntry,
    HistoryFilter, RequestFilter, Status,
};
use crate::approvals::{
    ActionKind, ApprovalRule, ApprovalStore, ApprovalStoreError, Approvals, ApprovalsConfig,
    Change, Clock, Mode,
};

/// Approvals' tables in `<data dir>/cardgate.db`.
#[derive(Clone)]
pub struct SqliteApprovalStore {
    db: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// Turns shared with the ledger's writer (see `store::gate`).
    writes: Arc<SideWrites>,
}

impl std::fmt::Debug for SqliteApprovalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteApprovalStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteApprovalStore {
    /// Opens `<dir>/cardgate.db` (creating and migrating it like the ledger's store).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let (mut conn, path) = super::open_for_approvals(dir)?;
        let writes = SideWrites::install(&mut conn, &path).map_err(super::sqlite(&path))?;
        Ok(SqliteApprovalStore {
            db: Arc::new(Mutex::new(conn)),
            writes: Arc::new(writes),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection on a blocking thread.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, ApprovalStoreError> + Send + 'static,
    ) -> Result<T, ApprovalStoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            // A poisoned lock means a panic mid-operation; SQLite rolled the
            // transaction back, so the connection itself is still consistent.
            let mut conn = db.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await
        .map_err(|e| ApprovalStoreError::Backend(format!("approvals store task failed: {e}")))?
    }
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "used as `map_err(backend)`, which hands the error over by value"
)]
fn backend(e: rusqlite::Error) -> ApprovalStoreError {
    ApprovalStoreError::Backend(e.to_string())
}

#[async_trait]
impl ApprovalStore for SqliteApprovalStore {
    async fn apply(&self, changes: Vec<Change>) -> Result<(), ApprovalStoreError> {
        let writes = self.writes.clone();
        self.run(move |conn| writes.write(conn, |conn| write::apply(conn, &changes)))
            .await
    }

    async fn key_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<(ApiKey, String)>, ApprovalStoreError> {
        let hash = hash.to_string();
        self.run(move |c| read::key_by_hash(c, &hash).map_err(backend))
            .await
    }

    async fn key(&self, id: &str) -> Result<Option<ApiKey>, ApprovalStoreError> {
        let id = id.to_string();
        self.run(move |c| read::key(c, &id).map_err(backend)).await
    }

    async fn keys(&self) -> Result<Vec<ApiKey>, ApprovalStoreError> {
        self.run(|c| read::keys(c).map_err(backend)).await
    }

    async fn rule(&self, id: &str) -> Result<Option<ApprovalRule>, ApprovalStoreError> {
        let id = id.to_string();
        self.run(move |c| read::rule(c, &id).map_err(backend)).await
    }

    async fn active_rule(
        &self,
        action: ActionKind,
    ) -> Result<Option<ApprovalRule>, ApprovalStoreError> {
        self.run(move |c| read::active_rule(c, action, None).map_err(backend))
            .await
    }

    async fn rules(
        &self,
        action: Option<ActionKind>,
        active: Option<bool>,
    ) -> Result<Vec<ApprovalRule>, ApprovalStoreError> {
        self.run(move |c| read::rules(c, action, active).map_err(backend))
            .await
    }

    async fn request(&self, id: &str) -> Result<Option<ApprovalRequest>, ApprovalStoreError> {
        let id = id.to_string();
        self.run(move |c| read::request(c, &id).map_err(backend))
            .await
    }

    async fn open_request(
        &self,
        dedupe: &str,
    ) -> Result<Option<ApprovalRequest>, ApprovalStoreError> {
        let dedupe = dedupe.to_string();
        self.run(move |c| read::open_request(c, &dedupe).map_err(backend))
            .await
    }

    async fn requests(
        &self,
        filter: RequestFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ApprovalRequest>, bool), ApprovalStoreError> {
        let after = after.map(str::to_string);
        self.run(move |c| read::requests(c, filter, after.as_deref(), limit))
            .await
    }

    async fn lapsed_requests(
        &self,
        statuses: &[Status],
        now: i64,
    ) -> Result<Vec<ApprovalRequest>, ApprovalStoreError> {
        let statuses = statuses.to_vec();
        self.run(move |c| read::lapsed_requests(c, &statuses, now).map_err(backend))
            .await
    }

    async fn requests_in(
        &self,
        status: Status,
    ) -> Result<Vec<ApprovalRequest>, ApprovalStoreError> {
        self.run(move |c| read::requests_in(c, status).map_err(backend))
            .await
    }

    async fn history(
        &self,
        filter: &HistoryFilter,
        before: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<HistoryEntry>, bool), ApprovalStoreError> {
        let filter = filter.clone();
        self.run(move |c| read::history(c, &filter, before, limit).map_err(backend))
            .await
    }

    async fn events(
        &self,
        kind: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<EventRecord>, bool), ApprovalStoreError> {
        let (kind, after) = (kind.map(str::to_string), after.map(str::to_string));
        self.run(move |c| read::events(c, kind.as_deref(), after.as_deref(), limit))
            .await
    }

    async fn due_deliveries(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>, ApprovalStoreError> {
        self.run(move |c| read::due_deliveries(c, now_ms, limit).map_err(backend))
            .await
    }

    async fn next_delivery_ms(&self) -> Result<Option<i64>, ApprovalStoreError> {
        self.run(|c| read::next_delivery_ms(c).map_err(backend))
            .await
    }

    async fn overrides(&self) -> Result<Vec<ControlOverride>, ApprovalStoreError> {
        self.run(|c| read::overrides(c).map_err(backend)).await
    }

    async fn live_allowances(&self, now: i64) -> Result<Vec<Allowance>, ApprovalStoreError> {
        self.run(move |c| read::allowances(c, Some(now), None).map_err(backend))
            .await
    }

    async fn allowances(&self, limit: usize) -> Result<Vec<Allowance>, ApprovalStoreError> {
        self.run(move |c| read::allowances(c, None, Some(limit)).map_err(backend))
            .await
    }
}

/// Opens the approvals service for `serve` on `<dir>/cardgate.db`: marks executions
/// a stop interrupted as failed, and loads overrides and allowances. Its clock
/// carries the settings' test offset.
pub async fn open(dir: &Path, settings: ApprovalsConfig) -> Result<Approvals, StoreError> {
    let clock = Clock::with_offset(settings.clock_offset);
    open_with_clock(dir, settings, clock).await
}

/// [`open`] on a given clock (tests).
pub async fn open_with_clock(
    dir: &Path,
    settings: ApprovalsConfig,
    clock: Clock,
) -> Result<Approvals, StoreError> {
    start(dir, settings, clock, Mode::Serve).await
}

/// Opens the service for a command-line tool beside a possibly running server: no
/// start-up recovery (see [`Mode::Tool`]).
pub async fn open_tool(dir: &Path) -> Result<Approvals, StoreError> {
    start(dir, ApprovalsConfig::default(), Clock::system(), Mode::Tool).await
}

/// [`open_tool`] with the config's `[approvals]` settings (`keys create` applies
/// `max_key_lifetime`), on the approvals clock with its test offset, so the
/// command line judges key expiry exactly as the server does.
pub async fn open_tool_with(
    dir: &Path,
    settings: ApprovalsConfig,
) -> Result<Approvals, StoreError> {
    let clock = Clock::with_offset(settings.clock_offset);
    start(dir, settings, clock, Mode::Tool).await
}

async fn start(
    dir: &Path,
    settings: ApprovalsConfig,
    clock: Clock,
    mode: Mode,
) -> Result<Approvals, StoreError> {
    let store = SqliteApprovalStore::open(dir)?;
    let path = store.path.clone();
    Approvals::open(Arc::new(store), settings, clock, mode)
        .await
        .map_err(|e| StoreError::Sqlite {
            path,
            message: e.to_string(),
        })
}
