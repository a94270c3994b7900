//! Reads: rows of the approvals tables decoded into approvals' types, exactly as
//! the SQLite backend decodes them. JSON columns written only for display (a
//! review, a result, stamps, history details) decode leniently; columns the
//! service acts on (parameters, status, rules, overrides, allowances) must
//! decode or the read fails.

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_postgres::types::FromSql;
use tokio_postgres::{GenericClient, Row};

use super::pg;
use crate::approvals::model::{
    Allowance, ApiKey, ApprovalRequest, ControlOverride, Delivery, EventRecord, HistoryEntry,
    HistoryFilter, Outcome, RequestFilter, RuleRef, Status,
};
use crate::approvals::{ActionKind, ApprovalRule, ApprovalStoreError, Role};
use crate::store::approvals::codec::{REQUEST_COLUMNS, page};

type Result<T> = std::result::Result<T, ApprovalStoreError>;

fn unreadable(idx: usize, e: impl std::fmt::Display) -> ApprovalStoreError {
    ApprovalStoreError::Backend(format!("column {idx} is unreadable: {e}"))
}

fn get<'a, T: FromSql<'a>>(r: &'a Row, idx: usize) -> Result<T> {
    r.try_get(idx).map_err(|e| unreadable(idx, e))
}

/// Column `idx` decoded from JSON; an undecodable value fails the read.
fn json<T: DeserializeOwned>(r: &Row, idx: usize) -> Result<T> {
    let text: &str = get(r, idx)?;
    serde_json::from_str(text).map_err(|e| unreadable(idx, e))
}

/// Column `idx` decoded from JSON when present and decodable.
fn lenient<T: DeserializeOwned>(r: &Row, idx: usize) -> Result<Option<T>> {
    let text: Option<&str> = get(r, idx)?;
    Ok(text.and_then(|t| serde_json::from_str(t).ok()))
}

fn role(r: &Row, idx: usize) -> Result<Role> {
    let s: &str = get(r, idx)?;
    Role::parse(s).ok_or_else(|| unreadable(idx, format!("unknown role {s:?}")))
}

fn status(r: &Row, idx: usize) -> Result<Status> {
    let s: &str = get(r, idx)?;
    Status::parse(s).ok_or_else(|| unreadable(idx, format!("unknown status {s:?}")))
}

fn all<T>(rows: &[Row], decode: impl Fn(&Row) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(decode).collect()
}

/// `limit + 1` as a SQL `LIMIT`: one more row than asked says whether more follow.
fn limit_plus_one(limit: usize) -> i64 {
    i64::try_from(limit).map_or(i64::MAX, |n| n.saturating_add(1))
}

/// Resolves a list cursor (an object id) to its insertion order.
async fn cursor<C: GenericClient + Sync>(
    c: &C,
    table: &'static str,
    after: Option<&str>,
) -> Result<i64> {
    let Some(id) = after else {
        return Ok(i64::MAX);
    };
    let row = c
        .query_opt(&format!("SELECT seq FROM {table} WHERE id = $1"), &[&id])
        .await
        .map_err(pg)?
        .ok_or_else(|| ApprovalStoreError::UnknownCursor(id.to_string()))?;
    get(&row, 0)
}

// === keys ===

const KEY_COLUMNS: &str = "id, name, role, created, created_by, revoked_at, hash, expires_at";

fn key_row(r: &Row) -> Result<(ApiKey, String)> {
    Ok((
        ApiKey {
            id: get(r, 0)?,
            name: get(r, 1)?,
            role: role(r, 2)?,
            created: get(r, 3)?,
            created_by: get(r, 4)?,
            revoked_at: get(r, 5)?,
            expires_at: get(r, 7)?,
        },
        get(r, 6)?,
    ))
}

pub(super) async fn key_by_hash<C: GenericClient + Sync>(
    c: &C,
    hash: &str,
) -> Result<Option<(ApiKey, String)>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = $1");
    let row = c.query_opt(&sql, &[&hash]).await.map_err(pg)?;
    row.as_ref().map(key_row).transpose()
}

pub(super) async fn key<C: GenericClient + Sync>(c: &C, id: &str) -> Result<Option<ApiKey>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1");
    let row = c.query_opt(&sql, &[&id]).await.map_err(pg)?;
    Ok(row.as_ref().map(key_row).transpose()?.map(|(k, _)| k))
}

pub(super) async fn keys<C: GenericClient + Sync>(c: &C) -> Result<Vec<ApiKey>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY seq DESC");
    let rows = c.query(&sql, &[]).await.map_err(pg)?;
    all(&rows, |r| key_row(r).map(|(k, _)| k))
}

// === approval rules ===

/// One rule; `lock` takes its row lock until the transaction ends (a guard that
/// compares the rule and then writes it).
pub(super) async fn rule<C: GenericClient + Sync>(
    c: &C,
    id: &str,
    lock: bool,
) -> Result<Option<ApprovalRule>> {
    let sql = if lock {
        "SELECT body FROM approval_rules WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT body FROM approval_rules WHERE id = $1"
    };
    let row = c.query_opt(sql, &[&id]).await.map_err(pg)?;
    row.map(|r| json(&r, 0)).transpose()
}

/// The active rule for `action` other than `except`.
pub(super) async fn active_rule<C: GenericClient + Sync>(
    c: &C,
    action: ActionKind,
    except: Option<&str>,
) -> Result<Option<ApprovalRule>> {
    let row = c
        .query_opt(
            "SELECT body FROM approval_rules WHERE action = $1 AND active
             AND ($2::text IS NULL OR id <> $2)",
            &[&action.as_str(), &except],
        )
        .await
        .map_err(pg)?;
    row.map(|r| json(&r, 0)).transpose()
}

pub(super) async fn rules<C: GenericClient + Sync>(
    c: &C,
    action: Option<ActionKind>,
    active: Option<bool>,
) -> Result<Vec<ApprovalRule>> {
    let rows = c
        .query(
            "SELECT body FROM approval_rules
             WHERE ($1::text IS NULL OR action = $1) AND ($2::boolean IS NULL OR active = $2)
             ORDER BY seq DESC",
            &[&action.map(ActionKind::as_str), &active],
        )
        .await
        .map_err(pg)?;
    all(&rows, |r| json(r, 0))
}

// === requests ===

fn request_row(r: &Row) -> Result<ApprovalRequest> {
    let status = status(r, 2)?;
    let outcome = match status {
        Status::Succeeded => Some(Outcome::Succeeded {
            result: lenient::<Value>(r, 14)?.unwrap_or_default(),
        }),
        Status::Failed => lenient(r, 15)?.map(Outcome::Failed),
        _ => None,
    };
    let rule_id: Option<String> = get(r, 6)?;
    Ok(ApprovalRequest {
        id: get(r, 0)?,
        action: json(r, 1)?,
        status,
        requested_by: crate::approvals::Actor {
            key_id: get(r, 3)?,
            role: role(r, 4)?,
            name: get(r, 5)?,
        },
        rule: match rule_id {
            Some(id) => Some(RuleRef {
                id,
                name: get(r, 7)?,
            }),
            None => None,
        },
        reviewers: lenient(r, 8)?.unwrap_or_default(),
        reason: get(r, 9)?,
        created: get(r, 10)?,
        expires_at: get(r, 11)?,
        submitted_at: get(r, 12)?,
        review: lenient(r, 13)?,
        outcome,
        transitions: lenient(r, 16)?.unwrap_or_default(),
        dedupe: get(r, 17)?,
    })
}

pub(super) async fn request<C: GenericClient + Sync>(
    c: &C,
    id: &str,
) -> Result<Option<ApprovalRequest>> {
    let sql = format!("SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE id = $1");
    let row = c.query_opt(&sql, &[&id]).await.map_err(pg)?;
    row.as_ref().map(request_row).transpose()
}

fn status_names(statuses: &[Status]) -> Vec<&'static str> {
    statuses.iter().map(|s| s.as_str()).collect()
}

/// The open request carrying `dedupe`.
pub(super) async fn open_request<C: GenericClient + Sync>(
    c: &C,
    dedupe: &str,
) -> Result<Option<ApprovalRequest>> {
    let sql = format!(
        "SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE dedupe = $1 AND status = ANY($2)"
    );
    let open = status_names(&Status::OPEN);
    let row = c.query_opt(&sql, &[&dedupe, &open]).await.map_err(pg)?;
    row.as_ref().map(request_row).transpose()
}

pub(super) async fn requests<C: GenericClient + Sync>(
    c: &C,
    filter: RequestFilter,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<ApprovalRequest>, bool)> {
    let after = cursor(c, "approval_requests", after).await?;
    let sql = format!(
        "SELECT {REQUEST_COLUMNS} FROM approval_requests
         WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR action = $2) AND seq < $3
         ORDER BY seq DESC LIMIT $4"
    );
    let rows = c
        .query(
            &sql,
            &[
                &filter.status.map(Status::as_str),
                &filter.action.map(ActionKind::as_str),
                &after,
                &limit_plus_one(limit),
            ],
        )
        .await
        .map_err(pg)?;
    Ok(page(all(&rows, request_row)?, limit))
}

pub(super) async fn lapsed_requests<C: GenericClient + Sync>(
    c: &C,
    statuses: &[Status],
    now: i64,
) -> Result<Vec<ApprovalRequest>> {
    let sql = format!(
        "SELECT {REQUEST_COLUMNS} FROM approval_requests
         WHERE status = ANY($1) AND expires_at <= $2"
    );
    let rows = c
        .query(&sql, &[&status_names(statuses), &now])
        .await
        .map_err(pg)?;
    all(&rows, request_row)
}

pub(super) async fn requests_in<C: GenericClient + Sync>(
    c: &C,
    status: Status,
) -> Result<Vec<ApprovalRequest>> {
    let sql = format!("SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE status = $1");
    let rows = c.query(&sql, &[&status.as_str()]).await.map_err(pg)?;
    all(&rows, request_row)
}

// === history and events ===

pub(super) async fn history<C: GenericClient + Sync>(
    c: &C,
    f: &HistoryFilter,
    before: Option<i64>,
    limit: usize,
) -> Result<(Vec<HistoryEntry>, bool)> {
    let rows = c
        .query(
            "SELECT id, type, actor, object_id, created, details FROM security_history
             WHERE ($1::text IS NULL OR type = $1) AND ($2::text IS NULL OR actor = $2)
               AND ($3::text IS NULL OR object_id = $3) AND ($4::bigint IS NULL OR created >= $4)
               AND ($5::bigint IS NULL OR created <= $5) AND id < $6
             ORDER BY id DESC LIMIT $7",
            &[
                &f.kind,
                &f.actor,
                &f.object,
                &f.since,
                &f.until,
                &before.unwrap_or(i64::MAX),
                &limit_plus_one(limit),
            ],
        )
        .await
        .map_err(pg)?;
    let rows = all(&rows, |r| {
        Ok(HistoryEntry {
            id: get(r, 0)?,
            kind: get(r, 1)?,
            actor: get(r, 2)?,
            object_id: get(r, 3)?,
            created: get(r, 4)?,
            details: lenient(r, 5)?.unwrap_or_default(),
        })
    })?;
    Ok(page(rows, limit))
}

pub(super) async fn events<C: GenericClient + Sync>(
    c: &C,
    kind: Option<&str>,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<EventRecord>, bool)> {
    let after = cursor(c, "events", after).await?;
    let rows = c
        .query(
            "SELECT e.body,
                    (SELECT COUNT(*) FROM outbox o WHERE o.event_id = e.id AND o.delivered_ms IS NOT NULL),
                    (SELECT COUNT(*) FROM outbox o WHERE o.event_id = e.id AND o.delivered_ms IS NULL AND NOT o.failed),
                    (SELECT COUNT(*) FROM outbox o WHERE o.event_id = e.id AND o.failed)
             FROM events e WHERE ($1::text IS NULL OR e.type = $1) AND e.seq < $2
             ORDER BY e.seq DESC LIMIT $3",
            &[&kind, &after, &limit_plus_one(limit)],
        )
        .await
        .map_err(pg)?;
    let rows = all(&rows, |r| {
        Ok(EventRecord {
            body: get(r, 0)?,
            delivered: get(r, 1)?,
            pending: get(r, 2)?,
            failed: get(r, 3)?,
        })
    })?;
    Ok(page(rows, limit))
}

// === outbox ===

/// How long a replica holds the deliveries it claimed before another may take
/// them: longer than one batch of attempts can run (the outbox loop tries up to
/// 32 entries in turn, each bounded by a 10 s request and a 10 s body timeout),
/// so under normal operation each entry is sent by one replica; if that replica
/// dies mid-batch, another sends its entries once the claim lapses (at least once).
pub(super) const CLAIM_MS: i64 = 15 * 60 * 1000;

/// Claims up to `limit` deliveries due at `now_ms`, oldest first: moves their
/// next attempt `CLAIM_MS` ahead, skipping rows another replica is claiming
/// right now (`FOR UPDATE SKIP LOCKED`). The attempt's result, recorded by
/// `Change::Attempted`, then sets the real next attempt.
pub(super) async fn claim_due_deliveries<C: GenericClient + Sync>(
    c: &C,
    now_ms: i64,
    limit: usize,
) -> Result<Vec<Delivery>> {
    let rows = c
        .query(
            "WITH due AS (
                 SELECT id FROM outbox
                 WHERE delivered_ms IS NULL AND NOT failed AND next_attempt_ms <= $1
                 ORDER BY id LIMIT $2
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE outbox o SET next_attempt_ms = $1 + $3
             FROM due, events e
             WHERE o.id = due.id AND e.id = o.event_id
             RETURNING o.id, o.endpoint, o.attempts, e.id, e.body",
            &[
                &now_ms,
                &i64::try_from(limit).unwrap_or(i64::MAX),
                &CLAIM_MS,
            ],
        )
        .await
        .map_err(pg)?;
    let mut due = all(&rows, |r| {
        let attempts: i64 = get(r, 2)?;
        Ok(Delivery {
            id: get(r, 0)?,
            endpoint: get(r, 1)?,
            attempts: u32::try_from(attempts).map_err(|e| unreadable(2, e))?,
            event_id: get(r, 3)?,
            body: get(r, 4)?,
        })
    })?;
    // RETURNING has no order of its own.
    due.sort_by_key(|d| d.id);
    Ok(due)
}

pub(super) async fn next_delivery_ms<C: GenericClient + Sync>(c: &C) -> Result<Option<i64>> {
    let row = c
        .query_one(
            "SELECT MIN(next_attempt_ms) FROM outbox WHERE delivered_ms IS NULL AND NOT failed",
            &[],
        )
        .await
        .map_err(pg)?;
    get(&row, 0)
}

// === overrides and allowances ===

pub(super) async fn overrides<C: GenericClient + Sync>(c: &C) -> Result<Vec<ControlOverride>> {
    let rows = c
        .query(
            // Byte order, as SQLite sorts, whatever the database's collation.
            r#"SELECT body, updated FROM control_overrides ORDER BY scope COLLATE "C", id COLLATE "C""#,
            &[],
        )
        .await
        .map_err(pg)?;
    all(&rows, |r| {
        Ok(ControlOverride {
            spec: json(r, 0)?,
            updated: get(r, 1)?,
        })
    })
}

/// Allowances, newest first: only the unused ones unexpired at `live_at` when
/// given, at most `limit` when given.
pub(super) async fn allowances<C: GenericClient + Sync>(
    c: &C,
    live_at: Option<i64>,
    limit: Option<usize>,
) -> Result<Vec<Allowance>> {
    // `LIMIT NULL` is "no limit".
    let limit = limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    let rows = c
        .query(
            "SELECT id, body, created, expires_at, used_at, used_by FROM allowances
             WHERE $1::bigint IS NULL OR (used_at IS NULL AND expires_at > $1)
             ORDER BY seq DESC LIMIT $2",
            &[&live_at, &limit],
        )
        .await
        .map_err(pg)?;
    all(&rows, |r| {
        Ok(Allowance {
            id: get(r, 0)?,
            spec: json(r, 1)?,
            created: get(r, 2)?,
            expires_at: get(r, 3)?,
            used_at: get(r, 4)?,
            used_by: get(r, 5)?,
        })
    })
}
