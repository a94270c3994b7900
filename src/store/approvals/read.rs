//! Reads: rows of migration 3's tables decoded into approvals' types. JSON
//! columns written only for display (a review, a result, stamps, history
//! details) decode leniently, as they always have; columns the service acts on
//! (parameters, status, rules, overrides, allowances) must decode or the read
//! fails.

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::codec::{REQUEST_COLUMNS, page};
use crate::approvals::model::{
    Allowance, ApiKey, ApprovalRequest, ControlOverride, Delivery, EventRecord, HistoryEntry,
    HistoryFilter, Outcome, RequestFilter, RuleRef, Status,
};
use crate::approvals::{ActionKind, ApprovalRule, ApprovalStoreError, Role};

type Sql<T> = rusqlite::Result<T>;

fn unreadable(
    idx: usize,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, e.into())
}

/// Column `idx` decoded from JSON; an undecodable value fails the read.
fn json<T: DeserializeOwned>(r: &Row<'_>, idx: usize) -> Sql<T> {
    let text: String = r.get(idx)?;
    serde_json::from_str(&text).map_err(|e| unreadable(idx, e))
}

/// Column `idx` decoded from JSON when present and decodable.
fn lenient<T: DeserializeOwned>(r: &Row<'_>, idx: usize) -> Sql<Option<T>> {
    let text: Option<String> = r.get(idx)?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

fn role(r: &Row<'_>, idx: usize) -> Sql<Role> {
    let s: String = r.get(idx)?;
    Role::parse(&s).ok_or_else(|| unreadable(idx, format!("unknown role {s:?}")))
}

fn status(r: &Row<'_>, idx: usize) -> Sql<Status> {
    let s: String = r.get(idx)?;
    Status::parse(&s).ok_or_else(|| unreadable(idx, format!("unknown status {s:?}")))
}

/// Resolves a list cursor (an object id) to its row id.
fn cursor(conn: &Connection, table: &str, after: Option<&str>) -> Result<i64, ApprovalStoreError> {
    let Some(id) = after else {
        return Ok(i64::MAX);
    };
    conn.query_row(
        &format!("SELECT rowid FROM {table} WHERE id = ?1"),
        params![id],
        |r| r.get(0),
    )
    .optional()
    .map_err(super::backend)?
    .ok_or_else(|| ApprovalStoreError::UnknownCursor(id.to_string()))
}

/// `limit` as SQLite's LIMIT: saturates rather than wraps, since a negative
/// LIMIT would mean "no limit".
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

// === keys ===

const KEY_COLUMNS: &str = "id, name, role, created, created_by, revoked_at, hash, expires_at";

fn key_row(r: &Row<'_>) -> Sql<(ApiKey, String)> {
    Ok((
        ApiKey {
            id: r.get(0)?,
            name: r.get(1)?,
            role: role(r, 2)?,
            created: r.get(3)?,
            created_by: r.get(4)?,
            revoked_at: r.get(5)?,
            expires_at: r.get(7)?,
        },
        r.get(6)?,
    ))
}

pub(super) fn key_by_hash(conn: &Connection, hash: &str) -> Sql<Option<(ApiKey, String)>> {
    conn.query_row(
        &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = ?1"),
        params![hash],
        key_row,
    )
    .optional()
}

pub(super) fn key(conn: &Connection, id: &str) -> Sql<Option<ApiKey>> {
    conn.query_row(
        &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"),
        params![id],
        key_row,
    )
    .optional()
    .map(|k| k.map(|(k, _)| k))
}

pub(super) fn keys(conn: &Connection) -> Sql<Vec<ApiKey>> {
    let mut st = conn.prepare(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY rowid DESC"
    ))?;
    st.query_map([], |r| key_row(r).map(|(k, _)| k))?.collect()
}

// === approval rules ===

pub(super) fn rule(conn: &Connection, id: &str) -> Sql<Option<ApprovalRule>> {
    conn.query_row(
        "SELECT body FROM approval_rules WHERE id = ?1",
        params![id],
        |r| json(r, 0),
    )
    .optional()
}

/// The active rule for `action` other than `except`.
pub(super) fn active_rule(
    conn: &Connection,
    action: ActionKind,
    except: Option<&str>,
) -> Sql<Option<ApprovalRule>> {
    conn.query_row(
        "SELECT body FROM approval_rules WHERE action = ?1 AND active = 1
         AND (?2 IS NULL OR id != ?2)",
        params![action.as_str(), except],
        |r| json(r, 0),
    )
    .optional()
}

pub(super) fn rules(
    conn: &Connection,
    action: Option<ActionKind>,
    active: Option<bool>,
) -> Sql<Vec<ApprovalRule>> {
    let mut st = conn.prepare(
        "SELECT body FROM approval_rules
         WHERE (?1 IS NULL OR action = ?1) AND (?2 IS NULL OR active = ?2)
         ORDER BY rowid DESC",
    )?;
    st.query_map(params![action.map(ActionKind::as_str), active], |r| {
        json(r, 0)
    })?
    .collect()
}

// === requests ===

fn request_row(r: &Row<'_>) -> Sql<ApprovalRequest> {
    let status = status(r, 2)?;
    let outcome = match status {
        Status::Succeeded => Some(Outcome::Succeeded {
            result: lenient::<Value>(r, 14)?.unwrap_or_default(),
        }),
        Status::Failed => lenient(r, 15)?.map(Outcome::Failed),
        _ => None,
    };
    let rule_id: Option<String> = r.get(6)?;
    Ok(ApprovalRequest {
        id: r.get(0)?,
        action: json(r, 1)?,
        status,
        requested_by: crate::approvals::Actor {
            key_id: r.get(3)?,
            role: role(r, 4)?,
            name: r.get(5)?,
        },
        rule: match rule_id {
            Some(id) => Some(RuleRef {
                id,
                name: r.get(7)?,
            }),
            None => None,
        },
        reviewers: lenient(r, 8)?.unwrap_or_default(),
        reason: r.get(9)?,
        created: r.get(10)?,
        expires_at: r.get(11)?,
        submitted_at: r.get(12)?,
        review: lenient(r, 13)?,
        outcome,
        transitions: lenient(r, 16)?.unwrap_or_default(),
        dedupe: r.get(17)?,
    })
}

pub(super) fn request(conn: &Connection, id: &str) -> Sql<Option<ApprovalRequest>> {
    conn.query_row(
        &format!("SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE id = ?1"),
        params![id],
        request_row,
    )
    .optional()
}

fn in_list(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// The open request carrying `dedupe`.
pub(super) fn open_request(conn: &Connection, dedupe: &str) -> Sql<Option<ApprovalRequest>> {
    let open = Status::OPEN.map(Status::as_str);
    let mut args: Vec<&str> = vec![dedupe];
    args.extend(open);
    conn.query_row(
        &format!(
            "SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE dedupe = ? AND status IN ({})",
            in_list(open.len())
        ),
        params_from_iter(args),
        request_row,
    )
    .optional()
}

pub(super) fn requests(
    conn: &Connection,
    filter: RequestFilter,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<ApprovalRequest>, bool), ApprovalStoreError> {
    let after = cursor(conn, "approval_requests", after)?;
    let rows = (|| {
        let mut st = conn.prepare(&format!(
            "SELECT {REQUEST_COLUMNS} FROM approval_requests
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR action = ?2) AND rowid < ?3
             ORDER BY rowid DESC LIMIT ?4"
        ))?;
        st.query_map(
            params![
                filter.status.map(Status::as_str),
                filter.action.map(ActionKind::as_str),
                after,
                sql_limit(limit).saturating_add(1)
            ],
            request_row,
        )?
        .collect::<Sql<Vec<_>>>()
    })()
    .map_err(super::backend)?;
    Ok(page(rows, limit))
}

pub(super) fn lapsed_requests(
    conn: &Connection,
    statuses: &[Status],
    now: i64,
) -> Sql<Vec<ApprovalRequest>> {
    let mut st = conn.prepare(&format!(
        "SELECT {REQUEST_COLUMNS} FROM approval_requests
         WHERE status IN ({}) AND expires_at <= ?",
        in_list(statuses.len())
    ))?;
    let mut args: Vec<rusqlite::types::Value> = statuses
        .iter()
        .map(|s| s.as_str().to_string().into())
        .collect();
    args.push(now.into());
    st.query_map(params_from_iter(args), request_row)?.collect()
}

pub(super) fn requests_in(conn: &Connection, status: Status) -> Sql<Vec<ApprovalRequest>> {
    let mut st = conn.prepare(&format!(
        "SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE status = ?1"
    ))?;
    st.query_map(params![status.as_str()], request_row)?
        .collect()
}

// === history and events ===

pub(super) fn history(
    conn: &Connection,
    f: &HistoryFilter,
    before: Option<i64>,
    limit: usize,
) -> Sql<(Vec<HistoryEntry>, bool)> {
    let mut st = conn.prepare(
        "SELECT id, type, actor, object_id, created, details FROM security_history
         WHERE (?1 IS NULL OR type = ?1) AND (?2 IS NULL OR actor = ?2)
           AND (?3 IS NULL OR object_id = ?3) AND (?4 IS NULL OR created >= ?4)
           AND (?5 IS NULL OR created <= ?5) AND id < ?6
         ORDER BY id DESC LIMIT ?7",
    )?;
    let rows = st
        .query_map(
            params![
                f.kind,
                f.actor,
                f.object,
                f.since,
                f.until,
                before.unwrap_or(i64::MAX),
                sql_limit(limit).saturating_add(1)
            ],
            |r| {
                Ok(HistoryEntry {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    actor: r.get(2)?,
                    object_id: r.get(3)?,
                    created: r.get(4)?,
                    details: lenient(r, 5)?.unwrap_or_default(),
                })
            },
        )?
        .collect::<Sql<Vec<_>>>()?;
    Ok(page(rows, limit))
}

pub(super) fn events(
    conn: &Connection,
    kind: Option<&str>,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<EventRecord>, bool), ApprovalStoreError> {
    let after = cursor(conn, "events", after)?;
    let rows = (|| {
        let mut st = conn.prepare(
            "SELECT e.body,
                    (SELECT COUNT(*) FROM outbox o WHERE o.event_id = e.id AND o.delivered_ms IS NOT NULL),
                    (SELECT COUNT(*) FROM outbox o WHERE o.event_id = e.id AND o.delivered_ms IS NULL AND o.failed = 0),
                    (SELECT COUNT(*) FROM outbox o WHERE o.event_id = e.id AND o.failed = 1)
             FROM events e WHERE (?1 IS NULL OR e.type = ?1) AND e.rowid < ?2
             ORDER BY e.rowid DESC LIMIT ?3",
        )?;
        st.query_map(params![kind, after, sql_limit(limit).saturating_add(1)], |r| {
            Ok(EventRecord {
                body: r.get(0)?,
                delivered: r.get(1)?,
                pending: r.get(2)?,
                failed: r.get(3)?,
            })
        })?
        .collect::<Sql<Vec<_>>>()
    })()
    .map_err(super::backend)?;
    Ok(page(rows, limit))
}

// === outbox ===

pub(super) fn due_deliveries(conn: &Connection, now_ms: i64, limit: usize) -> Sql<Vec<Delivery>> {
    let mut st = conn.prepare(
        "SELECT o.id, o.endpoint, o.attempts, e.id, e.body FROM outbox o JOIN events e ON e.id = o.event_id
         WHERE o.delivered_ms IS NULL AND o.failed = 0 AND o.next_attempt_ms <= ?1
         ORDER BY o.id LIMIT ?2",
    )?;
    st.query_map(params![now_ms, sql_limit(limit)], |r| {
        Ok(Delivery {
            id: r.get(0)?,
            endpoint: r.get(1)?,
            attempts: r.get(2)?,
            event_id: r.get(3)?,
            body: r.get(4)?,
        })
    })?
    .collect()
}

pub(super) fn next_delivery_ms(conn: &Connection) -> Sql<Option<i64>> {
    conn.query_row(
        "SELECT MIN(next_attempt_ms) FROM outbox WHERE delivered_ms IS NULL AND failed = 0",
        [],
        |r| r.get(0),
    )
}

// === overrides and allowances ===

pub(super) fn overrides(conn: &Connection) -> Sql<Vec<ControlOverride>> {
    let mut st = conn.prepare("SELECT body, updated FROM control_overrides ORDER BY scope, id")?;
    st.query_map([], |r| {
        Ok(ControlOverride {
            spec: json(r, 0)?,
            updated: r.get(1)?,
        })
    })?
    .collect()
}

/// Allowances, newest first: only the unused ones unexpired at `live_at` when
/// given, at most `limit` when given.
pub(super) fn allowances(
    conn: &Connection,
    live_at: Option<i64>,
    limit: Option<usize>,
) -> Sql<Vec<Allowance>> {
    let mut st = conn.prepare(
        "SELECT id, body, created, expires_at, used_at, used_by FROM allowances
         WHERE ?1 IS NULL OR (used_at IS NULL AND expires_at > ?1)
         ORDER BY rowid DESC LIMIT ?2",
    )?;
    // SQLite reads a negative LIMIT as "no limit".
    let limit = limit.map_or(-1, sql_limit);
    st.query_map(params![live_at, limit], |r| {
        Ok(Allowance {
            id: r.get(0)?,
            spec: json(r, 1)?,
            created: r.get(2)?,
            expires_at: r.get(3)?,
            used_at: r.get(4)?,
            used_by: r.get(5)?,
        })
    })?
    .collect()
}
