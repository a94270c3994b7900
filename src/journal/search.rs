//! Reading the decision log back: the search the admin API's decisions explorer
//! runs and the recent window the review page backtests a proposed rule set on.
//! Declared here, beside the row it returns; `store/` implements it (only it
//! knows SQL), so the HTTP edge never names a database.

use super::LoggedDecision;

/// Most rows one search returns.
pub const MAX_SEARCH: u32 = 100;

/// What to look for in the decision log. Every field set must match; `None`
/// matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionQuery {
    /// `iauth_…`
    pub authorization: Option<String>,
    /// `ic_…`
    pub card: Option<String>,
    /// `ich_…`
    pub cardholder: Option<String>,
    /// The logged reason (`spending_limit`, `rule`, `approved`…).
    pub reason: Option<String>,
    /// A rule that decided, or a shadow rule that matched.
    pub rule: Option<String>,
    /// Only decisions at or after this Unix time.
    pub since: Option<i64>,
    /// Only rows older than this row id (paging, newest first).
    pub before_id: Option<i64>,
    /// Rows wanted, 1..=[`MAX_SEARCH`].
    pub limit: u32,
}

/// Why the decision log could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the decision log could not be read: {0}")]
pub struct LogReadError(pub String);

/// What a [`DecisionLog`] read resolves to. (`journal/mod.rs` does not
/// re-export it; implementations spell the type out.)
pub type LogFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, LogReadError>> + Send + 'a>>;

/// Read access to the decision log. Async, because one backend is a network
/// database (PostgreSQL); the SQLite one reads on the blocking pool.
pub trait DecisionLog: Send + Sync {
    /// Rows matching `q`, newest first, at most `q.limit`, and whether more match.
    fn search<'a>(&'a self, q: &'a DecisionQuery) -> LogFuture<'a, (Vec<LoggedDecision>, bool)>;

    /// The row with this id.
    fn get(&self, id: i64) -> LogFuture<'_, Option<LoggedDecision>>;

    /// Rows decided at or after `since`, oldest first, at most `max` (the newest
    /// `max` of them when more match) and whether some were left out.
    fn recent(&self, since: i64, max: usize) -> LogFuture<'_, (Vec<LoggedDecision>, bool)>;

    /// The bodies rows name by hash (`journal::seen`), for an exact replay.
    fn blobs(&self) -> LogFuture<'_, std::collections::HashMap<i64, Vec<u8>>>;
}
