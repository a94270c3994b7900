//! Writes: one change list, one transaction. Each change checks its guard (see
//! `crate::approvals::store::Change`) before it writes; a failed guard rolls the
//! whole list back and answers `Stale`.
//!
//! Concurrent transactions (other replicas) are kept out of each guard by the
//! database, not by a process lock: a status guard is part of its `UPDATE …
//! WHERE status = …` (a second writer waits for the row, then finds the status
//! moved and changes nothing); a rule compared before it is rewritten is read
//! `FOR UPDATE`; "one active rule per action" and "one open request per dedupe
//! key" are unique indexes, whose violation by a racing transaction is a stale
//! guard like any other.

use tokio_postgres::Transaction;
use tokio_postgres::error::SqlState;

use super::{pg, read};
use crate::approvals::model::{
    Allowance, ApprovalRequest, Attempt, ControlOverride, Event, Status,
};
use crate::approvals::{ApprovalRule, ApprovalStoreError, Change};
use crate::store::approvals::codec::{guard, state_columns, to_json};

type Result<T> = std::result::Result<T, ApprovalStoreError>;

/// Unique indexes that back a guard (see `schema.rs`).
const GUARD_INDEXES: [&str; 2] = ["approval_rules_one_active", "approval_requests_one_open"];

pub(super) async fn apply(
    client: &mut tokio_postgres::Client,
    changes: &[Change],
    commits_async: bool,
) -> Result<()> {
    let tx = client.transaction().await.map_err(pg)?;
    // `serve` shares one pool with the decision path, whose sessions commit
    // asynchronously in `async` durability; security history and approval state
    // are committed durably all the same. (Only then: a session left alone keeps
    // the server's setting, which may be stronger, e.g. `remote_apply`.)
    if commits_async {
        tx.batch_execute("SET LOCAL synchronous_commit = on")
            .await
            .map_err(pg)?;
    }
    let mut outcome = Ok(());
    for change in changes {
        outcome = one(&tx, change).await;
        if outcome.is_err() {
            break;
        }
    }
    match outcome {
        Ok(()) => tx.commit().await.map_err(write_error),
        Err(e) => {
            // The error is the answer; a rollback that fails (connection lost)
            // leaves nothing committed either.
            if let Err(rollback) = tx.rollback().await {
                tracing::debug!(error = %pg(rollback), "approvals rollback failed");
            }
            Err(e)
        }
    }
}

/// A write's error: a racing transaction that took what a guard index protects
/// makes this change stale; anything else is the backend's failure.
fn write_error(e: tokio_postgres::Error) -> ApprovalStoreError {
    let guard = e.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::UNIQUE_VIOLATION
            && db
                .constraint()
                .is_some_and(|name| GUARD_INDEXES.contains(&name))
    });
    if guard {
        ApprovalStoreError::Stale
    } else {
        pg(e)
    }
}

/// Whether a rule other than `rule` is active for its action.
async fn other_active(tx: &Transaction<'_>, rule: &ApprovalRule) -> Result<bool> {
    Ok(read::active_rule(tx, rule.action, Some(&rule.id))
        .await?
        .is_some())
}

/// Whether the stored rule is still exactly `rule`; its row stays locked until
/// the transaction ends.
async fn unchanged(tx: &Transaction<'_>, rule: &ApprovalRule) -> Result<bool> {
    Ok(read::rule(tx, &rule.id, true).await?.as_ref() == Some(rule))
}

async fn one(tx: &Transaction<'_>, change: &Change) -> Result<()> {
    match change {
        Change::InsertKey { key, hash } => {
            tx.execute(
                "INSERT INTO api_keys (id, name, role, hash, created, created_by, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[&key.id, &key.name, &key.role.as_str(), hash, &key.created, &key.created_by, &key.expires_at],
            )
            .await
            .map_err(write_error)?;
        }
        Change::RevokeKey { id, at } => {
            let n = tx
                .execute(
                    "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                    &[id, at],
                )
                .await
                .map_err(write_error)?;
            guard(n == 1)?;
        }
        Change::InsertRule(rule) => {
            guard(!(rule.active && other_active(tx, rule).await?))?;
            tx.execute(
                "INSERT INTO approval_rules (id, action, body, active, created) VALUES ($1, $2, $3, $4, $5)",
                &[&rule.id, &rule.action.as_str(), &to_json(rule)?, &rule.active, &rule.created],
            )
            .await
            .map_err(write_error)?;
        }
        Change::UpdateRule { before, after } => {
            guard(before.id == after.id && unchanged(tx, before).await?)?;
            guard(!(after.active && other_active(tx, after).await?))?;
            tx.execute(
                "UPDATE approval_rules SET body = $2, active = $3 WHERE id = $1",
                &[&after.id, &to_json(after)?, &after.active],
            )
            .await
            .map_err(write_error)?;
        }
        Change::DeleteRule(rule) => {
            guard(unchanged(tx, rule).await?)?;
            tx.execute("DELETE FROM approval_rules WHERE id = $1", &[&rule.id])
                .await
                .map_err(write_error)?;
        }
        Change::InsertRequest(req) => {
            if let Some(d) = &req.dedupe {
                guard(read::open_request(tx, d).await?.is_none())?;
            }
            insert_request(tx, req).await?;
        }
        Change::UpdateRequest { from, request } => {
            update_request(tx, *from, request).await?;
        }
        Change::History(h) => {
            tx.execute(
                "INSERT INTO security_history (type, actor, object_id, created, details) VALUES ($1, $2, $3, $4, $5)",
                &[&h.kind, &h.actor, &h.object_id, &h.created, &h.details.to_string()],
            )
            .await
            .map_err(write_error)?;
        }
        Change::SetOverride(o) => set_override(tx, o).await?,
        Change::ClearOverride { scope, id } => {
            tx.execute(
                "DELETE FROM control_overrides WHERE scope = $1 AND id = $2",
                &[&scope.as_str(), id],
            )
            .await
            .map_err(write_error)?;
        }
        Change::InsertAllowance(a) => insert_allowance(tx, a).await?,
        Change::UseAllowance { id, at, by } => {
            tx.execute(
                "UPDATE allowances SET used_at = $2, used_by = $3 WHERE id = $1 AND used_at IS NULL",
                &[id, at, by],
            )
            .await
            .map_err(write_error)?;
        }
        Change::Event {
            event,
            endpoints,
            first_attempt_ms,
        } => insert_event(tx, event, endpoints, *first_attempt_ms).await?,
        Change::Attempted {
            id,
            attempts,
            result,
        } => record_attempt(tx, *id, *attempts, result).await?,
    }
    Ok(())
}

async fn set_override(tx: &Transaction<'_>, o: &ControlOverride) -> Result<()> {
    tx.execute(
        "INSERT INTO control_overrides (scope, id, body, updated) VALUES ($1, $2, $3, $4)
         ON CONFLICT (scope, id) DO UPDATE SET body = excluded.body, updated = excluded.updated",
        &[
            &o.spec.scope.as_str(),
            &o.spec.id,
            &to_json(&o.spec)?,
            &o.updated,
        ],
    )
    .await
    .map_err(write_error)?;
    Ok(())
}

async fn insert_allowance(tx: &Transaction<'_>, a: &Allowance) -> Result<()> {
    let s = &a.spec;
    tx.execute(
        "INSERT INTO allowances (id, card, merchant, amount, currency, body, created, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &a.id,
            &s.card,
            &s.merchant,
            &s.amount,
            &s.currency,
            &to_json(s)?,
            &a.created,
            &a.expires_at,
        ],
    )
    .await
    .map_err(write_error)?;
    Ok(())
}

/// Stores an event and queues one delivery per endpoint.
async fn insert_event(
    tx: &Transaction<'_>,
    event: &Event,
    endpoints: &[String],
    first_attempt_ms: i64,
) -> Result<()> {
    tx.execute(
        "INSERT INTO events (id, type, created, related_id, body) VALUES ($1, $2, $3, $4, $5)",
        &[
            &event.id,
            &event.kind,
            &event.created,
            &event.related_id,
            &event.body,
        ],
    )
    .await
    .map_err(write_error)?;
    for endpoint in endpoints {
        tx.execute(
            "INSERT INTO outbox (event_id, endpoint, next_attempt_ms) VALUES ($1, $2, $3)",
            &[&event.id, endpoint, &first_attempt_ms],
        )
        .await
        .map_err(write_error)?;
    }
    Ok(())
}

async fn record_attempt(
    tx: &Transaction<'_>,
    id: i64,
    attempts: u32,
    result: &Attempt,
) -> Result<()> {
    let attempts = i64::from(attempts);
    match result {
        Attempt::Delivered { at_ms } => {
            tx.execute(
                "UPDATE outbox SET attempts = $2, delivered_ms = $3, last_error = NULL WHERE id = $1",
                &[&id, &attempts, at_ms],
            )
            .await
        }
        Attempt::Failed {
            error,
            next_attempt_ms,
            give_up,
        } => {
            tx.execute(
                "UPDATE outbox SET attempts = $2, next_attempt_ms = $3, failed = $4, last_error = $5 WHERE id = $1",
                &[&id, &attempts, next_attempt_ms, give_up, error],
            )
            .await
        }
    }
    .map_err(write_error)?;
    Ok(())
}

async fn insert_request(tx: &Transaction<'_>, req: &ApprovalRequest) -> Result<()> {
    let c = state_columns(req)?;
    tx.execute(
        "INSERT INTO approval_requests
         (id, action, params, status, requested_by, requester_role, requester_name,
          rule_id, rule_name, reviewers, reason, created, expires_at, submitted_at, review,
          result, error, transitions, dedupe)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
        &[
            &req.id,
            &req.action.kind().as_str(),
            &to_json(&req.action)?,
            &req.status.as_str(),
            &req.requested_by.key_id,
            &req.requested_by.role.as_str(),
            &req.requested_by.name,
            &req.rule.as_ref().map(|r| &r.id),
            &req.rule.as_ref().and_then(|r| r.name.as_ref()),
            &to_json(&req.reviewers)?,
            &req.reason,
            &req.created,
            &req.expires_at,
            &req.submitted_at,
            &c.review,
            &c.result,
            &c.error,
            &c.transitions,
            &req.dedupe,
        ],
    )
    .await
    .map_err(write_error)?;
    Ok(())
}

async fn update_request(tx: &Transaction<'_>, from: Status, req: &ApprovalRequest) -> Result<()> {
    let c = state_columns(req)?;
    let n = tx
        .execute(
            "UPDATE approval_requests SET status = $3, reason = $4, submitted_at = $5,
             expires_at = $6, review = $7, result = $8, error = $9, transitions = $10
             WHERE id = $1 AND status = $2",
            &[
                &req.id,
                &from.as_str(),
                &req.status.as_str(),
                &req.reason,
                &req.submitted_at,
                &req.expires_at,
                &c.review,
                &c.result,
                &c.error,
                &c.transitions,
            ],
        )
        .await
        .map_err(write_error)?;
    guard(n == 1)
}
