//! Read-only access for the CLI, the backtest and the start-up rebuild: readers
//! open their own connection (WAL: they never block the writer).

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::schema::integrity;
use super::{LoggedDecision, StoreError, sqlite};
use crate::ledger::Fact;

pub(super) fn read_only(path: &Path) -> Result<Connection, StoreError> {
    if !path.exists() {
        return Err(StoreError::Sqlite {
            path: path.to_path_buf(),
            message: "no such file".into(),
        });
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sqlite(path))?;
    integrity(&conn, path)?;
    Ok(conn)
}

/// Reads the ledger facts of the database at `path` without the writer (for
/// `cardgate ledger show`, which may run beside a live server), optionally only
/// those of one card's cardholder.
pub fn read_facts(path: &Path, cardholder: Option<&str>) -> Result<Vec<Fact>, StoreError> {
    let conn = read_only(path)?;
    let err = sqlite(path);
    let mut stmt = conn
        .prepare(
            "SELECT seq, body FROM ledger_facts WHERE ?1 IS NULL OR cardholder = ?1 ORDER BY seq",
        )
        .map_err(&err)?;
    let rows = stmt
        .query_map(params![cardholder], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .map_err(&err)?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, body) = row.map_err(&err)?;
        let fact = serde_json::from_slice(&body).map_err(|e| StoreError::BadFact {
            path: path.to_path_buf(),
            seq,
            message: e.to_string(),
        })?;
        out.push(fact);
    }
    Ok(out)
}

/// The cardholder of `card`, from the stored facts.
pub fn cardholder_of(path: &Path, card: &str) -> Result<Option<String>, StoreError> {
    let conn = read_only(path)?;
    conn.query_row(
        "SELECT cardholder FROM ledger_facts WHERE card = ?1 LIMIT 1",
        params![card],
        |r| r.get(0),
    )
    .optional()
    .map_err(sqlite(path))
}

/// [`Store::decision_log`] of the database at `path`, read-only without the writer
/// (for `cardgate backtest`, which may run beside a live server).
pub fn read_decision_log(
    path: &Path,
    since: Option<i64>,
) -> Result<Vec<LoggedDecision>, StoreError> {
    read_decisions(path, since)
}

pub(super) fn read_decisions(
    path: &Path,
    since: Option<i64>,
) -> Result<Vec<LoggedDecision>, StoreError> {
    let conn = read_only(path)?;
    let err = sqlite(path);
    let mut stmt = conn
        .prepare(
            "SELECT id, event_id, authorization_id, card, cardholder, amount, currency,
                    merchant_category, merchant_mcc, merchant_country, merchant_name,
                    approved, approved_amount, reason, rule, ruleset, latency_us,
                    decided_at, event_json, spend_json, shadow_rules
             FROM decisions WHERE decided_at >= ?1 ORDER BY id",
        )
        .map_err(&err)?;
    let rows = stmt
        .query_map(params![since.unwrap_or(i64::MIN)], |r| {
            Ok(LoggedDecision {
                id: r.get(0)?,
                event_id: r.get(1)?,
                authorization_id: r.get(2)?,
                card: r.get(3)?,
                cardholder: r.get(4)?,
                amount: r.get(5)?,
                currency: r.get(6)?,
                merchant_category: r.get(7)?,
                merchant_mcc: r.get(8)?,
                merchant_country: r.get(9)?,
                merchant_name: r.get(10)?,
                approved: r.get(11)?,
                approved_amount: r.get(12)?,
                reason: r.get(13)?,
                rule: r.get(14)?,
                ruleset: r.get(15)?,
                latency_us: r.get(16)?,
                decided_at: r.get(17)?,
                event_json: r.get(18)?,
                spend_json: r.get(19)?,
                shadow_rules: r.get(20)?,
            })
        })
        .map_err(&err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(&err)
}
