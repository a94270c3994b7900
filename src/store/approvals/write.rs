//! Writes: one change list, one `BEGIN IMMEDIATE` transaction. Each change
//! checks its guard (see `crate::approvals::store::Change`) before it writes; a
//! failed guard rolls the whole list back and answers `Stale`.

use rusqlite::{Connection, Transaction, TransactionBehavior, params};

use super::codec::{guard, state_columns, to_json};
use super::{backend, read};
use crate::approvals::model::{ApprovalRequest, Attempt};
use crate::approvals::{ApprovalRule, ApprovalStoreError, Change};

type Result<T> = std::result::Result<T, ApprovalStoreError>;

pub(super) fn apply(conn: &mut Connection, changes: &[Change]) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend)?;
    for change in changes {
        one(&tx, change)?;
    }
    // Dropping `tx` on an early return above rolls everything back.
    tx.commit().map_err(backend)
}

/// Whether a rule other than `rule` is active for its action.
fn other_active(tx: &Transaction<'_>, rule: &ApprovalRule) -> Result<bool> {
    read::active_rule(tx, rule.action, Some(&rule.id))
        .map(|r| r.is_some())
        .map_err(backend)
}

/// Whether the stored rule is still exactly `rule`.
fn unchanged(tx: &Transaction<'_>, rule: &ApprovalRule) -> Result<bool> {
    Ok(read::rule(tx, &rule.id).map_err(backend)?.as_ref() == Some(rule))
}

#[expect(
    clippy::too_many_lines,
    reason = "one arm per `Change`, each its guard and its SQL; the match is the catalogue"
)]
fn one(tx: &Transaction<'_>, change: &Change) -> Result<()> {
    match change {
        Change::InsertKey { key, hash } => {
            tx.execute(
                "INSERT INTO api_keys (id, name, role, hash, created, created_by, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![key.id, key.name, key.role.as_str(), hash, key.created, key.created_by, key.expires_at],
            )
            .map_err(backend)?;
        }
        Change::RevokeKey { id, at } => {
            let n = tx
                .execute(
                    "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                    params![id, at],
                )
                .map_err(backend)?;
            guard(n == 1)?;
        }
        Change::InsertRule(rule) => {
            guard(!(rule.active && other_active(tx, rule)?))?;
            tx.execute(
                "INSERT INTO approval_rules (id, action, body, active, created) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![rule.id, rule.action.as_str(), to_json(rule)?, rule.active, rule.created],
            )
            .map_err(backend)?;
        }
        Change::UpdateRule { before, after } => {
            guard(before.id == after.id && unchanged(tx, before)?)?;
            guard(!(after.active && other_active(tx, after)?))?;
            tx.execute(
                "UPDATE approval_rules SET body = ?2, active = ?3 WHERE id = ?1",
                params![after.id, to_json(after)?, after.active],
            )
            .map_err(backend)?;
        }
        Change::DeleteRule(rule) => {
            guard(unchanged(tx, rule)?)?;
            tx.execute("DELETE FROM approval_rules WHERE id = ?1", params![rule.id])
                .map_err(backend)?;
        }
        Change::SetOverride(o) => {
            tx.execute(
                "INSERT INTO control_overrides (scope, id, body, updated) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (scope, id) DO UPDATE SET body = excluded.body, updated = excluded.updated",
                params![o.spec.scope.as_str(), o.spec.id, to_json(&o.spec)?, o.updated],
            )
            .map_err(backend)?;
        }
        Change::ClearOverride { scope, id } => {
            tx.execute(
                "DELETE FROM control_overrides WHERE scope = ?1 AND id = ?2",
                params![scope.as_str(), id],
            )
            .map_err(backend)?;
        }
        Change::InsertAllowance(a) => {
            let s = &a.spec;
            tx.execute(
                "INSERT INTO allowances (id, card, merchant, amount, currency, body, created, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![a.id, s.card, s.merchant, s.amount, s.currency, to_json(s)?, a.created, a.expires_at],
            )
            .map_err(backend)?;
        }
        Change::UseAllowance { id, at, by } => {
            tx.execute(
                "UPDATE allowances SET used_at = ?2, used_by = ?3 WHERE id = ?1 AND used_at IS NULL",
                params![id, at, by],
            )
            .map_err(backend)?;
        }
        Change::InsertRequest(req) => {
            if let Some(d) = &req.dedupe {
                guard(read::open_request(tx, d).map_err(backend)?.is_none())?;
            }
            insert_request(tx, req)?;
        }
        Change::UpdateRequest { from, request } => {
            update_request(tx, *from, request)?;
        }
        Change::History(h) => {
            tx.execute(
                "INSERT INTO security_history (type, actor, object_id, created, details) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![h.kind, h.actor, h.object_id, h.created, h.details.to_string()],
            )
            .map_err(backend)?;
        }
        Change::Event {
            event,
            endpoints,
            first_attempt_ms,
        } => {
            tx.execute(
                "INSERT INTO events (id, type, created, related_id, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![event.id, event.kind, event.created, event.related_id, event.body],
            )
            .map_err(backend)?;
            for endpoint in endpoints {
                tx.execute(
                    "INSERT INTO outbox (event_id, endpoint, next_attempt_ms) VALUES (?1, ?2, ?3)",
                    params![event.id, endpoint, first_attempt_ms],
                )
                .map_err(backend)?;
            }
        }
        Change::Attempted {
            id,
            attempts,
            result,
        } => {
            match result {
                Attempt::Delivered { at_ms } => tx.execute(
                    "UPDATE outbox SET attempts = ?2, delivered_ms = ?3, last_error = NULL WHERE id = ?1",
                    params![id, attempts, at_ms],
                ),
                Attempt::Failed {
                    error,
                    next_attempt_ms,
                    give_up,
                } => tx.execute(
                    "UPDATE outbox SET attempts = ?2, next_attempt_ms = ?3, failed = ?4, last_error = ?5 WHERE id = ?1",
                    params![id, attempts, next_attempt_ms, give_up, error],
                ),
            }
            .map_err(backend)?;
        }
    }
    Ok(())
}

fn insert_request(tx: &Transaction<'_>, req: &ApprovalRequest) -> Result<()> {
    let c = state_columns(req)?;
    tx.execute(
        "INSERT INTO approval_requests
         (id, action, params, status, requested_by, requester_role, requester_name,
          rule_id, rule_name, reviewers, reason, created, expires_at, submitted_at, review,
          result, error, transitions, dedupe)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
        params![
            req.id,
            req.action.kind().as_str(),
            to_json(&req.action)?,
            req.status.as_str(),
            req.requested_by.key_id,
            req.requested_by.role.as_str(),
            req.requested_by.name,
            req.rule.as_ref().map(|r| &r.id),
            req.rule.as_ref().and_then(|r| r.name.as_ref()),
            to_json(&req.reviewers)?,
            req.reason,
            req.created,
            req.expires_at,
            req.submitted_at,
            c.review,
            c.result,
            c.error,
            c.transitions,
            req.dedupe,
        ],
    )
    .map_err(backend)?;
    Ok(())
}

fn update_request(
    tx: &Transaction<'_>,
    from: crate::approvals::Status,
    req: &ApprovalRequest,
) -> Result<()> {
    let c = state_columns(req)?;
    let n = tx
        .execute(
            "UPDATE approval_requests SET status = ?3, reason = ?4, submitted_at = ?5,
             expires_at = ?6, review = ?7, result = ?8, error = ?9, transitions = ?10
             WHERE id = ?1 AND status = ?2",
            params![
                req.id,
                from.as_str(),
                req.status.as_str(),
                req.reason,
                req.submitted_at,
                req.expires_at,
                c.review,
                c.result,
                c.error,
                c.transitions,
            ],
        )
        .map_err(backend)?;
    guard(n == 1)
}
