//! The storage port: what approvals needs from a database, named for its uses.
//! `src/store/approvals/` implements it on SQLite; another backend
//! (`PostgreSQL`) is another implementation of this trait, nothing else.
//!
//! Reads are plain methods. Every state change is one [`ApprovalStore::apply`]
//! of a list of [`Change`]s: one transaction, all or nothing, with each change's
//! guard checked inside it. A guard protects what the change was computed from
//! (the status a request is leaving, the rule as it was read, "no other rule is
//! active for this action", "no open request carries this dedupe key"). When one
//! fails the backend writes nothing and answers [`ApprovalStoreError::Stale`]; the
//! service reads again and decides again. Concurrent changes therefore behave as
//! if run one after the other: of two reviewers approving at once, the second
//! finds the request no longer awaiting review, so the action runs once.
//!
//! A backend must make each guard and its write atomic against concurrent
//! transactions: SQLite takes the write lock first (`BEGIN IMMEDIATE`); a
//! `PostgreSQL` backend would lock the rows it checks (`SELECT … FOR UPDATE`) and
//! back "at most one open request per dedupe key" and "one active rule per
//! action" with partial unique indexes, as migration 3 does for the latter.

use async_trait::async_trait;

use super::action::{ActionKind, Scope};
use super::model::{
    Allowance, ApiKey, ApprovalRequest, Attempt, ControlOverride, Delivery, Event, EventRecord,
    HistoryEntry, HistoryFilter, RequestFilter, Status,
};
use super::policy::ApprovalRule;

/// Why the store refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalStoreError {
    /// A guard found the state changed since it was read; nothing was written.
    #[error("the stored state changed since it was read")]
    Stale,
    /// A list cursor (`starting_after`) names no stored object.
    #[error("starting_after: no object {0:?}")]
    UnknownCursor(String),
    /// The database failed, or holds something unreadable; nothing was written.
    #[error("{0}")]
    Backend(String),
}

/// One write inside an [`ApprovalStore::apply`], with its guard.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Stores a new key with its hash.
    InsertKey {
        /// The key.
        key: ApiKey,
        /// Hex SHA-256 of its secret.
        hash: String,
    },
    /// Revokes a key. Guard: it exists and is not revoked.
    RevokeKey {
        /// `key_…`
        id: String,
        /// Unix seconds.
        at: i64,
    },
    /// Stores a new approval rule. Guard: when it is active, no rule is active for
    /// its action.
    InsertRule(ApprovalRule),
    /// Replaces an approval rule. Guard: the stored rule still equals `before`,
    /// and when `after` is active no other rule is active for its action.
    UpdateRule {
        /// As read.
        before: ApprovalRule,
        /// As it becomes.
        after: ApprovalRule,
    },
    /// Deletes an approval rule. Guard: the stored rule still equals this one.
    DeleteRule(ApprovalRule),
    /// Sets (creates or replaces) a control override.
    SetOverride(ControlOverride),
    /// Removes a control override, if any.
    ClearOverride {
        /// Card or cardholder.
        scope: Scope,
        /// `ic_…` or `ich_…`
        id: String,
    },
    /// Stores a granted allowance.
    InsertAllowance(Allowance),
    /// Marks an allowance used, unless it already is (a retry uses it once).
    UseAllowance {
        /// `allow_…`
        id: String,
        /// Unix seconds.
        at: i64,
        /// The authorization that used it.
        by: String,
    },
    /// Stores a new request. Guard: when it has a dedupe key, no open request
    /// ([`Status::OPEN`]) carries the same key.
    InsertRequest(ApprovalRequest),
    /// Stores a request's new state (status, reason, submission, expiry, review,
    /// outcome, stamps). Guard: its stored status is still `from`.
    UpdateRequest {
        /// The status it was read in.
        from: Status,
        /// The request as it becomes.
        request: ApprovalRequest,
    },
    /// Appends a security-history row.
    History(HistoryEntry),
    /// Stores an event and queues one delivery per endpoint.
    Event {
        /// The event.
        event: Event,
        /// Where it goes.
        endpoints: Vec<String>,
        /// When the first attempt is due, Unix milliseconds.
        first_attempt_ms: i64,
    },
    /// Records a delivery attempt on an outbox entry.
    Attempted {
        /// Outbox row.
        id: i64,
        /// Attempts so far, this one included.
        attempts: u32,
        /// How it went.
        result: Attempt,
    },
}

/// A backend's mark that this process is executing an approved request (see
/// [`ApprovalStore::hold_execution`]). Dropping it without [`release`] (a task
/// aborted, a panic) must still free the mark, at the latest when the process
/// or its connection ends.
///
/// [`release`]: HeldExecution::release
#[async_trait]
pub trait HeldExecution: Send + Sync {
    /// Frees the mark: the request's result is committed (or it never started).
    async fn release(self: Box<Self>);
}

/// What [`ApprovalStore::hold_execution`] answers: empty where one process owns
/// the database and there is nobody to tell.
#[derive(Default)]
pub struct ExecutionHold(Option<Box<dyn HeldExecution>>);

impl ExecutionHold {
    /// A hold a backend keeps until released or dropped.
    pub fn held(mark: Box<dyn HeldExecution>) -> Self {
        ExecutionHold(Some(mark))
    }

    /// Frees the mark, if any.
    pub async fn release(self) {
        if let Some(mark) = self.0 {
            mark.release().await;
        }
    }
}

impl std::fmt::Debug for ExecutionHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ExecutionHold")
            .field(&self.0.is_some())
            .finish()
    }
}

/// The approvals database.
#[async_trait]
pub trait ApprovalStore: Send + Sync + std::fmt::Debug + 'static {
    /// Applies `changes` in order in one transaction, all or nothing; a failed
    /// guard answers [`ApprovalStoreError::Stale`].
    async fn apply(&self, changes: Vec<Change>) -> Result<(), ApprovalStoreError>;

    // --- executions in flight ---

    /// Marks request `id` as being executed by this process, from before its
    /// approval commits until its result does, so that another process's
    /// start-up recovery leaves it alone (it fails only requests nobody holds).
    /// Waits while another process holds it: that is a concurrent approval of
    /// the same request, which the caller then finds already approved.
    ///
    /// The default marks nothing: one process owns the database (SQLite), so
    /// whatever recovery finds at start-up was left by a process that stopped.
    async fn hold_execution(&self, id: &str) -> Result<ExecutionHold, ApprovalStoreError> {
        let _ = id;
        Ok(ExecutionHold::default())
    }

    /// Whether a live process holds request `id`'s execution
    /// ([`hold_execution`](Self::hold_execution)). Default: no (one process).
    async fn execution_held(&self, id: &str) -> Result<bool, ApprovalStoreError> {
        let _ = id;
        Ok(false)
    }

    // --- keys ---

    /// The key whose secret hashes to `hash`, with the stored hash (compared again
    /// in constant time by the caller).
    async fn key_by_hash(&self, hash: &str)
    -> Result<Option<(ApiKey, String)>, ApprovalStoreError>;
    /// One key.
    async fn key(&self, id: &str) -> Result<Option<ApiKey>, ApprovalStoreError>;
    /// Every key, newest first.
    async fn keys(&self) -> Result<Vec<ApiKey>, ApprovalStoreError>;

    // --- approval rules ---

    /// One rule.
    async fn rule(&self, id: &str) -> Result<Option<ApprovalRule>, ApprovalStoreError>;
    /// The active rule for `action`, if any (at most one is).
    async fn active_rule(
        &self,
        action: ActionKind,
    ) -> Result<Option<ApprovalRule>, ApprovalStoreError>;
    /// Rules, newest first, filtered by action and by whether they are active.
    async fn rules(
        &self,
        action: Option<ActionKind>,
        active: Option<bool>,
    ) -> Result<Vec<ApprovalRule>, ApprovalStoreError>;

    // --- requests ---

    /// One request.
    async fn request(&self, id: &str) -> Result<Option<ApprovalRequest>, ApprovalStoreError>;
    /// The open request carrying `dedupe`, if any.
    async fn open_request(
        &self,
        dedupe: &str,
    ) -> Result<Option<ApprovalRequest>, ApprovalStoreError>;
    /// Requests, newest first: at most `limit` after the request `after`, and
    /// whether more follow.
    async fn requests(
        &self,
        filter: RequestFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ApprovalRequest>, bool), ApprovalStoreError>;
    /// Requests in `statuses` whose `expires_at` is at or before `now`.
    async fn lapsed_requests(
        &self,
        statuses: &[Status],
        now: i64,
    ) -> Result<Vec<ApprovalRequest>, ApprovalStoreError>;
    /// Every request in `status`.
    async fn requests_in(&self, status: Status)
    -> Result<Vec<ApprovalRequest>, ApprovalStoreError>;

    // --- security history and events ---

    /// History, newest first: at most `limit` entries with ids below `before`, and
    /// whether more follow.
    async fn history(
        &self,
        filter: &HistoryFilter,
        before: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<HistoryEntry>, bool), ApprovalStoreError>;
    /// Events of type `kind` (all when `None`), newest first, after the event
    /// `after`, and whether more follow.
    async fn events(
        &self,
        kind: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<EventRecord>, bool), ApprovalStoreError>;

    // --- outbox ---

    /// Up to `limit` deliveries due at `now_ms`, oldest first.
    async fn due_deliveries(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>, ApprovalStoreError>;
    /// When the next undelivered entry is due, if any.
    async fn next_delivery_ms(&self) -> Result<Option<i64>, ApprovalStoreError>;

    // --- overrides and allowances ---

    /// Every control override, by scope and id.
    async fn overrides(&self) -> Result<Vec<ControlOverride>, ApprovalStoreError>;
    /// Allowances neither used nor expired at `now`.
    async fn live_allowances(&self, now: i64) -> Result<Vec<Allowance>, ApprovalStoreError>;
    /// The newest `limit` allowances, used or not.
    async fn allowances(&self, limit: usize) -> Result<Vec<Allowance>, ApprovalStoreError>;
}
