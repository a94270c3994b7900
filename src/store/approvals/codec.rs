//! What both approvals backends (SQLite here, PostgreSQL in `store::postgres`)
//! encode the same way: the JSON columns of a request's changing state, the
//! request column list, the guard result and list paging. Kept in one place so
//! the two backends cannot drift apart in how they store a request.

use crate::approvals::ApprovalStoreError;
use crate::approvals::model::{ApprovalRequest, Outcome};

type Result<T> = std::result::Result<T, ApprovalStoreError>;

/// Columns of `approval_requests`, in the order both backends' row decoders read.
pub(in crate::store) const REQUEST_COLUMNS: &str =
    "id, params, status, requested_by, requester_role, requester_name,
    rule_id, rule_name, reviewers, reason, created, expires_at, submitted_at, review, result,
    error, transitions, dedupe";

/// A value as its JSON column text.
pub(in crate::store) fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| ApprovalStoreError::Backend(e.to_string()))
}

/// A change's guard: `Stale` (nothing written) when it no longer holds.
pub(in crate::store) fn guard(holds: bool) -> Result<()> {
    if holds {
        Ok(())
    } else {
        Err(ApprovalStoreError::Stale)
    }
}

/// At most `limit` of `rows`, and whether there were more.
pub(in crate::store) fn page<T>(mut rows: Vec<T>, limit: usize) -> (Vec<T>, bool) {
    let more = rows.len() > limit;
    rows.truncate(limit);
    (rows, more)
}

/// The JSON columns of a request's changing state.
pub(in crate::store) struct StateColumns {
    pub(in crate::store) review: Option<String>,
    pub(in crate::store) result: Option<String>,
    pub(in crate::store) error: Option<String>,
    pub(in crate::store) transitions: String,
}

/// `req`'s review, outcome and transitions as their column texts.
pub(in crate::store) fn state_columns(req: &ApprovalRequest) -> Result<StateColumns> {
    let (result, error) = match &req.outcome {
        Some(Outcome::Succeeded { result }) => (Some(result.to_string()), None),
        Some(Outcome::Failed(f)) => (None, Some(to_json(f)?)),
        None => (None, None),
    };
    Ok(StateColumns {
        review: req.review.as_ref().map(to_json).transpose()?,
        result,
        error,
        transitions: to_json(&req.transitions)?,
    })
}
