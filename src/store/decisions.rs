//! [`journal::DecisionLog`] on SQLite: the decisions explorer's search and the
//! review page's backtest window, read-only beside the writer (WAL: readers never
//! block it). Each call opens its own connection; these are admin reads, seconds
//! apart, not the hot path. The reads are blocking methods of
//! [`SqliteDecisionLog`]; the trait runs them on Tokio's blocking pool.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::minutes::first_id_since;
use super::read::read_only;
use super::schema::BODY_COLUMNS;
use crate::journal::{DecisionLog, DecisionQuery, LogReadError, LoggedDecision, MAX_SEARCH};

/// A row's columns, its body's last ([`BODY_COLUMNS`]).
const COLUMNS: &str = "id, event_id, authorization_id, card, cardholder, amount, currency,
    merchant_category, merchant_mcc, merchant_country, merchant_name,
    approved, approved_amount, reason, rule, ruleset, latency_us,
    decided_at, spend_json, shadow_rules, format, seen";

/// The decision log of the database at a path.
#[derive(Debug, Clone)]
pub struct SqliteDecisionLog {
    path: PathBuf,
}

impl SqliteDecisionLog {
    /// Reads `<data_dir>/cardgate.db` (the file need not exist yet: a search
    /// before the first decision finds nothing).
    pub fn new(data_dir: &Path) -> Self {
        SqliteDecisionLog {
            path: data_dir.join(super::FILE_NAME),
        }
    }

    fn open(&self) -> Result<Option<Connection>, LogReadError> {
        if !self.path.exists() {
            return Ok(None);
        }
        read_only(&self.path)
            .map(Some)
            .map_err(|e| LogReadError(e.to_string()))
    }
}

fn row(r: &Row<'_>) -> rusqlite::Result<LoggedDecision> {
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
        event_json: super::parts::join(r.get(22)?, r.get(23)?, r.get(24)?)
            .ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    22,
                    rusqlite::types::Type::Blob,
                    "the body's card object lies outside it".into(),
                )
            })?
            .into(),
        spend_json: r.get(18)?,
        shadow_rules: r.get(19)?,
        format: r.get(20)?,
        seen: r.get::<_, Option<Vec<u8>>>(21)?.unwrap_or_default(),
        // Read by hash with `DecisionLog::blobs` when a replay needs them.
        blobs: Vec::new(),
    })
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "a `map_err` callback: it is handed the error by value"
)]
fn failed(e: rusqlite::Error) -> LogReadError {
    LogReadError(e.to_string())
}

type LogFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, LogReadError>> + Send + 'a>>;

/// Runs a blocking read on Tokio's blocking pool.
fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LogReadError> + Send + 'static,
) -> LogFuture<'static, T> {
    Box::pin(async move {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| LogReadError(format!("the read was interrupted: {e}")))?
    })
}

impl DecisionLog for SqliteDecisionLog {
    fn search<'a>(&'a self, q: &'a DecisionQuery) -> LogFuture<'a, (Vec<LoggedDecision>, bool)> {
        let (log, q) = (self.clone(), q.clone());
        blocking(move || log.search(&q))
    }

    fn get(&self, id: i64) -> LogFuture<'_, Option<LoggedDecision>> {
        let log = self.clone();
        blocking(move || log.get(id))
    }

    fn recent(&self, since: i64, max: usize) -> LogFuture<'_, (Vec<LoggedDecision>, bool)> {
        let log = self.clone();
        blocking(move || log.recent(since, max))
    }

    fn blobs(&self) -> LogFuture<'_, std::collections::HashMap<i64, Vec<u8>>> {
        let log = self.clone();
        blocking(move || log.blobs())
    }
}

/// The blocking reads (the trait's bodies; tests call them directly).
impl SqliteDecisionLog {
    /// Every body the log names by hash.
    pub fn blobs(&self) -> Result<std::collections::HashMap<i64, Vec<u8>>, LogReadError> {
        if !self.path.exists() {
            return Ok(std::collections::HashMap::new());
        }
        super::read_decision_blobs(&self.path).map_err(|e| LogReadError(e.to_string()))
    }

    /// Rows matching `q`, newest first, and whether more match.
    pub fn search(&self, q: &DecisionQuery) -> Result<(Vec<LoggedDecision>, bool), LogReadError> {
        let Some(conn) = self.open()? else {
            return Ok((Vec::new(), false));
        };
        let limit = q.limit.clamp(1, MAX_SEARCH);
        // One statement for every combination: an unset filter is NULL and
        // matches all. A rule matches the deciding rule or any shadow match.
        let sql = format!(
            "SELECT {COLUMNS}, {BODY_COLUMNS} FROM decisions
             WHERE (?1 IS NULL OR authorization_id = ?1)
               AND (?2 IS NULL OR card = ?2)
               AND (?3 IS NULL OR cardholder = ?3)
               AND (?4 IS NULL OR reason = ?4)
               AND (?5 IS NULL OR rule = ?5 OR EXISTS (
                     SELECT 1 FROM json_each(CASE WHEN json_valid(shadow_rules)
                                                  THEN shadow_rules ELSE '[]' END)
                     WHERE value = ?5))
               AND decided_at >= ?6
               AND id < ?7 AND id >= ?9
             ORDER BY id DESC LIMIT ?8"
        );
        let first = first_id_since(&conn, q.since).map_err(failed)?;
        let mut stmt = conn.prepare(&sql).map_err(failed)?;
        let rows = stmt
            .query_map(
                params![
                    q.authorization,
                    q.card,
                    q.cardholder,
                    q.reason,
                    q.rule,
                    q.since.unwrap_or(i64::MIN),
                    q.before_id.unwrap_or(i64::MAX),
                    i64::from(limit) + 1,
                    first,
                ],
                row,
            )
            .map_err(failed)?;
        let mut out = rows.collect::<Result<Vec<_>, _>>().map_err(failed)?;
        let more = out.len() > limit as usize;
        out.truncate(limit as usize);
        Ok((out, more))
    }

    /// The row with this id.
    pub fn get(&self, id: i64) -> Result<Option<LoggedDecision>, LogReadError> {
        let Some(conn) = self.open()? else {
            return Ok(None);
        };
        conn.query_row(
            &format!("SELECT {COLUMNS}, {BODY_COLUMNS} FROM decisions WHERE id = ?1"),
            params![id],
            row,
        )
        .optional()
        .map_err(failed)
    }

    /// The newest `max` rows decided at or after `since`, oldest first.
    pub fn recent(
        &self,
        since: i64,
        max: usize,
    ) -> Result<(Vec<LoggedDecision>, bool), LogReadError> {
        let Some(conn) = self.open()? else {
            return Ok((Vec::new(), false));
        };
        let cap = i64::try_from(max).unwrap_or(i64::MAX).saturating_add(1);
        let first = first_id_since(&conn, Some(since)).map_err(failed)?;
        // The newest `max`, handed back oldest first like the CLI's replay.
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {COLUMNS}, {BODY_COLUMNS} FROM decisions
                 WHERE id >= ?3 AND decided_at >= ?1 ORDER BY id DESC LIMIT ?2"
            ))
            .map_err(failed)?;
        let rows = stmt
            .query_map(params![since, cap, first], row)
            .map_err(failed)?;
        let mut out = rows.collect::<Result<Vec<_>, _>>().map_err(failed)?;
        let more = out.len() > max;
        out.truncate(max);
        out.reverse();
        Ok((out, more))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::journal::Write;

    fn decision(
        n: i64,
        card: &str,
        reason: &str,
        rule: Option<&str>,
        shadow: Option<&str>,
    ) -> LoggedDecision {
        LoggedDecision {
            id: 0,
            event_id: format!("evt_{n}"),
            authorization_id: format!("iauth_{n}"),
            card: card.into(),
            cardholder: "ich_1".into(),
            amount: 100 * n,
            currency: "usd".into(),
            merchant_category: "taxicabs_limousines".into(),
            merchant_mcc: "4121".into(),
            merchant_country: "US".into(),
            merchant_name: "CAB".into(),
            approved: reason == "approved",
            approved_amount: if reason == "approved" { 100 * n } else { 0 },
            reason: reason.into(),
            rule: rule.map(str::to_string),
            ruleset: "abc".into(),
            latency_us: 40,
            decided_at: 1_000 + n,
            event_json: bytes::Bytes::from_static(b"{}"),
            spend_json: "{}".into(),
            shadow_rules: shadow.map(str::to_string),
            format: 0,
            seen: Vec::new(),
            blobs: Vec::new(),
        }
    }

    async fn filled(dir: &Path) -> SqliteDecisionLog {
        let store = super::super::Store::open(dir, Durability::Sync).unwrap();
        let rows = vec![
            decision(1, "ic_a", "approved", None, None),
            decision(2, "ic_a", "rule", Some("no-cabs"), None),
            decision(3, "ic_b", "approved", None, Some(r#"["big-foreign"]"#)),
            decision(
                4,
                "ic_b",
                "spending_limit",
                Some("card.spending_limits"),
                None,
            ),
        ];
        store
            .commit(rows.into_iter().map(Write::decision).collect())
            .await
            .unwrap();
        SqliteDecisionLog::new(dir)
    }

    fn q() -> DecisionQuery {
        DecisionQuery {
            limit: 10,
            ..DecisionQuery::default()
        }
    }

    fn auths(rows: &[LoggedDecision]) -> Vec<&str> {
        rows.iter().map(|r| r.authorization_id.as_str()).collect()
    }

    #[tokio::test]
    async fn search_filters_pages_newest_first_and_finds_shadow_matches() {
        let dir = tempfile::tempdir().unwrap();
        let log = filled(dir.path()).await;
        let (all, more) = log.search(&q()).unwrap();
        assert_eq!(auths(&all), ["iauth_4", "iauth_3", "iauth_2", "iauth_1"]);
        assert!(!more);
        let card = DecisionQuery {
            card: Some("ic_a".into()),
            ..q()
        };
        assert_eq!(auths(&log.search(&card).unwrap().0), ["iauth_2", "iauth_1"]);
        let shadow = DecisionQuery {
            rule: Some("big-foreign".into()),
            ..q()
        };
        assert_eq!(auths(&log.search(&shadow).unwrap().0), ["iauth_3"]);
        let decided = DecisionQuery {
            rule: Some("no-cabs".into()),
            ..q()
        };
        assert_eq!(auths(&log.search(&decided).unwrap().0), ["iauth_2"]);
        let reason = DecisionQuery {
            reason: Some("spending_limit".into()),
            ..q()
        };
        assert_eq!(auths(&log.search(&reason).unwrap().0), ["iauth_4"]);
        let one = DecisionQuery {
            authorization: Some("iauth_1".into()),
            ..q()
        };
        assert_eq!(auths(&log.search(&one).unwrap().0), ["iauth_1"]);
        let page = DecisionQuery { limit: 2, ..q() };
        let (first, more) = log.search(&page).unwrap();
        assert_eq!(auths(&first), ["iauth_4", "iauth_3"]);
        assert!(more);
        let next = DecisionQuery {
            before_id: Some(first[1].id),
            ..page
        };
        let (second, more) = log.search(&next).unwrap();
        assert_eq!(auths(&second), ["iauth_2", "iauth_1"]);
        assert!(!more);
        let got = log.get(first[0].id).unwrap().unwrap();
        assert_eq!(got.authorization_id, "iauth_4");
        assert!(log.get(9_999).unwrap().is_none());
    }

    #[tokio::test]
    async fn recent_keeps_the_newest_rows_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let log = filled(dir.path()).await;
        let (rows, more) = log.recent(1_002, 10).unwrap();
        assert_eq!(auths(&rows), ["iauth_2", "iauth_3", "iauth_4"]);
        assert!(!more);
        let (rows, more) = log.recent(0, 2).unwrap();
        assert_eq!(auths(&rows), ["iauth_3", "iauth_4"]);
        assert!(more);
    }

    #[test]
    fn a_missing_database_is_an_empty_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = SqliteDecisionLog::new(dir.path());
        assert_eq!(log.search(&q()).unwrap(), (Vec::new(), false));
        assert!(log.get(1).unwrap().is_none());
    }
}
